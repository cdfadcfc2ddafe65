"""The journal and the environment lock, in the state database (``state_url``).

Tables (created and versioned by the tool itself; ``migrate_meta`` holds the schema version):

* ``migrate_runs``: one row per apply or rollback run;
* ``migrate_steps``: one row per step of a run, written before the step starts and after it
  ends (status, timings, error, revision-file checksum, copy checkpoint and throughput);
* ``migrate_lock``: at most one row per environment, naming the run that holds it.

Every text that reaches these tables passes through the redaction function first.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.core.manifest import state_url
from orchestrator.core.model import Manifest
from orchestrator.core.redact import redact_text
from orchestrator.errors import LockHeldError
from orchestrator.runtime.engines import create_engine, sqlite_path

SCHEMA_VERSION = 1
LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0

metadata = sa.MetaData()
meta_table = sa.Table(
    "migrate_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
runs = sa.Table(
    "migrate_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("env", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # apply | rollback
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.String(40), nullable=False),
    sa.Column("finished", sa.String(40)),
    # running | succeeded | rolled_back | failed | needs_attention | interrupted
    sa.Column("outcome", sa.String(30), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("undoes_run", sa.String(40)),
    sa.Column("undone_by", sa.String(40)),
    sa.Column("resumes_run", sa.String(40)),
    # services whose database had never been migrated before this run (comma-separated):
    # undoing the whole run also removes the version table it created there
    sa.Column("fresh_services", sa.Text),
)
steps = sa.Table(
    "migrate_steps",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # upgrade | downgrade | copy | revert_copy
    sa.Column("service", sa.String(100)),
    sa.Column("revision", sa.String(64)),
    # pending | running | applied | failed | undone | undo_failed | interrupted | skipped
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("started", sa.String(40)),
    sa.Column("finished", sa.String(40)),
    sa.Column("seconds", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("statements", sa.Text),
    sa.Column("checksum", sa.String(64)),
    sa.Column("checkpoint", sa.Text),
    sa.Column("rows", sa.BigInteger),
    sa.Column("rows_per_second", sa.Float),
    sa.Column("completed_at", sa.Float),  # monotonic-ish ordering of completions (time.time())
)
sa.Index("ix_migrate_steps_node", steps.c.node)
lock_table = sa.Table(
    "migrate_lock",
    metadata,
    sa.Column("env", sa.String(100), primary_key=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("since", sa.String(40), nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def whoami() -> tuple[str, str, int]:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    host = socket.gethostname()
    pid = os.getpid()
    return f"{user}@{host} pid {pid}", host, pid


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

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "holder": self.holder,
            "since": self.since,
            "liveness": self.liveness(),
        }


class Journal:
    """One environment's journal and lock. Safe to open from several processes."""

    def __init__(self, url: str, env: str, *, create: bool = True):
        self.url = url
        self.env = env
        # A small pool: the journal is written twice per step, and a new SQLite connection
        # (with its PRAGMAs) per write would cost more than the write itself.
        self.engine = create_engine(url, poolclass=sa.pool.QueuePool, pool_size=2, max_overflow=4)
        self._sqlite_path = sqlite_path(url)
        self._raw: Any = None
        if sqlite_path(url):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            self._ensure_schema()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.engine.dispose()

    def _ensure_schema(self) -> None:
        with self.engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
            if row is None:
                conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the journal at {redact_text(self.url)} has schema version {row[0]}, newer than this "
                    f"tool's {SCHEMA_VERSION}: upgrade the tool"
                )

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        for attempt in range(50):
            try:
                with self.engine.begin() as conn:
                    yield conn
                return
            except sa.exc.OperationalError as exc:  # SQLite "database is locked" under contention
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))

    # -- runs -----------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        kind: str,
        fingerprint: str | None,
        plan_steps: list[dict[str, Any]],
        undoes_run: str | None = None,
        resumes_run: str | None = None,
        fresh_services: tuple[str, ...] = (),
    ) -> None:
        holder, host, pid = whoami()
        with self.tx() as conn:
            conn.execute(
                sa.insert(runs).values(
                    id=run_id,
                    env=self.env,
                    kind=kind,
                    fingerprint=fingerprint,
                    holder=holder,
                    host=host,
                    pid=pid,
                    started=now_iso(),
                    outcome="running",
                    undoes_run=undoes_run,
                    resumes_run=resumes_run,
                    fresh_services=",".join(fresh_services) or None,
                )
            )
            if plan_steps:
                conn.execute(sa.insert(steps), [{"run_id": run_id, "status": "pending", **s} for s in plan_steps])

    def finish_run(self, run_id: str, outcome: str, error: str | None = None) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(runs)
                .where(runs.c.id == run_id)
                .values(finished=now_iso(), outcome=outcome, error=redact_text(error) if error else None)
            )

    def mark_undone(self, run_id: str, by: str) -> None:
        with self.tx() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(undone_by=by))

    def step_update(self, run_id: str, seq: int, **values: Any) -> None:
        for key in ("error", "statements"):
            if values.get(key):
                values[key] = redact_text(str(values[key]))
        if values.get("status") in ("applied", "undone", "failed", "undo_failed"):
            values.setdefault("completed_at", time.time())
        with self.tx() as conn:
            conn.execute(sa.update(steps).where(steps.c.run_id == run_id, steps.c.seq == seq).values(**values))

    def step_updates(self, run_id: str, updates: list[tuple[int, dict[str, Any]]]) -> None:
        """Several step updates in one transaction (one step ends as the next one starts).

        This is the per-step hot path; on a SQLite state database it goes straight to the
        driver (a tenth of the cost of building the statements each time)."""
        now = time.time()
        rows = []
        for seq, values in updates:
            values = dict(values)
            for key in ("error", "statements"):
                if values.get(key):
                    values[key] = redact_text(str(values[key]))
            if values.get("status") in ("applied", "undone", "failed", "undo_failed"):
                values.setdefault("completed_at", now)
            rows.append((seq, values))
        if self._sqlite_path is not None:
            self._sqlite_updates(run_id, rows)
            return
        with self.tx() as conn:
            for seq, values in rows:
                conn.execute(sa.update(steps).where(steps.c.run_id == run_id, steps.c.seq == seq).values(**values))

    def _sqlite_updates(self, run_id: str, rows: list[tuple[int, dict[str, Any]]]) -> None:
        import sqlite3

        if self._raw is None:
            assert self._sqlite_path is not None
            self._raw = sqlite3.connect(self._sqlite_path, isolation_level=None, timeout=30)
            self._raw.execute("PRAGMA busy_timeout=30000")
        conn = self._raw
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for seq, values in rows:
                        names = sorted(values)
                        assignments = ", ".join(f"{steps.c[n].name} = ?" for n in names)  # known columns only
                        conn.execute(
                            f"UPDATE migrate_steps SET {assignments} WHERE run_id = ? AND seq = ?",
                            [values[n] for n in names] + [run_id, seq],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def step_checkpoint(self, run_id: str, seq: int, checkpoint: str, rows: int) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(steps)
                .where(steps.c.run_id == run_id, steps.c.seq == seq)
                .values(checkpoint=checkpoint, rows=rows)
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id, runs.c.env == self.env)).mappings().first()
            return dict(row) if row else None

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(runs).where(runs.c.env == self.env).order_by(runs.c.started.desc(), runs.c.id.desc())
            if limit:
                q = q.limit(limit)
            return [dict(r) for r in conn.execute(q).mappings()]

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq)
            return [dict(r) for r in conn.execute(q).mappings()]

    def last_undoable_run(self) -> dict[str, Any] | None:
        for run in self.runs():
            if run["kind"] == "apply" and run["outcome"] == "succeeded" and not run["undone_by"]:
                return run
        return None

    def completed_copies(self) -> tuple[str, ...]:
        """Copy names whose most recent copy/revert step left the rows copied."""
        with self.engine.connect() as conn:
            q = (
                sa.select(steps.c.node, steps.c.kind, steps.c.status, steps.c.completed_at)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(runs.c.env == self.env, steps.c.node.like("copy:%"))
                .where(steps.c.status.in_(("applied", "undone")))
                .order_by(steps.c.completed_at)
            )
            state: dict[str, bool] = {}
            for node, kind, status, _ in conn.execute(q):
                name = node[len("copy:") :]
                if kind == "copy":
                    state[name] = status == "applied"
                elif kind == "revert_copy" and status == "applied":
                    state[name] = False
            return tuple(sorted(n for n, done in state.items() if done))

    def copy_checkpoint(self, name: str, *, for_revert: bool) -> str | None:
        """For a copy: the checkpoint of an interrupted attempt to resume from. For a revert:
        the checkpoint of the copy that completed (it knows which target rows pre-existed)."""
        node = f"copy:{name}"
        with self.engine.connect() as conn:
            q = (
                sa.select(steps.c.checkpoint, steps.c.status)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(runs.c.env == self.env, steps.c.node == node, steps.c.kind == "copy")
                .where(steps.c.checkpoint.is_not(None))
                .order_by(steps.c.started.desc())
            )
            for checkpoint, status in conn.execute(q):
                if for_revert and status in ("applied", "undone"):
                    return str(checkpoint)
                if not for_revert:
                    if status in ("running", "interrupted"):
                        return str(checkpoint)
                    return None
        return None

    # -- interrupted runs -----------------------------------------------------------------
    def running_runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(runs).where(runs.c.env == self.env, runs.c.outcome == "running").order_by(runs.c.started)
            return [dict(r) for r in conn.execute(q).mappings()]

    def mark_interrupted(self, run_id: str) -> None:
        with self.tx() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(outcome="interrupted", finished=now_iso()))
            conn.execute(
                sa.update(steps)
                .where(steps.c.run_id == run_id, steps.c.status == "running")
                .values(status="interrupted")
            )

    # -- lock -----------------------------------------------------------------------------
    def lock_info(self) -> LockInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(lock_table).where(lock_table.c.env == self.env)).mappings().first()
        return LockInfo(**row) if row else None

    def acquire(self, run_id: str, wait: float = 0.0) -> LockInfo | None:
        """Take the environment lock. Returns the stale lock it took over, if any."""
        holder, host, pid = whoami()
        deadline = time.monotonic() + wait
        while True:
            taken_over: LockInfo | None = None
            current = self.lock_info()
            if current is not None and current.liveness() != "alive":
                with self.tx() as conn:
                    conn.execute(
                        sa.delete(lock_table).where(lock_table.c.env == self.env, lock_table.c.run_id == current.run_id)
                    )
                taken_over = current
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
                return taken_over
            except sa.exc.IntegrityError:
                pass
            current = self.lock_info()
            if time.monotonic() >= deadline:
                who = f"run {current.run_id} by {current.holder} since {current.since}" if current else "another run"
                raise LockHeldError(
                    f"env '{self.env}' is locked by {who}, which may still be running",
                    f"wait for it (--wait SECONDS), or if it is gone for sure: `migrate unlock --env {self.env} --yes`",
                )
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

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

    def force_release(self) -> LockInfo | None:
        info = self.lock_info()
        if info is not None:
            with self.tx() as conn:
                conn.execute(sa.delete(lock_table).where(lock_table.c.env == self.env))
        return info


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Heartbeat:
    """Renews the lock's lease while a run goes on, so other hosts see it alive."""

    def __init__(self, journal: Journal, run_id: str):
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


def journal_exists(manifest: Manifest, env: str, environ: Mapping[str, str] | None = None) -> bool:
    url = state_url(manifest, env, environ)
    path = sqlite_path(url)
    return path is None or os.path.exists(path)


def open_journal(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None, create: bool = True
) -> Journal:
    return Journal(state_url(manifest, env, environ), env, create=create)


def completed_copies(manifest: Manifest, env: str, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    if not journal_exists(manifest, env, environ):
        return ()
    journal = open_journal(manifest, env, environ, create=False)
    try:
        return journal.completed_copies()
    except sa.exc.DatabaseError:
        return ()
    finally:
        journal.close()


def status_summary(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(last run, interrupted run, lock) for `migrate status`; reads only, creates nothing."""
    if not journal_exists(manifest, env, environ):
        return None, None, None
    journal = open_journal(manifest, env, environ, create=False)
    try:
        recent = journal.runs(limit=20)
        last = _run_brief(recent[0]) if recent else None
        interrupted = None
        lock = journal.lock_info()
        for run in recent:
            holder_alive = lock is not None and lock.run_id == run["id"] and lock.liveness() == "alive"
            if run["outcome"] == "interrupted" or (run["outcome"] == "running" and not holder_alive):
                interrupted = _run_brief(run)
                steps_ = journal.run_steps(run["id"])
                touched = [s for s in steps_ if s["status"] != "pending"]
                if touched:
                    s = touched[-1]
                    interrupted["last_step"] = {"node": s["node"], "status": s["status"]}
                break
        return last, interrupted, lock.to_json() if lock else None
    except sa.exc.DatabaseError:
        return None, None, None
    finally:
        journal.close()


def _run_brief(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "kind": run["kind"],
        "outcome": run["outcome"],
        "started": run["started"],
        "finished": run["finished"],
        "holder": run["holder"],
        "error": run["error"],
    }


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
