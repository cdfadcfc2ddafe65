"""The copy of one table: batches in key order, the fast block paths and their threads.

One module, though over 600 lines, because row batches and block paths are methods of one
``Copier`` sharing its connections, converters and stream digest, and ``run_batches`` switches
between them batch by batch (back to rows when the target refuses a block).

See docs/copy.md for the design."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator.copy.blocks import (
    TextRender,
    copy_text_render,
    text_block_sql,
    text_lines_sql,
)
from orchestrator.copy.checkpoint import (
    CheckpointStore,
    CopyCheckpoint,
    PreexistingKeys,
    ProgressCallback,
)
from orchestrator.copy.convert import make_writer
from orchestrator.copy.dialects import impl_for
from orchestrator.copy.errors import (
    CopyValueError,
)
from orchestrator.copy.keys import KeyCodec
from orchestrator.copy.pipeline import BatchRun, Done, StreamDigest, Watched, binary_compatible, utf8_session
from orchestrator.copy.schema import (
    CopyPlan,
)
from orchestrator.copy.streams import (
    CopyOutReader,
    Prefetch,
    RawConn,
    TableSql,
    plain_block_ok,
    raw_connection,
    stream_rows,
)
from orchestrator.copy.values import ValueProblem
from orchestrator.copy.writers import ExecManyWriter, PgCopyWriter, RowWriteError
from orchestrator.core.model import CopySpec

CHUNK_ROWS = 5_000  # rows held in memory at once on the row-by-row paths
LOOKUP_KEYS = 500  # keys per IN (...) lookup
BLOCK_BYTES = 1 << 20  # about this much COPY data per block on the fast path
PREFETCH_BLOCKS = 4  # blocks the reader thread may hold ahead of the writer
BLOCK_READERS = 2  # source connections building text blocks at once
GROUP_CONCAT_MAX = 1 << 30  # MariaDB group_concat_max_len for the blocks


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


def key_text(names: Sequence[str], values: Sequence[Any]) -> str:
    parts = []
    for name, value in zip(names, values, strict=True):
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{name}={shown}")
    return "(" + ", ".join(parts) + ")"


def where_filter(spec: CopySpec, side: str) -> str:
    if side == "source":
        return f"copy '{spec.name}': source service '{spec.source}', table '{spec.table}'"
    return f"copy '{spec.name}': target service '{spec.target}', table '{spec.target_table}'"


def first_line(exc: BaseException) -> str:
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


@dataclass
class _BatchCounts:
    written: int = 0
    skipped: int = 0  # pre-existing keys
    present: int = 0  # written by an earlier attempt


class Copier:
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
        self.keys = KeyCodec(plan, src.dialect, tgt.dialect)
        self.src_impl, self.tgt_impl = impl_for(src.dialect), impl_for(tgt.dialect)
        convs = [make_writer(tgt.dialect, p.target, p.kind) for p in plan.columns]
        self.convs = [(i, f) for i, f in enumerate(convs) if f is not None]
        self.chunk = max(1, min(self.spec.batch_size, CHUNK_ROWS))
        if self.tgt_impl.speaks_copy:
            oids = [int(p.target.pg_oid or 0) for p in plan.columns]
            self.writer: PgCopyWriter | ExecManyWriter = PgCopyWriter(tgt, self.tsql, self.tcols, oids)
        else:
            self.writer = ExecManyWriter(tgt, self.tsql, self.tcols)
        self.passthrough = self.src_impl.speaks_copy and self.tgt_impl.speaks_copy
        self.passthrough = self.passthrough and all(
            binary_compatible(p.source.pg_type, p.target.pg_type) for p in plan.columns
        )
        self.render: TextRender | None = None
        if self.tgt_impl.speaks_copy and self.src_impl.renders_copy_text and utf8_session(tgt):
            self.render = copy_text_render(self.ssql, plan.columns)
            if self.render is not None and not self.src_impl.blocks_utf8(src):
                self.render = None  # the lines would not come out as UTF-8 bytes
            if self.render is not None:
                self.src_impl.prepare_block_session(src, GROUP_CONCAT_MAX)
        self.utc_session = any(p.target.timezone for p in plan.columns)
        # The rows can be compared at the end in the form the target writes them back (binary
        # COPY tuples, or COPY text lines in PostgreSQL's normal form), hashed in key order
        # while they are copied; a single integer key sorts the same in every database.
        integer_key = len(plan.key_pairs) == 1 and plan.key_kinds[0] == "integer"
        self.digest: StreamDigest | None = None
        if integer_key and self.passthrough:
            self.digest = StreamDigest(binary=True)
        elif integer_key and self.render is not None and self.render.exact:
            self.digest = StreamDigest(binary=False)
        self.block_rows = max(1, min(self.spec.batch_size, 2_000))
        self.helpers: _Helpers | None = None
        # The last key to copy, when rows added after the copy began are another's to carry
        # (follow mode: the change log): a copy chasing the inserts at the end of a live table
        # would never end.
        self.upto: tuple[Any, ...] | None = None
        self.bounded = False  # whether ``upto`` applies

    def last_key(self) -> tuple[Any, ...] | None:
        """The source's greatest key, now."""
        sql, params = self.ssql.last_after(self.skey, None)
        rows = self.src.fetch(sql, params)
        self.src.commit()
        return tuple(rows[0]) if rows else None

    def canon_key(self, row: Sequence[Any]) -> tuple[str | None, ...]:
        return self.keys.canon_in(row)

    def next_bound(self, lo: Sequence[Any] | None, n: int) -> tuple[Any, ...] | None:
        if self.bounded and self.upto is None:
            return None  # the source was empty when the copy began
        sql, params = self.ssql.bound_after(self.skey, lo, n, self.upto)
        rows = self.src.fetch(sql, params)
        if not rows:
            sql, params = self.ssql.last_after(self.skey, lo, self.upto)
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
        for rows in stream_rows(self.src, sql, params, LOOKUP_KEYS):
            keys = [self.keys.to_target(r) for r in rows]
            qsql, qparams = self.tsql.select_by_keys(self.tkey, self.tkey, keys)
            for trow in self.tgt.fetch(qsql, qparams):
                ck = self.keys.canon(trow)
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
                out.append(self.convert(row) if convs else row)
            if out:
                yield out
            if throttle is not None:
                throttle.rows_done(len(rows))

    def convert(self, row: Sequence[Any]) -> list[Any]:
        """A source row as the target's driver takes it."""
        vals = list(row)
        i = -1
        try:
            for i, f in self.convs:
                v = vals[i]
                if v is not None:
                    vals[i] = f(v)
        except ValueProblem as problem:
            raise self.value_error(row, i, str(problem)) from None
        return vals

    def value_error(self, row: Sequence[Any], index: int, problem: str) -> CopyValueError:
        column = self.plan.columns[index].target.name
        key = key_text(self.skey, [row[i] for i in self.key_index])
        return CopyValueError(
            f"{where_filter(self.spec, 'target')}: the value of column '{column}' in the row with key "
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
                        key = key_text(self.skey, [row[i] for i in self.key_index])
                        break
                    n += len(rows)
            finally:
                chunks.close()
            self.src.rollback()
        else:
            key = f"in the batch after {key_text(self.skey, lo) if lo else 'the start'}"
        column = exc.column
        if column is not None:
            match = [p.target.name for p in self.plan.columns if p.target.name.lower() == column.lower()]
            column = match[0] if match else column
        col_text = f", column '{column}'" if column else ""
        return CopyValueError(
            f"{where_filter(self.spec, 'target')}: the row with key {key}{col_text} could not be "
            f"written: {first_line(exc.cause)}",
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
                pending.append(Done(self.text_block(self.src, lo, end)))
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
        self, lo: Sequence[Any] | None, hi: Sequence[Any], digest: StreamDigest | None
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

    def hash_source(self, lo: Sequence[Any] | None, hi: Sequence[Any], digest: StreamDigest) -> None:
        """Hash the source rows of (lo, hi] without copying them (rows an earlier attempt copied)."""
        for _ in self.source_blocks(lo, hi, digest):
            pass

    def produce(
        self, lo: Sequence[Any] | None, batch_size: int, throttle: _Throttle, digest: StreamDigest | None
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
        run: BatchRun,
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
        run: BatchRun,
        store: CheckpointStore,
        on_progress: ProgressCallback | None,
        total: int | None,
        throttle: _Throttle,
        digest: StreamDigest | None,
        threads: bool,
    ) -> bool:
        import psycopg

        producer = self.produce(run.lo, max(1, int(self.spec.batch_size)), throttle, digest)
        reader: Iterator[Any] = Prefetch(producer, depth=PREFETCH_BLOCKS) if threads else producer
        items = Watched(reader)  # an error of the source is not the target's
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
        if not self.src_impl.in_process:
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
        run = BatchRun(checkpoint)
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
    def for_copier(copier: Copier, threads: bool) -> Iterator[_Helpers | None]:
        if copier.render is None or BLOCK_READERS < 2 or not threads or not _shareable(copier.source, copier.src):
            yield None
            return
        with ExitStack() as stack:
            conns = [stack.enter_context(raw_connection(copier.source)) for _ in range(BLOCK_READERS)]
            for conn in conns:
                copier.src_impl.prepare_block_session(conn, GROUP_CONCAT_MAX)
            helpers = _Helpers(conns)
            try:
                yield helpers
            finally:
                helpers.pool.shutdown(wait=True, cancel_futures=True)


def _shareable(engine: Engine, conn: RawConn) -> bool:
    """Whether another connection of ``engine`` sees the same database (a SQLite file, or a
    server), not a private in-memory one."""
    return impl_for(conn.dialect).shared_by_connections(engine)
