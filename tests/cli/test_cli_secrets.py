"""A password given through ${VAR} never reaches stdout, stderr, a plan file or any other file."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tests.conftest import MakeDatabase
from tests.helpers import alembic_upgrade, make_workspace, rev, run_cli

SECRET = "Zq7-sup3r-s3cret-pw"


def _with_password(url: str) -> tuple[str, str]:
    """The URL with ``${PGPW}`` as password, and the form `status` must show."""
    u = sa.engine.make_url(url)
    templated = f"{u.drivername}://{u.username}:${{PGPW}}@{u.host}:{u.port}/{u.database}"
    return templated, f"{u.drivername}://{u.username}:***@{u.host}:{u.port}/{u.database}"


def test_the_password_is_never_shown_or_written(make_database: MakeDatabase, tmp_path: Path) -> None:
    pg = make_database("postgresql")  # the local server trusts 127.0.0.1: any password connects
    templated, shown = _with_password(pg)
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1")], "orders": [rev("b1", requires=["users@a1"])]},
        envs={
            "prod": {"url": "sqlite:///.migrate/prod/{service}.db", "urls": {"users": templated}},
            "down": {"urls": {"users": "postgresql+psycopg://app:${PGPW}@127.0.0.1:1/users", "orders": templated}},
        },
        default_env="prod",
    )
    alembic_upgrade(pg, root / "services" / "users", "a1")
    env = {"PGPW": SECRET}
    outputs = []

    status = run_cli(["status"], cwd=root, env=env)
    assert status.exit_code == 0, status.stderr
    database_column = "".join(line.split("│")[2].strip() for line in status.stdout.splitlines() if "│" in line)
    assert shown in database_column  # the table folds long URLs over several lines
    outputs.append(status)

    status_json = run_cli(["status", "--json"], cwd=root, env=env)
    users = next(s for s in status_json.json()["services"] if s["service"] == "users")
    assert users["database"] == shown
    assert users["current"] == ["a1"]  # the password did reach the database
    outputs.append(status_json)

    for args in (["plan"], ["plan", "--json"], ["plan", "--sql"], ["plan", "--out", ""], ["graph", "--env", "prod"]):
        result = run_cli(args, cwd=root, env=env)
        assert result.exit_code == 0, (args, result.stderr)
        outputs.append(result)

    for args in (["status"], ["status", "--json"], ["plan", "--json"], ["plan", "--sql"]):  # unreachable
        result = run_cli([*args, "--env", "down"], cwd=root, env=env)
        assert result.exit_code == 2
        assert "postgresql+psycopg://app:***@127.0.0.1:1/users" in result.stdout + result.stderr
        outputs.append(result)

    for result in outputs:
        assert SECRET not in result.stdout
        assert SECRET not in result.stderr

    plan_files = list((root / "plans").iterdir())
    assert len(plan_files) == 1
    written = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".py" and p.name != "migrate.toml"]
    assert plan_files[0] in written
    assert any(".migrate" in p.parts for p in written)  # the revision cache was written too
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
