"""MariaDB/MySQL: canonical lines and their digest in SQL, COPY text rendered by the server
(``GROUP_CONCAT``), the row estimate, the strict session copies write in, and the reflection
quirks (character sets, JSON columns, names SQLAlchemy reflects with doubled backticks)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.copy.columns import ColumnInfo, ColumnPair, Kind
from orchestrator.copy.dialects.base import (
    SPECIAL_CODES,
    TAB,
    CaptureObjects,
    CatalogExtras,
    DialectImpl,
    Field,
    decimal_fits,
    register,
    string_fits,
    text_target,
)

if TYPE_CHECKING:
    from orchestrator.copy.schema import TableInfo
    from orchestrator.copy.streams import RawConn, TableSql

# the session copies write in: strict (an unrepresentable value is an error, never a warning
# with a truncated value), and an explicit 0 in an AUTO_INCREMENT key stays 0
SQL_MODE = (
    "STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE"
)

# the byte limits of the text and blob types, which have no declared length
TEXT_TYPE_BYTES = {
    "TINYTEXT": 255,
    "TEXT": 65_535,
    "MEDIUMTEXT": 16_777_215,
    "LONGTEXT": 4_294_967_295,
    "TINYBLOB": 255,
    "BLOB": 65_535,
    "MEDIUMBLOB": 16_777_215,
    "LONGBLOB": 4_294_967_295,
}

_JSON_CHECK = re.compile(r"json_valid\((`(?:[^`]|``)+`|[^`)]+)\)", re.IGNORECASE)

# MariaDB: CHAR(92 USING utf8mb4) is a backslash whatever the sql_mode says about escapes
_M_BS = "CHAR(92 USING utf8mb4)"
_M_NULL = f"CONCAT({_M_BS}, 'N')"
_M_BAD = f"CONCAT({_M_BS}, 'xff')"  # COPY text for the byte 0xff: never valid UTF-8, so refused

_INTEGERS = ("integer", "boolean")


def _escape(v: str) -> str:
    out = f"REPLACE({v}, {_M_BS}, CONCAT({_M_BS}, {_M_BS}))"
    for code, text in SPECIAL_CODES[1:]:
        out = f"REPLACE({out}, CHAR({code} USING utf8mb4), CONCAT({_M_BS}, '{text[1]}'))"
    return out


def _simple(value: str, isnull: str | None, exact: bool = True) -> Field:
    return Field(f"IFNULL({value}, {_M_NULL})", f"IFNULL({value}, {_M_NULL})", isnull, exact)


FieldFn = Callable[[ColumnInfo, ColumnInfo, str, "str | None"], "Field | None"]


def _integer(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    return _simple(x, isnull) if s.kind in _INTEGERS else None


def _boolean(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in _INTEGERS:
        return None
    value = f"IF({x} IS NULL, {_M_NULL}, CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE {_M_BAD} END)"
    return Field(value, value, isnull, True)


def _decimal(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("decimal", "integer") or not decimal_fits(s, t):
        return None
    scale = t.scale if t.precision is not None else None
    if s.kind == "integer":
        return _simple(x if not scale else f"CONCAT({x}, '.{'0' * scale}')", isnull)
    if scale is None or scale == s.scale:
        return _simple(x, isnull)
    digits = (s.precision or 0) - (s.scale or 0) + scale
    if scale <= 38 and digits <= 65:
        return _simple(f"CAST({x} AS DECIMAL({digits}, {scale}))", isnull)
    return _simple(x, isnull, exact=False)


def _text(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("string", "json") or not string_fits(s, t):
        return None
    usable, exact = text_target(t)
    if not usable:
        return None
    charset = (s.charset or "utf8mb4").lower()
    v = x if charset in ("utf8mb4", "utf8mb3", "utf8", "ascii") else f"CONVERT({x} USING utf8mb4)"
    return Field(f"IFNULL({v}, {_M_NULL})", f"IFNULL({_escape(v)}, {_M_NULL})", isnull, exact)


def _datetime(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind != "datetime" or t.fsp < s.fsp:
        return None
    v = f"CAST({x} AS CHAR)"
    if s.fsp > 0:  # there is a decimal point to stop at
        v = f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {v}))"
    if t.timezone:
        v = f"CONCAT({v}, '+00')"
    return _simple(v, isnull)


def _date(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    return _simple(f"CAST({x} AS CHAR)", isnull) if s.kind == "date" else None


def _binary(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind != "binary":
        return None
    value = f"IFNULL(CONCAT({_M_BS}, {_M_BS}, 'x', LOWER(HEX({x}))), {_M_NULL})"
    return Field(value, value, f"(2 - ({x} IS NULL))", True)


# by target kind
_FIELDS: dict[str, FieldFn] = {
    "integer": _integer,
    "boolean": _boolean,
    "decimal": _decimal,
    "string": _text,
    "json": _text,
    "datetime": _datetime,
    "date": _date,
    "binary": _binary,
}


def _charsets(conn: sa.Connection, schema_sql: str, params: dict[str, Any]) -> dict[str, str | None]:
    rows = conn.execute(
        sa.text(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = :name"
        ),
        params,
    )
    return {str(r[0]): (str(r[1]) if r[1] is not None else None) for r in rows}


def _json_columns(conn: sa.Connection, schema_sql: str, params: dict[str, Any]) -> set[str]:
    """The columns a ``json_valid()`` check constrains: MariaDB's JSON is LONGTEXT with one."""
    try:
        checks = conn.execute(
            sa.text(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                f"WHERE CONSTRAINT_SCHEMA = {schema_sql} AND TABLE_NAME = :name"
            ),
            params,
        ).all()
    except sa.exc.DBAPIError:  # servers without the view have no JSON alias either
        checks = []
    json_cols: set[str] = set()
    for (clause,) in checks:
        match = _JSON_CHECK.search(str(clause))
        if match:
            found = match.group(1)
            json_cols.add(found[1:-1].replace("``", "`") if found.startswith("`") else found)
    return json_cols


def _real_name(reflected: str, known: Collection[str]) -> str:
    """The real name of a column SQLAlchemy reflected from MariaDB (``known``: the names the
    information schema lists)."""
    if reflected in known:
        return reflected
    plain = reflected.replace("``", "`")
    return plain if plain in known else reflected


@register
class MysqlImpl(DialectImpl):
    name = "mysql"
    block_sql = "LOCK TABLES {table} READ"
    block_how = "LOCK TABLES {table} READ"
    unblock_sql = "UNLOCK TABLES"
    hands_over_block = True
    triggers_miss_changes = True
    session_zone_sql = ("SELECT @@session.time_zone", "SET time_zone = %s")
    sqlalchemy_names = ("mysql", "mariadb")
    renders_copy_text = True
    finite_floats_only = True
    column_charsets = True
    lines_cast = "BINARY"
    quote_char = "`"
    row_value_keys = False
    discard_sessions = True
    folds_names = True
    text_type_bytes = TEXT_TYPE_BYTES
    binary_lengths = True
    tinyint1_boolean = True
    default_decimal = (10, 0)

    def fractional_digits(self, type_: Any) -> int | None:
        return getattr(type_, "fsp", None) or 0

    def catalog_extras(self, engine: Engine, schema: str | None, name: str) -> CatalogExtras:
        schema_sql = ":schema" if schema else "DATABASE()"
        params = {"name": name, "schema": schema} if schema else {"name": name}
        with engine.connect() as conn:
            charsets = _charsets(conn, schema_sql, params)
            json_cols = _json_columns(conn, schema_sql, params)
        return CatalogExtras(charsets=charsets, json_columns=frozenset(json_cols))

    def real_column_name(self, reflected: str, extras: CatalogExtras) -> str:
        # SQLAlchemy reflects MariaDB names with their backticks still doubled
        return _real_name(reflected, extras.charsets)

    def stream_cursor(self, dbapi: Any, chunk: int) -> Any:
        import pymysql.cursors

        return dbapi.cursor(pymysql.cursors.SSCursor)

    def prepare_session(self, conn: RawConn) -> None:
        # strict, and in UTC; discard_sessions keeps these settings from leaking to other users
        conn.execute("SET SESSION sql_mode = %s, time_zone = '+00:00'", (SQL_MODE,))
        conn.commit()

    def canon_expr(self, sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
        x = sql.q(col.name)
        k = col.kind
        if kind in ("integer", "boolean") and k in ("integer", "boolean"):
            return f"CAST({x} AS CHAR)"
        if kind == "decimal" and k in ("decimal", "integer"):
            s = f"CAST({x} AS CHAR)"
            return f"IF(LOCATE('.', {s}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {s})), {s})"
        if kind == "string" and k == "string":
            return f"CONVERT({x} USING utf8mb4)"
        if kind == "datetime" and k == "datetime":
            return f"DATE_FORMAT({x}, '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"
        if kind == "date" and k == "date":
            return f"DATE_FORMAT({x}, '%%Y-%%m-%%d')"
        if kind == "binary" and k == "binary":
            return f"LOWER(HEX({x}))"
        if kind == "uuid" and k in ("uuid", "string"):
            return f"LOWER(CONVERT({x} USING utf8mb4))"
        return None

    def digest_sql(self, sql: TableSql, parts: Sequence[str]) -> str | None:
        fields = [f"IFNULL(CONCAT(CHAR_LENGTH({p}), ':', {p}), 'N')" for p in parts]
        line = f"CONCAT_WS(',', {', '.join(fields)})"
        return (
            f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({line}), 1, 15), 16, 10) "
            f"AS UNSIGNED)), 0) FROM {sql.name}"
        )

    def text_field(self, sql: TableSql, pair: ColumnPair) -> Field | None:
        fn = _FIELDS.get(pair.target.kind)
        if fn is None:
            return None
        s = pair.source
        x = sql.q(s.name)
        return fn(s, pair.target, x, f"({x} IS NULL)" if s.nullable else None)

    def prepare_block_session(self, conn: RawConn, max_block_bytes: int) -> None:
        conn.execute(f"SET SESSION group_concat_max_len = {max_block_bytes}")

    def statement_limit(self, conn: RawConn) -> int:
        rows = conn.fetch("SELECT @@max_allowed_packet")
        packet = int(rows[0][0]) if rows else 4 * 1024 * 1024
        return max(256 * 1024, min(packet - 64 * 1024, 8 * 1024 * 1024))

    def text_line(self, parts: Sequence[str]) -> str:
        return f"CONCAT_WS('{TAB}', {', '.join(parts)})"

    def text_block_sql(self, sql: TableSql, line: str, marks: str, where: str, order: str) -> str:
        return (
            f"SELECT CAST(GROUP_CONCAT({line} ORDER BY {order} SEPARATOR '\\n') AS BINARY), COUNT(*), "
            f"COALESCE(SUM({marks}), 0) FROM {sql.name}{where}"
        )

    def estimate_rows(self, conn: RawConn, sql: TableSql, table: TableInfo) -> tuple[bool, int | None]:
        rows = conn.fetch(
            "SELECT TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s",
            (table.schema, table.name),
        )
        if rows and rows[0][0]:
            return True, int(rows[0][0])
        return False, None

    def block_statement(self, table: str, log: str | None) -> str:
        # LOCK TABLES allows its session no other table: the log is drained under the block
        return self.block_sql.format(table=table) + (f", {log} WRITE" if log else "")

    def capture_install(self, c: CaptureObjects) -> list[str]:
        log, table = self.qualified(c.schema, c.log), self.qualified(c.schema, c.table)
        keys = ", ".join(self.quote(k) for k in c.keys)
        old = ", ".join(f"OLD.{self.quote(k)}" for k in c.keys)
        new = ", ".join(f"NEW.{self.quote(k)}" for k in c.keys)
        comment = "'" + c.comment.replace("\\", "\\\\").replace("'", "''") + "'"

        def trigger(suffix: str, event: str, values: str) -> str:
            name = self.qualified(c.schema, f"{c.base}_{suffix}")
            return (
                f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} FOR EACH ROW "
                f"INSERT INTO {log} ({keys}) VALUES {values}"
            )

        return [
            f"CREATE TABLE IF NOT EXISTS {log} (migrate_seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY) "
            f"ENGINE=InnoDB COMMENT={comment} SELECT {keys} FROM {table} WHERE 1 = 0",
            trigger("ins", "INSERT", f"({new})"),
            trigger("upd", "UPDATE", f"({old}), ({new})"),
            trigger("del", "DELETE", f"({old})"),
        ]

    def privilege_denied(self, exc: BaseException) -> bool:
        # table or database access denied, command denied, SUPER needed for triggers with binary logging
        args: tuple[Any, ...] = getattr(exc, "args", ())
        return bool(args) and args[0] in (1044, 1142, 1227, 1419)

    def begin_snapshot(self, conn: RawConn) -> bool:
        conn.commit()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return True
