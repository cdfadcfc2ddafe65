"""create shipments table

Revision ID: d063b3f02930
Revises: a0578c77f893
Create Date: 2025-02-26 09:55:17.610442

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "d063b3f02930"
down_revision: Union[str, Sequence[str], None] = "a0578c77f893"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "shipments",
        sa.Column("id", sa.Integer(), nullable=False),
        # an order of the orders service: another database, so no foreign key
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
        sa.Column("tracking_number", sa.String(length=64), nullable=True),
        sa.Column("weight_grams", sa.Integer(), nullable=True),
        sa.Column("shipped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
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
    )
    op.create_index("ix_shipments_order_id", "shipments", ["order_id"], unique=False)
    op.create_index("ix_shipments_address_id", "shipments", ["address_id"], unique=False)
    op.create_index("ix_shipments_carrier_id", "shipments", ["carrier_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    # Dropping the table drops its indexes too (MySQL/MariaDB would refuse to drop the
    # indexes its foreign keys rely on one by one).
    op.drop_table("shipments")
