"""The repository's own example workspace, copied into a test's folder, and its rows."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
SEED = "users@28b14b901000"
COLUMNS = "id, user_id, street, city, postcode, country, created_at"


def copy_example(tmp_path: Path, mode: str | None = "snapshot") -> Path:
    """The example workspace in ``tmp_path / "ws"``, its copy in ``mode`` (None: the mode it
    ships with, "follow"). The suites written for snapshot copies keep the default."""
    dest = tmp_path / "ws"
    dest.mkdir()
    shutil.copy(ROOT / "migrate.toml", dest / "migrate.toml")
    if mode is not None:
        manifest = dest / "migrate.toml"
        text = manifest.read_text()
        assert '\nmode = "follow"' in text
        manifest.write_text(text.replace('\nmode = "follow"', f'\nmode = "{mode}"', 1))
    shutil.copytree(ROOT / "services", dest / "services", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def address_rows(url: str, table: str = "addresses") -> list[tuple[object, ...]] | None:
    """The rows of ``table`` in id order, as text (None: no such table)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return None
            result = conn.execute(sa.text(f"SELECT {COLUMNS} FROM {table} ORDER BY id"))
            return [tuple(_text(v) for v in row) for row in result]
    finally:
        engine.dispose()


def _text(value: object) -> str:
    """Values as text, timestamps in UTC without an offset: a PostgreSQL timestamptz and a
    MariaDB DATETIME holding the same instant compare equal."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return str(value)
