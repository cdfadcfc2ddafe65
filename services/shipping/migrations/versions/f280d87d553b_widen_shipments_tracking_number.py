"""widen shipments.tracking_number

Revision ID: f280d87d553b
Revises: 73113110955a
Create Date: 2025-03-10 15:49:21.730668

Some carriers issue tracking numbers of up to 100 characters.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "f280d87d553b"
down_revision: Union[str, Sequence[str], None] = "73113110955a"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# changes the type of an existing column
destructive = True


def _shipments(tracking_number_length: int) -> sa.Table:
    """shipments before (64) or after (100) this revision.

    SQLite cannot alter a column or add a constraint in place, so batch mode rebuilds the
    table from this definition; passing it as ``copy_from`` spares a reflection and keeps
    the revision renderable in offline (``--sql``) mode.
    """
    return sa.Table(
        "shipments",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("address_id", sa.Integer(), nullable=False),
        sa.Column("carrier_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "label_created",
                "in_transit",
                "delivered",
                "returned",
                name="ck_shipments_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("tracking_number", sa.String(length=tracking_number_length), nullable=True),
        sa.Column("weight_grams", sa.Integer(), nullable=True),
        sa.Column("shipped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "service_level", sa.String(length=20), server_default="standard", nullable=False
        ),
        sa.CheckConstraint(
            "service_level IN ('standard', 'express', 'overnight')",
            name="ck_shipments_service_level",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_shipments"),
        sa.ForeignKeyConstraint(
            ["address_id"], ["addresses.id"], name="fk_shipments_address_id_addresses"
        ),
        sa.ForeignKeyConstraint(
            ["carrier_id"],
            ["carriers.id"],
            name="fk_shipments_carrier_id_carriers",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("tracking_number", name="uq_shipments_tracking_number"),
        sa.CheckConstraint(
            "weight_grams IS NULL OR weight_grams > 0", name="ck_shipments_weight_positive"
        ),
        sa.Index("ix_shipments_order_id", "order_id"),
        sa.Index("ix_shipments_address_id", "address_id"),
        sa.Index("ix_shipments_carrier_id", "carrier_id"),
        sa.Index("ix_shipments_service_level_created_at", "service_level", "created_at"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("shipments", copy_from=_shipments(64)) as batch_op:
        batch_op.alter_column(
            "tracking_number",
            existing_type=sa.String(length=64),
            type_=sa.String(length=100),
            existing_nullable=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("shipments", copy_from=_shipments(100)) as batch_op:
        batch_op.alter_column(
            "tracking_number",
            existing_type=sa.String(length=100),
            type_=sa.String(length=64),
            existing_nullable=True,
        )
