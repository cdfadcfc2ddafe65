"""`--env` (requirements applied first) and `--plan FILE` (still valid), on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestrator import api
from tests.check.ws import check, check_json, line_of, rel, rev_path, table, workspace


def stamp(root: Path, service: str, *revisions: str) -> None:
    """Make the dev database of ``service`` say that ``revisions`` are applied."""
    path = root / ".migrate" / "dev" / f"{service}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        conn.execute("DELETE FROM alembic_version")
        conn.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in revisions])


def fleet(tmp_path: Path, **kw: object) -> Path:
    """users: u1 -- u2        orders: o1 (requires users@u2 in its file) -- o2"""
    return workspace(
        tmp_path,
        {
            "users": [table("u1", None, "users"), table("u2", "u1", "profiles")],
            "orders": [table("o1", None, "orders", attrs='requires = ["users@u2"]'), table("o2", "o1", "items")],
        },
        **kw,  # type: ignore[arg-type]
    )


def test_env_requirement_applied_after_what_needs_it(tmp_path: Path) -> None:
    root = fleet(tmp_path)
    assert check_json(root, "--env", "dev") == check_json(root, "--env", "dev")  # reading changes nothing
    code, data = check_json(root, "--env", "dev")
    assert (code, data["findings"]) == (0, [])
    assert "env-requires" in data["summary"]["rules"] and data["summary"]["env"] == "dev"

    stamp(root, "orders", "o1")  # orders was deployed first, users is still empty
    code, data = check_json(root, "--env", "dev")
    assert code == 1
    [f] = data["findings"]
    assert (f["code"], f["level"], f["node"]) == ("MG403", "error", "orders@o1")
    assert (f["file"], f["line"]) == (rel(root, "orders", "o1"), line_of(rev_path(root, "orders", "o1"), "requires ="))
    assert "users@u2" in f["message"] and "env 'dev'" in f["message"]
    assert f["hint"] == "apply the requirement now: `migrate apply --env dev --target users@u2`"

    stamp(root, "users", "u2")
    code, data = check_json(root, "--env", "dev")
    assert (code, data["findings"]) == (0, [])


def test_without_env_the_environment_is_not_read(tmp_path: Path) -> None:
    root = fleet(tmp_path)
    stamp(root, "orders", "o1")
    code, data = check_json(root)
    assert (code, data["findings"], data["summary"]["env"]) == (0, [], None)


def test_a_plan_file_still_valid_passes_and_a_stale_one_is_mg501(tmp_path: Path) -> None:
    root = fleet(tmp_path)
    plan = api.make_plan(api.open_project(str(root / "migrate.toml")), "dev", out=str(root / "plans" / "p.json"))
    assert plan.out_path is not None
    code, data = check_json(root, "--plan", plan.out_path)
    assert (code, data["findings"]) == (0, [])
    assert data["summary"]["rules"][-1] == "plan-file"

    path = rev_path(root, "users", "u2")
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited after planning\n", encoding="utf-8")
    code, data = check_json(root, "--plan", "p.json")  # found in plans_dir
    assert code == 1
    [f] = data["findings"]
    assert (f["code"], f["level"], f["file"]) == ("MG501", "error", "plans/p.json")
    assert "users@u2 changed since planning" in f["message"]


def test_a_plan_file_made_before_the_env_moved_is_mg502(tmp_path: Path) -> None:
    root = fleet(tmp_path)
    plan = api.make_plan(api.open_project(str(root / "migrate.toml")), "dev", out=str(root / "p.json"))
    assert plan.out_path is not None
    assert check_json(root, "--plan", plan.out_path, "--env", "dev")[0] == 0
    stamp(root, "users", "u1")
    code, data = check_json(root, "--plan", plan.out_path, "--env", "dev")
    assert code == 1
    assert [f["code"] for f in data["findings"]] == ["MG502"]
    assert "users was at base and is now at ['u1']" in data["findings"][0]["message"]


def test_a_plan_file_that_applies_a_requirement_too_late(tmp_path: Path) -> None:
    """The plan was made while nothing related orders@o1 and users@u1, so it runs orders@o1
    first (ties break by service name). Then the manifest gains `orders@o1 needs users@u1`:
    no migration file changed, so the plan is not stale, but it applies orders@o1 first."""
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "users")], "orders": [table("o1", None, "orders")]},
    )
    plan = api.make_plan(api.open_project(str(root / "migrate.toml")), "dev", out=str(root / "p.json"))
    assert [s.id for s in plan.plan.steps] == ["orders@o1", "users@u1"]
    manifest = root / "migrate.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + '\n[[requires]]\nnode = "orders@o1"\nneeds = ["users@u1"]\n',
        encoding="utf-8",
    )
    code, data = check_json(root, "--plan", str(root / "p.json"), "--env", "dev")
    assert code == 1
    [f] = data["findings"]
    assert (f["code"], f["node"], f["file"]) == ("MG403", "orders@o1", "migrate.toml")
    assert f["line"] == line_of(manifest, '"users@u1"')
    assert f["message"] == "the plan file applies orders@o1 before its requirement users@u1 in env 'dev'"


def test_a_plan_file_that_cannot_be_read_is_bad_input(tmp_path: Path) -> None:
    root = fleet(tmp_path)
    run = check(root, "--plan", str(tmp_path / "missing.json"))
    assert run.exit_code == 2
    assert "missing.json" in run.stderr
