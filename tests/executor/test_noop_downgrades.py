"""Rolling back through revisions whose downgrade() does nothing, as published trees have them.

The fixture tree (tests/fixtures/trees/noop_downgrades) holds two shapes::

    store:  s1 -- s2 (downgrade() empty on purpose) -- s3
    app:    a1 --+-- a2a --+-- a3 (merge, both functions `pass`) -- a4
                 +-- a2b --+

Alembic undoes an empty downgrade as a no-op: the version row moves, the schema stays.
`rollback` does the same and says so; a merge has nothing to undo at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import MakeDatabase
from tests.helpers import REPO, make_workspace, manifest_data, rev, run_cli, tables, version_rows, write_manifest

FIXTURE = REPO / "tests" / "fixtures" / "trees" / "noop_downgrades"
STORE_TABLES = {"store_environment", "store_build_status", "store_build"}
APP_TABLES = {"app_users", "app_orders", "app_items", "app_audit"}


def _workspace(tmp_path: Path, urls: dict[str, str] | None = None) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(".migrate"))
    if urls is not None:
        write_manifest(root / "migrate.toml", manifest_data(["store", "app"], {"dev": {"urls": urls}}))
    return root


def _url(root: Path, service: str) -> str:
    return f"sqlite:///{root / '.migrate' / 'dev' / (service + '.db')}"


def _steps(data: dict[str, object]) -> dict[str, dict[str, object]]:
    plan = data["plan"]
    assert isinstance(plan, dict)
    return {str(s["id"]): s for s in plan["steps"]}


def _rollback_store_to_s1(root: Path, store_url: str) -> None:
    assert run_cli(["apply"], cwd=root).exit_code == 0
    assert tables(store_url) >= STORE_TABLES

    dry = run_cli(["rollback", "--to", "store@s1", "--dry-run"], cwd=root)
    assert dry.exit_code == 0, dry.stderr
    assert "store@s2: no-op: its downgrade() is empty, so its changes stay" in dry.stderr
    assert "changes stay" in dry.stdout  # the plan table marks the step too
    assert version_rows(store_url) == ["s3"]  # a dry run changes nothing

    ran = run_cli(["rollback", "--to", "store@s1", "--json"], cwd=root)
    assert ran.exit_code == 0, ran.stdout
    data = ran.json()
    assert data["outcome"] == "succeeded"
    assert "store@s2: no-op: its downgrade() is empty, so its changes stay" in data["message"]
    steps = _steps(data)
    assert steps["store@s2"]["noop"] is True and steps["store@s2"]["noop_kind"] == "empty"
    assert "noop" not in steps["store@s3"]
    # Undone as Alembic undoes it: the database is at s1, s3's table is gone, s2's stays.
    assert version_rows(store_url) == ["s1"]
    assert tables(store_url) & STORE_TABLES == {"store_environment", "store_build_status"}


def test_rollback_through_an_empty_downgrade_is_a_noop_that_keeps_its_changes(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    _rollback_store_to_s1(root, _url(root, "store"))
    assert version_rows(_url(root, "app")) == ["a4"]  # the other service is untouched


def test_rollback_through_an_empty_downgrade_on_postgresql(make_database: MakeDatabase, tmp_path: Path) -> None:
    urls = {"store": make_database("postgresql"), "app": make_database("postgresql")}
    root = _workspace(tmp_path, urls)
    _rollback_store_to_s1(root, urls["store"])
    assert version_rows(urls["app"]) == ["a4"]


def test_rollback_passes_through_a_merge_revision(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    app = _url(root, "app")
    assert run_cli(["apply"], cwd=root).exit_code == 0
    assert tables(app) >= APP_TABLES

    ran = run_cli(["rollback", "--to", "app@a1", "--json"], cwd=root)
    assert ran.exit_code == 0, ran.stdout
    data = ran.json()
    steps = _steps(data)
    assert list(steps) == ["app@a4", "app@a3", "app@a2b", "app@a2a"]
    assert steps["app@a3"]["noop"] is True and steps["app@a3"]["noop_kind"] == "merge"
    assert "app@a3: no-op: a merge revision, nothing to undo" in data["message"]
    assert version_rows(app) == ["a1"]
    assert tables(app) & APP_TABLES == {"app_users"}


def test_check_reports_the_empty_downgrade_but_not_the_merge(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    ran = run_cli(["check", "--format", "json"], cwd=root)
    found = [(f["code"], f["node"]) for f in ran.json()["findings"]]
    assert found == [("MG301", "store@s2")]


def test_irreversible_refusal_lists_each_blocked_step_on_its_own_line(tmp_path: Path) -> None:
    revisions = [rev("u1"), *(rev(f"u{i}", f"u{i - 1}", irreversible=True) for i in range(2, 6))]
    root = make_workspace(tmp_path, {"users": revisions})
    url = _url(root, "users")
    assert run_cli(["apply"], cwd=root).exit_code == 0

    ran = run_cli(["rollback", "--to", "users@base"], cwd=root)
    assert ran.exit_code == 2
    lines = ran.stderr.splitlines()
    assert "cannot roll back: 4 step(s) cannot be undone:" in lines[0]
    for i in range(2, 6):
        assert f"  users@u{i}: marked irreversible = True (services/users/versions/u{i}_rev.py)" in lines
    assert max(len(line) for line in lines) < 200
    assert version_rows(url) == ["u5"]  # nothing changed
    assert tables(url) >= {f"users_u{i}" for i in range(1, 6)}
