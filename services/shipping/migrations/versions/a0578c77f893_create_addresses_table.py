"""create addresses table

Revision ID: a0578c77f893
Revises: 1e2badf1a395
Create Date: 2025-02-24 16:18:30.042961

Shipping becomes the owner of customer addresses. The columns and types match
users.addresses, so that the `addresses-to-shipping` copy step can move the rows over;
`user_id` points at a user in the users service's database, so it has no foreign key.

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "a0578c77f893"
down_revision: Union[str, Sequence[str], None] = "1e2badf1a395"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = ["users@187740215317"]


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
        sa.CheckConstraint("length(country) = 2", name="ck_addresses_country_iso2"),
    )
    op.create_index("ix_addresses_user_id", "addresses", ["user_id"], unique=False)
    op.create_index(
        "ix_addresses_country_postcode", "addresses", ["country", "postcode"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_addresses_country_postcode", table_name="addresses")
    op.drop_index("ix_addresses_user_id", table_name="addresses")
    op.drop_table("addresses")
