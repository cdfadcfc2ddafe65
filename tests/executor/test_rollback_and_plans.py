"""Explicit rollback, plan files, protected environments, dry runs and passwords."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import api
from orchestrator.errors import MigrateError, PlanConflictError
from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import Rev, build, chain, rev_ids, snapshot, snapshots

MIGRATE = str(Path(sys.executable).with_name("migrate"))


def _project(ws) -> api.Project:  # type: ignore[no-untyped-def]
    return api.open_project(str(ws.manifest))


def _ws(tmp_path: Path, urls: dict[str, str], **kw):  # type: ignore[no-untyped-def]
    """users: u1 - u2 - u3;  orders: o1 - o2 (o2 requires u2);  billing: b1 (requires o2).

        users   u1 - u2 - u3
                      \\
        orders  o1 --- o2
                        \\
        billing          b1
    """
    services = {
        "users": chain("users", 3),
        "orders": chain("orders", 2, {2: ["users@user00000002"]}),
        "billing": chain("billing", 1, {1: ["orders@orde00000002"]}),
    }
    return build(tmp_path / "ws", services, urls, **kw)


def run_cli(ws, *args: str, env: dict[str, str] | None = None, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [MIGRATE, "--config", str(ws.manifest), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        timeout=120,
    )


def test_rollback_undoes_the_last_run(dialect: str, make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database(dialect) for s in ("users", "orders", "billing")}
    ws = _ws(tmp_path, urls)
    assert api.apply(_project(ws), targets=["users@user00000001"]).exit_code == 0
    first = snapshots(ws)
    applied = api.apply(_project(ws))
    assert applied.exit_code == 0
    result = api.rollback(_project(ws))
    assert result.exit_code == 0, result.message
    assert snapshots(ws) == first
    runs = api.history(_project(ws), None)
    assert runs[0]["kind"] == "rollback" and runs[0]["undoes_run"] == applied.run_id
    assert runs[1]["id"] == applied.run_id and runs[1]["undone_by"] == runs[0]["id"]
    # The next rollback undoes the run before it.
    assert api.rollback(_project(ws)).exit_code == 0
    assert snapshot(urls["users"]).versions == ()


def test_rollback_to_takes_back_dependents_in_other_services_first(make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = _ws(tmp_path, urls)
    assert api.apply(_project(ws)).exit_code == 0
    dry = api.rollback(_project(ws), to="users@user00000001", dry_run=True)
    # The reverse of the forward order u2, o2, b1, u3: every dependent before what it needs.
    assert [s.id for s in dry.plan.steps] == [
        "users@user00000003",
        "billing@bill00000001",
        "orders@orde00000002",
        "users@user00000002",
    ]
    assert all(s.kind == "downgrade" for s in dry.plan.steps)
    assert snapshot(urls["billing"]).versions == ("bill00000001",)  # a dry run changes nothing
    result = api.rollback(_project(ws), to="users@user00000001")
    assert result.exit_code == 0, result.message
    state = snapshots(ws)
    assert state["users"].versions == ("user00000001",)
    assert state["orders"].versions == ("orde00000001",)  # o2 required u2
    assert state["billing"].versions == ()  # b1 required o2
    assert state["orders"].ledger == ("orde00000001",)


def test_rollback_refuses_an_irreversible_revision_before_changing_anything(
    make_database: MakeDatabase, tmp_path: Path
):
    urls = {"users": make_database("sqlite")}
    ids = rev_ids("users", 3)
    services = {"users": [Rev(ids[0]), Rev(ids[1], irreversible=True), Rev(ids[2])]}
    ws = build(tmp_path / "ws", services, urls)
    assert api.apply(_project(ws)).exit_code == 0
    before = snapshots(ws)
    with pytest.raises(MigrateError) as err:
        api.rollback(_project(ws), to="users@base")
    assert err.value.exit_code == 2
    assert "\n  users@user00000002: marked irreversible = True" in err.value.message
    assert snapshots(ws) == before
    proc = run_cli(ws, "rollback", "--to", "users@base")
    assert proc.returncode == 2
    assert "irreversible" in proc.stderr
    assert snapshots(ws) == before


def test_plan_file_applies_and_refuses_when_stale_tampered_or_for_another_env(
    make_database: MakeDatabase, tmp_path: Path
):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = _ws(tmp_path, urls)
    project = _project(ws)
    made = api.make_plan(project, targets=["orders@orde00000002"], out=str(tmp_path / "p.json"))
    plan_path = Path(made.out_path or "")
    data = json.loads(plan_path.read_text())
    assert data["format"] == "migrate-plan/1" and data["env"] == "test"

    # Tampered: one step removed.
    tampered = dict(data, steps=data["steps"][:-1])
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    proc = run_cli(ws, "apply", str(tmp_path / "tampered.json"))
    assert proc.returncode == 3, proc.stderr
    assert "edited" in proc.stderr

    # Wrong environment.
    other = dict(data, env="prod")
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(PlanConflictError):
        api.apply(project, plan_file=str(tmp_path / "other.json"))

    # A migration file changed since planning.
    rev_file = ws.root / "orders" / "versions" / "orde00000002.py"
    original = rev_file.read_text()
    rev_file.write_text(original + "\n# reviewed\n")
    proc = run_cli(ws, "apply", str(plan_path))
    assert proc.returncode == 3
    assert "orders@orde00000002 changed since planning" in proc.stderr
    rev_file.write_text(original)

    # A database moved since planning.
    assert api.apply(_project(ws), targets=["users@user00000001"]).exit_code == 0
    proc = run_cli(ws, "apply", str(plan_path))
    assert proc.returncode == 3
    assert "users was at base and is now at ['user00000001']" in proc.stderr
    assert snapshot(urls["orders"]).versions == ()

    # A fresh plan file applies exactly its steps.
    fresh = api.make_plan(_project(ws), targets=["orders@orde00000002"], out=str(tmp_path / "fresh.json"))
    proc = run_cli(ws, "apply", fresh.out_path or "")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(urls["orders"]).versions == ("orde00000002",)
    assert snapshot(urls["billing"]).versions == ()


def test_protected_environment_needs_yes(make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = _ws(tmp_path, urls, protected=True)
    proc = run_cli(ws, "apply", stdin="")
    assert proc.returncode == 2
    assert "protected" in proc.stderr and "--yes" in proc.stderr
    assert snapshot(urls["users"]).versions == ()
    assert not (ws.root / ".migrate" / "test" / "state.db").exists()
    proc = run_cli(ws, "apply", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(urls["users"]).versions == ("user00000003",)
    proc = run_cli(ws, "rollback")
    assert proc.returncode == 2
    assert snapshot(urls["users"]).versions == ("user00000003",)


def test_dry_run_writes_nothing_anywhere(make_database: MakeDatabase, tmp_path: Path):
    urls = {"users": make_database("sqlite"), "orders": make_database("postgresql"), "billing": make_database("mysql")}
    ws = _ws(tmp_path, urls)
    proc = run_cli(ws, "apply", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "CREATE TABLE t_user00000001" in proc.stdout
    assert "CREATE TABLE t_orde00000001" in proc.stdout
    assert not Path(urls["users"][len("sqlite:///") :]).exists()
    assert snapshot(urls["orders"]) == snapshot(urls["billing"]) == snapshot(urls["users"])
    assert snapshot(urls["orders"]).tables == ()
    assert not (ws.root / ".migrate" / "test").exists()  # no journal, no lock


def test_passwords_never_reach_output_files_or_the_journal(make_database: MakeDatabase, tmp_path: Path):
    secret = "Sup3rS3cretPw"
    plain = make_database("postgresql")
    with_password = plain.replace("postgres@", f"postgres:{secret}@")  # trust auth ignores it
    urls = {"users": "${USERS_URL}", "orders": make_database("sqlite"), "billing": make_database("sqlite")}
    ws = _ws(tmp_path, urls)
    env = {"USERS_URL": with_password, "MIGRATE_TEST_FAIL": "bill00000001"}
    outputs = []
    for args in (
        ["status"],
        ["status", "--json"],
        ["plan", "--json"],
        ["plan", "--out", str(tmp_path / "plan.json")],
        ["apply"],
        ["apply", "--json"],
        ["history", "--json"],
        ["graph", "--env", "test", "--format", "json"],
    ):
        proc = run_cli(ws, *args, env=env)
        outputs += [proc.stdout, proc.stderr]
    assert any("***" in o for o in outputs)  # the URL was shown, masked
    for text in outputs:
        assert secret not in text
    assert secret not in (tmp_path / "plan.json").read_text()
    state = ws.root / ".migrate" / "test" / "state.db"
    engine = sa.create_engine(f"sqlite:///{state}")
    with engine.connect() as conn:
        for table in ("migrate_runs", "migrate_steps", "migrate_lock"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                assert secret not in " ".join(str(v) for v in row)
    engine.dispose()
    for path in (ws.root / ".migrate").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()
