"""Tables and columns whose names hold ``%``, a backtick or a double quote copy and revert in
every direction: identifiers are quoted for SQL and escaped for the driver's paramstyle."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from orchestrator.copy import checksum_table, copy_table, revert_copy
from tests.conftest import DIALECTS, MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, engine, spec

DIRECTIONS = list(itertools.product(DIALECTS, DIALECTS))
TABLE = 'we%ird`"t'
COLUMNS = ("i%d", "pct%s", "c`ol", 'q"uote', "%%", "j`son")
ROWS: list[dict[str, object]] = [
    {"i%d": 1, "pct%s": "50%", "c`ol": "`x`", 'q"uote': 'say "hi"', "%%": 1.5, "j`son": {"k%s": "`v`"}},
    {"i%d": 2, "pct%s": None, "c`ol": None, 'q"uote': None, "%%": None, "j`son": None},
    {"i%d": 3, "pct%s": "%s %d %%", "c`ol": "c``ol", 'q"uote': "'", "%%": -2.25, "j`son": [1, "%%"]},
]


def odd_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        md,
        sa.Column("i%d", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pct%s", sa.String(40)),
        sa.Column("c`ol", sa.String(40)),
        sa.Column('q"uote', sa.String(40)),
        sa.Column("%%", sa.Float),
        sa.Column("j`son", sa.JSON),
    )


def make(url: str, rows: list[dict[str, object]]) -> sa.Table:
    eng = engine(url)
    md = sa.MetaData()
    table = odd_table(md)
    try:
        md.create_all(eng)
        if rows:
            with eng.begin() as conn:
                conn.execute(table.insert(), rows)
    finally:
        eng.dispose()
    return table


def read(url: str) -> list[tuple[object, ...]]:
    table = odd_table(sa.MetaData())
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c["i%d"]))]
    finally:
        eng.dispose()


def drop(url: str) -> None:
    eng = engine(url)
    try:
        odd_table(sa.MetaData()).drop(eng)
    finally:
        eng.dispose()


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=[f"{s}-to-{d}" for s, d in DIRECTIONS])
def test_odd_names_copy_and_revert(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    make(src_url, ROWS)
    make(dst_url, [])
    expected = read(src_url)
    assert len(expected) == 3
    copy_spec = spec(name="odd-copy", table=TABLE, batch_size=2)
    store = MemoryStore()

    result = copy_table(copy_spec, engine(src_url), engine(dst_url), store)

    assert (result.rows_copied, result.source_rows) == (3, 3)
    assert read(dst_url) == expected
    assert checksum_table(engine(src_url), TABLE, COLUMNS, ["i%d"]) == checksum_table(
        engine(dst_url), TABLE, COLUMNS, ["i%d"]
    )

    # the source table was dropped and re-created empty by a later step; revert brings it back
    drop(src_url)
    make(src_url, [])
    reverted = revert_copy(copy_spec, engine(src_url), engine(dst_url), store)
    assert (reverted.rows_restored_to_source, reverted.rows_deleted_from_target) == (3, 3)
    assert read(src_url) == expected
    assert read(dst_url) == []
