"""Nullable booleans holding NULLs, and -0.0, copy and verify in every direction; when the
target changes a value, the narrowing names the right row and column, NULLs included; the
canonical form each database computes is the one Python computes."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyVerificationError, copy_table
from orchestrator.copy.blocks import canon_exprs
from orchestrator.copy.schema import reflect_table
from orchestrator.copy.streams import TableSql, raw_connection
from orchestrator.copy.values import RowHasher
from tests.conftest import DIALECTS, MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, count, engine, execute, spec

DIRECTIONS = list(itertools.product(DIALECTS, DIALECTS))
IDS = [f"{s}-to-{d}" for s, d in DIRECTIONS]

FLAG_ROWS: list[dict[str, Any]] = [
    {"id": 1, "flag": True, "name": "yes"},
    {"id": 2, "flag": None, "name": None},
    {"id": 3, "flag": False, "name": "no"},
    {"id": 4, "flag": None, "name": "unknown"},
]

# a JSON number with more digits than a float keeps, before the row whose float changes
MIXED_ROWS: list[dict[str, Any]] = [
    {"id": 1, "flag": None, "ratio": 1.5, "doc": '{"n": 1.00000000000000001, "s": "x"}'},
    {"id": 2, "flag": True, "ratio": -0.0, "doc": None},
    {"id": 3, "flag": None, "ratio": 0.0, "doc": "[0.10000000000000000001]"},
]


def flags_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "flags",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("flag", sa.Boolean, nullable=True),
        sa.Column("name", sa.String(20)),
    )


def mixed_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "mixed",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("flag", sa.Boolean, nullable=True),
        sa.Column("ratio", sa.Double()),
        sa.Column("doc", sa.JSON(none_as_null=True)),
    )


def create(url: str, factory: Any, rows: list[dict[str, Any]]) -> sa.Table:
    eng = engine(url)
    md = sa.MetaData()
    table = factory(md)
    try:
        md.create_all(eng)
        if rows:
            with eng.begin() as conn:
                conn.execute(table.insert(), rows)
    finally:
        eng.dispose()
    return table


def read(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
    finally:
        eng.dispose()
    return [
        tuple(bool(v) if c.name == "flag" and v is not None else v for c, v in zip(table.c, r, strict=True))
        for r in rows
    ]


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=IDS)
def test_nullable_booleans_with_nulls_copy_and_verify(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    table = create(src_url, flags_table, FLAG_ROWS)
    create(dst_url, flags_table, [])

    result = copy_table(
        spec(name="flags-copy", table="flags", batch_size=3), engine(src_url), engine(dst_url), MemoryStore()
    )

    assert (result.rows_copied, result.source_rows) == (4, 4)
    assert read(dst_url, table) == [(1, True, "yes"), (2, None, None), (3, False, "no"), (4, None, "unknown")]


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=IDS)
def test_negative_zero_and_precise_json_copy_and_verify(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    table = create(src_url, mixed_table, MIXED_ROWS)
    create(dst_url, mixed_table, [])

    result = copy_table(spec(name="mixed-copy", table="mixed"), engine(src_url), engine(dst_url), MemoryStore())

    assert (result.rows_copied, result.source_rows) == (3, 3)
    rows = read(dst_url, table)
    assert [r[:2] for r in rows] == [(1, None), (2, True), (3, None)]
    assert [r[2] for r in rows] == [1.5, 0.0, 0.0]  # -0.0 == 0.0: MariaDB stores it as 0
    eng = engine(dst_url)
    with eng.connect() as conn:
        docs = [r[0] for r in conn.execute(sa.text("SELECT doc FROM mixed ORDER BY id"))]
    eng.dispose()
    first = docs[0] if isinstance(docs[0], str) else None
    assert first is None or "1.00000000000000001" in first  # the digits were kept as written
    assert docs[1] is None


TRIGGERS = {
    "postgresql": [
        "CREATE FUNCTION alter_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 2 THEN NEW.ratio := 0.5; END IF; "
        "IF NEW.id = 3 THEN NEW.flag := true; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER alter_row BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION alter_row()",
    ],
    "mysql": [
        "CREATE TRIGGER alter_row BEFORE INSERT ON {table} FOR EACH ROW BEGIN "
        "IF NEW.id = 2 THEN SET NEW.ratio = 0.5; END IF; "
        "IF NEW.id = 3 THEN SET NEW.flag = 1; END IF; END",
    ],
    "sqlite": [
        "CREATE TRIGGER alter_row AFTER INSERT ON {table} BEGIN "
        "UPDATE {table} SET ratio = CASE WHEN NEW.id = 2 THEN 0.5 ELSE ratio END, "
        "flag = CASE WHEN NEW.id = 3 THEN 1 ELSE flag END WHERE id = NEW.id; END",
    ],
}


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=IDS)
def test_narrowing_names_the_row_and_column_that_changed(src: str, dst: str, make_database: MakeDatabase) -> None:
    """Row 1's JSON number is not the difference (it was read as a float once); row 2's float is."""
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    create(src_url, mixed_table, MIXED_ROWS)
    create(dst_url, mixed_table, [])
    execute(dst_url, *[t.format(table="mixed") for t in TRIGGERS[dst]])

    with pytest.raises(CopyVerificationError) as caught:
        copy_table(spec(name="mixed-copy", table="mixed"), engine(src_url), engine(dst_url), MemoryStore())

    assert caught.value.key == "(id=2)"
    assert "column 'ratio' is '0.0' in the source and '0.5' in the target" in caught.value.message
    assert count(dst_url, "mixed") == 0


FLAG_TRIGGERS = {
    "postgresql": [
        "CREATE FUNCTION set_flag() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = 4 THEN NEW.flag := true; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER set_flag BEFORE INSERT ON flags FOR EACH ROW EXECUTE FUNCTION set_flag()",
    ],
    "mysql": [
        "CREATE TRIGGER set_flag BEFORE INSERT ON flags FOR EACH ROW SET NEW.flag = IF(NEW.id = 4, 1, NEW.flag)",
    ],
    "sqlite": [
        "CREATE TRIGGER set_flag AFTER INSERT ON flags WHEN NEW.id = 4 BEGIN "
        "UPDATE flags SET flag = 1 WHERE id = NEW.id; END",
    ],
}


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=IDS)
def test_narrowing_compares_nulls_in_database_checksums(src: str, dst: str, make_database: MakeDatabase) -> None:
    """Only columns whose checksum the databases compute: a NULL turned into true is named."""
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    create(src_url, flags_table, FLAG_ROWS)
    create(dst_url, flags_table, [])
    execute(dst_url, *FLAG_TRIGGERS[dst])

    with pytest.raises(CopyVerificationError) as caught:
        copy_table(spec(name="flags-copy", table="flags"), engine(src_url), engine(dst_url), MemoryStore())

    assert caught.value.key == "(id=4)"
    assert "column 'flag' is NULL in the source and '1' in the target" in caught.value.message
    assert count(dst_url, "flags") == 0


CANON_ROWS: list[dict[str, Any]] = [
    {"id": 1, "flag": True, "amount": Decimal("10.500"), "name": "é😀", "blob": b"\x00\xff"},
    {"id": 2, "flag": False, "amount": Decimal("0"), "name": "", "blob": b""},
    {"id": 3, "flag": None, "amount": None, "name": None, "blob": None},
    {"id": 4, "flag": None, "amount": Decimal("-0.001"), "name": "%s", "blob": None},
]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_database_canonical_form_is_pythons(dialect: str, make_database: MakeDatabase) -> None:
    """What the checksum hashes, computed by the database, equals Python's form, NULLs included."""
    require_server(dialect)
    url = make_database(dialect)

    def factory(md: sa.MetaData) -> sa.Table:
        return sa.Table(
            "canon",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("flag", sa.Boolean, nullable=True),
            sa.Column("amount", sa.Numeric(12, 4)),
            sa.Column("name", sa.String(20)),
            sa.Column("blob", sa.LargeBinary(16)),
        )

    create(url, factory, CANON_ROWS)
    eng = engine(url)
    info = reflect_table(eng, "canon")
    assert info is not None
    sql = TableSql(eng, info)
    kinds = [c.kind for c in info.columns]
    exprs = canon_exprs(sql, info.columns, kinds)
    assert exprs is not None
    names = [c.name for c in info.columns]
    query = f"SELECT {sql.cols(names)}, {', '.join(exprs)} FROM {sql.name} ORDER BY 1"
    with raw_connection(eng) as conn:
        rows = conn.fetch(query)
    eng.dispose()
    hasher = RowHasher(kinds)
    assert len(rows) == 4
    for row in rows:
        in_db = tuple(None if v is None else str(v) for v in row[len(names) :])
        assert in_db == hasher.canon(row[: len(names)])
