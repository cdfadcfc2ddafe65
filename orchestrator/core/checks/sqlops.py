"""The operations a revision performs, and the ones read from SQL text (``op.execute``).

``source`` reads a revision file into ``Op`` values; the statements of SQL text become
operations here, by regular expressions over each statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

OpKind = Literal[
    "create_table", "drop_table", "rename_table", "add_column", "drop_column", "alter_column", "update", "copy_rows"
]

_IDENT = r"[`\"\[]?([\w.$]+)[`\"\]]?"
_SQL_DROP_TABLE = re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _IDENT, re.I)
_SQL_ALTER = re.compile(r"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _IDENT + r"\s+(.*)", re.I | re.S)
_SQL_DROP_COLUMN = re.compile(r"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?" + _IDENT, re.I)
_SQL_NOT_COLUMN = {"constraint", "index", "primary", "foreign", "check", "key", "default", "partition"}
_SQL_RENAME_TABLE = re.compile(r"^RENAME\s+TO\s+" + _IDENT, re.I)
_SQL_RENAME_COLUMN = re.compile(r"^RENAME\s+(?:COLUMN\s+)?" + _IDENT + r"\s+TO\s+" + _IDENT, re.I)
_SQL_ALTER_COLUMN = re.compile(r"^(?:ALTER|MODIFY|CHANGE)\s+(?:COLUMN\s+)?" + _IDENT + r"\s+(.*)", re.I | re.S)
_SQL_CREATE_TABLE = re.compile(r"^CREATE\s+(?:TEMP(?:ORARY)?\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT, re.I)
_SQL_INSERT_SELECT = re.compile(
    r"^INSERT\s+(?:OR\s+\w+\s+)?INTO\s+" + _IDENT + r".*?\bSELECT\b.*?\bFROM\s+" + _IDENT, re.I | re.S
)
_SQL_UPDATE = re.compile(r"^UPDATE\s+(.*?)\bSET\b(.*)$", re.I | re.S)
_SQL_UPDATE_TABLE = re.compile(r"^(?:ONLY\s+)?" + _IDENT + r"(?:\s+(?:AS\s+)?\w+)?$", re.I)
_SQL_SET_END = re.compile(r"\b(?:WHERE|FROM|RETURNING)\b", re.I)
_SQL_ASSIGNED = re.compile(r"(?:^|,)\s*(?:\w+\.)?[`\"\[]?(\w+)[`\"\]]?\s*=(?!=)")


def computed(name: str | None) -> bool:
    """Whether a name read from a revision is computed at run time (kept as ``<source>``)."""
    return name is not None and len(name) > 1 and name.startswith("<") and name.endswith(">")


@dataclass(frozen=True)
class Op:
    """One schema operation of ``upgrade()``, with the lines its call spans."""

    kind: OpKind
    table: str  # "?" when the name is not a literal
    line: int
    end_line: int
    column: str | None = None
    new_name: str | None = None  # rename_table / alter_column(new_column_name=...)
    columns: tuple[str, ...] = ()  # create_table
    source: str | None = None  # copy_rows: the table the rows are read from
    type_change: bool = False  # alter_column(type_=...)
    not_null: bool = False  # alter_column(nullable=False) on a nullable column, add_column NOT NULL w/o default
    text: str = ""  # short rendering, for messages

    @property
    def lines(self) -> range:
        return range(self.line, self.end_line + 1)

    @property
    def computed(self) -> bool:
        """Whether a name this operation acts on is computed at run time, not a literal."""
        return any(computed(n) for n in (self.table, self.column, self.new_name))


def sql_updates(stmt: str, line: int, end: int) -> Iterator[Op]:
    """The columns ``UPDATE table SET a = ..., b = ... WHERE ...`` sets (table "" if not plain)."""
    m = _SQL_UPDATE.match(stmt)
    if not m:
        return
    t = _SQL_UPDATE_TABLE.match(m.group(1).strip())
    table = t.group(1) if t else ""
    assignments = _SQL_SET_END.split(m.group(2), maxsplit=1)[0]
    for column in _SQL_ASSIGNED.findall(assignments):
        yield Op("update", table, line, end, column=column, text=stmt[:80])


def _sql_plain(stmt: str, line: int, end: int) -> Op | None:
    """CREATE TABLE, INSERT INTO ... SELECT ... FROM and DROP TABLE, as operations."""
    m = _SQL_CREATE_TABLE.match(stmt)
    if m:
        return Op("create_table", m.group(1), line, end, text=stmt[:80])
    m = _SQL_INSERT_SELECT.match(stmt)
    if m:
        return Op("copy_rows", m.group(1), line, end, source=m.group(2), text=stmt[:80])
    m = _SQL_DROP_TABLE.search(stmt)
    if m and stmt.upper().startswith("DROP"):
        return Op("drop_table", m.group(1), line, end, text=stmt[:80])
    return None


def sql_ops(sql: str, line: int, end: int) -> Iterator[Op]:
    """SQL text: each statement that drops, renames, retypes or tightens, and the CREATE TABLE,
    INSERT ... SELECT and UPDATE statements that tell a rebuild or a backfill."""
    for statement in sql.split(";"):
        stmt = " ".join(statement.split())
        if not stmt:
            continue
        plain = _sql_plain(stmt, line, end)
        if plain is not None:
            yield plain
            continue
        if stmt.upper().startswith("UPDATE"):
            yield from sql_updates(stmt, line, end)
            continue
        m = _SQL_ALTER.search(stmt)
        if not m:
            continue
        table, rest = m.group(1), m.group(2)
        for action in (a.strip() for a in rest.split(",")):
            d = _SQL_DROP_COLUMN.match(action)
            if d and d.group(1).lower() not in _SQL_NOT_COLUMN:
                yield Op("drop_column", table, line, end, column=d.group(1), text=stmt[:80])
                continue
            r = _SQL_RENAME_TABLE.match(action)
            if r:
                yield Op("rename_table", table, line, end, new_name=r.group(1), text=stmt[:80])
                continue
            r = _SQL_RENAME_COLUMN.match(action)
            if r and r.group(1).lower() not in _SQL_NOT_COLUMN:
                yield Op("alter_column", table, line, end, column=r.group(1), new_name=r.group(2), text=stmt[:80])
                continue
            a = _SQL_ALTER_COLUMN.match(action)
            if a:
                tail = a.group(2).upper()
                type_change = tail.startswith(("TYPE", "SET DATA TYPE")) or action.upper().startswith(
                    ("MODIFY", "CHANGE")
                )
                not_null = "SET NOT NULL" in tail
                if type_change or not_null:
                    yield Op(
                        "alter_column",
                        table,
                        line,
                        end,
                        column=a.group(1),
                        type_change=type_change,
                        not_null=not_null,
                        text=stmt[:80],
                    )
