"""add phone, locale and last login to users

Revision ID: 0bb2a23b43cc
Revises: 4f8660abb44d
Create Date: 2024-04-03 11:47:09.260815

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0bb2a23b43cc"
down_revision: Union[str, Sequence[str], None] = "4f8660abb44d"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []


def _users_after_upgrade() -> sa.Table:
    """users as this revision leaves it.

    SQLite cannot drop a column in place, so batch mode rebuilds the table from this
    definition; passing it as ``copy_from`` spares a reflection and keeps the revision
    renderable in offline (``--sql``) mode.
    """
    return sa.Table(
        "users",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("locale", sa.String(length=16), server_default="en", nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("email <> ''", name="ck_users_email_not_empty"),
        sa.Index("ix_users_created_at", "created_at"),
        sa.Index("ix_users_last_login_at", "last_login_at"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
        # NOT NULL on an existing table: safe because of the server default.
        batch_op.add_column(
            sa.Column("locale", sa.String(length=16), server_default="en", nullable=False)
        )
        batch_op.add_column(
            sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_users_last_login_at", ["last_login_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("users", copy_from=_users_after_upgrade()) as batch_op:
        batch_op.drop_index("ix_users_last_login_at")
        batch_op.drop_column("last_login_at")
        batch_op.drop_column("locale")
        batch_op.drop_column("phone")
