"""Column kinds and column descriptions: the plain values reflection (``schema``) builds and the
dialect classes, the SQL builders and the converters read.

No I/O and no per-dialect behaviour, so that ``dialects/`` can import it and ``schema`` can ask
``dialects/`` in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
class ColumnPair:
    source: ColumnInfo
    target: ColumnInfo
    kind: Kind  # the kind values are compared as
