"""The entry points of a run: apply, rollback and history (stamp and unlock have their own modules).

The order of work is always: verify the plan file (fingerprint, revision checksums, env),
take the environment lock and the databases' advisory locks, re-read the databases' real
state, then act (``Runner``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestrator.core.model import Plan, RevertCopyStep
from orchestrator.core.planner import ObservedState, plan_rollback_nodes, plan_rollback_to, plan_upgrade
from orchestrator.errors import EXIT_OK, MigrateError
from orchestrator.events import Observer, no_observer
from orchestrator.project import Project, now_iso, observe, render_sql
from orchestrator.run.planfiles import check_protected, check_reversible, check_state, load_plan_file
from orchestrator.run.results import RevertNote, RunResult, dry_message
from orchestrator.run.runner import Runner
from orchestrator.run.session import Session
from orchestrator.runtime.journal import open_journal


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
        saved = load_plan_file(project, name, plan_file)
    if dry_run:
        plan = saved or plan_upgrade(project.graph, observe(project, name), name, targets, created=now_iso())
        if saved is not None:
            check_state(saved, observe(project, name), plan_file or "")
        return RunResult(name, "apply", plan, EXIT_OK, "dry_run", dry_message(plan), sql=render_sql(project, plan))
    check_protected(project, name, confirmed, "apply")
    with Session(project, name, wait) as session:
        state = observe(project, name)
        if saved is not None:
            check_state(saved, state, plan_file or "")
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
        runner = Runner(project, session, plan, "apply", observer, jobs, no_rollback)
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
        return _rollback_plan(project, name, state, run_id, to)

    if dry_run:
        plan, _ = make_plan(observe(project, name))
        check_reversible(project.graph, plan)
        return RunResult(
            name,
            "rollback",
            plan,
            EXIT_OK,
            "dry_run",
            dry_message(plan),
            sql=render_sql(project, plan),
            reverts=_revert_notes(project, name, plan),
        )
    plan, _ = make_plan(observe(project, name))
    check_reversible(project.graph, plan)
    check_protected(project, name, confirmed, "rollback")
    with Session(project, name, wait) as session:
        plan, undone_run = make_plan(observe(project, name))
        check_reversible(project.graph, plan)
        if not plan.steps:
            return RunResult(name, "rollback", plan, EXIT_OK, "nothing_to_do", "Nothing to roll back.")
        session.lock_databases(plan)
        return Runner(project, session, plan, "rollback", observer, 1, False, undoes_run=undone_run).run()


def _rollback_plan(
    project: Project, name: str, state: ObservedState, run_id: str | None, to: str | None
) -> tuple[Plan, str | None]:
    """The rollback plan: back to ``to``, or undoing run ``run_id`` (default: the last one
    not yet undone); with the id of the run it undoes."""
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


def _revert_notes(project: Project, env: str, plan: Plan) -> tuple[RevertNote, ...]:
    """For each copy the plan reverts: what it would carry back and delete. Reads only."""
    from orchestrator.copy import CopyCheckpoint, preview_revert
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
