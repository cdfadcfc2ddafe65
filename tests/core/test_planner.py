"""The pure planner on tiny in-memory fleets: pending set, order, targets, copies, state."""

from __future__ import annotations

import pytest

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import CopyStep, UpgradeStep
from orchestrator.core.planner import ObservedState, plan_upgrade
from orchestrator.errors import AmbiguousReferenceError, GraphError
from tests.helpers import chain, fleet, rev


def up(service: str, rid: str, down: str | tuple[str, ...] | None, requires: tuple[str, ...] = ()) -> UpgradeStep:
    """The step ``fleet`` gives one revision (message, checksum and path by its conventions)."""
    return UpgradeStep(
        service=service,
        revision=rid,
        down_revision=down,
        message=f"step {rid}",
        requires=requires,
        checksum=f"sum-{service}-{rid}",
        path=f"/mem/{service}/versions/{rid}_rev.py",
    )


MV = CopyStep(name="mv", source="users", target="billing", table="t", target_table="t")


@pytest.fixture
def three() -> FleetGraph:
    """users:   u1 -- u2 -- u3
                      \\     ^
                       \\   copy:mv (after users@u2 and orders@o1, before users@u3)
                        \\   |
       orders:  o1 -- o2 -- o3          orders@o2 requires users@u2
                 \\
       billing:  b1 -- b2               billing@b2 requires orders@o1
    """
    return fleet(
        {
            "users": chain("u", 3),
            "orders": [rev("o1"), rev("o2", "o1", requires=["users@u2"]), rev("o3", "o2")],
            "billing": [rev("b1"), rev("b2", "b1")],
        },
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "billing",
                "table": "t",
                "after": ["users@u2", "orders@o1"],
                "before": ["users@u3"],
            }
        ],
        requires={"billing@b2": ["orders@o1"]},
    )


def test_nothing_applied_plans_everything_in_the_deterministic_order(three: FleetGraph) -> None:
    plan = plan_upgrade(three, ObservedState.of({}), "dev")
    assert plan.steps == (
        up("billing", "b1", None),
        up("orders", "o1", None),
        up("billing", "b2", "b1", ("orders@o1",)),
        up("users", "u1", None),
        up("users", "u2", "u1"),
        MV,
        up("orders", "o2", "o1", ("users@u2",)),
        up("orders", "o3", "o2"),
        up("users", "u3", "u2"),
    )
    assert plan.env == "dev"
    assert plan.direction == "upgrade"
    assert len(plan.fingerprint) == 64


def test_applied_heads_leave_only_what_is_above_them(three: FleetGraph) -> None:
    state = ObservedState.of({"users": ["u2"], "orders": ["o1"], "billing": []})
    plan = plan_upgrade(three, state, "dev")
    assert plan.steps == (
        up("billing", "b1", None),
        up("billing", "b2", "b1", ("orders@o1",)),
        MV,
        up("orders", "o2", "o1", ("users@u2",)),
        up("orders", "o3", "o2"),
        up("users", "u3", "u2"),
    )
    assert plan.state == (("billing", ()), ("orders", ("o1",)), ("users", ("u2",)))


def test_a_completed_copy_is_not_planned_again(three: FleetGraph) -> None:
    state = ObservedState.of({"users": ["u2"], "orders": ["o3"], "billing": ["b2"]}, completed_copies=["mv"])
    assert plan_upgrade(three, state, "dev").steps == (up("users", "u3", "u2"),)


def test_a_copy_whose_before_revision_is_applied_is_left_out(three: FleetGraph) -> None:
    state = ObservedState.of({"users": ["u3"], "orders": ["o3"], "billing": ["b2"]})
    assert plan_upgrade(three, state, "dev").steps == ()


def test_everything_applied_is_an_empty_plan(three: FleetGraph) -> None:
    state = ObservedState.of({"users": ["u3"], "orders": ["o3"], "billing": ["b2"]}, completed_copies=["mv"])
    assert plan_upgrade(three, state, "dev").steps == ()


# -- targets ------------------------------------------------------------------------------
def test_a_target_takes_its_prerequisites_across_services_but_not_the_copy(three: FleetGraph) -> None:
    plan = plan_upgrade(three, ObservedState.of({}), "dev", targets=["orders@o2"])
    assert plan.steps == (
        up("orders", "o1", None),
        up("users", "u1", None),
        up("users", "u2", "u1"),
        up("orders", "o2", "o1", ("users@u2",)),
    )


def test_a_target_after_a_copy_takes_the_copy(three: FleetGraph) -> None:
    expected = (
        up("orders", "o1", None),
        up("users", "u1", None),
        up("users", "u2", "u1"),
        MV,
        up("users", "u3", "u2"),
    )
    assert plan_upgrade(three, ObservedState.of({}), "dev", targets=["users@u3"]).steps == expected
    assert plan_upgrade(three, ObservedState.of({}), "dev", targets=["users@head"]).steps == expected


def test_a_target_skips_what_is_applied(three: FleetGraph) -> None:
    state = ObservedState.of({"users": ["u2"]})
    plan = plan_upgrade(three, state, "dev", targets=["orders@o2"])
    assert plan.steps == (up("orders", "o1", None), up("orders", "o2", "o1", ("users@u2",)))


def test_an_applied_target_is_an_empty_plan(three: FleetGraph) -> None:
    assert plan_upgrade(three, ObservedState.of({"users": ["u3"]}), "dev", targets=["users@u2"]).steps == ()


def test_several_targets_are_merged_in_one_order(three: FleetGraph) -> None:
    plan = plan_upgrade(three, ObservedState.of({}), "dev", targets=["orders@o2", "billing@b2"])
    assert [s.id for s in plan.steps] == [
        "billing@b1",
        "orders@o1",
        "billing@b2",
        "users@u1",
        "users@u2",
        "orders@o2",
    ]


def test_a_copy_may_be_a_target(three: FleetGraph) -> None:
    plan = plan_upgrade(three, ObservedState.of({}), "dev", targets=["copy:mv"])
    assert plan.steps == (up("orders", "o1", None), up("users", "u1", None), up("users", "u2", "u1"), MV)


def test_base_is_not_a_target(three: FleetGraph) -> None:
    with pytest.raises(GraphError) as info:
        plan_upgrade(three, ObservedState.of({}), "dev", targets=["users@base"])
    assert str(info.value) == "--target 'users@base': 'base' is not something to apply"
    assert info.value.hint == "use `migrate rollback --to users@base`"


def test_an_ambiguous_target(three: FleetGraph) -> None:
    with pytest.raises(AmbiguousReferenceError) as info:
        plan_upgrade(three, ObservedState.of({}), "dev", targets=["orders@o"])
    assert str(info.value) == "--target: 'orders@o' is ambiguous; it matches orders@o1, orders@o2, orders@o3"


# -- state the tree does not know, merges ---------------------------------------------------
def test_a_database_at_an_unknown_revision_is_named(three: FleetGraph) -> None:
    with pytest.raises(GraphError) as info:
        plan_upgrade(three, ObservedState.of({"users": ["u9"]}), "dev")
    assert str(info.value) == ("service 'users': the database is at revision 'u9', which is not in /mem/users/versions")
    assert info.value.exit_code == 2


def test_a_merge_has_a_tuple_down_revision_and_two_applied_branches_count() -> None:
    """users: u1 --+-- u2 --+-- u4
    +-- u3 --+
    """
    g = fleet({"users": [rev("u1"), rev("u2", "u1"), rev("u3", "u1"), rev("u4", ("u2", "u3"))]})
    assert plan_upgrade(g, ObservedState.of({"users": ["u2", "u3"]}), "dev").steps == (up("users", "u4", ("u2", "u3")),)
    assert plan_upgrade(g, ObservedState.of({"users": ["u2"]}), "dev").steps == (
        up("users", "u3", "u1"),
        up("users", "u4", ("u2", "u3")),
    )


def test_the_fingerprint_covers_state_steps_and_checksums(three: FleetGraph) -> None:
    base = plan_upgrade(three, ObservedState.of({}), "dev", created="2024-01-01T00:00:00Z")
    later = plan_upgrade(three, ObservedState.of({}), "dev", created="2025-06-01T00:00:00Z")
    assert base.fingerprint == later.fingerprint  # the creation time is not covered
    assert plan_upgrade(three, ObservedState.of({}), "prod").fingerprint != base.fingerprint
    partial = plan_upgrade(three, ObservedState.of({"billing": ["b1"]}), "dev")
    assert partial.fingerprint != base.fingerprint
    assert dict(base.checksums)["users@u1"] == "sum-users-u1"
    assert set(dict(base.checksums)) == {s.id for s in base.steps}


# -- a copy's checksum ----------------------------------------------------------------------
def test_copy_checksum_is_the_one_saved_plans_hold() -> None:
    """Computed from an explicit list of fields, it is still the hash of what ``repr`` gave
    when it hashed ``repr(spec)``: plans saved then keep their checksum."""
    import hashlib

    from orchestrator.core.model import CopySpec
    from orchestrator.core.planner import copy_spec_checksum

    spec = CopySpec(
        "mv", "users", "billing", "t", "t2", ("a", "b"), ("id",), ("users@1",), ("billing@2",), 10, 5.0, 0.5
    )
    legacy = (
        "CopySpec(name='mv', source='users', target='billing', table='t', target_table='t2', "
        "columns=('a', 'b'), key=('id',), after=('users@1',), before=('billing@2',), batch_size=10, "
        "max_rows_per_second=5.0, pause_seconds=0.5)"
    )
    assert copy_spec_checksum(spec) == hashlib.sha256(legacy.encode()).hexdigest()


def test_a_new_copy_field_does_not_make_saved_plans_stale() -> None:
    import dataclasses

    from orchestrator.core.model import CopySpec
    from orchestrator.core.planner import COPY_CHECKSUM_FIELDS, copy_spec_checksum

    @dataclasses.dataclass(frozen=True)
    class CopySpecWithMore(CopySpec):
        live: bool = False

    spec = CopySpec("mv", "users", "billing", "t", "t")
    grown = CopySpecWithMore("mv", "users", "billing", "t", "t", live=True)
    assert copy_spec_checksum(grown) == copy_spec_checksum(spec)
    assert "live" not in COPY_CHECKSUM_FIELDS
    assert copy_spec_checksum(dataclasses.replace(spec, batch_size=7)) != copy_spec_checksum(spec)


def test_plan_completed_copies_is_a_tuple() -> None:
    from orchestrator.core.model import Plan

    plan = Plan(env="dev", state=(), steps=(), extra=(("completed_copies", "a,b"),))
    assert plan.completed_copies == ("a", "b")
    assert Plan(env="dev", state=(), steps=()).completed_copies == ()
