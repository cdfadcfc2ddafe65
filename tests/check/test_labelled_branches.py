"""Labelled branches (`branch_labels`) and Alembic's revision grammar for heads.

The fixture tree (tests/fixtures/trees/labelled_branches)::

    app:      m1 -- m2                 (main line, no label)
              au1 [audit] -- au2       (a second root kept apart on purpose)
    reports:  r1 [reports] --+-- r2a   (two heads inside one labelled branch:
                             +-- r2b    the two-heads accident)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.core.planner import ObservedState, plan_upgrade
from orchestrator.errors import GraphError
from tests.helpers import REPO, fleet, rev, run_cli, tables, version_rows

FIXTURE = REPO / "tests" / "fixtures" / "trees" / "labelled_branches"


def _graph():  # type: ignore[no-untyped-def]
    return fleet(
        {
            "app": [rev("m1"), rev("m2", "m1"), rev("au1", branch_labels=["audit"]), rev("au2", "au1")],
            "reports": [rev("r1", branch_labels=["reports"]), rev("r2a", "r1"), rev("r2b", "r1")],
            "solo": [rev("s1"), rev("s2", "s1")],
        }
    )


def _targets(*refs: str) -> list[str]:
    plan = plan_upgrade(_graph(), ObservedState.of({}), "dev", refs)
    return [s.id for s in plan.steps]


def test_labels_spread_as_alembic_spreads_them() -> None:
    labels = _graph().branch_labels("app")
    assert labels == {
        "m1": frozenset(),
        "m2": frozenset(),
        "au1": frozenset({"audit"}),
        "au2": frozenset({"audit"}),
    }
    assert _graph().branch_labels("reports")["r2b"] == frozenset({"reports"})


def test_heads_and_label_head_targets() -> None:
    assert _targets("app@heads") == ["app@m1", "app@m2", "app@au1", "app@au2"]
    assert _targets("app@audit@head") == ["app@au1", "app@au2"]
    assert _targets("reports@reports@heads") == ["reports@r1", "reports@r2a", "reports@r2b"]
    assert _targets("solo@head") == ["solo@s1", "solo@s2"]
    assert _graph().resolve("app@audit@head", where="--to") == "app@au2"
    assert _graph().resolve("app@audit", where="--to") == "app@au1"  # a label alone: where it is declared


def test_head_on_a_service_with_several_heads_is_refused_as_alembic_refuses_it() -> None:
    with pytest.raises(GraphError) as err:
        _targets("app@head")
    assert (
        err.value.message
        == "--target: 'app@head': multiple heads in service 'app' (m2, au2); 'head' must name exactly one"
    )
    assert err.value.hint == "use `app@heads` for all of them, or one branch: `app@audit@head`"
    assert err.value.exit_code == 2
    with pytest.raises(GraphError) as err:
        _targets("reports@reports@head")
    assert "multiple heads" in err.value.message
    assert err.value.hint is not None and "`reports@reports@heads`" in err.value.hint


def test_bad_symbolic_references_name_what_exists() -> None:
    with pytest.raises(GraphError) as err:
        _targets("app@nolabel@head")
    assert "has no branch label 'nolabel' (its labels: audit)" in err.value.message
    with pytest.raises(GraphError) as err:
        _graph().resolve("app@heads", where="stamp")
    assert "names every head (m2, au2)" in err.value.message


def _workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(".migrate"))
    return root


def test_check_flags_two_heads_inside_a_branch_not_heads_of_distinct_branches(tmp_path: Path) -> None:
    ran = run_cli(["check", "--format", "json"], cwd=_workspace(tmp_path))
    assert ran.exit_code == 1
    found = [(f["code"], f["node"], f["message"]) for f in ran.json()["findings"]]
    assert found == [
        (
            "MG101",
            "reports",
            "the branch 'reports' of service 'reports' has 2 heads (r2a, r2b): two branches of its tree were "
            "merged without an Alembic merge revision, and no single order applies them",
        )
    ]


def test_cli_applies_label_head_and_refuses_head(tmp_path: Path) -> None:
    root = _workspace(tmp_path)
    url = f"sqlite:///{root / '.migrate' / 'dev' / 'app.db'}"
    refused = run_cli(["apply", "--target", "app@head", "--json"], cwd=root)
    assert refused.exit_code == 2
    assert "multiple heads" in refused.json()["error"]
    assert not (root / ".migrate" / "dev" / "app.db").exists()

    done = run_cli(["apply", "--target", "app@audit@head"], cwd=root)
    assert done.exit_code == 0, done.stderr
    assert version_rows(url) == ["au2"]
    assert tables(url) == {"alembic_version", "app_audit", "app_audit_more"}
    assert run_cli(["apply", "--target", "app@heads"], cwd=root).exit_code == 0
    assert version_rows(url) == ["au2", "m2"]
