"""Property: on random fleets, the plan is exactly the pending set, and every edge points forward."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.planner import ObservedState, plan_upgrade
from tests.helpers import Rev, fleet, rev


@st.composite
def fleets(draw: st.DrawFn) -> tuple[dict[str, list[Rev]], dict[str, list[str]]]:
    """Random services, each a random Alembic tree (branches and merges), with random
    cross-service requires. Every revision gets a global rank, and a requirement only points
    at a lower rank, so the whole graph is acyclic by construction; the applied heads are a
    random revision (or none, or two) per service."""
    n_services = draw(st.integers(1, 5))
    names = draw(st.lists(st.sampled_from("abcdefghij"), min_size=n_services, max_size=n_services, unique=True))
    sizes = [draw(st.integers(1, 7)) for _ in names]
    # interleave the services' revisions into one global sequence (the ranks)
    slots = [name for name, size in zip(names, sizes, strict=True) for _ in range(size)]
    slots = draw(st.permutations(slots))
    services: dict[str, list[Rev]] = {name: [] for name in names}
    ranked: list[str] = []
    for service in slots:
        own = services[service]
        index = len(own)
        rid = f"{service}{index:02d}"
        if index == 0:
            down: tuple[str, ...] = ()
        else:
            parents = draw(st.sets(st.integers(0, index - 1), min_size=1, max_size=2))
            down = tuple(own[p].id for p in sorted(parents))
        requires = []
        if ranked and draw(st.booleans()):
            for target in draw(st.sets(st.sampled_from(ranked), max_size=2)):
                if not target.startswith(f"{service}@"):
                    requires.append(target)
        own.append(rev(rid, down or None, requires=sorted(requires)))
        ranked.append(f"{service}@{rid}")
    state: dict[str, list[str]] = {}
    for name, revs in services.items():
        applied = draw(st.sets(st.sampled_from([r.id for r in revs]), max_size=2))
        if applied:
            state[name] = sorted(applied)
    return services, state


def _ancestors_within(revs: list[Rev], heads: list[str]) -> set[str]:
    by_id = {r.id: r for r in revs}
    seen: set[str] = set()
    stack = list(heads)
    while stack:
        rid = stack.pop()
        if rid not in seen:
            seen.add(rid)
            stack.extend(by_id[rid].downs)
    return seen


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_the_plan_is_the_pending_set_in_an_order_every_edge_respects(case: Any) -> None:
    services, state = case
    graph = fleet(services)
    plan = plan_upgrade(graph, ObservedState.of(state), "dev")
    ids = [step.id for step in plan.steps]

    # exactly the pending set, each once
    applied = {f"{name}@{rid}" for name, heads in state.items() for rid in _ancestors_within(services[name], heads)}
    everything = {f"{name}@{r.id}" for name, revs in services.items() for r in revs}
    assert len(ids) == len(set(ids))
    assert set(ids) == everything - applied

    # every edge between planned steps points forward: Alembic's own and the cross-service ones
    position = {node: i for i, node in enumerate(ids)}
    for name, revs in services.items():
        for r in revs:
            node = f"{name}@{r.id}"
            if node not in position:
                continue
            for before in [f"{name}@{d}" for d in r.downs] + list(r.requires):
                assert before in applied or position[before] < position[node], (before, node)

    # and the same fleet, given in another order, plans the same steps
    again = plan_upgrade(fleet(dict(reversed(list(services.items())))), ObservedState.of(state), "dev")
    assert again.steps == plan.steps
    assert again.fingerprint == plan.fingerprint
