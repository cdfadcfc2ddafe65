"""Apply, automatic rollback, --no-rollback and failing undo, on every dialect."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import api
from orchestrator.events import Event, StepFailed, StepFinished
from tests.conftest import MakeDatabase
from tests.executor.ledger_ws import build, chain, snapshot, snapshots


def _project(ws) -> api.Project:  # type: ignore[no-untyped-def]
    return api.open_project(str(ws.manifest))


def _three_services(tmp_path: Path, urls: dict[str, str]):  # type: ignore[no-untyped-def]
    """users (3) <- orders (3) <- billing (3): orders@2 requires users@3, billing@1 requires orders@2.

        users:   u1 - u2 - u3
                            \\
        orders:  o1 - o2 ----+- o3
                       \\
        billing:        b1 - b2 - b3
    """
    services = {
        "users": chain("users", 3),
        "orders": chain("orders", 3, {2: ["users@user00000003"]}),
        "billing": chain("billing", 3, {1: ["orders@orde00000002"]}),
    }
    return build(tmp_path / "ws", services, urls)


def test_apply_reaches_heads_and_second_apply_has_nothing_to_do(
    dialect: str, make_database: MakeDatabase, tmp_path: Path
):
    urls = {s: make_database(dialect) for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    events: list[Event] = []
    result = api.apply(_project(ws), observer=events.append)
    assert result.exit_code == 0, result.message
    assert result.outcome == "succeeded"
    for svc, url in urls.items():
        state = snapshot(url)
        assert state.versions == (ws.revisions[svc][-1],)
        assert state.ledger == tuple(sorted(ws.revisions[svc]))
        assert {t for t, _, _ in state.tables} >= {f"t_{r}" for r in ws.revisions[svc]}
    order = [e.node for e in events if isinstance(e, StepFinished)]
    assert order.index("users@user00000003") < order.index("orders@orde00000002")
    assert order.index("orders@orde00000002") < order.index("billing@bill00000001")
    again = api.apply(_project(ws))
    assert again.exit_code == 0 and again.outcome == "nothing_to_do"
    assert "up to date" in again.message


def test_apply_mixed_postgresql_and_mariadb(make_database: MakeDatabase, tmp_path: Path):
    urls = {
        "users": make_database("postgresql"),
        "orders": make_database("mysql"),
        "billing": make_database("postgresql"),
    }
    ws = _three_services(tmp_path, urls)
    result = api.apply(_project(ws), jobs=1)
    assert result.exit_code == 0, result.message
    for svc, url in urls.items():
        assert snapshot(url).versions == (ws.revisions[svc][-1],)


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_failure_rolls_back_everything_this_run_applied(
    dialect: str, position: str, make_database: MakeDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    urls = {s: make_database(dialect) for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    # A previous release applied the first revision of each service.
    assert api.apply(_project(ws), targets=["users@user00000001", "orders@orde00000001"]).exit_code == 0
    before = snapshots(ws)
    failing = {"first": "user00000002", "middle": "orde00000003", "last": "bill00000003"}[position]
    # MariaDB has no transactional DDL: a revision failing half-way leaves its DDL behind
    # (covered in its own test); here the revision fails before it changed anything.
    monkeypatch.setenv("MIGRATE_TEST_FAIL_EARLY" if dialect == "mysql" else "MIGRATE_TEST_FAIL", failing)
    events: list[Event] = []
    result = api.apply(_project(ws), observer=events.append)
    assert result.exit_code == 1
    assert result.outcome == "rolled_back"
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert [e.node.partition("@")[2] for e in failed] == [failing]
    assert "no_such_table" in failed[0].error  # the database's own error
    assert snapshots(ws) == before  # every database exactly as it was: revision, schema, rows
    rows = {s.node: s.status for s in result.steps}
    assert rows[next(n for n in rows if n.endswith(failing))] == "failed"
    assert all(status in ("undone", "failed", "pending") for status in rows.values())
    history = api.history(_project(ws), None)
    assert history[0]["outcome"] == "rolled_back"


def test_no_rollback_keeps_what_succeeded(make_database: MakeDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    monkeypatch.setenv("MIGRATE_TEST_FAIL", "orde00000003")
    result = api.apply(_project(ws), no_rollback=True)
    assert result.exit_code == 1 and result.outcome == "failed"
    state = snapshots(ws)
    assert state["users"].versions == ("user00000003",)
    assert state["orders"].versions == ("orde00000002",)  # the failed revision left nothing
    assert "t_orde00000003" not in {t for t, _, _ in state["orders"].tables}
    assert state["billing"].versions == ("bill00000003",) or state["billing"].versions == ()
    monkeypatch.delenv("MIGRATE_TEST_FAIL")
    resumed = api.apply(_project(ws))
    assert resumed.exit_code == 0
    assert snapshot(urls["orders"]).ledger == tuple(ws.revisions["orders"])


def test_failing_undo_exits_4_and_says_where_each_database_is(
    dialect: str, make_database: MakeDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    urls = {s: make_database(dialect) for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    monkeypatch.setenv("MIGRATE_TEST_FAIL_EARLY" if dialect == "mysql" else "MIGRATE_TEST_FAIL", "bill00000002")
    monkeypatch.setenv("MIGRATE_TEST_FAIL_DOWN", "orde00000002")
    result = api.apply(_project(ws))
    assert result.exit_code == 4
    assert result.outcome == "needs_attention"
    # The order is u1 u2 u3 o1 o2 b1 b2(fails): b1 was undone, then undoing o2 failed.
    assert snapshot(urls["orders"]).versions == ("orde00000002",)
    assert snapshot(urls["billing"]).versions == ()
    assert "orders is at orde00000002" in result.message
    assert "billing is at base" in result.message
    assert "users is at user00000003" in result.message
    run = api.history(_project(ws), None)[0]
    assert run["outcome"] == "needs_attention"
    statuses = {s["node"]: s["status"] for s in run["steps"]}
    assert statuses["orders@orde00000002"] == "undo_failed"
    assert statuses["users@user00000003"] == "applied"  # still to undo, and the journal says so
    assert statuses["billing@bill00000001"] == "undone"


def test_mariadb_half_failed_revision_reports_what_may_remain(
    make_database: MakeDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    urls = {"users": make_database("mysql")}
    ws = build(tmp_path / "ws", {"users": chain("users", 2)}, urls)
    monkeypatch.setenv("MIGRATE_TEST_FAIL", "user00000002")
    events: list[Event] = []
    result = api.apply(_project(ws), observer=events.append)
    assert result.exit_code == 1
    failed = next(e for e in events if isinstance(e, StepFailed))
    assert any("CREATE TABLE t_user00000002" in s for s in failed.statements)
    assert "may have run" in result.message
    state = snapshot(urls["users"])
    assert state.versions == ()  # the version table says: not applied
    assert state.ledger == ()


def test_jobs_run_services_in_parallel_and_reach_heads(dialect: str, make_database: MakeDatabase, tmp_path: Path):
    urls = {s: make_database(dialect) for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    events: list[Event] = []
    result = api.apply(_project(ws), jobs=3, observer=events.append)
    assert result.exit_code == 0, result.message
    for svc, url in urls.items():
        assert snapshot(url).ledger == tuple(ws.revisions[svc])
    finished = [e.node for e in events if isinstance(e, StepFinished)]
    assert len(finished) == 9
    assert finished.index("users@user00000003") < finished.index("orders@orde00000002")


def test_parallel_failure_compensates_in_reverse_completion_order(
    make_database: MakeDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    urls = {s: make_database("sqlite") for s in ("users", "orders", "billing")}
    ws = _three_services(tmp_path, urls)
    before = snapshots(ws)
    monkeypatch.setenv("MIGRATE_TEST_FAIL", "bill00000002")
    result = api.apply(_project(ws), jobs=2)
    assert result.exit_code == 1 and result.outcome == "rolled_back"
    assert snapshots(ws) == before
