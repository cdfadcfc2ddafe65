"""rename payments.provider_reference to psp_reference

Revision ID: 4a3889b49d22
Revises: 1acd224f4a2b
Create Date: 2024-11-05 16:02:11.905428

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "4a3889b49d22"
down_revision: Union[str, Sequence[str], None] = "1acd224f4a2b"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# renames a column: readers of the old name break
destructive = True


def _payments(reference_column: str) -> sa.Table:
    """payments with the reference column under its old or its new name.

    SQLite cannot rename a column that a constraint uses in place, so batch mode rebuilds
    the table from this definition; passing it as ``copy_from`` spares a reflection and
    keeps the revision renderable in offline (``--sql``) mode.
    """
    return sa.Table(
        "payments",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column(reference_column, sa.String(length=128), nullable=False),
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
        # the constraint keeps its name across the rename
        sa.UniqueConstraint(
            "provider", reference_column, name="uq_payments_provider_provider_reference"
        ),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
        sa.Index("ix_payments_invoice_id", "invoice_id"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table(
        "payments", copy_from=_payments("provider_reference")
    ) as batch_op:
        # existing_type / existing_nullable: MySQL's CHANGE restates the whole column
        batch_op.alter_column(
            "provider_reference",
            new_column_name="psp_reference",
            existing_type=sa.String(length=128),
            existing_nullable=False,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("payments", copy_from=_payments("psp_reference")) as batch_op:
        batch_op.alter_column(
            "psp_reference",
            new_column_name="provider_reference",
            existing_type=sa.String(length=128),
            existing_nullable=False,
        )
