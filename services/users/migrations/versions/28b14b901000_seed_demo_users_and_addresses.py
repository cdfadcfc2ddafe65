"""seed demo users and addresses

Revision ID: 28b14b901000
Revises: 0bb2a23b43cc
Create Date: 2024-04-10 08:31:55.904721

"""
from datetime import datetime
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "28b14b901000"
down_revision: Union[str, Sequence[str], None] = "0bb2a23b43cc"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# revisions of other services ("service@revision") that must be applied before this one
requires: list[str] = []

# Lightweight table definitions as of this revision: never import application models here.
users = sa.table(
    "users",
    sa.column("id", sa.Integer()),
    sa.column("email", sa.String(length=255)),
    sa.column("full_name", sa.String(length=200)),
    sa.column("is_active", sa.Boolean()),
    sa.column("phone", sa.String(length=32)),
    sa.column("locale", sa.String(length=16)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)

addresses = sa.table(
    "addresses",
    sa.column("id", sa.Integer()),
    sa.column("user_id", sa.Integer()),
    sa.column("street", sa.String(length=200)),
    sa.column("city", sa.String(length=100)),
    sa.column("postcode", sa.String(length=20)),
    sa.column("country", sa.String(length=2)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)

USER_IDS = [1, 2, 3, 4, 5]
ADDRESS_IDS = [1, 2, 3, 4, 5, 6, 7, 8]


def upgrade() -> None:
    """Upgrade schema."""
    op.bulk_insert(
        users,
        [
            {
                "id": 1,
                "email": "anna.gruber@example.com",
                "full_name": "Anna Gruber",
                "is_active": True,
                "phone": "+43 1 5124455",
                "locale": "de-AT",
                "created_at": datetime(2024, 4, 10, 8, 0, 0),
                "updated_at": datetime(2024, 4, 10, 8, 0, 0),
            },
            {
                "id": 2,
                "email": "zoe.lefevre@example.com",
                "full_name": "Zoë Lefèvre",
                "is_active": True,
                "phone": "+33 1 42765040",
                "locale": "fr-FR",
                "created_at": datetime(2024, 4, 10, 8, 5, 0),
                "updated_at": datetime(2024, 4, 10, 8, 5, 0),
            },
            {
                "id": 3,
                "email": "marco.rossi@example.com",
                "full_name": "Marco Rossi",
                "is_active": True,
                "phone": "+39 06 6710 3069",
                "locale": "it-IT",
                "created_at": datetime(2024, 4, 10, 8, 10, 0),
                "updated_at": datetime(2024, 4, 10, 8, 10, 0),
            },
            {
                "id": 4,
                "email": "emily.carter@example.com",
                "full_name": "Emily Carter",
                "is_active": True,
                "phone": None,
                "locale": "en-GB",
                "created_at": datetime(2024, 4, 10, 8, 15, 0),
                "updated_at": datetime(2024, 4, 10, 8, 15, 0),
            },
            {
                "id": 5,
                "email": "kenji.watanabe@example.com",
                "full_name": "Kenji Watanabe",
                "is_active": False,
                "phone": "+81 11 2114111",
                "locale": "ja-JP",
                "created_at": datetime(2024, 4, 10, 8, 20, 0),
                "updated_at": datetime(2024, 4, 10, 8, 20, 0),
            },
        ],
    )
    op.bulk_insert(
        addresses,
        [
            {
                "id": 1,
                "user_id": 1,
                "street": "Kärntner Straße 12",
                "city": "Wien",
                "postcode": "1010",
                "country": "AT",
                "created_at": datetime(2024, 4, 10, 8, 1, 0),
            },
            {
                "id": 2,
                "user_id": 1,
                "street": "Mariahilfer Straße 88",
                "city": "Wien",
                "postcode": "1070",
                "country": "AT",
                "created_at": datetime(2024, 4, 10, 8, 2, 0),
            },
            {
                "id": 3,
                "user_id": 2,
                "street": "Place de l'Hôtel de Ville 3",
                "city": "Paris",
                "postcode": "75004",
                "country": "FR",
                "created_at": datetime(2024, 4, 10, 8, 6, 0),
            },
            {
                "id": 4,
                "user_id": 2,
                "street": "Quai d'Orsay 37",
                "city": "Paris",
                "postcode": "75007",
                "country": "FR",
                "created_at": datetime(2024, 4, 10, 8, 7, 0),
            },
            {
                "id": 5,
                "user_id": 3,
                "street": "Via dei Fori Imperiali 1",
                "city": "Roma",
                "postcode": "00186",
                "country": "IT",
                "created_at": datetime(2024, 4, 10, 8, 11, 0),
            },
            {
                "id": 6,
                "user_id": 3,
                "street": "Corso Vittorio Emanuele II 15",
                "city": "Milano",
                "postcode": "20122",
                "country": "IT",
                "created_at": datetime(2024, 4, 10, 8, 12, 0),
            },
            {
                "id": 7,
                "user_id": 4,
                "street": "221B Baker Street",
                "city": "London",
                "postcode": "NW1 6XE",
                "country": "GB",
                "created_at": datetime(2024, 4, 10, 8, 16, 0),
            },
            {
                "id": 8,
                "user_id": 5,
                "street": "Ōdōri Nishi 4-chōme 1",
                "city": "Sapporo",
                "postcode": "060-0042",
                "country": "JP",
                "created_at": datetime(2024, 4, 10, 8, 21, 0),
            },
        ],
    )
    if op.get_context().dialect.name == "postgresql":
        # Explicit ids do not advance a SERIAL's sequence on PostgreSQL (MySQL, MariaDB
        # and SQLite move their counters by themselves): move it past the demo rows.
        for table in ("users", "addresses"):
            op.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            )


def downgrade() -> None:
    """Downgrade schema."""
    op.execute(addresses.delete().where(addresses.c.id.in_(ADDRESS_IDS)))
    op.execute(users.delete().where(users.c.id.in_(USER_IDS)))
    if op.get_context().dialect.name == "postgresql":
        for table in ("addresses", "users"):
            op.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            )
