"""Values in transit: per-column converters, the canonical form behind the checksum, and the
JSON encoding of keys kept in checkpoints.

A converter takes a value as the source driver returns it and gives what the target driver must
receive, or raises :class:`ValueProblem` when the target column cannot hold the value exactly
(a 4-byte character in a utf8mb3 column, a string longer than the column, a number out of range,
more fractional digits than the column keeps). Nothing is truncated or rounded on the way.

Timestamps: an aware value written to a column without a time zone is stored in UTC; a naive
value written to a column with a time zone (PostgreSQL ``timestamptz``) is taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from hashlib import md5
from typing import Any

from orchestrator.copy.dialects import DialectImpl, impl_for
from orchestrator.copy.schema import ColumnInfo, Dialect, Kind

Converter = Callable[[Any], Any]

_CTX = decimal.Context(prec=2000, Emax=999_999, Emin=-999_999)
_UTC = dt.UTC


class ValueProblem(Exception):
    """A value the target column cannot hold exactly; the message says why."""


# --- parsing helpers ---------------------------------------------------------------------------


def to_decimal(v: Any) -> Decimal:
    t = type(v)
    if t is Decimal:
        return v  # type: ignore[no-any-return]
    if t is int or t is bool:
        return Decimal(int(v))
    if t is float:
        return Decimal(repr(v))
    if t is str:
        try:
            return Decimal(v.strip())
        except decimal.InvalidOperation:
            raise ValueProblem(f"{_show(v)} is not a number") from None
    raise ValueProblem(f"a {t.__name__} value is not a number")


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v  # type: ignore[no-any-return]
    if t is bool:
        return int(v)
    if t is Decimal or t is float:
        if (t is float and not math.isfinite(v)) or (t is Decimal and not v.is_finite()):
            raise ValueProblem(f"{v} is not an integer")
        if v != int(v):
            raise ValueProblem(f"{v} has a fractional part and the column holds integers")
        return int(v)
    if t is str:
        try:
            return int(v.strip())
        except ValueError:
            raise ValueProblem(f"{_show(v)} is not an integer") from None
    raise ValueProblem(f"a {t.__name__} value is not an integer")


def _to_datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, str):
        try:
            return dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueProblem(f"{_show(v)} is not a timestamp") from None
    if isinstance(v, dt.date):
        raise ValueProblem(f"{v} is a date, not a timestamp")
    raise ValueProblem(f"a {type(v).__name__} value is not a timestamp")


def _to_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        if v.time() != dt.time(0) or v.tzinfo is not None:
            raise ValueProblem(f"{v} has a time of day and the column holds dates")
        return v.date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str):
        text = v.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        return _to_date(_to_datetime(text))
    raise ValueProblem(f"a {type(v).__name__} value is not a date")


def _to_time(v: Any) -> dt.time:
    if isinstance(v, dt.time):
        return v
    if isinstance(v, dt.timedelta):
        if v < dt.timedelta(0) or v >= dt.timedelta(days=1):
            raise ValueProblem(f"{v} is not a time of day")
        return (dt.datetime.min + v).time()
    if isinstance(v, str):
        try:
            return dt.time.fromisoformat(v.strip())
        except ValueError:
            raise ValueProblem(f"{_show(v)} is not a time of day") from None
    raise ValueProblem(f"a {type(v).__name__} value is not a time of day")


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ValueProblem(f"a {type(v).__name__} value is not binary data")


def _to_uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    try:
        if isinstance(v, bytes | bytearray | memoryview) and len(v) == 16:
            return uuid.UUID(bytes=bytes(v))
        return uuid.UUID(str(v).strip())
    except ValueError:
        raise ValueProblem(f"{_show(v)} is not a UUID") from None


def _to_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        raise ValueProblem("a boolean value is not text")
    if isinstance(v, int | float | Decimal | uuid.UUID):
        return str(v)
    raise ValueProblem(f"a {type(v).__name__} value is not text")


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8")
    return json.dumps(v, ensure_ascii=False)


# --- writers: logical value -> what the target driver receives ----------------------------------


def _int_writer(col: ColumnInfo) -> Converter:
    lo = col.int_min if col.int_min is not None else -(2**63)
    hi = col.int_max if col.int_max is not None else 2**63 - 1

    def conv(v: Any) -> Any:
        n = v if type(v) is int else _to_int(v)
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
            raise ValueProblem(f"{_show(v)} is not a boolean (only true/false, 1/0)")
        return int(b) if as_int else b

    return conv


def check_decimal(d: Decimal, col: ColumnInfo, allow_special: bool) -> Decimal:
    if not d.is_finite():
        if allow_special and not d.is_snan():
            return d
        raise ValueProblem(f"{d} cannot be stored in {col.type_text}")
    scale = col.scale
    if scale is not None and d.as_tuple().exponent < -scale:  # type: ignore[operator]
        rounded = d.quantize(Decimal(1).scaleb(-scale), context=_CTX)
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
                raise ValueProblem(f"{_show(v)} is not a number") from None
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
    base = json_text if is_json else _to_str

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
        b = v if type(v) is bytes else _to_bytes(v)
        if limit is not None and len(b) > limit:
            raise ValueProblem(f"{len(b)} bytes are more than {col.type_text} holds ({limit})")
        return b

    return conv


def _datetime_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    aware_target = col.timezone
    step = 10 ** (6 - col.fsp) if col.fsp < 6 else 1
    as_text = impl.temporal_as_text

    def conv(v: Any) -> Any:
        d = v if type(v) is dt.datetime else _to_datetime(v)
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
        d = v if type(v) is dt.date else _to_date(v)
        return d.isoformat() if as_text else d

    return conv


def _time_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    step = 10 ** (6 - col.fsp) if col.fsp < 6 else 1
    as_text = impl.temporal_as_text

    def conv(v: Any) -> Any:
        t = _to_time(v)
        if step != 1 and t.microsecond % step:
            raise ValueProblem(f"{t} has more fractional-second digits than {col.type_text} keeps")
        return t.isoformat("microseconds") if as_text else t

    return conv


def _uuid_writer(impl: DialectImpl, col: ColumnInfo) -> Converter:
    native = impl.native_uuid and col.kind == "uuid"

    def conv(v: Any) -> Any:
        u = _to_uuid(v)
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
            return lambda v: _string_writer(impl, col)(str(_to_uuid(v)))
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


# --- canonical form: what the checksum hashes -------------------------------------------------


def canon_decimal(v: Any) -> str:
    try:
        d = to_decimal(v)
    except ValueProblem:
        return str(v)
    if not d.is_finite():
        return str(d)
    if not d:
        return "0"
    return format(d.normalize(_CTX), "f")


def _canon_int(v: Any) -> str:
    t = type(v)
    if t is int:
        return str(v)
    if t is bool:
        return "1" if v else "0"
    try:
        return str(_to_int(v))
    except ValueProblem:
        return canon_decimal(v)


def _canon_float(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    # -0.0 equals 0.0, and MariaDB cannot hold it (its DOUBLE stores and returns 0): one form
    return "0.0" if f == 0 else repr(f)


def _canon_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "surrogateescape")
    return str(v)


def _json_dump(obj: Any) -> str:
    if isinstance(obj, dict):
        items = sorted(obj.items())
        return "{" + ",".join(json.dumps(k) + ":" + _json_dump(v) for k, v in items) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(_json_dump(v) for v in obj) + "]"
    if isinstance(obj, bool) or obj is None:
        return json.dumps(obj)
    if isinstance(obj, int | Decimal | float):
        return canon_decimal(obj)
    return json.dumps(obj, ensure_ascii=True)


def _canon_json(v: Any) -> str:
    if isinstance(v, str | bytes | bytearray):
        try:
            obj = json.loads(v, parse_float=Decimal)
        except ValueError:
            return _canon_str(v)
    else:
        obj = v
    return _json_dump(obj)


def _canon_datetime(v: Any) -> str:
    try:
        d = _to_datetime(v)
    except ValueProblem:
        return str(v)
    if d.tzinfo is not None:
        d = d.astimezone(_UTC).replace(tzinfo=None)
    return d.isoformat(" ", "microseconds")


def _canon_date(v: Any) -> str:
    try:
        return _to_date(v).isoformat()
    except ValueProblem:
        return str(v)


def _canon_time(v: Any) -> str:
    try:
        return _to_time(v).isoformat("microseconds")
    except ValueProblem:
        return str(v)


def _canon_binary(v: Any) -> str:
    try:
        return _to_bytes(v).hex()
    except ValueProblem:
        return str(v)


def _canon_uuid(v: Any) -> str:
    try:
        return str(_to_uuid(v))
    except ValueProblem:
        return str(v)


_CANON: dict[str, Callable[[Any], str]] = {
    "integer": _canon_int,
    "boolean": _canon_int,
    "decimal": canon_decimal,
    "float": _canon_float,
    "string": _canon_str,
    "json": _canon_json,
    "datetime": _canon_datetime,
    "date": _canon_date,
    "time": _canon_time,
    "binary": _canon_binary,
    "uuid": _canon_uuid,
    "other": _canon_str,
}


def canon_function(kind: Kind) -> Callable[[Any], str]:
    return _CANON[kind]


def canon_line(canon: Sequence[str | None]) -> str:
    """The canonical line of a row: ``N`` for NULL, else ``<length>:<text>``, joined by commas.

    PostgreSQL and MariaDB build the same line in SQL (see blocks.py), so either side of a
    comparison can be computed inside its database or here."""
    return ",".join("N" if v is None else f"{len(v)}:{v}" for v in canon)


def line_digest(line: str) -> int:
    """The first 60 bits of the line's MD5, as databases compute them with md5()/MD5()."""
    return int(md5(line.encode("utf-8", "surrogatepass")).hexdigest()[:15], 16)


CanonKey = tuple[str | None, ...]


def canonical(funcs: Sequence[Callable[[Any], str]], values: Sequence[Any]) -> CanonKey:
    """Each value in canonical form, None staying None."""
    return tuple(None if v is None else f(v) for f, v in zip(funcs, values, strict=True))


def converted(convs: Sequence[Converter | None], values: Sequence[Any]) -> tuple[Any, ...]:
    """Each value as a driver takes it (a converter of None keeps the value), None staying None."""
    return tuple(v if f is None or v is None else f(v) for f, v in zip(convs, values, strict=True))


class RowHasher:
    """Order-independent digest of rows: the sum of the 60-bit MD5 prefixes of each row's
    canonical line. Two tables agree when their counts and sums agree."""

    def __init__(self, kinds: Sequence[Kind]):
        self.funcs = [canon_function(k) for k in kinds]
        self.count = 0
        self.total = 0

    def canon(self, row: Sequence[Any]) -> tuple[str | None, ...]:
        return canonical(self.funcs, row)

    def add(self, row: Sequence[Any]) -> None:
        self.add_canon(self.canon(row))

    def add_canon(self, canon: tuple[str | None, ...]) -> None:
        self.count += 1
        self.total += line_digest(canon_line(canon))

    @property
    def hexdigest(self) -> str:
        return f"{self.total:x}"


def encode_value(v: Any) -> Any:
    if v is None or type(v) is int or type(v) is str:
        return v
    if isinstance(v, bool):
        return {"$": "bool", "v": v}
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return {"$": "float", "v": repr(v)}
    if isinstance(v, Decimal):
        return {"$": "decimal", "v": str(v)}
    if isinstance(v, dt.datetime):
        return {"$": "datetime", "v": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$": "date", "v": v.isoformat()}
    if isinstance(v, dt.time):
        return {"$": "time", "v": v.isoformat()}
    if isinstance(v, dt.timedelta):
        return {"$": "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$": "bytes", "v": bytes(v).hex()}
    if isinstance(v, uuid.UUID):
        return {"$": "uuid", "v": str(v)}
    raise TypeError(f"cannot keep a {type(v).__name__} key value in a checkpoint")


def decode_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    tag, data = v["$"], v["v"]
    if tag == "bool":
        return bool(data)
    if tag == "float":
        return float(data)
    if tag == "decimal":
        return Decimal(data)
    if tag == "datetime":
        return dt.datetime.fromisoformat(data)
    if tag == "date":
        return dt.date.fromisoformat(data)
    if tag == "time":
        return dt.time.fromisoformat(data)
    if tag == "timedelta":
        return dt.timedelta(days=data[0], seconds=data[1], microseconds=data[2])
    if tag == "bytes":
        return bytes.fromhex(data)
    if tag == "uuid":
        return uuid.UUID(data)
    raise ValueError(f"unknown key value tag {tag!r}")
