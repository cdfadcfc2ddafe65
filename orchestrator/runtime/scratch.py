"""Throw-away databases for ``migrate check --roundtrip``: one per service.

By default they are SQLite files in a temporary folder. Given the URL of a PostgreSQL or
MySQL/MariaDB server (``postgresql+psycopg://postgres@127.0.0.1:5432``; a database in the URL
is only where the administrative connection goes), one database per service is created on
it with a unique name and dropped afterwards, whatever happened in between.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from orchestrator.core.redact import quote_userinfo, redact_text, redact_url, register_url_secrets
from orchestrator.errors import MigrateError
from orchestrator.runtime.engines import unreachable

SERVER_BACKENDS = ("postgresql", "mysql", "mariadb")


def describe(server_url: str | None) -> str:
    """Where the scratch databases live, for messages (password masked)."""
    server_url = _registered(server_url)
    if not server_url or make_url(server_url).get_backend_name() == "sqlite":
        return "temporary SQLite databases"
    return f"throw-away databases on {redact_url(server_url)}"


@contextmanager
def scratch_databases(services: Sequence[str], server_url: str | None = None) -> Iterator[dict[str, str]]:
    """Yield ``{service: url}`` of new, empty databases; remove them all on exit."""
    server_url = _registered(server_url)
    if not server_url or _backend(server_url) == "sqlite":
        with tempfile.TemporaryDirectory(prefix="migrate-check-") as folder:
            yield {name: f"sqlite:///{Path(folder) / (_safe(name) + '.db')}" for name in services}
        return
    backend = _backend(server_url)
    if backend not in SERVER_BACKENDS:
        raise MigrateError(
            f"--scratch-url: '{backend}' is not a server this tool can create databases on",
            "give a postgresql+psycopg://... or mysql+pymysql://... (MariaDB) server URL",
        )
    base = make_url(server_url)
    admin = _admin_url(base)
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    tag = uuid.uuid4().hex[:8]
    created: list[str] = []
    urls: dict[str, str] = {}
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as exc:
            raise unreachable("--scratch-url", server_url, exc) from None
        try:
            with conn:
                for name in services:
                    db = f"migrate_check_{tag}_{_safe(name)}"[:63]
                    conn.execute(sa.text(_create_sql(backend, db)))
                    created.append(db)
                    urls[name] = base.set(database=db).render_as_string(hide_password=False)
        except sa.exc.DBAPIError as exc:
            raise _cannot_create(server_url, exc) from None
        yield urls
    finally:
        try:
            if created:
                with engine.connect() as conn:
                    for db in created:
                        _drop(conn, backend, db)
        finally:
            engine.dispose()


def _cannot_create(server_url: str, exc: sa.exc.DBAPIError) -> MigrateError:
    """The server was reached, but its role may not create (or the server refused) a database."""
    detail = redact_text(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])
    return MigrateError(
        f"--scratch-url: cannot create throw-away databases on {redact_url(server_url)}: {detail}",
        "connect as a role that may create databases (PostgreSQL: CREATEDB; MySQL/MariaDB: the CREATE privilege), "
        "or leave --scratch-url out to run the round trip on temporary SQLite files",
    )


def _registered(url: str | None) -> str | None:
    """The server URL with its password registered as a secret and its user-info quoted."""
    if url:
        register_url_secrets(url, url)
        return quote_userinfo(url)
    return url


def _backend(url: str) -> str:
    try:
        name = make_url(url).get_backend_name()
    except Exception as exc:
        raise MigrateError(f"--scratch-url: not a database URL: {redact_url(url)}") from exc
    return "mysql" if name == "mariadb" else name


def _admin_url(url: URL) -> URL:
    if url.get_backend_name() == "postgresql":
        return url.set(database=url.database or "postgres")
    return url.set(database=url.database or None)


def _safe(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def _create_sql(backend: str, db: str) -> str:
    if backend == "postgresql":
        return f'CREATE DATABASE "{db}"'
    return f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4"


def _drop(conn: sa.Connection, backend: str, db: str) -> None:
    if backend == "postgresql":
        try:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        except sa.exc.DBAPIError:  # before PostgreSQL 13
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
    else:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
