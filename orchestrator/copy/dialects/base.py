"""The interface every dialect implements, the registry by dialect name, and the pieces of the
COPY text rendering that do not depend on the dialect.

The engine asks ``impl_for(name)`` instead of branching on the dialect, the way Alembic's
``ddl/impl.py`` registers one ``DefaultImpl`` subclass per dialect. The change capture of live
copies (triggers, a change-log table, replay) will be more methods here, one implementation per
dialect module.

Layering: at run time this package imports only ``columns`` (plain values) from the rest of the
copy engine, so that reflection (``schema``) and SQL text and connections (``streams``) can ask
it; their classes appear here in annotations only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.engine import Engine

from orchestrator.copy.columns import ColumnInfo, ColumnPair, Dialect, Kind

if TYPE_CHECKING:
    from orchestrator.copy.schema import TableInfo
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


@dataclass(frozen=True)
class CatalogExtras:
    """What reflection reads from the database's own catalog, beyond SQLAlchemy's inspector."""

    pg_types: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # column: (type oid, format_type())
    charsets: Mapping[str, str | None] = field(default_factory=dict)  # column: character set; every column
    json_columns: frozenset[str] = frozenset()  # text columns that hold JSON (a json_valid() check)


@dataclass(frozen=True)
class CaptureObjects:
    """The change capture of one follow-mode copy on its source (see ``copy.capture``): the
    source table, the change-log table and the trigger names, unquoted; every name starts
    with ``migrate_capture_`` so that they are obviously the tool's."""

    schema: str | None
    table: str  # the source table
    log: str  # the change-log table, in the same schema
    base: str  # triggers and functions are named from it
    keys: tuple[str, ...]  # the source table's key columns: the log holds them
    comment: str  # what the log table is, for a human who finds it


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
    sqlalchemy_names: ClassVar[tuple[str, ...]]  # the SQLAlchemy dialect names this class serves
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

    # SQL text (see streams.TableSql)
    quote_char: ClassVar[str] = '"'  # identifiers are quoted with it, and it is doubled inside
    paramstyle_mark: ClassVar[str] = "%s"  # the driver's placeholder
    row_value_keys: ClassVar[bool] = True  # keyset predicates as (a, b) > (x, y), else column by column

    # sessions (see streams.raw_connection)
    discard_sessions: ClassVar[bool] = False  # prepare_session changes settings: never pool the connection again

    # reflection and column kinds (see schema.reflect_table)
    folds_names: ClassVar[bool] = False  # column names also match case-insensitively
    declared_lengths: ClassVar[bool] = True  # string and binary columns keep their declared length
    binary_lengths: ClassVar[bool] = False  # binary types declare a maximum length (VARBINARY(n), BLOB...)
    text_type_bytes: ClassVar[Mapping[str, int]] = {}  # byte limits of text/blob types declared without a length
    integer_bits: ClassVar[int | None] = None  # every integer column has this many bits, else by its type
    tinyint1_boolean: ClassVar[bool] = False  # BOOLEAN is spelled TINYINT(1)
    default_decimal: ClassVar[tuple[int, int] | None] = None  # (precision, scale) of a bare DECIMAL
    timezone_datetimes: ClassVar[bool] = False  # a datetime column can store an absolute instant

    # cut-over (see copy.cutover)
    block_sql: ClassVar[str] = ""  # blocks writes to the table {table} (quoted), readers go on
    block_how: ClassVar[str] = ""  # the same, said for the output ({table}: as named)
    unblock_sql: ClassVar[str | None] = None  # ends the block; None: it ends with the transaction
    # the block is a session's (LOCK TABLES): held on a connection of its own and handed over
    hands_over_block: ClassVar[bool] = False
    session_zone_sql: ClassVar[tuple[str, str] | None] = None  # (read, set) a session's time zone
    # row triggers can miss a change (cascading foreign keys, REPLACE): counts are compared too
    triggers_miss_changes: ClassVar[bool] = False

    def quote(self, name: str) -> str:
        """``name`` quoted for SQL text: always quoted, its quote character doubled. Nothing is
        escaped for a driver's paramstyle here (see ``TableSql``), unlike SQLAlchemy's preparer,
        which doubles ``%`` for drivers that take ``%s``."""
        mark = self.quote_char
        return mark + name.replace(mark, mark + mark) + mark

    def fractional_digits(self, type_: Any) -> int | None:
        """Fractional-second digits of a reflected datetime or time type; None where the
        dialect declares none (the column then keeps ``ColumnInfo``'s default)."""
        return None

    def catalog_extras(self, engine: Engine, schema: str | None, name: str) -> CatalogExtras:
        """What the database's catalog says about table ``name`` beyond the inspector."""
        return CatalogExtras()

    def real_column_name(self, reflected: str, extras: CatalogExtras) -> str:
        """The real name of a column the inspector reflected as ``reflected``."""
        return reflected

    def fetch_cursor(self, dbapi: Any) -> Any:
        """A cursor of ``dbapi`` for reading a whole result, values as ``stream_cursor`` gives them."""
        return dbapi.cursor()

    def stream_cursor(self, dbapi: Any, chunk: int) -> Any:
        """A cursor of ``dbapi`` that reads a result in chunks (server-side where the driver can)."""
        return dbapi.cursor()

    def prepare_session(self, conn: RawConn) -> None:
        """Set up a connection just taken from the pool with the settings copies rely on."""

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

    # cut-over and change capture (see copy.cutover, copy.capture)

    def qualified(self, schema: str | None, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}" if schema else self.quote(name)

    def block_statement(self, table: str, log: str | None) -> str:
        """SQL blocking writes to ``table`` (quoted); ``log`` (quoted), the change-log table of
        a follow-mode copy, stays readable and writable by the blocking session."""
        return self.block_sql.format(table=table)

    def capture_install(self, c: CaptureObjects) -> list[str]:
        """Statements creating the change-log table and the triggers that fill it with the key
        of every inserted, updated (old and new key) and deleted row, inside the writer's own
        transaction. Each is idempotent: a resumed copy runs them again."""
        raise NotImplementedError(self.name)

    def capture_remove(self, c: CaptureObjects) -> list[str]:
        """Statements dropping the triggers and the log table; idempotent, and valid once the
        source table is gone. By default: one trigger per event, named ``{base}_ins`` (upd, del)."""
        triggers = [
            f"DROP TRIGGER IF EXISTS {self.qualified(c.schema, f'{c.base}_{e}')}" for e in ("ins", "upd", "del")
        ]
        return [*triggers, f"DROP TABLE IF EXISTS {self.qualified(c.schema, c.log)}"]

    def begin_snapshot(self, conn: RawConn) -> bool:
        """Begin a transaction on ``conn`` whose reads all see one consistent snapshot, without
        holding writers back; False where the database cannot (nothing is begun)."""
        return False

    def capture_schema(self, conn: RawConn) -> str | None:
        """The schema an unqualified source table is in, where the triggers must name the log
        with its schema (they run with a search path of their own); None: no need."""
        return None

    def privilege_denied(self, exc: BaseException) -> bool:
        """Whether a driver error says the session lacks a privilege."""
        return False


_REGISTRY: dict[str, DialectImpl] = {}
_BY_SQLALCHEMY_NAME: dict[str, DialectImpl] = {}


def register(cls: type[DialectImpl]) -> type[DialectImpl]:
    """Class decorator: make ``cls`` the implementation of its dialect."""
    impl = cls()
    _REGISTRY[cls.name] = impl
    for name in cls.sqlalchemy_names:
        _BY_SQLALCHEMY_NAME[name] = impl
    return cls


def impl_for(name: str) -> DialectImpl:
    """The implementation registered for dialect ``name``."""
    return _REGISTRY[name]


def impl_for_sqlalchemy(name: str) -> DialectImpl | None:
    """The implementation serving SQLAlchemy dialect ``name`` (``mariadb`` too is ``mysql``
    here), or None for a database copies do not support."""
    return _BY_SQLALCHEMY_NAME.get(name)
