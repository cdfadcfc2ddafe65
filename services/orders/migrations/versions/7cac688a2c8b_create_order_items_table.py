"""create order_items table

Revision ID: 7cac688a2c8b
Revises: 3f5f70bf4d92
Create Date: 2024-02-15 16:44:02.907153

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "7cac688a2c8b"
down_revision: Union[str, Sequence[str], None] = "3f5f70bf4d92"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "order_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("product_name", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), server_default="1", nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column(
            "discount_amount",
            sa.Numeric(precision=12, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_order_items"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name="fk_order_items_order_id_orders",
            ondelete="CASCADE",
        ),
        # also serves as the index on order_id that the foreign key needs
        sa.UniqueConstraint("order_id", "sku", name="uq_order_items_order_id_sku"),
        sa.CheckConstraint("quantity > 0", name="ck_order_items_quantity_positive"),
        sa.CheckConstraint("unit_price >= 0", name="ck_order_items_unit_price_non_negative"),
        sa.CheckConstraint(
            "discount_amount >= 0", name="ck_order_items_discount_non_negative"
        ),
    )
    op.create_index("ix_order_items_sku", "order_items", ["sku"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_order_items_sku", table_name="order_items")
    op.drop_table("order_items")
