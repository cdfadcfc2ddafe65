"""Messy input is a clear error with exit 2, never a traceback, and changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_SERVER, require_server
from tests.helpers import make_workspace, rev, run_cli, run_migrate, to_toml

FILES_BEFORE = {"migrate.toml"}


def _workspace(tmp_path: Path, envs: dict[str, object]) -> Path:
    return make_workspace(tmp_path, {"users": [rev("a1"), rev("a2", "a1")]}, envs=envs)  # type: ignore[arg-type]


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["plan"],
        ["plan", "--sql"],
        ["apply", "--yes"],
        ["check", "--env", "bad"],
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_url_with_an_unknown_dialect_is_an_error_naming_the_key(
    tmp_path: Path, args: list[str], as_json: bool
) -> None:
    root = _workspace(
        tmp_path, {"dev": "sqlite:///.migrate/dev/{service}.db", "bad": {"urls": {"users": "notadb://x"}}}
    )
    full = [*args, "--env", "bad"] if "--env" not in args else args
    if as_json:
        full.append("--json" if args[0] != "check" else "--format=json")
    result = run_migrate(full, cwd=root)
    assert result.exit_code == 2, result.stdout + result.stderr
    _no_traceback(result.stderr)
    text = result.json()["error"] if as_json else result.stderr
    assert "unknown database dialect 'notadb'" in text
    assert "envs.bad.urls.users" in text and "migrate.toml" in text
    assert not (root / "plans").exists()
    runs = run_cli(["history", "--env", "bad", "--json"], cwd=root)
    assert runs.json()["runs"] == []  # nothing was journaled


def test_a_manifest_that_is_not_utf8_is_an_error_naming_the_file(tmp_path: Path) -> None:
    root = _workspace(tmp_path, {"dev": "sqlite:///.migrate/dev/{service}.db"})
    manifest = root / "migrate.toml"
    manifest.write_bytes(manifest.read_bytes() + b"\n# caf\xe9 (latin-1)\n")
    for args in (["status"], ["plan", "--json"], ["check"]):
        result = run_migrate(args, cwd=root)
        assert result.exit_code == 2, result.stderr
        _no_traceback(result.stderr)
        text = result.json()["error"] if "--json" in args else result.stdout + result.stderr  # check: a finding
        assert str(manifest) in text and "not UTF-8" in text
        assert "0xe9 on line" in text
    assert not (root / ".migrate").exists()


def test_check_roundtrip_against_an_unreachable_scratch_server_is_exit_2(tmp_path: Path) -> None:
    root = _workspace(tmp_path, {"dev": "sqlite:///.migrate/dev/{service}.db"})
    for fmt in ("text", "json"):
        result = run_migrate(
            [
                "check",
                "--roundtrip",
                "--scratch-url",
                "postgresql+psycopg://app:Sc4rce-Pw@127.0.0.1:1",
                "--format",
                fmt,
            ],
            cwd=root,
        )
        assert result.exit_code == 2, result.stdout + result.stderr
        _no_traceback(result.stderr)
        text = result.json()["error"] if fmt == "json" else result.stderr
        assert "cannot reach" in text and "postgresql+psycopg://app:***@127.0.0.1:1" in text
        assert "Sc4rce" not in result.stdout + result.stderr


@pytest.fixture
def role_without_createdb() -> Iterator[str]:
    """A PostgreSQL login role that may not create databases (dropped afterwards)."""
    require_server("postgresql")
    name = f"nocreate_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{name}" LOGIN NOCREATEDB'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


def _databases() -> set[str]:
    """The scratch databases on the server (other tests create databases of their own meanwhile)."""
    admin = sa.create_engine(f"{PG_SERVER}/postgres", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            query = "SELECT datname FROM pg_database WHERE datname LIKE 'migrate_check_%'"
            return set(conn.execute(sa.text(query)).scalars())
    finally:
        admin.dispose()


def test_check_roundtrip_as_a_role_without_createdb_is_exit_2(tmp_path: Path, role_without_createdb: str) -> None:
    root = _workspace(tmp_path, {"dev": "sqlite:///.migrate/dev/{service}.db"})
    server = sa.engine.make_url(PG_SERVER).set(username=role_without_createdb, database="postgres")
    before = _databases()
    for fmt in ("text", "json"):
        result = run_migrate(
            ["check", "--roundtrip", "--scratch-url", server.render_as_string(), "--format", fmt], cwd=root
        )
        assert result.exit_code == 2, result.stdout + result.stderr
        _no_traceback(result.stderr)
        text = result.json()["error"] if fmt == "json" else result.stderr
        assert "cannot create throw-away databases" in text and "permission denied" in text
        if fmt == "text":
            assert "CREATEDB" in result.stderr  # the hint names the fix
    assert _databases() == before


@pytest.mark.parametrize(
    ("table", "name"),
    [
        ("envs", "../../evil"),
        ("envs", ".."),
        ("envs", "."),
        ("envs", ".hidden"),
        ("envs", "a/b"),
        ("envs", "a\\b"),
        ("envs", "prod\n"),
        ("services", "../users"),
        ("services", ".users"),
    ],
)
def test_env_and_service_names_that_are_paths_are_refused(tmp_path: Path, table: str, name: str) -> None:
    """``[envs."../../evil"]`` must not write a state database or a plan file outside the workspace."""
    root = tmp_path / "deep" / "ws"
    make_workspace(tmp_path / "deep", {"users": [rev("a1")]}, envs={"dev": "sqlite:///.migrate/dev/{service}.db"})
    manifest = root / "migrate.toml"
    data: dict[str, object] = {
        "plans_dir": "plans",
        "services": {"users": {"script_location": "services/users"}},
        "envs": {"dev": {"url": "sqlite:///.migrate/dev/{service}.db"}},
    }
    if table == "envs":
        data["envs"] = {name: {"url": "sqlite:///db/{service}.db"}}
    else:
        (root / "services" / "users").rename(root / "services" / "renamed")
        data["services"] = {name: {"script_location": "services/renamed"}}
        data["envs"] = {"dev": {"url": "sqlite:///db/{service}.db"}}
    manifest.write_text(to_toml(data), encoding="utf-8")
    before = {p for p in tmp_path.rglob("*")}
    env = name if table == "envs" else "dev"
    for args in (["apply", "--env", env, "--yes"], ["plan", "--env", env, "--out", "x.json"], ["status", "--json"]):
        result = run_migrate(args, cwd=root)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        _no_traceback(result.stderr)
        text = result.json()["error"] if "--json" in args else result.stderr
        assert f"{table}.{name}" in text and str(manifest) in text
        assert "not a plain name" in text
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, inside the workspace or out
