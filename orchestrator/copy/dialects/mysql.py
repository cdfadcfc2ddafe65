"""MariaDB/MySQL: canonical lines and their digest in SQL, COPY text rendered by the server
(``GROUP_CONCAT``), and the row estimate."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from orchestrator.copy.dialects.base import (
    SPECIAL_CODES,
    TAB,
    DialectImpl,
    Field,
    decimal_fits,
    register,
    string_fits,
    text_target,
)
from orchestrator.copy.schema import ColumnInfo, ColumnPair, Kind, TableInfo
from orchestrator.copy.streams import RawConn, TableSql

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


@register
class MysqlImpl(DialectImpl):
    name = "mysql"
    renders_copy_text = True
    finite_floats_only = True
    column_charsets = True
    lines_cast = "BINARY"

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
