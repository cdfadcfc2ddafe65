"""Reading each database's applied revisions, on SQLite, PostgreSQL and MariaDB, creating nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import api
from tests.conftest import MakeDatabase
from tests.helpers import (
    alembic_upgrade,
    chain,
    make_workspace,
    rev,
    revision_path,
    run_cli,
    tables,
    version_rows,
)

SECRET = "Pa55-w0rd-never-shown"


def _workspace(tmp_path: Path, url: str, **kw: Any) -> Path:
    """users: a1 -- a2 -- a3, in the database at ``url`` (env "dev")."""
    return make_workspace(tmp_path, {"users": chain("a", 3)}, envs={"dev": {"urls": {"users": url}}}, **kw)


def _plan_ids(root: Path) -> list[str]:
    result = run_cli(["plan", "--json"], cwd=root)
    assert result.exit_code == 0, result.stderr
    return [s["id"] for s in result.json()["steps"]]


def test_no_version_table_means_nothing_applied(dialect: str, make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database(dialect)
    root = _workspace(tmp_path, url)
    assert api.observe(api.open_project(cwd=str(root)), "dev").heads == (("users", ()),)
    assert _plan_ids(root) == ["users@a1", "users@a2", "users@a3"]
    if dialect == "sqlite":
        assert not Path(url.removeprefix("sqlite:///")).exists()
    else:
        assert tables(url) == set()


def test_applied_heads_are_read_and_only_the_rest_is_planned(
    dialect: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    url = make_database(dialect)
    root = _workspace(tmp_path, url)
    alembic_upgrade(url, root / "services" / "users", "a2")
    assert api.observe(api.open_project(cwd=str(root)), "dev").heads == (("users", ("a2",)),)
    result = run_cli(["plan", "--json"], cwd=root)
    assert result.json()["state"] == {"users": ["a2"]}
    assert [s["id"] for s in result.json()["steps"]] == ["users@a3"]
    assert tables(url) == {"alembic_version", "users_a1", "users_a2"}  # plan changed nothing


def test_a_custom_version_table(dialect: str, make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database(dialect)
    root = _workspace(tmp_path, url, service_options={"users": {"version_table": "users_versions"}})
    alembic_upgrade(url, root / "services" / "users", "a1", version_table="users_versions")
    assert tables(url) == {"users_versions", "users_a1"}
    assert _plan_ids(root) == ["users@a2", "users@a3"]


def test_two_applied_branch_heads(make_database: MakeDatabase, tmp_path: Path) -> None:
    """users: a1 --+-- a2 --+-- a4
    +-- a3 --+        the database is at a2 and a3
    """
    url = make_database("sqlite")
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1"), rev("a3", "a1"), rev("a4", ("a2", "a3"))]},
        envs={"dev": url},
    )
    alembic_upgrade(url, root / "services" / "users", "a2")
    alembic_upgrade(url, root / "services" / "users", "a3")
    assert version_rows(url) == ["a2", "a3"]
    assert _plan_ids(root) == ["users@a4"]


def test_a_database_at_a_revision_the_tree_does_not_know(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database("sqlite")
    root = _workspace(tmp_path, url)
    alembic_upgrade(url, root / "services" / "users", "a3")
    revision_path(root, "users", "a3").unlink()  # an older checkout of the tree
    for args in (["plan"], ["status"]):
        result = run_cli(args, cwd=root)
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            f"error: service 'users': the database is at revision 'a3', which is not in "
            f"{root / 'services' / 'users'}/versions",
            "hint: the tree is older than the database: check out the branch that added it, or `alembic stamp` the "
            "database",
        ]


def test_plan_and_status_create_no_sqlite_file(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": chain("a", 2), "orders": [rev("b1", requires=["users@a1"])]})
    for args in (["status"], ["status", "--json"], ["plan"], ["plan", "--json"], ["graph", "--env", "dev"]):
        result = run_cli(args, cwd=root)
        assert result.exit_code == 0, (args, result.stderr)
    assert not (root / ".migrate" / "dev").exists()
    assert sorted(p.name for p in (root / ".migrate").iterdir()) == ["cache"]


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql", "mariadb+pymysql"])
def test_an_unreachable_database_exits_2_with_the_url_redacted(tmp_path: Path, scheme: str) -> None:
    root = make_workspace(
        tmp_path,
        {"users": chain("a", 2)},
        envs={"dev": {"urls": {"users": f"{scheme}://app:${{PW}}@127.0.0.1:1/users"}}},
    )
    for args in (["status"], ["plan"], ["plan", "--sql"]):
        result = run_cli(args, cwd=root, env={"PW": SECRET})
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.startswith(
            f"error: cannot reach the database of 'users' at {scheme}://app:***@127.0.0.1:1/users: "
        )
        assert "hint: check that the server runs and the URL (and its ${VARS}) are right" in result.stderr
        assert SECRET not in result.stderr
    result = run_cli(["status", "--json"], cwd=root, env={"PW": SECRET})
    assert result.exit_code == 2
    assert result.json()["error"].startswith(f"cannot reach the database of 'users' at {scheme}://app:***@127.0.0.1:1/")
    assert SECRET not in result.stdout


def test_a_sqlite_file_that_is_not_a_database_exits_2(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": chain("a", 2)}, envs={"dev": "sqlite:///users.db"})
    (root / "users.db").write_text("not a database\n" * 100, encoding="utf-8")
    result = run_cli(["status"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: cannot reach the database of 'users' at sqlite:///{root / 'users.db'}: file is not a database"
    )


def test_a_url_that_does_not_parse_is_not_echoed(tmp_path: Path) -> None:
    """A ${VAR} meant to hold a URL that holds something else (here: the password) is not printed."""
    root = make_workspace(tmp_path, {"users": chain("a", 2)}, envs={"dev": "${USERS_URL}"})
    result = run_cli(["plan", "--json"], cwd=root, env={"USERS_URL": SECRET})
    assert result.exit_code == 2
    assert result.json() == {
        "error": "the database URL of 'users' is not a valid URL (its value is not shown)",
        "exit_code": 2,
        "hint": "check the service's URL in the manifest and the ${VARS} it uses",
    }
