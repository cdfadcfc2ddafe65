"""SQL the databases run for the copy, so rows need not become Python objects:

* the canonical line of a row (what the checksum hashes) computed by PostgreSQL or MariaDB,
  character for character the same as :func:`orchestrator.runtime.copy_values.canon_line`;
* the PostgreSQL ``COPY`` text form of a row computed by MariaDB or SQLite, for the
  source-to-PostgreSQL fast path.

An expression is only offered where the result is provably the same as the Python path's: a
column whose values could be changed on the way (a narrower numeric scale, fewer fractional
seconds, a shorter length) gets no expression and the copy falls back to the Python path. The
SQLite expressions guard each value and emit an invalid byte (``\\xff``) instead of anything
PostgreSQL could accept with a different meaning; the batch then fails and is retried on the
Python path, which names the row and the column.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.runtime.copy_io import TableSql
from orchestrator.runtime.copy_schema import ColumnInfo, ColumnPair, Kind

# --- canonical lines (verification) -----------------------------------------------------------


def _pg_canon(sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
    x = sql.q(col.name)
    k = col.kind
    if kind in ("integer", "boolean"):
        if k == "boolean":
            return f"CASE WHEN {x} THEN '1' ELSE '0' END"
        return f"{x}::text" if k == "integer" else None
    if kind == "decimal" and k in ("decimal", "integer"):
        return f"trim_scale({x}::numeric)::text"
    if kind == "string" and k == "string":
        return f"{x}::text"
    if kind == "datetime" and k == "datetime":
        value = f"({x} AT TIME ZONE 'UTC')" if col.timezone else x
        return f"to_char({value}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if kind == "date" and k == "date":
        return f"to_char({x}, 'YYYY-MM-DD')"
    if kind == "binary" and k == "binary":
        return f"encode({x}, 'hex')"
    if kind == "uuid" and k in ("uuid", "string"):
        return f"lower({x}::text)"
    return None


def _mysql_canon(sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
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


def digest_sql(sql: TableSql, columns: Sequence[ColumnInfo], kinds: Sequence[Kind]) -> str | None:
    """``SELECT count, sum`` of the 60-bit MD5 prefixes of every row's canonical line, or None
    when a column has no exact SQL form here (then Python computes the same lines)."""
    if sql.dialect == "postgresql":
        parts = [_pg_canon(sql, c, k) for c, k in zip(columns, kinds, strict=True)]
        if any(p is None for p in parts):
            return None
        fields = [f"coalesce(length({p}) || ':' || {p}, 'N')" for p in parts]
        line = " || ',' || ".join(fields)
        return (
            f"SELECT count(*), coalesce(sum(('x' || substr(md5({line}), 1, 15))::bit(60)::bigint), 0) FROM {sql.name}"
        )
    if sql.dialect == "mysql":
        parts = [_mysql_canon(sql, c, k) for c, k in zip(columns, kinds, strict=True)]
        if any(p is None for p in parts):
            return None
        fields = [f"IFNULL(CONCAT(CHAR_LENGTH({p}), ':', {p}), 'N')" for p in parts]
        line = f"CONCAT_WS(',', {', '.join(fields)})"
        return (
            f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({line}), 1, 15), 16, 10) "
            f"AS UNSIGNED)), 0) FROM {sql.name}"
        )
    return None


# --- PostgreSQL COPY text built by the source database ------------------------------------------

_BAD = "'\\xff'"  # COPY text for the byte 0xff: never valid UTF-8, so PostgreSQL refuses the row


def _decimal_fits(s: ColumnInfo, t: ColumnInfo) -> bool:
    if t.scale is None and t.precision is None:
        return True
    if s.kind == "integer":
        return True  # an integer never needs rounding; overflow is an error
    if s.scale is None or t.scale is None or s.precision is None:
        return False
    if t.scale < s.scale:
        return False
    return t.precision is None or t.precision - t.scale >= s.precision - s.scale


def _string_fits(s: ColumnInfo, t: ColumnInfo) -> bool:
    if t.max_length is None:
        return True
    return s.max_length is not None and not t.length_in_bytes and t.max_length >= s.max_length


def _mysql_copy_text(sql: TableSql, pair: ColumnPair) -> str | None:
    s, t = pair.source, pair.target
    x = sql.q(s.name)
    bs = "CHAR(92 USING utf8mb4)"
    if s.kind in ("integer", "boolean") and t.kind in ("integer", "boolean"):
        return f"CAST({x} AS CHAR)"
    if s.kind in ("decimal", "integer") and t.kind == "decimal" and _decimal_fits(s, t):
        return f"CAST({x} AS CHAR)"
    if s.kind in ("string", "json") and t.kind in ("string", "json") and _string_fits(s, t):
        if t.kind == "string" and (t.pg_type or "").startswith("character("):
            return None  # char(n) pads
        v = f"CONVERT({x} USING utf8mb4)"
        v = f"REPLACE({v}, {bs}, CONCAT({bs}, {bs}))"
        for code, letter in ((9, "t"), (10, "n"), (13, "r")):
            v = f"REPLACE({v}, CHAR({code} USING utf8mb4), CONCAT({bs}, '{letter}'))"
        return v
    if s.kind == "datetime" and t.kind == "datetime" and t.fsp >= s.fsp:
        return f"DATE_FORMAT({x}, '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"
    if s.kind == "date" and t.kind == "date":
        return f"DATE_FORMAT({x}, '%%Y-%%m-%%d')"
    if s.kind == "binary" and t.kind == "binary":
        return f"CONCAT({bs}, {bs}, 'x', HEX({x}))"
    return None


_DT19 = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
_D10 = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"


def _sqlite_copy_text(sql: TableSql, pair: ColumnPair) -> str | None:
    s, t = pair.source, pair.target
    x = sql.q(s.name)
    if t.kind == "integer" and s.kind in ("integer", "boolean"):
        return f"CASE WHEN typeof({x}) = 'integer' THEN CAST({x} AS TEXT) ELSE {_BAD} END"
    if t.kind == "boolean" and s.kind in ("integer", "boolean"):
        return f"CASE WHEN typeof({x}) = 'integer' AND {x} IN (0, 1) THEN CAST({x} AS TEXT) ELSE {_BAD} END"
    if t.kind == "decimal" and s.kind in ("decimal", "integer"):
        scale = "" if t.scale is None else f" AND round({x}, {int(t.scale)}) = {x}"
        return (
            f"CASE WHEN typeof({x}) = 'integer' THEN CAST({x} AS TEXT) "
            f"WHEN typeof({x}) = 'real' AND CAST(CAST({x} AS TEXT) AS REAL) = {x}{scale} "
            f"THEN CAST({x} AS TEXT) ELSE {_BAD} END"
        )
    if t.kind in ("string", "json") and s.kind in ("string", "json"):
        if (t.pg_type or "").startswith("character("):
            return None
        limit = "" if t.max_length is None else f" AND length({x}) <= {int(t.max_length)}"
        v = x
        for code, letter in ((92, "char(92)"), (9, "'t'"), (10, "'n'"), (13, "'r'")):
            v = f"replace({v}, char({code}), char(92) || {letter})"
        return f"CASE WHEN typeof({x}) = 'text'{limit} THEN {v} ELSE {_BAD} END"
    if t.kind == "datetime" and s.kind == "datetime" and t.fsp == 6:
        exact = f"{x} GLOB '{_DT19}'"
        fraction = (
            f"(length({x}) BETWEEN 21 AND 26 AND substr({x}, 1, 19) GLOB '{_DT19}' "
            f"AND substr({x}, 20, 1) = '.' AND substr({x}, 21) NOT GLOB '*[^0-9]*')"
        )
        return f"CASE WHEN typeof({x}) = 'text' AND ({exact} OR {fraction}) THEN {x} ELSE {_BAD} END"
    if t.kind == "date" and s.kind == "date":
        return f"CASE WHEN typeof({x}) = 'text' AND {x} GLOB '{_D10}' THEN {x} ELSE {_BAD} END"
    if t.kind == "binary" and s.kind == "binary":
        return f"CASE WHEN typeof({x}) = 'blob' THEN char(92) || char(92) || 'x' || hex({x}) ELSE {_BAD} END"
    return None


def copy_text_select(sql: TableSql, pairs: Sequence[ColumnPair]) -> str | None:
    """The select list giving each source row as one PostgreSQL COPY text line, or None when a
    column is not eligible."""
    if sql.dialect == "mysql":
        parts = [_mysql_copy_text(sql, p) for p in pairs]
        if any(p is None for p in parts):
            return None
        null = "CONCAT(CHAR(92 USING utf8mb4), 'N')"
        fields = ", ".join(f"IFNULL({p}, {null})" for p in parts)
        return f"CONVERT(CONCAT_WS(CHAR(9 USING utf8mb4), {fields}) USING binary)"
    if sql.dialect == "sqlite":
        parts = [_sqlite_copy_text(sql, p) for p in pairs]
        if any(p is None for p in parts):
            return None
        cases = [
            f"CASE WHEN {sql.q(p.source.name)} IS NULL THEN char(92) || 'N' ELSE {e} END"
            for p, e in zip(pairs, parts, strict=True)
        ]
        return " || char(9) || ".join(cases)
    return None
