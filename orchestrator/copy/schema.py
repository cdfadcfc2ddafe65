"""What a copy step knows about its two tables: reflection, column kinds and preflight checks.

Every identifier that later appears in SQL text comes from here: it was found in the reflected
table, and it is quoted with the dialect's own identifier preparer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.copy.errors import CopyPreflightError
from orchestrator.core.model import CopySpec

Kind = Literal[
    "integer",
    "boolean",
    "decimal",
    "float",
    "string",
    "json",
    "date",
    "datetime",
    "time",
    "binary",
    "uuid",
    "other",
]
Dialect = Literal["postgresql", "mysql", "sqlite"]
Side = Literal["source", "target"]

# --- column descriptions -----------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    """One reflected column, reduced to what moving its values needs."""

    name: str
    kind: Kind
    type_text: str
    nullable: bool = True
    computed: bool = False
    has_default: bool = False
    max_length: int | None = None  # characters, or bytes when ``length_in_bytes``
    length_in_bytes: bool = False
    precision: int | None = None  # decimals: total digits
    scale: int | None = None  # decimals: digits after the point
    int_min: int | None = None
    int_max: int | None = None
    timezone: bool = False  # a timestamp that stores an absolute instant (timestamptz)
    fsp: int = 6  # fractional-second digits the column keeps
    charset: str | None = None  # MariaDB character set of a text column
    pg_oid: int | None = None
    pg_type: str | None = None  # format_type(), e.g. "numeric(12,2)"


@dataclass(frozen=True)
class TableInfo:
    dialect: Dialect
    schema: str | None
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]
    unique_sets: tuple[tuple[str, ...], ...]

    def column(self, name: str) -> ColumnInfo | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    def find(self, name: str) -> ColumnInfo | None:
        """Exact name first; MariaDB and SQLite also match names case-insensitively."""
        col = self.column(name)
        if col is not None or self.dialect == "postgresql":
            return col
        folded = [c for c in self.columns if c.name.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def dialect_of(engine: Engine) -> Dialect:
    name = engine.dialect.name
    if name == "postgresql":
        return "postgresql"
    if name in ("mysql", "mariadb"):
        return "mysql"
    if name == "sqlite":
        return "sqlite"
    raise CopyPreflightError(
        f"copy steps support PostgreSQL, MySQL/MariaDB and SQLite; this database is {name}",
    )


def quote_identifier(dialect: Dialect, name: str) -> str:
    """``name`` quoted for SQL text: always quoted, its quote character doubled. Nothing is
    escaped for a driver's paramstyle here (see ``TableSql``), unlike SQLAlchemy's preparer,
    which doubles ``%`` for drivers that take ``%s``."""
    mark = "`" if dialect == "mysql" else '"'
    return mark + name.replace(mark, mark + mark) + mark


def split_table_name(table: str) -> tuple[str | None, str]:
    if "." in table:
        schema, _, name = table.partition(".")
        return schema, name
    return None, table


_INT_BITS = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "MEDIUMINT": 24,
    "INTEGER": 32,
    "INT": 32,
    "BIGINT": 64,
}
_MYSQL_TEXT_BYTES = {
    "TINYTEXT": 255,
    "TEXT": 65_535,
    "MEDIUMTEXT": 16_777_215,
    "LONGTEXT": 4_294_967_295,
    "TINYBLOB": 255,
    "BLOB": 65_535,
    "MEDIUMBLOB": 16_777_215,
    "LONGBLOB": 4_294_967_295,
}


def _int_range(dialect: Dialect, type_: Any) -> tuple[int, int]:
    if dialect == "sqlite":
        bits = 64
    else:
        bits = _INT_BITS.get(type(type_).__name__.upper(), 0)
        if not bits:
            bits = 16 if isinstance(type_, sa.SmallInteger) else 32
            if isinstance(type_, sa.BigInteger):
                bits = 64
    if getattr(type_, "unsigned", False):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _integer(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    cls_name = type(type_).__name__.upper()
    mysql_bool = dialect == "mysql" and cls_name == "TINYINT" and getattr(type_, "display_width", 0) == 1
    lo, hi = _int_range(dialect, type_)
    # MariaDB spells BOOLEAN as TINYINT(1)
    return {"kind": "boolean" if mysql_bool else "integer", "int_min": lo, "int_max": hi}


def _decimal(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "decimal", "precision": type_.precision}
    out["scale"] = type_.scale if type_.precision is not None else None
    if dialect == "mysql" and type_.precision is None:
        out["precision"], out["scale"] = 10, 0
    if out["precision"] is not None and out["scale"] is None:
        out["scale"] = 0
    return out


def _binary(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "binary"}
    cls_name = type(type_).__name__.upper()
    if dialect == "mysql":
        out["max_length"] = _MYSQL_TEXT_BYTES.get(cls_name, getattr(type_, "length", None))
    if dialect != "sqlite":
        out["length_in_bytes"] = True
    return out


def _string(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "json" if extra.get("json") else "string"}
    cls_name = type(type_).__name__.upper()
    if dialect == "mysql" and cls_name in _MYSQL_TEXT_BYTES and not getattr(type_, "length", 0):
        out["max_length"] = _MYSQL_TEXT_BYTES[cls_name]
        out["length_in_bytes"] = True
    elif dialect != "sqlite":
        out["max_length"] = getattr(type_, "length", None)
    return out


def _datetime(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "datetime", "timezone": bool(getattr(type_, "timezone", False)) and dialect == "postgresql"}


def _just(kind: Kind) -> _Classifier:
    return lambda dialect, type_, extra: {"kind": kind}


_Classifier = Callable[[Dialect, Any, dict[str, Any]], dict[str, Any]]

# the first SQLAlchemy type class a reflected type is an instance of decides (order matters:
# Boolean before Integer, Float before Numeric, JSON and Uuid and binary before String)
_CLASSIFIERS: tuple[tuple[type[Any], _Classifier], ...] = (
    (sa.Boolean, _just("boolean")),
    (sa.Integer, _integer),
    (sa.Float, _just("float")),
    (sa.Numeric, _decimal),
    (sa.JSON, _just("json")),
    (sa.Uuid, _just("uuid")),
    (sa.types._Binary, _binary),
    (sa.String, _string),
    (sa.DateTime, _datetime),
    (sa.Date, _just("date")),
    (sa.Time, _just("time")),
)


def _fsp(dialect: Dialect, type_: Any) -> int | None:
    """Fractional seconds digits of a datetime or time column; None where the dialect keeps none."""
    if dialect == "mysql":
        return getattr(type_, "fsp", None) or 0
    if dialect == "postgresql":
        precision = getattr(type_, "precision", None)
        return 6 if precision is None else int(precision)
    return None


def _classify(dialect: Dialect, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Map a reflected SQLAlchemy type onto a kind plus the limits values must respect."""
    out: dict[str, Any] = {"kind": "other"}
    for cls, classify in _CLASSIFIERS:
        if isinstance(type_, cls):
            out = classify(dialect, type_, extra)
            break
    if out["kind"] in ("datetime", "time"):
        fsp = _fsp(dialect, type_)
        if fsp is not None:
            out["fsp"] = fsp
    return out


def _pg_extras(engine: Engine, schema: str | None, name: str) -> dict[str, tuple[int, str]]:
    # a value, not SQL text: quoted for PostgreSQL, with no escaping for the driver
    qualified = (quote_identifier("postgresql", schema) + "." if schema else "") + quote_identifier("postgresql", name)
    sql = sa.text(
        "SELECT a.attname, a.atttypid::int, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a WHERE a.attrelid = to_regclass(:rel) "
        "AND a.attnum > 0 AND NOT a.attisdropped"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"rel": qualified}).all()
    return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}


_JSON_CHECK = re.compile(r"json_valid\((`(?:[^`]|``)+`|[^`)]+)\)", re.IGNORECASE)


def _mysql_extras(engine: Engine, schema: str | None, name: str) -> tuple[dict[str, str | None], set[str]]:
    schema_sql = ":schema" if schema else "DATABASE()"
    params = {"name": name, "schema": schema} if schema else {"name": name}
    with engine.connect() as conn:
        charsets = {
            str(r[0]): (str(r[1]) if r[1] is not None else None)
            for r in conn.execute(
                sa.text(
                    "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                    f"WHERE TABLE_SCHEMA = {schema_sql} AND TABLE_NAME = :name"
                ),
                params,
            )
        }
        json_cols: set[str] = set()
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
        for (clause,) in checks:
            match = _JSON_CHECK.search(str(clause))
            if match:
                found = match.group(1)
                json_cols.add(found[1:-1].replace("``", "`") if found.startswith("`") else found)
    return charsets, json_cols


def _mysql_name(reflected: str, known: set[str]) -> str:
    """The real name of a column SQLAlchemy reflected from MariaDB (``known``: the names the
    information schema lists)."""
    if reflected in known:
        return reflected
    plain = reflected.replace("``", "`")
    return plain if plain in known else reflected


def reflect_table(engine: Engine, table: str) -> TableInfo | None:
    """Reflect ``table`` (``name`` or ``schema.name``); None when it does not exist."""
    dialect = dialect_of(engine)
    schema, name = split_table_name(table)
    insp = sa.inspect(engine)
    if not insp.has_table(name, schema=schema):
        return None
    raw_columns = insp.get_columns(name, schema=schema)
    pk = tuple(insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
    uniques: list[tuple[str, ...]] = []
    for uc in insp.get_unique_constraints(name, schema=schema):
        uniques.append(tuple(c for c in uc["column_names"] if c is not None))
    for ix in insp.get_indexes(name, schema=schema):
        if ix.get("unique") and all(c is not None for c in ix["column_names"]):
            uniques.append(tuple(str(c) for c in ix["column_names"]))
    pg: dict[str, tuple[int, str]] = {}
    charsets: dict[str, str | None] = {}
    json_cols: set[str] = set()
    if dialect == "postgresql":
        pg = _pg_extras(engine, schema, name)
    elif dialect == "mysql":
        charsets, json_cols = _mysql_extras(engine, schema, name)
    if dialect == "mysql":  # SQLAlchemy reflects MariaDB names with their backticks still doubled
        known = set(charsets)
        raw_columns = [{**rc, "name": _mysql_name(str(rc["name"]), known)} for rc in raw_columns]
        pk = tuple(_mysql_name(c, known) for c in pk)
        uniques = [tuple(_mysql_name(c, known) for c in u) for u in uniques]
    columns: list[ColumnInfo] = []
    for rc in raw_columns:
        col_name = str(rc["name"])
        type_ = rc["type"]
        info = _classify(dialect, type_, {"json": col_name in json_cols})
        try:
            type_text = str(type_.compile(dialect=engine.dialect))
        except Exception:  # a type the dialect cannot render: show its class
            type_text = type(type_).__name__
        oid, fmt = pg.get(col_name, (None, None))
        columns.append(
            ColumnInfo(
                name=col_name,
                type_text=fmt or type_text,
                nullable=bool(rc.get("nullable", True)),
                computed=bool(rc.get("computed")),
                has_default=rc.get("default") is not None
                or bool(rc.get("autoincrement") is True)
                or bool(rc.get("identity")),
                charset=charsets.get(col_name),
                pg_oid=oid,
                pg_type=fmt,
                **info,
            )
        )
    return TableInfo(dialect, schema, name, tuple(columns), pk, tuple(uniques))


# --- the plan a copy step runs from ---------------------------------------------------------

_GROUPS: dict[str, str] = {
    "integer": "number",
    "boolean": "number",
    "decimal": "number",
    "float": "number",
    "string": "text",
    "json": "text",
    "uuid": "text",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "binary": "binary",
}


def compatible(source: Kind, target: Kind) -> bool:
    if "other" in (source, target):
        return True
    return _GROUPS[source] == _GROUPS[target]


def pair_kind(source: Kind, target: Kind) -> Kind:
    """The kind both sides are compared as, for the checksum and the pre-existing keys."""
    if source == target:
        return source
    if source == "other":
        return target
    if target == "other":
        return source
    kinds = {source, target}
    if "decimal" in kinds:
        return "decimal"
    if "float" in kinds:
        return "float"
    if kinds <= {"integer", "boolean"}:
        return "integer"
    if "json" in kinds:
        return "json"
    if "uuid" in kinds:
        return "uuid"
    return target


@dataclass(frozen=True)
class ColumnPair:
    source: ColumnInfo
    target: ColumnInfo
    kind: Kind  # the kind values are compared as


@dataclass(frozen=True)
class CopyPlan:
    spec: CopySpec
    source: TableInfo
    target: TableInfo
    columns: tuple[ColumnPair, ...]
    key_index: tuple[int, ...]  # positions of the key columns in ``columns``

    @property
    def key_pairs(self) -> tuple[ColumnPair, ...]:
        return tuple(self.columns[i] for i in self.key_index)

    @property
    def key_kinds(self) -> tuple[Kind, ...]:
        return tuple(p.kind for p in self.key_pairs)

    def reversed(self) -> CopyPlan:
        """The same plan with source and target swapped (revert copies rows back)."""
        cols = tuple(ColumnPair(p.target, p.source, p.kind) for p in self.columns)
        return CopyPlan(self.spec, self.target, self.source, cols, self.key_index)


def _side_label(spec: CopySpec, side: Side) -> str:
    service = spec.source if side == "source" else spec.target
    table = spec.table if side == "source" else spec.target_table
    return f"{side} service '{service}', table '{table}'"


def preflight_error(spec: CopySpec, side: Side, problem: str, hint: str) -> CopyPreflightError:
    return CopyPreflightError(f"copy '{spec.name}': {_side_label(spec, side)}: {problem}", hint)


def _names(cols: Sequence[ColumnInfo]) -> str:
    return ", ".join(c.name for c in cols) or "(none)"


def build_plan(spec: CopySpec, source: Engine, target: Engine) -> CopyPlan:
    """Reflect both tables and check everything that can be checked without moving rows."""
    sides: tuple[tuple[Side, Engine], ...] = (("source", source), ("target", target))
    for side, engine in sides:
        try:
            dialect_of(engine)
        except CopyPreflightError as exc:
            raise preflight_error(spec, side, exc.message, "use a supported database") from None
    src = reflect_table(source, spec.table)
    if src is None:
        raise preflight_error(
            spec,
            "source",
            "the table does not exist",
            "run the copy after the revision that creates it (its `after` list), "
            "or fix `table` in the [[copies]] entry",
        )
    tgt = reflect_table(target, spec.target_table)
    if tgt is None:
        raise preflight_error(
            spec,
            "target",
            "the table does not exist",
            "add the revision that creates it to the copy's `after` list, "
            "or fix `target_table` in the [[copies]] entry",
        )
    return plan_for_tables(spec, src, tgt)


def _column_names(spec: CopySpec, src: TableInfo, tgt: TableInfo) -> list[str]:
    if spec.columns is None:
        names = []
        for col in src.columns:
            other = tgt.find(col.name)
            if other is not None and not other.computed:
                names.append(col.name)
        if not names:
            raise preflight_error(
                spec,
                "target",
                f"no column is shared with the source table (source columns: "
                f"{_names(src.columns)}; target columns: {_names(tgt.columns)})",
                "list the columns to copy in `columns`",
            )
    else:
        names = list(spec.columns)
        if len(set(names)) != len(names):
            raise preflight_error(spec, "source", "a column is listed twice in `columns`", "list each column once")
    return names


def _pair(spec: CopySpec, src: TableInfo, tgt: TableInfo, name: str) -> ColumnPair:
    s = src.find(name)
    if s is None:
        raise preflight_error(
            spec,
            "source",
            f"column '{name}' does not exist (columns: {_names(src.columns)})",
            "fix `columns` in the [[copies]] entry",
        )
    t = tgt.find(name)
    if t is None:
        raise preflight_error(
            spec,
            "target",
            f"column '{name}' does not exist (columns: {_names(tgt.columns)})",
            "add the column in a target revision listed in `after`, or drop it from `columns`",
        )
    if t.computed:
        raise preflight_error(
            spec,
            "target",
            f"column '{t.name}' is computed by the database and cannot be written",
            "leave it out of `columns`",
        )
    if not compatible(s.kind, t.kind):
        raise preflight_error(
            spec,
            "target",
            f"column '{t.name}' is {t.type_text}, which cannot hold the source's "
            f"{s.type_text} ({s.kind} values into a {t.kind} column)",
            "change the target column's type, or leave the column out of `columns`",
        )
    return ColumnPair(s, t, pair_kind(s.kind, t.kind))


def _check_not_null(spec: CopySpec, tgt: TableInfo, pairs: Sequence[ColumnPair]) -> None:
    copied = {p.target.name for p in pairs}
    for col in tgt.columns:
        if col.name not in copied and not col.nullable and not col.has_default and not col.computed:
            raise preflight_error(
                spec,
                "target",
                f"column '{col.name}' is NOT NULL without a default and is not copied",
                "copy it (add it to `columns`), give it a default, or make it nullable",
            )


def _key_names(spec: CopySpec, src: TableInfo) -> list[str]:
    if spec.key is not None:
        key_names = list(spec.key)
        if not key_names:
            raise preflight_error(spec, "source", "`key` is empty", "name the key columns")
    else:
        key_names = list(src.primary_key)
        if not key_names:
            raise preflight_error(
                spec,
                "source",
                "the table has no primary key, so the copy has no key to batch and resume on",
                "set `key` in the [[copies]] entry to columns whose values are unique",
            )
    return key_names


def _key_index(spec: CopySpec, src: TableInfo, pairs: Sequence[ColumnPair], key_names: Sequence[str]) -> list[int]:
    key_index: list[int] = []
    for name in key_names:
        matches = [i for i, p in enumerate(pairs) if p.source.name == name]
        if not matches:
            s = src.find(name)
            if s is None:
                raise preflight_error(
                    spec,
                    "source",
                    f"key column '{name}' does not exist (columns: {_names(src.columns)})",
                    "fix `key` in the [[copies]] entry",
                )
            matches = [i for i, p in enumerate(pairs) if p.source.name == s.name]
        if not matches:
            raise preflight_error(
                spec,
                "source",
                f"key column '{name}' is not among the copied columns",
                "add it to `columns`: the key identifies copied rows in the target",
            )
        key_index.append(matches[0])
    if len(set(key_index)) != len(key_index):
        raise preflight_error(spec, "source", "a key column is listed twice", "list it once")
    for i in key_index:
        if pairs[i].kind in ("float", "json", "other"):
            raise preflight_error(
                spec,
                "source",
                f"key column '{pairs[i].source.name}' is {pairs[i].source.type_text}, which "
                "cannot be compared exactly across databases",
                "choose a key of integer, decimal, text, date/time, binary or uuid columns",
            )
    return key_index


def plan_for_tables(spec: CopySpec, src: TableInfo, tgt: TableInfo) -> CopyPlan:
    pairs = [_pair(spec, src, tgt, name) for name in _column_names(spec, src, tgt)]
    _check_not_null(spec, tgt, pairs)
    key_index = _key_index(spec, src, pairs, _key_names(spec, src))
    return CopyPlan(spec, src, tgt, tuple(pairs), tuple(key_index))


def key_declared_unique(table: TableInfo, key: Sequence[str]) -> bool:
    """True when the primary key or a unique constraint/index covers a subset of ``key``."""
    wanted = set(key)
    sets = [table.primary_key, *table.unique_sets]
    return any(s and set(s) <= wanted for s in sets)
