"""What `migrate status` shows from the journal: the last run, the run that stopped (where it
stopped, what it had done and left), and the lock. Reads only; creates nothing. The summaries
are JSON-ready dicts (they go out as they are in ``--json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.runtime.journal.schema import RunRow, StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.journal.lock import LockInfo


def stopped_run(recent: list[RunRow], lock: LockInfo | None) -> RunRow | None:
    """The newest run that stopped without finishing, unless a later run went through."""
    for run in recent:
        if run["outcome"] == "succeeded":
            return None  # a later run went through: an older interrupted one is behind us
        holder_alive = lock is not None and lock.run_id == run["id"] and lock.liveness() == "alive"
        if run["outcome"] == "interrupted" or (run["outcome"] == "running" and not holder_alive):
            return run
    return None


def interrupted_brief(run: RunRow, steps_: list[StepRow]) -> dict[str, Any]:
    """A run that stopped: where it stopped, what it had done, what it had left, and the steps
    that were running (with the statements journaled for them, on MySQL/MariaDB)."""
    brief = run_brief(run)
    brief["undoes_run"] = run["undoes_run"]
    touched = [s for s in steps_ if s["status"] != "pending"]
    if touched:
        brief["last_step"] = {"node": touched[-1]["node"], "status": touched[-1]["status"]}
    brief["done"] = [s["node"] for s in steps_ if s["status"] == "applied"]
    brief["left"] = [s["node"] for s in steps_ if s["status"] in ("pending", "running", "interrupted")]
    brief["failed"] = [s["node"] for s in steps_ if s["status"] in ("failed", "undo_failed")]
    brief["undone"] = [s["node"] for s in steps_ if s["status"] == "undone"]
    brief["stopped_in"] = [
        {
            "node": s["node"],
            "kind": s["kind"],
            "service": s["service"],
            "statements": s["statements"].split("\n") if s["statements"] else [],
        }
        for s in steps_
        if s["status"] in ("running", "interrupted")
    ]
    return brief


def run_brief(run: RunRow) -> dict[str, Any]:
    return {
        "id": run["id"],
        "kind": run["kind"],
        "outcome": run["outcome"],
        "started": run["started"],
        "finished": run["finished"],
        "holder": run["holder"],
        "error": run["error"],
    }
