"""`plan --sql`: each step's DDL in the env's dialect, offline, touching no database."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import MakeDatabase
from tests.helpers import alembic_upgrade, make_workspace, rev, run_cli, tables, version_rows

# how each dialect renders `sa.Column("id", sa.Integer(), primary_key=True)`
ID_COLUMN = {
    "sqlite": "    id INTEGER NOT NULL, \n",
    "postgresql": "    id SERIAL NOT NULL, \n",
    "mysql": "    id INTEGER NOT NULL AUTO_INCREMENT, \n",
}


def _sections(text: str) -> dict[str, str]:
    """``-- ===== users@a1 (sqlite) =====`` headers and the text under each, in order (after
    the lines naming the dialect each service was rendered for)."""
    parts = re.split(r"^-- ===== (\S+)(?: \(\w+\))? =====\n", text, flags=re.M)
    assert all(line.startswith("-- ") for line in parts[0].splitlines() if line)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _workspace(tmp_path: Path, url: str) -> Path:
    """users: a1 -- a2 -- a3, where a2 reads the database before changing it."""
    return make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1", reads_db=True), rev("a3", "a2")]},
        envs={"dev": {"urls": {"users": url}}},
    )


def test_sql_per_step_in_the_env_dialect_touching_nothing(
    dialect: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    url = make_database(dialect)
    if dialect == "mysql":
        url = url.replace("mysql+pymysql://", "mariadb+pymysql://")  # MariaDB's own syntax
    root = _workspace(tmp_path, url)
    result = run_cli(["plan", "--sql"], cwd=root)
    assert result.exit_code == 0, result.stderr
    sections = _sections(result.stdout)
    assert list(sections) == ["users@a1", "users@a2", "users@a3"]

    first = sections["users@a1"]
    assert "CREATE TABLE alembic_version (" in first
    assert "CREATE TABLE users_a1 (\n" + ID_COLUMN[dialect] in first
    assert "INSERT INTO alembic_version (version_num) VALUES ('a1')" in first

    # a revision that reads the database cannot be rendered; the reason is given...
    assert sections["users@a2"].startswith("-- cannot be rendered offline: AttributeError: ")
    assert "CREATE TABLE" not in sections["users@a2"]
    # ...and the steps after it still render
    third = sections["users@a3"]
    assert "CREATE TABLE users_a3 (\n" + ID_COLUMN[dialect] in third
    assert "UPDATE alembic_version SET version_num='a3' WHERE alembic_version.version_num = 'a2'" in third

    if dialect == "sqlite":
        assert not Path(url.removeprefix("sqlite:///")).exists()
    else:
        assert tables(url) == set()


def test_transactional_dialects_wrap_each_step(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database("postgresql")
    sections = _sections(run_cli(["plan", "--sql"], cwd=_workspace(tmp_path, url)).stdout)
    assert sections["users@a1"].lstrip().startswith("BEGIN;")
    assert sections["users@a1"].rstrip().endswith("COMMIT;")


def test_sql_of_a_partly_applied_database_starts_where_it_is(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database("sqlite")
    root = make_workspace(tmp_path, {"users": [rev("a1"), rev("a2", "a1"), rev("a3", "a2")]}, envs={"dev": url})
    alembic_upgrade(url, root / "services" / "users", "a1")
    result = run_cli(["plan", "--sql"], cwd=root)
    sections = _sections(result.stdout)
    assert list(sections) == ["users@a2", "users@a3"]
    assert "CREATE TABLE alembic_version" not in result.stdout
    assert (
        "UPDATE alembic_version SET version_num='a2' WHERE alembic_version.version_num = 'a1'" in sections["users@a2"]
    )
    assert version_rows(url) == ["a1"]
    assert tables(url) == {"alembic_version", "users_a1"}


def test_sql_in_json(make_database: MakeDatabase, tmp_path: Path) -> None:
    url = make_database("sqlite")
    result = run_cli(["plan", "--sql", "--json"], cwd=_workspace(tmp_path, url))
    assert result.exit_code == 0
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert "CREATE TABLE users_a1" in steps["users@a1"]["sql"]
    assert "sql_error" not in steps["users@a1"]
    assert steps["users@a2"]["sql"] is None
    assert steps["users@a2"]["sql_error"].startswith("cannot be rendered offline: AttributeError: ")
    assert "CREATE TABLE users_a3" in steps["users@a3"]["sql"]


def test_a_copy_step_is_named_as_such(tmp_path: Path) -> None:
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1")], "orders": [rev("b1")]},
        copies=[{"name": "mv", "source": "users", "target": "orders", "table": "users_a1", "after": ["users@a1"]}],
    )
    sections = _sections(run_cli(["plan", "--sql"], cwd=root).stdout)
    assert list(sections) == ["orders@b1", "users@a1", "copy:mv"]
    assert sections["copy:mv"].startswith("-- a data copy (rows are streamed, not SQL text)\n\n")


def test_sql_names_each_services_dialect_and_ends_with_what_could_not_render(
    make_database: MakeDatabase, tmp_path: Path
) -> None:
    """users on PostgreSQL (a2 reads the database), orders on SQLite: each is rendered in its
    own dialect, said so, and the output ends by counting what offline mode could not render."""
    pg = make_database("postgresql")
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1", reads_db=True)], "orders": [rev("b1")]},
        envs={"dev": {"urls": {"users": pg, "orders": "sqlite:///.migrate/dev/orders.db"}}},
    )
    result = run_cli(["plan", "--sql"], cwd=root)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["-- orders: rendered offline for sqlite", "-- users: rendered offline for postgresql"]
    assert "-- ===== users@a1 (postgresql) =====" in lines
    assert "-- ===== orders@b1 (sqlite) =====" in lines
    assert "CREATE TABLE users_a1 (\n" + ID_COLUMN["postgresql"] in result.stdout
    assert lines[-1] == "-- 1 of 3 revision step(s) could not be rendered offline (see above)"
    assert tables(pg) == set()

    data = run_cli(["plan", "--sql", "--json"], cwd=root).json()
    assert data["sql_dialects"] == {"orders": ["sqlite"], "users": ["postgresql"]}
    assert data["sql_unrendered"] == 1
    assert [s.get("sql_dialect") for s in data["steps"]] == ["sqlite", "postgresql", "postgresql"]
