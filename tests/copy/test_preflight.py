"""Preflight refuses bad input before any row moves (exit code 2), naming the copy, the side,
the table and the column."""

from __future__ import annotations

import pytest

from orchestrator.copy import CopyPreflightError, copy_table, preflight
from orchestrator.errors import EXIT_BAD_INPUT
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, count, engine, execute, spec

SOURCE = "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10), qty INTEGER, seen DATE)"


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def pair(request: pytest.FixtureRequest, make_database: MakeDatabase) -> tuple[str, str]:
    require_server(request.param)
    src_url, dst_url = make_database(request.param), make_database("sqlite")
    execute(src_url, SOURCE)
    execute(src_url, "INSERT INTO items VALUES (1, 'a', 1, NULL), (2, 'a', 2, NULL), (3, 'b', NULL, NULL)")
    return src_url, dst_url


def refused(src_url: str, dst_url: str, **kw: object) -> CopyPreflightError:
    kw.setdefault("table", "items")
    copy_spec = spec(name="items-copy", **kw)  # type: ignore[arg-type]
    with pytest.raises(CopyPreflightError) as caught:
        preflight(copy_spec, engine(src_url), engine(dst_url))
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.hint
    assert caught.value.message.startswith("copy 'items-copy': ")
    return caught.value


def test_missing_tables(pair: tuple[str, str]) -> None:
    src_url, dst_url = pair
    error = refused(src_url, dst_url)
    assert "target service 'shipping', table 'items': the table does not exist" in error.message
    error = refused(src_url, dst_url, table="nope", target_table="items")
    assert "source service 'users', table 'nope': the table does not exist" in error.message


def test_missing_columns(pair: tuple[str, str]) -> None:
    src_url, dst_url = pair
    execute(dst_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10))")
    error = refused(src_url, dst_url, columns=("id", "code", "qty"))
    assert "target service 'shipping', table 'items': column 'qty' does not exist" in error.message
    error = refused(src_url, dst_url, columns=("id", "colour"))
    assert "source service 'users', table 'items': column 'colour' does not exist" in error.message
    # the default is the shared columns, and it copies
    copy_table(spec(name="items-copy", table="items"), engine(src_url), engine(dst_url), MemoryStore())
    assert count(dst_url, "items") == 3


def test_key_not_unique_or_null(pair: tuple[str, str]) -> None:
    src_url, dst_url = pair
    execute(dst_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10), qty INTEGER, seen DATE)")
    error = refused(src_url, dst_url, key=("code",))
    assert "the key (code) is not unique: (code='a') appears 2 times" in error.message
    error = refused(src_url, dst_url, key=("qty",))
    assert "key column 'qty' holds NULL" in error.message
    error = refused(src_url, dst_url, key=("id",), columns=("code", "qty"))
    assert "key column 'id' is not among the copied columns" in error.message
    preflight(spec(name="items-copy", table="items", key=("id", "code")), engine(src_url), engine(dst_url))


def test_incompatible_types_and_uncopied_not_null(pair: tuple[str, str]) -> None:
    src_url, dst_url = pair
    execute(dst_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10), qty INTEGER, seen BLOB)")
    error = refused(src_url, dst_url)
    assert "column 'seen'" in error.message and "date values into a binary column" in error.message
    execute(
        dst_url,
        "DROP TABLE items",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, code VARCHAR(10), extra INTEGER NOT NULL)",
    )
    error = refused(src_url, dst_url)
    assert "column 'extra' is NOT NULL without a default and is not copied" in error.message


def test_no_primary_key_and_no_key(make_database: MakeDatabase) -> None:
    src_url, dst_url = make_database("sqlite"), make_database("sqlite")
    execute(src_url, "CREATE TABLE items (id INTEGER, code VARCHAR(10))")
    execute(dst_url, "CREATE TABLE items (id INTEGER, code VARCHAR(10))")
    error = refused(src_url, dst_url)
    assert "has no primary key" in error.message
    preflight(spec(name="items-copy", table="items", key=("id",)), engine(src_url), engine(dst_url))
