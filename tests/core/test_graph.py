"""The fleet graph: edges from real revision files and the manifest, references, cycles, order."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.graph import Edge, FleetGraph
from orchestrator.core.manifest import load_manifest
from orchestrator.core.planner import ObservedState, plan_upgrade
from orchestrator.core.workspace import load_graph
from orchestrator.errors import AmbiguousReferenceError, CycleError, GraphError, UnknownReferenceError
from tests.helpers import chain, fleet, make_workspace, rev, run_cli


# -- edges from real files ----------------------------------------------------------------
@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """Every kind of edge, from real revision files and the manifest::

    users:     u1 --+-- u2 --+-- u4          u4 merges u2 and u3; copy:mv runs before u4
                    +-- u3 --+
    orders:    o1 ----- o2                   o2: down_revision o1, depends_on ob
               ob ------+
    shipping:  s1 ----- s2

    orders@o1   requires users@u2      (file: requires = [...])
    shipping@s1 requires users@u1      (file: requires: list[str] = [...])
    shipping@s2 requires orders@o2     (manifest [[requires]])
    copy:mv     after users@u3, shipping@s1; before users@u4
    """
    return make_workspace(
        tmp_path,
        {
            "users": [rev("u1"), rev("u2", "u1"), rev("u3", "u1"), rev("u4", ("u2", "u3"), message="merge")],
            "orders": [
                rev("o1", requires=["users@u2"]),
                rev("ob", branch_labels=["audit"]),
                rev("o2", "o1", depends_on=["ob"]),
            ],
            "shipping": [rev("s1", requires=["users@u1"], annotated=True), rev("s2", "s1")],
        },
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "shipping",
                "table": "users_u1",
                "after": ["users@u3", "shipping@s1"],
                "before": ["users@u4"],
            }
        ],
        requires={"shipping@s2": ["orders@o2"]},
    )


def _graph(root: Path) -> FleetGraph:
    return load_graph(load_manifest(cwd=str(root), environ={}))


def test_every_kind_of_edge_is_read(registry: Path) -> None:
    assert _graph(registry).edges() == (
        Edge("users@u2", "orders@o1", "requires"),
        Edge("orders@o1", "orders@o2", "down_revision"),
        Edge("orders@ob", "orders@o2", "depends_on"),
        Edge("users@u1", "shipping@s1", "requires"),
        Edge("orders@o2", "shipping@s2", "requires"),
        Edge("shipping@s1", "shipping@s2", "down_revision"),
        Edge("shipping@s1", "copy:mv", "after"),
        Edge("users@u3", "copy:mv", "after"),
        Edge("users@u1", "users@u2", "down_revision"),
        Edge("users@u1", "users@u3", "down_revision"),
        Edge("copy:mv", "users@u4", "before"),
        Edge("users@u2", "users@u4", "down_revision"),
        Edge("users@u3", "users@u4", "down_revision"),
    )


def test_cross_requires_come_from_both_file_forms_and_the_manifest(registry: Path) -> None:
    assert _graph(registry).cross_requires == {
        "orders@o1": ("users@u2",),
        "shipping@s1": ("users@u1",),
        "shipping@s2": ("orders@o2",),
    }


def test_revisions_keep_alembic_facts(registry: Path) -> None:
    g = _graph(registry)
    assert g.revisions["users@u4"].down_revisions == ("u2", "u3")
    assert g.revisions["orders@o2"].depends_on == ("ob",)
    assert g.revisions["orders@ob"].branch_labels == ("audit",)
    assert g.services["orders"].heads == ("ob", "o2")  # as Alembic's get_heads(): depends_on is no child
    assert g.services["users"].heads == ("u4",)
    assert g.services["users"].bases == ("u1",)


def test_the_whole_order_breaks_ties_by_service_then_revision_order(registry: Path) -> None:
    assert _graph(registry).order() == [
        "orders@ob",
        "users@u1",
        "shipping@s1",
        "users@u2",
        "orders@o1",
        "orders@o2",
        "shipping@s2",
        "users@u3",
        "copy:mv",
        "users@u4",
    ]


# -- references ---------------------------------------------------------------------------
@pytest.fixture
def hexes() -> FleetGraph:
    """users: 3a9c0d1e2f4b -- 3a1f00000000 -- 7b2e11111111 (label "accounts"); orders: 9f0e22222222."""
    return fleet(
        {
            "users": [
                rev("3a9c0d1e2f4b"),
                rev("3a1f00000000", "3a9c0d1e2f4b"),
                rev("7b2e11111111", "3a1f00000000", branch_labels=["accounts"]),
            ],
            "orders": [rev("9f0e22222222")],
        }
    )


@pytest.mark.parametrize(
    ("ref", "node"),
    [
        ("users@3a9c0d1e2f4b", "users@3a9c0d1e2f4b"),  # full id
        ("users@3a9", "users@3a9c0d1e2f4b"),  # unique prefix
        ("users@3a1", "users@3a1f00000000"),
        ("users@7", "users@7b2e11111111"),
        ("users@head", "users@7b2e11111111"),
        ("users@accounts", "users@7b2e11111111"),  # branch label
        ("orders@head", "orders@9f0e22222222"),
    ],
)
def test_references_resolve(hexes: FleetGraph, ref: str, node: str) -> None:
    assert hexes.resolve(ref, where="test") == node


def test_an_ambiguous_prefix_lists_the_candidates(hexes: FleetGraph) -> None:
    with pytest.raises(AmbiguousReferenceError) as info:
        hexes.resolve("users@3a", where="--target")
    assert str(info.value) == "--target: 'users@3a' is ambiguous; it matches users@3a1f00000000, users@3a9c0d1e2f4b"
    assert info.value.hint == "use more characters of the revision id"
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("ref", "hint"),
    [
        ("usres@3a9", "did you mean 'users@3a9' or 'orders@3a9'?"),  # unknown service: the closest names
        ("users@3a9c0d1e2f4c", "did you mean 'users@3a9c0d1e2f4b'?"),  # a typo in the id
        ("users@9f0e", "did you mean 'orders@9f0e22222222'?"),  # the id is in another service
        ("users@ffff", None),
    ],
)
def test_an_unknown_reference_has_a_did_you_mean(hexes: FleetGraph, ref: str, hint: str | None) -> None:
    with pytest.raises(UnknownReferenceError) as info:
        hexes.resolve(ref, where="--target")
    assert str(info.value) == f"--target: unknown reference '{ref}'"
    assert info.value.hint == hint


def test_a_reference_without_at_is_not_a_node() -> None:
    g = fleet({"users": [rev("u1")]})
    with pytest.raises(GraphError) as info:
        g.resolve("users", where="--target")
    assert str(info.value) == "--target: 'users' is not a node reference"
    assert info.value.hint == "write service@revision, e.g. users@3a9c0d1e2f4b (a unique prefix is enough)"


def test_head_of_a_service_with_two_heads_is_ambiguous() -> None:
    """users: u1 --+-- u2
    +-- u3
    """
    g = fleet({"users": [rev("u1"), rev("u2", "u1"), rev("u3", "u1")]})
    with pytest.raises(GraphError) as info:
        g.resolve("users@head", where="--target")
    assert str(info.value) == (
        "--target: 'users@head': multiple heads in service 'users' (u2, u3); 'head' must name exactly one"
    )
    assert info.value.hint == "use `users@heads` for all of them, or merge them with `alembic merge` (u2 u3)"


def test_requires_may_not_use_head() -> None:
    with pytest.raises(GraphError) as info:
        fleet({"users": [rev("u1")], "orders": [rev("o1", requires=["users@head"])]})
    assert str(info.value) == "/mem/orders/versions/o1_rev.py (requires): 'users@head' must name a revision, not 'head'"


def test_unknown_references_in_files_and_manifest_name_where_they_are(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": [rev("u1")], "orders": [rev("o1", requires=["usres@u1"])]})
    result = run_cli(["plan"], cwd=root)
    assert result.exit_code == 2
    path = root / "services" / "orders" / "versions" / "o1_rev.py"
    assert result.stderr.splitlines() == [
        f"error: {path} (requires): unknown reference 'usres@u1'",
        "hint: did you mean 'users@u1' or 'orders@u1'?",
    ]


def test_an_unknown_copy_reference_names_the_copy(tmp_path: Path) -> None:
    root = make_workspace(
        tmp_path,
        {"users": [rev("u1")], "orders": [rev("o1")]},
        copies=[{"name": "mv", "source": "users", "target": "orders", "table": "t", "before": ["users@u2"]}],
    )
    result = run_cli(["graph"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {root / 'migrate.toml'} [[copies]] 'mv' before: unknown reference 'users@u2'",
        "hint: did you mean 'users@u1'?",
    ]


def test_an_unknown_manifest_requires_node(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, {"users": [rev("u1")], "orders": [rev("o1")]}, requires={"order@o1": ["users@u1"]})
    result = run_cli(["graph"], cwd=root)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {root / 'migrate.toml'} [[requires]] #1 node: unknown reference 'order@o1'",
        "hint: did you mean 'orders@o1'?",
    ]


# -- cycles -------------------------------------------------------------------------------
def test_a_cycle_across_services_prints_its_path() -> None:
    """users:  u1 -- u2          orders@o1 requires users@u2
                   |          users@u1  requires orders@o2
    orders: o1 -- o2
    """
    with pytest.raises(CycleError) as info:
        fleet(
            {"users": [rev("u1", requires=["orders@o2"]), rev("u2", "u1")], "orders": chain("o", 2)},
            requires={"orders@o1": ["users@u2"]},
        )
    assert str(info.value) == "dependency cycle: orders@o1 -> orders@o2 -> users@u1 -> users@u2 -> orders@o1"
    path = info.value.path
    assert path[0] == path[-1]


def test_a_revision_requiring_itself_is_a_cycle() -> None:
    with pytest.raises(CycleError) as info:
        fleet({"users": [rev("u1"), rev("u2", "u1", requires=["users@u2"])]})
    assert str(info.value) == "dependency cycle: users@u2 -> users@u2"


def test_a_copy_closing_a_cycle(tmp_path: Path) -> None:
    """users: u1 -- u2;  copy:mv after users@u2 and before users@u1: u1 -> u2 -> copy:mv -> u1."""
    root = make_workspace(
        tmp_path,
        {"users": chain("u", 2), "orders": [rev("o1")]},
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "orders",
                "table": "t",
                "after": ["users@u2"],
                "before": ["users@u1"],
            }
        ],
    )
    result = run_cli(["plan", "--json"], cwd=root)
    assert result.exit_code == 2
    assert result.json() == {
        "error": "dependency cycle: users@u1 -> users@u2 -> copy:mv -> users@u1",
        "exit_code": 2,
        "hint": "remove one of these edges (a `requires`, `after` or `before`) so the order is acyclic",
    }


# -- determinism --------------------------------------------------------------------------
def test_ties_break_by_service_name_then_revision_order() -> None:
    """No cross edges but one: orders@o1 requires users@u2.

    billing: b1
    orders:  o1 -- o2
    users:   u1 --+-- u2        (u2 before u3: the service's own order)
                  +-- u3
    """
    g = fleet(
        {
            "users": [rev("u1"), rev("u2", "u1"), rev("u3", "u1")],
            "orders": [rev("o1", requires=["users@u2"]), rev("o2", "o1")],
            "billing": [rev("b1")],
        }
    )
    assert g.order() == ["billing@b1", "users@u1", "users@u2", "orders@o1", "orders@o2", "users@u3"]


def test_the_plan_does_not_depend_on_input_order() -> None:
    services = {
        "users": [rev("u1"), rev("u2", "u1"), rev("u3", "u1")],
        "orders": [rev("o1", requires=["users@u2"]), rev("o2", "o1")],
        "billing": [rev("b1", requires=["orders@o1"])],
    }
    state = ObservedState.of({"users": ["u1"]})
    one = plan_upgrade(fleet(services), state, "dev")
    two = plan_upgrade(fleet(dict(reversed(list(services.items())))), state, "dev")
    assert one == two
    assert one.fingerprint == two.fingerprint


# -- node ids -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["users@3a9c0d1e2f4b", "users@label@head", "copy:move_emails", "copy:"])
def test_node_id_parses_once_and_gives_the_text_back(text: str) -> None:
    from orchestrator.core.model import NodeId

    node = NodeId.parse(text)
    assert str(node) == text
    assert node.is_copy == text.startswith("copy:")


def test_node_id_parts() -> None:
    from orchestrator.core.model import NodeId, copy_node_id, node_id, service_of

    assert NodeId.parse("users@abc") == NodeId("users", "abc")
    assert NodeId.parse("users@label@head").revision == "label@head"
    assert NodeId.parse("copy:mv") == NodeId.copy("mv")
    assert NodeId.parse("copy:mv").service == ""
    assert not NodeId.parse("users").revision  # not a node reference
    assert str(NodeId("users", "abc")) == node_id("users", "abc")
    assert str(NodeId.copy("mv")) == copy_node_id("mv")
    assert service_of("billing@12") == "billing"
    assert service_of("copy:mv") == ""
    assert NodeId.parse("users@3a9").abbreviates(NodeId("users", "3a9c0d"))
    assert not NodeId.parse("users@3a9").abbreviates(NodeId("billing", "3a9c0d"))
    assert not NodeId.parse("users@").abbreviates(NodeId("users", "3a9c0d"))
    assert not NodeId.parse("copy:users@3a9").abbreviates(NodeId("users", "3a9c0d"))
