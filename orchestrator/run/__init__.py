"""The executor: apply and roll back plans, stamp, unlock, history.

The order of work is always: verify the plan file (``planfiles``), take the environment lock
and the databases' advisory locks (``session``), re-read the databases' real state, then run
(``runner``): ``schedule`` (pure) groups the steps into units, each unit runs in this process
or on a ``UnitRunner`` (``workers``), and every step is journaled (``units``). A failed step
is undone together with everything the run applied (``compensate``).
"""

from __future__ import annotations

from orchestrator.run.commands import apply, history, rollback
from orchestrator.run.results import RevertNote, RunResult, StampResult, StepOutcome, UnlockResult
from orchestrator.run.stamp import stamp
from orchestrator.run.unlock import unlock

__all__ = [
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
]
