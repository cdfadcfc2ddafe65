"""The interface every dialect implements, the registry by dialect name, and the pieces of the
COPY text rendering that do not depend on the dialect.

The engine asks ``impl_for(name)`` instead of branching on the dialect, the way Alembic's
``ddl/impl.py`` registers one ``DefaultImpl`` subclass per dialect. The change capture of live
copies (triggers, a change-log table, replay) will be more methods here, one implementation per
dialect module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.engine import Engine

from orchestrator.copy.schema import ColumnInfo, ColumnPair, Dialect, Kind, TableInfo
from orchestrator.copy.streams import RawConn, TableSql

TAB = "\t"
SPECIAL_CODES = ((92, "\\\\"), (8, "\\b"), (9, "\\t"), (10, "\\n"), (11, "\\v"), (12, "\\f"), (13, "\\r"))


@dataclass(frozen=True)
class Field:
    """One column of a COPY text line, as SQL the source database evaluates."""

    plain: str
    escaped: str
    marks: str | None  # backslashes the rendering itself writes (NULL marker, bytea prefix)
    exact: bool  # written in PostgreSQL's normal form


@dataclass(frozen=True)
class TextRender:
    """How the source database writes each row as one PostgreSQL COPY text line."""

    dialect: Dialect
    plain: str  # the line, values unescaped
    escaped: str  # the line, values escaped
    marks: str  # per row: backslashes the line holds that no value put there
    columns: int
    exact: bool  # every column is written in PostgreSQL's normal form


def decimal_fits(s: ColumnInfo, t: ColumnInfo) -> bool:
    if t.scale is None and t.precision is None:
        return True
    if s.kind == "integer":
        return True  # an integer never needs rounding; overflow is an error
    if s.scale is None or t.scale is None or s.precision is None:
        return False
    if t.scale < s.scale:
        return False
    return t.precision is None or t.precision - t.scale >= s.precision - s.scale


def string_fits(s: ColumnInfo, t: ColumnInfo) -> bool:
    if t.max_length is None:
        return True
    return s.max_length is not None and not t.length_in_bytes and t.max_length >= s.max_length


def text_target(t: ColumnInfo) -> tuple[bool, bool]:
    """(can be written from text, reads back the same text)."""
    pg_type = t.pg_type or ""
    if pg_type.startswith("character("):
        return False, False  # char(n) pads
    return True, t.kind == "string" or pg_type == "json"


class DialectImpl:
    """What the copy engine asks of a database. The defaults are "not offered here": the engine
    then takes its generic path."""

    name: ClassVar[Dialect]
    lines_cast: ClassVar[str] = "BLOB"  # the type COPY text lines are cast to when read

    speaks_copy: ClassVar[bool] = False  # COPY FROM STDIN / TO STDOUT (PostgreSQL)
    renders_copy_text: ClassVar[bool] = False  # can build COPY text blocks in SQL (text_field)
    in_process: ClassVar[bool] = False  # an embedded database: connections stay on their thread

    # how values are written (see values.make_writer)
    native_boolean: ClassVar[bool] = False  # else booleans are written as 1/0
    decimals_as_float: ClassVar[bool] = False  # decimals stored as 64-bit floats (SQLite)
    special_decimals: ClassVar[bool] = False  # numeric NaN and infinities can be stored
    single_floats: ClassVar[bool] = True  # single-precision float columns exist
    finite_floats_only: ClassVar[bool] = False  # no NaN or infinite floats
    rejects_nul: ClassVar[bool] = False  # text cannot hold the NUL character
    column_charsets: ClassVar[bool] = False  # each text column has its own character set
    temporal_as_text: ClassVar[bool] = False  # dates, times and datetimes written as ISO text
    native_uuid: ClassVar[bool] = False  # a uuid column takes uuid.UUID values

    def canon_expr(self, sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
        """The column's canonical text computed in SQL, or None (then Python computes it)."""
        return None

    def digest_sql(self, sql: TableSql, parts: Sequence[str]) -> str | None:
        """``SELECT count, sum`` of the 60-bit MD5 prefixes of the canonical lines, or None."""
        return None

    def text_field(self, sql: TableSql, pair: ColumnPair) -> Field | None:
        """The source database's COPY text rendering of one column, or None if not eligible."""
        return None

    def text_line(self, parts: Sequence[str]) -> str:
        """SQL joining the columns' renderings with tabs into one line."""
        raise NotImplementedError(self.name)

    def text_block_sql(self, sql: TableSql, line: str, marks: str, where: str, order: str) -> str:
        """One query giving a block of rows as (lines joined by newlines, rows, marks)."""
        raise NotImplementedError(self.name)

    def blocks_utf8(self, conn: RawConn) -> bool:
        """Whether the COPY text blocks this source builds come out as UTF-8 bytes."""
        return True

    def prepare_block_session(self, conn: RawConn, max_block_bytes: int) -> None:
        """Set up a source session that builds COPY text blocks of up to ``max_block_bytes``."""

    def shared_by_connections(self, engine: Engine) -> bool:
        """Whether another connection of ``engine`` sees the same database."""
        return True

    def statement_limit(self, conn: RawConn) -> int:
        """The longest multi-row INSERT the driver should build (0: the driver's default)."""
        return 0

    def estimate_rows(self, conn: RawConn, sql: TableSql, table: TableInfo) -> tuple[bool, int | None]:
        """(known, rows) from the catalog without counting; known False means count them."""
        return False, None


_REGISTRY: dict[str, DialectImpl] = {}


def register(cls: type[DialectImpl]) -> type[DialectImpl]:
    """Class decorator: make ``cls`` the implementation of its dialect."""
    _REGISTRY[cls.name] = cls()
    return cls


def impl_for(name: str) -> DialectImpl:
    """The implementation registered for dialect ``name``."""
    return _REGISTRY[name]
