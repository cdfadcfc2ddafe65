"""Engines for service and state databases, built one way everywhere."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from orchestrator.core.manifest import url_origin
from orchestrator.core.redact import redact_text, redact_url
from orchestrator.errors import DatabaseUnreachableError, ManifestError


def dialect_of(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        return url.partition(":")[0].partition("+")[0]


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL, or None for memory / non-SQLite URLs."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database
    if not db or db == ":memory:":
        return None
    return db


def _transactional_sqlite(engine: sa.Engine) -> None:
    """Make pysqlite run DDL inside real transactions (SQLAlchemy's documented recipe).

    A transaction that reads before it writes and must not fail when another writer got in
    first (SQLite refuses to upgrade a reader to a writer then, whatever the busy timeout)
    asks for the write lock up front: ``engine.execution_options(sqlite_begin="IMMEDIATE")``."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # SQLite's default (foreign keys not enforced) is kept: Alembic's batch mode
        # re-creates tables by dropping and renaming them, which enforcement would cascade.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def bad_url(url: str, problem: str, hint: str | None = None) -> ManifestError:
    """A URL that cannot be used, named by the manifest file and key it was expanded from."""
    file, key = url_origin(url) or ("(environment)", None)
    return ManifestError(f"{problem}: {redact_url(url)}", file=file, key=key, hint=hint)


def _dialect_problem(parsed: URL, url: str, exc: Exception) -> ManifestError:
    if isinstance(exc, sa.exc.NoSuchModuleError):
        return bad_url(
            url,
            f"unknown database dialect '{parsed.drivername}'",
            "use a SQLAlchemy URL such as postgresql+psycopg://..., mysql+pymysql://... or sqlite:///...",
        )
    return bad_url(
        url,
        f"the driver of '{parsed.drivername}' is not installed ({redact_text(str(exc))})",
        "install the driver package, or name an installed one in the URL (e.g. postgresql+psycopg://)",
    )


# Creating an engine imports its dialect and driver the first time. Python's import of one
# package from two threads at once can give the second thread the package before its submodule
# is bound ("cannot access submodule 'mysql' of module 'sqlalchemy.dialects'"), and the
# databases of an env are read on threads (``project.observe``). So engines are created one at
# a time; creating one opens no connection, so nothing waits on a server under this lock.
_creating = threading.Lock()


def create_engine(url: str, *, create_sqlite_dir: bool = True, **kw: Any) -> sa.Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise bad_url(url, "not a database URL") from exc
    try:
        with _creating:
            return _create_engine(parsed, url, create_sqlite_dir, kw)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise _dialect_problem(parsed, url, exc) from None


def _create_engine(parsed: URL, url: str, create_sqlite_dir: bool, kw: dict[str, Any]) -> sa.Engine:
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path and create_sqlite_dir:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kw.setdefault("poolclass", sa.pool.NullPool)
        engine = sa.create_engine(parsed, **kw)
        _transactional_sqlite(engine)
        return engine
    if backend in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kw)


def plain_engine(url: str, **kw: Any) -> sa.Engine:
    """``sqlalchemy.create_engine`` as it is, under the lock of ``create_engine``."""
    with _creating:
        return sa.create_engine(url, **kw)


def unreachable(service: str, url: str, exc: BaseException) -> DatabaseUnreachableError:
    detail = redact_text(
        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
    )
    return DatabaseUnreachableError(
        f"cannot reach the database of '{service}' at {redact_url(url)}: {detail}",
        "check that the server runs and the URL (and its ${VARS}) are right",
    )


_shared: dict[str, sa.Engine] = {}


@contextmanager
def engine_for(url: str) -> Iterator[sa.Engine]:
    """An engine for ``url``. Server databases share one pooled engine per URL for the life
    of a run (state reads, locks and steps reuse its connections, and the dialect is set up
    once); SQLite gets a fresh engine, disposed after use."""
    if dialect_of(url) == "sqlite":
        engine = create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    yield shared_engine(url)


def shared_engine(url: str) -> sa.Engine:
    """The run-wide pooled engine of a server database (see ``engine_for``)."""
    shared = _shared.get(url)
    if shared is None:
        shared = _shared[url] = create_engine(url)
    return shared


def dispose_shared() -> None:
    """Close every pooled connection of the shared engines (at the end of a run)."""
    for engine in _shared.values():
        engine.dispose()
    _shared.clear()
