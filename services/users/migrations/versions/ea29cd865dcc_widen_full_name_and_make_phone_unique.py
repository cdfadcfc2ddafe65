"""widen full_name and make phone unique

Revision ID: ea29cd865dcc
Revises: 28b14b901000
Create Date: 2024-09-17 14:22:03.671288

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "ea29cd865dcc"
down_revision: Union[str, Sequence[str], None] = "28b14b901000"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# changes the type of an existing column
destructive = True


def _users(full_name_length: int, phone_unique: bool) -> sa.Table:
    """users before (200, no unique phone) or after (255, unique phone) this revision.

    SQLite cannot alter a column or add a constraint in place, so batch mode rebuilds the
    table from this definition; passing it as ``copy_from`` spares a reflection and keeps
    the revision renderable in offline (``--sql``) mode.
    """
    return sa.Table(
        "users",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=full_name_length), nullable=False),
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
        *([sa.UniqueConstraint("phone", name="uq_users_phone")] if phone_unique else []),
        sa.CheckConstraint("email <> ''", name="ck_users_email_not_empty"),
        sa.Index("ix_users_created_at", "created_at"),
        sa.Index("ix_users_last_login_at", "last_login_at"),
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("users", copy_from=_users(200, phone_unique=False)) as batch_op:
        # existing_nullable: MySQL's MODIFY restates the whole column definition
        batch_op.alter_column(
            "full_name",
            existing_type=sa.String(length=200),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
        batch_op.create_unique_constraint("uq_users_phone", ["phone"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("users", copy_from=_users(255, phone_unique=True)) as batch_op:
        batch_op.drop_constraint("uq_users_phone", type_="unique")
        batch_op.alter_column(
            "full_name",
            existing_type=sa.String(length=255),
            type_=sa.String(length=200),
            existing_nullable=False,
        )
