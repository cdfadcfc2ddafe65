"""The scheduler is pure: steps, their dependencies and resources in, batches out. No database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestrator.core.model import CopyStep, Step, UpgradeStep
from orchestrator.run.schedule import Dispatch, Schedule, group


def up(service: str, rev: str, down: str | None = None) -> UpgradeStep:
    return UpgradeStep(service, rev, down, f"{service} {rev}")


def copy(name: str, source: str, target: str) -> CopyStep:
    return CopyStep(name, source, target, "t", "t")


def rounds(
    steps: Sequence[Step],
    deps: Mapping[str, Sequence[str]],
    jobs: int,
    resources: Mapping[str, tuple[str, ...]] | None = None,
) -> list[list[list[str]]]:
    """Run the dispatch to the end, every started batch finishing before the next round:
    each round is the list of batches (their node ids) started together."""
    if resources is None:
        resources = {s.id: (s.id.partition("@")[0],) for s in steps}
    dispatch = Dispatch(Schedule.build(steps, lambda n: deps.get(n, ()), resources), jobs)
    out = []
    while dispatch.remaining:
        started = dispatch.start()
        assert started, "the dispatch is stuck"
        out.append([[s.id for s in batch] for batch, _ in started])
        for batch, res in started:
            dispatch.finish(res, [s.id for s in batch])
    return out


def test_a_chain_of_one_service_is_one_batch() -> None:
    """
    a@1 -> a@2 -> a@3
    """
    steps = [up("a", "1"), up("a", "2", "1"), up("a", "3", "2")]
    deps = {"a@2": ["a@1"], "a@3": ["a@2"]}
    assert rounds(steps, deps, jobs=4) == [[["a@1", "a@2", "a@3"]]]
    assert [[s.id for s in b] for b in group(steps)] == [["a@1", "a@2", "a@3"]]


def test_two_independent_services_run_side_by_side() -> None:
    """
    a@1 -> a@2
    b@1 -> b@2
    """
    steps = [up("a", "1"), up("a", "2", "1"), up("b", "1"), up("b", "2", "1")]
    deps = {"a@2": ["a@1"], "b@2": ["b@1"]}
    assert rounds(steps, deps, jobs=2) == [[["a@1", "a@2"], ["b@1", "b@2"]]]
    # one job: one batch at a time, the same batches
    assert rounds(steps, deps, jobs=1) == [[["a@1", "a@2"]], [["b@1", "b@2"]]]


def test_a_step_needed_by_another_service_ends_its_batch() -> None:
    """
    a@1 -> a@2 -> a@3
            |
            v
           b@1
    b@1 requires a@2: the batch of a stops after a@2, so that b@1 starts beside a@3.
    """
    steps = [up("a", "1"), up("a", "2", "1"), up("a", "3", "2"), up("b", "1")]
    deps = {"a@2": ["a@1"], "a@3": ["a@2"], "b@1": ["a@2"]}
    assert rounds(steps, deps, jobs=2) == [[["a@1", "a@2"]], [["a@3"], ["b@1"]]]


def test_a_copy_between_services_waits_for_both_and_holds_both_databases() -> None:
    """
    a@1 --> copy:x --> b@2
    b@1 ---^
    The copy reads a's database and writes b's: nothing else runs on them meanwhile.
    """
    steps = [up("a", "1"), up("b", "1"), copy("x", "a", "b"), up("b", "2", "1"), up("a", "2", "1")]
    deps = {"copy:x": ["a@1", "b@1"], "b@2": ["b@1", "copy:x"], "a@2": ["a@1"]}
    resources = {"a@1": ("A",), "a@2": ("A",), "b@1": ("B",), "b@2": ("B",), "copy:x": ("A", "B")}
    assert rounds(steps, deps, jobs=4, resources=resources) == [
        [["a@1"], ["b@1"]],
        [["copy:x"]],
        [["b@2"], ["a@2"]],
    ]


def test_steps_that_share_a_database_never_run_together() -> None:
    """
    a@1    b@1    (two services on one database "D")
    c@1           (its own database)
    """
    steps = [up("a", "1"), up("b", "1"), up("c", "1")]
    resources = {"a@1": ("D",), "b@1": ("D",), "c@1": ("C",)}
    assert rounds(steps, {}, jobs=3, resources=resources) == [[["a@1"], ["c@1"]], [["b@1"]]]


def test_the_longest_chain_starts_first() -> None:
    """
    a@1            (alone)
    b@1 -> c@1 -> d@1   (a chain across services: the critical path)
    With one job, b@1 and c@1 start before a@1 although a@1 comes first in the plan; at
    equal height (a@1, d@1) the plan order decides.
    """
    steps = [up("a", "1"), up("b", "1"), up("c", "1"), up("d", "1")]
    deps = {"c@1": ["b@1"], "d@1": ["c@1"]}
    assert rounds(steps, deps, jobs=1) == [[["b@1"]], [["c@1"]], [["a@1"]], [["d@1"]]]
