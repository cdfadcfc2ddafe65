"""`migrate unlock`: refused while the holder may be alive, --force records itself, a dead
holder's lock is released. Holders are real processes: a child holding the lock through the
library, or a real `migrate apply` whose revisions sleep."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import Workspace, build, chain, snapshot
from tests.helpers import REPO

MIGRATE = str(Path(sys.executable).with_name("migrate"))


def _run(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MIGRATE, "--config", str(ws.manifest), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,  # no terminal: nothing can be typed to confirm
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _lock_rows(ws: Workspace) -> list[tuple[str, int]]:
    """(run id, pid) of every lock row in the env's SQLite state database, read directly."""
    engine = sa.create_engine(f"sqlite:///{ws.root / '.migrate' / 'test' / 'state.db'}", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [(str(r[0]), int(r[1])) for r in conn.execute(sa.text("SELECT run_id, pid FROM migrate_lock"))]
    finally:
        engine.dispose()


def _history(ws: Workspace) -> list[dict[str, Any]]:
    done = _run(ws, "history", "--json")
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
    return runs


def _wait_for_lock(ws: Workspace, timeout: float = 60.0) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = _lock_rows(ws)
        except sa.exc.OperationalError:  # the state database is not there yet
            rows = []
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError("the run never took the lock")


def _workspace(make_database: MakeDatabase, tmp_path: Path) -> Workspace:
    return build(tmp_path / "ws", {"users": chain("users", 2)}, {"users": make_database("sqlite")})


def test_unlock_refuses_a_live_holder_then_releases_it_once_killed(make_database: MakeDatabase, tmp_path: Path):
    ws = _workspace(make_database, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.lock_holder", str(ws.manifest), "test"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        run_id = holder.stdout.readline().strip()
        assert run_id, "the holder never took the lock"

        refused = _run(ws, "unlock", "--yes", "--json")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        error = json.loads(refused.stdout)["error"]
        assert f"run {run_id}" in error and f"pid {holder.pid}" in error and f"host {socket.gethostname()}" in error
        assert _lock_rows(ws) == [(run_id, holder.pid)]

        blocked = _run(ws, "apply", "--json")
        assert blocked.returncode == 3, blocked.stdout + blocked.stderr
        assert f"run {run_id}" in json.loads(blocked.stdout)["error"]
        assert snapshot(ws.urls["users"]).versions == ()

        unconfirmed = _run(ws, "unlock", "--force")  # neither --yes nor a terminal to type on
        assert unconfirmed.returncode == 2, unconfirmed.stderr
        assert "--yes" in unconfirmed.stderr
        assert _lock_rows(ws) == [(run_id, holder.pid)]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)

    released = _run(ws, "unlock", "--yes", "--json")
    assert released.returncode == 0, released.stdout + released.stderr
    data = json.loads(released.stdout)
    assert data["released"]["run_id"] == run_id and data["forced"] is False
    assert "gone" in data["released"]["liveness"]
    assert _lock_rows(ws) == []
    assert not [r for r in _history(ws) if r["kind"] == "unlock"]  # nothing was forced

    applied = _run(ws, "apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert snapshot(ws.urls["users"]).ledger == tuple(ws.revisions["users"])
    assert next(r for r in _history(ws) if r["id"] == run_id)["outcome"] == "interrupted"


def test_unlock_force_releases_a_live_run_and_the_journal_says_so(make_database: MakeDatabase, tmp_path: Path):
    ws = _workspace(make_database, tmp_path)
    first = subprocess.Popen(
        [MIGRATE, "--config", str(ws.manifest), "apply"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MIGRATE_TEST_SLEEP": "3"},  # two revisions: the run lasts 6 s or more
    )
    try:
        run_id, pid = _wait_for_lock(ws)
        assert pid == first.pid

        refused = _run(ws, "unlock", "--yes")
        assert refused.returncode == 3, refused.stderr
        assert f"run {run_id}" in refused.stderr and "--force" in refused.stderr
        assert _lock_rows(ws) == [(run_id, pid)]

        forced = _run(ws, "unlock", "--force", "--yes", "--json")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        data = json.loads(forced.stdout)
        assert data["forced"] is True and data["released"]["run_id"] == run_id
        assert _lock_rows(ws) == []
    finally:
        _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err  # the released run went on to its end
    assert snapshot(ws.urls["users"]).ledger == tuple(ws.revisions["users"])

    runs = _history(ws)
    record = next(r for r in runs if r["id"] == data["record"])
    assert record["kind"] == "unlock" and record["outcome"] == "force_released"
    assert f"run {run_id}" in record["error"] and f"pid {pid}" in record["error"]
    assert record["holder"].split(" pid ")[0].endswith(f"@{socket.gethostname()}")  # who released it
    assert record["started"] and record["finished"]  # when
    assert next(r for r in runs if r["id"] == run_id)["outcome"] == "succeeded"  # its own row is its own


def _typed(ws: Workspace, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`migrate ARGS` with a terminal as stdin, on which ``answer`` is typed."""
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode() + b"\n")
        proc = subprocess.run(
            [MIGRATE, "--config", str(ws.manifest), *args],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(slave)
        os.close(master)
    return proc


def test_unlock_force_takes_a_typed_confirmation_of_the_env_name(make_database: MakeDatabase, tmp_path: Path):
    ws = _workspace(make_database, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.lock_holder", str(ws.manifest), "test"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        run_id = holder.stdout.readline().strip()
        wrong = _typed(ws, "prod", "unlock", "--force")
        assert wrong.returncode == 2, wrong.stderr
        assert "Type its name" in wrong.stderr
        assert _lock_rows(ws) == [(run_id, holder.pid)]

        typed = _typed(ws, "test", "unlock", "--force")
        assert typed.returncode == 0, typed.stderr
        assert f"Force-released the lock of run {run_id}" in typed.stderr
        assert _lock_rows(ws) == []
        record = next(r for r in _history(ws) if r["kind"] == "unlock")
        assert record["outcome"] == "force_released" and f"run {run_id}" in record["error"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
