"""Copy steps: move the rows of a table from one service's database into another's.

How a copy runs
    Rows are read from the source in key order (keyset pagination on the copy's key, by
    default the source's primary key; composite keys work) and written to the target in
    batches of ``batch_size`` rows, each batch committed on its own. Memory does not grow with
    the table: sources are read with server-side cursors and rows flow through in chunks.

    The fastest path the two dialects allow is used:

    * PostgreSQL to PostgreSQL, same column types: ``COPY (SELECT ...) TO STDOUT (FORMAT
      BINARY)`` streamed straight into ``COPY ... FROM STDIN (FORMAT BINARY)`` ("pg-binary-copy").
    * SQLite or MariaDB to PostgreSQL, when every column has an exact SQL rendering (see
      copy_fast): the source database writes blocks of rows as ``COPY`` text lines
      (``group_concat``/``GROUP_CONCAT`` over a key range) and Python only relays the bytes
      into ``COPY ... FROM STDIN`` ("psycopg-copy-text"). A batch PostgreSQL refuses (a value
      the SQL rendering would not vouch for) is redone on the next path.
    * any source to PostgreSQL: psycopg 3 ``COPY ... FROM STDIN`` with ``write_row``, binary
      format with the target's column types ("psycopg-copy").
    * into MariaDB/MySQL or SQLite: ``executemany`` ("executemany"); pymysql rewrites it into
      multi-row INSERT statements. MariaDB runs the copy with ``sql_mode`` STRICT_ALL_TABLES.
      ``LOAD DATA LOCAL INFILE`` is not used: with LOCAL the server treats data errors as
      warnings (as if IGNORE were given), which can truncate values without failing.

    On the first two paths the source is read on a second thread, a few blocks (about 1 MiB
    each) ahead of the ``COPY`` into the target, so both databases work at once (SQLite and
    MariaDB build two blocks at a time, on two more connections of their own); batches,
    commits and checkpoints stay on the calling thread, in order.

Checkpoints and resume
    Before the first row moves, a checkpoint records which target keys already existed (the
    *pre-existing keys*). After every committed target batch the checkpoint records the last
    key copied. A copy that finds a checkpoint resumes after its last key.

Idempotence: the rule
    A copy never overwrites data it did not write. A source row whose key is among the
    pre-existing keys is not written (``rows_skipped``), and the target's row must equal it in
    every copied column: one that differs is a conflict, and the step fails naming the key
    before any row is written (and again at the end, so a resumed copy sees a row edited in
    between). A row already in the target that is not pre-existing was written by an earlier
    attempt of this copy (a batch committed just before a crash); it is counted as copied and
    not written again. Running a finished copy again writes nothing.

Pre-existing keys in the checkpoint
    A single-column integer key is stored as inclusive runs ``[first, last]`` (a pre-filled
    range of ids costs two numbers whatever its length); any other key is stored as the list of
    its canonical key values. The target table is usually empty, and then this is empty too.

Verification
    At the end, the rows of both tables outside the pre-existing keys must agree in number and
    in a checksum of the copied columns that does not depend on how either database happens to
    store or return them. Two ways, the first where it applies:

    * rows in PostgreSQL's own form: when the target is PostgreSQL, one of the two block paths
      above applies, the key is one integer column (it sorts the same in every database) and
      no target key pre-existed, the exact bytes the block path sends for each row (binary
      tuples, or text lines written in PostgreSQL's normal form: numeric with the column's
      scale, timestamps without trailing fractional zeros, t/f, lowercase hex) are hashed with
      SHA-256 in key order as they are read; rows an earlier attempt copied, or that a resumed
      batch writes row by row, are read and hashed the same way without being sent. At the
      end the target gives its rows back sorted by key with ``COPY ... TO STDOUT``: they must
      hash the same, and the source must still hold as many rows as were hashed.
      After a batch the target refused, this way is not used.
    * canonical lines: otherwise, and whenever the first way finds a difference, each row of
      both tables becomes a canonical line (decimals without trailing zeros, timestamps in UTC,
      booleans as 0/1, JSON re-serialised with sorted keys, binary as hex) and the sums of the
      lines' MD5 prefixes must agree; a PostgreSQL or MariaDB side computes them in SQL when
      its column types allow, else rows are streamed and hashed in Python.

    On a mismatch the copy finds the first differing key and fails.

Failure
    A copy that fails, verification included, deletes the rows it inserted (every target row
    outside the pre-existing keys) and resets its checkpoint before raising. A value the target
    column cannot hold exactly fails the copy naming the column and the key of the row.

Revert (rollback)
    Once a copy has run, the target is where the application writes. The revert first carries
    the target's current version of every copied row (every row outside the pre-existing keys,
    rows added since included) back into the source: a key the source lacks is inserted, a
    row the source holds with other values is updated to the target's (the source table may
    have been dropped and re-created empty by a later downgrade); then those target rows are
    deleted. Reverting twice changes nothing. What the copy wrote is known from the journal's
    copy record (the pre-existing keys), whichever run wrote it and however it ended.

The copy assumes nothing else writes the target table's copied keys while it runs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from orchestrator.core.model import CopySpec
from orchestrator.errors import EXIT_NEEDS_ATTENTION
from orchestrator.runtime.copy_fast import (
    TextRender,
    canon_exprs,
    copy_text_render,
    digest_sql,
    text_block_sql,
    text_lines_sql,
)
from orchestrator.runtime.copy_io import (
    BinaryCopyBody,
    CopyOutReader,
    ExecManyWriter,
    PgCopyWriter,
    Prefetch,
    RawConn,
    RowWriteError,
    TableSql,
    plain_block_ok,
    raw_connection,
    stream_rows,
)
from orchestrator.runtime.copy_schema import (
    CopyError,
    CopyPlan,
    CopyPreflightError,
    build_plan,
    dialect_of,
    key_declared_unique,
    preflight_error,
    reflect_table,
)
from orchestrator.runtime.copy_values import (
    PreexistingKeys,
    RowHasher,
    ValueProblem,
    canon_function,
    decode_value,
    encode_value,
    make_writer,
)

__all__ = [
    "CheckpointStore",
    "CopyCheckpoint",
    "CopyError",
    "CopyFailedError",
    "CopyPreflightError",
    "CopyResult",
    "CopyRevertError",
    "CopyValueError",
    "CopyVerificationError",
    "PreexistingKeys",
    "ProgressCallback",
    "RevertResult",
    "checksum_table",
    "copy_table",
    "estimate_rows",
    "preflight",
    "revert_copy",
]

ProgressCallback = Callable[[int, "int | None"], None]

CHUNK_ROWS = 5_000  # rows held in memory at once on the row-by-row paths
LOOKUP_KEYS = 500  # keys per IN (...) lookup
BLOCK_BYTES = 1 << 20  # about this much COPY data per block on the fast path
PREFETCH_BLOCKS = 4  # blocks the reader thread may hold ahead of the writer
BLOCK_READERS = 2  # source connections building text blocks at once
GROUP_CONCAT_MAX = 1 << 30  # MariaDB group_concat_max_len for the blocks


class CopyFailedError(CopyError):
    """The copy step failed; the rows it had inserted were removed."""


class CopyValueError(CopyFailedError):
    """A value cannot be written to the target column exactly."""

    def __init__(self, message: str, hint: str | None = None, *, column: str | None, key: str):
        super().__init__(message, hint)
        self.column = column
        self.key = key


class CopyVerificationError(CopyFailedError):
    """Source and target disagree after the copy."""

    def __init__(self, message: str, hint: str | None = None, *, key: str | None):
        super().__init__(message, hint)
        self.key = key


class CopyConflictError(CopyFailedError):
    """A row already in the target has the key of a source row but other values."""

    def __init__(self, message: str, hint: str | None = None, *, key: str):
        super().__init__(message, hint)
        self.key = key


class CopyRevertError(CopyError):
    """A revert, or the clean-up after a failed copy, could not complete."""

    exit_code = EXIT_NEEDS_ATTENTION


# --- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "migrate-copy-checkpoint/1"


@dataclass(frozen=True)
class CopyCheckpoint:
    """Where a copy stands; the executor keeps ``to_json()`` in its journal."""

    last_key: tuple[object, ...] | None  # last key copied and committed (None: nothing yet)
    rows_copied: int
    preexisting: PreexistingKeys = field(default_factory=PreexistingKeys)
    rows_skipped: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": CHECKPOINT_FORMAT,
                "last_key": None if self.last_key is None else [encode_value(v) for v in self.last_key],
                "rows_copied": self.rows_copied,
                "rows_skipped": self.rows_skipped,
                "preexisting": self.preexisting.to_obj(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CopyCheckpoint:
        obj = json.loads(text)
        if obj.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a copy checkpoint: format {obj.get('format')!r}")
        last = obj.get("last_key")
        return cls(
            last_key=None if last is None else tuple(decode_value(v) for v in last),
            rows_copied=int(obj["rows_copied"]),
            preexisting=PreexistingKeys.from_obj(obj.get("preexisting") or {}),
            rows_skipped=int(obj.get("rows_skipped", 0)),
        )


class CheckpointStore(Protocol):
    def load(self) -> CopyCheckpoint | None: ...

    def save(self, checkpoint: CopyCheckpoint) -> None: ...  # called after each target commit


@dataclass(frozen=True)
class CopyResult:
    rows_copied: int
    rows_skipped: int
    source_rows: int
    seconds: float
    rows_per_second: float
    checksum: str
    method: str


@dataclass(frozen=True)
class RevertResult:
    rows_restored_to_source: int  # inserted: the source lacked their keys
    rows_deleted_from_target: int
    seconds: float
    rows_updated_in_source: int = 0  # the source held them with other values: the target's won


# --- small helpers -----------------------------------------------------------------------------


def _key_text(names: Sequence[str], values: Sequence[Any]) -> str:
    parts = []
    for name, value in zip(names, values, strict=True):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{name}={shown}")
    return "(" + ", ".join(parts) + ")"


def _where(spec: CopySpec, side: str) -> str:
    if side == "source":
        return f"copy '{spec.name}': source service '{spec.source}', table '{spec.table}'"
    return f"copy '{spec.name}': target service '{spec.target}', table '{spec.target_table}'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class _Throttle:
    def __init__(self, spec: CopySpec):
        self.rate = spec.max_rows_per_second
        self.pause = spec.pause_seconds
        self.start = time.monotonic()
        self.rows = 0

    def rows_done(self, n: int) -> None:
        self.rows += n
        if self.rate and self.rate > 0:
            due = self.start + self.rows / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def between_batches(self) -> None:
        if self.pause > 0:
            time.sleep(self.pause)


# --- preflight and estimate --------------------------------------------------------------------


def _check_key(plan: CopyPlan, source: Engine) -> None:
    spec = plan.spec
    key_cols = [p.source for p in plan.key_pairs]
    names = [c.name for c in key_cols]
    sql = TableSql(source, plan.source)
    with raw_connection(source) as conn:
        for col in key_cols:
            if col.nullable and col.name not in plan.source.primary_key:
                rows = conn.fetch(f"SELECT 1 FROM {sql.name} WHERE {sql.q(col.name)} IS NULL LIMIT 1")
                if rows:
                    raise preflight_error(
                        spec,
                        "source",
                        f"key column '{col.name}' holds NULL, so rows cannot be told apart",
                        "choose key columns without NULLs (or fill them in first)",
                    )
        if key_declared_unique(plan.source, names):
            return
        rows = conn.fetch(
            f"SELECT {sql.cols(names)}, count(*) FROM {sql.name} GROUP BY {sql.cols(names)} HAVING count(*) > 1 LIMIT 1"
        )
    if rows:
        raise preflight_error(
            spec,
            "source",
            f"the key ({', '.join(names)}) is not unique: {_key_text(names, rows[0][:-1])} appears {rows[0][-1]} times",
            "choose key columns whose values are unique (a primary key or a unique constraint)",
        )


def _prepare(spec: CopySpec, source: Engine, target: Engine) -> CopyPlan:
    plan = build_plan(spec, source, target)
    _check_key(plan, source)
    return plan


def preflight(spec: CopySpec, source: Engine, target: Engine) -> None:
    """Check, without writing anything, that the copy can run; raise CopyPreflightError if not.

    Both tables exist; the chosen columns exist on both sides with compatible types; the target
    has no NOT NULL column without a default left out; the key columns exist, are copied, hold
    no NULL, and are unique (declared, or proved by a GROUP BY ... HAVING count(*) > 1 query).
    """
    _prepare(spec, source, target)


def estimate_rows(spec: CopySpec, source: Engine) -> int | None:
    """Roughly how many rows the source table holds (for progress bars); None if unknown."""
    table = reflect_table(source, spec.table)
    if table is None:
        return None
    sql = TableSql(source, table)
    with raw_connection(source) as conn:
        if conn.dialect == "postgresql":
            rows = conn.fetch(
                "SELECT reltuples::bigint, relpages FROM pg_class WHERE oid = to_regclass(%s)",
                (sql.name.replace("%%", "%"),),
            )
            if rows and rows[0][0] is not None and int(rows[0][0]) >= 0 and int(rows[0][1]) > 0:
                return int(rows[0][0])
            if rows and int(rows[0][1] or 0) > 200_000:
                return None
        elif conn.dialect == "mysql":
            rows = conn.fetch(
                "SELECT TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
                (table.schema, table.name),
            )
            if rows and rows[0][0]:
                return int(rows[0][0])
        rows = conn.fetch(sql.count())
        return int(rows[0][0]) if rows else None


# --- the copy ----------------------------------------------------------------------------------


@dataclass
class _BatchCounts:
    written: int = 0
    skipped: int = 0  # pre-existing keys
    present: int = 0  # written by an earlier attempt


class _Copier:
    """One run of one copy step: the plan, two connections, converters and counters."""

    def __init__(self, plan: CopyPlan, src: RawConn, tgt: RawConn, source: Engine, target: Engine):
        self.plan = plan
        self.spec = plan.spec
        self.src = src
        self.source = source
        self.tgt = tgt
        self.ssql = TableSql(source, plan.source)
        self.tsql = TableSql(target, plan.target)
        self.scols = [p.source.name for p in plan.columns]
        self.tcols = [p.target.name for p in plan.columns]
        self.skey = [p.source.name for p in plan.key_pairs]
        self.tkey = [p.target.name for p in plan.key_pairs]
        self.key_index = plan.key_index
        self.key_canon = [canon_function(k) for k in plan.key_kinds]
        convs = [make_writer(tgt.dialect, p.target, p.kind) for p in plan.columns]
        self.convs = [(i, f) for i, f in enumerate(convs) if f is not None]
        self.chunk = max(1, min(self.spec.batch_size, CHUNK_ROWS))
        if tgt.dialect == "postgresql":
            oids = [int(p.target.pg_oid or 0) for p in plan.columns]
            self.writer: PgCopyWriter | ExecManyWriter = PgCopyWriter(tgt, self.tsql, self.tcols, oids)
        else:
            self.writer = ExecManyWriter(tgt, self.tsql, self.tcols)
        self.passthrough = src.dialect == "postgresql" and tgt.dialect == "postgresql"
        self.passthrough = self.passthrough and all(
            _binary_compatible(p.source.pg_type, p.target.pg_type) for p in plan.columns
        )
        self.render: TextRender | None = None
        if tgt.dialect == "postgresql" and src.dialect in ("mysql", "sqlite") and _utf8_session(tgt):
            self.render = copy_text_render(self.ssql, plan.columns)
            if self.render is not None and src.dialect == "sqlite":
                rows = src.fetch("PRAGMA encoding")
                if not rows or str(rows[0][0]).upper() != "UTF-8":
                    self.render = None  # the lines would not come out as UTF-8 bytes
            if self.render is not None and src.dialect == "mysql":
                src.execute(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}")
        self.utc_session = any(p.target.timezone for p in plan.columns)
        # The rows can be compared at the end in the form the target writes them back (binary
        # COPY tuples, or COPY text lines in PostgreSQL's normal form), hashed in key order
        # while they are copied; a single integer key sorts the same in every database.
        integer_key = len(plan.key_pairs) == 1 and plan.key_kinds[0] == "integer"
        self.digest: _StreamDigest | None = None
        if integer_key and self.passthrough:
            self.digest = _StreamDigest(binary=True)
        elif integer_key and self.render is not None and self.render.exact:
            self.digest = _StreamDigest(binary=False)
        self.block_rows = max(1, min(self.spec.batch_size, 2_000))
        self.helpers: _Helpers | None = None

    def canon_key(self, row: Sequence[Any]) -> tuple[str | None, ...]:
        return tuple(None if row[i] is None else f(row[i]) for i, f in zip(self.key_index, self.key_canon, strict=True))

    def next_bound(self, lo: Sequence[Any] | None, n: int) -> tuple[Any, ...] | None:
        sql, params = self.ssql.bound_after(self.skey, lo, n)
        rows = self.src.fetch(sql, params)
        if not rows:
            sql, params = self.ssql.last_after(self.skey, lo)
            rows = self.src.fetch(sql, params)
        self.src.commit()
        return tuple(rows[0]) if rows else None

    def present_in_target(
        self, lo: Sequence[Any] | None, hi: Sequence[Any], pre: PreexistingKeys
    ) -> set[tuple[str | None, ...]]:
        """Keys of (lo, hi] already in the target that are not pre-existing (an earlier attempt
        committed them but did not live to save its checkpoint)."""
        sql, params = self.ssql.select_range(self.skey, self.skey, lo, hi)
        found: set[tuple[str | None, ...]] = set()
        key_convs = [make_writer(self.tgt.dialect, p.target, p.kind) for p in self.plan.key_pairs]
        for rows in stream_rows(self.src, sql, params, LOOKUP_KEYS):
            keys = [
                tuple(v if f is None or v is None else f(v) for f, v in zip(key_convs, r, strict=True)) for r in rows
            ]
            qsql, qparams = self.tsql.select_by_keys(self.tkey, self.tkey, keys)
            for trow in self.tgt.fetch(qsql, qparams):
                ck = tuple(None if v is None else f(v) for f, v in zip(self.key_canon, trow, strict=True))
                if not pre.contains(ck):
                    found.add(ck)
        self.tgt.rollback()
        return found

    def batch_rows(
        self,
        lo: Sequence[Any] | None,
        hi: Sequence[Any],
        pre: PreexistingKeys,
        present: set[tuple[str | None, ...]],
        counts: _BatchCounts,
        throttle: _Throttle | None,
    ) -> Generator[list[Any], None, None]:
        """The converted rows of (lo, hi] that must be written, chunk by chunk."""
        sql, params = self.ssql.select_range(self.scols, self.skey, lo, hi)
        convs = self.convs
        check = bool(pre) or bool(present)
        for rows in stream_rows(self.src, sql, params, self.chunk):
            out: list[Any] = []
            for row in rows:
                if check:
                    ck = self.canon_key(row)
                    if pre.contains(ck):
                        counts.skipped += 1
                        continue
                    if ck in present:
                        counts.present += 1
                        continue
                if convs:
                    vals = list(row)
                    i = -1
                    try:
                        for i, f in convs:
                            v = vals[i]
                            if v is not None:
                                vals[i] = f(v)
                    except ValueProblem as problem:
                        raise self.value_error(row, i, str(problem)) from None
                    out.append(vals)
                else:
                    out.append(row)
            if out:
                yield out
            if throttle is not None:
                throttle.rows_done(len(rows))

    def value_error(self, row: Sequence[Any], index: int, problem: str) -> CopyValueError:
        column = self.plan.columns[index].target.name
        key = _key_text(self.skey, [row[i] for i in self.key_index])
        return CopyValueError(
            f"{_where(self.spec, 'target')}: the value of column '{column}' in the row with key "
            f"{key} cannot be stored: {problem}; nothing was truncated, the copy stopped",
            "change the target column's type (or fix the source value), then run again",
            column=column,
            key=key,
        )

    def write_error(
        self,
        exc: RowWriteError,
        lo: Sequence[Any] | None,
        hi: Sequence[Any],
        pre: PreexistingKeys,
        present: set[tuple[str | None, ...]],
    ) -> CopyValueError:
        """Name the row (and column, when the database says) a failed batch stumbled on."""
        key = "(unknown)"
        if exc.row_index is not None:
            n = 0
            chunks = self.batch_rows(lo, hi, pre, present, _BatchCounts(), None)
            try:
                for rows in chunks:
                    if n + len(rows) > exc.row_index:
                        row = rows[exc.row_index - n]
                        key = _key_text(self.skey, [row[i] for i in self.key_index])
                        break
                    n += len(rows)
            finally:
                chunks.close()
            self.src.rollback()
        else:
            key = f"in the batch after {_key_text(self.skey, lo) if lo else 'the start'}"
        column = exc.column
        if column is not None:
            match = [p.target.name for p in self.plan.columns if p.target.name.lower() == column.lower()]
            column = match[0] if match else column
        col_text = f", column '{column}'" if column else ""
        return CopyValueError(
            f"{_where(self.spec, 'target')}: the row with key {key}{col_text} could not be "
            f"written: {_first_line(exc.cause)}",
            "fix the value or the target column (type, length, constraint, trigger), then run again",
            column=column,
            key=key,
        )

    # --- the fast path: blocks of bytes, read on one thread and written on another ---------

    def fast_kind(self) -> str | None:
        if self.passthrough:
            return "pg-binary-copy"
        if self.render is not None:
            return "psycopg-copy-text"
        return None

    def bound_within(self, lo: Sequence[Any] | None, hi: Sequence[Any], n: int) -> tuple[Any, ...] | None:
        """The key of the n-th row after ``lo`` if it is at most ``hi``."""
        where, params = self.ssql.where(self.ssql.range_parts(self.skey, lo, hi))
        sql = (
            f"SELECT {self.ssql.cols(self.skey)} FROM {self.ssql.name}{where} "
            f"ORDER BY {self.ssql.order(self.skey)} LIMIT 1 OFFSET {int(n) - 1}"
        )
        rows = self.src.fetch(sql, params)
        return tuple(rows[0]) if rows else None

    def text_block(self, conn: RawConn, lo: Sequence[Any] | None, hi: Sequence[Any]) -> tuple[bytes, int]:
        """The rows of (lo, hi] as COPY text lines joined by newlines (no final newline)."""
        render = self.render
        assert render is not None
        where, params = self.ssql.where(self.ssql.range_parts(self.skey, lo, hi))
        rows = conn.fetch(text_block_sql(self.ssql, render, where, self.skey, escaped=False), params)
        data, n, marks = rows[0] if rows else (None, 0, 0)
        if not n:
            return b"", 0
        # (MariaDB cuts a GROUP_CONCAT longer than group_concat_max_len: a block that long is
        # not trusted, and is read row by row)
        if (
            data is not None
            and len(data) < GROUP_CONCAT_MAX - 4
            and plain_block_ok(bytes(data), int(n), render.columns, int(marks or 0))
        ):
            return bytes(data), int(n)
        # some value holds a special byte (or the block did not fit): escape every value
        rows = conn.fetch(text_block_sql(self.ssql, render, where, self.skey, escaped=True), params)
        data, n2, _ = rows[0] if rows else (None, 0, 0)
        if data is not None and n2 == n and len(data) < GROUP_CONCAT_MAX - 4 and bytes(data).count(b"\n") == n - 1:
            return bytes(data), int(n)
        # too big for one value: the lines one by one
        lines: list[bytes] = []
        for part in stream_rows(conn, text_lines_sql(self.ssql, render, where, self.skey), params, self.chunk):
            lines.extend(bytes(r[0]) for r in part)
        return b"\n".join(lines), len(lines)

    def text_blocks(self, lo: Sequence[Any] | None, hi: Sequence[Any]) -> Iterator[tuple[bytes, int]]:
        """The rows of (lo, hi] in blocks of about BLOCK_BYTES of COPY text, in key order;
        with helpers, several blocks are built at once, each on a connection of its own."""
        helpers = self.helpers
        pending: deque[Any] = deque()
        while True:
            upto = self.bound_within(lo, hi, self.block_rows)
            end = upto if upto is not None else hi
            if helpers is None:
                pending.append(_Done(self.text_block(self.src, lo, end)))
            else:
                pending.append(helpers.submit(self.text_block, lo, end))
            while pending and (upto is None or len(pending) > (helpers.width if helpers else 0) or pending[0].done()):
                block, n = pending.popleft().result()
                if n:
                    self.block_rows = max(16, min(50_000, BLOCK_BYTES * n // max(1, len(block))))
                    yield block, n
            if upto is None:
                return
            lo = upto

    def source_blocks(
        self, lo: Sequence[Any] | None, hi: Sequence[Any], digest: _StreamDigest | None
    ) -> Iterator[tuple[bytes, int]]:
        """What the fast path sends for (lo, hi]: (data, rows) blocks, hashed into ``digest``."""
        if self.passthrough:
            sql, params = self.ssql.select_range(self.scols, self.skey, lo, hi)
            reader = CopyOutReader(self.src, f"COPY ({sql}) TO STDOUT (FORMAT BINARY)", params)
            body = digest.body if digest is not None else None
            for data, messages in reader:
                if body is not None:
                    body.feed(data)
                yield data, messages
            if body is not None and digest is not None:
                body.finish()
                digest.rows += reader.rows
        else:
            for block, n in self.text_blocks(lo, hi):
                data = block + b"\n"
                if digest is not None:
                    digest.add(data, n)
                yield data, n
        self.src.commit()  # end the read transaction: nothing holds a snapshot between batches

    def hash_source(self, lo: Sequence[Any] | None, hi: Sequence[Any], digest: _StreamDigest) -> None:
        """Hash the source rows of (lo, hi] without copying them (rows an earlier attempt copied)."""
        for _ in self.source_blocks(lo, hi, digest):
            pass

    def produce(
        self, lo: Sequence[Any] | None, batch_size: int, throttle: _Throttle, digest: _StreamDigest | None
    ) -> Iterator[Any]:
        """The fast path's reader: for each batch, (lo, hi), then its data blocks, then None."""
        while True:
            hi = self.next_bound(lo, batch_size)
            if hi is None:
                return
            yield (lo, hi)
            for data, n in self.source_blocks(lo, hi, digest):
                yield data
                throttle.rows_done(n)
            yield None
            lo = hi

    def stream(
        self,
        run: _Run,
        store: CheckpointStore,
        on_progress: ProgressCallback | None,
        total: int | None,
        throttle: _Throttle,
    ) -> bool:
        """Copy the remaining batches on the fast path, reading ahead on a thread. False when
        the target refused a batch (``run.lo`` is then where it starts), True when done."""
        digest = self.digest if self.digest is not None and self.digest.valid else None
        threads = self.reader_thread_ok()
        with _Helpers.for_copier(self, threads) as helpers:
            self.helpers = helpers
            try:
                return self._stream(run, store, on_progress, total, throttle, digest, threads)
            finally:
                self.helpers = None

    def _stream(
        self,
        run: _Run,
        store: CheckpointStore,
        on_progress: ProgressCallback | None,
        total: int | None,
        throttle: _Throttle,
        digest: _StreamDigest | None,
        threads: bool,
    ) -> bool:
        import psycopg

        producer = self.produce(run.lo, max(1, int(self.spec.batch_size)), throttle, digest)
        reader: Iterator[Any] = Prefetch(producer, depth=PREFETCH_BLOCKS) if threads else producer
        items = _Watched(reader)  # an error of the source is not the target's
        statement = self.tsql.copy_in(self.tcols, self.passthrough)
        try:
            for bounds in items:
                hi = bounds[1]
                cur = self.tgt.dbapi.cursor()
                try:
                    if self.utc_session:  # a naive timestamp written to timestamptz is taken as UTC
                        cur.execute("SELECT set_config('TimeZone', 'UTC', true)")
                    with cur.copy(statement) as cp:
                        for data in items:
                            if data is None:
                                break
                            cp.write(data)
                    written = max(0, int(cur.rowcount))
                except psycopg.Error:
                    self.tgt.rollback()
                    if items.failed:
                        raise
                    # a value the fast path would not vouch for, or one the target refuses: the
                    # batch is redone in Python, which converts it exactly or names the row
                    run.refused = True
                    return False
                finally:
                    cur.close()
                self.tgt.commit()
                run.batch_done(hi, written, 0, store, on_progress, total)
                throttle.between_batches()
            return True
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
            if run.refused:
                # the reader may have met an error of its own, which leaves a PostgreSQL source
                # transaction aborted: the Python path starts clean and meets the first error
                # itself, not "current transaction is aborted"
                self.src.rollback()
            if run.refused and self.digest is not None:
                self.digest.valid = False  # the refused batch's lines were hashed already

    def reader_thread_ok(self) -> bool:
        """Whether the source connection may be used from another thread (a SQLite
        connection made with check_same_thread cannot)."""
        if self.src.dialect != "sqlite":
            return True
        ok: list[bool] = []

        def probe() -> None:
            try:
                self.src.fetch("SELECT 1")
                ok.append(True)
            except Exception:
                ok.append(False)

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return bool(ok and ok[0])

    # --- all batches ------------------------------------------------------------------------

    def run_batches(
        self,
        checkpoint: CopyCheckpoint,
        store: CheckpointStore,
        uncertain: bool,
        on_progress: ProgressCallback | None,
        total: int | None,
    ) -> tuple[CopyCheckpoint, str]:
        spec = self.spec
        pre = checkpoint.preexisting
        run = _Run(checkpoint)
        throttle = _Throttle(spec)
        method = self.writer.method
        fast = self.fast_kind()
        used_fast = False
        batch_size = max(1, int(spec.batch_size))
        if pre and self.digest is not None:
            self.digest = None  # rows outside the pre-existing keys only: compared the slow way
        if self.digest is not None and run.lo is not None:
            self.hash_source(None, run.lo, self.digest)  # what an earlier attempt copied
        while True:
            if fast is not None and not pre and not uncertain and not run.refused:
                if self.stream(run, store, on_progress, total, throttle):
                    used_fast = True
                    break
                used_fast = True
            lo = run.lo
            hi = self.next_bound(lo, batch_size)
            if hi is None:
                break
            present: set[tuple[str | None, ...]] = set()
            if uncertain:
                present = self.present_in_target(lo, hi, pre)
                uncertain = bool(present)
            if self.digest is not None and self.digest.valid:  # written row by row, compared as sent
                self.hash_source(lo, hi, self.digest)
            run.refused = False
            counts = _BatchCounts()
            try:
                chunks = self.batch_rows(lo, hi, pre, present, counts, throttle)
                try:
                    counts.written = self.writer.write_batch(chunks)
                finally:
                    chunks.close()
                self.tgt.commit()
            except RowWriteError as exc:
                self.tgt.rollback()
                self.src.rollback()
                raise self.write_error(exc, lo, hi, pre, present) from exc.cause
            run.batch_done(hi, counts.written + counts.present, counts.skipped, store, on_progress, total)
            throttle.between_batches()
        if used_fast and fast is not None:
            method = fast
        return run.checkpoint, method


class _Done:
    """A result already there, shaped like a future."""

    def __init__(self, value: Any):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


class _Helpers:
    """Extra source connections building text blocks at the same time (each block on one
    connection), so that the source database uses more than one core."""

    def __init__(self, conns: list[RawConn]):
        import queue

        self.width = len(conns)
        self.free: queue.SimpleQueue[RawConn] = queue.SimpleQueue()
        for conn in conns:
            self.free.put(conn)
        self.pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="migrate-copy-block")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            conn = self.free.get()
            try:
                result = fn(conn, *args)
                conn.commit()
                return result
            except BaseException:
                with suppress(Exception):
                    conn.rollback()
                raise
            finally:
                self.free.put(conn)

        return self.pool.submit(run)

    @staticmethod
    @contextmanager
    def for_copier(copier: _Copier, threads: bool) -> Iterator[_Helpers | None]:
        if copier.render is None or BLOCK_READERS < 2 or not threads or not _shareable(copier.source, copier.src):
            yield None
            return
        with ExitStack() as stack:
            conns = [stack.enter_context(raw_connection(copier.source)) for _ in range(BLOCK_READERS)]
            for conn in conns:
                if conn.dialect == "mysql":
                    conn.execute(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}")
            helpers = _Helpers(conns)
            try:
                yield helpers
            finally:
                helpers.pool.shutdown(wait=True, cancel_futures=True)


def _shareable(engine: Engine, conn: RawConn) -> bool:
    """Whether another connection of ``engine`` sees the same database (a SQLite file, or a
    server), not a private in-memory one."""
    if conn.dialect != "sqlite":
        return True
    database = engine.url.database or ""
    return bool(database) and database != ":memory:" and "mode=memory" not in str(engine.url)


class _Watched:
    """An iterator that remembers whether it raised."""

    def __init__(self, items: Iterator[Any]):
        self.items = items
        self.failed = False

    def __iter__(self) -> _Watched:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.items)
        except StopIteration:
            raise
        except BaseException:
            self.failed = True
            raise


class _Run:
    """Where one run of the batches stands."""

    def __init__(self, checkpoint: CopyCheckpoint):
        self.checkpoint = checkpoint
        self.lo = checkpoint.last_key
        self.copied = checkpoint.rows_copied
        self.skipped = checkpoint.rows_skipped
        self.refused = False  # the fast path refused the batch starting at ``lo``

    def batch_done(
        self,
        hi: tuple[Any, ...],
        copied: int,
        skipped: int,
        store: CheckpointStore,
        on_progress: ProgressCallback | None,
        total: int | None,
    ) -> None:
        self.copied += copied
        self.skipped += skipped
        self.checkpoint = CopyCheckpoint(hi, self.copied, self.checkpoint.preexisting, self.skipped)
        store.save(self.checkpoint)
        self.lo = hi
        if on_progress is not None:
            on_progress(self.copied + self.skipped, total)


class _StreamDigest:
    """SHA-256 of the source rows in key order, in the exact form the target's ``COPY ... TO
    STDOUT`` gives them back: text lines, or binary tuples without header and trailer."""

    def __init__(self, binary: bool):
        self.binary = binary
        self.hash = hashlib.sha256()
        self.rows = 0
        self.valid = True
        self.body = BinaryCopyBody(self.hash.update) if binary else None

    def add(self, data: bytes, rows: int) -> None:
        self.hash.update(data)
        self.rows += rows

    @property
    def ok(self) -> bool:
        return self.valid and (self.body is None or self.body.valid)


def _utf8_session(conn: RawConn) -> bool:
    """Whether a PostgreSQL session reads and writes text as UTF-8 (COPY text is sent as
    bytes)."""
    value = conn.dbapi.pgconn.parameter_status(b"client_encoding")
    return value is not None and bytes(value).upper().replace(b"-", b"") == b"UTF8"


def _binary_compatible(source: str | None, target: str | None) -> bool:
    """Whether PostgreSQL's binary COPY format of ``source`` can be read as ``target`` without
    any change of value (same type and modifier, or the target drops the modifier)."""
    if source is None or target is None:
        return False
    if source == target:
        return True
    base_s, base_t = source.split("(")[0].strip(), target.split("(")[0].strip()
    if "(" not in target and base_s == base_t and base_t in ("numeric", "character varying"):
        return True
    return base_s in ("character varying", "text") and target == "text"


def _scan_preexisting(copier: _Copier) -> PreexistingKeys:
    """Every key the target holds before the first batch, in canonical form."""
    plan = copier.plan
    tsql = copier.tsql
    sql = f"SELECT {tsql.cols(copier.tkey)} FROM {tsql.name} ORDER BY {tsql.order(copier.tkey)}"

    def keys() -> Iterator[tuple[str | None, ...]]:
        for rows in stream_rows(copier.tgt, sql, (), CHUNK_ROWS):
            for row in rows:
                yield tuple(None if v is None else f(v) for f, v in zip(copier.key_canon, row, strict=True))

    integer = len(plan.key_pairs) == 1 and plan.key_kinds[0] in ("integer", "boolean")
    return PreexistingKeys.build(keys(), integer)


def _pages(
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


def _check_preexisting(copier: _Copier, pre: PreexistingKeys) -> None:
    """Every target row that was there before the copy and whose key the source holds must
    equal the source's row: the copy never overwrites it, so a difference is a conflict that
    fails the step (before anything downstream drops the source's version)."""
    if not pre:
        return
    plan = copier.plan
    hasher = RowHasher([p.kind for p in plan.columns])
    to_source = [make_writer(copier.src.dialect, p.source, p.kind) for p in plan.key_pairs]
    for trows in _pages(copier.tgt, copier.tsql, copier.tcols, copier.tkey, plan.key_index, LOOKUP_KEYS):
        theirs: dict[tuple[str | None, ...], tuple[Any, ...]] = {}
        keys = []  # the pre-existing rows' keys, as the source holds them
        for trow in trows:
            canon = hasher.canon(trow)
            ck = tuple(canon[i] for i in plan.key_index)
            if pre.contains(ck):
                theirs[ck] = canon
                keys.append(
                    tuple(
                        trow[i] if f is None or trow[i] is None else f(trow[i])
                        for i, f in zip(plan.key_index, to_source, strict=True)
                    )
                )
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


def _conflict(copier: _Copier, srow: Sequence[Any], mine: Sequence[Any], theirs: Sequence[Any]) -> CopyConflictError:
    key = _key_text(copier.skey, [srow[i] for i in copier.plan.key_index])
    column = next(p.target.name for p, a, b in zip(copier.plan.columns, mine, theirs, strict=True) if a != b)
    index = copier.tcols.index(column)
    return CopyConflictError(
        f"{_where(copier.spec, 'target')}: the row with key {key} was already there before the copy and "
        f"differs from the source's: column '{column}' is {_short(mine[index])} in the source and "
        f"{_short(theirs[index])} in the target. A copy never overwrites a row it did not write, and moving "
        "on would lose one of the two versions",
        "make the two rows agree (or delete the target's row if the source's is right), then run again",
        key=key,
    )


def copy_table(
    spec: CopySpec,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    on_progress: ProgressCallback | None = None,
) -> CopyResult:
    """Copy the rows of ``spec.table`` from ``source`` into ``spec.target_table`` on ``target``.

    Resumes from ``store``'s checkpoint, saves one after every committed batch, verifies
    count and checksum at the end. On failure the rows it inserted are deleted and the
    checkpoint is reset before the error is raised.
    """
    started = time.monotonic()
    plan = _prepare(spec, source, target)
    total = estimate_rows(spec, source)
    checkpoint = store.load()
    try:
        with raw_connection(source) as src, raw_connection(target) as tgt:
            copier = _Copier(plan, src, tgt, source, target)
            if checkpoint is None:
                pre = _scan_preexisting(copier)
                _check_preexisting(copier, pre)  # before a row is written
                checkpoint = CopyCheckpoint(None, 0, pre, 0)
                store.save(checkpoint)
                uncertain = False
            else:
                uncertain = True
            checkpoint, method = copier.run_batches(checkpoint, store, uncertain, on_progress, total)
            outcome = _verify(copier, checkpoint.preexisting)
            _check_preexisting(copier, checkpoint.preexisting)
    except CopyPreflightError:
        raise
    except Exception as exc:
        if checkpoint is None:  # nothing was written
            if isinstance(exc, CopyError):
                raise
            raise _wrap(spec, exc) from exc
        failure = exc if isinstance(exc, CopyError) else _wrap(spec, exc)
        _cleanup_after_failure(plan, source, target, store, checkpoint.preexisting, failure)
        if failure is exc:
            raise
        raise failure from exc
    seconds = time.monotonic() - started
    copied = outcome.target_count
    return CopyResult(
        rows_copied=copied,
        rows_skipped=outcome.skipped,
        source_rows=outcome.source_count + outcome.skipped,
        seconds=seconds,
        rows_per_second=(copied / seconds) if seconds > 0 else 0.0,
        checksum=outcome.checksum,
        method=method,
    )


def _wrap(spec: CopySpec, exc: BaseException) -> CopyFailedError:
    return CopyFailedError(
        f"copy '{spec.name}' from service '{spec.source}' to '{spec.target}', table "
        f"'{spec.table}', failed: {_first_line(exc)}",
        "fix the cause and run again; the rows this copy had inserted were removed",
    )


def _cleanup_after_failure(
    plan: CopyPlan,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    pre: PreexistingKeys,
    failure: CopyError,
) -> None:
    try:
        _delete_copied(plan, target, pre, None)
        store.save(CopyCheckpoint(None, 0, pre, 0))
    except Exception as cleanup_exc:
        raise CopyRevertError(
            f"{failure.message}; then removing the rows it had inserted failed too: "
            f"{_first_line(cleanup_exc)}. The target table "
            f"'{plan.spec.target_table}' of service '{plan.spec.target}' may still hold "
            "copied rows; the checkpoint still describes them",
            "run the revert of this copy (migrate rollback) once the target database is reachable",
        ) from cleanup_exc


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
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


def _verify_stream(copier: _Copier, digest: _StreamDigest) -> _Outcome | None:
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


def _target_stream(conn: RawConn, digest: _StreamDigest, select: str) -> _Outcome | None:
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
    target = hashlib.sha256()
    reader = CopyOutReader(conn, f"COPY ({select}) TO STDOUT" + (" (FORMAT BINARY)" if digest.binary else ""))
    valid = True
    if digest.binary:
        body = BinaryCopyBody(target.update)
        for data, _ in reader:
            body.feed(data)
        body.finish()
        valid = body.valid
    else:
        for data, _ in reader:
            target.update(data)
    conn.rollback()
    if not valid or reader.rows != digest.rows or target.digest() != digest.hash.digest():
        return None
    kind = "binary" if digest.binary else "text"
    return _Outcome(digest.rows, reader.rows, 0, f"sha256-{kind}:{reader.rows}:{target.hexdigest()}")


def _verify(copier: _Copier, pre: PreexistingKeys) -> _Outcome:
    plan = copier.plan
    digest = copier.digest
    if digest is not None and digest.ok and not pre:
        outcome = _verify_stream(copier, digest)
        if outcome is not None:
            return outcome
    # the two sides run at once: a digest computed in a database waits on its server, not on us
    # (SQLite connections stay on this thread)
    with ThreadPoolExecutor(max_workers=1) as pool:
        if copier.tgt.dialect != "sqlite":
            later = pool.submit(_side_digest, copier.tgt, copier.tsql, plan, 1, pre)
            s_count, s_sum, skipped, s_db = _side_digest(copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = later.result()
        elif copier.src.dialect != "sqlite":
            first = pool.submit(_side_digest, copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = _side_digest(copier.tgt, copier.tsql, plan, 1, pre)
            s_count, s_sum, skipped, s_db = first.result()
        else:
            s_count, s_sum, skipped, s_db = _side_digest(copier.src, copier.ssql, plan, 0, pre)
            t_count, t_sum, _, t_db = _side_digest(copier.tgt, copier.tsql, plan, 1, pre)
    if s_count != t_count or s_sum != t_sum:
        detail, key = _first_difference(copier, pre, (s_db, t_db))
        raise CopyVerificationError(
            f"{_where(copier.spec, 'target')}: verification failed: the source has {s_count} "
            f"rows to copy and the target {t_count}"
            + (", with different checksums" if s_count == t_count else "")
            + f"; {detail}",
            "something changed the rows on the way (a trigger, a default, a rule, or another "
            "writer); fix it and run the copy again. The copied rows were removed",
            key=key,
        )
    return _Outcome(s_count, t_count, skipped, f"md5-sum:{s_count}:{s_sum:x}")


# (row as read, its canonical form, its key's canonical form)
_CanonRow = tuple[tuple[Any, ...], tuple[str | None, ...], tuple[Any, ...]]


class _CanonRows:
    """Rows of one side read for narrowing a difference down, each with its key in Python's
    canonical form (to match the two sides) and every column in the canonical form the
    checksum of that side used: computed by the database when its checksum was, so that a
    difference the checksums saw is a difference here too."""

    def __init__(self, copier: _Copier, side: int, in_db: bool):
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


def _db_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _first_difference(copier: _Copier, pre: PreexistingKeys, in_db: tuple[bool, bool]) -> tuple[str, str | None]:
    """Walk the source in key order, look its rows up in the target; name the first key that
    is missing or differs (and its first differing column, NULLs included), then look for
    target rows the source lacks. ``in_db``: whether each side's checksum was computed by its
    database, whose canonical forms are then the ones compared."""
    plan = copier.plan
    source, target = _CanonRows(copier, 0, in_db[0]), _CanonRows(copier, 1, in_db[1])
    key_convs = [make_writer(copier.tgt.dialect, p.target, p.kind) for p in plan.key_pairs]
    lo: tuple[Any, ...] | None = None
    while True:
        rows = source.after(lo)
        if not rows:
            break
        lo = tuple(rows[-1][0][i] for i in plan.key_index)
        wanted = [r for r in rows if not pre.contains(r[2])]
        if not wanted:
            continue
        keys = [
            tuple(
                row[i] if f is None or row[i] is None else f(row[i])
                for i, f in zip(plan.key_index, key_convs, strict=True)
            )
            for row, _, _ in wanted
        ]
        found = {ck: canon for _, canon, ck in target.by_keys(keys)}
        for row, canon, ck in wanted:
            key = _key_text(copier.skey, [row[i] for i in plan.key_index])
            other = found.get(ck)
            if other is None:
                return f"the row with key {key} is missing from the target", key
            for pair, a, b in zip(plan.columns, canon, other, strict=True):
                if a != b:
                    return (
                        f"the first differing row has key {key}: column "
                        f"'{pair.target.name}' is {_short(a)} in the source and {_short(b)} "
                        "in the target",
                        key,
                    )
    # every source row is in the target: look for a target row the source lacks
    return _row_only_in_target(copier, pre)


def _row_only_in_target(copier: _Copier, pre: PreexistingKeys) -> tuple[str, str | None]:
    plan = copier.plan
    lo: tuple[Any, ...] | None = None
    back_convs = [make_writer(copier.src.dialect, p.source, p.kind) for p in plan.key_pairs]
    while True:
        sql, params = copier.tsql.keys_after(copier.tkey, lo, LOOKUP_KEYS)
        trows = copier.tgt.fetch(sql, params)
        copier.tgt.rollback()
        if not trows:
            break
        lo = tuple(trows[-1])
        cands = []
        for trow in trows:
            ck = tuple(None if v is None else f(v) for f, v in zip(copier.key_canon, trow, strict=True))
            if not pre.contains(ck):
                cands.append((trow, ck))
        if not cands:
            continue
        keys = [
            tuple(v if f is None or v is None else f(v) for f, v in zip(back_convs, t, strict=True)) for t, _ in cands
        ]
        ssql, sparams = copier.ssql.select_by_keys(copier.skey, copier.skey, keys)
        have = {
            tuple(None if v is None else f(v) for f, v in zip(copier.key_canon, r, strict=True))
            for r in copier.src.fetch(ssql, sparams)
        }
        copier.src.commit()
        for trow, ck in cands:
            if ck not in have:
                key = _key_text(copier.tkey, trow)
                return f"the target holds a row with key {key} that the source lacks", key
    return "the difference could not be narrowed down to one row", None


def _short(value: str | None) -> str:
    if value is None:
        return "NULL"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- deleting copied rows, revert ---------------------------------------------------------------


def _delete_copied(plan: CopyPlan, target: Engine, pre: PreexistingKeys, on_progress: ProgressCallback | None) -> int:
    """Delete every target row outside the pre-existing keys, in committed slices."""
    tsql = TableSql(target, plan.target)
    key = [p.target.name for p in plan.key_pairs]
    canon = [canon_function(k) for k in plan.key_kinds]
    deleted = 0
    lo: tuple[Any, ...] | None = None
    with raw_connection(target) as tgt:
        while True:
            if not pre:
                sql, params = tsql.bound_after(key, None, 10_000)
                rows = tgt.fetch(sql, params)
                if not rows:
                    sql, params = tsql.last_after(key, None)
                    rows = tgt.fetch(sql, params)
                if not rows:
                    break
                sql, params = tsql.delete_range(key, None, rows[0])
                deleted += max(0, tgt.execute(sql, params))
                tgt.commit()
            else:
                sql, params = tsql.keys_after(key, lo, 1_000)
                rows = tgt.fetch(sql, params)
                if not rows:
                    break
                lo = tuple(rows[-1])
                doomed = [
                    r
                    for r in rows
                    if not pre.contains(tuple(None if v is None else f(v) for f, v in zip(canon, r, strict=True)))
                ]
                if doomed:
                    sql, params = tsql.delete_by_keys(key, doomed)
                    deleted += max(0, tgt.execute(sql, params))
                tgt.commit()
            if on_progress is not None:
                on_progress(deleted, None)
    return deleted


@dataclass
class _CarryBack:
    """One slice of the target's copied rows, split by what the source holds for their keys."""

    rows: int = 0  # copied target rows looked at
    missing: list[Any] = field(default_factory=list)  # the source lacks the key: insert
    changed: list[Any] = field(default_factory=list)  # the source's row differs: update


def _carry_back_slices(copier: _Copier, pre: PreexistingKeys) -> Iterator[_CarryBack]:
    """Walk the target's copied rows (every row outside the pre-existing keys) in key order and
    compare each with the source's row of the same key. ``copier`` reads the target
    (``ssql``) and writes the source (``tsql``): it runs on the reversed plan."""
    back = copier.plan
    hasher = RowHasher([p.kind for p in back.columns])
    key_convs = [make_writer(copier.tgt.dialect, p.target, p.kind) for p in back.key_pairs]
    step = max(1, min(back.spec.batch_size, CHUNK_ROWS))
    for rows in _pages(copier.src, copier.ssql, copier.scols, copier.skey, back.key_index, step):
        found = _CarryBack()
        cands = [r for r in rows if not pre.contains(copier.canon_key(r))]
        found.rows = len(cands)
        for start in range(0, len(cands), LOOKUP_KEYS):
            part = cands[start : start + LOOKUP_KEYS]
            keys = [
                tuple(
                    r[i] if f is None or r[i] is None else f(r[i])
                    for i, f in zip(back.key_index, key_convs, strict=True)
                )
                for r in part
            ]
            qsql, qparams = copier.tsql.select_by_keys(copier.tcols, copier.tkey, keys)
            have = {}
            for r in copier.tgt.fetch(qsql, qparams):
                canon = hasher.canon(r)
                have[tuple(canon[i] for i in back.key_index)] = canon
            for r in part:
                canon = hasher.canon(r)
                current = have.get(tuple(canon[i] for i in back.key_index))
                if current is None:
                    found.missing.append(r)
                elif current != canon:
                    found.changed.append(r)
        copier.tgt.rollback()
        yield found


def _converted(copier: _Copier, rows: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for row in rows:
        vals = list(row)
        i = -1
        try:
            for i, f in copier.convs:
                if vals[i] is not None:
                    vals[i] = f(vals[i])
        except ValueProblem as problem:
            raise copier.value_error(row, i, str(problem)) from None
        out.append(vals)
    return out


def _update_rows(copier: _Copier, rows: list[list[Any]]) -> None:
    """Set the copied columns of the source's rows to the target's values, by key."""
    key_index = copier.plan.key_index
    other = [i for i in range(len(copier.tcols)) if i not in key_index]
    if not other:
        return  # every copied column is part of the key: a row found cannot differ
    tsql = copier.tsql
    sets = ", ".join(f"{tsql.q(copier.tcols[i])} = {tsql.mark}" for i in other)
    cond = " AND ".join(f"{tsql.q(k)} = {tsql.mark}" for k in copier.tkey)
    sql = f"UPDATE {tsql.name} SET {sets} WHERE {cond}"
    cur = copier.tgt.cursor()
    try:
        cur.executemany(sql, [tuple(r[i] for i in other) + tuple(r[i] for i in key_index) for r in rows])
    finally:
        cur.close()


def _restore_to_source(
    plan: CopyPlan,
    source: Engine,
    target: Engine,
    pre: PreexistingKeys,
    on_progress: ProgressCallback | None,
) -> tuple[int, int]:
    """Carry the target's current version of every copied row back into the source: rows the
    source lacks are inserted, rows it holds with other values in the copied columns are
    updated (the target is where the application wrote since the copy). Returns (inserted,
    updated)."""
    back = plan.reversed()  # reads the target, writes the source
    inserted = updated = 0
    with raw_connection(target) as tgt, raw_connection(source) as src:
        copier = _Copier(back, tgt, src, target, source)
        for found in _carry_back_slices(copier, pre):
            if not (found.missing or found.changed):
                continue
            try:
                if found.missing:
                    copier.writer.write_batch([_converted(copier, found.missing)])
                if found.changed:
                    _update_rows(copier, _converted(copier, found.changed))
            except RowWriteError as exc:
                src.rollback()
                raise CopyRevertError(
                    f"{_where(plan.spec, 'source')}: restoring copied rows failed: {_first_line(exc.cause)}",
                    "make the source table able to hold the rows again, then revert again",
                ) from exc.cause
            src.commit()
            inserted += len(found.missing)
            updated += len(found.changed)
            if on_progress is not None:
                on_progress(inserted + updated, None)
    return inserted, updated


@dataclass(frozen=True)
class RevertPreview:
    """What a revert would do to rows, read without writing anything."""

    copied_rows: int  # target rows outside the pre-existing keys: carried back, then deleted
    to_insert: int  # of those, keys the source lacks
    to_update: int  # of those, rows the source holds with other values
    source_missing: bool  # the source table does not exist (yet): every row would be inserted

    def describe(self, spec: CopySpec) -> str:
        if self.copied_rows == 0:
            return f"nothing to revert: {spec.target} holds no row this copy wrote"
        same = self.copied_rows - self.to_insert - self.to_update
        where = f"{spec.source}.{spec.table}"
        carry = (
            f"carry all {self.copied_rows} copied rows back into {where} once it exists again"
            if self.source_missing
            else f"carry {self.to_insert + self.to_update} of the {self.copied_rows} copied rows back into "
            f"{where} ({self.to_insert} inserted, {self.to_update} updated with the target's newer "
            f"values, {same} already equal)"
        )
        return f"{carry}, then delete the {self.copied_rows} copied rows from {spec.target}.{spec.target_table}"


def preview_revert(spec: CopySpec, source: Engine, target: Engine, checkpoint: CopyCheckpoint | None) -> RevertPreview:
    """Count what ``revert_copy`` would carry back and delete; writes nothing."""
    if checkpoint is None or reflect_table(target, spec.target_table) is None:
        return RevertPreview(0, 0, 0, False)
    if reflect_table(source, spec.table) is None:
        # The source table is re-created by a downgrade that runs before the revert: every
        # copied row will be inserted into it.
        info = reflect_table(target, spec.target_table)
        assert info is not None
        with raw_connection(target) as tgt:
            total = int(tgt.fetch(TableSql(target, info).count())[0][0])
            tgt.rollback()
        n = max(0, total - checkpoint.preexisting.count)
        return RevertPreview(n, n, 0, True)
    plan = build_plan(spec, source, target)
    copied = to_insert = to_update = 0
    with raw_connection(target) as tgt, raw_connection(source) as src:
        copier = _Copier(plan.reversed(), tgt, src, target, source)
        for found in _carry_back_slices(copier, checkpoint.preexisting):
            copied += found.rows
            to_insert += len(found.missing)
            to_update += len(found.changed)
        src.rollback()
    return RevertPreview(copied, to_insert, to_update, False)


def revert_copy(
    spec: CopySpec,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    on_progress: ProgressCallback | None = None,
) -> RevertResult:
    """Undo a copy: carry the target's current version of every copied row back into the
    source (inserting what it lacks, updating what differs), then delete the copied rows from
    the target (every row outside the pre-existing keys). Idempotent."""
    started = time.monotonic()
    checkpoint = store.load()
    if checkpoint is None:  # the copy never began: it wrote nothing
        return RevertResult(0, 0, time.monotonic() - started)
    if reflect_table(source, spec.table) is None:
        raise CopyRevertError(
            f"{_where(spec, 'source')}: the table does not exist, so the copied rows cannot be restored into it",
            "re-create the source table (downgrade the revision that dropped it), then revert "
            "again; the target still holds the rows",
        )
    plan = build_plan(spec, source, target)
    pre = checkpoint.preexisting
    try:
        inserted, updated = _restore_to_source(plan, source, target, pre, on_progress)
        deleted = _delete_copied(plan, target, pre, on_progress)
    except CopyError:
        raise
    except Exception as exc:
        raise CopyRevertError(
            f"copy '{spec.name}': revert failed: {_first_line(exc)}",
            "fix the cause and revert again: a revert can be repeated safely",
        ) from exc
    store.save(CopyCheckpoint(None, 0, pre, 0))
    return RevertResult(inserted, deleted, time.monotonic() - started, rows_updated_in_source=updated)


# --- checksums ---------------------------------------------------------------------------------


def checksum_table(engine: Engine, table: str, columns: Sequence[str], key: Sequence[str]) -> tuple[int, str]:
    """(row count, order-independent checksum) of ``columns`` of ``table``.

    The checksum is the sum modulo 2**128 of a BLAKE2b hash of each row's canonical form (see
    the module docstring), so tables in different databases holding the same values agree.
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
