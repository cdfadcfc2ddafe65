"""After each step the tool reads the version table back through its own connection: an
``env.py`` that migrates some other database, or leaves Alembic inside a transaction that
never commits, fails the step instead of having it recorded as applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DIALECTS, MakeDatabase, require_server
from tests.helpers import ENV_PY, make_workspace, rev, run_migrate, tables, version_rows

OTHER_DATABASE_ENV_PY = '''"""Ignores the connection it is given and migrates another database."""
from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine({url!r}, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''

# SQLAlchemy 2 autobegins on the first statement: Alembic then sees an outer transaction it
# did not start, commits nothing, and the connection rolls the version rows back on close.
STATEMENT_BEFORE_CONFIGURE_ENV_PY = '''"""Runs a statement on its own engine before configure()."""
from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
engine = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with engine.connect() as connection:
    connection.execute(text("SELECT 1"))
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''


@pytest.fixture(params=DIALECTS)
def server(request: pytest.FixtureRequest) -> str:
    require_server(request.param)
    return str(request.param)


def _workspace(tmp_path: Path, urls: dict[str, str], env_py: str) -> Path:
    """users: u1 - u2 (built-in environment);  orders: o1 - o2 (o1 requires users@u2), with
    the given env.py."""
    ws = make_workspace(
        tmp_path,
        {"users": [rev("u1"), rev("u2", "u1")], "orders": [rev("o1", requires=["users@u2"]), rev("o2", "o1")]},
        envs={"dev": {"urls": urls}},
    )
    (ws / "services" / "orders" / "env.py").write_text(env_py, encoding="utf-8")
    return ws


def _steps(ws: Path) -> dict[str, dict[str, Any]]:
    history = run_migrate(["history", "--json"], ws)
    assert history.exit_code == 0, history.stderr
    run = history.json()["runs"][0]
    assert run["kind"] == "apply"
    return {s["node"]: s for s in run["steps"]}


def _assert_orders_failed_and_all_undone(ws: Path, urls: dict[str, str], result: Any) -> None:
    assert result.exit_code == 1, result.stderr
    out = result.json()
    assert "env.py" in out["message"] and "did not migrate the database it was given" in out["message"]
    steps = _steps(ws)
    assert steps["orders@o1"]["status"] == "failed"
    assert "env.py" in steps["orders@o1"]["error"]
    assert steps["orders@o2"]["status"] not in ("applied", "undone")
    # The database orders was given never shows its revisions.
    assert version_rows(urls["orders"]) == []
    # users' steps verified, were applied, and the failure undid them.
    assert steps["users@u1"]["status"] == steps["users@u2"]["status"] == "undone"
    assert version_rows(urls["users"]) == []
    assert tables(urls["users"]) <= {"alembic_version"}
    # The next plan still has everything pending.
    plan = run_migrate(["plan", "--json"], ws)
    assert [s["id"] for s in plan.json()["steps"]] == ["users@u1", "users@u2", "orders@o1", "orders@o2"]


def test_an_env_py_migrating_another_database_fails_the_step(
    server: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    urls = {"users": make_database(server), "orders": make_database(server)}
    if server == "postgresql":  # the local server trusts any password: it must not be shown
        urls["orders"] = urls["orders"].replace("@127.0.0.1", ":Pw-never-shown@127.0.0.1")
    other = make_database(server)
    ws = _workspace(tmp_path, urls, OTHER_DATABASE_ENV_PY.format(url=other))

    result = run_migrate(["apply", "--json"], ws)

    _assert_orders_failed_and_all_undone(ws, urls, result)
    history = run_migrate(["history", "--json"], ws)
    assert "Pw-never-shown" not in result.stdout + result.stderr + history.stdout
    assert tables(urls["orders"]) <= {"alembic_version"}
    # What env.py did went to the other database: o1 committed there, o2 never started.
    assert version_rows(other) == ["o1"]
    assert "orders_o1" in tables(other) and "orders_o2" not in tables(other)


def test_a_statement_before_configure_leaves_nothing_committed_and_fails_the_step(
    server: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    urls = {"users": make_database(server), "orders": make_database(server)}
    ws = _workspace(tmp_path, urls, STATEMENT_BEFORE_CONFIGURE_ENV_PY)

    result = run_migrate(["apply", "--json"], ws)

    _assert_orders_failed_and_all_undone(ws, urls, result)
    assert "orders_o2" not in tables(urls["orders"])


@pytest.mark.parametrize("with_env_py", [True, False], ids=["env_py", "builtin"])
def test_merges_branch_points_and_a_second_root_verify_up_and_down(
    server: str, with_env_py: bool, make_database: MakeDatabase, tmp_path: Path
) -> None:
    """users:  a1 -- a2 --+-- a3 (merge)
     \\        |
      c1      |         c1: a branch point at a1
    b1 -------+         b1: a second root, branch label "side"
    """
    url = make_database(server)
    tree = [
        rev("a1"),
        rev("a2", "a1"),
        rev("b1", branch_labels=["side"]),
        rev("a3", ("a2", "b1")),
        rev("c1", "a1"),
    ]
    ws = make_workspace(tmp_path, {"users": tree}, envs={"dev": {"urls": {"users": url}}}, env_py=with_env_py)
    if with_env_py:
        assert (ws / "services" / "users" / "env.py").read_text(encoding="utf-8") == ENV_PY

    applied = run_migrate(["apply", "--json"], ws)

    assert applied.exit_code == 0, applied.stdout + applied.stderr
    assert version_rows(url) == ["a3", "c1"]
    assert {s["status"] for s in _steps(ws).values()} == {"applied"}
    back = run_migrate(["rollback", "--to", "users@a1", "--json"], ws)
    assert back.exit_code == 0, back.stdout + back.stderr
    assert version_rows(url) == ["a1", "b1"]  # the unmerge gives b1 back, as Alembic does
    assert run_migrate(["rollback", "--to", "users@base", "--json"], ws).exit_code == 0
    assert version_rows(url) == []
    assert tables(url) <= {"alembic_version"}
