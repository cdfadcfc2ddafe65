"""SQLite: COPY text rendered by ``group_concat`` over a key range (SQLite has no catalog
estimate and no canonical lines in SQL); ``?`` placeholders, 64-bit integers, lengths not kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from orchestrator.copy.columns import ColumnInfo, ColumnPair
from orchestrator.copy.dialects.base import (
    SPECIAL_CODES,
    TAB,
    CaptureObjects,
    DialectImpl,
    Field,
    register,
    text_target,
)

if TYPE_CHECKING:
    from orchestrator.copy.streams import RawConn, TableSql

# SQLite: string literals have no escapes, so '\N' is a backslash and an N
_S_NULL = "'\\N'"
_S_BAD = "'\\xff'"  # COPY text for the byte 0xff: never valid UTF-8, so PostgreSQL refuses the row
_DT19_SHAPE = "____-__-__ __:__:__"


def _escape(v: str) -> str:
    out = v
    for code, text in SPECIAL_CODES:
        out = f"replace({out}, char({code}), '{text}')"
    return out


FieldFn = Callable[[ColumnInfo, ColumnInfo, str, "str | None"], "Field | None"]


def _integer(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("integer", "boolean"):
        return None
    v = f"CASE typeof({x}) WHEN 'integer' THEN {x} WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
    return Field(v, v, isnull, True)


def _boolean(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("integer", "boolean"):
        return None
    # 1/0 compare equal to what the Python path takes as true/false (1, 1.0, '1' ...)
    v = f"CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE CASE WHEN {x} IS NULL THEN {_S_NULL} ELSE {_S_BAD} END END"
    return Field(v, v, isnull, True)


def _decimal(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("decimal", "integer"):
        return None
    if t.precision is None:  # unconstrained numeric keeps the text's scale
        v = (
            f"CASE typeof({x}) WHEN 'integer' THEN {x} "
            f"WHEN 'real' THEN CASE WHEN CAST(CAST({x} AS TEXT) AS REAL) = {x} THEN CAST({x} AS TEXT) "
            f"ELSE {_S_BAD} END WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
        )
        return Field(v, v, isnull, True)
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
    return Field(v, v, isnull, True)


def _text(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind not in ("string", "json"):
        return None
    usable, exact = text_target(t)
    if not usable:
        return None

    def text(value: str) -> str:
        if t.max_length is not None:  # no more bytes than that is no more characters either
            n = int(t.max_length)
            value = f"CASE WHEN length(CAST({x} AS BLOB)) <= {n} OR length({x}) <= {n} THEN {value} ELSE {_S_BAD} END"
        return f"CASE typeof({x}) WHEN 'text' THEN {value} WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"

    return Field(text(x), text(_escape(x)), isnull, exact)


def _datetime(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind != "datetime" or t.fsp != 6:
        return None
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
    return Field(v, v, isnull, True)


def _date(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind != "date":
        return None
    valid = f"typeof({x}) = 'text' AND length({x}) = 10 AND {x} LIKE '____-__-__' AND julianday({x}) IS NOT NULL"
    v = f"CASE WHEN {valid} THEN {x} WHEN {x} IS NULL THEN {_S_NULL} ELSE {_S_BAD} END"
    return Field(v, v, isnull, True)


def _binary(s: ColumnInfo, t: ColumnInfo, x: str, isnull: str | None) -> Field | None:
    if s.kind != "binary":
        return None
    v = f"CASE typeof({x}) WHEN 'blob' THEN '\\\\x' || lower(hex({x})) WHEN 'null' THEN {_S_NULL} ELSE {_S_BAD} END"
    return Field(v, v, f"(2 - ({x} IS NULL))", True)


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
class SqliteImpl(DialectImpl):
    name = "sqlite"
    block_sql = "DELETE FROM {table} WHERE 0"  # changes nothing, takes the database's write lock
    block_how = "the SQLite database's write lock"
    triggers_miss_changes = True
    sqlalchemy_names = ("sqlite",)
    renders_copy_text = True
    in_process = True
    decimals_as_float = True
    single_floats = False
    temporal_as_text = True
    lines_cast = "BLOB"
    paramstyle_mark = "?"
    folds_names = True
    declared_lengths = False  # a declared length is not enforced: values of any length fit
    integer_bits = 64  # every INTEGER holds 64 bits, whatever the declared type says

    def text_field(self, sql: TableSql, pair: ColumnPair) -> Field | None:
        fn = _FIELDS.get(pair.target.kind)
        if fn is None:
            return None
        s = pair.source
        x = sql.q(s.name)
        # every expression handles NULL itself and refuses (with _S_BAD) values of an unexpected type
        return fn(s, pair.target, x, f"({x} IS NULL)" if s.nullable else None)

    def blocks_utf8(self, conn: RawConn) -> bool:
        rows = conn.fetch("PRAGMA encoding")
        return bool(rows) and str(rows[0][0]).upper() == "UTF-8"

    def shared_by_connections(self, engine: Engine) -> bool:
        # a file, not a private in-memory database
        database = engine.url.database or ""
        return bool(database) and database != ":memory:" and "mode=memory" not in str(engine.url)

    def text_line(self, parts: Sequence[str]) -> str:
        fmt = f"'{TAB.join(['%s'] * len(parts))}'"
        return f"printf({fmt}, {', '.join(parts)})"

    def text_block_sql(self, sql: TableSql, line: str, marks: str, where: str, order: str) -> str:
        # a subquery with ORDER BY feeding an aggregate is not flattened: rows arrive in key order
        return (
            f"SELECT CAST(group_concat(l, char(10)) AS BLOB), count(*), coalesce(sum(m), 0) "
            f"FROM (SELECT {line} AS l, {marks} AS m FROM {sql.name}{where} ORDER BY {order})"
        )

    def capture_install(self, c: CaptureObjects) -> list[str]:
        # statements inside a trigger take unqualified names
        log, table = self.quote(c.log), self.qualified(c.schema, c.table)
        keys = ", ".join(self.quote(k) for k in c.keys)
        old = ", ".join(f"OLD.{self.quote(k)}" for k in c.keys)
        new = ", ".join(f"NEW.{self.quote(k)}" for k in c.keys)

        def trigger(suffix: str, event: str, body: str) -> str:
            name = self.qualified(c.schema, f"{c.base}_{suffix}")
            return f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} FOR EACH ROW BEGIN {body} END"

        def insert(values: str) -> str:
            return f"INSERT INTO {log} ({keys}) VALUES ({values});"

        # untyped key columns keep each value's own storage class, as the source holds it
        return [
            f"CREATE TABLE IF NOT EXISTS {self.qualified(c.schema, c.log)} "
            f"(migrate_seq INTEGER PRIMARY KEY AUTOINCREMENT, {keys})",
            trigger("ins", "INSERT", insert(new)),
            trigger("upd", "UPDATE", insert(old) + " " + insert(new)),
            trigger("del", "DELETE", insert(old)),
        ]

    def capture_remove(self, c: CaptureObjects) -> list[str]:
        triggers = [
            f"DROP TRIGGER IF EXISTS {self.qualified(c.schema, f'{c.base}_{s}')}" for s in ("ins", "upd", "del")
        ]
        return [*triggers, f"DROP TABLE IF EXISTS {self.qualified(c.schema, c.log)}"]
