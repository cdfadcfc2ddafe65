"""Read each service's current revisions from its ``alembic_version`` table.

Reading never creates anything: a SQLite file that does not exist means nothing is applied,
and it is opened read-only when it does.
"""

from __future__ import annotations

import os
from typing import Any


def _missing_sqlite_file(url: str) -> bool:
    """True for a SQLite URL whose file does not exist (decided without importing SQLAlchemy)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :].partition("?")[0]
            return bool(path) and path != ":memory:" and not os.path.exists(path)
    return False


def read_state(url: str, version_table: str = "alembic_version", service: str = "?") -> tuple[tuple[str, ...], bool]:
    """(current revisions, whether the version table exists) of one database."""
    if _missing_sqlite_file(url):
        return (), False  # nothing applied, and nothing created
    import sqlalchemy as sa

    from orchestrator.errors import DatabaseUnreachableError
    from orchestrator.runtime.engines import create_engine, engine_for, plain_engine, sqlite_path, unreachable

    try:
        path = sqlite_path(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        # not shown: a value that does not parse as a URL may be a bare password
        raise DatabaseUnreachableError(
            f"the database URL of '{service}' is not a valid URL (its value is not shown)",
            "check the service's URL in the manifest and the ${VARS} it uses",
        ) from exc
    if path is not None:
        if not os.path.exists(path):
            return (), False
        if os.path.exists(path + "-journal"):
            # A hot journal left by a crash: SQLite must roll it back before any read, which
            # a read-only connection cannot do. The file exists, so nothing is created.
            engine = create_engine(url, create_sqlite_dir=False)
        else:
            engine = plain_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=sa.pool.NullPool)
        try:
            return _read(engine, version_table)
        except sa.exc.DBAPIError as exc:  # "file is not a database"...
            raise unreachable(service, url, exc) from exc
        finally:
            engine.dispose()
    try:
        with engine_for(url) as engine:
            return _read(engine, version_table)
    except sa.exc.DBAPIError as exc:  # refused, bad credentials...
        raise unreachable(service, url, exc) from exc


def _read(engine: Any, version_table: str) -> tuple[tuple[str, ...], bool]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(version_table):
            return (), False
        table = sa.table(version_table, sa.column("version_num"))
        rows = conn.execute(sa.select(table.c.version_num)).scalars().all()
        return tuple(sorted(str(r) for r in rows)), True


def drop_empty_version_table(url: str, version_table: str = "alembic_version") -> bool:
    """Drop the version table if it holds no row (what a database that never saw a
    migration looks like). Returns whether it was dropped."""
    import sqlalchemy as sa

    from orchestrator.runtime.engines import create_engine

    engine = create_engine(url, create_sqlite_dir=False)
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(version_table):
                return False
            table = sa.table(version_table, sa.column("version_num"))
            if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                return False
            conn.execute(sa.text(f"DROP TABLE {conn.dialect.identifier_preparer.quote(version_table)}"))
            return True
    finally:
        engine.dispose()
