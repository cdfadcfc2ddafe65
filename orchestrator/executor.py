"""Apply and roll back plans: verify, lock, re-read, run, compensate, journal every step.

The order of work is always: verify the plan file (fingerprint, revision checksums, env),
take the environment lock and the databases' advisory locks, re-read the databases' real
state, then act. A failed step is undone together with everything this run applied, in
reverse completion order; a failed undo stops and says what state each database is in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_mod
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from orchestrator.api import Project, StepSQL, now_iso, observe, render_sql
from orchestrator.core.graph import FleetGraph
from orchestrator.core.manifest import state_url
from orchestrator.core.model import CopyStep, DowngradeStep, Plan, RevertCopyStep, Step, UpgradeStep
from orchestrator.core.plancheck import check_plan_steps
from orchestrator.core.planfile import plan_from_json
from orchestrator.core.planner import (
    ObservedState,
    plan_rollback_nodes,
    plan_rollback_to,
    plan_upgrade,
)
from orchestrator.core.pysource import downgrade_kind
from orchestrator.errors import (
    EXIT_NEEDS_ATTENTION,
    EXIT_OK,
    EXIT_STEP_FAILED,
    ConfirmationNeededError,
    LockHeldError,
    MigrateError,
    NeedsAttentionError,
    PlanConflictError,
)
from orchestrator.events import (
    CompensationStarted,
    Event,
    Notice,
    Observer,
    RunFinished,
    RunStarted,
    no_observer,
)
from orchestrator.runtime.dblock import DatabaseLocks
from orchestrator.runtime.journal import Heartbeat, Journal, LockInfo, new_run_id, open_journal
from orchestrator.runtime.units import Item, Unit, UnitContext, UnitResult, run_unit, run_unit_in_worker, worker_init


@dataclass(frozen=True)
class StepOutcome:
    node: str
    kind: str
    status: str
    seconds: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kind": self.kind,
            "status": self.status,
            "seconds": self.seconds,
            "error": self.error,
        }


@dataclass(frozen=True)
class RevertNote:
    """What a copy's revert would do to rows (a dry run of a rollback says it)."""

    node: str
    text: str
    copied_rows: int
    insert_into_source: int
    update_in_source: int
    source_missing: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.node,
            "copied_rows": self.copied_rows,
            "insert_into_source": self.insert_into_source,
            "update_in_source": self.update_in_source,
            "delete_from_target": self.copied_rows,
            "source_missing": self.source_missing,
            "text": self.text,
        }


@dataclass(frozen=True)
class RunResult:
    env: str
    kind: str  # apply | rollback
    plan: Plan
    exit_code: int
    outcome: str  # succeeded | nothing_to_do | dry_run | rolled_back | failed | needs_attention
    message: str
    run_id: str | None = None
    steps: tuple[StepOutcome, ...] = ()
    sql: tuple[StepSQL, ...] = ()
    took_over: dict[str, Any] | None = None
    resumed: tuple[str, ...] = ()
    state_after: dict[str, list[str]] = field(default_factory=dict)
    next_steps: tuple[str, ...] = ()
    reverts: tuple[RevertNote, ...] = ()

    def to_json(self) -> dict[str, Any]:
        from orchestrator.core.planfile import plan_to_json

        return {
            "env": self.env,
            "kind": self.kind,
            "run_id": self.run_id,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
            "plan": plan_to_json(self.plan),
            "steps": [s.to_json() for s in self.steps],
            "took_over_lock": self.took_over,
            "resumed_runs": list(self.resumed),
            "state_after": self.state_after,
            "next_steps": list(self.next_steps),
            **({"sql": [{"id": s.step_id, "sql": s.sql, "error": s.error} for s in self.sql]} if self.sql else {}),
            **({"copy_reverts": [r.to_json() for r in self.reverts]} if self.reverts else {}),
        }


# -- public entry points ------------------------------------------------------------------
def apply(
    project: Project,
    env: str | None = None,
    plan_file: str | None = None,
    targets: Sequence[str] = (),
    dry_run: bool = False,
    confirmed: bool = False,
    no_rollback: bool = False,
    jobs: int = 1,
    wait: float = 0.0,
    observer: Observer = no_observer,
) -> RunResult:
    name = project.env(env)
    saved: Plan | None = None
    if plan_file is not None:
        if targets:
            raise MigrateError("give either a PLAN_FILE or --target, not both", "the plan file already fixes the steps")
        saved = _load_plan_file(project, name, plan_file)
    if dry_run:
        plan = saved or plan_upgrade(project.graph, observe(project, name), name, targets, created=now_iso())
        if saved is not None:
            _check_state(saved, observe(project, name), plan_file or "")
        return RunResult(name, "apply", plan, EXIT_OK, "dry_run", _dry_message(plan), sql=render_sql(project, plan))
    _check_protected(project, name, confirmed, "apply")
    with _Session(project, name, wait) as session:
        state = observe(project, name)
        if saved is not None:
            _check_state(saved, state, plan_file or "")
            plan = saved
        else:
            plan = plan_upgrade(project.graph, state, name, targets, created=now_iso())
        if not plan.steps:
            return RunResult(
                name,
                "apply",
                plan,
                EXIT_OK,
                "nothing_to_do",
                f"Nothing to apply: env {name} is up to date.",
                took_over=session.took_over_json,
                resumed=session.resumed,
            )
        session.lock_databases(plan)
        runner = _Runner(project, session, plan, "apply", observer, jobs, no_rollback)
        runner.untouched = [s for s in state.unmigrated if s in plan.services]
        return runner.run()


def rollback(
    project: Project,
    env: str | None = None,
    run_id: str | None = None,
    to: str | None = None,
    dry_run: bool = False,
    confirmed: bool = False,
    wait: float = 0.0,
    observer: Observer = no_observer,
) -> RunResult:
    name = project.env(env)
    if run_id and to:
        raise MigrateError("give either --run or --to, not both")

    def make_plan(state: ObservedState) -> tuple[Plan, str | None]:
        if to:
            return plan_rollback_to(project.graph, state, name, to, created=now_iso()), None
        journal = open_journal(project.manifest, name, project.environ)
        try:
            run = journal.run(run_id) if run_id else journal.last_undoable_run()
            if run is None:
                if run_id:
                    raise MigrateError(f"env '{name}' has no run '{run_id}'", "`migrate history` lists the runs")
                raise MigrateError(
                    f"env '{name}' has no successful run left to roll back",
                    "`migrate history` lists the runs; use --to service@rev to go back further",
                )
            if run["kind"] != "apply":
                raise MigrateError(f"run {run['id']} is a {run['kind']} run; only apply runs can be rolled back")
            if run["undone_by"]:
                raise MigrateError(f"run {run['id']} was already rolled back by run {run['undone_by']}")
            # A step a crash left "running" may have committed: undo it too if it is applied.
            rows = [s for s in journal.run_steps(run["id"]) if s["status"] in ("applied", "running", "interrupted")]
            rows.sort(key=lambda s: s["completed_at"] or 0)
            nodes = [s["node"] for s in rows]
            return plan_rollback_nodes(project.graph, state, name, nodes, created=now_iso()), str(run["id"])
        finally:
            journal.close()

    if dry_run:
        plan, _ = make_plan(observe(project, name))
        _check_reversible(project.graph, plan)
        return RunResult(
            name,
            "rollback",
            plan,
            EXIT_OK,
            "dry_run",
            _dry_message(plan),
            sql=render_sql(project, plan),
            reverts=_revert_notes(project, name, plan),
        )
    plan, _ = make_plan(observe(project, name))
    _check_reversible(project.graph, plan)
    _check_protected(project, name, confirmed, "rollback")
    with _Session(project, name, wait) as session:
        plan, undone_run = make_plan(observe(project, name))
        _check_reversible(project.graph, plan)
        if not plan.steps:
            return RunResult(name, "rollback", plan, EXIT_OK, "nothing_to_do", "Nothing to roll back.")
        session.lock_databases(plan)
        return _Runner(project, session, plan, "rollback", observer, 1, False, undoes_run=undone_run).run()


@dataclass(frozen=True)
class UnlockResult:
    """What `unlock` did: the lock it released (None: none was held), and, for a holder that
    may still have been alive, the id of the journal record that says it was forced."""

    released: LockInfo | None
    forced_record: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "released": self.released.to_json() if self.released else None,
            "forced": self.forced_record is not None,
            "record": self.forced_record,
        }


def unlock(project: Project, env: str | None, confirmed: bool, force: bool = False) -> UnlockResult:
    """Release the environment's lock. A holder that may be alive (same host and its process
    runs, or another host and its lease has not expired) is refused with exit 3 unless
    ``force``; either release needs ``confirmed`` (--yes or the env's name typed back)."""
    from orchestrator.runtime.journal import journal_exists

    name = project.env(env)
    if not journal_exists(project.manifest, name, project.environ):
        return UnlockResult(None)  # no state database: no lock, and nothing is created
    journal = open_journal(project.manifest, name, project.environ)
    try:
        info = journal.lock_info()
        if info is None:
            return UnlockResult(None)
        alive = info.liveness() == "alive"
        _check_unlock(name, info, alive, confirmed, force)
        if not alive:
            journal.release(info.run_id)
            return UnlockResult(info)
        record = journal.force_release(info)
        if record is None:
            raise LockHeldError(
                f"env '{name}' changed hands while it was being unlocked: nothing was released",
                f"`migrate status --env {name}` shows who holds it now",
            )
        return UnlockResult(info, record)
    finally:
        journal.close()


def _check_unlock(name: str, info: LockInfo, alive: bool, confirmed: bool, force: bool) -> None:
    if alive and not force:
        raise LockHeldError(
            f"env '{name}' is locked by {info.describe()}, which may still be running: {info.why_alive()}. "
            "Nothing was released.",
            f"wait for it to end; if you know it is stuck, `migrate unlock --env {name} --force` releases it "
            "anyway (the journal records that)",
        )
    if confirmed:
        return
    if alive:
        raise ConfirmationNeededError(
            f"env '{name}' is locked by {info.describe()}, which may still be running: {info.why_alive()}. "
            "Releasing it by force needs --yes or a typed confirmation of the env's name.",
            f"re-run `migrate unlock --env {name} --force --yes`, or on a terminal type '{name}' when asked",
            env=name,
        )
    raise ConfirmationNeededError(
        f"env '{name}' is locked by {info.describe()}, which is {info.liveness()}. "
        "Releasing it needs --yes or a typed confirmation of the env's name.",
        f"re-run `migrate unlock --env {name} --yes`, or on a terminal type '{name}' when asked",
        env=name,
    )


@dataclass(frozen=True)
class StampResult:
    env: str
    service: str
    target: str  # a full revision id, or "base"
    before: tuple[str, ...]
    after: tuple[str, ...]
    exit_code: int
    outcome: str  # succeeded | nothing_to_do | failed
    message: str
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "kind": "stamp",
            "run_id": self.run_id,
            "service": self.service,
            "revision": self.target,
            "before": list(self.before),
            "after": list(self.after),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "message": self.message,
        }


def stamp(project: Project, env: str | None, ref: str, confirmed: bool = False, wait: float = 0.0) -> StampResult:
    """Record that a service's database is at ``service@rev`` (or ``service@base``: an empty
    version table) without running any migration: the repair after a revision was finished
    or undone by hand. Locked and journaled like a run of one step."""
    name = project.env(env)
    service, target = _stamp_target(project.graph, ref)
    _check_protected(project, name, confirmed, "stamp")
    with _Session(project, name, wait) as session:
        session.lock_services([service])
        before = observe(project, name, [service]).as_dict().get(service, ())
        if before == (() if target == "base" else (target,)):
            shown = _shown_heads(before)
            return StampResult(
                name, service, target, before, before, EXIT_OK, "nothing_to_do", f"{service} is already at {shown}."
            )
        return _run_stamp(project, session, service, target, before)


def _stamp_target(graph: FleetGraph, ref: str) -> tuple[str, str]:
    service, sep, rev = ref.partition("@")
    if sep and rev == "base" and service in graph.services:
        return service, "base"
    node = graph.resolve(ref, where="stamp")
    if node in graph.copies:
        raise MigrateError(
            f"stamp: '{ref}' is a copy step, which has no version row", "give service@revision or service@base"
        )
    service, _, rev = node.partition("@")
    return service, rev


def _shown_heads(heads: Sequence[str]) -> str:
    return ", ".join(heads) or "base"


def _run_stamp(project: Project, session: _Session, service: str, target: str, before: tuple[str, ...]) -> StampResult:
    import time

    from orchestrator.runtime.journal import now_iso as journal_now
    from orchestrator.runtime.units import database_error

    assert session.journal is not None
    journal, run_id, env = session.journal, session.run_id, session.env
    node = f"{service}@{target}"
    row = {"seq": 1, "node": node, "kind": "stamp", "service": service, "revision": None, "checksum": None}
    if target != "base":
        row["revision"] = target
    journal.start_run(run_id, "stamp", None, [row], resumes_run=session.resumed[-1] if session.resumed else None)
    journal.step_update(run_id, 1, status="running", started=journal_now())
    t0 = time.perf_counter()
    try:
        after = _stamp_database(project, env, service, target)
    except Exception as exc:
        error = exc.message if isinstance(exc, MigrateError) else database_error(exc)
        message = f"stamp {node} failed: {error.rstrip().rstrip('.')}. {service} is at {_shown_heads(before)}."
        journal.step_update(run_id, 1, status="failed", finished=journal_now(), error=error)
        journal.finish_run(run_id, "failed", message)
        return StampResult(env, service, target, before, before, EXIT_STEP_FAILED, "failed", message, run_id)
    moved = json.dumps({"before": list(before), "after": list(after)})
    seconds = time.perf_counter() - t0
    journal.step_update(run_id, 1, status="applied", finished=journal_now(), seconds=seconds, checkpoint=moved)
    journal.finish_run(run_id, "succeeded")
    message = (
        f"Stamped {service} on env {env}: {_shown_heads(before)} -> {_shown_heads(after)} "
        f"(run {run_id}); no migration ran."
    )
    return StampResult(env, service, target, before, after, EXIT_OK, "succeeded", message, run_id)


def _stamp_database(project: Project, env: str, service: str, target: str) -> tuple[str, ...]:
    """Stamp through Alembic, then read the version table back through a connection of our own."""
    from orchestrator.runtime.alembic_runner import stamp_revision
    from orchestrator.runtime.engines import engine_for

    url = project.url(env, service)
    spec = project.graph.services[service].spec
    with engine_for(url) as engine, engine.connect() as conn:
        stamp_revision(spec, url, conn, target)
        if conn.in_transaction():
            conn.commit()
    after = observe(project, env, [service]).as_dict().get(service, ())
    if (target == "base" and after) or (target != "base" and target not in after):
        raise MigrateError(f"the version table of {service} reads {_shown_heads(after)} after the stamp")
    return after


def history(project: Project, env: str | None, limit: int | None = None) -> list[dict[str, Any]]:
    from orchestrator.runtime.journal import journal_exists

    name = project.env(env)
    if not journal_exists(project.manifest, name, project.environ):
        return []
    journal = open_journal(project.manifest, name, project.environ)
    try:
        out = []
        for run in journal.runs(limit=limit):
            run = dict(run)
            run["steps"] = [
                {
                    k: s[k]
                    for k in (
                        "seq",
                        "node",
                        "kind",
                        "status",
                        "started",
                        "finished",
                        "seconds",
                        "error",
                        "rows",
                        "rows_per_second",
                    )
                }
                | _step_extra(s)
                for s in journal.run_steps(run["id"])
            ]
            out.append(run)
        return out
    finally:
        journal.close()


def _step_extra(step: dict[str, Any]) -> dict[str, Any]:
    """What a step adds to its history entry: the statements journaled for a revision that
    failed or stopped on a database without transactional DDL; a stamp's before and after."""
    extra: dict[str, Any] = {}
    if step["statements"] and step["status"] in ("running", "interrupted", "failed", "undo_failed"):
        extra["statements"] = step["statements"].split("\n")
    if step["kind"] == "stamp" and step["checkpoint"]:
        extra.update(json.loads(step["checkpoint"]))
    return extra


# -- checks -------------------------------------------------------------------------------
def _load_plan_file(project: Project, env: str, path: str, check_steps: bool = True) -> Plan:
    file = Path(path)
    if not file.is_file() and not file.is_absolute():
        candidate = Path(project.manifest.plans_dir) / path
        file = candidate if candidate.is_file() else file
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MigrateError(f"cannot read plan file {file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PlanConflictError(f"{file}: not valid JSON ({exc})", "make a new one with `migrate plan --out`") from exc
    plan = plan_from_json(data, str(file))
    if plan.env != env:
        raise PlanConflictError(
            f"{file} was made for env '{plan.env}', not '{env}'",
            f"make a plan for '{env}' with `migrate plan --env {env} --out`",
        )
    if plan.direction != "upgrade":
        raise PlanConflictError(f"{file} is a {plan.direction} plan; `apply` takes upgrade plans")
    changed = []
    for node, checksum in plan.checksums:
        if node.startswith("copy:"):
            spec = project.graph.copies.get(node)
            from orchestrator.core.planner import copy_spec_checksum

            current = copy_spec_checksum(spec) if spec else None
            what = "its [[copies]] entry in the manifest"
        else:
            rev = project.graph.revisions.get(node)
            current = rev.checksum if rev else None
            what = rev.path if rev else "its revision file"
        if current is None:
            changed.append(f"{node} no longer exists")
        elif current != checksum:
            changed.append(f"{node} changed since planning ({what})")
    if changed:
        raise PlanConflictError(
            f"{file} is stale: " + "; ".join(changed), "review the change and make a new plan with `migrate plan --out`"
        )
    if check_steps:
        check_plan_steps(project.graph, plan, str(file))
    return plan


def _check_state(plan: Plan, state: ObservedState, source: str) -> None:
    planned = plan.state_dict()
    now = {s: list(h) for s, h in state.heads}
    moved = []
    for service in sorted(set(planned) | set(now)):
        if service in planned and planned[service] != now.get(service, []):
            moved.append(f"{service} was at {planned[service] or 'base'} and is now at {now.get(service) or 'base'}")
    planned_copies = sorted(c for c in dict(plan.extra).get("completed_copies", "").split(",") if c)
    if planned_copies != sorted(state.completed_copies):
        moved.append(
            f"completed copies were {planned_copies or 'none'} and are now {list(state.completed_copies) or 'none'}"
        )
    if moved:
        raise PlanConflictError(
            f"{source} is stale: the databases moved since it was made: " + "; ".join(moved),
            "make a new plan with `migrate plan --out`",
        )


def _check_protected(project: Project, env: str, confirmed: bool, verb: str) -> None:
    if project.manifest.env(env).protected and not confirmed:
        raise MigrateError(
            f"env '{env}' is protected: {verb} needs --yes or a typed confirmation of its name",
            f"re-run with --yes, or run it on a terminal and type '{env}' when asked",
        )


def _check_reversible(graph: FleetGraph, plan: Plan) -> None:
    """Refuse, before anything changes, a rollback through a revision Alembic cannot undo:
    one marked ``irreversible = True``, or whose downgrade() is missing or raises
    NotImplementedError. An empty downgrade() is undone as a no-op, as Alembic does."""
    blocked = []
    root = graph.manifest.root
    for step in plan.steps:
        if isinstance(step, DowngradeStep):
            rev = graph.revisions[step.id]
            shown = os.path.relpath(rev.path, root) if rev.path.startswith(root + os.sep) else rev.path
            if rev.irreversible:
                blocked.append(f"  {step.id}: marked irreversible = True ({shown})")
            else:
                kind = downgrade_kind(rev.path)
                if kind not in ("real", "empty"):
                    blocked.append(f"  {step.id}: no downgrade() to run ({kind.replace('_', ' ')}) in {shown}")
    if blocked:
        raise MigrateError(
            f"cannot roll back: {len(blocked)} step(s) cannot be undone:\n"
            + "\n".join(blocked)
            + "\nNothing was changed.",
            "roll back to a revision after it (--to service@rev), or restore from a backup",
        )


def _noop_notes(plan: Plan) -> list[str]:
    """One line per step of a rollback that is undone as a no-op, saying what stays."""
    return [f"{step.id}: {step.note}" for step in plan.steps if isinstance(step, DowngradeStep) and step.noop]


def _revert_notes(project: Project, env: str, plan: Plan) -> tuple[RevertNote, ...]:
    """For each copy the plan reverts: what it would carry back and delete. Reads only."""
    from orchestrator.runtime.copy import CopyCheckpoint, preview_revert
    from orchestrator.runtime.engines import create_engine
    from orchestrator.runtime.journal import journal_exists

    reverts = [s for s in plan.steps if isinstance(s, RevertCopyStep)]
    if not reverts or not journal_exists(project.manifest, env, project.environ):
        return ()
    journal = open_journal(project.manifest, env, project.environ, create=False)
    notes = []
    try:
        for step in reverts:
            spec = project.graph.copies[step.id]
            record = journal.copy_record(spec.name)
            checkpoint = None if record is None or record[0] == "reverted" else CopyCheckpoint.from_json(record[1])
            source = create_engine(project.url(env, spec.source))
            target = create_engine(project.url(env, spec.target))
            try:
                preview = preview_revert(spec, source, target, checkpoint)
            finally:
                source.dispose()
                target.dispose()
            notes.append(
                RevertNote(
                    step.id,
                    preview.describe(spec),
                    preview.copied_rows,
                    preview.to_insert,
                    preview.to_update,
                    preview.source_missing,
                )
            )
    finally:
        journal.close()
    return tuple(notes)


def _dry_message(plan: Plan) -> str:
    if not plan.steps:
        return f"Dry run: nothing to do on env {plan.env}."
    message = f"Dry run: {len(plan.steps)} step(s) would run on env {plan.env}; nothing was changed."
    return "\n".join([message, *_noop_notes(plan)])


# -- session: journal + locks -------------------------------------------------------------
class _Session:
    def __init__(self, project: Project, env: str, wait: float):
        self.project = project
        self.env = env
        self.wait = wait
        self.run_id = new_run_id()
        self.journal: Journal | None = None
        self.took_over: LockInfo | None = None
        self.resumed: tuple[str, ...] = ()
        self.db_locks: DatabaseLocks | None = None
        self.heartbeat: Heartbeat | None = None

    @property
    def took_over_json(self) -> dict[str, Any] | None:
        return None if self.took_over is None else {"run_id": self.took_over.run_id, "holder": self.took_over.holder}

    def __enter__(self) -> _Session:
        self.journal = open_journal(self.project.manifest, self.env, self.project.environ)
        try:
            self.took_over = self.journal.acquire(self.run_id, self.wait)
        except BaseException:  # the lock is another run's: close the journal, leave its row alone
            self.journal.close()
            raise
        self.heartbeat = Heartbeat(self.journal, self.run_id).__enter__()
        resumed = []
        for run in self.journal.running_runs():  # we hold the lock: whoever ran these is gone
            self.journal.mark_interrupted(run["id"])
            resumed.append(str(run["id"]))
        self.resumed = tuple(resumed)
        return self

    def lock_databases(self, plan: Plan) -> None:
        self.lock_services(plan.services)

    def lock_services(self, services: Sequence[str]) -> None:
        self.db_locks = DatabaseLocks((s, self.project.url(self.env, s)) for s in services)
        self.db_locks.acquire(self.wait)

    def __exit__(self, *exc: object) -> None:
        from orchestrator.runtime.engines import dispose_shared

        if self.db_locks is not None:
            self.db_locks.release()
        dispose_shared()
        if self.heartbeat is not None:
            self.heartbeat.__exit__()
        if self.journal is not None:
            try:
                self.journal.release(self.run_id)
            finally:
                self.journal.close()


# -- the runner ---------------------------------------------------------------------------
def _step_row(seq: int, step: Step) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seq": seq,
        "node": step.id,
        "kind": step.kind,
        "service": None,
        "revision": None,
        "checksum": None,
    }
    if isinstance(step, UpgradeStep | DowngradeStep):
        row.update(service=step.service, revision=step.revision, checksum=step.checksum or None)
    return row


def _service_of(node: str) -> str:
    return node if node.startswith("copy:") else node.partition("@")[0]


_REPAIR = (
    "finish or undo them by hand (see `migrate history`); if you finished the revision, record it with "
    "`migrate stamp`; then `migrate apply` again."
)


def _repair_steps(env: str, node: str) -> tuple[str, ...]:
    """The repair of a revision that stopped half-way on a database without transactional DDL."""
    return (
        f"finish or undo by hand what {node} left in {_service_of(node)}'s database (and fix the revision if "
        "it is wrong)",
        f"migrate stamp --env {env} {node}   (only if you finished it by hand)",
        f"migrate apply --env {env}",
    )


def _resource(step: Step, project: Project, env: str) -> tuple[str, ...]:
    if isinstance(step, UpgradeStep | DowngradeStep):
        return (project.url(env, step.service),)
    return (project.url(env, step.source), project.url(env, step.target))


class _EventPump:
    """Carries the workers' events to the observer: a plain queue of the workers' own start
    method (no server process that could outlive the run), read by a thread of this one."""

    def __init__(self, context: BaseContext, emit: Callable[[Event], None]):
        self.queue: Any = context.Queue()
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="migrate-events", daemon=True)

    def __enter__(self) -> _EventPump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # The pool has been shut down: every worker flushed its events before it exited.
        self._stop.set()
        self._thread.join(timeout=5)
        self.queue.close()

    def _drain(self) -> None:
        error: Exception | None = None
        while not self._stop.is_set() or not self.queue.empty():
            try:
                event = self.queue.get(timeout=0.1)
            except queue_mod.Empty:
                continue
            except (EOFError, OSError):
                return
            if error is None:
                try:
                    self._emit(event)
                except Exception as exc:  # keep reading: a full queue would stall the workers
                    error = exc
        if error is not None:
            raise error


class _Runner:
    def __init__(
        self,
        project: Project,
        session: _Session,
        plan: Plan,
        kind: str,
        observer: Observer,
        jobs: int,
        no_rollback: bool,
        undoes_run: str | None = None,
    ):
        self.project = project
        self.session = session
        assert session.journal is not None
        self.journal: Journal = session.journal
        self.plan = plan
        self.kind = kind
        self.observer = observer
        self.jobs = max(1, jobs)
        self.no_rollback = no_rollback
        self.undoes_run = undoes_run
        self.run_id = session.run_id
        self.env = plan.env
        self.steps = list(plan.steps)
        self.seq_of = {step.id: i + 1 for i, step in enumerate(self.steps)}
        self.completed: list[tuple[float, int, str]] = []  # (completed_at, seq, node)
        # Services whose database had never been migrated: a full compensation leaves them so.
        self.untouched: list[str] = []
        self._needed_elsewhere: set[str] = set()
        self._priority: dict[str, tuple[int, int]] = {}
        self.ctx = UnitContext(
            run_id=self.run_id,
            env=self.env,
            state_url=state_url(project.manifest, self.env, project.environ),
            specs={name: svc.spec for name, svc in project.graph.services.items()},
            urls={name: project.url(self.env, name) for name in plan.services},
        )

    def emit(self, event: Event) -> None:
        self.observer(event)

    # unit construction
    def _unit_for(self, steps: list[Step], done_status: str = "applied", fail_status: str = "failed") -> Unit:
        first = steps[0]
        items = tuple(
            Item(self.seq_of[s.id], s.id, s.revision if isinstance(s, UpgradeStep | DowngradeStep) else "")
            for s in steps
        )
        if isinstance(first, UpgradeStep | DowngradeStep):
            return Unit(first.kind, items, service=first.service, done_status=done_status, fail_status=fail_status)
        assert isinstance(first, CopyStep | RevertCopyStep)
        return Unit(
            first.kind,
            items,
            copy=self.project.graph.copies[first.id],
            done_status=done_status,
            fail_status=fail_status,
        )

    @staticmethod
    def _group(steps: list[Step]) -> list[list[Step]]:
        groups: list[list[Step]] = []
        for step in steps:
            last = groups[-1][-1] if groups else None
            if (
                last is not None
                and isinstance(step, UpgradeStep | DowngradeStep)
                and isinstance(last, UpgradeStep | DowngradeStep)
                and last.service == step.service
                and last.kind == step.kind
            ):
                groups[-1].append(step)
            else:
                groups.append([step])
        return groups

    def _record(self, result: UnitResult) -> None:
        for seq, node, at in result.done:
            self.completed.append((at, seq, node))

    def _restore_untouched(self, services: list[str] | None = None) -> None:
        from orchestrator.runtime.state import drop_empty_version_table

        for service in self.untouched if services is None else services:
            if service not in self.ctx.urls:
                continue
            spec = self.project.graph.services[service].spec
            drop_empty_version_table(self.ctx.urls[service], spec.version_table)

    def run(self) -> RunResult:
        self.journal.start_run(
            self.run_id,
            self.kind,
            self.plan.fingerprint,
            [_step_row(i + 1, s) for i, s in enumerate(self.steps)],
            undoes_run=self.undoes_run,
            resumes_run=self.session.resumed[-1] if self.session.resumed else None,
            fresh_services=tuple(self.untouched),
        )
        self.emit(RunStarted(self.run_id, self.env, self.kind, tuple(s.id for s in self.steps)))
        if self.session.took_over is not None:
            t = self.session.took_over
            self.emit(Notice(self.run_id, f"took over the lock of run {t.run_id} ({t.holder}): {t.liveness()}"))
        if self.session.resumed:
            self.emit(
                Notice(
                    self.run_id,
                    f"continuing after interrupted run(s) {', '.join(self.session.resumed)} "
                    "from the databases' real state",
                )
            )
        try:
            failure = self._execute_serial() if self.jobs == 1 else self._execute_parallel()
        except BaseException as exc:
            self.journal.finish_run(self.run_id, "interrupted", f"{type(exc).__name__}: {exc}")
            raise
        if failure is None:
            self.journal.finish_run(self.run_id, "succeeded")
            if self.undoes_run:
                self.journal.mark_undone(self.undoes_run, self.run_id)
                undone = self.journal.run(self.undoes_run) or {}
                self._restore_untouched([s for s in (undone.get("fresh_services") or "").split(",") if s])
            self.emit(RunFinished(self.run_id, "succeeded"))
            verb = "applied" if self.kind == "apply" else "rolled back"
            done = f"{len(self.steps)} step(s) {verb} on env {self.env} (run {self.run_id})."
            return self._result(EXIT_OK, "succeeded", "\n".join([done, *_noop_notes(self.plan)]))
        _seq, node, error, statements = failure
        message = f"step {node} failed: {error.rstrip().rstrip('.')}."
        if statements:
            message += (
                f" {_service_of(node)}'s database has no transactional DDL; these statements of the failed "
                "revision may have run and may remain: " + " | ".join(statements) + "."
            )
        if self.kind == "rollback":
            return self._needs_attention(message, [])
        if self.no_rollback:
            self.journal.finish_run(self.run_id, "failed", message)
            self.emit(RunFinished(self.run_id, "failed"))
            return self._result(
                EXIT_STEP_FAILED,
                "failed",
                message + f" Kept the {len(self.completed)} step(s) applied before it (--no-rollback).",
                next_steps=(
                    *(_repair_steps(self.env, node) if statements else ()),
                    f"migrate rollback --env {self.env} --run {self.run_id}",
                    f"migrate apply --env {self.env}",
                ),
            )
        return self._compensate(message, node if statements else None)

    def _execute_serial(self) -> tuple[int, str, str, tuple[str, ...]] | None:
        for group in self._group(self.steps):
            result = run_unit(self._unit_for(group), self.ctx, self.journal, self.emit)
            self._record(result)
            if result.failed:
                return result.failed
        return None

    def _execute_parallel(self) -> tuple[int, str, str, tuple[str, ...]] | None:
        graph = self.project.graph
        in_plan = {s.id for s in self.steps}
        downward = self.kind == "rollback"
        prereq: dict[str, set[str]] = {}
        for s in self.steps:
            deps = graph.successors(s.id) if downward else graph.predecessors(s.id)
            prereq[s.id] = {d for d in deps if d in in_plan}
        resources = {s.id: _resource(s, self.project, self.env) for s in self.steps}
        # Steps that a step of another service (or a copy) waits for end a batch.
        self._needed_elsewhere = {
            dep for s in self.steps for dep in prereq[s.id] if _service_of(dep) != _service_of(s.id)
        }
        # Critical path first: a ready step with the longest chain of steps waiting on it
        # is started before others (list scheduling by height).
        dependents: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for s in self.steps:
            for dep in prereq[s.id]:
                dependents[dep].append(s.id)
        height: dict[str, int] = {}
        for s in reversed(self.steps):  # plan order is a topological order
            height[s.id] = 1 + max((height[d] for d in dependents[s.id]), default=0)
        index = {s.id: i for i, s in enumerate(self.steps)}
        self._priority = {s.id: (-height[s.id], index[s.id]) for s in self.steps}
        remaining = list(self.steps)
        done: set[str] = set()
        busy: set[str] = set()
        failure: tuple[int, str, str, tuple[str, ...]] | None = None
        running: dict[Future[UnitResult], tuple[list[Step], tuple[str, ...]]] = {}
        # fork where the platform has it: a worker starts with everything imported at
        # once; it drops the parent's pooled connections first (see worker_init). Each worker
        # dies with this process (see orchestrator/lifeline.py): the pool forks them from
        # this thread, which outlives them (PR_SET_PDEATHSIG follows the forking thread).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with _EventPump(context, self.emit) as pump:
            init = (pump.queue, os.getpid())
            with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=worker_init, initargs=init) as pool:
                while remaining or running:
                    if failure is None:
                        for batch in self._ready_batches(remaining, prereq, done, busy, resources, len(running)):
                            res = tuple(sorted({r for s in batch for r in resources[s.id]}))
                            busy.update(res)
                            for s in batch:
                                remaining.remove(s)
                            fut = pool.submit(run_unit_in_worker, self._unit_for(batch), self.ctx)
                            running[fut] = (batch, res)
                    if not running:
                        break
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in finished:
                        batch, res = running.pop(fut)
                        busy.difference_update(res)
                        result = fut.result()
                        self._record(result)
                        done.update(node for _, node, _ in result.done)
                        if result.failed and failure is None:
                            failure = result.failed
                    if failure is not None and not running:
                        break
        self.completed.sort()
        return failure

    def _ready_batches(
        self,
        remaining: list[Step],
        prereq: dict[str, set[str]],
        done: set[str],
        busy: set[str],
        resources: dict[str, tuple[str, ...]],
        running: int,
    ) -> list[list[Step]]:
        batches: list[list[Step]] = []
        claimed = set(busy)
        taken: set[str] = set()
        for step in sorted(remaining, key=lambda s: self._priority[s.id]):
            if running + len(batches) >= self.jobs:
                break
            if step.id in taken or not prereq[step.id] <= done:
                continue
            if any(r in claimed for r in resources[step.id]):
                continue
            batch = [step]
            taken.add(step.id)
            if isinstance(step, UpgradeStep | DowngradeStep):
                covered = done | {step.id}
                for nxt in remaining:
                    if nxt.id in taken:
                        continue
                    if batch[-1].id in self._needed_elsewhere:
                        break  # let the other service's step start as soon as this one is done
                    if (
                        isinstance(nxt, UpgradeStep | DowngradeStep)
                        and nxt.service == step.service
                        and nxt.kind == step.kind
                        and prereq[nxt.id] <= covered
                    ):
                        batch.append(nxt)
                        taken.add(nxt.id)
                        covered.add(nxt.id)
            claimed.update(resources[step.id])
            batches.append(batch)
        return batches

    # compensation
    def _compensate(self, message: str, partial: str | None = None) -> RunResult:
        """Undo what this run applied. ``partial``: the failed revision, when it may have left
        some of its statements behind (no transactional DDL)."""
        applied = [node for _, _, node in sorted(self.completed)]
        repair = _repair_steps(self.env, partial) if partial else ()
        if not applied:
            self._restore_untouched()
            self.journal.finish_run(self.run_id, "rolled_back", message)
            self.emit(RunFinished(self.run_id, "rolled_back"))
            if partial:
                message += (
                    f" No earlier step of this run needed undoing, but the statements of {partial} listed above "
                    f"may remain in {_service_of(partial)}'s database: {_REPAIR}"
                )
            else:
                message += " Nothing had been applied before it; nothing changed."
            return self._result(EXIT_STEP_FAILED, "rolled_back", message, next_steps=repair)
        self.emit(CompensationStarted(self.run_id, tuple(reversed(applied))))
        from orchestrator.core.planner import downgrade_step

        undo_steps = [downgrade_step(self.project.graph, node) for node in reversed(applied)]
        for group in self._group(undo_steps):
            unit = self._unit_for(group, done_status="undone", fail_status="undo_failed")
            result = run_unit(unit, self.ctx, self.journal, self.emit)
            if result.failed:
                undone = {node for _, node, _ in result.done}
                return self._needs_attention(
                    message + f" Then undoing {result.failed[1]} failed: {result.failed[2]}", [n for n in undone]
                )
        self._restore_untouched()
        self.journal.finish_run(self.run_id, "rolled_back", message)
        self.emit(RunFinished(self.run_id, "rolled_back"))
        if partial:
            message += (
                f" Rolled back the {len(applied)} step(s) this run had applied before it; every database is at "
                f"its previous revision, but {_service_of(partial)}'s database may still hold the statements of "
                f"{partial} listed above: {_REPAIR}"
            )
        else:
            message += (
                f" Rolled back the {len(applied)} step(s) this run had applied; every database is at its "
                "previous revision."
            )
        return self._result(EXIT_STEP_FAILED, "rolled_back", message, next_steps=repair)

    def _needs_attention(self, message: str, _undone: list[str]) -> RunResult:
        state = self._state_report()
        rows = {s["node"]: s for s in self.journal.run_steps(self.run_id)}
        left = [n for n, s in rows.items() if s["status"] in ("applied", "undo_failed")]
        if self.kind == "rollback":
            left = [n for n, s in rows.items() if s["status"] in ("pending", "failed")]
        where = "; ".join(f"{svc} is at {', '.join(h) or 'base'}" for svc, h in state.items())
        text = (
            f"{message.rstrip('.')}. The databases need attention: "
            + (where or "their current revisions could not be read")
            + (f". Still to undo: {', '.join(left)}" if left else "")
            + f". The journal (run {self.run_id}) records each step's status."
        )
        self.journal.finish_run(self.run_id, "needs_attention", text)
        self.emit(RunFinished(self.run_id, "needs_attention"))
        return self._result(
            EXIT_NEEDS_ATTENTION,
            "needs_attention",
            text,
            next_steps=(f"migrate status --env {self.env}", f"migrate history --env {self.env}"),
        )

    def _heads_after(self) -> dict[str, list[str]]:
        """Each service's heads once every step of the plan has run (no database read)."""
        heads = {svc: set(h) for svc, h in self.plan.state}
        for step in self.plan.steps:
            if isinstance(step, UpgradeStep | DowngradeStep):
                down = step.down_revision
                downs = set() if down is None else {down} if isinstance(down, str) else set(down)
                current = heads.setdefault(step.service, set())
                if isinstance(step, UpgradeStep):
                    heads[step.service] = (current - downs) | {step.revision}
                else:
                    heads[step.service] = (current - {step.revision}) | downs
        return {svc: sorted(h) for svc, h in heads.items() if svc in self.plan.services}

    def _state_report(self) -> dict[str, list[str]]:
        try:
            state = observe(self.project, self.env, list(self.plan.services))
        except MigrateError:
            return {}
        return {s: list(h) for s, h in state.heads}

    def _result(self, code: int, outcome: str, message: str, next_steps: tuple[str, ...] = ()) -> RunResult:
        rows = self.journal.run_steps(self.run_id)
        outcomes = tuple(StepOutcome(r["node"], r["kind"], r["status"], r["seconds"], r["error"]) for r in rows)
        if code == EXIT_STEP_FAILED and not next_steps:
            next_steps = ("fix the failing revision, then `migrate apply --env " + self.env + "`",)
        return RunResult(
            self.env,
            self.kind,
            self.plan,
            code,
            outcome,
            message,
            self.run_id,
            outcomes,
            took_over=self.session.took_over_json,
            resumed=self.session.resumed,
            state_after=self._state_report() if code else self._heads_after(),
            next_steps=next_steps,
        )


__all__ = [
    "NeedsAttentionError",
    "RunResult",
    "StampResult",
    "StepOutcome",
    "UnlockResult",
    "apply",
    "history",
    "rollback",
    "stamp",
    "unlock",
]
