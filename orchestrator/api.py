"""The library API: what the CLI and the tests call. Returns result objects; never prints.

One module, a little over 600 lines, because it is the one façade the CLI imports: each
command's result type sits beside the function that builds it, and the executor's commands
are re-exported lazily from ``orchestrator.run``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import CopyStep, DowngradeStep, NodeId, Plan, RevertCopyStep, UpgradeStep, service_of
from orchestrator.core.planfile import plan_to_json
from orchestrator.core.planner import pending_nodes, plan_upgrade
from orchestrator.core.redact import redact_text, redact_url
from orchestrator.errors import GraphError, MigrateError
from orchestrator.project import Project, StepSQL, now_iso, observe, open_project, render_sql

if TYPE_CHECKING:  # imported when first used (see __getattr__), not on every command's path
    from orchestrator.core.checks import CheckResult, Finding, Level, RuleOutcome, SourceIndex
    from orchestrator.core.checks.report import github_annotations, junit_xml
    from orchestrator.run import (
        RevertNote,
        RunResult,
        StampResult,
        StepOutcome,
        UnlockResult,
        apply,
        history,
        rollback,
        stamp,
        unlock,
    )

# What the façade re-exports from the executor and the checks, imported on first use: a
# command that does not run or check anything never loads the database layer.
_LAZY = {
    **dict.fromkeys(
        [
            "RevertNote",
            "RunResult",
            "StampResult",
            "StepOutcome",
            "UnlockResult",
            "apply",
            "history",
            "rollback",
            "stamp",
            "unlock",
        ],
        "orchestrator.run",
    ),
    **dict.fromkeys(["CheckResult", "Finding", "Level", "RuleOutcome"], "orchestrator.core.checks"),
    **dict.fromkeys(["github_annotations", "junit_xml"], "orchestrator.core.checks.report"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


# -- services -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceInfo:
    name: str
    script_location: str
    heads: tuple[str, ...]
    revisions: int
    builtin_env: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "script_location": self.script_location,
            "heads": list(self.heads),
            "revisions": self.revisions,
            "env_py": not self.builtin_env,
        }


def list_services(project: Project) -> list[ServiceInfo]:
    root = Path(project.manifest.root)
    out = []
    for name, svc in project.graph.services.items():
        loc = Path(svc.spec.script_location)
        shown = str(loc.relative_to(root)) if loc.is_relative_to(root) else str(loc)
        out.append(ServiceInfo(name, shown, svc.heads, len(svc.revisions), not svc.has_env_py))
    return out


# -- state --------------------------------------------------------------------------------
# -- graph --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphResult:
    graph: FleetGraph
    env: str | None
    pending: frozenset[str] | None  # None when no env was given

    def to_json(self) -> dict[str, Any]:
        g = self.graph
        nodes = []
        for node in g.order():
            if node in g.copies:
                c = g.copies[node]
                item: dict[str, Any] = {
                    "id": node,
                    "kind": "copy",
                    "source": c.source,
                    "target": c.target,
                    "table": c.table,
                }
            else:
                r = g.revisions[node]
                item = {
                    "id": node,
                    "kind": "revision",
                    "service": r.service,
                    "revision": r.revision,
                    "message": r.message,
                    "head": r.revision in g.services[r.service].heads,
                }
            if self.pending is not None:
                item["pending"] = node in self.pending
            nodes.append(item)
        edges = [{"from": e.source, "to": e.target, "kind": e.kind} for e in g.edges()]
        return {"env": self.env, "nodes": nodes, "edges": edges}


def graph(project: Project, env: str | None = None) -> GraphResult:
    if env is None:
        return GraphResult(project.graph, None, None)
    name = project.env(env)
    return GraphResult(project.graph, name, frozenset(pending_nodes(project.graph, observe(project, name))))


# -- status -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceStatus:
    service: str
    database: str  # redacted URL
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: int

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "database": self.database,
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": self.pending,
        }


@dataclass(frozen=True)
class StatusResult:
    env: str
    services: tuple[ServiceStatus, ...]
    pending_copies: tuple[str, ...]
    last_run: dict[str, Any] | None = None
    interrupted_run: dict[str, Any] | None = None
    lock: dict[str, Any] | None = None
    following_copies: tuple[FollowingCopy, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "services": [s.to_json() for s in self.services],
            "pending_copies": list(self.pending_copies),
            "last_run": self.last_run,
            "interrupted_run": self.interrupted_run,
            "lock": self.lock,
            "following_copies": [f.to_json() for f in self.following_copies],
        }


@dataclass(frozen=True)
class FollowingCopy:
    """A follow-mode copy between its step and its cut-over: capture is on."""

    copy: str
    source: str  # service.table
    target: str
    lag: int | None  # entries waiting in the change log; None: its capture is missing

    def to_json(self) -> dict[str, Any]:
        return {"copy": self.copy, "source": self.source, "target": self.target, "lag": self.lag}


def status(project: Project, env: str | None = None) -> StatusResult:
    name = project.env(env)
    state = observe(project, name)
    pending = pending_nodes(project.graph, state)
    heads = state.as_dict()
    rows = []
    for svc_name, svc in project.graph.services.items():
        count = sum(1 for n in pending if service_of(n) == svc_name and n in project.graph.revisions)
        rows.append(
            ServiceStatus(svc_name, redact_url(project.url(name, svc_name)), heads.get(svc_name, ()), svc.heads, count)
        )
    copies = tuple(sorted(n for n in pending if n in project.graph.copies))
    from orchestrator.run.advice import explain_interrupted, nothing_left
    from orchestrator.runtime import journal

    last_run, interrupted, lock = journal.status_summary(project.manifest, name, project.environ)
    if interrupted is not None and nothing_left(interrupted, pending):
        interrupted = None  # taken over, and every step it left is applied: nothing continues it
    if interrupted is not None:
        explain_interrupted(project, name, interrupted)
    following = _following_copies(project, name)
    return StatusResult(name, tuple(rows), copies, last_run, interrupted, lock, following)


def _following_copies(project: Project, env: str) -> tuple[FollowingCopy, ...]:
    """Follow-mode copies that have copied and not cut over yet, with their lag."""
    specs = [c for c in project.manifest.copies if c.mode == "follow"]
    if not specs:
        return ()
    from orchestrator.copy import CopyCheckpoint
    from orchestrator.copy.capture import capture_lag
    from orchestrator.runtime import journal
    from orchestrator.runtime.engines import engine_for

    records = journal.copy_records(project.manifest, [c.name for c in specs], env, project.environ)
    out = []
    for spec in specs:
        record = records.get(spec.name)
        if record is None or record.state != "copied" or CopyCheckpoint.from_json(record.checkpoint).cut_over:
            continue
        with engine_for(project.url(env, spec.source)) as source:
            lag = capture_lag(spec, source)
        out.append(FollowingCopy(spec.name, f"{spec.source}.{spec.table}", f"{spec.target}.{spec.target_table}", lag))
    return tuple(out)


# -- plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    sql: tuple[StepSQL, ...] = ()
    out_path: str | None = None
    estimates: tuple[tuple[str, int | None], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = plan_to_json(self.plan)
        estimates = dict(self.estimates)
        for step in data["steps"]:
            if step["kind"] == "copy":
                step["estimated_rows"] = estimates.get(step["id"])
        if self.sql:
            by_id = {s.step_id: s for s in self.sql}
            for step in data["steps"]:
                rendered = by_id.get(step["id"])
                if rendered is not None:
                    step["sql"] = rendered.sql
                    if rendered.dialect:
                        step["sql_dialect"] = rendered.dialect
                    if rendered.error:
                        step["sql_error"] = rendered.error
            data["sql_dialects"] = sql_dialects(self.sql)
            data["sql_unrendered"] = sum(1 for s in self.sql if s.unrendered)
        return data


def make_plan(
    project: Project,
    env: str | None = None,
    targets: Sequence[str] = (),
    sql: bool = False,
    out: str | None = None,
) -> PlanResult:
    name = project.env(env)
    state = observe(project, name)
    plan = plan_upgrade(project.graph, state, name, targets, created=now_iso())
    rendered = render_sql(project, plan) if sql else ()
    out_path = write_plan(project, plan, out) if out is not None else None
    return PlanResult(plan, rendered, out_path, estimate_copies(project, plan))


def estimate_copies(project: Project, plan: Plan) -> tuple[tuple[str, int | None], ...]:
    """Roughly how many rows each copy step of the plan will move (None: not known yet,
    e.g. the source table is created by an earlier step). Creates nothing."""

    copies = [s for s in plan.steps if isinstance(s, CopyStep)]
    if not copies:
        return ()
    from orchestrator.copy import estimate_rows
    from orchestrator.runtime.engines import create_engine, sqlite_path

    out: list[tuple[str, int | None]] = []
    for step in copies:
        url = project.url(plan.env, step.source)
        path = sqlite_path(url)
        if path is not None and not Path(path).exists():
            out.append((step.id, None))
            continue
        engine = create_engine(url, create_sqlite_dir=False)
        try:
            out.append((step.id, estimate_rows(project.graph.copies[step.id], engine)))
        except Exception:  # an estimate is a courtesy: never fail a plan over it
            out.append((step.id, None))
        finally:
            engine.dispose()
    return tuple(out)


def sql_dialects(sql: Sequence[StepSQL]) -> dict[str, list[str]]:
    """Per service, the dialect(s) its steps were rendered for (normally one)."""
    out: dict[str, list[str]] = {}
    for rendered in sql:
        if rendered.dialect is not None:
            names = out.setdefault(service_of(rendered.step_id), [])
            if rendered.dialect not in names:
                names.append(rendered.dialect)
    return dict(sorted(out.items()))


def write_plan(project: Project, plan: Plan, out: str) -> str:
    """Write the plan file: ``out`` is a path, a folder, a bare file name (put in
    ``plans_dir``), or "" for a generated name in ``plans_dir``."""
    base = Path(project.manifest.plans_dir)
    stamp = plan.created.replace(":", "").replace("-", "")
    default_name = f"{plan.env}-{stamp}-{plan.fingerprint[:8]}.json"
    if not out:
        path = base / default_name
    else:
        path = Path(out)
        if path.is_dir():
            path = path / default_name
        elif "/" not in out and os.sep not in out:
            path = base / path  # a bare file name goes into plans_dir
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan_to_json(plan), indent=2) + "\n", encoding="utf-8")
    return str(path)


# -- new ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewRevisionResult:
    service: str
    revision: str
    path: str
    requires: tuple[str, ...]


def new_revision(project: Project, service: str, message: str, requires: Sequence[str] = ()) -> NewRevisionResult:
    import argparse

    from alembic import command
    from alembic.config import Config

    if service not in project.graph.services:
        project.graph.resolve(f"{service}@head", where="SERVICE")
    resolved = []
    for ref in requires:
        node = project.graph.resolve(ref, where="--requires", allow_symbolic=True)
        if service_of(node) == service:
            raise GraphError(
                f"--requires '{ref}' names the same service; a revision's own history is its down_revision",
                "requires is for revisions of other services",
            )
        resolved.append(node)
    svc = project.graph.services[service]
    if len(svc.heads) > 1:
        raise GraphError(
            f"service '{service}' has {len(svc.heads)} heads ({', '.join(svc.heads)}); "
            "a new revision would add another",
            f"merge them first: alembic merge -m 'merge heads' {' '.join(svc.heads)}",
        )
    location = Path(svc.spec.script_location)
    # quiet: Alembic's own "Generating ... done" would land on stdout (and break --json)
    cfg = Config(cmd_opts=argparse.Namespace(quiet=True))
    cfg.set_main_option("script_location", str(location))
    template = location / "script.py.mako"
    borrowed = not template.is_file()
    if borrowed:  # a bare tree: lend it the built-in template for this one revision
        import shutil

        shutil.copyfile(Path(__file__).parent / "runtime" / "templates" / "script.py.mako", template)
    try:
        script = command.revision(cfg, message=message, head="head" if svc.heads else "base")
    finally:
        if borrowed:
            template.unlink(missing_ok=True)
    scripts = script if isinstance(script, list) else [script]
    created = scripts[0]
    assert created is not None
    path = Path(created.path)
    _write_requires(path, tuple(resolved))
    return NewRevisionResult(service, created.revision, str(path), tuple(resolved))


def _write_requires(path: Path, requires: tuple[str, ...]) -> None:
    """Set the module-level ``requires`` list of a freshly generated revision file."""
    text = path.read_text(encoding="utf-8")
    line = f"requires: list[str] = {list(requires)!r}"
    lines = text.splitlines()
    for i, existing in enumerate(lines):
        if existing.startswith("requires") and "=" in existing:
            lines[i] = line
            break
    else:
        for i, existing in enumerate(lines):
            if existing.startswith("depends_on"):
                lines.insert(i + 1, line)
                break
        else:
            lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- check --------------------------------------------------------------------------------


def check(
    config: str | None = None,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    env: str | None = None,
    roundtrip: bool = False,
    scratch_url: str | None = None,
    plan_file: str | None = None,
    since: str | None = None,
    use_cache: bool = True,
    hook: Callable[[str, str], None] | None = None,
    baseline: str | None = None,
    write_baseline: str | None = None,
) -> CheckResult:
    """Run ``migrate check`` and return its ``CheckResult`` (see orchestrator.core.checks).

    ``baseline`` (a file written by ``write_baseline``) leaves out the findings recorded in it;
    ``write_baseline`` records every finding of this run in that file (not when the workspace
    does not load) and returns the result as that baseline would show it. A baseline file that
    cannot be read is a ``MigrateError`` (exit 2), raised before anything is checked.
    """
    from orchestrator.core.checks.baseline import apply_baseline, baseline_text, parse_baseline

    if baseline is not None and write_baseline is not None:
        raise MigrateError(
            "--baseline and --write-baseline were both given",
            "write the baseline with --write-baseline FILE alone, then check with --baseline FILE",
        )
    entries = None if baseline is None else parse_baseline(_read_baseline(baseline, cwd), baseline)
    result = _check(
        config,
        cwd,
        environ,
        env=env,
        roundtrip=roundtrip,
        scratch_url=scratch_url,
        plan_file=plan_file,
        since=since,
        use_cache=use_cache,
        hook=hook,
    )
    if write_baseline is not None and not result.load_failed:
        target = Path(cwd or ".") / write_baseline
        try:
            target.write_text(baseline_text(result.findings), encoding="utf-8")
        except OSError as exc:
            raise MigrateError(
                f"cannot write the baseline file {write_baseline}: {exc.strerror or exc}",
                "give a path in a folder that exists and that you can write to",
            ) from None
        baseline, entries = write_baseline, parse_baseline(target.read_text(encoding="utf-8"), write_baseline)
    if entries is None or baseline is None:
        return result
    return apply_baseline(result, entries, baseline)


def _read_baseline(path: str, cwd: str | None) -> str:
    try:
        return (Path(cwd or ".") / path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MigrateError(
            f"baseline file {path} does not exist",
            f"record today's findings first: `migrate check --write-baseline {path}`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrateError(
            f"cannot read the baseline file {path}: {getattr(exc, 'strerror', None) or exc}",
            f"write it again with `migrate check --write-baseline {path}`",
        ) from None


def _check(
    config: str | None,
    cwd: str | None,
    environ: Mapping[str, str] | None,
    *,
    env: str | None,
    roundtrip: bool,
    scratch_url: str | None,
    plan_file: str | None,
    since: str | None,
    use_cache: bool,
    hook: Callable[[str, str], None] | None,
) -> CheckResult:
    """``check`` without the baseline.

    A workspace that does not load is a result with one finding and exit code 2. The
    environment is read only when ``env`` is given; the round trip runs on temporary SQLite
    databases, on throw-away databases of the server ``scratch_url``, or (``env`` without
    ``scratch_url``) on that environment's databases: only for an env declared
    ``scratch = true`` (else exit 2, nothing touched), which is returned to the revisions it
    was found at.
    """
    from orchestrator.core import checks
    from orchestrator.core.checks.since import changed_files
    from orchestrator.core.manifest import load_manifest
    from orchestrator.core.revisions import RevisionCache, load_services
    from orchestrator.core.workspace import cache_folder
    from orchestrator.run.planfiles import plan_file_outcome

    environ = dict(os.environ if environ is None else environ)
    base = str(Path(cwd or os.getcwd()).resolve())
    loaded: dict[str, Any] = {"since": since, "env": env, "plan_file": plan_file}
    try:
        manifest = load_manifest(config, cwd, environ)
    except MigrateError as exc:
        file = Path(getattr(exc, "file", None) or base)
        root = str(file.parent) if file.is_file() else base
        return checks.failed_load(exc, None, (), root, graph_stage=False, **loaded)
    cache = RevisionCache(cache_folder(manifest) if use_cache else None)
    try:
        services = load_services(list(manifest.services), cache)
    except MigrateError as exc:
        return checks.failed_load(exc, manifest, (), manifest.root, graph_stage=False, **loaded)
    try:
        fleet = FleetGraph(manifest, services)
    except MigrateError as exc:
        return checks.failed_load(exc, manifest, services, manifest.root, graph_stage=True, **loaded)
    project = Project(manifest, fleet, environ)
    sources = checks.SourceIndex(fleet)
    changed = changed_files(manifest.root, since) if since else None
    name = project.env(env) if env is not None else None
    if roundtrip and name is not None and scratch_url is None:
        checks.refuse_roundtrip_in_env(manifest.env(name), manifest.path)
    applied: frozenset[str] | None = None
    pending: list[str] | None = None
    state = None
    if name is not None:
        state = observe(project, name)
        applied = frozenset(fleet.applied_nodes(state.as_dict()))
        pending = [s.id for s in plan_upgrade(fleet, state, name).steps]
    plan_outcome, plan_steps = (None, None) if plan_file is None else plan_file_outcome(project, plan_file, name, state)
    extra: list[RuleOutcome] = []
    where = None
    if roundtrip:
        where, outcome = _roundtrip(project, name, scratch_url, pending or [], applied or frozenset(), sources, hook)
        extra.append(outcome)
    return checks.evaluate(
        fleet,
        sources=sources,
        changed=changed,
        since=since,
        env=name,
        applied=applied,
        pending=pending,
        plan_file=plan_file,
        plan_outcome=plan_outcome,
        plan_steps=plan_steps,
        extra=extra,
        roundtrip=where,
    )


def _roundtrip(
    project: Project,
    name: str | None,
    scratch_url: str | None,
    pending: list[str],
    applied: frozenset[str],
    sources: SourceIndex,
    hook: Callable[[str, str], None] | None,
) -> tuple[str, RuleOutcome]:
    """The round trip of ``check --roundtrip``: where it ran, and its outcome."""
    from orchestrator.runtime.roundtrip import roundtrip as run_roundtrip
    from orchestrator.runtime.roundtrip import roundtrip_in_env
    from orchestrator.runtime.scratch import describe, scratch_databases

    fleet = project.graph
    if name is not None and scratch_url is None:
        urls = {s: project.url(name, s) for s in fleet.services}
        outcome = roundtrip_in_env(fleet, name, urls, pending, applied=applied, sources=sources, hook=hook)
        return f"the databases of env '{name}' (scratch)", outcome
    where = describe(scratch_url)
    with scratch_databases(list(fleet.services), scratch_url) as urls:
        return where, run_roundtrip(fleet, urls, fleet.order(), sources=sources, where=where, hook=hook)


__all__ = [
    "CheckResult",
    "CopyStep",
    "DowngradeStep",
    "Finding",
    "GraphResult",
    "Level",
    "MigrateError",
    "NewRevisionResult",
    "NodeId",
    "PlanResult",
    "Project",
    "RevertCopyStep",
    "RevertNote",
    "RuleOutcome",
    "RunResult",
    "ServiceInfo",
    "StampResult",
    "StatusResult",
    "StepOutcome",
    "StepSQL",
    "UnlockResult",
    "UpgradeStep",
    "apply",
    "check",
    "github_annotations",
    "graph",
    "history",
    "junit_xml",
    "list_services",
    "make_plan",
    "new_revision",
    "now_iso",
    "observe",
    "open_project",
    "redact_text",
    "render_sql",
    "rollback",
    "stamp",
    "status",
    "unlock",
]
