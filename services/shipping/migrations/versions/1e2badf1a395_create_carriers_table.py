"""create carriers table

Revision ID: 1e2badf1a395
Revises:
Create Date: 2025-01-20 13:40:12.385017

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "1e2badf1a395"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "carriers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("tracking_url_template", sa.String(length=500), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_carriers"),
        sa.UniqueConstraint("code", name="uq_carriers_code"),
        sa.CheckConstraint("code <> ''", name="ck_carriers_code_not_empty"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("carriers")
