"""Honest reports after a crash or a half-failed revision, and the `migrate stamp` repair.

MariaDB cannot roll back DDL: a revision that fails (or is killed) half-way leaves some of
its statements behind and no version row. These tests make that happen for real, check
what `apply`, `status` and `history` say about it, repair it by hand and converge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from orchestrator import api
from tests.conftest import MakeDatabase
from tests.helpers import MIGRATE, make_workspace, rev, run_cli, tables, version_rows

TWO_ALTERS = """
op.add_column("users_a1", sa.Column("email", sa.String(50)))
op.add_column("users_a1", sa.Column("phone", sa.String(50)))
raise RuntimeError("boom after two ALTERs")
"""
ALTER_THEN_SLEEP = """
import os, time
op.add_column("users_a1", sa.Column("email", sa.String(50)))
if os.environ.get("REPAIR_TEST_SLEEP"):
    time.sleep(float(os.environ["REPAIR_TEST_SLEEP"]))
op.add_column("users_a1", sa.Column("phone", sa.String(50)))
"""
DROP_BOTH = """
op.drop_column("users_a1", "phone")
op.drop_column("users_a1", "email")
"""


def _mariadb_ws(tmp_path: Path, url: str, a2_body: str) -> Path:
    """users: a1 (creates users_a1) - a2 (adds two columns to it, body given) - a3."""
    return make_workspace(
        tmp_path,
        {
            "users": [
                rev("a1"),
                rev("a2", "a1", upgrade_body=a2_body, downgrade_body=DROP_BOTH),
                rev("a3", "a2"),
            ]
        },
        envs={"dev": {"urls": {"users": url}}},
    )


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sa.inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def _execute(url: str, sql: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def _wait_for_step(root: Path, sql: str, timeout: float = 60.0) -> None:
    """Poll the journal (state.db of env dev) until ``sql`` returns a row."""
    state = root / ".migrate" / "dev" / "state.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            engine = sa.create_engine(f"sqlite:///{state}", poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    if conn.execute(sa.text(sql)).first() is not None:
                        return
            except sa.exc.OperationalError:
                pass
            finally:
                engine.dispose()
        time.sleep(0.05)
    raise AssertionError(f"the journal never showed: {sql}")


def _kill(root: Path, args: list[str], wait_sql: str, env: dict[str, str]) -> int:
    proc = subprocess.Popen(
        [MIGRATE, *args],
        cwd=root,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "MIGRATE_CONFIG"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_step(root, wait_sql)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return proc.pid


def test_mariadb_revision_failing_after_two_alters_says_what_remains_then_stamp_repairs(
    make_database: MakeDatabase, tmp_path: Path
):
    url = make_database("mysql")
    root = _mariadb_ws(tmp_path, url, TWO_ALTERS)
    assert run_cli(["apply", "--target", "users@a1"], cwd=root).exit_code == 0

    failed = run_cli(["apply", "--json"], cwd=root)
    assert failed.exit_code == 1, failed.stdout
    data = failed.json()
    message = data["message"]
    assert "nothing changed" not in message
    assert "No earlier step of this run needed undoing" in message
    assert "ALTER TABLE users_a1 ADD COLUMN email VARCHAR(50)" in message
    assert "ALTER TABLE users_a1 ADD COLUMN phone VARCHAR(50)" in message
    assert "may remain in users's database" in message
    assert "migrate stamp --env dev users@a2   (only if you finished it by hand)" in data["next_steps"]
    # The truth: both ALTERs stayed, the version table still says a1.
    assert {"email", "phone"} <= _columns(url, "users_a1")
    assert version_rows(url) == ["a1"]

    history = run_cli(["history", "--json"], cwd=root).json()["runs"]
    step = next(s for s in history[0]["steps"] if s["node"] == "users@a2")
    assert step["status"] == "failed"
    assert any(s.startswith("ALTER TABLE users_a1 ADD COLUMN phone") for s in step["statements"])

    # Repair: the two ALTERs are the whole revision, so it is finished; record it, go on.
    stamped = run_cli(["stamp", "users@a2", "--json"], cwd=root)
    assert stamped.exit_code == 0, stamped.stdout
    assert stamped.json()["before"] == ["a1"] and stamped.json()["after"] == ["a2"]
    assert version_rows(url) == ["a2"]
    assert "users_a2" not in tables(url)  # stamp ran no migration
    applied = run_cli(["apply", "--json"], cwd=root)
    assert applied.exit_code == 0, applied.stdout
    assert [s["node"] for s in applied.json()["steps"]] == ["users@a3"]
    assert version_rows(url) == ["a3"]
    assert {"users_a1", "users_a3"} <= tables(url)
    assert {"email", "phone"} <= _columns(url, "users_a1")


def test_mariadb_apply_killed_inside_a_revision_status_says_the_truth_and_repair_converges(
    make_database: MakeDatabase, tmp_path: Path
):
    url = make_database("mysql")
    root = _mariadb_ws(tmp_path, url, ALTER_THEN_SLEEP)
    assert run_cli(["apply", "--target", "users@a1"], cwd=root).exit_code == 0
    pid = _kill(
        root,
        ["apply"],
        "SELECT 1 FROM migrate_steps WHERE node = 'users@a2' AND statements LIKE '%ADD COLUMN email%'",
        {"REPAIR_TEST_SLEEP": "60"},
    )
    assert {"email"} <= _columns(url, "users_a1") and "phone" not in _columns(url, "users_a1")
    assert version_rows(url) == ["a1"]

    status = run_cli(["status", "--json"], cwd=root)
    assert status.exit_code == 0
    run = status.json()["interrupted_run"]
    assert run["kind"] == "apply" and run["holder"].endswith(f"pid {pid}")
    [stopped] = run["stopped_in"]
    assert stopped["node"] == "users@a2" and stopped["may_remain"] is True
    assert any("ADD COLUMN email" in s for s in stopped["statements"])
    assert "may have left part of its statements behind" in run["message"]
    assert "`migrate apply` will retry it and may fail on what remains" in run["message"]
    assert "`migrate stamp --env dev users@a2`" in run["message"]
    text = run_cli(["status"], cwd=root)
    flat = " ".join(text.stdout.split())
    assert "interrupted apply run" in flat
    assert "ALTER TABLE users_a1 ADD COLUMN email VARCHAR(50)" in flat
    assert "will retry it and may fail on what remains" in flat

    # Repair by undoing what the revision left, then apply runs it again from scratch.
    _execute(url, "ALTER TABLE users_a1 DROP COLUMN email")
    stamped = run_cli(["stamp", "users@a1", "--json"], cwd=root)  # already there: changes nothing
    assert stamped.exit_code == 0 and stamped.json()["outcome"] == "nothing_to_do"
    applied = api.apply(api.open_project(cwd=str(root)))
    assert applied.exit_code == 0, applied.message
    assert version_rows(url) == ["a3"]
    assert {"email", "phone"} <= _columns(url, "users_a1")
    assert api.status(api.open_project(cwd=str(root))).interrupted_run is None


SLOW_DOWNGRADE = """
import os, time
time.sleep(float(os.environ.get("REPAIR_TEST_SLEEP_DOWN", "0")))
op.drop_table("users_a2")
"""


def test_killed_rollback_is_reported_as_a_rollback_that_rollback_continues(tmp_path: Path):
    slow_down = SLOW_DOWNGRADE
    root = make_workspace(tmp_path, {"users": [rev("a1"), rev("a2", "a1", downgrade_body=slow_down), rev("a3", "a2")]})
    url = f"sqlite:///{root}/.migrate/dev/users.db"
    applied = api.apply(api.open_project(cwd=str(root)))
    assert applied.exit_code == 0, applied.message
    _kill(
        root,
        ["rollback"],
        "SELECT 1 FROM migrate_steps s JOIN migrate_runs r ON r.id = s.run_id "
        "WHERE r.kind = 'rollback' AND s.node = 'users@a2' AND s.status = 'running'",
        {"REPAIR_TEST_SLEEP_DOWN": "60"},
    )
    assert version_rows(url) == ["a2"]  # a3 was undone, a2's downgrade never committed

    run = run_cli(["status", "--json"], cwd=root).json()["interrupted_run"]
    assert run["kind"] == "rollback"
    assert run["done"] == ["users@a3"] and run["left"] == ["users@a2", "users@a1"]
    assert run["continue_with"] == f"migrate rollback --env dev --run {applied.run_id}"
    assert run["message"].startswith(f"rollback run {run['id']} was interrupted")
    assert "not `migrate apply`" in run["message"]
    assert "`migrate apply --env dev` continues" not in run["message"]
    assert "may have left" not in run["message"]  # SQLite: DDL is transactional
    text = " ".join(run_cli(["status"], cwd=root).stdout.split())
    assert "interrupted rollback run" in text and f"--run {applied.run_id}" in text

    finished = run_cli(["rollback", "--run", str(applied.run_id), "--json"], cwd=root)
    assert finished.exit_code == 0, finished.stdout
    assert version_rows(url) == []
    assert not {"users_a1", "users_a2", "users_a3"} & tables(url)
    assert run_cli(["status", "--json"], cwd=root).json()["interrupted_run"] is None


def test_stamp_refuses_protected_env_without_yes_and_unknown_revisions(tmp_path: Path):
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1")]},
        envs={"prod": {"url": "sqlite:///.migrate/prod/{service}.db", "protected": True}},
        default_env="prod",
    )
    url = f"sqlite:///{root}/.migrate/prod/users.db"
    assert run_cli(["apply", "--yes"], cwd=root).exit_code == 0
    refused = run_cli(["stamp", "users@a1", "--json"], cwd=root)
    assert refused.exit_code == 2
    assert "protected" in refused.json()["error"]
    assert version_rows(url) == ["a2"]
    assert [r["kind"] for r in run_cli(["history", "--json"], cwd=root).json()["runs"]] == ["apply"]

    unknown = run_cli(["stamp", "users@a3", "--yes"], cwd=root)
    assert unknown.exit_code == 2
    assert "unknown reference 'users@a3'" in unknown.stderr and "did you mean" in unknown.stderr
    assert run_cli(["stamp", "billing@a1", "--yes"], cwd=root).exit_code == 2
    assert version_rows(url) == ["a2"]

    done = run_cli(["stamp", "users@a1", "--yes"], cwd=root)
    assert done.exit_code == 0, done.stderr
    assert "a2 -> a1" in done.stderr
    assert version_rows(url) == ["a1"]
    assert "users_a2" in tables(url)  # the stamp ran no downgrade


def test_stamp_through_env_py_and_base_is_journaled_and_in_history(tmp_path: Path):
    root = make_workspace(tmp_path, {"users": [rev("a1"), rev("a2", "a1")]}, env_py=True)
    url = f"sqlite:///{root}/.migrate/dev/users.db"
    head = run_cli(["stamp", "users@head", "--json"], cwd=root)
    assert head.exit_code == 0, head.stdout
    assert version_rows(url) == ["a2"]
    assert tables(url) == {"alembic_version"}
    base = run_cli(["stamp", "users@base", "--json"], cwd=root)
    assert base.exit_code == 0 and base.json()["after"] == []
    assert version_rows(url) == []
    runs = run_cli(["history", "--json"], cwd=root).json()["runs"]
    assert [(r["kind"], r["outcome"]) for r in runs] == [("stamp", "succeeded"), ("stamp", "succeeded")]
    assert runs[0]["steps"][0]["node"] == "users@base"
    assert runs[0]["steps"][0]["kind"] == "stamp"
    assert (runs[0]["steps"][0]["before"], runs[0]["steps"][0]["after"]) == (["a2"], [])
    assert (runs[1]["steps"][0]["before"], runs[1]["steps"][0]["after"]) == ([], ["a2"])
    assert run_cli(["apply"], cwd=root).exit_code == 0
    assert version_rows(url) == ["a2"] and {"users_a1", "users_a2"} <= tables(url)
