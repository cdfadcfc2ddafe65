"""widen orders.total_amount

Revision ID: 3f67f838ac29
Revises: 477ef5b395d8
Create Date: 2025-03-12 08:58:14.023477

B2B orders exceed 10 digits before the decimal point.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "3f67f838ac29"
down_revision: Union[str, Sequence[str], None] = "477ef5b395d8"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# changes the type of an existing column
destructive = True


def _orders(total_precision: int) -> sa.Table:
    """orders before (12 digits) or after (14 digits) this revision.

    SQLite cannot alter a column in place, so batch mode rebuilds the table from this
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
            sa.Numeric(precision=total_precision, scale=2),
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
    with op.batch_alter_table("orders", copy_from=_orders(12)) as batch_op:
        # existing_nullable / existing_server_default: MySQL's MODIFY restates the whole
        # column, and would otherwise drop NOT NULL and the default
        batch_op.alter_column(
            "total_amount",
            existing_type=sa.Numeric(precision=12, scale=2),
            type_=sa.Numeric(precision=14, scale=2),
            existing_nullable=False,
            existing_server_default="0",
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("orders", copy_from=_orders(14)) as batch_op:
        batch_op.alter_column(
            "total_amount",
            existing_type=sa.Numeric(precision=14, scale=2),
            type_=sa.Numeric(precision=12, scale=2),
            existing_nullable=False,
            existing_server_default="0",
        )
