"""Per-column converters: a value as the source driver returns it, turned into what the target
driver must receive.

A converter raises :class:`ValueProblem` when the target column cannot hold the value exactly
(a 4-byte character in a utf8mb3 column, a string longer than the column, a number out of range,
more fractional digits than the column keeps). Nothing is truncated or rounded on the way.

Timestamps: an aware value written to a column without a time zone is stored in UTC; a naive
value written to a column with a time zone (PostgreSQL ``timestamptz``) is taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from orchestrator.copy.columns import ColumnInfo, Dialect, Kind
from orchestrator.copy.dialects import DialectImpl, impl_for
from orchestrator.copy.values import (
    DECIMAL_CONTEXT,
    ValueProblem,
    json_text,
    show,
    to_bytes,
    to_date,
    to_datetime,
    to_decimal,
    to_int,
    to_str,
    to_time,
    to_uuid,
)

Converter = Callable[[Any], Any]

_UTC = dt.UTC


def _int_writer(col: ColumnInfo) -> Converter:
    lo = col.int_min if col.int_min is not None else -(2**63)
    hi = col.int_max if col.int_max is not None else 2**63 - 1

    def conv(v: Any) -> Any:
        n = v if type(v) is int else to_int(v)
        if n < lo or n > hi:
            raise ValueProblem(f"{n} is out of range for {col.type_text} ({lo} to {hi})")
        return n

    return conv


def _bool_writer(impl: DialectImpl) -> Converter:
    as_int = not impl.native_boolean

    def conv(v: Any) -> Any:
        if type(v) is bool:
            b = v
        elif isinstance(v, int | Decimal | float) and v in (0, 1):
            b = bool(v)
        elif isinstance(v, str) and v.strip().lower() in ("t", "true", "1", "f", "false", "0"):
            b = v.strip().lower() in ("t", "true", "1")
        else:
            raise ValueProblem(f"{show(v)} is not a boolean (only true/false, 1/0)")
        return int(b) if as_int else b

    return conv


def check_decimal(d: Decimal, col: ColumnInfo, allow_special: bool) -> Decimal:
    if not d.is_finite():
        if allow_special and not d.is_snan():
            return d
        raise ValueProblem(f"{d} cannot be stored in {col.type_text}")
    scale = col.scale
    if scale is not None and d.as_tuple().exponent < -scale:  # type: ignore[operator]
        rounded = d.quantize(Decimal(1).scaleb(-scale), context=DECIMAL_CONTEXT)
        if rounded != d:
            raise ValueProblem(f"{d} has more than {scale} digits after the decimal point ({col.type_text})")
    if col.precision is not None and d:
        int_digits = d.adjusted() + 1
        if int_digits > col.precision - (scale or 0):
            raise ValueProblem(f"{d} is too large for {col.type_text}")
    return d


def _decimal_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    if impl.decimals_as_float:

        def conv_sqlite(v: Any) -> Any:
            d = check_decimal(to_decimal(v), col, allow_special=False)
            if d == d.to_integral_value() and -(2**63) <= d < 2**63:
                return int(d)
            f = float(d)
            if Decimal(repr(f)) != d:
                raise ValueProblem(
                    f"{d} has more significant digits than SQLite keeps for {col.type_text} "
                    "(it stores decimals as 64-bit floating point)"
                )
            return f

        return conv_sqlite
    allow_special = impl.special_decimals

    def conv(v: Any) -> Any:
        return check_decimal(to_decimal(v), col, allow_special)

    return conv


def _float_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    single = (col.pg_type or "").lower() == "real" or col.type_text.upper().startswith("FLOAT")
    single = single and impl.single_floats
    finite_only = impl.finite_floats_only

    def conv(v: Any) -> Any:
        if type(v) is float:
            f = v
        elif isinstance(v, Decimal):
            f = float(v)
            if v.is_finite() and Decimal(repr(f)) != v:
                raise ValueProblem(f"{v} cannot be represented exactly as a floating-point value")
        elif isinstance(v, int):
            f = float(v)
            if int(f) != v:
                raise ValueProblem(f"{v} cannot be represented exactly as a floating-point value")
        elif isinstance(v, str):
            try:
                f = float(v)
            except ValueError:
                raise ValueProblem(f"{show(v)} is not a number") from None
        else:
            raise ValueProblem(f"a {type(v).__name__} value is not a number")
        if not math.isfinite(f) and finite_only:
            raise ValueProblem(f"{f} cannot be stored in MariaDB/MySQL")
        if single and math.isfinite(f) and struct.unpack("f", struct.pack("f", f))[0] != f:
            raise ValueProblem(f"{f!r} loses precision in single-precision {col.type_text}")
        return f

    return conv


_CHARSET_CODECS = {"latin1": "cp1252", "ascii": "ascii", "utf8mb3": "", "utf8": ""}


def _string_writer(impl: DialectImpl, col: ColumnInfo, *, is_json: bool = False) -> Converter:
    limit = col.max_length
    in_bytes = col.length_in_bytes
    no_nul = impl.rejects_nul
    charset = (col.charset or "").lower() if impl.column_charsets else ""
    bmp_only = charset in ("utf8mb3", "utf8")
    codec = _CHARSET_CODECS.get(charset, "")
    base = json_text if is_json else to_str

    def conv(v: Any) -> Any:
        s = v if type(v) is str else base(v)
        if limit is not None:
            size = len(s.encode("utf-8")) if in_bytes else len(s)
            if size > limit:
                unit = "bytes" if in_bytes else "characters"
                raise ValueProblem(f"a value of {size} {unit} is longer than {col.type_text} allows ({limit})")
        if no_nul and "\x00" in s:
            raise ValueProblem("PostgreSQL text cannot contain the NUL character")
        if bmp_only and not s.isascii() and any(ord(c) > 0xFFFF for c in s):
            bad = next(c for c in s if ord(c) > 0xFFFF)
            raise ValueProblem(
                f"the character {bad!r} (U+{ord(bad):X}) needs 4 bytes in UTF-8 and the column's "
                f"character set {col.charset} holds at most 3"
            )
        if codec and not s.isascii():
            try:
                s.encode(codec)
            except UnicodeEncodeError as exc:
                raise ValueProblem(
                    f"the character {s[exc.start]!r} has no encoding in the column's character set {col.charset}"
                ) from None
        return s

    return conv


def _binary_writer(col: ColumnInfo) -> Converter:
    limit = col.max_length

    def conv(v: Any) -> Any:
        b = v if type(v) is bytes else to_bytes(v)
        if limit is not None and len(b) > limit:
            raise ValueProblem(f"{len(b)} bytes are more than {col.type_text} holds ({limit})")
        return b

    return conv


def _datetime_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    aware_target = col.timezone
    step = 10 ** (6 - col.fsp) if col.fsp < 6 else 1
    as_text = impl.temporal_as_text

    def conv(v: Any) -> Any:
        d = v if type(v) is dt.datetime else to_datetime(v)
        if aware_target:
            if d.tzinfo is None:
                d = d.replace(tzinfo=_UTC)
        elif d.tzinfo is not None:
            d = d.astimezone(_UTC).replace(tzinfo=None)
        if step != 1 and d.microsecond % step:
            raise ValueProblem(f"{d.isoformat(' ')} has more fractional-second digits than {col.type_text} keeps")
        if as_text:
            return d.isoformat(" ", "microseconds")
        return d

    return conv


def _date_writer(impl: DialectImpl) -> Converter:
    as_text = impl.temporal_as_text

    def conv(v: Any) -> Any:
        d = v if type(v) is dt.date else to_date(v)
        return d.isoformat() if as_text else d

    return conv


def _time_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    step = 10 ** (6 - col.fsp) if col.fsp < 6 else 1
    as_text = impl.temporal_as_text

    def conv(v: Any) -> Any:
        t = to_time(v)
        if step != 1 and t.microsecond % step:
            raise ValueProblem(f"{t} has more fractional-second digits than {col.type_text} keeps")
        return t.isoformat("microseconds") if as_text else t

    return conv


def _uuid_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    native = impl.native_uuid and col.kind == "uuid"

    def conv(v: Any) -> Any:
        u = to_uuid(v)
        return u if native else str(u)

    return conv


def make_writer(dialect: Dialect, col: ColumnInfo, kind: Kind) -> Converter | None:
    """The converter for values written into ``col``; None when values pass through as they are.

    ``kind`` is the kind both sides are compared as (a uuid compared as text is written as text).
    """
    impl = impl_for(dialect)
    k = col.kind
    if k == "integer":
        return _int_writer(col)
    if k == "boolean":
        return _bool_writer(impl)
    if k == "decimal":
        return _decimal_writer(impl, col)
    if k == "float":
        return _float_writer(impl, col)
    if k == "string":
        if kind == "uuid":
            return lambda v: _string_writer(impl, col)(str(to_uuid(v)))
        return _string_writer(impl, col)
    if k == "json":
        return _string_writer(impl, col, is_json=True)
    if k == "datetime":
        return _datetime_writer(impl, col)
    if k == "date":
        return _date_writer(impl)
    if k == "time":
        return _time_writer(impl, col)
    if k == "binary":
        return _binary_writer(col)
    if k == "uuid":
        return _uuid_writer(impl, col)
    return None


def converted(convs: Sequence[Converter | None], values: Sequence[Any]) -> tuple[Any, ...]:
    """Each value as a driver takes it (a converter of None keeps the value), None staying None."""
    return tuple(v if f is None or v is None else f(v) for f, v in zip(convs, values, strict=True))
