"""The rules of ``migrate check``: pure functions over the graph and the revision files.

Each rule returns a ``RuleOutcome``: the subjects it examined (services, nodes, copies) and
its findings. None of them opens a database; the environment's state, when a rule needs it,
is passed in as a value. (One module, a little over 600 lines: the rules share the table
state machine and the source index, and each rule is a few small functions.)
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.checks.findings import Finding, finding
from orchestrator.core.checks.source import RevisionSource
from orchestrator.core.checks.sqlops import Op, computed
from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import CopySpec, NodeId, Revision, ServiceSpec, service_of
from orchestrator.core.pysource import is_merge_noop


@dataclass(frozen=True)
class RuleOutcome:
    group: str
    subjects: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (subject, why it was not examined)
    notes: tuple[str, ...] = ()


@dataclass
class SourceIndex:
    """Every revision file of a graph, read on first use and at most once."""

    graph: FleetGraph
    _cache: dict[str, RevisionSource] = field(default_factory=dict)

    def get(self, node: str) -> RevisionSource:
        src = self._cache.get(node)
        if src is None:
            src = RevisionSource(self.graph.revisions[node].path)
            self._cache[node] = src
        return src

    def __len__(self) -> int:
        return len(self._cache)


def _root(graph: FleetGraph) -> str:
    return graph.manifest.root


# -- one head per service -----------------------------------------------------------------
def check_heads(graph: FleetGraph, sources: SourceIndex) -> RuleOutcome:
    findings = []
    for name, svc in graph.services.items():
        for label, heads in head_groups(graph, name):
            last = graph.revisions[f"{name}@{heads[-1]}"]
            src = sources.get(last.node)
            where = f"service '{name}' has" if label is None else f"the branch '{label}' of service '{name}' has"
            findings.append(
                finding(
                    "MG101",
                    name,
                    f"{where} {len(heads)} heads ({', '.join(heads)}): two branches of its tree "
                    "were merged without an Alembic merge revision, and no single order applies them",
                    "merge them into one head: " + merge_command(svc.spec, heads, _root(graph)),
                    file=last.path,
                    line=src.attribute_lines.get("down_revision"),
                    root=_root(graph),
                )
            )
    return RuleOutcome("heads", tuple(graph.services), tuple(findings))


def head_groups(graph: FleetGraph, service: str) -> list[tuple[str | None, tuple[str, ...]]]:
    """The sets of two or more heads that are the two-heads accident: heads without a branch
    label (label None), or heads inside one labelled branch. Heads of distinct labelled
    branches (a second root kept apart with `branch_labels`) are not."""
    heads = graph.services[service].heads
    if len(heads) < 2:
        return []
    labels = graph.branch_labels(service)
    groups: list[tuple[str | None, tuple[str, ...]]] = []
    unlabelled = tuple(h for h in heads if not labels[h])
    if len(unlabelled) > 1:
        groups.append((None, unlabelled))
    seen = {unlabelled}
    for label in sorted({name for h in heads for name in labels[h]}):
        inside = tuple(h for h in heads if label in labels[h])
        if len(inside) > 1 and inside not in seen:
            seen.add(inside)
            groups.append((label, inside))
    return groups


def merge_command(spec: ServiceSpec, heads: Sequence[str], root: str) -> str:
    """The exact ``alembic merge`` command for a tree (run from the manifest's folder)."""
    location = Path(spec.script_location)
    shown = os.path.relpath(location, root) if location.is_relative_to(root) else str(location)
    for candidate in (location / "alembic.ini", location.parent / "alembic.ini", Path(root) / "alembic.ini"):
        if candidate.is_file() and _ini_points_at(candidate, location):
            ini = os.path.relpath(candidate, root) if candidate.is_relative_to(root) else str(candidate)
            return f'`alembic -c {ini} merge -m "merge heads" {" ".join(heads)}`'
    config = f"<(printf '[alembic]\\nscript_location = {shown}\\n')"
    return f'`alembic -c {config} merge -m "merge heads" {" ".join(heads)}` (bash, from the manifest\'s folder)'


def _ini_points_at(ini: Path, location: Path) -> bool:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini, encoding="utf-8")
        value = parser.get("alembic", "script_location", fallback="")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False
    value = value.replace("%(here)s", str(ini.parent))
    return any((base / value).resolve() == location.resolve() for base in (ini.parent, Path.cwd()))


# -- a real downgrade() -------------------------------------------------------------------
_DOWNGRADE_WHAT = {
    "missing": "has no downgrade() function",
    "empty": "has a downgrade() that does nothing (only docstrings, comments and `pass`)",
    "not_implemented": "has a downgrade() that raises NotImplementedError",
}


def check_downgrades(graph: FleetGraph, sources: SourceIndex, nodes: Sequence[str]) -> RuleOutcome:
    findings = []
    root = _root(graph)
    for node in nodes:
        rev = graph.revisions[node]
        src = sources.get(node)
        kind = src.downgrade_kind
        if kind == "real" or (kind == "empty" and is_merge_noop(rev.path, rev.down_revisions)):
            continue  # a merge revision as `alembic merge` writes it has nothing to undo
        line = src.function_lines.get("downgrade") or src.attribute_lines.get("revision")
        irreversible = rev.irreversible or src.irreversible
        if irreversible:
            if kind == "empty":
                findings.append(
                    finding(
                        "MG302",
                        node,
                        f"{node} declares irreversible = True but its downgrade() does nothing (only docstrings, "
                        "comments and `pass`): a plain `alembic downgrade` would record it as undone while nothing "
                        "was undone",
                        "make downgrade() raise NotImplementedError",
                        file=rev.path,
                        line=line,
                        root=root,
                    )
                )
            continue
        hint = (
            "declare `irreversible = True` in the revision, so that `migrate rollback` refuses it before "
            "changing anything, or write a downgrade() that undoes upgrade()"
            if kind == "not_implemented"
            else "write a downgrade() that exactly undoes upgrade(); if it cannot be undone, declare "
            "`irreversible = True` and raise NotImplementedError"
        )
        findings.append(
            finding(
                "MG301",
                node,
                f"{node} {_DOWNGRADE_WHAT[kind]}: a failed deploy cannot be rolled back past it",
                hint,
                file=rev.path,
                line=line,
                root=root,
            )
        )
    return RuleOutcome("downgrade", tuple(nodes), tuple(findings))


# -- destructive operations ---------------------------------------------------------------
_DESTRUCTIVE_HINT = {
    "MG201": "stop reading the table first and drop it in a later release",
    "MG202": "stop reading the column first and drop it in a later release",
    "MG203": "add a column of the new type, backfill it, move the readers, then drop the old one",
    "MG204": "add the new name next to the old one and move the readers before removing the old name",
    "MG205": "add the column as nullable (or with a server_default), backfill, then set NOT NULL",
}


def _named(noun: str, name: str | None) -> str:
    """``table 'users'``, or ``a table whose name is computed at run time (`t`)``."""
    if computed(name):
        return f"a {noun} whose name is computed at run time (`{(name or '')[1:-1]}`)"
    return f"{noun} '{name}'"


def _new_name(name: str | None) -> str:
    return f"a name computed at run time (`{(name or '')[1:-1]}`)" if computed(name) else f"'{name}'"


def _column(op: Op) -> str:
    if computed(op.table) or computed(op.column):
        return f"{_named('column', op.column)} of {_named('table', op.table)}"
    return f"column '{op.table}.{op.column}'"


def op_codes(op: Op) -> list[tuple[str, str]]:
    """The MG2xx codes one operation raises, each with a description of what it does. A name
    that is computed at run time is said to be so, never shown as a literal."""
    out: list[tuple[str, str]] = []
    if op.kind == "drop_table":
        out.append(("MG201", f"drops {_named('table', op.table)}"))
    elif op.kind == "drop_column":
        out.append(("MG202", f"drops {_column(op) if op.column else _named('table', op.table)}"))
    elif op.kind == "rename_table":
        out.append(("MG204", f"renames {_named('table', op.table)} to {_new_name(op.new_name)}"))
    elif op.kind in ("alter_column", "add_column"):
        obj = _column(op) if op.column else _named("table", op.table)
        if op.new_name:
            out.append(("MG204", f"renames {obj} to {_new_name(op.new_name)}"))
        if op.type_change:
            out.append(("MG203", f"changes the type of {obj}"))
        if op.not_null:
            verb = "adds NOT NULL" if op.kind == "add_column" else "sets NOT NULL on"
            extra = " without a server_default" if op.kind == "add_column" else ""
            out.append(("MG205", f"{verb} {obj} of an existing table{extra}"))
    return out


def check_destructive(graph: FleetGraph, sources: SourceIndex, nodes: Sequence[str]) -> RuleOutcome:
    """MG2xx. The same finding made twice in one revision (once per dialect branch of an
    ``if ... dialect.name == ...``) is one finding, at its first line; a name computed at run
    time lowers the finding to a warning."""
    findings = []
    root = _root(graph)
    for node in nodes:
        rev = graph.revisions[node]
        src = sources.get(node)
        if rev.destructive or src.destructive:
            continue
        seen: set[tuple[str, str]] = set()
        for op in src.destructive_ops:
            for code, what in op_codes(op):
                if src.allowed(code, op.lines) or (code, what) in seen:
                    continue
                seen.add((code, what))
                findings.append(
                    finding(
                        code,
                        node,
                        f"{node} {what}",
                        f"if this is intended, declare `destructive = True` in the revision (or add "
                        f"`# migrate: allow {code}` on the line); otherwise {_DESTRUCTIVE_HINT[code]}",
                        file=rev.path,
                        line=op.line,
                        root=root,
                        level="warning" if op.computed else None,
                    )
                )
    return RuleOutcome("destructive", tuple(nodes), tuple(findings))


# -- cross-service hazards ----------------------------------------------------------------
@dataclass(frozen=True)
class _Removal:
    node: str
    op: Op
    what: str  # "drops it", "renames it to 'x'"


class _TableState:
    """What the revisions seen so far did to one table of one service."""

    def __init__(self, table: str):
        self.table = table
        self.gone: _Removal | None = None
        self.columns: dict[str, _Removal | None] = {}

    def apply(self, node: str, op: Op) -> None:
        t = self.table
        if op.kind == "create_table" and op.table == t:
            self.gone, self.columns = None, {}
        elif op.kind == "drop_table" and op.table == t:
            self.gone = _Removal(node, op, "drops it")
        elif op.kind == "rename_table":
            if op.table == t:
                self.gone = _Removal(node, op, f"renames it to '{op.new_name}'")
            elif op.new_name == t:
                self.gone, self.columns = None, {}
        elif op.table == t and op.column:
            if op.kind == "add_column":
                self.columns[op.column] = None
            elif op.kind == "drop_column":
                self.columns[op.column] = _Removal(node, op, "drops it")
            elif op.kind == "alter_column" and op.new_name:
                self.columns[op.column] = _Removal(node, op, f"renames it to '{op.new_name}'")
                self.columns[op.new_name] = None


def _removes(op: Op, table: str, columns: Collection[str]) -> str | None:
    """What ``op`` removes of ``table`` (or of its ``columns``), as a phrase; None if nothing."""
    if op.table != table:
        return None
    if op.kind == "drop_table":
        return f"drops table '{table}'"
    if op.kind == "rename_table":
        return f"renames table '{table}' to '{op.new_name}'"
    if op.column in columns:
        if op.kind == "drop_column":
            return f"drops column '{table}.{op.column}'"
        if op.kind == "alter_column" and op.new_name:
            return f"renames column '{table}.{op.column}' to '{op.new_name}'"
    return None


@dataclass(frozen=True)
class _CopySide:
    """One table a copy reads (its source) or writes into (its target), where it runs."""

    cnode: str
    spec: CopySpec
    service: str
    table: str
    verb: str  # "reads" or "writes into"
    needed: tuple[str, ...]  # the copy's columns and key, as written
    pos: dict[str, int]  # each node's place in the order the steps run in
    revs: tuple[str, ...]  # the service's revisions that run, in that order


def check_copies(graph: FleetGraph, sources: SourceIndex, order: Sequence[str]) -> RuleOutcome:
    """MG401 and the copy half of MG402.

    ``order`` is the order the steps run in: for a fresh environment every node, or the
    applied revisions followed by the pending steps. A copy absent from it does not run.
    """
    pos = {n: i for i, n in enumerate(order)}
    findings: list[Finding] = []
    subjects: list[str] = []
    for cnode, spec in graph.copies.items():
        if cnode not in pos:
            continue
        subjects.append(cnode)
        after_copy = graph.descendants([cnode])
        before_copy = graph.ancestors([cnode])
        needed = tuple(dict.fromkeys((*(spec.columns or ()), *(spec.key or ()))))
        sides = [(spec.source, spec.table, "reads")]
        if (spec.target, spec.target_table) != (spec.source, spec.table):
            sides.append((spec.target, spec.target_table, "writes into"))
        for service, table, verb in sides:
            revs = sorted((r.node for r in graph.services[service].revisions if r.node in pos), key=pos.__getitem__)
            side = _CopySide(cnode, spec, service, table, verb, needed, pos, tuple(revs))
            findings += _removed_before_copy(graph, sources, side, before_copy)
            findings += _unordered_after_copy(graph, sources, side, after_copy)
    return RuleOutcome("cross-service", tuple(subjects), tuple(findings))


def _removed_before_copy(
    graph: FleetGraph, sources: SourceIndex, side: _CopySide, before_copy: set[str]
) -> list[Finding]:
    """MG401: a revision ordered before the copy drops or renames what it reads or writes."""
    here = side.pos[side.cnode]
    state = _TableState(side.table)
    for node in side.revs:
        if side.pos[node] > here:
            break
        src = sources.get(node)
        if side.table not in src.text:
            continue
        for op in src.ops:
            state.apply(node, op)
    removals: list[tuple[_Removal, str]] = [(state.gone, side.table)] if state.gone else []
    if not removals:
        for c in side.needed:
            gone = state.columns.get(c)
            if gone is not None:
                removals.append((gone, f"{side.table}.{c}"))
    findings: list[Finding] = []
    for removal, obj in removals:
        src = sources.get(removal.node)
        if src.allowed("MG401", removal.op.lines):
            continue
        if removal.node in before_copy:
            hint = (
                f"the copy's `after` puts it after {removal.node}: the rows must be copied before the "
                f"drop, so order {removal.node} after the copy (in its `before`), not before it"
            )
        else:
            hint = (
                f'add "{removal.node}" to `before` of [[copies]] "{side.spec.name}" in the manifest, '
                "so that it runs after the copy"
            )
        findings.append(
            finding(
                "MG401",
                removal.node,
                f"{side.cnode} {side.verb} {side.service}.{obj}, but {removal.node}, ordered before the copy, "
                f"{removal.what}: the copy would fail or lose the rows",
                hint,
                file=graph.revisions[removal.node].path,
                line=removal.op.line,
                root=_root(graph),
            )
        )
    return findings


def _unordered_after_copy(
    graph: FleetGraph, sources: SourceIndex, side: _CopySide, after_copy: set[str]
) -> list[Finding]:
    """MG402: a revision that drops what the copy uses runs after it only by chance."""
    here = side.pos[side.cnode]
    findings: list[Finding] = []
    for node in side.revs:
        if side.pos[node] <= here or node in after_copy:
            continue
        src = sources.get(node)
        for op in src.destructive_ops:
            what = _removes(op, side.table, side.needed)
            if what is None or src.allowed("MG402", op.lines):
                continue
            findings.append(
                finding(
                    "MG402",
                    node,
                    f"{node} {what}, which {side.cnode} {side.verb.replace('writes into', 'writes')}; it comes "
                    "after the copy here only by chance: nothing in the graph orders it after the "
                    "copy, so the plan of another environment may run it first",
                    f'add "{node}" to `before` of [[copies]] "{side.spec.name}" in the manifest',
                    file=graph.revisions[node].path,
                    line=op.line,
                    root=_root(graph),
                )
            )
    return findings


def check_dependent_drops(graph: FleetGraph, sources: SourceIndex) -> RuleOutcome:
    """The requires half of MG402.

    A revision of service B that requires ``A@r`` depends on what ``A@r`` introduced: the
    tables it creates, the columns it adds (or creates with a table), the names it renames
    to. A later revision of A that drops or renames one of them breaks B, unless the graph
    orders it after a revision of B at or after the requiring one (the way B says "I no
    longer use it": the drop ``requires`` that revision of B).
    """
    root = _root(graph)
    required_by: dict[str, list[str]] = {}
    for node, needs in graph.cross_requires.items():
        for needed in needs:
            required_by.setdefault(needed, []).append(node)
    findings: list[Finding] = []
    subjects: list[str] = []
    services = sorted({service_of(n) for n in required_by})
    ancestors: dict[str, set[str]] = {}
    moved_on: dict[str, set[str]] = {}
    for service in services:
        revs = graph.services[service].revisions
        droppers = {r.node for r in revs if any(_is_removal(op) for op in sources.get(r.node).destructive_ops)}
        if not droppers:
            continue
        subjects.extend(sorted(droppers, key=graph.sort_key))
        intro: dict[tuple[str, str | None], str] = {}
        for r in revs:
            src = sources.get(r.node)
            if not (src.may_have_ops or "create_table" in src.text):
                continue
            for op in src.ops:
                if r.node in droppers and _is_removal(op):
                    _report_dependents(graph, r, src, op, intro, required_by, ancestors, moved_on, findings, root)
                _introduce(intro, r.node, op)
    return RuleOutcome("cross-service", tuple(subjects), tuple(findings))


def _is_removal(op: Op) -> bool:
    return op.kind in ("drop_table", "drop_column", "rename_table") or (op.kind == "alter_column" and bool(op.new_name))


def _introduce(intro: dict[tuple[str, str | None], str], node: str, op: Op) -> None:
    if op.kind == "create_table":
        intro[(op.table, None)] = node
        for c in op.columns:
            intro[(op.table, c)] = node
    elif op.kind == "add_column" and op.column:
        intro[(op.table, op.column)] = node
    elif op.kind == "rename_table" and op.new_name:
        intro[(op.new_name, None)] = node
        for (t, col), introducer in list(intro.items()):
            if t == op.table and col is not None:
                intro[(op.new_name, col)] = introducer
    elif op.kind == "alter_column" and op.new_name:
        intro[(op.table, op.new_name)] = node


def _report_dependents(
    graph: FleetGraph,
    rev: Revision,
    src: RevisionSource,
    op: Op,
    intro: dict[tuple[str, str | None], str],
    required_by: dict[str, list[str]],
    ancestors: dict[str, set[str]],
    moved_on: dict[str, set[str]],
    findings: list[Finding],
    root: str,
) -> None:
    if op.kind in ("drop_table", "rename_table"):
        objects = [(op.table, None)] + [k for k in intro if k[0] == op.table and k[1] is not None]
    else:
        objects = [(op.table, op.column)]
    reported: set[str] = set()
    for obj in objects:
        introducer = intro.get(obj)
        if introducer is None or introducer == rev.node:
            continue
        for requirer in required_by.get(introducer, ()):
            other = service_of(requirer)
            if other == rev.service or requirer in reported:
                continue
            if rev.node not in ancestors:
                ancestors[rev.node] = graph.ancestors([rev.node])
            if requirer not in moved_on:
                later = {n for n in graph.descendants([requirer]) if service_of(n) == other}
                moved_on[requirer] = later | {requirer}
            if moved_on[requirer] & ancestors[rev.node]:
                continue
            if src.allowed("MG402", op.lines):
                continue
            reported.add(requirer)
            what = _removes(op, op.table, [op.column] if op.column else []) or f"changes '{op.table}'"
            if obj[1] is not None and obj != (op.table, op.column):
                what += f" and with it column '{obj[0]}.{obj[1]}'"
            findings.append(
                finding(
                    "MG402",
                    rev.node,
                    f"{rev.node} {what}, which {introducer} introduced and {requirer} (service "
                    f"'{other}') requires; nothing orders this revision after a revision of '{other}' that "
                    "stops using it",
                    f"if '{other}' no longer uses it, add the revision of '{other}' that stopped using it to "
                    f'`requires` of this revision (requires = ["{other}@<revision>"]); otherwise keep it',
                    file=rev.path,
                    line=op.line,
                    root=root,
                )
            )


# -- requirements in an environment -------------------------------------------------------
def requirement_location(
    graph: FleetGraph, sources: SourceIndex, node: str, needed: str
) -> tuple[str | None, int | None]:
    """Where ``node`` declares that it requires ``needed``: its file's ``requires`` or the manifest."""
    rev = graph.revisions[node]
    for ref in rev.requires:
        try:
            resolved = graph.resolve(ref, where=rev.path, allow_symbolic=False)
        except Exception:
            continue
        if resolved == needed:
            src = sources.get(node)
            return rev.path, src.find_line(ref) or src.attribute_lines.get("requires")
    manifest = graph.manifest.path
    try:
        with open(manifest, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return manifest, None
    wanted = NodeId.parse(needed)
    for i, line in enumerate(text.splitlines(), 1):
        for part in line.split('"')[1::2]:
            if NodeId.parse(part).abbreviates(wanted):
                return manifest, i
    return manifest, None


def check_env_requires(
    graph: FleetGraph,
    sources: SourceIndex,
    env: str,
    applied: Collection[str],
    steps: Sequence[str],
    plan_label: str,
) -> RuleOutcome:
    """MG403: a requirement not applied in ``env`` while what requires it is, or would be first.

    ``steps`` is the order the pending steps will run in (the plan computed now, or a plan
    file's); ``plan_label`` names it in messages.
    """
    root = _root(graph)
    pos = {n: i for i, n in enumerate(steps)}
    findings = []
    subjects = sorted(graph.cross_requires, key=graph.sort_key)
    for node in subjects:
        for needed in graph.cross_requires[node]:
            if needed in applied:
                continue
            if node in applied:
                message = (
                    f"{node} is applied in env '{env}', but its requirement {needed} is not: "
                    f"'{service_of(node)}' was deployed before what it needs"
                )
                hint = f"apply the requirement now: `migrate apply --env {env} --target {needed}`"
            elif node in pos and (needed not in pos or pos[needed] > pos[node]):
                where = "without" if needed not in pos else "before"
                message = f"{plan_label} applies {node} {where} its requirement {needed} in env '{env}'"
                hint = f"make a new plan: `migrate plan --env {env} --out`"
            else:
                continue
            file, line = requirement_location(graph, sources, node, needed)
            findings.append(finding("MG403", node, message, hint, file=file, line=line, root=root))
    return RuleOutcome("env-requires", tuple(subjects), tuple(findings))
