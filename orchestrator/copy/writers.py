"""Batch writers of a copy: psycopg COPY into PostgreSQL, executemany elsewhere, and where a
write error points (row and column)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.copy.dialects import impl_for
from orchestrator.copy.streams import RawConn, TableSql

# MariaDB session for writing: strict (an unrepresentable value is an error, never a warning
# with a truncated value), and an explicit 0 in an AUTO_INCREMENT key stays 0.


# --- writers -----------------------------------------------------------------------------------


class RowWriteError(Exception):
    """A batch could not be written; ``row_index`` (0-based, within the batch) and ``column``
    say where, when the database told us."""

    def __init__(self, cause: BaseException, row_index: int | None, column: str | None):
        super().__init__(str(cause))
        self.cause = cause
        self.row_index = row_index
        self.column = column


_PG_CONTEXT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


class PgCopyWriter:
    """Writes rows into PostgreSQL with ``COPY ... FROM STDIN`` through psycopg 3."""

    method = "psycopg-copy"

    def __init__(self, conn: RawConn, sql: TableSql, columns: Sequence[str], oids: Sequence[int]):
        import psycopg
        from psycopg import pq
        from psycopg.adapt import Dumper

        self.conn = conn
        adapters = conn.dbapi.adapters
        self.binary = True
        for oid in oids:
            try:
                adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
            except (psycopg.ProgrammingError, ValueError, KeyError):
                self.binary = False
        text_oid = adapters.types["text"].oid
        self.types: list[int] = []
        self.stringify: list[int] = []
        for i, oid in enumerate(oids):
            ok = True
            if not self.binary:
                try:
                    adapters.get_dumper_by_oid(oid, pq.Format.TEXT)
                except (psycopg.ProgrammingError, ValueError, KeyError):
                    ok = False
            self.types.append(oid if ok else text_oid)
            if not ok:
                self.stringify.append(i)
        self.statement = sql.copy_in(columns, self.binary)
        json_oid = adapters.types["json"].oid
        jsonb_oid = adapters.types["jsonb"].oid

        def _enc(obj: Any) -> bytes:
            return obj.encode("utf-8") if isinstance(obj, str) else bytes(obj)

        class JsonText(Dumper):
            oid = json_oid
            format = pq.Format.BINARY if self.binary else pq.Format.TEXT

            def dump(self, obj: Any) -> bytes:
                return _enc(obj)

        class JsonbText(Dumper):
            oid = jsonb_oid
            format = pq.Format.BINARY if self.binary else pq.Format.TEXT

            def dump(self, obj: Any) -> bytes:
                return (b"\x01" + _enc(obj)) if self.format == pq.Format.BINARY else _enc(obj)

        self._dumpers = (JsonText, JsonbText)

    def write_batch(self, chunks: Iterable[list[Any]]) -> int:
        import psycopg

        cur = self.conn.dbapi.cursor()
        for dumper in self._dumpers:
            cur.adapters.register_dumper(None, dumper)
        stringify = self.stringify
        n = 0
        try:
            with cur.copy(self.statement) as cp:
                cp.set_types(self.types)
                write_row = cp.write_row
                for rows in chunks:
                    if stringify:
                        rows = [_stringify(r, stringify) for r in rows]
                    for row in rows:
                        write_row(row)
                    n += len(rows)
        except psycopg.Error as exc:
            index, column = pg_error_location(exc)
            raise RowWriteError(exc, index, column) from exc
        finally:
            cur.close()
        return n


def _stringify(row: tuple[Any, ...], positions: Sequence[int]) -> tuple[Any, ...]:
    out = list(row)
    for i in positions:
        if out[i] is not None:
            out[i] = str(out[i])
    return tuple(out)


class ExecManyWriter:
    """Writes rows with ``executemany``; pymysql turns it into multi-row INSERT statements."""

    method = "executemany"

    def __init__(self, conn: RawConn, sql: TableSql, columns: Sequence[str]):
        self.conn = conn
        self.statement = sql.insert(columns)
        self.max_stmt = impl_for(conn.dialect).statement_limit(conn)

    def write_batch(self, chunks: Iterable[list[Any]]) -> int:
        cur = self.conn.dbapi.cursor()
        if self.max_stmt:
            cur.max_stmt_length = self.max_stmt
        n = 0
        try:
            for rows in chunks:
                try:
                    cur.executemany(self.statement, rows)
                except Exception as exc:
                    if not _is_db_error(exc):
                        raise
                    index, column = self._locate(rows, exc)
                    raise RowWriteError(exc, None if index is None else n + index, column) from exc
                n += len(rows)
        finally:
            cur.close()
        return n

    def _locate(self, rows: list[Any], exc: BaseException) -> tuple[int | None, str | None]:
        """Replay a failed chunk row by row (then roll back) to find the first bad row."""
        self.conn.rollback()
        cur = self.conn.dbapi.cursor()
        try:
            for i, row in enumerate(rows):
                try:
                    cur.execute(self.statement, row)
                except Exception as row_exc:
                    if not _is_db_error(row_exc):
                        raise
                    return i, mysql_error_column(str(row_exc))
        finally:
            cur.close()
            self.conn.rollback()
        return None, mysql_error_column(str(exc))


_MYSQL_COLUMN = re.compile(r"column [`'\"]?(?:[^`'\" ]+[`'\"]?\.[`'\"]?)*([^`'\" ]+)[`'\"]?")


def mysql_error_column(message: str) -> str | None:
    match = _MYSQL_COLUMN.search(message)
    return match.group(1) if match else None


def _is_db_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("pymysql", "sqlite3", "psycopg")) or type(exc).__name__ in (
        "IntegrityError",
        "OperationalError",
        "DataError",
        "ProgrammingError",
        "InternalError",
        "DatabaseError",
    )


def pg_error_location(exc: BaseException) -> tuple[int | None, str | None]:
    """(0-based row of the COPY, column) a PostgreSQL COPY error names, when it does."""
    diag = getattr(exc, "diag", None)
    context = (diag.context if diag is not None else None) or ""
    match = _PG_CONTEXT.search(context)
    column = diag.column_name if diag is not None else None
    index = None
    if match:
        index = int(match.group(1)) - 1
        column = column or (match.group(2) or "").strip() or None
    return index, column
