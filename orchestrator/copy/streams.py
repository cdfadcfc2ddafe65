"""Database I/O for copy steps: SQL text built from reflected, quoted identifiers; raw DBAPI
connections; streaming readers; batch writers (psycopg COPY, executemany); and the pieces of
the block fast path: a ``COPY ... TO STDOUT`` reader that skips psycopg's per-row overhead, the
binary COPY body (what stays when header and trailer are cut), the check that a block of
unescaped COPY text is exact, and a reader thread that stays a few blocks ahead.

Values always travel as bound parameters (or COPY data); SQL text only ever holds identifiers
that were found in the reflected table, quoted for SQL and then escaped for the driver's
paramstyle (a literal ``%`` is ``%%`` wherever the driver takes ``%s``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator.copy.columns import Dialect
from orchestrator.copy.dialects import impl_for
from orchestrator.copy.schema import TableInfo, dialect_of


class TableSql:
    """SQL text for one reflected table on one engine."""

    def __init__(self, engine: Engine, table: TableInfo):
        self.dialect: Dialect = dialect_of(engine)
        self.impl = impl_for(self.dialect)
        self.table = table
        self.mark = self.impl.paramstyle_mark

    def _quote(self, name: str) -> str:
        # quoted for SQL, then for the driver: psycopg and pymysql read a lone % as a placeholder
        quoted = self.impl.quote(name)
        return quoted.replace("%", "%%") if self.mark == "%s" else quoted

    def q(self, name: str) -> str:
        if self.table.find(name) is None:
            raise ValueError(f"{name!r} is not a column of {self.table.display}")
        return self._quote(name)

    @property
    def name(self) -> str:
        parts = [self.table.name] if not self.table.schema else [self.table.schema, self.table.name]
        return ".".join(self._quote(p) for p in parts)

    def cols(self, names: Sequence[str]) -> str:
        return ", ".join(self.q(n) for n in names)

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    # keyset predicates ---------------------------------------------------------------------

    def key_after(self, key: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
        """Rows whose key sorts after ``values``."""
        if len(key) == 1:
            return f"{self.q(key[0])} > {self.mark}", [values[0]]
        if self.impl.row_value_keys:
            return f"({self.cols(key)}) > ({self.marks(len(key))})", list(values)
        return self._expand(key, values, ">", ">=")

    def key_upto(self, key: Sequence[str], values: Sequence[Any]) -> tuple[str, list[Any]]:
        """Rows whose key sorts at or before ``values``."""
        if len(key) == 1:
            return f"{self.q(key[0])} <= {self.mark}", [values[0]]
        if self.impl.row_value_keys:
            return f"({self.cols(key)}) <= ({self.marks(len(key))})", list(values)
        return self._expand(key, values, "<", "<=")

    def _expand(self, key: Sequence[str], values: Sequence[Any], strict: str, last: str) -> tuple[str, list[Any]]:
        # (a, b, c) > (x, y, z)  ==  a >= x AND (a > x OR (a = x AND (b > y OR (b = y AND c > z))))
        params: list[Any] = []
        inner = f"{self.q(key[-1])} {last if last == '<=' else strict} {self.mark}"
        params_inner: list[Any] = [values[-1]]
        for col, val in zip(reversed(key[:-1]), reversed(values[:-1]), strict=True):
            inner = f"({self.q(col)} {strict} {self.mark} OR ({self.q(col)} = {self.mark} AND {inner}))"
            params_inner = [val, val, *params_inner]
        lead = ">=" if strict == ">" else "<="
        sql = f"{self.q(key[0])} {lead} {self.mark} AND {inner}"
        params = [values[0], *params_inner]
        return sql, params

    def order(self, key: Sequence[str], desc: bool = False) -> str:
        suffix = " DESC" if desc else ""
        return ", ".join(self.q(k) + suffix for k in key)

    def where(self, parts: Sequence[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
        if not parts:
            return "", []
        params: list[Any] = []
        for _, p in parts:
            params.extend(p)
        return " WHERE " + " AND ".join(f"({s})" for s, _ in parts), params

    def range_parts(
        self, key: Sequence[str], lo: Sequence[Any] | None, hi: Sequence[Any] | None
    ) -> list[tuple[str, list[Any]]]:
        parts = []
        if lo is not None:
            parts.append(self.key_after(key, lo))
        if hi is not None:
            parts.append(self.key_upto(key, hi))
        return parts

    def select_range(
        self,
        columns: Sequence[str],
        key: Sequence[str],
        lo: Sequence[Any] | None,
        hi: Sequence[Any] | None,
    ) -> tuple[str, list[Any]]:
        where, params = self.where(self.range_parts(key, lo, hi))
        sql = f"SELECT {self.cols(columns)} FROM {self.name}{where} ORDER BY {self.order(key)}"
        return sql, params

    def bound_after(
        self, key: Sequence[str], lo: Sequence[Any] | None, n: int, upto: Sequence[Any] | None = None
    ) -> tuple[str, list[Any]]:
        """The key of the n-th row after ``lo`` (the inclusive upper bound of the next batch),
        among the rows up to ``upto``."""
        where, params = self.where(self.range_parts(key, lo, upto))
        sql = f"SELECT {self.cols(key)} FROM {self.name}{where} ORDER BY {self.order(key)} LIMIT 1 OFFSET {int(n) - 1}"
        return sql, params

    def last_after(
        self, key: Sequence[str], lo: Sequence[Any] | None, upto: Sequence[Any] | None = None
    ) -> tuple[str, list[Any]]:
        where, params = self.where(self.range_parts(key, lo, upto))
        sql = f"SELECT {self.cols(key)} FROM {self.name}{where} ORDER BY {self.order(key, desc=True)} LIMIT 1"
        return sql, params

    def keys_after(self, key: Sequence[str], lo: Sequence[Any] | None, n: int) -> tuple[str, list[Any]]:
        """The keys of the next ``n`` rows after ``lo``, in key order."""
        return self.rows_after(key, key, lo, n)

    def _select_list(self, columns: Sequence[str], extra: Sequence[str]) -> str:
        # each expression gets a name no column has: ORDER BY a column's name must not be ambiguous
        taken = {c.name.lower() for c in self.table.columns}
        named = []
        for i, expr in enumerate(extra):
            alias = f"migrate_expr_{i}"
            while alias in taken:
                alias += "_"
            named.append(f"{expr} AS {self._quote(alias)}")
        return ", ".join([self.cols(columns), *named])

    def rows_after(
        self, columns: Sequence[str], key: Sequence[str], lo: Sequence[Any] | None, n: int, extra: Sequence[str] = ()
    ) -> tuple[str, list[Any]]:
        """The next ``n`` rows after ``lo``: ``columns``, then the expressions ``extra``."""
        where, params = self.where(self.range_parts(key, lo, None))
        select = self._select_list(columns, extra)
        sql = f"SELECT {select} FROM {self.name}{where} ORDER BY {self.order(key)} LIMIT {int(n)}"
        return sql, params

    def delete_range(self, key: Sequence[str], lo: Sequence[Any] | None, hi: Sequence[Any]) -> tuple[str, list[Any]]:
        where, params = self.where(self.range_parts(key, lo, hi))
        return f"DELETE FROM {self.name}{where}", params

    def match_keys(self, key: Sequence[str], keys: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        if len(key) == 1:
            return f"{self.q(key[0])} IN ({self.marks(len(keys))})", [k[0] for k in keys]
        one = " AND ".join(f"{self.q(c)} = {self.mark}" for c in key)
        params = [v for k in keys for v in k]
        return " OR ".join(f"({one})" for _ in keys), params

    def select_by_keys(
        self, columns: Sequence[str], key: Sequence[str], keys: Sequence[Sequence[Any]], extra: Sequence[str] = ()
    ) -> tuple[str, list[Any]]:
        cond, params = self.match_keys(key, keys)
        return f"SELECT {self._select_list(columns, extra)} FROM {self.name} WHERE {cond}", params

    def delete_by_keys(self, key: Sequence[str], keys: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        cond, params = self.match_keys(key, keys)
        return f"DELETE FROM {self.name} WHERE {cond}", params

    def insert(self, columns: Sequence[str]) -> str:
        return f"INSERT INTO {self.name} ({self.cols(columns)}) VALUES ({self.marks(len(columns))})"

    def copy_in(self, columns: Sequence[str], binary: bool) -> str:
        """The ``COPY ... FROM STDIN`` statement, as sent without parameters."""
        fmt = "BINARY" if binary else "TEXT"
        return without_params(f"COPY {self.name} ({self.cols(columns)}) FROM STDIN (FORMAT {fmt})")

    def count(self) -> str:
        return f"SELECT count(*) FROM {self.name}"


def without_params(sql: str) -> str:
    """``sql``, built for a driver call with parameters (a literal ``%`` written ``%%``), as the
    text of a call without any: psycopg's ``copy()`` merges nothing into such a statement, so
    the ``%%`` would reach the server as written. (pymysql and psycopg's ``execute()`` are always
    called here with a tuple, even an empty one, and do the merging themselves.)"""
    return sql.replace("%%", "%")


# --- connections -------------------------------------------------------------------------------


@dataclass
class RawConn:
    """A DBAPI connection checked out of an engine's pool, with its dialect."""

    dialect: Dialect
    dbapi: Any
    proxy: Any

    def cursor(self) -> Any:
        return self.dbapi.cursor()

    def commit(self) -> None:
        self.dbapi.commit()

    def rollback(self) -> None:
        self.dbapi.rollback()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = impl_for(self.dialect).fetch_cursor(self.dbapi)
        try:
            cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.dbapi.cursor()
        try:
            cur.execute(sql, tuple(params))
            return int(cur.rowcount)
        finally:
            cur.close()


@contextmanager
def raw_connection(engine: Engine) -> Iterator[RawConn]:
    """A DBAPI connection with the session settings copies rely on.

    The dialect sets the session up (``prepare_session``: MariaDB connections get a strict
    ``sql_mode`` and a UTC ``time_zone``); where that changes settings (``discard_sessions``) the
    connection is discarded afterwards instead of going back to the pool, so the settings never
    leak to other users.
    """
    dialect = dialect_of(engine)
    impl = impl_for(dialect)
    proxy = engine.raw_connection()
    conn = RawConn(dialect, proxy.driver_connection, proxy)
    discard = impl.discard_sessions
    try:
        impl.prepare_session(conn)
        yield conn
        try:
            conn.rollback()
        except Exception:  # a broken connection: discard it below
            discard = True
    except BaseException:
        discard = True
        raise
    finally:
        if discard:
            proxy.invalidate()
        else:
            proxy.close()


def stream_rows(
    conn: RawConn, sql: str, params: Sequence[Any], chunk: int
) -> Generator[list[tuple[Any, ...]], None, None]:
    """Rows of a query in lists of at most ``chunk``, read with a server-side cursor where the
    driver has one, so memory does not grow with the result."""
    cur = impl_for(conn.dialect).stream_cursor(conn.dbapi, chunk)
    try:
        cur.execute(sql, tuple(params))
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                break
            yield rows if isinstance(rows, list) else list(rows)
    finally:
        cur.close()
    conn.commit()  # end the read transaction: nothing holds a snapshot between batches


# --- streaming: COPY out in blocks, COPY in on a thread ------------------------------------------


class _GcPause:
    """The cyclic garbage collector off while at least one reader runs (readers may run on
    several threads at once)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.depth = 0
        self.was_enabled = False

    def enter(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.depth += 1

    def leave(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.was_enabled:
                gc.enable()


_GC_PAUSE = _GcPause()


class CopyOutReader:
    """The data of a PostgreSQL ``COPY ... TO STDOUT`` as (bytes, messages) blocks of about
    ``block_bytes``, read straight from libpq: psycopg's own reader costs a Python generator
    round trip per row. The statement's error, if any, is raised at the end; ``rows`` is then
    the number of rows it wrote."""

    def __init__(self, conn: RawConn, sql: str, params: Sequence[Any] = (), block_bytes: int = 1 << 18):
        self.conn = conn
        self.sql = sql
        self.params = tuple(params)
        self.block_bytes = block_bytes
        self.rows = 0

    def __iter__(self) -> Generator[tuple[bytes, int], None, None]:
        import select

        from psycopg import pq

        # each message comes as a new tuple and memoryview: with the collector on, a million
        # of them cost more in collections than in reading; nothing here makes a cycle
        _GC_PAUSE.enter()
        cur = self.conn.dbapi.cursor()
        try:
            statement = self.sql if self.params else without_params(self.sql)
            with cur.copy(statement, self.params or None):  # psycopg starts it (and cancels it on error)
                pgconn = self.conn.dbapi.pgconn
                get = pgconn.get_copy_data
                poll = select.poll()
                poll.register(pgconn.socket, select.POLLIN)
                parts: list[Any] = []
                size = 0
                while True:
                    nbytes, data = get(1)
                    if nbytes > 0:
                        parts.append(data)
                        size += nbytes
                        if size >= self.block_bytes:
                            yield b"".join(parts), len(parts)
                            parts = []
                            size = 0
                    elif nbytes == 0:  # no whole message buffered yet: wait for the socket
                        poll.poll()
                        pgconn.consume_input()
                    else:  # -1: all sent; -2: the connection failed
                        break
                if parts:
                    yield b"".join(parts), len(parts)
                # the statement's final result: how many rows it wrote, or its error
                while pgconn.is_busy():
                    poll.poll()
                    pgconn.consume_input()
                result = pgconn.get_result()
                while pgconn.get_result() is not None:
                    pass
                if result is None or result.status != pq.ExecStatus.COMMAND_OK:
                    raise _copy_out_error(pgconn, result)
                self.rows = int(result.command_tuples or 0)
        finally:
            cur.close()
            _GC_PAUSE.leave()


def _copy_out_error(pgconn: Any, result: Any) -> Exception:
    import psycopg

    if result is not None:
        try:
            error: Exception = psycopg.errors.error_from_result(result, encoding="utf-8")
            return error
        except Exception:  # an older psycopg: the message alone
            message = result.error_message
    else:
        message = pgconn.error_message
    return psycopg.OperationalError(bytes(message).decode("utf-8", "replace").strip() or "COPY failed")


class BinaryCopyBody:
    """Feeds ``sink`` the tuples of a binary COPY stream, without its header and trailer, so
    streams of several COPY statements concatenate to the stream of one."""

    SIGNATURE = b"PGCOPY\n\xff\r\n\x00"

    def __init__(self, sink: Callable[[Any], None]):
        self.sink = sink
        self.head = b""
        self.started = False
        self.tail = b""
        self.valid = True

    def feed(self, data: bytes) -> None:
        if not self.started:
            self.head += data
            if len(self.head) < 19:
                return
            if not self.head.startswith(self.SIGNATURE):
                self.valid = False
            start = 19 + int.from_bytes(self.head[15:19], "big")
            if len(self.head) < start:
                return
            data, self.head, self.started = self.head[start:], b"", True
        if len(data) >= 2:
            if self.tail:
                self.sink(self.tail)
            self.sink(memoryview(data)[:-2])
            self.tail = data[-2:]
        else:
            both = self.tail + data
            self.sink(both[:-2])
            self.tail = both[-2:]

    def finish(self) -> None:
        if not self.started or self.tail != b"\xff\xff":
            self.valid = False
        self.head, self.tail, self.started = b"", b"", False


_SPECIAL_BYTES = b"\\\b\t\n\v\f\r"


def plain_block_ok(block: bytes, rows: int, columns: int, marks: int) -> bool:
    """Whether a block of unescaped COPY text lines is exactly what it should be: its special
    bytes are the separators plus the backslashes the rendering wrote, so no value holds one."""
    specials = len(block) - len(block.translate(None, _SPECIAL_BYTES))
    return specials == rows * (columns - 1) + (rows - 1) + marks


_DONE = object()


class Prefetch:
    """Runs a generator on a thread of its own, at most ``depth`` items ahead of the consumer,
    so that reading the source overlaps writing the target while memory stays bounded.
    ``close()`` stops the generator (in its own thread, so its clean-up runs there)."""

    def __init__(self, source: Iterator[Any], depth: int = 4):
        import queue
        import threading

        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="migrate-copy-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    break
        except BaseException as exc:
            self._error = exc
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                with suppress(Exception):
                    close()
            self._put(_DONE)

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # later calls end too
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self) -> None:
        import queue

        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        self._thread.join()
