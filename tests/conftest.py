"""Shared fixtures: real SQLite files, and throw-away PostgreSQL and MariaDB databases.

A test that needs a server skips when it is unreachable, except under ``CI=true``, where it
fails: CI must never pass by skipping the databases.

Tests are marked at collection (``pytest_collection_modifyitems``): ``db`` when the test, one
of its fixtures, or its module opens a database or runs migrations (see ``DB_HINTS``), and
``server`` as well when it needs PostgreSQL or MariaDB. ``make test-fast`` runs
``-m "not db and not slow"``: no server, no database file. Set ``MIGRATE_TEST_NO_DB=1`` to
make any database connection of an unmarked test fail (to check the marks).
"""

from __future__ import annotations

import inspect
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


# -- database markers ----------------------------------------------------------------------
DB_FIXTURES = frozenset({"make_database", "dialect"})
# Source text of a test, of its fixtures or of its module that means a database is opened or
# migrated: the engine, the builders' readers, and the commands and calls that touch an env.
DB_HINTS = (
    "create_engine",
    "sqlite3",
    "make_database",
    "require_server",
    "create_server_database",
    "alembic_upgrade",
    "version_rows",
    "tables(",
    "snapshot",
    "address_rows",
    "run_migrate",
    "apply(",
    "rollback(",
    "unlock(",
    "history(",
    "status(",
    "observe(",
    '"apply"',
    '"rollback"',
    '"status"',
    '"history"',
    '"unlock"',
    '"repair"',
    '"verify"',
    "roundtrip",
    "engine(",
    "url=",
    "sqlite:///{",
    "Journal(",
    "--env",
    "make_plan(",
    "stamp(",
)
SERVER_WORDS = ("postgresql", "mysql", "mariadb", "PG_SERVER", "MYSQL_SERVER")
_source_cache: dict[object, str] = {}


def _source(obj: object) -> str:
    if obj not in _source_cache:
        try:
            _source_cache[obj] = inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            _source_cache[obj] = ""
    return _source_cache[obj]


def _helper_sources(function: Any, depth: int = 2) -> list[str]:
    """The source of the test-suite functions ``function`` calls by name, ``depth`` calls deep."""
    code = getattr(function, "__code__", None)
    if code is None or depth == 0:
        return []
    sources = []
    names = set(code.co_names) | {n for const in code.co_consts if inspect.iscode(const) for n in const.co_names}
    for name in sorted(names):
        obj = function.__globals__.get(name)
        if inspect.isfunction(obj) and obj.__module__.startswith("tests") and obj is not function:
            sources += [_source(obj), *_helper_sources(obj, depth - 1)]
    return sources


def _fixture_sources(item: pytest.Item) -> list[str]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    sources = []
    for name in item.fixturenames:  # type: ignore[attr-defined]
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if fixturedef.baseid != "" and name != "_no_database_unless_marked":  # not pytest's own
                sources += [_source(fixturedef.func), *_helper_sources(fixturedef.func)]
    return sources


def _needs_server(item: pytest.Item, text: str) -> bool:
    callspec = getattr(item, "callspec", None)
    params: dict[str, Any] = callspec.params if callspec is not None else {}
    if any(str(v) in ("postgresql", "mysql") for v in params.values()):
        return True
    if "dialect" in item.fixturenames and not params:  # type: ignore[attr-defined]
        return True
    return any(word in text for word in SERVER_WORDS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    for item in items:
        function = getattr(item, "function", None)
        own = _source(function) if function is not None else ""
        own = own[own.find("def ") :]  # not the decorators: a parametrize lists every dialect
        text = "\n".join([own, *_helper_sources(function), *_fixture_sources(item)])
        uses_fixture = bool(DB_FIXTURES & set(item.fixturenames))  # type: ignore[attr-defined]
        if uses_fixture or any(hint in text for hint in DB_HINTS):
            item.add_marker(pytest.mark.db)
            if _needs_server(item, text):
                item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def _no_database_unless_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``MIGRATE_TEST_NO_DB=1``, a test not marked ``db`` fails if it opens a database."""
    if os.environ.get("MIGRATE_TEST_NO_DB") != "1" or request.node.get_closest_marker("db"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} opens a database but is not marked db")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    monkeypatch.setattr(sa, "create_engine", refuse)
    monkeypatch.setattr(sa.engine, "create_engine", refuse)
