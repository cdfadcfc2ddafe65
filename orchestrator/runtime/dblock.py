"""Advisory locks on the target databases themselves.

So that two orchestrators that share no state database still cannot race on one database,
each run also holds, for its whole length and on a connection of its own:

* PostgreSQL: ``pg_try_advisory_lock(7883946363647714593)`` in each database (the key is
  the bytes ``b"migrate!"`` read as a big-endian signed 64-bit integer). A service's own
  start-up code can wait for migrations with ``SELECT pg_advisory_lock(7883946363647714593)``.
* MySQL/MariaDB: ``GET_LOCK(CONCAT('migrate:', DATABASE()), 0)`` (the lock name is
  ``migrate:<database name>``).
* SQLite has no such lock; the environment lock in the state database covers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa

from orchestrator.core.redact import redact_url
from orchestrator.errors import LockHeldError
from orchestrator.runtime.engines import dialect_of, shared_engine, unreachable

PG_LOCK_KEY = int.from_bytes(b"migrate!", "big", signed=True)


def mysql_lock_name(database: str) -> str:
    return f"migrate:{database}"[:64]


class DatabaseLocks:
    def __init__(self, targets: Iterable[tuple[str, str]]):
        """``targets``: (service, url) pairs; one lock per distinct database URL."""
        seen: dict[str, str] = {}
        for service, url in targets:
            if dialect_of(url) in ("postgresql", "mysql", "mariadb") and url not in seen:
                seen[url] = service
        self.targets = sorted(seen.items(), key=lambda kv: kv[1])
        self._held: list[tuple[sa.Engine, sa.Connection]] = []

    def acquire(self, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        try:
            for url, service in self.targets:
                engine = shared_engine(url)
                try:
                    conn = engine.connect()
                except sa.exc.DBAPIError as exc:
                    raise unreachable(service, url, exc) from exc
                while True:
                    if self._try(conn):
                        break
                    if time.monotonic() >= deadline:
                        conn.close()
                        raise LockHeldError(
                            f"the database of '{service}' ({redact_url(url)}) is locked by another migration run",
                            "another orchestrator is migrating it; wait for it (--wait SECONDS)",
                        )
                    time.sleep(0.25)
                self._held.append((engine, conn))
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _try(conn: sa.Connection) -> bool:
        if conn.dialect.name == "postgresql":
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
        else:
            got = conn.execute(sa.text("SELECT GET_LOCK(CONCAT('migrate:', DATABASE()), 0)")).scalar()
        conn.commit()
        return bool(got)

    def release(self) -> None:
        for _engine, conn in reversed(self._held):
            try:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                else:
                    conn.execute(sa.text("SELECT RELEASE_LOCK(CONCAT('migrate:', DATABASE()))"))
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
