"""Shared pieces of the copy tests: a file-backed checkpoint store, the all-types table, and a
normalisation of rows read back through SQLAlchemy that is independent of the copy module."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from orchestrator.copy import CopyCheckpoint
from orchestrator.core.model import CopySpec


class FileStore:
    """A CheckpointStore keeping the checkpoint as JSON in a file, replaced atomically."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.saves = 0

    def load(self) -> CopyCheckpoint | None:
        if not self.path.exists():
            return None
        return CopyCheckpoint.from_json(self.path.read_text())

    def save(self, checkpoint: CopyCheckpoint) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ckpt-")
        with os.fdopen(fd, "w") as fh:
            fh.write(checkpoint.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self.saves += 1


class MemoryStore:
    def __init__(self) -> None:
        self.checkpoint: CopyCheckpoint | None = None
        self.history: list[CopyCheckpoint] = []

    def load(self) -> CopyCheckpoint | None:
        return self.checkpoint

    def save(self, checkpoint: CopyCheckpoint) -> None:
        # keep it as the executor would: through JSON
        self.checkpoint = CopyCheckpoint.from_json(checkpoint.to_json())
        self.history.append(self.checkpoint)


def spec(name: str = "things-copy", table: str = "things", **kw: Any) -> CopySpec:
    base: dict[str, Any] = {
        "name": name,
        "source": "users",
        "target": "shipping",
        "table": table,
        "target_table": kw.pop("target_table", table),
    }
    base.update(kw)
    return CopySpec(**base)


def engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def things_table(md: sa.MetaData, name: str = "things") -> sa.Table:
    """Every type the copy must carry, with each column nullable but the key."""
    return sa.Table(
        name,
        md,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("small", sa.Integer),
        sa.Column("big", sa.BigInteger),
        sa.Column("amount", sa.Numeric(20, 6)),
        sa.Column("ratio", sa.Double()),
        sa.Column("name", sa.String(200)),
        sa.Column("body", sa.Text().with_variant(mysql.LONGTEXT(), "mysql")),
        sa.Column("flag", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")),
        sa.Column("at_tz", sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql")),
        sa.Column("blob", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql")),
        sa.Column("doc", sa.JSON),
    )


THINGS_COLUMNS = (
    "id", "small", "big", "amount", "ratio", "name", "body", "flag", "day", "at", "at_tz",
    "blob", "doc",
)  # fmt: skip

PLUS2 = dt.timezone(dt.timedelta(hours=2))

THINGS_ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "small": -2147483648,
        "big": 9223372036854775807,
        "amount": Decimal("123456789.123456"),
        "ratio": 0.1,
        "name": "héllo wörld 😀 日本 \u00e9",
        "body": "long " * 40_000 + "😀 end",
        "flag": True,
        "day": dt.date(2024, 2, 29),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
        "at_tz": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=PLUS2),
        "blob": bytes(range(256)),
        "doc": {"b": [1, 2, {"c": None}], "a": "é😀", "n": 1.5, "big": 12345678901234567},
    },
    {
        "id": 2,
        "small": 2147483647,
        "big": -9223372036854775808,
        "amount": Decimal("-0.000001"),
        "ratio": -1.5e300,
        "name": "",
        "body": "line1\nline2\ttab\\backslash\r\n'quote\" %s ?",
        "flag": False,
        "day": dt.date(1970, 1, 1),
        "at": dt.datetime(1999, 12, 31, 23, 59, 59),
        "at_tz": dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC),
        "blob": b"\x00\x01\\N\t\n",
        "doc": [],
    },
    {"id": 3},  # NULL in every nullable column
    {
        "id": 4,
        "small": 0,
        "big": 0,
        "amount": Decimal("99999999.999999"),
        "ratio": 0.0,
        "name": "a" * 200,
        "body": "",
        "flag": True,
        "day": dt.date(2099, 12, 31),
        "at": dt.datetime(2000, 2, 29, 0, 0, 0, 1),
        "at_tz": dt.datetime(1980, 1, 1, tzinfo=dt.UTC),
        "blob": b"",
        "doc": {"nested": {"z": 1, "y": [True, False, None]}, "s": "\\n"},
    },
]


def normalise(value: Any) -> Any:
    """A value as read through SQLAlchemy, in one comparable form for every dialect."""
    if isinstance(value, Decimal):
        return Decimal(value).normalize() if value else Decimal(0)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_rows(url: str, table: sa.Table, columns: Sequence[str] = THINGS_COLUMNS) -> list[tuple[Any, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.select(*[table.c[c] for c in columns]).order_by(table.c.id)).all()
    finally:
        eng.dispose()
    return [tuple(normalise(v) for v in row) for row in rows]


def create_things(url: str, rows: Sequence[dict[str, Any]] = (), name: str = "things") -> sa.Table:
    eng = engine(url)
    md = sa.MetaData()
    table = things_table(md, name)
    try:
        md.create_all(eng)
        if rows:
            full = [{c: r.get(c) for c in THINGS_COLUMNS} for r in rows]
            with eng.begin() as conn:
                conn.execute(table.insert(), full)
    finally:
        eng.dispose()
    return table


def count(url: str, table: str) -> int:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        eng.dispose()


def execute(url: str, *statements: str) -> None:
    eng = engine(url)
    try:
        with eng.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        eng.dispose()


def capture_objects_left(url: str) -> list[str]:
    """Tables, triggers and functions named as a follow-mode copy's change capture."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            dialect = conn.dialect.name
            if dialect == "postgresql":
                names += conn.execute(sa.text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars().all()
                names += conn.execute(sa.text("SELECT proname FROM pg_proc")).scalars().all()
            elif dialect == "sqlite":
                names += conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
            else:
                names += conn.execute(sa.text("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS")).scalars().all()
        return sorted(n for n in names if n.startswith("migrate_capture_"))
    finally:
        eng.dispose()
