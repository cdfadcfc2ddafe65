"""create tracking_events table

Revision ID: 0e92d9abd5c7
Revises: d063b3f02930
Create Date: 2025-03-03 17:26:44.903115

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0e92d9abd5c7"
down_revision: Union[str, Sequence[str], None] = "d063b3f02930"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "tracking_events",
        # BIGINT where it matters; SQLite only auto-increments an INTEGER PRIMARY KEY
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("shipment_id", sa.Integer(), nullable=False),
        sa.Column("event_code", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_events"),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.id"],
            name="fk_tracking_events_shipment_id_shipments",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_tracking_events_shipment_id_occurred_at",
        "tracking_events",
        ["shipment_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_tracking_events_event_code", "tracking_events", ["event_code"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("tracking_events")
