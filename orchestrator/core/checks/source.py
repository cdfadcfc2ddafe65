"""What a revision file does, read from its source without importing it (text and AST).

Each file is read once. Cheap facts come from its text: the module attributes the checks
care about (``destructive``, ``irreversible``, with or without an annotation), the lines of
``revision``/``down_revision``/``requires`` and of the two functions, and the
``# migrate: allow MGxxx`` comments. The operations of ``upgrade()`` need the AST, and a file
is parsed only when its text outside ``downgrade()`` names an operation that matters; the
``downgrade()`` function alone is parsed to tell a real body from an empty one.

Operations are the ``op.*`` calls of ``upgrade()`` (and of module-level helpers it calls),
the ``batch_op.*`` calls inside ``with op.batch_alter_table(...) as batch_op:``, and the
DDL in string literals passed to ``op.execute``. Two kinds of operation only qualify others:
``update`` (a backfill: an UPDATE naming a column, as SQL text, ``sa.update()``,
``table.update()`` or through the ORM) and ``copy_rows`` (``INSERT INTO new SELECT ... FROM
old``, which with a later ``DROP TABLE old`` and a rename of ``new`` is a table rebuilt in
place). A name that is not a literal (a loop variable, an expression) is kept as its source
text between angle brackets, ``<name>``, and reported as computed, never as a literal.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from functools import cached_property

from orchestrator.core.checks.sqlops import Op, computed, sql_ops, sql_updates
from orchestrator.core.pysource import body_kind

_ATTR = re.compile(r"^(destructive|irreversible)\s*(?::[^=\n]*)?=\s*(True|1)\s*(?:#.*)?$", re.M)
_ALLOW = re.compile(r"#\s*migrate:\s*allow\b([^#\n]*)", re.I)
_CODE = re.compile(r"\bMG\d{3}\b", re.I)
_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)\s*\(", re.M)
_TOP_LEVEL = re.compile(r"^[^\s#)\]}]", re.M)
_KEYWORDS = re.compile(r"\b(?:drop_table|drop_column|alter_column|rename_table|add_column|execute)\b")
_LINE_ATTR = re.compile(r"^(revision|down_revision|requires)\b\s*(?::[^=\n]*)?=", re.M)

_SA_MODULES = {"sa", "sqlalchemy", "expression", "sql"}


class RevisionSource:
    """The facts one revision file holds. Reads the file once; parses it at most once."""

    def __init__(self, path: str, text: str | None = None):
        self.path = path
        if text is None:
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError):
                text = ""
        self.text = text

    # -- text facts -----------------------------------------------------------------------
    @cached_property
    def attributes(self) -> frozenset[str]:
        """Which of ``destructive``/``irreversible`` the module sets to True."""
        return frozenset(m.group(1) for m in _ATTR.finditer(self.text))

    @property
    def destructive(self) -> bool:
        return "destructive" in self.attributes

    @property
    def irreversible(self) -> bool:
        return "irreversible" in self.attributes

    def line_of(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    @cached_property
    def attribute_lines(self) -> dict[str, int]:
        """Line of the module-level ``revision``, ``down_revision`` and ``requires``."""
        out: dict[str, int] = {}
        for m in _LINE_ATTR.finditer(self.text):
            out.setdefault(m.group(1), self.line_of(m.start()))
        return out

    @cached_property
    def function_lines(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in _DEF.finditer(self.text):
            out[m.group(1)] = self.line_of(m.start())
        return out

    def find_line(self, needle: str) -> int | None:
        i = self.text.find(needle)
        return None if i < 0 else self.line_of(i)

    @cached_property
    def allows(self) -> dict[int, frozenset[str]]:
        """``# migrate: allow MG201 MG202`` comments: line -> codes."""
        if "migrate:" not in self.text:
            return {}
        out: dict[int, frozenset[str]] = {}
        for m in _ALLOW.finditer(self.text):
            codes = frozenset(c.upper() for c in _CODE.findall(m.group(1)))
            if codes:
                out[self.line_of(m.start())] = codes
        return out

    def allowed(self, code: str, lines: range | int) -> bool:
        """Whether a comment allows ``code`` on one of ``lines``, or on a comment line just above."""
        allows = self.allows
        if not allows:
            return False
        span = range(lines, lines + 1) if isinstance(lines, int) else lines
        if any(code in allows.get(n, ()) for n in span):
            return True
        above = span.start - 1
        if code in allows.get(above, ()):
            text_line = self._line_text(above).lstrip()
            return text_line.startswith("#")
        return False

    def _line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    # -- functions ------------------------------------------------------------------------
    @cached_property
    def _downgrade_chunk(self) -> tuple[str, int] | None:
        return self._chunk("downgrade")

    def _chunk(self, name: str) -> tuple[str, int] | None:
        """The source of the top-level function ``name`` and its first line (text only; the
        last definition wins, as when Python runs the module)."""
        found: tuple[str, int] | None = None
        for m in _DEF.finditer(self.text):
            if m.group(1) != name:
                continue
            start = m.start()
            nl = self.text.find("\n", start)
            end = len(self.text)
            if nl >= 0:
                nxt = _TOP_LEVEL.search(self.text, nl + 1)
                if nxt is not None:
                    end = nxt.start()
            found = (self.text[start:end], self.line_of(start))
        return found

    @cached_property
    def tree(self) -> ast.Module | None:
        try:
            return ast.parse(self.text, filename=self.path)
        except (SyntaxError, ValueError):
            return None

    def _function(self, name: str, *, whole_file: bool) -> ast.FunctionDef | None:
        if not whole_file:
            chunk = self._downgrade_chunk if name == "downgrade" else self._chunk(name)
            if chunk is None:
                return None
            try:
                module = ast.parse(chunk[0])
            except (SyntaxError, ValueError):
                module = None
            if module is not None and module.body and isinstance(module.body[0], ast.FunctionDef):
                return module.body[0]  # its line numbers count from the chunk, not the file
        tree = self.tree
        if tree is None:
            return None
        found = None
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found = node  # the last definition wins, as when Python runs the module
        return found

    @cached_property
    def downgrade_kind(self) -> str:
        """'real', 'missing', 'empty' (only docstrings, comments and ``pass``) or 'not_implemented'."""
        return body_kind(self._function("downgrade", whole_file="tree" in self.__dict__))

    @cached_property
    def may_have_ops(self) -> bool:
        """Whether the text outside ``downgrade()`` names any operation a rule looks for."""
        chunk = self._downgrade_chunk
        text = self.text
        if chunk is not None:
            i = text.find(chunk[0])
            text = text[:i] + text[i + len(chunk[0]) :]
        return _KEYWORDS.search(text) is not None

    @cached_property
    def ops(self) -> tuple[Op, ...]:
        """Every schema operation of ``upgrade()``, in source order (parses the file)."""
        tree = self.tree
        if tree is None:
            return ()
        return tuple(_Extractor(tree).run("upgrade"))

    @cached_property
    def destructive_ops(self) -> tuple[Op, ...]:
        """The operations of ``upgrade()`` that drop, rename, retype or tighten something
        that existed before this revision (tables it creates itself do not count, nor a
        table rebuilt in place, nor NOT NULL set on a column the revision backfilled first)."""
        if not self.may_have_ops:
            return ()
        ops = self.ops
        rebuilt = _rebuild_steps(ops)
        created: set[str] = set()
        added: set[tuple[str, str]] = set()
        filled: set[tuple[str, str]] = set()  # (table or "" when not known, column), lower case
        out: list[Op] = []
        for i, op in enumerate(ops):
            if i in rebuilt or op.kind == "copy_rows":
                continue
            if op.kind == "update":
                filled.add((_bare(op.table), (op.column or "").lower()))
                continue
            if op.kind == "create_table":
                created.add(op.table)
                continue
            if op.table in created:
                continue
            if op.kind == "add_column":
                if op.column is not None:
                    added.add((op.table, op.column))
                if op.not_null:
                    out.append(op)
                continue
            if op.column is not None and (op.table, op.column) in added and op.kind != "alter_column":
                continue
            if op.not_null and _backfilled(filled, op):
                op = replace(op, not_null=False)
            if op.kind == "alter_column" and not (op.type_change or op.not_null or op.new_name):
                continue
            out.append(op)
        return tuple(out)


def _bare(table: str) -> str:
    """A table name without its schema, lower case ("" when computed or not known)."""
    return "" if not table or computed(table) else table.rsplit(".", 1)[-1].lower()


def _backfilled(filled: set[tuple[str, str]], op: Op) -> bool:
    column = (op.column or "").lower()
    return bool(column) and ((_bare(op.table), column) in filled or ("", column) in filled)


def _rebuild_steps(ops: tuple[Op, ...]) -> set[int]:
    """The drops and renames that rebuild a table in place, the way SQLite alters one: the rows
    of ``old`` are copied (``INSERT INTO new ... SELECT ... FROM old``) into a table that, once
    ``old`` is dropped, ends up under ``old``'s original name."""
    out: set[int] = set()
    for i, copy in enumerate(ops):
        if copy.kind != "copy_rows" or copy.source is None:
            continue
        source, target = copy.source.lower(), copy.table.lower()
        drop = next(
            (j for j in range(i + 1, len(ops)) if ops[j].kind == "drop_table" and ops[j].table.lower() == source), None
        )
        if drop is None:
            continue
        original, before = _follow(ops, range(i - 1, -1, -1), source, backwards=True)
        final, after = _follow(ops, range(i + 1, len(ops)), target, backwards=False)
        if original == final:
            out |= {drop, *before, *after}
    return out


def _follow(ops: tuple[Op, ...], indexes: Iterable[int], name: str, *, backwards: bool) -> tuple[str, list[int]]:
    """The name a table had before (or has after) the renames at ``indexes``, and those renames."""
    used: list[int] = []
    for j in indexes:
        op = ops[j]
        if op.kind != "rename_table" or op.new_name is None:
            continue
        old, new = op.table.lower(), op.new_name.lower()
        if backwards and new == name:
            name = old
            used.append(j)
        elif not backwards and old == name:
            name = new
            used.append(j)
    return name, used


# -- extraction ---------------------------------------------------------------------------
class _Extractor:
    def __init__(self, tree: ast.Module):
        self.functions: dict[str, ast.FunctionDef] = {}
        self.constants: dict[str, str] = {}
        self.tables = _table_names(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    for t in targets:
                        if isinstance(t, ast.Name):
                            self.constants[t.id] = node.value.value
        self.seen: set[str] = set()

    def run(self, name: str) -> Iterator[Op]:
        fn = self.functions.get(name)
        if fn is None or name in self.seen:
            return
        self.seen.add(name)
        batches: list[tuple[str, int, int, str]] = []  # (alias, first line, last line, table)
        for node in ast.walk(fn):
            if isinstance(node, ast.With):
                for item in node.items:
                    call = item.context_expr
                    if (
                        isinstance(call, ast.Call)
                        and _attr_call(call) == ("op", "batch_alter_table")
                        and isinstance(item.optional_vars, ast.Name)
                    ):
                        table = self.name(_arg(call, 0, "table_name"))
                        end = node.end_lineno or node.lineno
                        batches.append((item.optional_vars.id, node.lineno, end, table))
        nodes: list[ast.Call | ast.Assign] = sorted(
            (n for n in ast.walk(fn) if isinstance(n, ast.Call | ast.Assign)), key=lambda c: (c.lineno, c.col_offset)
        )
        for found in nodes:
            if isinstance(found, ast.Assign):
                yield from _attribute_backfills(found)
            else:
                yield from self.visit(found, batches)

    def visit(self, call: ast.Call, batches: list[tuple[str, int, int, str]]) -> Iterator[Op]:
        """The operations of one call: ``op.*``, ``batch_op.*``, a helper's, or a backfill."""
        target = _attr_call(call)
        if target is None or (target[0] != "op" and not any(b[0] == target[0] for b in batches)):
            yield from self.other_call(call)
        if target is None:
            if isinstance(call.func, ast.Name) and call.func.id in self.functions:
                yield from self.run(call.func.id)
            return
        owner, method = target
        if owner == "op":
            yield from self.op_call(call, method, None)
            return
        for alias, first, last, table in reversed(batches):
            if alias == owner and first <= call.lineno <= last:
                yield from self.op_call(call, method, table)
                break

    def string(self, node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        return None

    def name(self, node: ast.expr | None) -> str:
        """A literal name, or ``<source text>`` when it is computed at run time."""
        value = self.string(node)
        if value is not None:
            return value
        return "<?>" if node is None else f"<{ast.unparse(node)}>"

    def other_call(self, call: ast.Call) -> Iterator[Op]:
        """Backfills outside ``op``: ``conn.execute(...)`` / ``session.execute(...)`` of an UPDATE,
        and the ORM's ``session.query(Model)...update({Model.column: ...})``."""
        func = call.func
        if not isinstance(func, ast.Attribute):
            return
        line, end = call.lineno, call.end_lineno or call.lineno
        if func.attr == "execute":
            yield from self.updates(_arg(call, 0, "statement"), line, end)
        elif func.attr == "update" and isinstance(func.value, ast.Call):
            values = _arg(call, 0, "values")
            if isinstance(values, ast.Dict):
                table = self.table_of(_query_model(func.value))
                for column in _keys(values):
                    yield Op("update", table, line, end, column=column, text=f"update {table}.{column}")

    def updates(self, node: ast.expr | None, line: int, end: int) -> Iterator[Op]:
        """The columns an UPDATE statement sets: SQL text (an f-string too), or
        ``sa.update(t).values(...)`` / ``t.update().where(...).values(...)``."""
        sql = _sql_literal(node) or _sql_template(node)
        if sql is not None:
            for statement in sql.split(";"):
                yield from sql_updates(" ".join(statement.split()), line, end)
            return
        columns: list[str] = []
        while isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if fname == "values":
                columns += [k.arg for k in node.keywords if k.arg] + [c for a in node.args for c in _keys(a)]
            elif fname == "update":
                module_level = not isinstance(func, ast.Attribute) or (
                    isinstance(func.value, ast.Name) and func.value.id in _SA_MODULES
                )
                if isinstance(func, ast.Attribute) and not module_level:
                    subject: ast.expr | None = func.value
                else:
                    subject = node.args[0] if node.args else None
                table = self.table_of(subject)
                for column in columns:
                    yield Op("update", table, line, end, column=column, text=f"update {table}.{column}")
                return
            node = func.value if isinstance(func, ast.Attribute) else None

    def table_of(self, node: ast.expr | None) -> str:
        """The table a ``sa.table("t")``, a ``Table`` variable or an ORM model names ("" if unknown)."""
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            return (self.string(node.args[0]) or "") if fname in ("table", "Table") and node.args else ""
        if isinstance(node, ast.Attribute) and node.attr == "__table__":
            return self.table_of(node.value)
        if isinstance(node, ast.Name):
            return self.tables.get(node.id, "")
        return ""

    def op_call(self, call: ast.Call, method: str, batch_table: str | None) -> Iterator[Op]:
        line, end = call.lineno, call.end_lineno or call.lineno
        shift = 0 if batch_table is None else 1  # batch_op calls have no table argument
        table = batch_table if batch_table is not None else self.name(_arg(call, 0, "table_name"))
        if method == "create_table" and batch_table is None:
            columns = tuple(c for c in (self.column_name(a) for a in call.args[1:]) if c)
            yield Op("create_table", table, line, end, columns=columns, text=f"create_table({table!r})")
        elif method == "drop_table" and batch_table is None:
            yield Op("drop_table", table, line, end, text=f"drop_table({table!r})")
        elif method == "rename_table" and batch_table is None:
            new = self.name(_arg(call, 1, "new_table_name"))
            yield Op("rename_table", table, line, end, new_name=new, text=f"rename_table({table!r}, {new!r})")
        elif method == "add_column":
            col = _arg(call, 1 - shift, "column")
            name = self.column_name(col)
            not_null = isinstance(col, ast.Call) and _column_not_null_without_default(col)
            yield Op("add_column", table, line, end, column=name, not_null=not_null, text=f"add_column {table}.{name}")
        elif method == "drop_column":
            name = self.name(_arg(call, 1 - shift, "column_name"))
            yield Op("drop_column", table, line, end, column=name, text=f"drop_column {table}.{name}")
        elif method == "alter_column":
            name = self.name(_arg(call, 1 - shift, "column_name"))
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            type_change = "type_" in kw and not _is_none(kw["type_"])
            new_name = self.string(kw.get("new_column_name")) if "new_column_name" in kw else None
            if "new_column_name" in kw and new_name is None and not _is_none(kw["new_column_name"]):
                new_name = self.name(kw["new_column_name"])
            not_null = _is_false(kw.get("nullable")) and not _is_false(kw.get("existing_nullable"))
            yield Op(
                "alter_column",
                table,
                line,
                end,
                column=name,
                new_name=new_name,
                type_change=type_change,
                not_null=not_null,
                text=f"alter_column {table}.{name}",
            )
        elif method == "execute" and batch_table is None:
            statement = _arg(call, 0, "sqltext")
            sql = _sql_literal(statement)
            if sql:
                yield from sql_ops(sql, line, end)
            else:
                yield from self.updates(statement, line, end)

    def column_name(self, node: ast.expr | None) -> str | None:
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if fname != "Column" or not node.args:
            return None
        first = node.args[0]
        if isinstance(first, ast.Call | ast.Attribute):
            return self.string(first)  # Column(sa.Integer) has no name
        return self.name(first)


def _attr_call(call: ast.Call) -> tuple[str, str] | None:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    return None


def _table_names(tree: ast.Module) -> dict[str, str]:
    """Variables bound to ``sa.table("t", ...)`` / ``sa.Table("t", ...)``, and ORM classes with a
    ``__tablename__``: name -> table."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Constant):
                func = value.func
                fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if fname in ("table", "Table") and isinstance(value.args[0].value, str):
                    out[node.targets[0].id] = value.args[0].value
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    out[node.name] = stmt.value.value
    return out


def _keys(node: ast.expr) -> list[str]:
    """The column names a ``{"col": v}`` / ``{Model.col: v}`` / ``{t.c.col: v}`` mapping sets."""
    if not isinstance(node, ast.Dict):
        return []
    out = []
    for key in node.keys:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            out.append(key.value)
        elif isinstance(key, ast.Attribute):
            out.append(key.attr)
    return out


def _query_model(node: ast.expr) -> ast.expr | None:
    """The model of ``session.query(Model).filter(...)...``: the first argument of ``query``."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "query":
            return node.args[0] if node.args else None
        node = node.func.value
    return None


def _attribute_backfills(assign: ast.Assign) -> Iterator[Op]:
    """``row.column = value`` in ``upgrade()``: an ORM backfill of that column (table not known)."""
    line, end = assign.lineno, assign.end_lineno or assign.lineno
    for target in assign.targets:
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
            yield Op("update", "", line, end, column=target.attr, text=f"set {target.attr}")


def _sql_template(node: ast.expr | None) -> str | None:
    """An f-string's text, each computed part as ``{}`` (read for backfills only, never for DDL)."""
    if not isinstance(node, ast.JoinedStr):
        return None
    return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values)


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    if 0 <= index < len(call.args) and not isinstance(call.args[index], ast.Starred):
        return call.args[index]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return None


def _is_none(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _column_not_null_without_default(col: ast.Call) -> bool:
    kw = {k.arg: k.value for k in col.keywords if k.arg}
    if not _is_false(kw.get("nullable")):
        return False
    return ("server_default" not in kw or _is_none(kw["server_default"])) and "server_onupdate" not in kw


def _sql_literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Call) and node.args:  # sa.text("...")
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if fname == "text":
            node = node.args[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None
