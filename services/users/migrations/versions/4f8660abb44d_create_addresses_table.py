"""create addresses table

Revision ID: 4f8660abb44d
Revises: 187740215317
Create Date: 2024-02-12 15:02:41.118377

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "4f8660abb44d"
down_revision: Union[str, Sequence[str], None] = "187740215317"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("street", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("postcode", sa.String(length=20), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_addresses"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_addresses_user_id_users",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("length(country) = 2", name="ck_addresses_country_iso2"),
    )
    op.create_index("ix_addresses_user_id", "addresses", ["user_id"], unique=False)
    op.create_index(
        "ix_addresses_country_postcode", "addresses", ["country", "postcode"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    # Dropping the table drops its indexes too. MySQL/MariaDB would refuse a separate
    # DROP INDEX of ix_addresses_user_id while the foreign key still needs it.
    op.drop_table("addresses")
