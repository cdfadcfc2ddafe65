"""Values the target cannot hold exactly fail the copy, naming the column and the key; nothing is
truncated, and the rows written before the failure are removed."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyValueError, copy_table
from orchestrator.errors import EXIT_STEP_FAILED
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, count, engine, execute, spec


def insert(url: str, table: str, rows: list[dict[str, object]]) -> None:
    eng = engine(url)
    md = sa.MetaData()
    t = sa.Table(table, md, autoload_with=eng)
    with eng.begin() as conn:
        conn.execute(t.insert(), rows)
    eng.dispose()


def run_failing(src_url: str, dst_url: str, batch_size: int = 2) -> CopyValueError:
    store = MemoryStore()
    with pytest.raises(CopyValueError) as caught:
        copy_table(
            spec(name="notes-copy", table="notes", batch_size=batch_size), engine(src_url), engine(dst_url), store
        )
    assert caught.value.exit_code == EXIT_STEP_FAILED
    assert count(dst_url, "notes") == 0  # the batches committed before the failure are gone
    return caught.value


@pytest.mark.parametrize("src", ["postgresql", "sqlite"])
def test_emoji_into_utf8mb3_column(src: str, make_database: MakeDatabase) -> None:
    require_server("mysql")
    require_server(src)
    src_url, dst_url = make_database(src), make_database("mysql")
    execute(src_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(100))")
    insert(src_url, "notes", [{"id": i, "body": f"plain {i} é"} for i in range(1, 6)] + [{"id": 6, "body": "hi 😀"}])
    execute(dst_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(100) CHARACTER SET utf8mb3)")

    error = run_failing(src_url, dst_url)

    assert error.column == "body" and error.key == "(id=6)"
    assert "column 'body'" in error.message and "(id=6)" in error.message
    assert "utf8mb3" in error.message
    assert "target service 'shipping', table 'notes'" in error.message


CASES = {
    "too-long-string": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v VARCHAR(40))",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v VARCHAR(5))",
        [{"id": 1, "v": "short"}, {"id": 2, "v": "longer than five"}],
        "(id=2)",
        "longer than",
    ),
    "integer-out-of-range": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v BIGINT)",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v SMALLINT)",
        [{"id": 1, "v": 5}, {"id": 2, "v": 7}, {"id": 3, "v": 40000}],
        "(id=3)",
        "out of range",
    ),
    "decimal-scale": (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v NUMERIC(10, 4))",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, v NUMERIC(10, 2))",
        [{"id": 1, "v": Decimal("1.25")}, {"id": 2, "v": Decimal("1.005")}],
        "(id=2)",
        "digits after the decimal point",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("src", "dst"), [("postgresql", "mysql"), ("mysql", "postgresql")])
def test_unrepresentable_values(case: str, src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_ddl, dst_ddl, rows, key, words = CASES[case]
    src_url, dst_url = make_database(src), make_database(dst)
    execute(src_url, src_ddl)
    insert(src_url, "notes", rows)
    execute(dst_url, dst_ddl)

    error = run_failing(src_url, dst_url)

    assert error.column == "v" and error.key == key
    assert words in error.message


def test_decimal_precision_sqlite_cannot_keep(make_database: MakeDatabase) -> None:
    src_url, dst_url = make_database("postgresql"), make_database("sqlite")
    execute(src_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, v NUMERIC(38, 10))")
    insert(
        src_url, "notes", [{"id": 1, "v": Decimal("1.5")}, {"id": 2, "v": Decimal("1234567890123456789.0123456789")}]
    )
    execute(dst_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, v NUMERIC(38, 10))")
    error = run_failing(src_url, dst_url, batch_size=1)
    assert error.column == "v" and error.key == "(id=2)"
    assert "significant digits" in error.message


@pytest.mark.parametrize(("src", "dst"), [("postgresql", "mysql"), ("mysql", "postgresql")])
def test_full_precision_decimals_and_big_integers(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    ddl = "CREATE TABLE notes (id BIGINT PRIMARY KEY, v NUMERIC(38, 10), n NUMERIC(20, 0))"
    rows = [
        {
            "id": 9223372036854775807,
            "v": Decimal("1234567890123456789012345678.0123456789"),
            "n": Decimal("99999999999999999999"),
        },
        {"id": -9223372036854775808, "v": Decimal("-0.0000000001"), "n": Decimal("-18446744073709551615")},
    ]  # fmt: skip
    execute(src_url, ddl)
    insert(src_url, "notes", rows)
    execute(dst_url, ddl)
    copy_table(spec(name="notes-copy", table="notes"), engine(src_url), engine(dst_url), MemoryStore())
    eng = engine(dst_url)
    with eng.connect() as conn:
        got = [tuple(r) for r in conn.execute(sa.text("SELECT id, v, n FROM notes ORDER BY id"))]
    eng.dispose()
    assert got == sorted((r["id"], r["v"], r["n"]) for r in rows)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("sqlite", "postgresql"),
        ("mysql", "postgresql"),
        ("postgresql", "postgresql"),
        ("sqlite", "mysql"),
        ("postgresql", "sqlite"),
    ],
)
def test_database_refusal_is_located(src: str, dst: str, make_database: MakeDatabase) -> None:
    """A CHECK constraint only the target database knows: the row is still named."""
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    execute(src_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, v INTEGER)")
    insert(src_url, "notes", [{"id": i, "v": 7 - i} for i in range(1, 9)])
    execute(dst_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, v INTEGER, CONSTRAINT positive CHECK (v > 0))")
    error = run_failing(src_url, dst_url, batch_size=3)
    assert error.key == "(id=7)"
    assert "could not be written" in error.message
