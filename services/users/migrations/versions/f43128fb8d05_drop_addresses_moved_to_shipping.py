"""drop addresses (moved to shipping)

Revision ID: f43128fb8d05
Revises: ea29cd865dcc
Create Date: 2025-03-11 10:05:48.219536

The rows are copied into the shipping service's database by the `addresses-to-shipping`
copy step of migrate.toml, which runs before this revision.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "f43128fb8d05"
down_revision: Union[str, Sequence[str], None] = "ea29cd865dcc"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# drops a table and its rows
destructive = True


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_table("addresses")


def downgrade() -> None:
    """Downgrade schema."""
    # The table comes back exactly as 4f8660abb44d created it, but empty: the rows live
    # in shipping now (a rollback of the copy step puts them back).
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
