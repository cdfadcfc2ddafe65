"""create payments table

Revision ID: 33b57a65b323
Revises: d6eb5b132622
Create Date: 2024-03-06 10:51:33.284016

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "33b57a65b323"
down_revision: Union[str, Sequence[str], None] = "d6eb5b132622"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_reference", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="EUR", nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "authorized",
                "captured",
                "failed",
                "cancelled",
                name="ck_payments_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="authorized",
            nullable=False,
        ),
        sa.Column("provider_payload", sa.JSON(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name="fk_payments_invoice_id_invoices"
        ),
        sa.UniqueConstraint(
            "provider", "provider_reference", name="uq_payments_provider_provider_reference"
        ),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    )
    op.create_index("ix_payments_invoice_id", "payments", ["invoice_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    # Dropping the table drops its indexes too (MySQL/MariaDB would refuse to drop
    # ix_payments_invoice_id on its own while the foreign key needs it).
    op.drop_table("payments")
