"""add status to orders

Revision ID: 61e22fc527c0
Revises: 7cac688a2c8b
Create Date: 2024-05-28 09:12:50.336641

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "61e22fc527c0"
down_revision: Union[str, Sequence[str], None] = "7cac688a2c8b"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def _orders(with_status: bool) -> sa.Table:
    """orders before (without) or after (with) the status of this revision.

    SQLite cannot add a constraint or drop a column in place, so batch mode rebuilds the
    table from this definition; passing it as ``copy_from`` spares a reflection and keeps
    the revision renderable in offline (``--sql``) mode.
    """
    return sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("order_number", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False),
        sa.Column(
            "total_amount",
            sa.Numeric(precision=12, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        *(
            [
                sa.Column(
                    "status", sa.String(length=20), server_default="pending", nullable=False
                ),
                sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
                sa.CheckConstraint(
                    "status IN ('pending', 'paid', 'shipped', 'cancelled', 'refunded')",
                    name="ck_orders_status",
                ),
                sa.Index("ix_orders_status_created_at", "status", "created_at"),
            ]
            if with_status
            else []
        ),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("order_number", name="uq_orders_order_number"),
        sa.CheckConstraint("total_amount >= 0", name="ck_orders_total_non_negative"),
        sa.CheckConstraint("length(currency) = 3", name="ck_orders_currency_iso3"),
        sa.Index("ix_orders_user_id", "user_id"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("orders", copy_from=_orders(with_status=False)) as batch_op:
        # NOT NULL on an existing table: safe because of the server default.
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="pending", nullable=False)
        )
        batch_op.add_column(sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint(
            "ck_orders_status",
            "status IN ('pending', 'paid', 'shipped', 'cancelled', 'refunded')",
        )
        batch_op.create_index(
            "ix_orders_status_created_at", ["status", "created_at"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("orders", copy_from=_orders(with_status=True)) as batch_op:
        batch_op.drop_index("ix_orders_status_created_at")
        batch_op.drop_constraint("ck_orders_status", type_="check")
        batch_op.drop_column("paid_at")
        batch_op.drop_column("status")
