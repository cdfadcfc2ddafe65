"""Crashes at random points, concurrent runs, stale locks and advisory locks."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator import api
from orchestrator.runtime.journal import open_journal
from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import Workspace, build, chain, snapshot
from tests.helpers import run_cli

MIGRATE = str(Path(sys.executable).with_name("migrate"))


def _services() -> dict:  # type: ignore[type-arg]
    """users (4) <- orders (4, o2 requires u3) <- billing (3, b1 requires o4)."""
    return {
        "users": chain("users", 4),
        "orders": chain("orders", 4, {2: ["users@user00000003"]}),
        "billing": chain("billing", 3, {1: ["orders@orde00000004"]}),
    }


def _start(ws, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:  # type: ignore[type-arg, no-untyped-def]
    return subprocess.Popen(
        [MIGRATE, "--config", str(ws.manifest), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _run(ws, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg, no-untyped-def]
    return subprocess.run(
        [MIGRATE, "--config", str(ws.manifest), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _wait_for_lock(ws, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    state = ws.root / ".migrate" / "test" / "state.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            try:
                engine = sa.create_engine(f"sqlite:///{state}")
                with engine.connect() as conn:
                    if conn.execute(sa.text("SELECT count(*) FROM migrate_lock")).scalar():
                        engine.dispose()
                        return
                engine.dispose()
            except sa.exc.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def _status_json(ws: Workspace) -> dict[str, Any]:
    """`migrate status --json` of the workspace's env."""
    result = run_cli(["--config", str(ws.manifest), "status", "--json"])
    assert result.exit_code == 0, result.stderr
    info: dict[str, Any] = result.json()
    return info


def _current(info: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {s["service"]: tuple(s["current"]) for s in info["services"]}


def _versions(urls: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Each database's version table, read directly."""
    return {svc: snapshot(url).versions for svc, url in urls.items()}


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_sigkill_at_seeded_points_then_apply_converges(dialect_name: str, make_database: MakeDatabase, tmp_path: Path):
    """Kill `migrate apply` with SIGKILL at seeded moments; `migrate apply` must then reach
    every head with each revision applied exactly once (one ledger row per revision). Before
    and after the resume, `status --json` shows the revisions the databases hold; after it,
    no interrupted run."""
    points = 20 if dialect_name == "sqlite" else 5
    rnd = random.Random(20261127)
    slow = {"MIGRATE_TEST_SLEEP": "0.03"}
    # How long does an undisturbed run take? Kill points are spread over it.
    urls = {s: make_database(dialect_name) for s in ("users", "orders", "billing")}
    ws = build(tmp_path / "probe", _services(), urls)
    probe = _start(ws, "apply", env=slow)
    _wait_for_lock(ws)
    t0 = time.monotonic()
    assert probe.wait(timeout=120) == 0
    duration = time.monotonic() - t0  # from taking the lock to the end of the run
    interrupted_seen = 0
    for point in range(points):
        urls = {s: make_database(dialect_name) for s in ("users", "orders", "billing")}
        ws = build(tmp_path / f"kill{point}", _services(), urls)
        proc = _start(ws, "apply", env=slow)
        if point < 2:  # during start-up, before the lock
            delay = rnd.uniform(0.05, 0.3)
        else:  # anywhere in the run: between steps, inside a step, around the journal writes
            _wait_for_lock(ws)
            delay = rnd.uniform(0.0, duration)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        project = api.open_project(str(ws.manifest))
        info = _status_json(ws)
        assert _current(info) == _versions(urls), f"kill point {point}: status is not what the databases hold"
        if info["interrupted_run"] is not None:
            interrupted_seen += 1
            assert info["interrupted_run"]["outcome"] in ("running", "interrupted")
            assert info["interrupted_run"]["holder"].endswith(f"pid {proc.pid}")
            # transactional DDL: nothing of a revision can be left half-done; apply continues it
            assert info["interrupted_run"]["continue_with"] == "migrate apply --env test"
            assert "may have left" not in info["interrupted_run"]["message"]
        resumed = api.apply(project)
        assert resumed.exit_code == 0, f"kill point {point} ({delay:.2f}s): {resumed.message}"
        assert resumed.outcome in ("succeeded", "nothing_to_do")
        for svc, url in urls.items():
            state = snapshot(url)
            assert state.versions == (ws.revisions[svc][-1],), f"kill point {point}: {svc}"
            assert state.ledger == tuple(sorted(ws.revisions[svc])), f"kill point {point}: {svc} ran twice or not"
        # status after the resume: every database at its head, nothing pending, no stopped run
        after = _status_json(ws)
        assert _current(after) == _versions(urls) == {svc: (revs[-1],) for svc, revs in ws.revisions.items()}
        assert [s["pending"] for s in after["services"]] == [0] * len(urls)
        assert after["interrupted_run"] is None, f"kill point {point}: {after['interrupted_run']}"
        assert after["lock"] is None
        history = api.history(project, None)
        if info["interrupted_run"] is not None:
            killed = next(r for r in history if r["id"] == info["interrupted_run"]["id"])
            assert killed["outcome"] == "interrupted"
    assert interrupted_seen >= (points - 2) // 2, interrupted_seen  # most kill points landed inside a run


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_killed_after_its_last_step_committed_then_apply_finds_nothing_left_and_status_agrees(
    dialect_name: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    """`apply` is killed after its last revision committed but before the journal recorded it
    (the test holds the state database's write lock across that moment). `status` shows the
    interrupted run and the databases' real revisions; the next `apply` takes over, finds
    nothing left to do, and from then on `status` shows no interrupted run."""
    url = make_database(dialect_name)
    ws = build(tmp_path / "ws", {"users": chain("users", 2)}, {"users": url})
    last = ws.revisions["users"][-1]
    state = ws.root / ".migrate" / "test" / "state.db"
    proc = _start(ws, "apply", env={"MIGRATE_TEST_SLEEP": "0.5"})
    try:
        _wait_until(lambda: _step_status(state, f"users@{last}") == "running")
        writer = sqlite3.connect(state, isolation_level=None, timeout=30)
        writer.execute("BEGIN IMMEDIATE")  # the run's next journal write waits for this
        try:
            _wait_until(lambda: _versions({"users": url}) == {"users": (last,)})
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            writer.execute("ROLLBACK")
            writer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _step_status(state, f"users@{last}") == "running"  # the journal never heard of the commit
    killed = _status_json(ws)
    assert _current(killed) == {"users": (last,)}
    assert killed["interrupted_run"] is not None and killed["interrupted_run"]["outcome"] == "running"

    resumed = api.apply(api.open_project(str(ws.manifest)))

    assert resumed.exit_code == 0, resumed.message
    assert resumed.outcome == "nothing_to_do"
    assert snapshot(url).ledger == tuple(sorted(ws.revisions["users"]))
    after = _status_json(ws)
    assert _current(after) == _versions({"users": url}) == {"users": (last,)}
    assert after["services"][0]["pending"] == 0
    assert after["interrupted_run"] is None, after["interrupted_run"]
    assert after["lock"] is None


def _wait_until(ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (sa.exc.OperationalError, sqlite3.OperationalError):  # SQLite busy: ask again
            pass
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.02)


def _step_status(state: Path, node: str) -> str | None:
    """The latest journal status of ``node`` (None: no step row yet)."""
    if not state.exists():
        return None
    with closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            row = conn.execute(
                "SELECT status FROM migrate_steps WHERE node = ? ORDER BY run_id DESC, seq DESC LIMIT 1", (node,)
            ).fetchone()
        except sqlite3.OperationalError:  # no journal tables yet
            return None
    return None if row is None else str(row[0])


def test_second_apply_exits_3_naming_the_holder_or_waits(make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = build(tmp_path / "ws", _services(), urls)
    first = _start(ws, "apply", env={"MIGRATE_TEST_SLEEP": "0.5"})  # long enough under load
    try:
        _wait_for_lock(ws)
        second = _run(ws, "apply")
        assert second.returncode == 3, second.stderr
        assert "locked by run" in second.stderr and f"pid {first.pid}" in second.stderr
        waiting = _run(ws, "apply", "--wait", "60", "--json")
        assert waiting.returncode == 0, waiting.stderr
        assert json.loads(waiting.stdout)["outcome"] == "nothing_to_do"
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0
    for svc, url in urls.items():
        assert snapshot(url).ledger == tuple(sorted(ws.revisions[svc]))


def test_advisory_lock_stops_a_second_orchestrator_without_a_shared_state_db(
    make_database: MakeDatabase, tmp_path: Path
):
    url = make_database("postgresql")
    services = {"users": chain("users", 4)}
    a = build(tmp_path / "a", services, {"users": url})
    b = build(tmp_path / "b", services, {"users": url})  # its own state database
    first = _start(a, "apply", env={"MIGRATE_TEST_SLEEP": "1.0"})  # long enough under load
    try:
        _wait_for_lock(a)
        time.sleep(0.3)
        second = _run(b, "apply")
        assert second.returncode == 3, second.stderr
        assert "locked by another migration run" in second.stderr
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0
    assert snapshot(url).ledger == tuple(sorted(a.revisions["users"]))


def _plant_lock(ws, pid: int, lease_until: float) -> None:  # type: ignore[no-untyped-def]
    project = api.open_project(str(ws.manifest))
    journal = open_journal(project.manifest, "test")
    with journal.tx() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO migrate_lock (env, run_id, holder, host, pid, since, lease_until) "
                "VALUES ('test', 'old-run', :holder, :host, :pid, '2026-01-01T00:00:00Z', :lease)"
            ),
            {"holder": f"someone pid {pid}", "host": os.uname().nodename, "pid": pid, "lease": lease_until},
        )
    journal.close()


def test_a_lock_whose_process_is_gone_is_taken_over(make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = build(tmp_path / "ws", _services(), urls)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _plant_lock(ws, dead.pid, time.time() + 3600)
    status = _run(ws, "status", "--json")
    assert "gone" in json.loads(status.stdout)["lock"]["liveness"]
    result = api.apply(api.open_project(str(ws.manifest)))
    assert result.exit_code == 0, result.message
    assert result.took_over == {"run_id": "old-run", "holder": f"someone pid {dead.pid}"}


def test_a_live_holder_blocks_and_unlock_needs_force(make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = build(tmp_path / "ws", _services(), urls)
    _plant_lock(ws, os.getpid(), time.time() + 3600)  # this very process: alive
    blocked = _run(ws, "apply")
    assert blocked.returncode == 3
    assert "old-run" in blocked.stderr
    assert snapshot(urls["users"]).versions == ()
    refused = _run(ws, "unlock")
    assert refused.returncode == 3
    assert _run(ws, "unlock", "--yes").returncode == 3  # the holder may be alive: --yes is not enough
    released = _run(ws, "unlock", "--force", "--yes")
    assert released.returncode == 0, released.stderr
    assert _run(ws, "apply").returncode == 0
