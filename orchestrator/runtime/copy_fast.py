"""SQL the databases run for the copy, so rows need not become Python objects:

* the canonical line of a row (what the checksum hashes) computed by PostgreSQL or MariaDB,
  character for character the same as :func:`orchestrator.runtime.copy_values.canon_line`;
* the PostgreSQL ``COPY`` text form of a row computed by MariaDB or SQLite, for the
  source-to-PostgreSQL fast path, a block of rows at a time (``GROUP_CONCAT``/``group_concat``),
  so that Python only relays bytes.

An expression is only offered where the result is provably the same as the Python path's: a
column whose values could be changed on the way (a narrower numeric scale, fewer fractional
seconds, a shorter length) gets no expression and the copy falls back to the Python path. The
expressions guard each value and emit an invalid byte (``\\xff``) instead of anything
PostgreSQL could accept with a different meaning; the batch then fails and is retried on the
Python path, which names the row and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.runtime.copy_io import TableSql
from orchestrator.runtime.copy_schema import ColumnInfo, ColumnPair, Dialect, Kind

# --- canonical lines (verification) -----------------------------------------------------------


def _pg_canon(sql: TableSql, col: ColumnInfo, kind: Kind) -> str | None:
    x = sql.q(col.name)
    k = col.kind
    if kind in ("integer", "boolean"):
        if k == "boolean":  # NULL stays NULL, as in the Python form and on MariaDB
            return f"CASE WHEN {x} THEN '1' WHEN NOT {x} THEN '0' END"
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


def canon_exprs(sql: TableSql, columns: Sequence[ColumnInfo], kinds: Sequence[Kind]) -> list[str] | None:
    """Each column's canonical text (NULL for NULL) as the database computes it, or None when a
    column has no exact SQL form here (then Python computes it)."""
    if sql.dialect == "postgresql":
        parts = [_pg_canon(sql, c, k) for c, k in zip(columns, kinds, strict=True)]
    elif sql.dialect == "mysql":
        parts = [_mysql_canon(sql, c, k) for c, k in zip(columns, kinds, strict=True)]
    else:
        return None
    return None if any(p is None for p in parts) else [p for p in parts if p is not None]


def digest_sql(sql: TableSql, columns: Sequence[ColumnInfo], kinds: Sequence[Kind]) -> str | None:
    """``SELECT count, sum`` of the 60-bit MD5 prefixes of every row's canonical line, or None
    when a column has no exact SQL form here (then Python computes the same lines)."""
    parts = canon_exprs(sql, columns, kinds)
    if parts is None:
        return None
    if sql.dialect == "postgresql":
        fields = [f"coalesce(length({p}) || ':' || {p}, 'N')" for p in parts]
        line = " || ',' || ".join(fields)
        return (
            f"SELECT count(*), coalesce(sum(('x' || substr(md5({line}), 1, 15))::bit(60)::bigint), 0) FROM {sql.name}"
        )
    if sql.dialect == "mysql":
        fields = [f"IFNULL(CONCAT(CHAR_LENGTH({p}), ':', {p}), 'N')" for p in parts]
        line = f"CONCAT_WS(',', {', '.join(fields)})"
        return (
            f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({line}), 1, 15), 16, 10) "
            f"AS UNSIGNED)), 0) FROM {sql.name}"
        )
    return None


# --- PostgreSQL COPY text built by the source database ------------------------------------------
#
# Each column gets two renderings: *plain* (values as they are) and *escaped* (backslash, tab,
# newline, carriage return, backspace, vertical tab and form feed written as COPY escapes). The
# plain one is cheaper; it is only used for a block of rows once the block is proved to hold no
# special byte inside a value: every special byte it holds is a separator, or a backslash that a
# NULL marker or a bytea prefix put there, and the source database counts those (``marks``).
#
# Where it can, a column is written exactly as PostgreSQL writes the stored value back (its
# *normal form*: booleans as t/f, numeric with the column's scale, timestamps without trailing
# fractional zeros, bytea as lowercase hex), so the lines sent can later be compared with the
# target's own ``COPY ... TO STDOUT`` byte for byte.

_TAB = "\t"
_SPECIAL_CODES = ((92, "\\\\"), (8, "\\b"), (9, "\\t"), (10, "\\n"), (11, "\\v"), (12, "\\f"), (13, "\\r"))


@dataclass(frozen=True)
class _Field:
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


def _text_target(t: ColumnInfo) -> tuple[bool, bool]:
    """(can be written from text, reads back the same text)."""
    pg_type = t.pg_type or ""
    if pg_type.startswith("character("):
        return False, False  # char(n) pads
    return True, t.kind == "string" or pg_type == "json"


# MariaDB: CHAR(92 USING utf8mb4) is a backslash whatever the sql_mode says about escapes
_M_BS = "CHAR(92 USING utf8mb4)"
_M_NULL = f"CONCAT({_M_BS}, 'N')"
_M_BAD = f"CONCAT({_M_BS}, 'xff')"  # COPY text for the byte 0xff: never valid UTF-8, so refused


def _mysql_escape(v: str) -> str:
    out = f"REPLACE({v}, {_M_BS}, CONCAT({_M_BS}, {_M_BS}))"
    for code, text in _SPECIAL_CODES[1:]:
        out = f"REPLACE({out}, CHAR({code} USING utf8mb4), CONCAT({_M_BS}, '{text[1]}'))"
    return out


def _mysql_field(sql: TableSql, pair: ColumnPair) -> _Field | None:
    s, t = pair.source, pair.target
    x = sql.q(s.name)
    isnull = f"({x} IS NULL)" if s.nullable else None

    def simple(value: str, exact: bool = True) -> _Field:
        return _Field(f"IFNULL({value}, {_M_NULL})", f"IFNULL({value}, {_M_NULL})", isnull, exact)

    if s.kind in ("integer", "boolean") and t.kind == "integer":
        return simple(x)
    if s.kind in ("integer", "boolean") and t.kind == "boolean":
        value = f"IF({x} IS NULL, {_M_NULL}, CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE {_M_BAD} END)"
        return _Field(value, value, isnull, True)
    if s.kind in ("decimal", "integer") and t.kind == "decimal" and _decimal_fits(s, t):
        scale = t.scale if t.precision is not None else None
        if s.kind == "integer":
            return simple(x if not scale else f"CONCAT({x}, '.{'0' * scale}')")
        if scale is None or scale == s.scale:
            return simple(x)
        digits = (s.precision or 0) - (s.scale or 0) + scale
        if scale <= 38 and digits <= 65:
            return simple(f"CAST({x} AS DECIMAL({digits}, {scale}))")
        return simple(x, exact=False)
    if s.kind in ("string", "json") and t.kind in ("string", "json") and _string_fits(s, t):
        usable, exact = _text_target(t)
        if not usable:
            return None
        charset = (s.charset or "utf8mb4").lower()
        v = x if charset in ("utf8mb4", "utf8mb3", "utf8", "ascii") else f"CONVERT({x} USING utf8mb4)"
        return _Field(f"IFNULL({v}, {_M_NULL})", f"IFNULL({_mysql_escape(v)}, {_M_NULL})", isnull, exact)
    if s.kind == "datetime" and t.kind == "datetime" and t.fsp >= s.fsp:
        v = f"CAST({x} AS CHAR)"
        if s.fsp > 0:  # there is a decimal point to stop at
            v = f"TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {v}))"
        if t.timezone:
            v = f"CONCAT({v}, '+00')"
        return simple(v)
    if s.kind == "date" and t.kind == "date":
        return simple(f"CAST({x} AS CHAR)")
    if s.kind == "binary" and t.kind == "binary":
        value = f"IFNULL(CONCAT({_M_BS}, {_M_BS}, 'x', LOWER(HEX({x}))), {_M_NULL})"
        return _Field(value, value, f"(2 - ({x} IS NULL))", True)
    return None


# SQLite: string literals have no escapes, so '\N' is a backslash and an N
_S_NULL = "'\\N'"
_S_BAD = "'\\xff'"  # COPY text for the byte 0xff: never valid UTF-8, so PostgreSQL refuses the row
_DT19_SHAPE = "____-__-__ __:__:__"


def _sqlite_escape(v: str) -> str:
    out = v
    for code, text in _SPECIAL_CODES:
        out = f"replace({out}, char({code}), '{text}')"
    return out


def _sqlite_field(sql: TableSql, pair: ColumnPair) -> _Field | None:
    s, t = pair.source, pair.target
    x = sql.q(s.name)
    isnull = f"({x} IS NULL)" if s.nullable else None
    # every expression handles NULL itself and refuses (with _S_BAD) values of an unexpected type
    if t.kind == "integer" and s.kind in ("integer", "boolean"):
        v = f"CASE typeof({x}) WHEN 'integer' THEN {x} WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
        return _Field(v, v, isnull, True)
    if t.kind == "boolean" and s.kind in ("integer", "boolean"):
        # 1/0 compare equal to what the Python path takes as true/false (1, 1.0, '1' ...)
        v = f"CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE CASE WHEN {x} IS NULL THEN {_S_NULL} ELSE {_S_BAD} END END"
        return _Field(v, v, isnull, True)
    if t.kind == "decimal" and s.kind in ("decimal", "integer"):
        if t.precision is None:  # unconstrained numeric keeps the text's scale
            v = (
                f"CASE typeof({x}) WHEN 'integer' THEN {x} "
                f"WHEN 'real' THEN CASE WHEN CAST(CAST({x} AS TEXT) AS REAL) = {x} THEN CAST({x} AS TEXT) "
                f"ELSE {_S_BAD} END WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
            )
            return _Field(v, v, isnull, True)
        scale = int(t.scale or 0)
        as_int = f"{x} || '.{'0' * scale}'" if scale else x
        if scale <= 15:
            # Below 10**(15-s), x * 10**s is within 0.25 of an integer k exactly when x is the
            # double nearest to the decimal d = k / 10**s, and then (IEEE division being
            # correctly rounded) k / 10**s == x; printf('%.<s>f') then writes d, whose at most
            # 15 significant digits it computes exactly. Anything else is refused.
            ten = f"1e{scale}"
            real = (
                f"CASE WHEN abs({x}) < 1e{15 - scale} AND round({x} * {ten}) / {ten} = {x} "
                f"THEN printf('%.{scale}f', {x}) ELSE {_S_BAD} END"
            )
        else:
            real = _S_BAD
        v = (
            f"CASE typeof({x}) WHEN 'integer' THEN {as_int} WHEN 'real' THEN {real} "
            f"WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
        )
        return _Field(v, v, isnull, True)
    if t.kind in ("string", "json") and s.kind in ("string", "json"):
        usable, exact = _text_target(t)
        if not usable:
            return None

        def text(value: str) -> str:
            if t.max_length is not None:  # no more bytes than that is no more characters either
                n = int(t.max_length)
                value = (
                    f"CASE WHEN length(CAST({x} AS BLOB)) <= {n} OR length({x}) <= {n} THEN {value} ELSE {_S_BAD} END"
                )
            return f"CASE typeof({x}) WHEN 'text' THEN {value} WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"

        return _Field(text(x), text(_sqlite_escape(x)), isnull, exact)
    if t.kind == "datetime" and s.kind == "datetime" and t.fsp == 6:
        # 'YYYY-MM-DD HH:MM:SS' and up to 6 fractional digits: LIKE fixes where the separators
        # are, julianday() that every other place holds a digit (and that no time zone follows);
        # written without trailing fractional zeros, as PostgreSQL writes it back
        suffix = " || '+00'" if t.timezone else ""
        trimmed = f"CASE WHEN substr({x}, -1) = '0' THEN rtrim(rtrim({x}, '0'), '.') ELSE {x} END{suffix}"
        shapes = [
            f"WHEN {20 + n} THEN CASE WHEN {x} LIKE '{_DT19_SHAPE}.{'_' * n}' THEN {trimmed} ELSE {_S_BAD} END"
            for n in range(6, 0, -1)
        ]
        shapes.append(f"WHEN 19 THEN CASE WHEN {x} LIKE '{_DT19_SHAPE}' THEN {x}{suffix} ELSE {_S_BAD} END")
        v = (
            f"CASE WHEN {x} IS NULL THEN {_S_NULL} WHEN typeof({x}) = 'text' AND julianday({x}) IS NOT NULL "
            f"THEN CASE length({x}) {' '.join(shapes)} ELSE {_S_BAD} END ELSE {_S_BAD} END"
        )
        return _Field(v, v, isnull, True)
    if t.kind == "date" and s.kind == "date":
        valid = f"typeof({x}) = 'text' AND length({x}) = 10 AND {x} LIKE '____-__-__' AND julianday({x}) IS NOT NULL"
        v = f"CASE WHEN {valid} THEN {x} WHEN {x} IS NULL THEN {_S_NULL} ELSE {_S_BAD} END"
        return _Field(v, v, isnull, True)
    if t.kind == "binary" and s.kind == "binary":
        v = f"CASE typeof({x}) WHEN 'blob' THEN '\\\\x' || lower(hex({x})) WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
        return _Field(v, v, f"(2 - ({x} IS NULL))", True)
    return None


def copy_text_render(sql: TableSql, pairs: Sequence[ColumnPair]) -> TextRender | None:
    """The source database's rendering of each row as a PostgreSQL COPY text line, or None when
    a column is not eligible."""
    if sql.dialect == "mysql":
        fields = [_mysql_field(sql, p) for p in pairs]
    elif sql.dialect == "sqlite":
        fields = [_sqlite_field(sql, p) for p in pairs]
    else:
        return None
    if not fields or any(f is None for f in fields):
        return None
    ok = [f for f in fields if f is not None]
    marks = " + ".join(f.marks for f in ok if f.marks is not None) or "0"
    if sql.dialect == "mysql":
        plain = f"CONCAT_WS('{_TAB}', {', '.join(f.plain for f in ok)})"
        escaped = f"CONCAT_WS('{_TAB}', {', '.join(f.escaped for f in ok)})"
    else:
        fmt = f"'{_TAB.join(['%s'] * len(ok))}'"
        plain = f"printf({fmt}, {', '.join(f.plain for f in ok)})"
        escaped = f"printf({fmt}, {', '.join(f.escaped for f in ok)})"
    return TextRender(sql.dialect, plain, escaped, marks, len(ok), all(f.exact for f in ok))


def text_block_sql(sql: TableSql, render: TextRender, where: str, key: Sequence[str], *, escaped: bool) -> str:
    """One query giving a block of rows as (their COPY text lines joined by newlines, as bytes;
    the number of rows; the backslashes the rendering wrote). ``where`` selects the rows; the
    lines come in key order."""
    line = render.escaped if escaped else render.plain
    order = sql.order(key)
    if sql.dialect == "mysql":
        return (
            f"SELECT CAST(GROUP_CONCAT({line} ORDER BY {order} SEPARATOR '\\n') AS BINARY), COUNT(*), "
            f"COALESCE(SUM({render.marks}), 0) FROM {sql.name}{where}"
        )
    # a subquery with ORDER BY feeding an aggregate is not flattened: rows arrive in key order
    return (
        f"SELECT CAST(group_concat(l, char(10)) AS BLOB), count(*), coalesce(sum(m), 0) "
        f"FROM (SELECT {line} AS l, {render.marks} AS m FROM {sql.name}{where} ORDER BY {order})"
    )


def text_lines_sql(sql: TableSql, render: TextRender, where: str, key: Sequence[str]) -> str:
    """The escaped COPY text line of each row, one result row per source row, in key order."""
    kind = "BINARY" if sql.dialect == "mysql" else "BLOB"
    return f"SELECT CAST({render.escaped} AS {kind}) FROM {sql.name}{where} ORDER BY {sql.order(key)}"
