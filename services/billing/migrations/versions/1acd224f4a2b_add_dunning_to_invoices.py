"""add dunning to invoices

Revision ID: 1acd224f4a2b
Revises: f800907f9d48
Create Date: 2024-08-20 09:40:26.187354

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "1acd224f4a2b"
down_revision: Union[str, Sequence[str], None] = "f800907f9d48"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def _invoices(with_dunning: bool) -> sa.Table:
    """invoices before (without) or after (with) the dunning columns of this revision.

    SQLite cannot add a constraint or drop a column in place, so batch mode rebuilds the
    table from this definition; passing it as ``copy_from`` spares a reflection and keeps
    the revision renderable in offline (``--sql``) mode.
    """
    dunning = [
        sa.Column("dunning_level", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_reminder_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "dunning_level BETWEEN 0 AND 3", name="ck_invoices_dunning_level_range"
        ),
        sa.Index("ix_invoices_status_due_at", "status", "due_at"),
    ]
    return sa.Table(
        "invoices",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
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
        *(dunning if with_dunning else []),
        sa.PrimaryKeyConstraint("id", name="pk_invoices"),
        sa.UniqueConstraint("invoice_number", name="uq_invoices_invoice_number"),
        sa.CheckConstraint("net_amount >= 0", name="ck_invoices_net_amount_non_negative"),
        sa.CheckConstraint("tax_amount >= 0", name="ck_invoices_tax_amount_non_negative"),
        sa.Index("ix_invoices_order_id", "order_id"),
        sa.Index("ix_invoices_user_id", "user_id"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("invoices", copy_from=_invoices(with_dunning=False)) as batch_op:
        # NOT NULL on an existing table: safe because of the server default.
        batch_op.add_column(
            sa.Column("dunning_level", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("last_reminder_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_check_constraint(
            "ck_invoices_dunning_level_range", "dunning_level BETWEEN 0 AND 3"
        )
        batch_op.create_index("ix_invoices_status_due_at", ["status", "due_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("invoices", copy_from=_invoices(with_dunning=True)) as batch_op:
        batch_op.drop_index("ix_invoices_status_due_at")
        batch_op.drop_constraint("ck_invoices_dunning_level_range", type_="check")
        batch_op.drop_column("last_reminder_at")
        batch_op.drop_column("dunning_level")
