"""What a copy step knows about its two tables: reflection, column kinds and preflight checks.

Every identifier that later appears in SQL text comes from here: it was found in the reflected
table, and it is quoted with the dialect's own identifier preparer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.copy.columns import ColumnInfo, ColumnPair, Dialect, Kind
from orchestrator.copy.dialects import DialectImpl, impl_for, impl_for_sqlalchemy
from orchestrator.copy.errors import CopyPreflightError
from orchestrator.core.model import CopySpec

Side = Literal["source", "target"]

# --- tables ------------------------------------------------------------------------------------


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
        """Exact name first; then case-insensitively where the dialect folds names (MariaDB, SQLite)."""
        col = self.column(name)
        if col is not None or not impl_for(self.dialect).folds_names:
            return col
        folded = [c for c in self.columns if c.name.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


def dialect_of(engine: Engine) -> Dialect:
    impl = impl_for_sqlalchemy(engine.dialect.name)
    if impl is None:
        raise CopyPreflightError(
            f"copy steps support PostgreSQL, MySQL/MariaDB and SQLite; this database is {engine.dialect.name}",
        )
    return impl.name


def quote_identifier(dialect: Dialect, name: str) -> str:
    """``name`` quoted for SQL text in ``dialect``; see ``DialectImpl.quote``."""
    return impl_for(dialect).quote(name)


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


def _int_range(impl: DialectImpl, type_: Any) -> tuple[int, int]:
    bits = impl.integer_bits
    if bits is None:
        bits = _INT_BITS.get(type(type_).__name__.upper(), 0)
        if not bits:
            bits = 16 if isinstance(type_, sa.SmallInteger) else 32
            if isinstance(type_, sa.BigInteger):
                bits = 64
    if getattr(type_, "unsigned", False):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _integer(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    cls_name = type(type_).__name__.upper()
    spelled_bool = impl.tinyint1_boolean and cls_name == "TINYINT" and getattr(type_, "display_width", 0) == 1
    lo, hi = _int_range(impl, type_)
    return {"kind": "boolean" if spelled_bool else "integer", "int_min": lo, "int_max": hi}


def _decimal(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "decimal", "precision": type_.precision}
    out["scale"] = type_.scale if type_.precision is not None else None
    if impl.default_decimal is not None and type_.precision is None:
        out["precision"], out["scale"] = impl.default_decimal
    if out["precision"] is not None and out["scale"] is None:
        out["scale"] = 0
    return out


def _binary(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "binary"}
    if impl.binary_lengths:
        cls_name = type(type_).__name__.upper()
        out["max_length"] = impl.text_type_bytes.get(cls_name, getattr(type_, "length", None))
    if impl.declared_lengths:
        out["length_in_bytes"] = True
    return out


def _string(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "json" if extra.get("json") else "string"}
    if impl.declared_lengths:
        cls_name = type(type_).__name__.upper()
        length = getattr(type_, "length", None)
        if cls_name in impl.text_type_bytes and not length:
            out["max_length"] = impl.text_type_bytes[cls_name]
            out["length_in_bytes"] = True
        else:
            out["max_length"] = length
    return out


def _datetime(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "datetime", "timezone": bool(getattr(type_, "timezone", False)) and impl.timezone_datetimes}


def _just(kind: Kind) -> _Classifier:
    return lambda impl, type_, extra: {"kind": kind}


_Classifier = Callable[[DialectImpl, Any, dict[str, Any]], dict[str, Any]]

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


def _classify(impl: DialectImpl, type_: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Map a reflected SQLAlchemy type onto a kind plus the limits values must respect."""
    out: dict[str, Any] = {"kind": "other"}
    for cls, classify in _CLASSIFIERS:
        if isinstance(type_, cls):
            out = classify(impl, type_, extra)
            break
    if out["kind"] in ("datetime", "time"):
        fsp = impl.fractional_digits(type_)
        if fsp is not None:
            out["fsp"] = fsp
    return out


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
    impl = impl_for(dialect)
    extras = impl.catalog_extras(engine, schema, name)

    def real(c: str) -> str:
        return impl.real_column_name(c, extras)

    raw_columns = [{**rc, "name": real(str(rc["name"]))} for rc in raw_columns]
    pk = tuple(real(c) for c in pk)
    uniques = [tuple(real(c) for c in u) for u in uniques]
    columns: list[ColumnInfo] = []
    for rc in raw_columns:
        col_name = str(rc["name"])
        type_ = rc["type"]
        info = _classify(impl, type_, {"json": col_name in extras.json_columns})
        try:
            type_text = str(type_.compile(dialect=engine.dialect))
        except Exception:  # a type the dialect cannot render: show its class
            type_text = type(type_).__name__
        oid, fmt = extras.pg_types.get(col_name, (None, None))
        columns.append(
            ColumnInfo(
                name=col_name,
                type_text=fmt or type_text,
                nullable=bool(rc.get("nullable", True)),
                computed=bool(rc.get("computed")),
                has_default=rc.get("default") is not None
                or bool(rc.get("autoincrement") is True)
                or bool(rc.get("identity")),
                charset=extras.charsets.get(col_name),
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
