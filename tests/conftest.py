"""Shared fixtures: real SQLite files, and throw-away PostgreSQL and MariaDB databases.

A test that needs a server skips when it is unreachable, except under ``CI=true``, where it
fails: CI must never pass by skipping the databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_SERVER = os.environ.get("MIGRATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MYSQL_SERVER = os.environ.get("MIGRATE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

DIALECTS = ("sqlite", "postgresql", "mysql")


def _server_unavailable(kind: str, error: Exception) -> None:
    message = f"{kind} server unreachable: {error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a server test must not skip)")
    pytest.skip(message)


def _admin_engine(dialect: str) -> sa.Engine:
    url = f"{PG_SERVER}/postgres" if dialect == "postgresql" else f"{MYSQL_SERVER}/"
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


_checked: dict[str, Exception | None] = {}


def require_server(dialect: str) -> None:
    if dialect == "sqlite":
        return
    if dialect not in _checked:
        engine = _admin_engine(dialect)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _checked[dialect] = None
        except Exception as exc:  # the server is down: fail in CI, skip elsewhere
            _checked[dialect] = exc
        finally:
            engine.dispose()
    error = _checked[dialect]
    if error is not None:
        _server_unavailable(dialect, error)


def create_server_database(dialect: str, name: str) -> str:
    """Create an empty database on the local server and return its URL."""
    require_server(dialect)
    engine = _admin_engine(dialect)
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        engine.dispose()
    if dialect == "postgresql":
        return f"{PG_SERVER}/{name}"
    return f"{MYSQL_SERVER}/{name}?charset=utf8mb4"


def drop_server_database(dialect: str, name: str) -> None:
    engine = _admin_engine(dialect)
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        engine.dispose()


MakeDatabase = Callable[[str], str]


@pytest.fixture
def make_database(tmp_path: Path) -> Iterator[MakeDatabase]:
    """``make_database(dialect)`` returns the URL of a new, empty database of that dialect.

    SQLite databases are files under the test's tmp_path (not created until first used);
    server databases get a unique name and are dropped after the test.
    """
    created: list[tuple[str, str]] = []

    def make(dialect: str) -> str:
        name = f"mig_{uuid.uuid4().hex[:12]}"
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / (name + '.db')}"
        url = create_server_database(dialect, name)
        created.append((dialect, name))
        return url

    yield make
    for dialect, name in created:
        drop_server_database(dialect, name)


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    require_server(request.param)
    return str(request.param)
