"""``migrate check --roundtrip``: prove on real databases that every downgrade undoes its upgrade.

Step by step in plan order, on each service's own database: reflect the schema, upgrade one
revision, downgrade it, reflect again and compare, then upgrade it again and go on. At the
end, every service goes down to base (the reflected schema must hold none of its tables, and
on the way down each downgrade must give back the schema recorded before that revision's
upgrade) and up to its heads once more. Copy steps move rows, not schema: they are skipped.

A service whose step fails stops there (its database is in an unknown state); the other
services' databases are independent and go on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.core.checks.findings import Finding, finding, relative
from orchestrator.core.checks.rules import RuleOutcome, SourceIndex
from orchestrator.core.graph import FleetGraph
from orchestrator.core.redact import redact_text
from orchestrator.runtime.alembic_runner import run_revisions
from orchestrator.runtime.engines import create_engine

# (node, phase): phase is "upgrade", "downgrade", "reupgrade", "to-base" or "to-heads"
RoundtripHook = Callable[[str, str], None]

Column = tuple[str, str, bool, str | None]  # name, type, nullable, default


@dataclass(frozen=True)
class TableShape:
    columns: frozenset[Column]
    primary_key: tuple[str, ...]
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]  # name, columns, unique
    uniques: frozenset[tuple[str, tuple[str, ...]]]  # name, columns
    foreign_keys: frozenset[tuple[str, tuple[str, ...], str, tuple[str, ...], str]]  # ..., options


Schema = dict[str, TableShape]


# -- reflection ---------------------------------------------------------------------------
def snapshot(conn: sa.Connection, ignore: Collection[str] = ()) -> Schema:
    """The reflected schema of the connection's database: tables, columns (type,
    nullability, server default), primary key, indexes, unique and foreign keys."""
    insp = sa.inspect(conn)
    dialect = conn.dialect
    out: Schema = {}
    for table in sorted(insp.get_table_names()):
        if table in ignore:
            continue
        columns = frozenset(
            (c["name"], _type(c["type"], dialect), bool(c.get("nullable", True)), _text(c.get("default")))
            for c in insp.get_columns(table)
        )
        pk = tuple(insp.get_pk_constraint(table).get("constrained_columns") or ())
        indexes = frozenset(
            (str(i.get("name")), tuple(str(c) for c in i.get("column_names") or ()), bool(i.get("unique")))
            for i in insp.get_indexes(table)
        )
        try:
            uniques = frozenset(
                (str(u.get("name")), tuple(u.get("column_names") or ())) for u in insp.get_unique_constraints(table)
            )
        except NotImplementedError:
            uniques = frozenset()
        fks = frozenset(
            (
                str(f.get("name")),
                tuple(f.get("constrained_columns") or ()),
                str(f.get("referred_table")),
                tuple(f.get("referred_columns") or ()),
                ",".join(f"{k}={v}" for k, v in sorted((f.get("options") or {}).items())),
            )
            for f in insp.get_foreign_keys(table)
        )
        out[table] = TableShape(columns, pk, indexes, uniques, fks)
    return out


def _type(type_: Any, dialect: sa.Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:
        return repr(type_)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def diff(expected: Schema, actual: Schema) -> list[str]:
    """What ``actual`` has that ``expected`` has not ("left behind"), and the reverse ("missing")."""
    out: list[str] = []
    for table in sorted(set(actual) - set(expected)):
        out.append(f"table '{table}' is left behind")
    for table in sorted(set(expected) - set(actual)):
        out.append(f"table '{table}' is missing")
    for table in sorted(set(expected) & set(actual)):
        e, a = expected[table], actual[table]
        ecols = {c[0]: c for c in e.columns}
        acols = {c[0]: c for c in a.columns}
        for name in sorted(set(acols) - set(ecols)):
            out.append(f"column '{table}.{name}' is left behind")
        for name in sorted(set(ecols) - set(acols)):
            out.append(f"column '{table}.{name}' is missing")
        for name in sorted(set(ecols) & set(acols)):
            if ecols[name] != acols[name]:
                changes = [
                    f"{label} {x!r} instead of {y!r}"
                    for label, x, y in zip(
                        ("type", "nullable", "default"), acols[name][1:], ecols[name][1:], strict=True
                    )
                    if x != y
                ]
                out.append(f"column '{table}.{name}' has " + ", ".join(changes))
        if e.primary_key != a.primary_key:
            out.append(f"the primary key of '{table}' is {list(a.primary_key)} instead of {list(e.primary_key)}")
        out += _named_diff("index", table, e.indexes, a.indexes)
        out += _named_diff("unique constraint", table, e.uniques, a.uniques)
        out += _named_diff("foreign key", table, e.foreign_keys, a.foreign_keys)
    return out


def _named_diff(
    kind: str, table: str, expected: Iterable[tuple[Any, ...]], actual: Iterable[tuple[Any, ...]]
) -> list[str]:
    def key(item: tuple[Any, ...]) -> str:
        return item[0] if item[0] != "None" else "(" + ", ".join(item[1]) + ")"

    e = {key(i): i for i in expected}
    a = {key(i): i for i in actual}
    out = [f"{kind} {name} on '{table}' is left behind" for name in sorted(set(a) - set(e))]
    out += [f"{kind} {name} on '{table}' is missing" for name in sorted(set(e) - set(a))]
    out += [f"{kind} {name} on '{table}' differs" for name in sorted(set(e) & set(a)) if e[name] != a[name]]
    return out


# -- the round trip -----------------------------------------------------------------------
def error_text(exc: BaseException, root: str = "") -> str:
    """The database's own error (or the exception), one line, with the revision file's line
    (relative to ``root``, the manifest's folder)."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/versions/" in f.filename]
    if frames:
        text += f" (at {relative(frames[-1].filename, root)}:{frames[-1].lineno})"
    return redact_text(" ".join(text.split()))


class _Runner:
    def __init__(
        self, graph: FleetGraph, urls: Mapping[str, str], sources: SourceIndex, hook: RoundtripHook | None
    ) -> None:
        self.graph = graph
        self.urls = urls
        self.sources = sources
        self.hook = hook
        self.engines: dict[str, sa.Engine] = {}
        self.findings: list[Finding] = []
        self.broken: dict[str, str] = {}  # service -> the node where its round trip stopped

    def engine(self, service: str) -> sa.Engine:
        if service not in self.engines:
            self.engines[service] = create_engine(self.urls[service])
        return self.engines[service]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    def schema(self, service: str) -> Schema:
        spec = self.graph.services[service].spec
        with self.engine(service).connect() as conn:
            return snapshot(conn, ignore={spec.version_table})

    def run(self, node: str, upgrade: bool) -> str | None:
        """Run one revision one way; the error text if it raised."""
        rev = self.graph.revisions[node]
        spec = self.graph.services[rev.service].spec
        try:
            with self.engine(rev.service).connect() as conn:
                run_revisions(spec, self.urls[rev.service], conn, [rev.revision], upgrade=upgrade)
        except Exception as exc:  # the revision's own failure is the finding
            return error_text(exc, self.graph.manifest.root)
        return None

    def report(self, code: str, node: str, message: str, hint: str, function: str) -> None:
        rev = self.graph.revisions[node]
        src = self.sources.get(node)
        line = src.function_lines.get(function) or src.attribute_lines.get("revision")
        self.findings.append(
            finding(code, node, message, hint, file=rev.path, line=line, root=self.graph.manifest.root)
        )
        self.broken.setdefault(rev.service, node)

    def notify(self, node: str, phase: str) -> None:
        if self.hook is not None:
            self.hook(node, phase)


def roundtrip(
    graph: FleetGraph,
    urls: Mapping[str, str],
    steps: Sequence[str],
    *,
    applied: Collection[str] = (),
    sources: SourceIndex | None = None,
    where: str = "scratch databases",
    hook: RoundtripHook | None = None,
) -> RuleOutcome:
    """Round-trip ``steps`` (plan order) on the databases at ``urls``, which hold ``applied``."""
    runner = _Runner(graph, urls, sources or SourceIndex(graph), hook)
    subjects: list[str] = []
    skipped: list[tuple[str, str]] = []
    notes = [f"round trip on {where}"]
    before: dict[str, Schema] = {}
    done: list[str] = [n for n in graph.order(applied) if n in graph.revisions]
    try:
        for node in steps:
            if node in graph.copies:
                skipped.append((node, "a copy step moves rows, not schema: not round-tripped"))
                continue
            subjects.append(node)
            rev = graph.revisions[node]
            service = rev.service
            if service in runner.broken:
                skipped.append((node, f"the round trip of '{service}' stopped at {runner.broken[service]}"))
                subjects.pop()
                continue
            start = runner.schema(service)
            before[node] = start
            runner.notify(node, "upgrade")
            error = runner.run(node, upgrade=True)
            if error is not None:
                runner.report(
                    "MG602",
                    node,
                    f"upgrading {node} failed: {error}",
                    "fix upgrade(); the round trip of this service stopped here",
                    "upgrade",
                )
                continue
            done.append(node)
            if rev.irreversible:
                notes.append(f"{node} is irreversible: upgraded, not round-tripped")
                continue
            runner.notify(node, "downgrade")
            error = runner.run(node, upgrade=False)
            if error is not None:
                runner.report(
                    "MG603",
                    node,
                    f"downgrading {node} right after its upgrade failed: {error}",
                    "fix downgrade() so that it undoes upgrade() on the schema upgrade() leaves",
                    "downgrade",
                )
                continue
            changes = diff(start, runner.schema(service))
            if changes:
                _report_diff(runner, node, changes, "right after its upgrade")
                continue
            runner.notify(node, "reupgrade")
            error = runner.run(node, upgrade=True)
            if error is not None:
                runner.report(
                    "MG602",
                    node,
                    f"upgrading {node} again after its downgrade failed: {error}",
                    "downgrade() leaves something that upgrade() trips over: make it undo everything",
                    "upgrade",
                )
        _to_base_and_back(runner, done, before, subjects, skipped, notes)
    finally:
        runner.close()
    for service, node in sorted(runner.broken.items()):
        later = sum(1 for s, _ in skipped if s.partition("@")[0] == service and not s.endswith("@base"))
        if later:
            notes.append(f"the round trip of '{service}' stopped at {node}: {later} later step(s) not round-tripped")
    copies = [s for s, _ in skipped if s in graph.copies]
    if copies:
        notes.append("copy steps skipped in the round trip (they move rows, not schema): " + ", ".join(copies))
    return RuleOutcome("roundtrip", tuple(subjects), tuple(runner.findings), tuple(skipped), tuple(notes))


def _report_diff(runner: _Runner, node: str, changes: list[str], when: str) -> None:
    shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    runner.report(
        "MG601",
        node,
        f"downgrading {node} {when} does not give back the schema it upgraded from: {shown}",
        "make downgrade() undo exactly what upgrade() does (drop what it creates, re-create what it drops, "
        "with the same indexes, constraints and foreign keys)",
        "downgrade",
    )


def _to_base_and_back(
    runner: _Runner,
    done: list[str],
    before: dict[str, Schema],
    subjects: list[str],
    skipped: list[tuple[str, str]],
    notes: list[str],
) -> None:
    graph = runner.graph
    services = sorted({n.partition("@")[0] for n in done})
    down_order = list(reversed(graph.order(done)))
    stopped: dict[str, str] = {}  # service -> why its descent stopped short of base
    for node in down_order:
        rev = graph.revisions[node]
        service = rev.service
        if service in runner.broken or service in stopped:
            continue
        if rev.irreversible:
            stopped[service] = f"{node} is irreversible"
            continue
        runner.notify(node, "to-base")
        error = runner.run(node, upgrade=False)
        if error is not None:
            runner.report(
                "MG603",
                node,
                f"downgrading {node} on the way down to base failed: {error}",
                "fix downgrade() so that it works on the schema the later revisions' downgrades leave",
                "downgrade",
            )
            continue
        if node in before:
            changes = diff(before[node], runner.schema(service))
            if changes:
                _report_diff(runner, node, changes, "on the way down to base")
    for service in services:
        subject = f"{service}@base"
        if service in runner.broken:
            skipped.append((subject, f"the round trip of '{service}' stopped at {runner.broken[service]}"))
            continue
        if service in stopped:
            skipped.append((subject, f"cannot go down to base: {stopped[service]}"))
            notes.append(f"'{service}' was not taken down to base: {stopped[service]}")
        subjects.append(subject)
        if service not in stopped:
            left = sorted(runner.schema(service))
            if left:
                node = _creator(runner, service, left[0]) or next(n for n in done if n.startswith(service + "@"))
                runner.report(
                    "MG604",
                    node,
                    f"after downgrading '{service}' to base, tables remain: {', '.join(left)}",
                    f"the downgrade() of the revision that creates {left[0]!r} ({node}) must drop it",
                    "downgrade",
                )
                continue
        for node in graph.order(n for n in done if n.partition("@")[0] == service):
            if service in stopped and node not in _undone(graph, done, service, stopped):
                continue
            runner.notify(node, "to-heads")
            error = runner.run(node, upgrade=True)
            if error is not None:
                runner.report(
                    "MG602",
                    node,
                    f"upgrading {node} again after a downgrade to base failed: {error}",
                    "some downgrade() leaves something behind that this upgrade() trips over",
                    "upgrade",
                )
                break


def _undone(graph: FleetGraph, done: list[str], service: str, stopped: dict[str, str]) -> set[str]:
    """The revisions of a service whose descent stopped at an irreversible one: those above it."""
    nodes = [n for n in graph.order(done) if n.partition("@")[0] == service]
    blocker = stopped[service].split(" ", 1)[0]
    return set(nodes[nodes.index(blocker) + 1 :]) if blocker in nodes else set()


def _creator(runner: _Runner, service: str, table: str) -> str | None:
    """The revision of ``service`` whose upgrade() creates ``table`` (the last one, if several)."""
    found = None
    for rev in runner.graph.services[service].revisions:
        src = runner.sources.get(rev.node)
        if table in src.text and any(op.kind == "create_table" and op.table == table for op in src.ops):
            found = rev.node
    return found
