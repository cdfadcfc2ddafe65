"""The pure planner for ``rollback --to``: only what builds on the target is undone."""

from __future__ import annotations

import pytest

from orchestrator.core.graph import FleetGraph
from orchestrator.core.planner import ObservedState, plan_rollback_to
from tests.helpers import fleet, rev


@pytest.fixture
def two_roots() -> FleetGraph:
    """users:  a1 -- a2 -- a3 --+-- a4 (merge of a3 and s2)
                                |
               s1 -- s2 --------+          s1 is a second root, branch label "side"
               (side)  \\
                        s3                 s3 builds on s2 too (a branch point at s2)

       orders: o1 -- o2                    orders@o2 requires users@s2
    """
    return fleet(
        {
            "users": [
                rev("a1"),
                rev("a2", "a1"),
                rev("a3", "a2"),
                rev("s1", branch_labels=["side"]),
                rev("s2", "s1"),
                rev("s3", "s2"),
                rev("a4", ("a3", "s2")),
            ],
            "orders": [rev("o1"), rev("o2", "o1", requires=["users@s2"])],
        }
    )


def ids(graph: FleetGraph, state: dict[str, list[str]], ref: str) -> list[str]:
    return [s.id for s in plan_rollback_to(graph, ObservedState.of(state), "dev", ref).steps]


def test_a_second_root_keeps_the_main_line() -> None:
    """A second root with a branch label: going back to it undoes only what builds on it.

    users:  a1 -- a2 -- a3
            b1 -- b2          (b1: down_revision None, branch label "side")
    """
    main = [rev("a1"), rev("a2", "a1"), rev("a3", "a2")]
    g = fleet({"users": [*main, rev("b1", branch_labels=["side"]), rev("b2", "b1")]})
    state = {"users": ["a3", "b2"]}
    assert ids(g, state, "users@b1") == ["users@b2"]
    assert ids(g, state, "users@side") == ["users@b2"]  # the label names b1
    assert ids(g, state, "users@a1") == ["users@a3", "users@a2"]
    assert ids(g, state, "users@b2") == []
    assert ids(g, state, "users@base") == ["users@b2", "users@b1", "users@a3", "users@a2", "users@a1"]


def test_only_the_descendants_of_the_target_and_what_requires_them(two_roots: FleetGraph) -> None:
    state = {"users": ["a4", "s3"], "orders": ["o2"]}
    # s2 is under the merge a4 and the branch s3, and orders@o2 requires it; a1..a3 stay.
    # Reverse of the forward order: every dependent before what it needs.
    assert ids(two_roots, state, "users@s1") == ["users@a4", "users@s3", "orders@o2", "users@s2"]
    # Going back on the main line leaves the side root alone, and orders@o2 (it needs s2).
    assert ids(two_roots, state, "users@a2") == ["users@a4", "users@a3"]
    assert ids(two_roots, state, "users@s2") == ["users@a4", "users@s3"]


def test_what_is_not_applied_is_not_undone(two_roots: FleetGraph) -> None:
    state = {"users": ["a3", "s2"], "orders": ["o1"]}
    assert ids(two_roots, state, "users@s1") == ["users@s2"]
    assert ids(two_roots, state, "users@a3") == []
