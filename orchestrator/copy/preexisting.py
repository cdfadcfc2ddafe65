"""The idempotence rule: the keys the target held before the copy, and conflicts with them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from orchestrator.copy.checkpoint import (
    PreexistingKeys,
)
from orchestrator.copy.copier import (
    CHUNK_ROWS,
    LOOKUP_KEYS,
    Copier,
    key_text,
    where_filter,
)
from orchestrator.copy.errors import (
    CopyConflictError,
)
from orchestrator.copy.streams import (
    RawConn,
    TableSql,
    stream_rows,
)
from orchestrator.copy.values import (
    RowHasher,
)
from orchestrator.copy.verify import (
    short,
)


def scan_preexisting(copier: Copier) -> PreexistingKeys:
    """Every key the target holds before the first batch, in canonical form."""
    plan = copier.plan
    tsql = copier.tsql
    sql = f"SELECT {tsql.cols(copier.tkey)} FROM {tsql.name} ORDER BY {tsql.order(copier.tkey)}"

    def keys() -> Iterator[tuple[str | None, ...]]:
        for rows in stream_rows(copier.tgt, sql, (), CHUNK_ROWS):
            for row in rows:
                yield copier.keys.canon(row)

    integer = len(plan.key_pairs) == 1 and plan.key_kinds[0] in ("integer", "boolean")
    return PreexistingKeys.build(keys(), integer)


def pages(
    conn: RawConn, tsql: TableSql, cols: Sequence[str], key: Sequence[str], key_index: Sequence[int], n: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a table in key order, ``n`` at a time, each page read in its own short
    transaction (keyset pagination: ``key_index`` locates the key among ``cols``)."""
    lo: tuple[Any, ...] | None = None
    while True:
        sql, params = tsql.rows_after(cols, key, lo, n)
        rows = conn.fetch(sql, params)
        conn.rollback()
        if not rows:
            return
        lo = tuple(rows[-1][i] for i in key_index)
        yield rows


def check_preexisting(copier: Copier, pre: PreexistingKeys) -> None:
    """Every target row that was there before the copy and whose key the source holds must
    equal the source's row: the copy never overwrites it, so a difference is a conflict that
    fails the step (before anything downstream drops the source's version)."""
    if not pre:
        return
    plan = copier.plan
    hasher = RowHasher([p.kind for p in plan.columns])
    for trows in pages(copier.tgt, copier.tsql, copier.tcols, copier.tkey, plan.key_index, LOOKUP_KEYS):
        theirs: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
        keys = []  # the pre-existing rows' keys, as the source holds them
        for trow in trows:
            canon = hasher.canon(trow)
            ck = tuple(canon[i] for i in plan.key_index)
            if pre.contains(ck):
                theirs[ck] = canon
                keys.append(copier.keys.to_source_in(trow))
        if not theirs:
            continue
        ssql, sparams = copier.ssql.select_by_keys(copier.scols, copier.skey, keys)
        for srow in copier.src.fetch(ssql, sparams):
            canon = hasher.canon(srow)
            other = theirs.get(tuple(canon[i] for i in plan.key_index))
            if other is not None and other != canon:
                copier.src.commit()
                raise _conflict(copier, srow, canon, other)
        copier.src.commit()


def _conflict(copier: Copier, srow: Sequence[Any], mine: Sequence[Any], theirs: Sequence[Any]) -> CopyConflictError:
    key = key_text(copier.skey, [srow[i] for i in copier.plan.key_index])
    column = next(p.target.name for p, a, b in zip(copier.plan.columns, mine, theirs, strict=True) if a != b)
    index = copier.tcols.index(column)
    return CopyConflictError(
        f"{where_filter(copier.spec, 'target')}: the row with key {key} was already there before the copy and "
        f"differs from the source's: column '{column}' is {short(mine[index])} in the source and "
        f"{short(theirs[index])} in the target. A copy never overwrites a row it did not write, and moving "
        "on would lose one of the two versions",
        "make the two rows agree (or delete the target's row if the source's is right), then run again",
        key=key,
    )
