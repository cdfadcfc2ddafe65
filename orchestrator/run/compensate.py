"""Compensation: a failed step is undone together with everything its run applied, in reverse
completion order; a failed undo stops and says what state each database is in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import EXIT_NEEDS_ATTENTION, EXIT_STEP_FAILED
from orchestrator.events import CompensationStarted, RunFinished
from orchestrator.run.results import RunResult
from orchestrator.run.schedule import group, service_of
from orchestrator.run.units import run_unit

if TYPE_CHECKING:
    from orchestrator.run.runner import Runner


_REPAIR = (
    "finish or undo them by hand (see `migrate history`); if you finished the revision, record it with "
    "`migrate stamp`; then `migrate apply` again."
)


def repair_steps(env: str, node: str) -> tuple[str, ...]:
    """The repair of a revision that stopped half-way on a database without transactional DDL."""
    return (
        f"finish or undo by hand what {node} left in {service_of(node)}'s database (and fix the revision if "
        "it is wrong)",
        f"migrate stamp --env {env} {node}   (only if you finished it by hand)",
        f"migrate apply --env {env}",
    )


def compensate(runner: Runner, message: str, partial: str | None = None) -> RunResult:
    """Undo what this run applied. ``partial``: the failed revision, when it may have left
    some of its statements behind (no transactional DDL)."""
    applied = [node for _, _, node in sorted(runner.completed)]
    repair = repair_steps(runner.env, partial) if partial else ()
    if not applied:
        runner.restore_untouched()
        runner.journal.finish_run(runner.run_id, "rolled_back", message)
        runner.emit(RunFinished(runner.run_id, "rolled_back"))
        if partial:
            message += (
                f" No earlier step of this run needed undoing, but the statements of {partial} listed above "
                f"may remain in {service_of(partial)}'s database: {_REPAIR}"
            )
        else:
            message += " Nothing had been applied before it; nothing changed."
        return runner.result(EXIT_STEP_FAILED, "rolled_back", message, next_steps=repair)
    runner.emit(CompensationStarted(runner.run_id, tuple(reversed(applied))))
    from orchestrator.core.planner import downgrade_step

    undo_steps = [downgrade_step(runner.project.graph, node) for node in reversed(applied)]
    for batch in group(undo_steps):
        unit = runner.unit_for(batch, done_status="undone", fail_status="undo_failed")
        result = run_unit(unit, runner.ctx, runner.journal, runner.emit)
        if result.failed:
            return needs_attention(runner, message + f" Then undoing {result.failed[1]} failed: {result.failed[2]}")
    runner.restore_untouched()
    runner.journal.finish_run(runner.run_id, "rolled_back", message)
    runner.emit(RunFinished(runner.run_id, "rolled_back"))
    if partial:
        message += (
            f" Rolled back the {len(applied)} step(s) this run had applied before it; every database is at "
            f"its previous revision, but {service_of(partial)}'s database may still hold the statements of "
            f"{partial} listed above: {_REPAIR}"
        )
    else:
        message += (
            f" Rolled back the {len(applied)} step(s) this run had applied; every database is at its previous revision."
        )
    return runner.result(EXIT_STEP_FAILED, "rolled_back", message, next_steps=repair)


def needs_attention(runner: Runner, message: str) -> RunResult:
    state = runner.state_report()
    rows = {s["node"]: s for s in runner.journal.run_steps(runner.run_id)}
    left = [n for n, s in rows.items() if s["status"] in ("applied", "undo_failed")]
    if runner.kind == "rollback":
        left = [n for n, s in rows.items() if s["status"] in ("pending", "failed")]
    where = "; ".join(f"{svc} is at {', '.join(h) or 'base'}" for svc, h in state.items())
    text = (
        f"{message.rstrip('.')}. The databases need attention: "
        + (where or "their current revisions could not be read")
        + (f". Still to undo: {', '.join(left)}" if left else "")
        + f". The journal (run {runner.run_id}) records each step's status."
    )
    runner.journal.finish_run(runner.run_id, "needs_attention", text)
    runner.emit(RunFinished(runner.run_id, "needs_attention"))
    return runner.result(
        EXIT_NEEDS_ATTENTION,
        "needs_attention",
        text,
        next_steps=(f"migrate status --env {runner.env}", f"migrate history --env {runner.env}"),
    )
