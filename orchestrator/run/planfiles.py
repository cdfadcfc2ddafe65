"""Checks made before a run changes anything: a saved plan file is still valid (fingerprint,
checksums, env, the databases' state), a protected env was confirmed, a rollback can be undone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import DowngradeStep, NodeId, Plan
from orchestrator.core.plancheck import check_plan_steps
from orchestrator.core.planfile import plan_from_json
from orchestrator.core.planner import ObservedState
from orchestrator.core.pysource import downgrade_kind
from orchestrator.errors import MigrateError, PlanConflictError
from orchestrator.project import Project

if TYPE_CHECKING:
    from orchestrator.core.checks import RuleOutcome


def resolve_plan_path(project: Project, path: str) -> Path:
    """A plan file's path: as given, or a bare name found in ``plans_dir``."""
    file = Path(path)
    if not file.is_file() and not file.is_absolute():
        candidate = Path(project.manifest.plans_dir) / path
        file = candidate if candidate.is_file() else file
    return file


def load_plan_file(project: Project, env: str, path: str, check_steps: bool = True) -> Plan:
    file = resolve_plan_path(project, path)
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
        if NodeId.parse(node).is_copy:
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


def check_state(plan: Plan, state: ObservedState, source: str) -> None:
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


def check_protected(project: Project, env: str, confirmed: bool, verb: str) -> None:
    if project.manifest.env(env).protected and not confirmed:
        raise MigrateError(
            f"env '{env}' is protected: {verb} needs --yes or a typed confirmation of its name",
            f"re-run with --yes, or run it on a terminal and type '{env}' when asked",
        )


def check_reversible(graph: FleetGraph, plan: Plan) -> None:
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


def plan_file_outcome(
    project: Project, path: str, env: str | None, state: ObservedState | None
) -> tuple[RuleOutcome, list[str] | None]:
    """The plan-file rule: still valid against the files (and, given an environment and its
    observed ``state``, against its databases)."""
    from orchestrator.core.checks import RuleOutcome, finding
    from orchestrator.core.checks.findings import relative
    from orchestrator.core.plancheck import plan_step_problems

    file = resolve_plan_path(project, path).absolute()
    target = env
    if target is None:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            target = str(data.get("env", "")) if isinstance(data, dict) else ""
        except (OSError, ValueError):
            target = ""
    root = project.manifest.root
    subject = relative(str(file), root) or str(file)
    try:
        plan = load_plan_file(project, target, path, check_steps=False)
    except PlanConflictError as exc:
        f = finding("MG501", None, exc.message, exc.hint, file=str(file), root=root)
        return RuleOutcome("plan-file", (subject,), (f,)), None
    # Steps the graph does not allow (an edited plan); with an env, a cross-service
    # requirement applied too late is MG403's to report.
    problems = [
        p
        for p in plan_step_problems(project.graph, plan, str(file))
        if state is None or p.needs not in project.graph.cross_requires.get(p.node, ())
    ]
    if problems:
        hint = "the plan file was edited; make a new one with `migrate plan --out` and review that"
        f = finding("MG501", problems[0].node, problems[0].message, hint, file=str(file), root=root)
        return RuleOutcome("plan-file", (subject,), (f,)), None
    if state is not None:
        try:
            check_state(plan, state, str(file))
        except PlanConflictError as exc:
            f = finding("MG502", None, exc.message, exc.hint, file=str(file), root=root)
            return RuleOutcome("plan-file", (subject,), (f,)), [s.id for s in plan.steps]
    return RuleOutcome("plan-file", (subject,)), [s.id for s in plan.steps]
