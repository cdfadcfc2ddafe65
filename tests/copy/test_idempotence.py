"""Pre-existing target rows are never touched; copying twice never duplicates; revert removes
only what the copy wrote; a pre-existing row that differs from the source's is a conflict.

    source  1 2 3 4 5 6 7 8 9 10
    target        4 5       (pre-existing, same values)      + 42 (not in the source)
    after copy: 1-3, 6-10 copied; 4, 5, 42 untouched; revert: back to 4, 5, 42

    target        4'        (pre-existing, other values): the copy fails naming key 4, writes nothing
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyConflictError, copy_table, revert_copy
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import MemoryStore, engine, spec


def make_people(url: str, rows: list[tuple[object, ...]], composite: bool = False) -> None:
    eng = engine(url)
    md = sa.MetaData()
    if composite:
        table = sa.Table(
            "people",
            md,
            sa.Column("region", sa.String(20), primary_key=True),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(50)),
        )
    else:
        table = sa.Table(
            "people",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(50)),
        )
    md.create_all(eng)
    if rows:
        cols = [c.name for c in table.columns]
        with eng.begin() as conn:
            conn.execute(table.insert(), [dict(zip(cols, r, strict=True)) for r in rows])
    eng.dispose()


def people(url: str) -> list[tuple[object, ...]]:
    eng = engine(url)
    with eng.connect() as conn:
        cols = [c["name"] for c in sa.inspect(conn).get_columns("people")]
        order = ", ".join(cols[:-1])
        rows = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM people ORDER BY {order}"))]
    eng.dispose()
    return rows


@pytest.mark.parametrize("dst", ["sqlite", "postgresql", "mysql"])
def test_preexisting_rows_are_kept_and_not_reverted(dst: str, make_database: MakeDatabase) -> None:
    require_server(dst)
    src_url, dst_url = make_database("postgresql" if dst != "postgresql" else "sqlite"), make_database(dst)
    make_people(src_url, [(i, f"source {i}") for i in range(1, 11)])
    make_people(dst_url, [(4, "source 4"), (5, "source 5"), (42, "only in target")])
    store = MemoryStore()
    copy_spec = spec(name="people-copy", table="people", batch_size=3)

    result = copy_table(copy_spec, engine(src_url), engine(dst_url), store)

    expected = sorted([(i, f"source {i}") for i in range(1, 11)] + [(42, "only in target")])
    assert people(dst_url) == expected
    assert (result.rows_copied, result.rows_skipped, result.source_rows) == (8, 2, 10)
    checkpoint = store.load()
    assert checkpoint is not None
    # an integer key is kept as runs: 4-5 and 42
    assert checkpoint.preexisting.ranges == ((4, 5), (42, 42))
    assert checkpoint.preexisting.count == 3

    again = copy_table(copy_spec, engine(src_url), engine(dst_url), store)
    assert people(dst_url) == expected
    assert (again.rows_copied, again.rows_skipped) == (8, 2)

    reverted = revert_copy(copy_spec, engine(src_url), engine(dst_url), store)
    assert reverted.rows_deleted_from_target == 8
    assert reverted.rows_restored_to_source == 0
    assert people(dst_url) == [(4, "source 4"), (5, "source 5"), (42, "only in target")]
    assert people(src_url) == [(i, f"source {i}") for i in range(1, 11)]

    # after a revert the copy starts over and writes the same rows again
    copy_table(copy_spec, engine(src_url), engine(dst_url), store)
    assert people(dst_url) == expected


@pytest.mark.parametrize(("src", "dst"), [("mysql", "sqlite"), ("sqlite", "mysql"), ("postgresql", "mysql")])
def test_composite_key_with_preexisting_rows(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    rows = [(region, i, f"{region}-{i}") for region in ("eu", "us", "ápac") for i in range(1, 6)]
    make_people(src_url, rows, composite=True)
    make_people(dst_url, [("us", 3, "us-3")], composite=True)
    store = MemoryStore()
    copy_spec = spec(name="people-copy", table="people", batch_size=4)

    result = copy_table(copy_spec, engine(src_url), engine(dst_url), store)

    assert (result.rows_copied, result.rows_skipped) == (14, 1)
    got = {(r[0], r[1]): r[2] for r in people(dst_url)}
    assert len(got) == 15
    assert all(got[(r[0], r[1])] == r[2] for r in rows)
    checkpoint = store.load()
    assert checkpoint is not None and checkpoint.preexisting.keys == (("us", "3"),)

    revert_copy(copy_spec, engine(src_url), engine(dst_url), store)
    assert people(dst_url) == [("us", 3, "us-3")]


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("postgresql", "mysql"), ("mysql", "sqlite")])
def test_preexisting_row_that_differs_is_a_conflict(src: str, dst: str, make_database: MakeDatabase) -> None:
    """The target already holds key 4 with other values: nothing is copied, the step fails
    naming the key and the column, and neither table changes."""
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    make_people(src_url, [(i, f"source {i}") for i in range(1, 11)])
    make_people(dst_url, [(4, "DIFFERENT"), (42, "only in target")])
    store = MemoryStore()

    with pytest.raises(CopyConflictError) as caught:
        copy_table(spec(name="people-copy", table="people", batch_size=3), engine(src_url), engine(dst_url), store)

    assert caught.value.key == "(id=4)"
    assert "column 'name'" in caught.value.message and "'DIFFERENT'" in caught.value.message
    assert people(dst_url) == [(4, "DIFFERENT"), (42, "only in target")]
    assert people(src_url) == [(i, f"source {i}") for i in range(1, 11)]


def test_preexisting_row_changed_during_the_copy_fails_verification(make_database: MakeDatabase) -> None:
    """A resumed copy checks the pre-existing rows again at the end: one that changed in the
    target since the first attempt is a conflict, and the rows the copy wrote are removed."""
    src_url, dst_url = make_database("sqlite"), make_database("sqlite")
    make_people(src_url, [(i, f"source {i}") for i in range(1, 11)])
    make_people(dst_url, [(4, "source 4")])
    store = MemoryStore()
    copy_spec = spec(name="people-copy", table="people", batch_size=3)
    copy_table(copy_spec, engine(src_url), engine(dst_url), store)
    eng = engine(dst_url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE people SET name = 'edited' WHERE id = 4"))
    eng.dispose()

    with pytest.raises(CopyConflictError):
        copy_table(copy_spec, engine(src_url), engine(dst_url), store)

    assert people(dst_url) == [(4, "edited")]
    assert people(src_url) == [(i, f"source {i}") for i in range(1, 11)]


def test_progress_and_throttle(make_database: MakeDatabase) -> None:
    import time

    src_url, dst_url = make_database("sqlite"), make_database("sqlite")
    make_people(src_url, [(i, f"p{i}") for i in range(1, 2001)])
    make_people(dst_url, [])
    seen: list[tuple[int, int | None]] = []
    copy_spec = spec(name="people-copy", table="people", batch_size=500, max_rows_per_second=8000, pause_seconds=0.01)
    started = time.monotonic()
    copy_table(copy_spec, engine(src_url), engine(dst_url), MemoryStore(), lambda d, t: seen.append((d, t)))
    assert time.monotonic() - started >= 2000 / 8000 * 0.9
    assert seen == [(500, 2000), (1000, 2000), (1500, 2000), (2000, 2000)]
