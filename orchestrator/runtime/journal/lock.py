"""The environment lock (``migrate_lock``): who holds it, whether the holder is provably gone,
taking it (over a dead holder's), renewing its lease from a heartbeat thread, releasing it,
and force-releasing it with a record in the journal."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.core.redact import redact_text
from orchestrator.errors import LockHeldError
from orchestrator.runtime.journal.base import JournalBase, new_run_id, now_iso, whoami
from orchestrator.runtime.journal.schema import lock_table, runs

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class LockInfo:
    env: str
    run_id: str
    holder: str
    host: str
    pid: int
    since: str
    lease_until: float

    def liveness(self) -> str:
        """'alive', or why the holder is provably gone."""
        if self.host == socket.gethostname():
            return "alive" if pid_alive(self.pid) else "gone (its process has exited)"
        if self.lease_until < time.time():
            return "gone (its lease expired)"
        return "alive"

    def describe(self) -> str:
        """The holder, named: run id, user, host, pid, since when."""
        user = self.holder.removesuffix(f" pid {self.pid}").removesuffix(f"@{self.host}")
        return f"run {self.run_id} of {user} on host {self.host}, pid {self.pid}, since {self.since}"

    def why_alive(self) -> str:
        """Why a holder whose liveness is 'alive' may still be running."""
        if self.host == socket.gethostname():
            return f"its process {self.pid} is still running on this host"
        until = dt.datetime.fromtimestamp(self.lease_until, dt.UTC).isoformat(timespec="seconds")
        return f"it runs on another host and its lease has not expired (it runs until {until.replace('+00:00', 'Z')})"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "holder": self.holder,
            "since": self.since,
            "liveness": self.liveness(),
        }


class EnvLock(JournalBase):
    """The lock operations of a journal (mixed into ``Journal``)."""

    def lock_info(self) -> LockInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(lock_table).where(lock_table.c.env == self.env)).mappings().first()
        return LockInfo(**row) if row else None

    def acquire(self, run_id: str, wait: float = 0.0) -> LockInfo | None:
        """Take the environment lock. Returns the stale lock it took over, if any.

        Two runs that insert the lock row at once are told apart by the primary key: the
        loser sees the winner's row and reports it (or waits for it with ``wait``)."""
        deadline = time.monotonic() + wait
        while True:
            current = self.lock_info()
            taken_over = None
            if current is not None and current.liveness() != "alive":
                self.release(current.run_id)
                taken_over = current
            if self._insert_lock(run_id):
                return taken_over
            current = self.lock_info()
            if current is None:  # released between our insert and our read: try again
                continue
            if time.monotonic() >= deadline:
                raise LockHeldError(
                    f"env '{self.env}' is locked by {current.describe()}, which may still be running: "
                    f"{current.why_alive()}",
                    f"wait for it (--wait SECONDS); if you know it is stuck: `migrate unlock --env {self.env} --force`",
                )
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def _insert_lock(self, run_id: str) -> bool:
        holder, host, pid = whoami()
        try:
            with self.tx() as conn:
                conn.execute(
                    sa.insert(lock_table).values(
                        env=self.env,
                        run_id=run_id,
                        holder=holder,
                        host=host,
                        pid=pid,
                        since=now_iso(),
                        lease_until=time.time() + LEASE_SECONDS,
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def renew(self, run_id: str) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(lock_table)
                .where(lock_table.c.env == self.env, lock_table.c.run_id == run_id)
                .values(lease_until=time.time() + LEASE_SECONDS)
            )

    def release(self, run_id: str) -> None:
        with self.tx() as conn:
            conn.execute(sa.delete(lock_table).where(lock_table.c.env == self.env, lock_table.c.run_id == run_id))

    def force_release(self, info: LockInfo) -> str | None:
        """Remove the lock of a holder that may still be alive, and say so in the journal.

        In the same transaction as the delete, a run row of kind ``unlock`` (outcome
        ``force_released``) records who released which run's lock and when: a row of its own,
        because the released run, if it goes on, still writes its own row to the end. Returns
        that row's id, or None when the lock had changed hands already (nothing was done)."""
        by, host, pid = whoami()
        record_id = new_run_id()
        text = f"force-released the lock of {info.describe()}, which may still have been running"
        with self.tx() as conn:
            deleted = conn.execute(
                sa.delete(lock_table).where(lock_table.c.env == self.env, lock_table.c.run_id == info.run_id)
            ).rowcount
            if not deleted:
                return None
            when = now_iso()
            conn.execute(
                sa.insert(runs).values(
                    id=record_id,
                    env=self.env,
                    kind="unlock",
                    holder=by,
                    host=host,
                    pid=pid,
                    started=when,
                    finished=when,
                    outcome="force_released",
                    error=redact_text(text),
                )
            )
        return record_id


class Heartbeat:
    """Renews the lock's lease while a run goes on, so other hosts see it alive."""

    def __init__(self, journal: EnvLock, run_id: str):
        self.journal = journal
        self.run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="migrate-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.journal.renew(self.run_id)
            except Exception:  # a missed renewal only shortens the lease; the run goes on
                continue
