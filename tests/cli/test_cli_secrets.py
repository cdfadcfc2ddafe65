"""A password given through ${VAR} never reaches stdout, stderr, a plan file or any other file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from tests.conftest import MYSQL_SERVER, PG_SERVER, MakeDatabase, require_server
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


# -- a newline in a password, percent-encoded in the manifest (SPEC §3) -------------------
NEWLINE = "Nw4k Qz8@Hy5\nTp3 Ld6"  # a space, a raw '@' and a newline
NEWLINE_FORMS = (
    NEWLINE,
    quote(NEWLINE, safe=""),  # as the manifest writes it
    json.dumps(NEWLINE)[1:-1],  # as JSON writes it
    *NEWLINE.splitlines(),
    "Nw4k",
    "Qz8",
    "Hy5",
    "Tp3",
    "Ld6",
)
# a revision whose statement holds the connection's password, so the driver's error does too
PASSWORD_IN_SQL = rev("a3", "a2", upgrade_body='op.execute("SELECT " + op.get_bind().engine.url.password)\n')


@contextmanager
def _account_with_newline(dialect_name: str) -> Iterator[tuple[str, str]]:
    """A login whose password is ``NEWLINE`` and a new database it owns: (the URL with the
    password percent-encoded, the admin's URL of that database). Both are dropped afterwards.
    MariaDB checks the password; the local PostgreSQL trusts 127.0.0.1."""
    server = PG_SERVER if dialect_name == "postgresql" else MYSQL_SERVER
    require_server("postgresql" if dialect_name == "postgresql" else "mysql")
    name = f"nl_{uuid.uuid4().hex[:8]}"
    admin_db = "postgres" if dialect_name == "postgresql" else ""
    admin = sa.create_engine(f"{server}/{admin_db}", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    if dialect_name == "postgresql":
        create = [f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{NEWLINE}'", f'CREATE DATABASE "{name}" OWNER "{name}"']
        drop = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{name}"']
    else:
        create = [
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
            f"CREATE USER '{name}'@'%' IDENTIFIED BY '{NEWLINE}'",
            f"GRANT ALL ON `{name}`.* TO '{name}'@'%'",
        ]
        drop = [f"DROP DATABASE IF EXISTS `{name}`", f"DROP USER IF EXISTS '{name}'@'%'"]
    with admin.connect() as conn:
        for statement in create:
            conn.execute(sa.text(statement))
    u = sa.engine.make_url(server)
    driver = "postgresql+psycopg" if dialect_name == "postgresql" else "mariadb+pymysql"
    try:
        yield f"{driver}://{name}:{quote(NEWLINE, safe='')}@{u.host}:{u.port}/{name}", f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            for statement in drop:
                conn.execute(sa.text(statement))
        admin.dispose()


@pytest.mark.parametrize("dialect_name", ["postgresql", "mariadb"])
def test_a_percent_encoded_password_with_a_newline_is_masked_in_output_journal_and_driver_errors(
    dialect_name: str, tmp_path: Path
) -> None:
    """The manifest's URL holds the password percent-encoded. It connects (MariaDB checks it),
    and neither it nor any line or word of it reaches stdout, stderr, the journal or a written
    file, including the driver's error for a statement that holds the password."""
    with _account_with_newline(dialect_name) as (url, admin_url):
        root = make_workspace(
            tmp_path,
            {"users": [rev("a1"), rev("a2", "a1"), PASSWORD_IN_SQL]},
            envs={"prod": {"urls": {"users": url}}},
            default_env="prod",
        )
        outputs = []

        def run(args: list[str], code: int = 0) -> Any:
            result = run_migrate(args, cwd=root)
            assert result.exit_code == code, (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            outputs.append((args, result))
            return result

        assert ":***@" in run(["status", "--json"]).json()["services"][0]["database"]
        for args in (["status"], ["plan", "--json"], ["plan", "--out", ""]):
            run(args)
        run(["apply", "--target", "users@a2"])
        assert version_rows(admin_url) == ["a2"]  # the password did reach the database

        failed = run(["apply", "--json"], code=1).json()
        (step,) = [s for s in failed["steps"] if s["node"] == "users@a3"]
        assert step["status"] == "failed"
        assert ("1064" if dialect_name == "mariadb" else "syntax error") in step["error"]  # the driver's own error
        assert "***" in step["error"]  # where the driver quoted the statement back
        run(["apply"], code=1)
        history = run(["history", "--json"]).json()
        assert [s["error"] for r in history["runs"] for s in r["steps"] if s["node"] == "users@a3" and s["error"]]
        run(["rollback", "--yes", "--to", "users@a1"])
        assert version_rows(admin_url) == ["a1"]

    for args, result in outputs:
        assert [s for s in NEWLINE_FORMS if s in result.stdout] == [], (args, result.stdout)
        assert [s for s in NEWLINE_FORMS if s in result.stderr] == [], (args, result.stderr)
    written = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".py" and p.name != "migrate.toml"]
    assert any(p.name == "state.db" for p in written) and any(p.parent.name == "plans" for p in written)
    for path in written:  # the journal (state.db), the plan file, the revision cache
        data = path.read_bytes()
        assert [s for s in NEWLINE_FORMS if s.encode() in data] == [], path
