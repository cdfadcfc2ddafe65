"""What a run returns: the result of apply and rollback, of stamp and of unlock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.core.model import DowngradeStep, Plan
from orchestrator.project import StepSQL

if TYPE_CHECKING:
    from orchestrator.runtime.journal import LockInfo


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


def noop_notes(plan: Plan) -> list[str]:
    """One line per step of a rollback that is undone as a no-op, saying what stays."""
    return [f"{step.id}: {step.note}" for step in plan.steps if isinstance(step, DowngradeStep) and step.noop]


def dry_message(plan: Plan) -> str:
    if not plan.steps:
        return f"Dry run: nothing to do on env {plan.env}."
    message = f"Dry run: {len(plan.steps)} step(s) would run on env {plan.env}; nothing was changed."
    return "\n".join([message, *noop_notes(plan)])
