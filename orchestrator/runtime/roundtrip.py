"""``migrate check --roundtrip``: prove on real databases that every downgrade undoes its upgrade.

Step by step in plan order, on each service's own database: reflect the schema, upgrade one
revision, downgrade it, reflect again and compare, then upgrade it again and go on. At the
end, every service goes down to base (the reflected schema must hold none of its tables, and
on the way down each downgrade must give back the schema recorded before that revision's
upgrade) and up to its heads once more. Copy steps move rows, not schema: they are skipped.

A service whose step fails stops there (its database is in an unknown state); the other
services' databases are independent and go on.

On an environment's own databases (``roundtrip_in_env``, only for an env the manifest declares
``scratch = true``), each service's revisions are recorded first and every service is brought
back to them at the end, whatever happened; rows that a downgrade dropped do not come back.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.core.checks.findings import Finding, finding, relative
from orchestrator.core.checks.rules import RuleOutcome, SourceIndex
from orchestrator.core.graph import FleetGraph
from orchestrator.core.manifest import service_environ
from orchestrator.core.model import service_of
from orchestrator.core.redact import redact_text
from orchestrator.errors import EXIT_NEEDS_ATTENTION, MigrateError
from orchestrator.runtime.alembic_runner import run_revisions
from orchestrator.runtime.engines import create_engine, sqlite_path
from orchestrator.runtime.readback import StepReadback
from orchestrator.runtime.state import drop_empty_version_table, read_state

# (node, phase): phase is "upgrade", "downgrade", "reupgrade", "to-base" or "to-heads"
RoundtripHook = Callable[[str, str], None]

EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports it

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
        """Run one revision one way; the error text if it raised, or if the database it was
        given does not show it afterwards (an env.py that migrated another database: the
        service's round trip must stop before it downgrades that one)."""
        rev = self.graph.revisions[node]
        spec = self.graph.services[rev.service].spec
        url, engine = self.urls[rev.service], self.engine(rev.service)
        try:
            with StepReadback(spec, url, engine, upgrade) as readback:
                with engine.connect() as conn:
                    run_revisions(spec, url, conn, [rev.revision], upgrade=upgrade)
                readback.verify(rev.revision, node)
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
    for service in sorted({graph.revisions[n].service for n in steps if n in graph.revisions}):
        # each service's environ with {url} its database here: a missing ${VAR} is bad input
        # (exit 2), said before anything runs, not a failed upgrade
        service_environ(graph.services[service].spec, urls[service], os.environ, file=graph.manifest.path)
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
            _down_and_up_again(runner, node, start)
        _to_base_and_back(runner, done, before, subjects, skipped, notes)
    finally:
        runner.close()
    for service, node in sorted(runner.broken.items()):
        later = sum(1 for s, _ in skipped if service_of(s) == service and not s.endswith("@base"))
        if later:
            notes.append(f"the round trip of '{service}' stopped at {node}: {later} later step(s) not round-tripped")
    copies = [s for s, _ in skipped if s in graph.copies]
    if copies:
        notes.append("copy steps skipped in the round trip (they move rows, not schema): " + ", ".join(copies))
    return RuleOutcome("roundtrip", tuple(subjects), tuple(runner.findings), tuple(skipped), tuple(notes))


def _down_and_up_again(runner: _Runner, node: str, start: Schema) -> None:
    """Downgrade a revision right after its upgrade, compare the schema with ``start``, and
    upgrade it again."""
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
        return
    changes = diff(start, runner.schema(runner.graph.revisions[node].service))
    if changes:
        _report_diff(runner, node, changes, "right after its upgrade")
        return
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
    services = sorted({service_of(n) for n in done})
    stopped = _descend_to_base(runner, done, before)
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
                node = _creator(runner, service, left[0]) or next(n for n in done if service_of(n) == service)
                runner.report(
                    "MG604",
                    node,
                    f"after downgrading '{service}' to base, tables remain: {', '.join(left)}",
                    f"the downgrade() of the revision that creates {left[0]!r} ({node}) must drop it",
                    "downgrade",
                )
                continue
        _back_to_heads(runner, done, service, stopped)


def _descend_to_base(runner: _Runner, done: list[str], before: dict[str, Schema]) -> dict[str, str]:
    """Downgrade every service that round-tripped down to base, newest first, comparing each
    schema with the one its revision upgraded from. Returns, per service, why its descent
    stopped short of base (an irreversible revision)."""
    graph = runner.graph
    stopped: dict[str, str] = {}
    for node in reversed(graph.order(done)):
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
    return stopped


def _back_to_heads(runner: _Runner, done: list[str], service: str, stopped: dict[str, str]) -> None:
    """Upgrade a service again from where its descent stopped, up to its heads."""
    graph = runner.graph
    for node in graph.order(n for n in done if service_of(n) == service):
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
    nodes = [n for n in graph.order(done) if service_of(n) == service]
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


# -- on an environment's own databases ----------------------------------------------------
Found = Mapping[str, tuple[tuple[str, ...], bool]]  # service -> (revisions, version table existed)


@dataclass(frozen=True)
class Returned:
    """Where ``return_to`` left each service: ``states`` for every service, ``problems`` for
    those it could not bring back (what state each is in, and why)."""

    states: tuple[str, ...]
    problems: tuple[tuple[str, str], ...]


def roundtrip_in_env(
    graph: FleetGraph,
    env: str,
    urls: Mapping[str, str],
    steps: Sequence[str],
    *,
    applied: Collection[str] = (),
    sources: SourceIndex | None = None,
    hook: RoundtripHook | None = None,
) -> RuleOutcome:
    """The round trip on the databases of ``env`` (declared ``scratch = true``). Each service's
    revisions are recorded first and restored afterwards whatever happens: after a finding,
    after a revision that raises, after Ctrl-C (then ``RoundtripInterrupted`` is raised)."""
    services = sorted(graph.services)
    found = {s: read_state(urls[s], graph.services[s].spec.version_table, s) for s in services}
    rows = {s: _row_counts(urls[s], graph.services[s].spec.version_table) for s in services}
    where = f"the databases of env '{env}' (scratch)"
    try:
        outcome = roundtrip(graph, urls, steps, applied=applied, sources=sources, where=where, hook=hook)
    except BaseException as exc:  # whatever happened, the databases go back first
        back = return_to(graph, urls, found, hook)
        if isinstance(exc, KeyboardInterrupt):
            raise RoundtripInterrupted(env, back) from None
        if isinstance(exc, MigrateError):
            code = EXIT_NEEDS_ATTENTION if back.problems else exc.exit_code
            raise MigrateError(f"{exc.message}; {_summary(env, back)}", exc.hint, exit_code=code) from exc
        raise
    back = return_to(graph, urls, found, hook)
    notes = [_summary(env, back), *_lost_rows(urls, graph, rows, back)]
    problems = tuple(
        finding(
            "MG605",
            service,
            f"env '{env}': '{service}' {state}",
            f"bring '{service}' back by hand (alembic downgrade/upgrade), then `migrate stamp --env {env}` "
            "if its version table is wrong",
        )
        for service, state in back.problems
    )
    return RuleOutcome(
        outcome.group, outcome.subjects, outcome.findings + problems, outcome.skipped, outcome.notes + tuple(notes)
    )


class RoundtripInterrupted(MigrateError):
    """Ctrl-C during a round trip on an environment's databases, after returning them."""

    def __init__(self, env: str, back: Returned):
        super().__init__(
            f"interrupted; {_summary(env, back)}",
            "the databases that could not be returned need attention" if back.problems else None,
            exit_code=EXIT_NEEDS_ATTENTION if back.problems else EXIT_INTERRUPTED,
        )


def return_to(graph: FleetGraph, urls: Mapping[str, str], found: Found, hook: RoundtripHook | None) -> Returned:
    """Downgrade or upgrade each service (with Alembic) back to the revisions in ``found``."""
    runner = _Runner(graph, urls, SourceIndex(graph), hook)
    states: list[str] = []
    problems: list[tuple[str, str]] = []
    try:
        for service, (revisions, existed) in sorted(found.items()):
            shown = _at(service, revisions) if revisions else f"{service} at base"
            try:
                problem = _return_service(runner, service, revisions, existed)
            except Exception as exc:  # an unreachable database, a broken version table...
                problem = f"could not be returned to {shown}: {error_text(exc, graph.manifest.root)}"
            if problem is None:
                states.append(shown)
            else:
                problems.append((service, problem))
                states.append(f"{service}: {problem}")
    finally:
        runner.close()
    return Returned(tuple(states), tuple(problems))


def _return_service(runner: _Runner, service: str, revisions: tuple[str, ...], existed: bool) -> str | None:
    """Bring one service back to ``revisions``; what state it is in if that fails."""
    graph = runner.graph
    spec = graph.services[service].spec
    url = runner.urls[service]
    now = read_state(url, spec.version_table, service)[0]
    have = graph.service_ancestors(service, now)
    want = graph.service_ancestors(service, revisions)
    stuck = next((n for n in graph.order(have - want) if graph.revisions[n].irreversible), None)
    if stuck is not None:
        return f"is at {_at(service, now)}, not {_at(service, revisions)}: {stuck} is irreversible"
    steps = [(n, False) for n in reversed(graph.order(have - want))] + [(n, True) for n in graph.order(want - have)]
    for node, upgrade in steps:
        runner.notify(node, "return")
        error = runner.run(node, upgrade=upgrade)
        if error is not None:
            now = read_state(url, spec.version_table, service)[0]
            way = "upgrading" if upgrade else "downgrading"
            return f"is at {_at(service, now)}, not {_at(service, revisions)}: {way} {node} failed: {error}"
    now = read_state(url, spec.version_table, service)[0]
    if set(now) != set(revisions):
        return f"is at {_at(service, now)}, not {_at(service, revisions)}"
    if not existed and not revisions:
        drop_empty_version_table(url, spec.version_table)
    return None


def _at(service: str, revisions: Sequence[str]) -> str:
    return " + ".join(f"{service}@{r}" for r in sorted(revisions)) if revisions else "base"


def _summary(env: str, back: Returned) -> str:
    if not back.problems:
        return f"env '{env}' was returned to the revisions it was found at: " + ", ".join(back.states)
    return f"env '{env}' was NOT fully returned to the revisions it was found at: " + "; ".join(back.states)


def _row_counts(url: str, version_table: str) -> dict[str, int]:
    """Rows in each table of a database (none for a SQLite file that does not exist)."""
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        return {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = [t for t in sa.inspect(conn).get_table_names() if t != version_table]
            return {
                t: int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one()) for t in names
            }
    finally:
        engine.dispose()


def _lost_rows(
    urls: Mapping[str, str], graph: FleetGraph, before: Mapping[str, dict[str, int]], back: Returned
) -> list[str]:
    """Notes on tables whose row count changed: a downgrade that drops a table (or the way
    down to base) cannot give its rows back; the revision state comes back, the rows do not."""
    failed = {s for s, _ in back.problems}
    changed: list[str] = []
    for service, counts in sorted(before.items()):
        if service in failed:
            continue
        after = _row_counts(urls[service], graph.services[service].spec.version_table)
        for table, n in sorted(counts.items()):
            if after.get(table, 0) != n:
                changed.append(f"{service}.{table}: {n} row(s) before, {after.get(table, 0)} now")
    if not changed:
        return []
    return ["rows the round trip could not give back (a downgrade dropped them): " + "; ".join(changed)]
