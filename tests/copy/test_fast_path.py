"""The source-to-PostgreSQL fast path: SQLite and MariaDB write each row as a COPY text line in
SQL, and the end-of-copy verification compares those lines with what PostgreSQL gives back.

Every value below must come back from PostgreSQL as the very text the source wrote (else the
verification would fall back to canonical lines and the checksum would not be ``sha256-text``):
NULLs, special bytes that need COPY escapes, decimals with and without fractional digits,
timestamps with and without trailing fractional zeros, booleans, bytea and JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyValueError, CopyVerificationError, blocks, checksum_table, copier, copy_table, verify
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, count, engine, execute, normalise, spec

COLUMNS = ["id", "n", "flag", "amount", "wide", "big", "name", "body", "at", "at_tz", "day", "blob", "doc"]

PG_DDL = (
    "CREATE TABLE items (id bigint PRIMARY KEY, n integer, flag boolean, amount numeric(12,2), "
    "wide numeric(14,4), big numeric(20,6), name varchar(100), body text, at timestamp, "
    "at_tz timestamptz, day date, blob bytea, doc json)"
)
MYSQL_DDL = (
    "CREATE TABLE items (id bigint PRIMARY KEY, n int, flag boolean, amount decimal(12,2), "
    "wide decimal(12,2), big decimal(20,6), name varchar(100), body text, at datetime(6), "
    "at_tz datetime(6), day date, `blob` blob, doc json) CHARACTER SET utf8mb4"
)
SQLITE_DDL = (
    "CREATE TABLE items (id BIGINT PRIMARY KEY, n INTEGER, flag BOOLEAN, amount NUMERIC(12, 2), "
    "wide NUMERIC(12, 2), big NUMERIC(20, 6), name VARCHAR(100), body TEXT, at DATETIME, "
    "at_tz DATETIME, day DATE, blob BLOB, doc JSON)"
)

SPECIALS = "tab\there\nnew line\\back slash\rcr\x08bs\x0bvt\x0cff \\N \\. end"

# (id, n, flag, amount, wide, big, name, body, at, at_tz, day, blob, doc) as Python values
ROWS: list[tuple[Any, ...]] = [
    (
        1, 42, True, Decimal("1234.50"), Decimal("7.25"), Decimal("0.000001"), "héllo wörld 😀 日本",
        SPECIALS, dt.datetime(2024, 1, 2, 3, 4, 5, 678900), dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.date(2024, 2, 29), b"\x00\x01\\N\t\n", {"a": [1, 2], "b": "\\n\t"},
    ),
    (2, None, None, None, None, None, None, None, None, None, None, None, None),
    (
        3, -7, False, Decimal("7"), Decimal("-0.5"), Decimal("-123456789.5"), "\\N", "\\.",
        dt.datetime(1999, 12, 31, 23, 59, 59), dt.datetime(2030, 6, 1, 12, 0, 0, 500000),
        dt.date(1970, 1, 1), b"", [],
    ),
    (
        4, 0, True, Decimal("-0.01"), Decimal("0"), Decimal("-12345678.901234"), "", "",
        dt.datetime(2000, 1, 1, 0, 0, 0, 1), dt.datetime(1980, 1, 1), dt.date(2099, 12, 31),
        bytes(range(256)), {"nested": {"z": None}},
    ),
    *[
        (
            i, i * 3, i % 2 == 0, Decimal(i) / 4, Decimal(i % 100), Decimal(i) / 8, f"name {i}",
            None if i % 5 == 0 else f"body {i}" + ("\t" if i % 37 == 0 else ""),
            dt.datetime(2020, 1, 1) + dt.timedelta(seconds=i * 61, microseconds=i * 10),
            dt.datetime(2021, 1, 1) + dt.timedelta(minutes=i), dt.date(2020, 1, 1) + dt.timedelta(days=i),
            bytes([i % 256]) * (i % 4), {"i": i},
        )
        for i in range(5, 400)
    ],
]  # fmt: skip


def sqlite_value(column: str, value: Any) -> Any:
    """How an application would typically have stored the value in SQLite."""
    if value is None:
        return None
    if column in ("amount", "wide", "big"):
        return int(value) if value == value.to_integral_value() else float(value)
    if column == "flag":
        return int(value)
    if column == "at":
        return value.isoformat(" ", "microseconds" if value.microsecond else "seconds")
    if column == "at_tz":  # always six fractional digits, zeros included
        return value.isoformat(" ", "microseconds")
    if column == "day":
        return value.isoformat()
    if column == "doc":
        return json.dumps(value)
    return value


def fill(dialect: str, url: str, rows: list[tuple[Any, ...]]) -> None:
    if dialect == "sqlite":
        path = sa.engine.make_url(url).database
        assert path
        conn = sqlite3.connect(path)
        conn.execute(SQLITE_DDL)
        conn.executemany(
            f"INSERT INTO items VALUES ({', '.join('?' * len(COLUMNS))})",
            [tuple(sqlite_value(c, v) for c, v in zip(COLUMNS, row, strict=True)) for row in rows],
        )
        conn.commit()
        conn.close()
        return
    execute(url, MYSQL_DDL)
    eng = engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO items VALUES ({', '.join(':' + c for c in COLUMNS)})"),
            [
                {c: json.dumps(v) if c == "doc" and v is not None else v for c, v in zip(COLUMNS, row, strict=True)}
                for row in rows
            ],
        )
    eng.dispose()


def read(url: str) -> list[tuple[Any, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            table = sa.Table("items", sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(*[table.c[c] for c in COLUMNS]).order_by(table.c.id)).all()
    finally:
        eng.dispose()
    out = []
    for row in rows:
        values = []
        for column, value in zip(COLUMNS, row, strict=True):
            if column == "doc" and isinstance(value, str):
                value = json.loads(value)
            if column == "flag" and value is not None:
                value = bool(value)
            if column in ("amount", "wide", "big") and value is not None:
                value = Decimal(str(value))
            values.append(normalise(value))
        out.append(tuple(values))
    return out


def expected() -> list[tuple[Any, ...]]:
    return [tuple(normalise(v) for v in row) for row in ROWS]


@pytest.mark.parametrize("src", ["sqlite", "mysql"])
def test_every_value_comes_back_as_the_text_the_source_wrote(src: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server("postgresql")
    src_url, dst_url = make_database(src), make_database("postgresql")
    fill(src, src_url, ROWS)
    execute(dst_url, PG_DDL)
    store = MemoryStore()

    result = copy_table(spec(name="items-copy", table="items", batch_size=64), engine(src_url), engine(dst_url), store)

    assert result.method == "psycopg-copy-text"
    assert result.checksum.startswith("sha256-text:"), result.checksum
    assert (result.rows_copied, result.source_rows) == (len(ROWS), len(ROWS))
    assert read(dst_url) == expected()
    assert checksum_table(engine(src_url), "items", COLUMNS, ["id"]) == checksum_table(
        engine(dst_url), "items", COLUMNS, ["id"]
    )
    assert [c.last_key for c in store.history][-1] == (399,)
    assert len(store.history) == 1 + -(-len(ROWS) // 64)


def test_sqlite_value_the_fast_path_refuses_is_converted_in_python(make_database: MakeDatabase) -> None:
    """A timestamp with an offset is not PostgreSQL COPY text for a timestamp column (PostgreSQL
    would drop the offset): the batch is redone in Python, which converts it to UTC, and the
    verification falls back to canonical lines."""
    require_server("postgresql")
    src_url, dst_url = make_database("sqlite"), make_database("postgresql")
    fill("sqlite", src_url, ROWS[:4])
    execute(src_url, "UPDATE items SET at = '2024-01-02 10:00:00+02:00' WHERE id = 3")
    execute(dst_url, PG_DDL)

    result = copy_table(spec(name="items-copy", table="items"), engine(src_url), engine(dst_url), MemoryStore())

    assert result.rows_copied == 4
    assert result.checksum.startswith("md5-sum:")
    rows = {r[0]: r for r in read(dst_url)}
    assert rows[3][COLUMNS.index("at")] == dt.datetime(2024, 1, 2, 8, 0, 0)
    assert rows[1] == expected()[0]


def test_sqlite_value_postgresql_refuses_is_named(make_database: MakeDatabase) -> None:
    require_server("postgresql")
    src_url, dst_url = make_database("sqlite"), make_database("postgresql")
    fill("sqlite", src_url, ROWS[:10])
    execute(src_url, "UPDATE items SET name = 'x' || printf('%.200c', 'y') WHERE id = 7")
    execute(dst_url, PG_DDL)
    with pytest.raises(CopyValueError) as caught:
        copy_table(
            spec(name="items-copy", table="items", batch_size=3), engine(src_url), engine(dst_url), MemoryStore()
        )
    assert caught.value.key == "(id=7)" and caught.value.column == "name"
    assert count(dst_url, "items") == 0


def test_rows_moved_in_the_target_are_compared_in_key_order(
    make_database: MakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trigger that rewrites rows with the same values moves them in the table, so its
    storage order is no longer key order: the rows are read back sorted, and they match."""
    scans: list[str] = []
    target_stream = verify._target_stream

    def spy(conn: Any, digest: Any, select: str) -> Any:
        scans.append(select)
        return target_stream(conn, digest, select)

    monkeypatch.setattr(verify, "_target_stream", spy)
    require_server("postgresql")
    src_url, dst_url = make_database("sqlite"), make_database("postgresql")
    fill("sqlite", src_url, ROWS)
    execute(
        dst_url,
        PG_DDL,
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id % 10 = 0 THEN UPDATE items SET n = n WHERE id = NEW.id; END IF; RETURN NULL; END $$",
        "CREATE TRIGGER touch AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION touch()",
    )
    result = copy_table(spec(name="items-copy", table="items"), engine(src_url), engine(dst_url), MemoryStore())
    assert result.checksum.startswith("sha256-text:")
    assert read(dst_url) == expected()
    assert len(scans) == 1 and "ORDER BY" in scans[0]


def test_mariadb_blocks_too_long_for_group_concat_are_read_row_by_row(
    make_database: MakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_server("mysql")
    require_server("postgresql")
    monkeypatch.setattr(copier, "GROUP_CONCAT_MAX", 400)
    row_by_row: list[str] = []
    lines_sql = blocks.text_lines_sql

    def spy(*args: Any) -> str:
        row_by_row.append(lines_sql(*args))
        return row_by_row[-1]

    monkeypatch.setattr(copier, "text_lines_sql", spy)
    src_url, dst_url = make_database("mysql"), make_database("postgresql")
    fill("mysql", src_url, ROWS)
    execute(dst_url, PG_DDL)
    result = copy_table(
        spec(name="items-copy", table="items", batch_size=50), engine(src_url), engine(dst_url), MemoryStore()
    )
    assert result.checksum.startswith("sha256-text:")
    assert read(dst_url) == expected()


def test_postgresql_binary_copy_is_compared_as_binary(make_database: MakeDatabase) -> None:
    require_server("postgresql")
    src_url, dst_url = make_database("postgresql"), make_database("postgresql")
    execute(src_url, PG_DDL)
    execute(dst_url, PG_DDL)
    sqlite_url = make_database("sqlite")
    fill("sqlite", sqlite_url, ROWS)
    copy_table(spec(name="seed", table="items"), engine(sqlite_url), engine(src_url), MemoryStore())

    result = copy_table(
        spec(name="items-copy", table="items", batch_size=100), engine(src_url), engine(dst_url), MemoryStore()
    )

    assert result.method == "pg-binary-copy"
    assert result.checksum.startswith("sha256-binary:")
    assert read(dst_url) == expected()


@pytest.mark.parametrize("src", ["sqlite", "postgresql"])
def test_row_written_to_the_source_during_the_copy_fails_verification(src: str, make_database: MakeDatabase) -> None:
    """The fast verification compares the target with the rows as they were read; a row the
    source gained behind the copy's position shows in the source's final count, and the full
    comparison then names it."""
    require_server(src)
    require_server("postgresql")
    src_url, dst_url = make_database(src), make_database("postgresql")
    execute(src_url, "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    execute(src_url, *[f"INSERT INTO people VALUES ({i * 10}, 'person {i}')" for i in range(1, 41)])
    execute(dst_url, "CREATE TABLE people (id INTEGER PRIMARY KEY, name VARCHAR(50))")
    written: list[int] = []

    def progress(done: int, total: int | None) -> None:
        if not written:
            execute(src_url, "INSERT INTO people VALUES (5, 'late')")
            written.append(done)

    with pytest.raises(CopyVerificationError) as caught:
        copy_table(
            spec(name="people-copy", table="people", batch_size=10),
            engine(src_url),
            engine(dst_url),
            MemoryStore(),
            progress,
        )
    assert caught.value.key == "(id=5)"
    assert "missing from the target" in caught.value.message
    assert count(dst_url, "people") == 0


def test_sqlite_connection_tied_to_its_thread_is_read_on_it(make_database: MakeDatabase) -> None:
    require_server("postgresql")
    src_url, dst_url = make_database("sqlite"), make_database("postgresql")
    fill("sqlite", src_url, ROWS)
    execute(dst_url, PG_DDL)
    source = sa.create_engine(src_url, poolclass=sa.pool.NullPool, connect_args={"check_same_thread": True})
    result = copy_table(spec(name="items-copy", table="items", batch_size=100), source, engine(dst_url), MemoryStore())
    assert result.checksum.startswith("sha256-text:")
    assert read(dst_url) == expected()
