"""A password given through ${VAR} never reaches stdout, stderr, a plan file or any other file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_SERVER, MakeDatabase, require_server
from tests.helpers import alembic_upgrade, make_workspace, rev, run_cli, run_migrate, version_rows

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


# -- passwords with spaces, '@', quotes and '%' (SPEC §3) ---------------------------------
ODD = 'Kx9q Vb7@Lm4w"z Rt8%'  # a space, a raw '@', a quote, a trailing '%'
ODD_WORDS = ("Kx9q", "Vb7", 'Lm4w"z', "Lm4w", "Rt8%")


@pytest.fixture
def odd_role() -> Iterator[tuple[str, list[str]]]:
    """A PostgreSQL role whose password is ``ODD``, owning two new databases (both dropped
    afterwards). The local server trusts 127.0.0.1, so what is tested is the masking."""
    require_server("postgresql")
    tag = uuid.uuid4().hex[:8]
    role, dbs = f"odd_{tag}", [f"odd_{tag}_a", f"odd_{tag}_b"]
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{ODD}'"))
        for db in dbs:
            conn.execute(sa.text(f'CREATE DATABASE "{db}" OWNER "{role}"'))
    try:
        yield role, dbs
    finally:
        with admin.connect() as conn:
            for db in dbs:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def _leaks(text: str) -> list[str]:
    return [s for s in (ODD, *ODD_WORDS) if s in text]


def test_an_odd_password_is_masked_everywhere_and_still_connects(
    odd_role: tuple[str, list[str]], tmp_path: Path
) -> None:
    role, (db_var, db_raw) = odd_role
    server = sa.engine.make_url(PG_SERVER)
    at = f"{server.host}:{server.port}"
    root = make_workspace(
        tmp_path,
        {"users": [rev("a1"), rev("a2", "a1")]},
        envs={
            "prod": {"urls": {"users": f"postgresql+psycopg://{role}:${{PGPW}}@{at}/{db_var}"}},
            "raw": {"urls": {"users": f"postgresql+psycopg://{role}:{ODD}@{at}/{db_raw}"}},  # '@' as written
            "down": {"urls": {"users": f"postgresql+psycopg://{role}:${{PGPW}}@nohost.invalid:5432/x"}},
        },
        default_env="prod",
    )
    env = {"PGPW": ODD}
    masked = f"postgresql+psycopg://{role}:***@{at}/{db_var}"
    outputs = []

    def run(args: list[str], code: int = 0) -> None:
        result = run_migrate(args, cwd=root, env=env)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        outputs.append((args, result))

    status = run_migrate(["status", "--json"], cwd=root, env=env)
    assert status.json()["services"][0]["database"] == masked
    outputs.append((["status", "--json"], status))
    for args in (["status"], ["plan"], ["plan", "--json"], ["plan", "--sql"], ["plan", "--out", ""]):
        run(args)
    run(["apply", "--yes"])
    run(["rollback", "--yes", "--json"])
    run(["apply", "--yes", "--json"])
    run(["rollback", "--yes"])
    run(["apply", "--yes"])
    for args in (["check", "--env", "prod"], ["check", "--env", "prod", "--format", "json"]):
        run(args)
    for args in (["graph", "--env", "prod"], ["graph", "--env", "prod", "--format", "json"], ["status"]):
        run(args)
    assert version_rows(f"{PG_SERVER}/{db_var}") == ["a2"]  # the password did reach the database

    run(["apply", "--yes", "--env", "raw", "--json"])  # a raw '@' in the manifest connects
    run(["status", "--env", "raw"])
    assert version_rows(f"{PG_SERVER}/{db_raw}") == ["a2"]

    for args in (
        ["status"],
        ["status", "--json"],
        ["plan", "--json"],
        ["apply", "--yes"],
        ["apply", "--yes", "--json"],
    ):
        run([*args, "--env", "down"], code=2)  # the driver cannot resolve the host
        assert "nohost.invalid" in outputs[-1][1].stdout + outputs[-1][1].stderr

    for args, result in outputs:
        assert _leaks(result.stdout) == [], (args, result.stdout)
        assert _leaks(result.stderr) == [], (args, result.stderr)
    written = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".py" and p.name != "migrate.toml"]
    assert any(p.name == "state.db" for p in written) and any(p.parent.name == "plans" for p in written)
    for path in written:  # the journal (state.db), the plan file, the revision cache
        data = path.read_bytes()
        assert [s for s in (ODD, *ODD_WORDS) if s.encode() in data] == [], path
