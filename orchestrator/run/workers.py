"""Where one unit of work runs: the ``UnitRunner`` seam.

The executor hands each unit to a ``UnitRunner`` and waits on the futures it returns. Today
the one implementation is ``LocalProcessPool``: worker processes of this machine (Alembic's
``context``/``op`` are process-wide, so never threads). Remote workers (a Celery queue, SPEC
§11) would be a second implementation of the same interface.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, Protocol

from orchestrator.events import Event
from orchestrator.run.units import Unit, UnitContext, UnitResult, run_unit_in_worker, worker_init


class UnitRunner(Protocol):
    """Runs units somewhere else and reports each one's result through a future; its events
    reach the run's observer. Entered before the first unit, left after the last one ended."""

    def __enter__(self) -> UnitRunner: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def submit(self, unit: Unit) -> Future[UnitResult]: ...


class LocalProcessPool:
    """Units run in up to ``jobs`` worker processes of this machine.

    fork where the platform has it: a worker starts with everything imported at once; it
    drops the parent's pooled connections first (see worker_init). Each worker dies with this
    process (see orchestrator/lifeline.py): the pool forks them from this thread, which
    outlives them (PR_SET_PDEATHSIG follows the forking thread).
    """

    def __init__(self, jobs: int, ctx: UnitContext, emit: Callable[[Event], None]):
        self.jobs = jobs
        self.ctx = ctx
        self.emit = emit
        self._stack = ExitStack()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalProcessPool:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ExitStack() as stack:
            pump = stack.enter_context(_EventPump(context, self.emit))
            init = (pump.queue, os.getpid())
            self._pool = stack.enter_context(
                ProcessPoolExecutor(self.jobs, mp_context=context, initializer=worker_init, initargs=init)
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)
        self._pool = None

    def submit(self, unit: Unit) -> Future[UnitResult]:
        assert self._pool is not None, "submit() outside `with`"
        return self._pool.submit(run_unit_in_worker, unit, self.ctx)


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


__all__ = ["LocalProcessPool", "UnitRunner"]
