"""`check --roundtrip --env E` on an environment's own databases: refused unless the manifest
declares E throw-away (`scratch = true`); a scratch env is returned to the revisions it was
found at, whatever happens (a finding, a revision that raises, Ctrl-C)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.core.model import ServiceSpec
from orchestrator.runtime.alembic_runner import run_revisions
from orchestrator.runtime.engines import create_engine
from tests.check.ws import R, check, check_json, table, workspace
from tests.conftest import MakeDatabase
from tests.helpers import tables, version_rows


def scratch_ws(tmp_path: Path, services: Mapping[str, Sequence[R]], urls: Mapping[str, str], *, scratch: bool) -> Path:
    """A workspace whose env `ci` holds ``urls``, declared `scratch = true` or not."""
    root = workspace(tmp_path, services, envs={"ci": dict(urls)})
    if scratch:
        manifest = root / "migrate.toml"
        manifest.write_text(manifest.read_text() + "\n[envs.ci]\nscratch = true\n", encoding="utf-8")
    return root


def upgrade_to(root: Path, service: str, url: str, revisions: Sequence[str]) -> None:
    """Put a database at a revision with plain Alembic runs (what an earlier deploy did)."""
    spec = ServiceSpec(service, str(root / "services" / service))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            run_revisions(spec, url, conn, list(revisions), upgrade=True)
    finally:
        engine.dispose()


def fill(url: str, table_name: str, rows: int) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for i in range(1, rows + 1):
                conn.execute(sa.text(f"INSERT INTO {table_name} (id, label) VALUES ({i}, 'row {i}')"))
    finally:
        engine.dispose()


def count(url: str, table_name: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table_name}")).scalar_one())
    finally:
        engine.dispose()


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


THREE = [table("a1", None, "t1"), table("a2", "a1", "t2"), table("a3", "a2", "t3")]
TWO = [table("p1", None, "p1"), table("p2", "p1", "p2")]


def test_an_env_not_declared_scratch_is_refused_and_nothing_is_touched(
    tmp_path: Path, make_database: MakeDatabase
) -> None:
    """app on SQLite at a2 (rows in t1), pg on PostgreSQL at p1 (rows in p1), idle on a SQLite
    file that does not exist yet: exit 2, and every file, version table and row is as it was."""
    app, pg, idle = make_database("sqlite"), make_database("postgresql"), make_database("sqlite")
    root = scratch_ws(
        tmp_path,
        {"app": THREE, "pg": TWO, "idle": [table("i1", None, "i1")]},
        {"app": app, "pg": pg, "idle": idle},
        scratch=False,
    )
    upgrade_to(root, "app", app, ["a1", "a2"])
    upgrade_to(root, "pg", pg, ["p1"])
    fill(app, "t1", 3)
    fill(pg, "p1", 4)
    app_file, idle_file = app.removeprefix("sqlite:///"), idle.removeprefix("sqlite:///")
    before = digest(app_file)
    run = check(root, "--env", "ci", "--roundtrip")
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "env 'ci'" in run.stderr and "scratch = true" in run.stderr and "[envs.ci]" in run.stderr
    assert "--scratch-url" in run.stderr and "drop --env" in run.stderr
    code, data = check_json(root, "--env", "ci", "--roundtrip")
    assert code == 2 and data["exit_code"] == 2 and "scratch = true" in data["hint"]
    assert digest(app_file) == before
    assert version_rows(app) == ["a2"] and count(app, "t1") == 3
    assert version_rows(pg) == ["p1"] and count(pg, "p1") == 4 and tables(pg) == {"alembic_version", "p1"}
    assert not Path(idle_file).exists()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_scratch_env_at_a_middle_revision_is_returned_to_it(
    tmp_path: Path, make_database: MakeDatabase, dialect: str
) -> None:
    """app at a2 of a1 -- a2 -- a3, pg at p1 of p1 -- p2, idle at base (no database yet).
    The round trip runs every step and goes to base and back; then each service is at the
    revision it was found at, and the output says where, and which rows did not come back."""
    app, pg, idle = make_database(dialect), make_database("postgresql"), make_database("sqlite")
    root = scratch_ws(
        tmp_path,
        {"app": THREE, "pg": TWO, "idle": [table("i1", None, "i1")]},
        {"app": app, "pg": pg, "idle": idle},
        scratch=True,
    )
    upgrade_to(root, "app", app, ["a1", "a2"])
    upgrade_to(root, "pg", pg, ["p1"])
    fill(app, "t1", 3)
    code, data = check_json(root, "--env", "ci", "--roundtrip")
    assert code == 0, data
    assert data["findings"] == []
    assert data["summary"]["roundtrip"] == "the databases of env 'ci' (scratch)"
    # it did run: the pending steps were round-tripped, and every service went to base
    junit = check(root, "--env", "ci", "--roundtrip", "--format", "junit").stdout
    assert 'name="app@a3"' in junit and 'name="pg@p2"' in junit and 'name="app@base"' in junit
    assert version_rows(app) == ["a2"] and tables(app) == {"alembic_version", "t1", "t2"}
    assert version_rows(pg) == ["p1"] and tables(pg) == {"alembic_version", "p1"}
    assert version_rows(idle) == [] and "i1" not in tables(idle)
    returned = next(n for n in data["notes"] if n.startswith("env 'ci' was returned"))
    assert "app@a2" in returned and "pg@p1" in returned and "idle at base" in returned
    lost = next(n for n in data["notes"] if n.startswith("rows the round trip could not give back"))
    assert "app.t1: 3 row(s) before, 0 now" in lost
    text = check(root, "--env", "ci", "--roundtrip")
    assert text.exit_code == 0 and "was returned to the revisions it was found at" in text.stdout


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_downgrade_that_raises_is_a_finding_and_the_env_is_still_returned(
    tmp_path: Path, make_database: MakeDatabase, dialect: str
) -> None:
    """app: a1 (downgrade raises) -- a2 -- a3, found at a2. The way down to base stops at a1
    (MG603); app is then brought back up to a2."""
    url = make_database(dialect)
    broken = R("a1", None, THREE[0].upgrade_body, "raise RuntimeError('cannot drop t1')")
    root = scratch_ws(tmp_path, {"app": [broken, *THREE[1:]]}, {"app": url}, scratch=True)
    upgrade_to(root, "app", url, ["a1", "a2"])
    code, data = check_json(root, "--env", "ci", "--roundtrip")
    assert code == 1, data
    [f] = data["findings"]
    assert (f["code"], f["node"]) == ("MG603", "app@a1") and "cannot drop t1" in f["message"]
    assert version_rows(url) == ["a2"] and tables(url) == {"alembic_version", "t1", "t2"}
    assert any(n.startswith("env 'ci' was returned to the revisions it was found at: app@a2") for n in data["notes"])


def test_an_env_that_cannot_be_returned_says_where_it_is_and_exits_4(
    tmp_path: Path, make_database: MakeDatabase
) -> None:
    """app: a1 -- a2 (downgrade raises), found at a1. a2 cannot be undone, so app stays at a2:
    MG603 for the round trip, MG605 naming where app is, exit 4."""
    url = make_database("postgresql")
    bad = R("a2", "a1", "op.add_column('t1', sa.Column('x', sa.Integer()))", "raise RuntimeError('no way back')")
    root = scratch_ws(tmp_path, {"app": [THREE[0], bad]}, {"app": url}, scratch=True)
    upgrade_to(root, "app", url, ["a1"])
    code, data = check_json(root, "--env", "ci", "--roundtrip")
    assert code == 4 and data["summary"]["exit_code"] == 4
    got = {f["code"]: f for f in data["findings"]}
    assert sorted(got) == ["MG603", "MG605"]
    assert got["MG605"]["node"] == "app"
    assert "'app' is at app@a2, not app@a1: downgrading app@a2 failed" in got["MG605"]["message"]
    assert "no way back" in got["MG605"]["message"]
    assert any("NOT fully returned" in n for n in data["notes"])
    assert version_rows(url) == ["a2"]


def test_ctrl_c_returns_the_env_before_exiting(tmp_path: Path, make_database: MakeDatabase) -> None:
    """a: a1 -- a2; z: z1 -- z2, whose upgrade is interrupted (KeyboardInterrupt, as Ctrl-C
    raises it). a was already round-tripped to a2 when z2 is interrupted: it is taken back to
    a1, z stays at z1, and the message says so."""
    a, z = make_database("sqlite"), make_database("postgresql")
    stop = R("z2", "z1", "raise KeyboardInterrupt()", "pass")
    root = scratch_ws(
        tmp_path,
        {"a": [table("a1", None, "ta"), table("a2", "a1", "tb")], "z": [table("z1", None, "tz"), stop]},
        {"a": a, "z": z},
        scratch=True,
    )
    upgrade_to(root, "a", a, ["a1"])
    upgrade_to(root, "z", z, ["z1"])
    run = check(root, "--env", "ci", "--roundtrip")
    assert run.exit_code == 130, run.stdout + run.stderr
    assert "interrupted" in run.stderr and "a@a1" in run.stderr and "z@z1" in run.stderr
    assert version_rows(a) == ["a1"] and tables(a) == {"alembic_version", "ta"}
    assert version_rows(z) == ["z1"] and tables(z) == {"alembic_version", "tz"}
