"""Per-service ``environ``, and a service's own code kept from the process's stdout and from the
next service (SPEC §3 and §4).

The trees are ``tests/fixtures/environ``: each env.py reads ``os.environ["DATABASE_URL"]`` and
builds its own engine; alpha's configures logging onto stdout and prints, beta's refuses to run
on what alpha left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeDatabase
from tests.helpers import manifest_data, run_migrate, tables, version_rows, write_manifest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "environ"
ENVIRON = {"DATABASE_URL": "{url}"}


def _workspace(tmp_path: Path, urls: dict[str, str], environ: dict[str, Any] | None = None) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE / "services", root / "services")
    options = {name: {"environ": ENVIRON if environ is None else environ} for name in urls}
    write_manifest(root / "migrate.toml", manifest_data(urls, {"dev": {"urls": urls}}, service_options=options))
    return root


def _assert_landed(urls: dict[str, str]) -> None:
    assert tables(urls["alpha"]) == {"alembic_version", "alpha_items"}
    assert tables(urls["beta"]) == {"alembic_version", "beta_orders"}
    assert version_rows(urls["alpha"]) == ["a1"]
    assert version_rows(urls["beta"]) == ["b1"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_each_tree_lands_in_its_own_database(dialect: str, make_database: MakeDatabase, tmp_path: Path) -> None:
    urls = {"alpha": make_database(dialect), "beta": make_database(dialect)}
    root = _workspace(tmp_path, urls)

    applied = run_migrate(["apply", "--json"], root)
    assert applied.exit_code == 0, applied.stderr
    assert applied.json()["outcome"] == "succeeded"  # stdout is only the JSON
    _assert_landed(urls)
    # env.py's logging (onto stdout) and the revision's prints went to stderr
    assert "Running upgrade  -> a1, alpha items" in applied.stderr
    assert "alpha a1: upgrading" in applied.stderr and "alpha env.py: configured" in applied.stderr


def test_mixed_env_postgresql_and_mariadb(make_database: MakeDatabase, tmp_path: Path) -> None:
    urls = {"alpha": make_database("postgresql"), "beta": make_database("mysql")}
    root = _workspace(tmp_path, urls)

    rendered = run_migrate(["plan", "--sql"], root)
    assert rendered.exit_code == 0, rendered.stderr
    alpha_sql, beta_sql = rendered.stdout.split("CREATE TABLE beta_orders")
    assert "id SERIAL NOT NULL" in alpha_sql  # alpha rendered for PostgreSQL
    assert "AUTO_INCREMENT" not in alpha_sql
    assert "id INTEGER NOT NULL AUTO_INCREMENT" in beta_sql  # beta for MariaDB
    assert tables(urls["alpha"]) == set() and tables(urls["beta"]) == set()  # offline: nothing touched

    applied = run_migrate(["apply"], root)
    assert applied.exit_code == 0, applied.stderr
    _assert_landed(urls)


def test_json_stdout_stays_json_and_the_running_lines_name_the_step(
    make_database: MakeDatabase, tmp_path: Path
) -> None:
    urls = {"alpha": make_database("sqlite"), "beta": make_database("sqlite")}
    root = _workspace(tmp_path, urls)

    planned = run_migrate(["plan", "--json"], root)  # loads the revision files: alpha's prints at import
    assert planned.exit_code == 0, planned.stderr
    assert [s["id"] for s in planned.json()["steps"]] == ["alpha@a1", "beta@b1"]
    assert "alpha a1: module loaded" in planned.stderr

    applied = run_migrate(["apply", "--json"], root)
    assert applied.exit_code == 0, applied.stderr
    assert applied.json()["outcome"] == "succeeded"
    assert "Running run" not in applied.stderr
    # SQLAlchemy's warning: one summarised line, not Python's source-line dump
    assert "SAWarning: Skipped unsupported reflection of expression-based index ix_beta_demo" in applied.stderr
    assert "warnings.warn(" not in applied.stderr

    status = run_migrate(["status", "--json"], root)
    assert status.exit_code == 0, status.stderr
    assert {s["service"]: s["current"] for s in status.json()["services"]} == {"alpha": ["a1"], "beta": ["b1"]}

    back = run_migrate(["rollback", "--to", "alpha@base", "--json"], root)
    assert back.exit_code == 0, back.stderr
    assert back.json()["outcome"] == "succeeded"
    assert "Running downgrade a1 -> , alpha items" in back.stderr
    assert version_rows(urls["alpha"]) == [] and version_rows(urls["beta"]) == []


def test_without_environ_the_env_py_cannot_find_its_url(make_database: MakeDatabase, tmp_path: Path) -> None:
    """What the fixture needs environ for: without it, alpha's env.py fails and nothing lands."""
    urls = {"alpha": make_database("sqlite"), "beta": make_database("sqlite")}
    root = _workspace(tmp_path, urls, environ={})

    applied = run_migrate(["apply", "--json"], root, env={"DATABASE_URL": ""})
    assert applied.exit_code != 0
    assert "error" in applied.json() or applied.json()["outcome"] != "succeeded"
    assert tables(urls["beta"]) == set()


def test_environ_expands_vars_and_a_missing_one_is_an_error(make_database: MakeDatabase, tmp_path: Path) -> None:
    urls = {"alpha": make_database("sqlite"), "beta": make_database("sqlite")}
    root = _workspace(tmp_path, urls, environ={"DATABASE_URL": "{url}", "APP_MODE": "${APP_MODE_FOR_TEST}"})

    for args in (["apply", "--json"], ["check", "--roundtrip", "--json"]):
        missing = run_migrate(args, root)
        assert missing.exit_code == 2, (args, missing.stdout)
        error = missing.json()["error"]
        assert "services.alpha.environ.APP_MODE" in error and "APP_MODE_FOR_TEST" in error
        assert not any(Path(url.removeprefix("sqlite:///")).exists() for url in urls.values())  # nothing created

    applied = run_migrate(["apply", "--json"], root, env={"APP_MODE_FOR_TEST": "test"})
    assert applied.exit_code == 0, applied.stderr
    _assert_landed(urls)


def test_check_roundtrip_runs_each_env_py_on_the_database_it_is_given(
    make_database: MakeDatabase, tmp_path: Path
) -> None:
    """With `environ`, `check --roundtrip` hands each env.py its temporary database as
    `{url}`: a DATABASE_URL in the process environment (another database) is never touched.
    Without it, each env.py migrates that other database; the round trip reads its own
    database's version table back after the step, reports MG602 naming the env.py, and stops
    that service's round trip there, before any downgrade runs on the other database."""
    urls = {"alpha": make_database("sqlite"), "beta": make_database("sqlite")}
    other = make_database("sqlite")
    root = _workspace(tmp_path / "with", urls)

    checked = run_migrate(["check", "--roundtrip", "--json"], root, env={"DATABASE_URL": other})

    assert checked.exit_code == 0, checked.stdout
    assert checked.json()["findings"] == []
    assert not Path(other.removeprefix("sqlite:///")).exists()

    bare = _workspace(tmp_path / "without", urls, environ={})
    caught = run_migrate(["check", "--roundtrip", "--json"], bare, env={"DATABASE_URL": other})

    assert caught.exit_code == 1, caught.stdout
    findings = caught.json()["findings"]
    assert [(f["code"], f["node"]) for f in findings] == [("MG602", "alpha@a1"), ("MG602", "beta@b1")]
    assert all("did not migrate the database it was given" in f["message"] for f in findings)
    # each upgrade landed in the other database, and nothing was undone there
    assert version_rows(other) == ["a1", "b1"]
    assert tables(other) == {"alembic_version", "alpha_items", "beta_orders"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DATABASE_URL": 5}, "expected a string"),
        ({"1BAD": "{url}"}, "variable name"),
        ({"DATABASE_URL": "${UNCLOSED"}, "${"),
    ],
)
def test_a_bad_environ_is_refused_naming_the_key(
    environ: dict[str, Any], expected: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    urls = {"alpha": make_database("sqlite"), "beta": make_database("sqlite")}
    root = _workspace(tmp_path, urls, environ=environ)
    ran = run_migrate(["status", "--json"], root)
    assert ran.exit_code == 2
    error = ran.json()["error"]
    assert "services.alpha.environ" in error and expected in error and "Traceback" not in ran.stderr
