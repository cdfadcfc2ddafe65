"""Every direction among SQLite, PostgreSQL and MariaDB, with every type the copy must carry.

source ──copy──▶ target          rows equal after normalisation
source dropped, re-created empty
source ◀─revert── target          source restored, target emptied
"""

from __future__ import annotations

import itertools

import pytest

from orchestrator.copy import checksum_table, copy_table, revert_copy
from tests.conftest import DIALECTS, MakeDatabase, require_server
from tests.copy.helpers import (
    THINGS_COLUMNS,
    THINGS_ROWS,
    MemoryStore,
    count,
    create_things,
    engine,
    execute,
    read_rows,
    spec,
)

DIRECTIONS = list(itertools.product(DIALECTS, DIALECTS))
EXPECTED_METHOD = {"postgresql": "psycopg-copy", "mysql": "executemany", "sqlite": "executemany"}


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=[f"{s}-to-{d}" for s, d in DIRECTIONS])
def test_copy_and_revert_every_type(src: str, dst: str, make_database: MakeDatabase) -> None:
    require_server(src)
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    table = create_things(src_url, THINGS_ROWS)
    create_things(dst_url)
    store = MemoryStore()
    source_rows = read_rows(src_url, table)
    assert len(source_rows) == len(THINGS_ROWS)

    result = copy_table(spec(batch_size=3), engine(src_url), engine(dst_url), store)

    assert read_rows(dst_url, table) == source_rows
    assert (result.rows_copied, result.rows_skipped, result.source_rows) == (4, 0, 4)
    expected = "pg-binary-copy" if src == dst == "postgresql" else EXPECTED_METHOD[dst]
    assert result.method == expected
    assert result.rows_per_second > 0
    # the NULL row stays NULL in every column
    null_row = next(r for r in read_rows(dst_url, table) if r[0] == 3)
    assert null_row[1:] == (None,) * (len(THINGS_COLUMNS) - 1)
    # checkpoints: one before the first batch, then one per committed batch of 3 rows
    assert [c.last_key for c in store.history] == [None, (3,), (4,)]
    if src == dst == "postgresql":  # compared as the binary COPY data both sides write
        assert result.checksum.startswith("sha256-binary:")
    if src == dst:
        assert checksum_table(engine(src_url), "things", THINGS_COLUMNS, ["id"]) == checksum_table(
            engine(dst_url), "things", THINGS_COLUMNS, ["id"]
        )

    # a later step's downgrade dropped the source table and re-created it empty
    execute(src_url, "DROP TABLE things")
    create_things(src_url)
    reverted = revert_copy(spec(), engine(src_url), engine(dst_url), store)
    assert reverted.rows_restored_to_source == 4
    assert reverted.rows_deleted_from_target == 4
    assert read_rows(src_url, table) == source_rows
    assert count(dst_url, "things") == 0

    again = revert_copy(spec(), engine(src_url), engine(dst_url), store)
    assert (again.rows_restored_to_source, again.rows_deleted_from_target) == (0, 0)
    assert read_rows(src_url, table) == source_rows
