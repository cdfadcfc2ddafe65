"""add service level to shipments

Revision ID: 73113110955a
Revises: 0e92d9abd5c7
Create Date: 2025-03-05 12:03:59.447820

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "73113110955a"
down_revision: Union[str, Sequence[str], None] = "0e92d9abd5c7"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def _shipments(with_service_level: bool) -> sa.Table:
    """shipments before (without) or after (with) the service level of this revision.

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
        *(
            [
                sa.Column(
                    "service_level",
                    sa.String(length=20),
                    server_default="standard",
                    nullable=False,
                ),
                sa.CheckConstraint(
                    "service_level IN ('standard', 'express', 'overnight')",
                    name="ck_shipments_service_level",
                ),
                sa.Index("ix_shipments_service_level_created_at", "service_level", "created_at"),
            ]
            if with_service_level
            else []
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
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table(
        "shipments", copy_from=_shipments(with_service_level=False)
    ) as batch_op:
        # NOT NULL on an existing table: safe because of the server default.
        batch_op.add_column(
            sa.Column(
                "service_level", sa.String(length=20), server_default="standard", nullable=False
            )
        )
        batch_op.create_check_constraint(
            "ck_shipments_service_level",
            "service_level IN ('standard', 'express', 'overnight')",
        )
        batch_op.create_index(
            "ix_shipments_service_level_created_at",
            ["service_level", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table(
        "shipments", copy_from=_shipments(with_service_level=True)
    ) as batch_op:
        batch_op.drop_index("ix_shipments_service_level_created_at")
        batch_op.drop_constraint("ck_shipments_service_level", type_="check")
        batch_op.drop_column("service_level")
