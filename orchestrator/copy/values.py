"""What values mean, whichever database they come from: reading them as numbers, timestamps,
bytes... (``to_decimal``, ``to_datetime``...), the canonical form behind the checksum, and the
JSON encoding of keys kept in checkpoints. Nothing here depends on a dialect; the per-column
converters for the target's driver are in ``convert``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from hashlib import md5
from typing import Any

from orchestrator.copy.columns import Kind

Converter = Callable[[Any], Any]

DECIMAL_CONTEXT = decimal.Context(prec=2000, Emax=999_999, Emin=-999_999)
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
            raise ValueProblem(f"{show(v)} is not a number") from None
    raise ValueProblem(f"a {t.__name__} value is not a number")


def to_int(v: Any) -> int:
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
            raise ValueProblem(f"{show(v)} is not an integer") from None
    raise ValueProblem(f"a {t.__name__} value is not an integer")


def to_datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, str):
        try:
            return dt.datetime.fromisoformat(v.strip())
        except ValueError:
            raise ValueProblem(f"{show(v)} is not a timestamp") from None
    if isinstance(v, dt.date):
        raise ValueProblem(f"{v} is a date, not a timestamp")
    raise ValueProblem(f"a {type(v).__name__} value is not a timestamp")


def to_date(v: Any) -> dt.date:
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
        return to_date(to_datetime(text))
    raise ValueProblem(f"a {type(v).__name__} value is not a date")


def to_time(v: Any) -> dt.time:
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
            raise ValueProblem(f"{show(v)} is not a time of day") from None
    raise ValueProblem(f"a {type(v).__name__} value is not a time of day")


def to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ValueProblem(f"a {type(v).__name__} value is not binary data")


def to_uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    try:
        if isinstance(v, bytes | bytearray | memoryview) and len(v) == 16:
            return uuid.UUID(bytes=bytes(v))
        return uuid.UUID(str(v).strip())
    except ValueError:
        raise ValueProblem(f"{show(v)} is not a UUID") from None


def to_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        raise ValueProblem("a boolean value is not text")
    if isinstance(v, int | float | Decimal | uuid.UUID):
        return str(v)
    raise ValueProblem(f"a {type(v).__name__} value is not text")


def show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8")
    return json.dumps(v, ensure_ascii=False)


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
    return format(d.normalize(DECIMAL_CONTEXT), "f")


def _canon_int(v: Any) -> str:
    t = type(v)
    if t is int:
        return str(v)
    if t is bool:
        return "1" if v else "0"
    try:
        return str(to_int(v))
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
        d = to_datetime(v)
    except ValueProblem:
        return str(v)
    if d.tzinfo is not None:
        d = d.astimezone(_UTC).replace(tzinfo=None)
    return d.isoformat(" ", "microseconds")


def _canon_date(v: Any) -> str:
    try:
        return to_date(v).isoformat()
    except ValueProblem:
        return str(v)


def _canon_time(v: Any) -> str:
    try:
        return to_time(v).isoformat("microseconds")
    except ValueProblem:
        return str(v)


def _canon_binary(v: Any) -> str:
    try:
        return to_bytes(v).hex()
    except ValueProblem:
        return str(v)


def _canon_uuid(v: Any) -> str:
    try:
        return str(to_uuid(v))
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
