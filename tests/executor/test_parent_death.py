"""Every process `migrate apply --jobs N` starts dies with it.

The parent is killed with SIGKILL while two workers sit inside a revision; none of its
children may survive it (an orphan would keep the databases' advisory locks and go on
writing), and the next `migrate apply` takes over and applies each revision exactly once.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.runtime.dblock import PG_LOCK_KEY
from orchestrator.runtime.journal import pid_alive
from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import Workspace, build, chain, snapshot
from tests.helpers import tables

MIGRATE = str(Path(sys.executable).with_name("migrate"))
SERVICES = ("users", "orders")


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root: int) -> set[int]:
    """Every live process below ``root``, found by walking /proc (no helper library)."""
    parents = {int(p): _parent_of(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    return {pid for pid in found if pid_alive(pid)}


def _running_steps(ws: Workspace) -> set[str]:
    state = ws.root / ".migrate" / "test" / "state.db"
    if not state.exists():
        return set()
    engine = sa.create_engine(f"sqlite:///{state}", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT node FROM migrate_steps WHERE status = 'running'"))
            return {str(r[0]) for r in rows}
    except sa.exc.OperationalError:  # not created yet, or busy
        return set()
    finally:
        engine.dispose()


def _wait_until_both_workers_run(ws: Workspace, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"apply ended early ({proc.returncode}): {proc.communicate()[1]}")
        running = _running_steps(ws)
        if {node.partition("@")[0] for node in running} >= set(SERVICES):
            return
        time.sleep(0.05)
    raise AssertionError(f"both services never had a running step: {_running_steps(ws)}")


def _advisory_lock_free(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar())
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
            return got
    finally:
        engine.dispose()


def _wait_for(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="walks /proc to find the children")
@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_sigkill_of_the_parent_leaves_no_worker_and_the_next_apply_takes_over(
    dialect_name: str, make_database: MakeDatabase, tmp_path: Path
) -> None:
    urls = {s: make_database(dialect_name) for s in SERVICES}
    ws = build(tmp_path / "ws", {s: chain(s, 2) for s in SERVICES}, urls)
    proc = subprocess.Popen(
        [MIGRATE, "--config", str(ws.manifest), "apply", "--jobs", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MIGRATE_TEST_SLEEP": "4"},
    )
    children: set[int] = set()
    try:
        _wait_until_both_workers_run(ws, proc)
        children = _descendants(proc.pid)
        assert len(children) >= 2, children  # at least the two busy workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        def survivors() -> set[int]:
            return {pid for pid in children if pid_alive(pid)}

        assert _wait_for(lambda: not survivors(), 3.0), f"still running after their parent died: {survivors()}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # a failed check leaves no orphan behind
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    if dialect_name == "postgresql":
        for svc, url in urls.items():
            assert _wait_for(functools.partial(_advisory_lock_free, url), 3.0), f"{svc}: advisory lock still held"
    # Nothing of the killed run went on: both first revisions were inside their sleep.
    for svc, url in urls.items():
        assert snapshot(url).ledger == (), svc

    after = subprocess.run(
        [MIGRATE, "--config", str(ws.manifest), "apply", "--jobs", "2", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
    )
    assert after.returncode == 0, after.stderr
    result = json.loads(after.stdout)
    assert result["outcome"] == "succeeded"
    assert result["took_over_lock"] is not None and result["resumed_runs"]
    time.sleep(0.5)  # an orphan that had survived would write now
    for svc, url in urls.items():
        state = snapshot(url)
        assert state.versions == (ws.revisions[svc][-1],), svc
        assert state.ledger == tuple(sorted(ws.revisions[svc])), f"{svc}: a revision ran twice or not at all"
        assert {f"t_{r}" for r in ws.revisions[svc]} <= tables(url), svc


ORPHAN_WRITES = """
import os, sys
from orchestrator import lifeline
from orchestrator.runtime.journal import Journal

journal = Journal(sys.argv[1], "test", create=False)
journal.step_update("r1", 1, status="running")  # bound to no parent: written
lifeline._parent = os.getppid() + 1  # from here on, as after its parent died (re-parented)
exec(sys.argv[2])
print("wrote")
"""


@pytest.mark.parametrize(
    "call",
    [
        "journal.step_update('r1', 1, status='applied')",  # through a transaction (any state database)
        "journal.step_updates('r1', [(1, {'status': 'applied'})])",  # the SQLite fast path
        "journal.step_checkpoint('r1', 1, '{}', 5)",
    ],
)
def test_a_process_whose_parent_died_writes_nothing_to_the_journal(call: str, tmp_path: Path) -> None:
    from orchestrator.lifeline import ORPHAN_EXIT_CODE
    from orchestrator.runtime.journal import Journal

    url = f"sqlite:///{tmp_path / 'state.db'}"
    journal = Journal(url, "test")
    try:
        journal.start_run("r1", "apply", None, [{"seq": 1, "node": "users@u1", "kind": "upgrade"}])
        done = subprocess.run([sys.executable, "-c", ORPHAN_WRITES, url, call], capture_output=True, text=True)
        assert done.returncode == ORPHAN_EXIT_CODE, done.stderr
        assert "wrote" not in done.stdout
        (step,) = journal.run_steps("r1")
        assert (step["status"], step["rows"], step["checkpoint"]) == ("running", None, None)
    finally:
        journal.close()


def test_a_child_bound_after_its_parent_died_exits_at_once() -> None:
    """The parent may die between the fork and the child's binding: the child checks."""
    from orchestrator.lifeline import ORPHAN_EXIT_CODE

    script = "import os\nfrom orchestrator import lifeline\nlifeline.bind_to_parent(os.getppid() + 1)\nprint('alive')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (ORPHAN_EXIT_CODE, ""), done.stderr
