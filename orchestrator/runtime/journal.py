"""The journal and the environment lock, in the state database (``state_url``).

Tables (created and versioned by the tool itself; ``migrate_meta`` holds the schema version):

* ``migrate_runs``: one row per apply or rollback run (and one per ``unlock --force``);
* ``migrate_steps``: one row per step of a run, written before the step starts and after it
  ends (status, timings, error, revision-file checksum, copy checkpoint and throughput);
* ``migrate_lock``: at most one row per environment, naming the run that holds it;
* ``migrate_copies``: one row per environment and copy: what the copy has written into its
  target (its checkpoint: which target keys pre-existed, how far it got) and where it stands
  (``copying``, ``copied``, ``reverting``, ``reverted``). A revert reads what to undo from here,
  whatever the step rows of the runs say: a copy resumed, compensated or interrupted at any
  point is always known.

Every text that reaches these tables passes through the redaction function first.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orchestrator.core.manifest import state_url
from orchestrator.core.model import Manifest
from orchestrator.core.redact import redact_text
from orchestrator.errors import LockHeldError, MigrateError
from orchestrator.lifeline import exit_if_orphaned
from orchestrator.runtime.engines import create_engine, sqlite_path

SCHEMA_VERSION = 2  # 2: migrate_copies
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
    sa.Column("kind", sa.String(20), nullable=False),  # apply | rollback | unlock (a forced release)
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.String(40), nullable=False),
    sa.Column("finished", sa.String(40)),
    # running | succeeded | rolled_back | failed | needs_attention | interrupted | force_released
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
copies_table = sa.Table(
    "migrate_copies",
    metadata,
    sa.Column("env", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),  # copying | copied | reverting | reverted
    sa.Column("checkpoint", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)
COPY_STATES = ("copying", "copied", "reverting", "reverted")


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
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
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
        """Create the tables if absent. Creating the state is part of taking the lock: several
        runs may open a fresh state database at once, so creation is serialised (see
        ``_creating_schema``) and a later creator finds every table and the version row."""
        begin = self.engine.execution_options(sqlite_begin="IMMEDIATE").begin()
        with begin as conn, _creating_schema(conn):
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).first()
            if row is None:
                conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row[0]) < SCHEMA_VERSION:  # create_all above added the new tables
                conn.execute(
                    sa.update(meta_table).where(meta_table.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise MigrateError(
                    f"the journal at {redact_text(self.url)} has schema version {row[0]}, newer than this "
                    f"tool's {SCHEMA_VERSION}; nothing was changed",
                    "upgrade migrate to the version that wrote this journal",
                )

    @contextmanager
    def tx(self) -> Iterator[sa.Connection]:
        """One write transaction. On SQLite it takes the write lock when it begins, so waiting
        for another writer is the busy timeout's job (a reader upgraded to a writer would fail
        at once instead); a body cannot be replayed by a context manager, so none is."""
        exit_if_orphaned()  # a worker whose run has died writes nothing (see lifeline)
        with self._writer.begin() as conn:
            yield conn

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
        exit_if_orphaned()
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
            try:  # the copy record, where there is one, knows better than step statuses
                records = conn.execute(
                    sa.select(copies_table.c.name, copies_table.c.state).where(copies_table.c.env == self.env)
                ).all()
            except sa.exc.DBAPIError:  # a journal of schema 1, read without upgrading it
                records = []
            for name, copy_state in records:
                # "copying" or "reverting": rows of the copy may be on both sides, half moved;
                # it is not complete, so it runs (again) before anything drops its source.
                state[str(name)] = copy_state == "copied"
            return tuple(sorted(n for n, done in state.items() if done))

    # -- what each copy has written ------------------------------------------------------
    def copy_record(self, name: str) -> tuple[str, str] | None:
        """(state, checkpoint JSON) of a copy in this env, or None if it never wrote anything.

        A journal written before ``migrate_copies`` existed falls back to the newest step row
        holding a checkpoint: the copy state it describes is "copied"."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(copies_table.c.state, copies_table.c.checkpoint).where(
                        copies_table.c.env == self.env, copies_table.c.name == name
                    )
                ).first()
        except sa.exc.DBAPIError:  # a journal of schema 1, read without upgrading it (dry run)
            row = None
        if row is not None:
            return str(row[0]), str(row[1])
        with self.engine.connect() as conn:
            legacy = conn.execute(
                sa.select(steps.c.checkpoint)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(runs.c.env == self.env, steps.c.node == f"copy:{name}", steps.c.kind == "copy")
                .where(steps.c.checkpoint.is_not(None))
                .order_by(steps.c.started.desc())
                .limit(1)
            ).first()
        return None if legacy is None else ("copied", str(legacy[0]))

    def reverting_copies(self) -> tuple[str, ...]:
        """Copy names whose revert stopped half-way (rows may be on both sides)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(copies_table.c.name).where(
                        copies_table.c.env == self.env, copies_table.c.state == "reverting"
                    )
                ).all()
        except sa.exc.DBAPIError:  # a journal of schema 1
            return ()
        return tuple(sorted(str(r[0]) for r in rows))

    def set_copy_record(self, name: str, run_id: str, state: str, checkpoint: str | None = None) -> None:
        """Record where a copy stands; ``checkpoint=None`` keeps the one recorded."""
        assert state in COPY_STATES, state
        values: dict[str, Any] = {"state": state, "run_id": run_id, "updated": now_iso()}
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        key = (copies_table.c.env == self.env) & (copies_table.c.name == name)
        with self.tx() as conn:
            if conn.execute(sa.update(copies_table).where(key).values(**values)).rowcount:
                return
            if checkpoint is None:
                raise RuntimeError(f"copy '{name}' has no checkpoint to move to state {state}")
            conn.execute(sa.insert(copies_table).values(env=self.env, name=name, **values))

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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=30000")
        _switch_to_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


WAL_SWITCH_SECONDS = 30.0


def _switch_to_wal(cur: Any) -> None:
    """Put the state file in WAL mode. Switching needs the file to itself, and SQLite answers
    "database is locked" at once (its busy handler is not called for it) when another process
    opens the same fresh file at that moment; so the switch is retried, briefly, until it
    lands or another opener has made it."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    delay = 0.005
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


# A transaction-scoped advisory lock (PostgreSQL) or a named lock (MySQL/MariaDB) held while
# the journal's tables are created, so that two runs opening a fresh state database at once
# do not both create them. On SQLite the schema transaction starts with BEGIN IMMEDIATE
# instead: it holds the write lock before it reads the schema, and other openers wait for it
# (a reader that tries to become a writer after another one wrote fails at once).
STATE_LOCK_KEY = int.from_bytes(b"migstate", "big", signed=True)
SCHEMA_LOCK_SECONDS = 60


@contextmanager
def _pg_schema_lock(conn: sa.Connection) -> Iterator[None]:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": STATE_LOCK_KEY})
    yield  # released when the schema transaction ends


@contextmanager
def _mysql_schema_lock(conn: sa.Connection) -> Iterator[None]:
    name = "LEFT(CONCAT('migrate-state:', DATABASE()), 64)"
    got = conn.execute(sa.text(f"SELECT GET_LOCK({name}, :s)"), {"s": SCHEMA_LOCK_SECONDS}).scalar()
    if not got:
        raise LockHeldError(
            f"the state database is being created by another run, which did not finish in {SCHEMA_LOCK_SECONDS}s",
            "run `migrate status` to see who holds the environment, then try again",
        )
    try:
        yield
    finally:
        conn.execute(sa.text(f"SELECT RELEASE_LOCK({name})"))


@contextmanager
def _no_schema_lock(_conn: sa.Connection) -> Iterator[None]:
    yield


_SCHEMA_LOCKS = {"postgresql": _pg_schema_lock, "mysql": _mysql_schema_lock, "mariadb": _mysql_schema_lock}


def _creating_schema(conn: sa.Connection) -> AbstractContextManager[None]:
    return _SCHEMA_LOCKS.get(conn.dialect.name, _no_schema_lock)(conn)


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


def copy_states(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(completed copies, copies whose revert stopped half-way) of an env; reads only."""
    if not journal_exists(manifest, env, environ):
        return (), ()
    journal = open_journal(manifest, env, environ, create=False)
    try:
        return journal.completed_copies(), journal.reverting_copies()
    except sa.exc.DatabaseError:
        return (), ()
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
            if run["outcome"] == "succeeded":
                break  # a later run went through: an older interrupted one is behind us
            holder_alive = lock is not None and lock.run_id == run["id"] and lock.liveness() == "alive"
            if run["outcome"] == "interrupted" or (run["outcome"] == "running" and not holder_alive):
                interrupted = _interrupted_brief(run, journal.run_steps(run["id"]))
                break
        return last, interrupted, lock.to_json() if lock else None
    except sa.exc.DatabaseError:
        return None, None, None
    finally:
        journal.close()


def _interrupted_brief(run: dict[str, Any], steps_: list[dict[str, Any]]) -> dict[str, Any]:
    """A run that stopped: where it stopped, what it had done, what it had left, and the steps
    that were running (with the statements journaled for them, on MySQL/MariaDB)."""
    brief = _run_brief(run)
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
