"""SQL the databases run for the copy, so rows need not become Python objects:

* the canonical line of a row (what the checksum hashes) computed by PostgreSQL or MariaDB,
  character for character the same as :func:`orchestrator.copy.values.canon_line`;
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

from orchestrator.copy.columns import ColumnInfo, ColumnPair, Kind
from orchestrator.copy.dialects import TextRender, impl_for
from orchestrator.copy.streams import TableSql

__all__ = ["TextRender", "canon_exprs", "copy_text_render", "digest_sql", "text_block_sql", "text_lines_sql"]


def canon_exprs(sql: TableSql, columns: Sequence[ColumnInfo], kinds: Sequence[Kind]) -> list[str] | None:
    """Each column's canonical text (NULL for NULL) as the database computes it, or None when a
    column has no exact SQL form here (then Python computes it)."""
    impl = impl_for(sql.dialect)
    parts = [impl.canon_expr(sql, c, k) for c, k in zip(columns, kinds, strict=True)]
    return None if any(p is None for p in parts) else [p for p in parts if p is not None]


def digest_sql(sql: TableSql, columns: Sequence[ColumnInfo], kinds: Sequence[Kind]) -> str | None:
    """``SELECT count, sum`` of the 60-bit MD5 prefixes of every row's canonical line, or None
    when a column has no exact SQL form here (then Python computes the same lines)."""
    parts = canon_exprs(sql, columns, kinds)
    if parts is None:
        return None
    return impl_for(sql.dialect).digest_sql(sql, parts)


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


def copy_text_render(sql: TableSql, pairs: Sequence[ColumnPair]) -> TextRender | None:
    """The source database's rendering of each row as a PostgreSQL COPY text line, or None when
    a column is not eligible."""
    impl = impl_for(sql.dialect)
    fields = [impl.text_field(sql, p) for p in pairs]
    if not fields or any(f is None for f in fields):
        return None
    ok = [f for f in fields if f is not None]
    marks = " + ".join(f.marks for f in ok if f.marks is not None) or "0"
    plain = impl.text_line([f.plain for f in ok])
    escaped = impl.text_line([f.escaped for f in ok])
    return TextRender(sql.dialect, plain, escaped, marks, len(ok), all(f.exact for f in ok))


def text_block_sql(sql: TableSql, render: TextRender, where: str, key: Sequence[str], *, escaped: bool) -> str:
    """One query giving a block of rows as (their COPY text lines joined by newlines, as bytes;
    the number of rows; the backslashes the rendering wrote). ``where`` selects the rows; the
    lines come in key order."""
    line = render.escaped if escaped else render.plain
    return impl_for(sql.dialect).text_block_sql(sql, line, render.marks, where, sql.order(key))


def text_lines_sql(sql: TableSql, render: TextRender, where: str, key: Sequence[str]) -> str:
    """The escaped COPY text line of each row, one result row per source row, in key order."""
    kind = impl_for(sql.dialect).lines_cast
    return f"SELECT CAST({render.escaped} AS {kind}) FROM {sql.name}{where} ORDER BY {sql.order(key)}"
