"""``migrate unlock``: release an environment's lock, by force only when asked."""

from __future__ import annotations

from orchestrator.errors import ConfirmationNeededError, LockHeldError
from orchestrator.project import Project
from orchestrator.run.results import UnlockResult
from orchestrator.runtime.journal import LockInfo, open_journal


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
