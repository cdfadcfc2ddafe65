"""Verification of a finished copy, and the table checksum."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator.copy.blocks import (
    canon_exprs,
    digest_sql,
)
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
    CopyPreflightError,
    CopyVerificationError,
)
from orchestrator.copy.pipeline import StreamDigest
from orchestrator.copy.schema import (
    CopyPlan,
    dialect_of,
    reflect_table,
)
from orchestrator.copy.streams import (
    BinaryCopyBody,
    CopyOutReader,
    RawConn,
    TableSql,
    raw_connection,
    stream_rows,
)
from orchestrator.copy.values import (
    RowHasher,
)


@dataclass(frozen=True)
class VerifyOutcome:
    source_count: int
    target_count: int
    skipped: int
    checksum: str


def _side_digest(
    conn: RawConn, sql: TableSql, plan: CopyPlan, side: int, pre: PreexistingKeys
) -> tuple[int, int, int, bool]:
    """(rows outside the pre-existing keys, sum of their line digests, pre-existing rows seen,
    computed in the database?) for one side."""
    cols = [p.source if side == 0 else p.target for p in plan.columns]
    kinds = [p.kind for p in plan.columns]
    query = None if pre else digest_sql(sql, cols, kinds)
    if query is not None:
        rows = conn.fetch(query)
        conn.commit()
        return int(rows[0][0]), int(rows[0][1]), 0, True
    hasher = RowHasher(kinds)
    key_index = plan.key_index
    skipped = 0
    select = f"SELECT {sql.cols([c.name for c in cols])} FROM {sql.name}"
    for rows in stream_rows(conn, select, (), CHUNK_ROWS):
        for row in rows:
            canon = hasher.canon(row)
            if pre and pre.contains(tuple(canon[i] for i in key_index)):
                skipped += 1
                continue
            hasher.add_canon(canon)
    return hasher.count, hasher.total, skipped, False


def _verify_stream(copier: Copier, digest: StreamDigest) -> VerifyOutcome | None:
    """Compare the target, read back in key order, with what the source sent; None when they
    differ (the caller then compares canonical lines, which also names the first difference).

    (The order the table stores its rows in is not enough: PostgreSQL puts a row that fits
    into room left on an earlier page.)"""
    tsql = copier.tsql
    select = f"SELECT {tsql.cols(copier.tcols)} FROM {tsql.name} ORDER BY {tsql.order(copier.tkey)}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        # meanwhile the source is counted again: a row written to it during the copy makes the
        # comparison fall back to reading both sides (SQLite connections stay on this thread)
        later = pool.submit(_target_stream, copier.tgt, digest, select)
        rows = copier.src.fetch(copier.ssql.count())
        copier.src.commit()
        outcome = later.result()
    if not rows or int(rows[0][0]) != digest.rows:
        return None
    return outcome


def _target_stream(conn: RawConn, digest: StreamDigest, select: str) -> VerifyOutcome | None:
    rows, hashed, valid = _stream_hash(conn, select, digest.binary)
    if not valid or rows != digest.rows or hashed != digest.hash.hexdigest():
        return None
    kind = "binary" if digest.binary else "text"
    return VerifyOutcome(digest.rows, rows, 0, f"sha256-{kind}:{rows}:{hashed}")


def _stream_hash(conn: RawConn, select: str, binary: bool) -> tuple[int, str, bool]:
    """(rows, SHA-256 of their COPY output in the order of ``select``, whether the binary
    stream was one this reader understands) of a PostgreSQL query."""
    cur = conn.dbapi.cursor()
    try:  # PostgreSQL's output of dates, times and bytea depends on these; the key's index
        # gives the order (sorting a big table would spill to disk)
        cur.execute(
            "SELECT set_config('DateStyle', 'ISO, MDY', true), set_config('TimeZone', 'UTC', true), "
            "set_config('bytea_output', 'hex', true), set_config('IntervalStyle', 'postgres', true), "
            "set_config('enable_sort', 'off', true)"
        )
    finally:
        cur.close()
    hashed = hashlib.sha256()
    reader = CopyOutReader(conn, f"COPY ({select}) TO STDOUT" + (" (FORMAT BINARY)" if binary else ""))
    valid = True
    if binary:
        body = BinaryCopyBody(hashed.update)
        for data, _ in reader:
            body.feed(data)
        body.finish()
        valid = body.valid
    else:
        for data, _ in reader:
            hashed.update(data)
    conn.rollback()
    return reader.rows, hashed.hexdigest(), valid


def verify_streams(copier: Copier, pre: PreexistingKeys) -> VerifyOutcome | None:
    """Compare both sides' binary COPY output in key order, read at once, where both are
    PostgreSQL with binary-compatible columns and the target held no row before the copy:
    equal streams are equal rows. None when that does not apply, or the streams differ (then
    ``verify_copy`` compares canonical forms and names the difference)."""
    if pre or not copier.passthrough:
        return None
    ssql, tsql = copier.ssql, copier.tsql
    ssel = f"SELECT {ssql.cols(copier.scols)} FROM {ssql.name} ORDER BY {ssql.order(copier.skey)}"
    tsel = f"SELECT {tsql.cols(copier.tcols)} FROM {tsql.name} ORDER BY {tsql.order(copier.tkey)}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(_stream_hash, copier.tgt, tsel, True)
        s_rows, s_hash, s_valid = _stream_hash(copier.src, ssel, True)
        t_rows, t_hash, t_valid = later.result()
    if not (s_valid and t_valid) or s_rows != t_rows or s_hash != t_hash:
        return None
    return VerifyOutcome(s_rows, t_rows, 0, f"sha256-binary:{t_rows}:{t_hash}")


def verify_copy(copier: Copier, pre: PreexistingKeys) -> VerifyOutcome:
    plan = copier.plan
    digest = copier.digest
    if digest is not None and digest.ok and not pre:
        outcome = _verify_stream(copier, digest)
        if outcome is not None:
            return outcome
    # the two sides run at once: a digest computed in a database waits on its server, not on us
    # (SQLite connections stay on this thread)
    with ThreadPoolExecutor(max_workers=1) as pool:
        if not copier.tgt_impl.in_process:
            later = pool.submit(_side_digest, copier.tgt, copier.tsql, plan, 1, pre)
            s_count, s_sum, skipped, s_db = _side_digest(copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = later.result()
        elif not copier.src_impl.in_process:
            first = pool.submit(_side_digest, copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = _side_digest(copier.tgt, copier.tsql, plan, 1, pre)
            s_count, s_sum, skipped, s_db = first.result()
        else:
            s_count, s_sum, skipped, s_db = _side_digest(copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = _side_digest(copier.tgt, copier.tsql, plan, 1, pre)
    if s_count != t_count or s_sum != t_sum:
        detail, key = _first_difference(copier, pre, (s_db, t_db))
        raise CopyVerificationError(
            f"{where_filter(copier.spec, 'target')}: verification failed: the source has {s_count} "
            f"rows to copy and the target {t_count}"
            + (", with different checksums" if s_count == t_count else "")
            + f"; {detail}",
            "something changed the rows on the way (a trigger, a default, a rule, or another "
            "writer); fix it and run the copy again. The copied rows were removed",
            key=key,
        )
    return VerifyOutcome(s_count, t_count, skipped, f"md5-sum:{s_count}:{s_sum:x}")


# (row as read, its canonical form, its key's canonical form)
_CanonRow = tuple[tuple[Any, ...], tuple[str | None, ...], tuple[Any, ...]]


class _CanonRows:
    """Rows of one side read for narrowing a difference down, each with its key in Python's
    canonical form (to match the two sides) and every column in the canonical form the
    checksum of that side used: computed by the database when its checksum was, so that a
    difference the checksums saw is a difference here too."""

    def __init__(self, copier: Copier, side: int, in_db: bool):
        plan = copier.plan
        self.sql = copier.ssql if side == 0 else copier.tsql
        self.conn = copier.src if side == 0 else copier.tgt
        self.names = copier.scols if side == 0 else copier.tcols
        self.key = copier.skey if side == 0 else copier.tkey
        cols = [p.source if side == 0 else p.target for p in plan.columns]
        kinds = [p.kind for p in plan.columns]
        self.exprs = (canon_exprs(self.sql, cols, kinds) if in_db else None) or []
        self.hasher = RowHasher(kinds)
        self.key_index = plan.key_index

    def after(self, lo: Sequence[Any] | None) -> list[_CanonRow]:
        """The next rows after ``lo`` in key order as (raw row, canonical row, canonical key)."""
        sql, params = self.sql.rows_after(self.names, self.key, lo, LOOKUP_KEYS, self.exprs)
        return self._read(sql, params)

    def by_keys(self, keys: Sequence[Sequence[Any]]) -> list[_CanonRow]:
        sql, params = self.sql.select_by_keys(self.names, self.key, keys, self.exprs)
        return self._read(sql, params)

    def _read(self, sql: str, params: Sequence[Any]) -> list[_CanonRow]:
        rows = self.conn.fetch(sql, params)
        self.conn.rollback()
        n = len(self.names)
        out = []
        for row in rows:
            raw = tuple(row[:n])
            canon = self.hasher.canon(raw)
            ck = tuple(canon[i] for i in self.key_index)
            if self.exprs:
                canon = tuple(None if v is None else _db_text(v) for v in row[n:])
            out.append((raw, canon, ck))
        return out


def canon_rows(copier: Copier, side: int) -> _CanonRows:
    """Rows of one side (0: source, 1: target) in key order, with Python's canonical forms."""
    return _CanonRows(copier, side, in_db=False)


def _db_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _first_difference(copier: Copier, pre: PreexistingKeys, in_db: tuple[bool, bool]) -> tuple[str, str | None]:
    """Walk the source in key order, look its rows up in the target; name the first key that
    is missing or differs (and its first differing column, NULLs included), then look for
    target rows the source lacks. ``in_db``: whether each side's checksum was computed by its
    database, whose canonical forms are then the ones compared."""
    plan = copier.plan
    source, target = _CanonRows(copier, 0, in_db[0]), _CanonRows(copier, 1, in_db[1])
    lo: tuple[Any, ...] | None = None
    while True:
        rows = source.after(lo)
        if not rows:
            break
        lo = tuple(rows[-1][0][i] for i in plan.key_index)
        wanted = [r for r in rows if not pre.contains(r[2])]
        if not wanted:
            continue
        keys = [copier.keys.to_target_in(row) for row, _, _ in wanted]
        found = {ck: canon for _, canon, ck in target.by_keys(keys)}
        for row, canon, ck in wanted:
            key = key_text(copier.skey, [row[i] for i in plan.key_index])
            other = found.get(ck)
            if other is None:
                return f"the row with key {key} is missing from the target", key
            for pair, a, b in zip(plan.columns, canon, other, strict=True):
                if a != b:
                    return (
                        f"the first differing row has key {key}: column "
                        f"'{pair.target.name}' is {short(a)} in the source and {short(b)} "
                        "in the target",
                        key,
                    )
    # every source row is in the target: look for a target row the source lacks
    return _row_only_in_target(copier, pre)


def _row_only_in_target(copier: Copier, pre: PreexistingKeys) -> tuple[str, str | None]:
    lo: tuple[Any, ...] | None = None
    while True:
        sql, params = copier.tsql.keys_after(copier.tkey, lo, LOOKUP_KEYS)
        trows = copier.tgt.fetch(sql, params)
        copier.tgt.rollback()
        if not trows:
            break
        lo = tuple(trows[-1])
        cands = []
        for trow in trows:
            ck = copier.keys.canon(trow)
            if not pre.contains(ck):
                cands.append((trow, ck))
        if not cands:
            continue
        keys = [copier.keys.to_source(t) for t, _ in cands]
        ssql, sparams = copier.ssql.select_by_keys(copier.skey, copier.skey, keys)
        have = {copier.keys.canon(r) for r in copier.src.fetch(ssql, sparams)}
        copier.src.commit()
        for trow, ck in cands:
            if ck not in have:
                key = key_text(copier.tkey, trow)
                return f"the target holds a row with key {key} that the source lacks", key
    return "the difference could not be narrowed down to one row", None


def short(value: str | None) -> str:
    if value is None:
        return "NULL"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- checksums ---------------------------------------------------------------------------------


def checksum_table(engine: Engine, table: str, columns: Sequence[str], key: Sequence[str]) -> tuple[int, str]:
    """(row count, order-independent checksum) of ``columns`` of ``table``.

    The checksum is the sum (not reduced, written in hex) of the first 60 bits of the MD5 of
    each row's canonical line (see ``values.RowHasher`` and docs/copy.md), so tables in
    different databases holding the same values agree.
    """
    dialect_of(engine)
    info = reflect_table(engine, table)
    if info is None:
        raise CopyPreflightError(f"table '{table}' does not exist")
    cols = []
    for name in [*columns, *key]:
        col = info.find(name)
        if col is None:
            raise CopyPreflightError(f"table '{table}' has no column '{name}'")
        cols.append(col)
    sql = TableSql(engine, info)
    hasher = RowHasher([c.kind for c in cols[: len(columns)]])
    query = f"SELECT {sql.cols([c.name for c in cols[: len(columns)]])} FROM {sql.name}"
    with raw_connection(engine) as conn:
        for rows in stream_rows(conn, query, (), CHUNK_ROWS):
            for row in rows:
                hasher.add(row)
    return hasher.count, hasher.hexdigest
