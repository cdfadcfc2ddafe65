"""A run's session: the environment lock (in the journal), its heartbeat and the databases'
advisory locks, all held on one ``ExitStack`` and released in reverse order."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, closing
from typing import Any

from orchestrator.core.model import Plan
from orchestrator.project import Project
from orchestrator.runtime.dblock import DatabaseLocks
from orchestrator.runtime.journal import Heartbeat, Journal, LockInfo, new_run_id, open_journal


class Session:
    def __init__(self, project: Project, env: str, wait: float):
        self.project = project
        self.env = env
        self.wait = wait
        self.run_id = new_run_id()
        self.journal: Journal | None = None
        self.took_over: LockInfo | None = None
        self.resumed: tuple[str, ...] = ()
        self._stack = ExitStack()

    @property
    def took_over_json(self) -> dict[str, Any] | None:
        return None if self.took_over is None else {"run_id": self.took_over.run_id, "holder": self.took_over.holder}

    def __enter__(self) -> Session:
        from orchestrator.runtime.engines import dispose_shared

        with ExitStack() as stack:
            journal = stack.enter_context(closing(open_journal(self.project.manifest, self.env, self.project.environ)))
            # a lock that is another run's: the journal is closed and its row left alone
            self.took_over = journal.acquire(self.run_id, self.wait)
            stack.callback(journal.release, self.run_id)
            stack.enter_context(Heartbeat(journal, self.run_id))
            stack.callback(dispose_shared)
            resumed = []
            for run in journal.running_runs():  # we hold the lock: whoever ran these is gone
                journal.mark_interrupted(run["id"])
                resumed.append(str(run["id"]))
            self.resumed = tuple(resumed)
            self.journal = journal
            self._stack = stack.pop_all()
        return self

    def lock_databases(self, plan: Plan) -> None:
        self.lock_services(plan.services)

    def lock_services(self, services: Sequence[str]) -> None:
        locks = DatabaseLocks((s, self.project.url(self.env, s)) for s in services)
        self._stack.callback(locks.release)
        locks.acquire(self.wait)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


__all__ = ["Session"]
