"""The journal's connection to the state database: opening it (SQLite in WAL mode), creating and
versioning its schema once however many runs open a fresh state database at once, and the
write transaction every journal write goes through. Also the clock and the identity
(``now_iso``, ``new_run_id``, ``whoami``) that journal rows record."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa

from orchestrator.core.redact import redact_text
from orchestrator.errors import LockHeldError, MigrateError
from orchestrator.lifeline import exit_if_orphaned
from orchestrator.runtime.engines import create_engine, sqlite_path
from orchestrator.runtime.journal.schema import SCHEMA_VERSION, meta_table, metadata


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


class JournalBase:
    """One environment's state database: its engine, its schema, its write transaction."""

    def __init__(self, url: str, env: str, *, create: bool = True):
        self.url = url
        self.env = env
        # A small pool: the journal is written twice per step, and a new SQLite connection
        # (with its PRAGMAs) per write would cost more than the write itself.
        self.engine = create_engine(url, poolclass=sa.pool.QueuePool, pool_size=2, max_overflow=4)
        self._sqlite_path = sqlite_path(url)
        self._raw: sqlite3.Connection | None = None
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
        with self.engine.connect() as guard, _creating_schema_guard(guard):
            self._create_schema()

    def _create_schema(self) -> None:
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

    def _raw_sqlite(self) -> sqlite3.Connection:
        """The driver's own connection to a SQLite state file, for the per-step hot path."""
        if self._raw is None:
            assert self._sqlite_path is not None
            self._raw = sqlite3.connect(self._sqlite_path, isolation_level=None, timeout=30)
            self._raw.execute("PRAGMA busy_timeout=30000")
        return self._raw


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


# PostgreSQL's lock belongs to the schema transaction and ends with its commit. MariaDB's named
# lock is taken on a connection of its own around the whole transaction: released inside it,
# another creator could read the meta table before this one's row is committed, and insert it
# again.
_SCHEMA_LOCKS = {"postgresql": _pg_schema_lock}
_SCHEMA_GUARDS = {"mysql": _mysql_schema_lock, "mariadb": _mysql_schema_lock}


def _creating_schema(conn: sa.Connection) -> AbstractContextManager[None]:
    return _SCHEMA_LOCKS.get(conn.dialect.name, _no_schema_lock)(conn)


def _creating_schema_guard(conn: sa.Connection) -> AbstractContextManager[None]:
    return _SCHEMA_GUARDS.get(conn.dialect.name, _no_schema_lock)(conn)
