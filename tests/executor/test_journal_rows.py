"""The journal's typed rows, on a SQLite state file (no server).

Each row read back has exactly the keys its ``TypedDict`` declares, so a consumer reading
``row["x"]`` is checked by mypy and cannot miss at run time; a copy's record is a named tuple
that still unpacks as ``(state, checkpoint)``; `migrate status` finds the run that stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.journal import CopyRecord, Journal, LockInfo, RunRow, StepRow
from orchestrator.runtime.journal.status import interrupted_brief, stopped_run


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path / 'state.db'}", "test")
    yield j
    j.close()


def _plan() -> list[dict[str, object]]:
    return [
        {"seq": 1, "node": "users@a1", "kind": "upgrade", "service": "users", "revision": "a1", "checksum": None},
        {"seq": 2, "node": "copy:people", "kind": "copy", "service": None, "revision": None, "checksum": None},
    ]


def test_rows_have_exactly_the_declared_keys(journal: Journal) -> None:
    journal.start_run("r1", "apply", "fp", _plan(), fresh_services=("users",))
    journal.step_update("r1", 1, status="applied", error="password=hunter2")
    journal.step_updates("r1", [(2, {"status": "running"})])

    run = journal.run_row("r1")
    assert run is not None
    assert set(run) == set(RunRow.__annotations__)
    assert (run["kind"], run["outcome"], run["fresh_services"]) == ("apply", "running", "users")
    steps = journal.step_rows("r1")
    assert [set(s) for s in steps] == [set(StepRow.__annotations__)] * 2
    assert [(s["node"], s["status"]) for s in steps] == [("users@a1", "applied"), ("copy:people", "running")]
    assert steps[0]["completed_at"] is not None and steps[1]["completed_at"] is None
    assert journal.runs() == journal.run_rows() and journal.run_steps("r1") == steps
    assert journal.run("r1") == run and journal.running_runs() == [run]


def test_last_undoable_run_and_interrupted(journal: Journal) -> None:
    journal.start_run("r1", "apply", None, _plan())
    journal.finish_run("r1", "succeeded")
    undoable = journal.last_undoable_run()
    assert undoable is not None and undoable["id"] == "r1"
    journal.mark_undone("r1", "r2")
    assert journal.last_undoable_run() is None

    journal.start_run("r3", "apply", None, _plan())
    journal.step_update("r3", 1, status="applied")
    journal.step_update("r3", 2, status="running")
    journal.mark_interrupted("r3")
    recent = journal.run_rows()
    stopped = stopped_run(recent, None)
    assert stopped is not None and stopped["id"] == "r3"
    brief = interrupted_brief(stopped, journal.step_rows("r3"))
    assert (brief["done"], brief["left"]) == (["users@a1"], ["copy:people"])
    assert brief["last_step"] == {"node": "copy:people", "status": "interrupted"}


def test_copy_record_is_a_named_tuple(journal: Journal) -> None:
    assert journal.copy_record("people") is None
    journal.set_copy_record("people", "r1", "copying", '{"rows": 1}')
    journal.set_copy_record("people", "r1", "reverting")
    record = journal.copy_record("people")
    assert record == CopyRecord("reverting", '{"rows": 1}')
    state, checkpoint = record
    assert (state, checkpoint) == ("reverting", '{"rows": 1}')
    assert journal.reverting_copies() == ("people",)
    journal.set_copy_record("people", "r1", "copied")
    assert journal.completed_copies() == ("people",)


def test_lock_round_trip(journal: Journal) -> None:
    assert journal.acquire("r1") is None
    info = journal.lock_info()
    assert isinstance(info, LockInfo) and info.run_id == "r1" and info.liveness() == "alive"
    assert journal.force_release(info) is not None
    assert journal.lock_info() is None
    assert journal.run_rows()[0]["outcome"] == "force_released"
