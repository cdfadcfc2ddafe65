"""Several `migrate apply` processes started at once on an env that has no state database yet.

Creating the state is part of taking the lock: whichever dialect holds the state (a SQLite
file, a PostgreSQL or a MariaDB database), every process either runs the plan, finds nothing
to do, or exits 3 naming the holder; none dies with a traceback, and nothing is applied twice.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import LockHeldError
from orchestrator.runtime.journal import Journal
from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import Workspace, build, chain, snapshot

MIGRATE = str(Path(sys.executable).with_name("migrate"))
PROCESSES = 5
ROUNDS = 3  # a fresh env each round; the race is lost in a different place each time


def _services() -> dict[str, Any]:
    return {"users": chain("users", 2), "orders": chain("orders", 2, {1: ["users@user00000002"]})}


def _fresh_env(make_database: MakeDatabase, root: Path, state_dialect: str) -> Workspace:
    urls = {s: make_database("sqlite") for s in ("users", "orders")}
    state = None if state_dialect == "sqlite" else make_database(state_dialect)
    return build(root, _services(), urls, state_url=state)


def _apply_all_at_once(ws: Workspace, *extra: str) -> list[tuple[int, dict[str, Any], str]]:
    procs = [
        subprocess.Popen(
            [MIGRATE, "--config", str(ws.manifest), "apply", "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        results.append((proc.returncode, json.loads(out), err))
    return results


def _assert_applied_once(ws: Workspace) -> None:
    for service, url in ws.urls.items():
        state = snapshot(url)
        assert state.versions == (ws.revisions[service][-1],), service
        assert state.ledger == tuple(ws.revisions[service]), f"{service}: a revision ran twice or not at all"
        tables = {name for name, _, _ in state.tables}
        assert {f"t_{rev}" for rev in ws.revisions[service]} <= tables, service


@pytest.mark.parametrize("state_dialect", ["sqlite", "postgresql", "mysql"])
def test_applies_started_at_once_on_a_fresh_env(state_dialect: str, make_database: MakeDatabase, tmp_path: Path):
    for round_ in range(ROUNDS):
        ws = _fresh_env(make_database, tmp_path / f"round{round_}", state_dialect)
        results = _apply_all_at_once(ws)
        codes = sorted(code for code, _, _ in results)
        assert set(codes) <= {0, 3}, [(code, data.get("error")) for code, data, _ in results]
        for code, data, _ in results:
            if code == 3:  # the loser names the holder: run id, host and pid
                assert "is locked by run " in data["error"] and " on host " in data["error"], data
                assert ", pid " in data["error"], data
        outcomes = sorted(data["outcome"] for code, data, _ in results if code == 0)
        assert outcomes.count("succeeded") == 1, (round_, outcomes)
        assert set(outcomes) <= {"succeeded", "nothing_to_do"}, outcomes
        _assert_applied_once(ws)


@pytest.mark.parametrize("state_dialect", ["sqlite", "postgresql", "mysql"])
def test_applies_started_at_once_with_wait_all_succeed(state_dialect: str, make_database: MakeDatabase, tmp_path: Path):
    ws = _fresh_env(make_database, tmp_path / "ws", state_dialect)
    results = _apply_all_at_once(ws, "--wait", "60")
    assert [code for code, _, _ in results] == [0] * PROCESSES, [data.get("error") for _, data, _ in results]
    outcomes = sorted(data["outcome"] for _, data, _ in results)
    assert outcomes == ["nothing_to_do"] * (PROCESSES - 1) + ["succeeded"], outcomes
    _assert_applied_once(ws)


def _open_and_lock(url: str, barrier: Barrier, results: Any) -> None:
    """In a child process: open the journal of a fresh state database and take the lock,
    at the same moment as its siblings (the barrier)."""
    run_id = uuid.uuid4().hex[:12]
    barrier.wait(timeout=60)
    try:
        journal = Journal(url, "test")
        try:
            journal.acquire(run_id)
            results.put(("locked", run_id))
        finally:
            journal.close()
    except LockHeldError as exc:
        results.put(("held", exc.message))
    except Exception as exc:  # what the test must never see
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    barrier.wait(timeout=60)  # the winner stays alive (and its lock live) until all have tried


@pytest.mark.parametrize("state_dialect", ["sqlite", "postgresql", "mysql"])
def test_journals_opened_at_once_on_a_fresh_state_database(
    state_dialect: str, make_database: MakeDatabase, tmp_path: Path
):
    """The library level of the race, with the processes released together by a barrier:
    creating the tables and inserting the lock row both race, every round."""
    context = multiprocessing.get_context("fork")
    for round_ in range(6):
        if state_dialect == "sqlite":
            url = f"sqlite:///{tmp_path / f'state{round_}' / 'state.db'}"
        else:
            url = make_database(state_dialect)
        barrier = context.Barrier(PROCESSES)
        results = context.Queue()
        procs = [context.Process(target=_open_and_lock, args=(url, barrier, results)) for _ in range(PROCESSES)]
        for proc in procs:
            proc.start()
        got = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert not [text for kind, text in got if kind == "error"], got
        winners = [text for kind, text in got if kind == "locked"]
        assert len(winners) == 1, got
        for kind, text in got:
            if kind == "held":
                assert f"is locked by run {winners[0]} " in text and ", pid " in text, text
