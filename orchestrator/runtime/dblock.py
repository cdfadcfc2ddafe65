"""Advisory locks on the target databases themselves.

So that two orchestrators that share no state database still cannot race on one database,
each run also holds, for its whole length and on a connection of its own:

* PostgreSQL: ``pg_try_advisory_lock(7883946363647714593)`` in each database (the key is
  the bytes ``b"migrate!"`` read as a big-endian signed 64-bit integer). A service's own
  start-up code can wait for migrations with ``SELECT pg_advisory_lock(7883946363647714593)``.
* MySQL/MariaDB: ``GET_LOCK(name, 0)`` where the name is ``migrate:<database name>`` when
  that fits MySQL's 64-character limit on lock names, and otherwise
  ``migrate:<first 39 characters of the database name>:<first 16 hex digits of the SHA-256
  of the UTF-8 database name>`` (exactly 64 characters); ``mysql_lock_name`` computes it.
* SQLite has no such lock; the environment lock in the state database covers it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

import sqlalchemy as sa

from orchestrator.core.redact import redact_url
from orchestrator.errors import LockHeldError
from orchestrator.runtime.engines import dialect_of, shared_engine, unreachable

PG_LOCK_KEY = int.from_bytes(b"migrate!", "big", signed=True)


MYSQL_LOCK_NAME_MAX = 64  # MySQL 5.7+ refuses longer GET_LOCK names
_PREFIX = "migrate:"
_DIGEST = 16


def mysql_lock_name(database: str) -> str:
    """The advisory lock name of one MySQL/MariaDB database: stable, at most 64 characters."""
    name = _PREFIX + database
    if len(name) <= MYSQL_LOCK_NAME_MAX:
        return name
    digest = hashlib.sha256(database.encode("utf-8")).hexdigest()[:_DIGEST]
    keep = MYSQL_LOCK_NAME_MAX - len(_PREFIX) - 1 - _DIGEST
    return f"{_PREFIX}{database[:keep]}:{digest}"


class DatabaseLocks:
    def __init__(self, targets: Iterable[tuple[str, str]]):
        """``targets``: (service, url) pairs; one lock per distinct database URL."""
        seen: dict[str, str] = {}
        for service, url in targets:
            if dialect_of(url) in ("postgresql", "mysql", "mariadb") and url not in seen:
                seen[url] = service
        self.targets = sorted(seen.items(), key=lambda kv: kv[1])
        self._held: list[tuple[sa.Connection, str | None]] = []

    def acquire(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        try:
            for url, service in self.targets:
                engine = shared_engine(url)
                try:
                    conn = engine.connect()
                except sa.exc.DBAPIError as exc:
                    raise unreachable(service, url, exc) from exc
                name = self._lock_name(conn)
                while True:
                    if self._try(conn, name):
                        break
                    if time.monotonic() >= deadline:
                        conn.close()
                        raise LockHeldError(
                            f"the database of '{service}' ({redact_url(url)}) is locked by another migration run",
                            "another orchestrator is migrating it; wait for it (--wait SECONDS)",
                        )
                    time.sleep(0.25)
                self._held.append((conn, name))
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _lock_name(conn: sa.Connection) -> str | None:
        """The MySQL/MariaDB lock name of the connection's database (None on PostgreSQL)."""
        if conn.dialect.name == "postgresql":
            return None
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar()
        conn.commit()
        return mysql_lock_name(str(database or ""))

    @staticmethod
    def _try(conn: sa.Connection, name: str | None) -> bool:
        if name is None:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
        else:
            got = conn.execute(sa.text("SELECT GET_LOCK(:name, 0)"), {"name": name}).scalar()
        conn.commit()
        return bool(got)

    def release(self) -> None:
        for conn, name in reversed(self._held):
            try:
                if name is None:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                else:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
                conn.commit()
            except sa.exc.DBAPIError:
                conn.invalidate()  # a session that may still hold the lock is closed, not pooled
            finally:
                conn.close()
        self._held.clear()

    def __enter__(self) -> DatabaseLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
