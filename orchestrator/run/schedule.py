"""Which steps run together, and in what order: pure (steps, their dependencies and the
resources they hold go in, batches come out); no database, no journal, no process.

A batch is one unit of work: consecutive revisions of one service (run by one Alembic
call), or one copy. Two batches that hold a common resource (a database) never run at
the same time. Ready steps are started critical path first (list scheduling by height).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.core.model import DowngradeStep, NodeId, Step, UpgradeStep

Batch = list[Step]


def service_of(node: str) -> str:
    """The service a step runs on; a copy is its own."""
    ref = NodeId.parse(node)
    return node if ref.is_copy else ref.service


def group(steps: Sequence[Step]) -> list[Batch]:
    """Steps in plan order, consecutive revisions of one service in the same direction together."""
    groups: list[Batch] = []
    for step in steps:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and isinstance(step, UpgradeStep | DowngradeStep)
            and isinstance(last, UpgradeStep | DowngradeStep)
            and last.service == step.service
            and last.kind == step.kind
        ):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


@dataclass(frozen=True)
class Schedule:
    """The fixed facts of a parallel run."""

    steps: tuple[Step, ...]
    prereq: Mapping[str, frozenset[str]]  # the steps of the plan each step waits for
    resources: Mapping[str, tuple[str, ...]]  # what each step holds while it runs
    priority: Mapping[str, tuple[int, int]]  # lower starts first
    needed_elsewhere: frozenset[str]  # steps another service's step (or a copy) waits for

    @classmethod
    def build(
        cls,
        steps: Sequence[Step],
        depends_on: Callable[[str], Iterable[str]],
        resources: Mapping[str, tuple[str, ...]],
    ) -> Schedule:
        """``steps`` in plan order (a topological order); ``depends_on(node)``: the nodes that
        must be done before it (inside the plan or not)."""
        in_plan = {s.id for s in steps}
        prereq = {s.id: frozenset(d for d in depends_on(s.id) if d in in_plan) for s in steps}
        needed = frozenset(dep for s in steps for dep in prereq[s.id] if service_of(dep) != service_of(s.id))
        dependents: dict[str, list[str]] = {s.id: [] for s in steps}
        for s in steps:
            for dep in prereq[s.id]:
                dependents[dep].append(s.id)
        height: dict[str, int] = {}
        for s in reversed(steps):
            height[s.id] = 1 + max((height[d] for d in dependents[s.id]), default=0)
        priority = {s.id: (-height[s.id], i) for i, s in enumerate(steps)}
        return cls(tuple(steps), prereq, dict(resources), priority, needed)


@dataclass
class Dispatch:
    """The moving state of a parallel run: what is left, what is done, which resources are
    busy. ``start`` hands out the batches that may start now; ``finish`` returns one."""

    schedule: Schedule
    jobs: int
    remaining: list[Step] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    running: int = 0

    def __post_init__(self) -> None:
        self.remaining = list(self.schedule.steps)

    def start(self) -> list[tuple[Batch, tuple[str, ...]]]:
        """The batches to start now, each with the resources it holds (marked busy)."""
        out = []
        for batch in self._ready_batches():
            res = tuple(sorted({r for s in batch for r in self.schedule.resources[s.id]}))
            self.busy.update(res)
            for s in batch:
                self.remaining.remove(s)
            out.append((batch, res))
        self.running += len(out)
        return out

    def finish(self, resources: Iterable[str], done: Iterable[str]) -> None:
        """A batch ended: its resources are free, and ``done`` are the nodes it completed."""
        self.running -= 1
        self.busy.difference_update(resources)
        self.done.update(done)

    def _ready_batches(self) -> list[Batch]:
        sched = self.schedule
        batches: list[Batch] = []
        claimed = set(self.busy)
        taken: set[str] = set()
        for step in sorted(self.remaining, key=lambda s: sched.priority[s.id]):
            if self.running + len(batches) >= self.jobs:
                break
            if step.id in taken or not sched.prereq[step.id] <= self.done:
                continue
            if any(r in claimed for r in sched.resources[step.id]):
                continue
            batch = self._batch_from(step, taken)
            claimed.update(sched.resources[step.id])
            batches.append(batch)
        return batches

    def _batch_from(self, step: Step, taken: set[str]) -> Batch:
        """``step`` and the revisions of its service that can follow it in the same unit."""
        batch = [step]
        taken.add(step.id)
        if not isinstance(step, UpgradeStep | DowngradeStep):
            return batch
        covered = self.done | {step.id}
        for nxt in self.remaining:
            if nxt.id in taken:
                continue
            if batch[-1].id in self.schedule.needed_elsewhere:
                break  # let the other service's step start as soon as this one is done
            if (
                isinstance(nxt, UpgradeStep | DowngradeStep)
                and nxt.service == step.service
                and nxt.kind == step.kind
                and self.schedule.prereq[nxt.id] <= covered
            ):
                batch.append(nxt)
                taken.add(nxt.id)
                covered.add(nxt.id)
        return batch


__all__ = ["Batch", "Dispatch", "Schedule", "group", "service_of"]
