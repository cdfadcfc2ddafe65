"""add shipping address to orders

Revision ID: 477ef5b395d8
Revises: 61e22fc527c0
Create Date: 2025-03-04 11:36:08.514997

Orders now point at the address owned by the shipping service (another database, so the
column has no foreign key); shipping's addresses table must exist first.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "477ef5b395d8"
down_revision: Union[str, Sequence[str], None] = "61e22fc527c0"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = ["shipping@a0578c77f893"]


def _orders() -> sa.Table:
    """orders as this revision leaves it.

    SQLite cannot drop a column in place, so batch mode rebuilds the table from this
    definition; passing it as ``copy_from`` spares a reflection and keeps the revision
    renderable in offline (``--sql``) mode.
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
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'paid', 'shipped', 'cancelled', 'refunded')",
            name="ck_orders_status",
        ),
        sa.Index("ix_orders_status_created_at", "status", "created_at"),
        sa.Column("shipping_address_id", sa.Integer(), nullable=True),
        sa.Index("ix_orders_shipping_address_id", "shipping_address_id"),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("order_number", name="uq_orders_order_number"),
        sa.CheckConstraint("total_amount >= 0", name="ck_orders_total_non_negative"),
        sa.CheckConstraint("length(currency) = 3", name="ck_orders_currency_iso3"),
        sa.Index("ix_orders_user_id", "user_id"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("shipping_address_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_orders_shipping_address_id", ["shipping_address_id"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("orders", copy_from=_orders()) as batch_op:
        batch_op.drop_index("ix_orders_shipping_address_id")
        batch_op.drop_column("shipping_address_id")
