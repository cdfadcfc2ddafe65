"""create invoices table

Revision ID: d6eb5b132622
Revises:
Create Date: 2024-03-01 14:08:19.772930

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "d6eb5b132622"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = ["orders@3f5f70bf4d92"]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer(), nullable=False),
        # an order and a user of other services (other databases): no foreign keys
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("invoice_number", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False),
        sa.Column("net_amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column(
            "tax_amount", sa.Numeric(precision=12, scale=2), server_default="0", nullable=False
        ),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "issued",
                "paid",
                "void",
                name="ck_invoices_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="draft",
            nullable=False,
        ),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invoices"),
        sa.UniqueConstraint("invoice_number", name="uq_invoices_invoice_number"),
        sa.CheckConstraint("net_amount >= 0", name="ck_invoices_net_amount_non_negative"),
        sa.CheckConstraint("tax_amount >= 0", name="ck_invoices_tax_amount_non_negative"),
    )
    op.create_index("ix_invoices_order_id", "invoices", ["order_id"], unique=False)
    op.create_index("ix_invoices_user_id", "invoices", ["user_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_invoices_user_id", table_name="invoices")
    op.drop_index("ix_invoices_order_id", table_name="invoices")
    op.drop_table("invoices")
