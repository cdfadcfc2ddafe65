"""A saved plan's steps checked against the graph, whatever its fingerprint says.

users:   u1 -- u2 -- u3          (u3 drops the table the copy reads)
                \\    ^
                 copy:mv (after users@u2 and orders@o1, before users@u3)
                /
orders:  o1 --+
"""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.core.graph import FleetGraph
from orchestrator.core.plancheck import check_plan_steps, plan_step_problems
from orchestrator.core.planner import ObservedState, plan_upgrade, seal
from orchestrator.errors import PlanConflictError
from tests.helpers import chain, fleet, rev


@pytest.fixture
def graph() -> FleetGraph:
    return fleet(
        {"users": chain("u", 3), "orders": [rev("o1")]},
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "orders",
                "table": "t",
                "after": ["users@u2", "orders@o1"],
                "before": ["users@u3"],
            }
        ],
    )


def _edited(graph: FleetGraph, ids: list[str]):  # type: ignore[no-untyped-def]
    plan = plan_upgrade(graph, ObservedState.of({"users": ["u2"], "orders": ["o1"]}), "dev")
    by_id = {s.id: s for s in plan.steps}
    return seal(dataclasses.replace(plan, steps=tuple(by_id[i] for i in ids)))


def test_the_planners_own_plan_passes(graph: FleetGraph) -> None:
    plan = _edited(graph, ["copy:mv", "users@u3"])
    assert plan_step_problems(graph, plan, "p.json") == []


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["users@u3"], "step users@u3 needs copy:mv first, which is not applied in env 'dev' and is missing from it"),
        (
            ["users@u3", "copy:mv"],
            "step users@u3 needs copy:mv first, which is not applied in env 'dev' and comes later",
        ),
        (["copy:mv", "copy:mv", "users@u3"], "step copy:mv appears twice"),
    ],
)
def test_an_edited_plan_is_refused_naming_the_step(graph: FleetGraph, ids: list[str], message: str) -> None:
    plan = _edited(graph, ids)
    with pytest.raises(PlanConflictError) as caught:
        check_plan_steps(graph, plan, "p.json")
    assert caught.value.exit_code == 3
    assert message in caught.value.message


def test_a_step_already_applied_is_refused(graph: FleetGraph) -> None:
    plan = _edited(graph, ["copy:mv", "users@u3"])
    applied = dataclasses.replace(plan, state=(("orders", ("o1",)), ("users", ("u3",))))
    problems = plan_step_problems(graph, applied, "p.json")
    assert [p.node for p in problems] == ["users@u3"]
    assert "already applied" in problems[0].message
