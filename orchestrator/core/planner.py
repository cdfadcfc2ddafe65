"""The planner: (graph, observed state, targets) in, an immutable ``Plan`` out. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import (
    CopySpec,
    CopyStep,
    DowngradeStep,
    NodeId,
    Plan,
    RevertCopyStep,
    Step,
    UpgradeStep,
    node_id,
    service_of,
)
from orchestrator.core.planfile import fingerprint
from orchestrator.core.pysource import downgrade_noop
from orchestrator.errors import GraphError, MigrateError


@dataclass(frozen=True)
class ObservedState:
    """What the databases and the journal say, read before planning."""

    heads: tuple[tuple[str, tuple[str, ...]], ...]  # (service, applied heads), sorted
    completed_copies: tuple[str, ...] = ()  # copy names whose last run completed
    unmigrated: tuple[str, ...] = ()  # services whose database has no version table at all
    # copy names whose revert stopped half-way: not complete (a new apply copies them again,
    # after finishing the revert), yet rows of theirs may still be in the target, to revert
    reverting_copies: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        heads: Mapping[str, Iterable[str]],
        completed_copies: Iterable[str] = (),
        unmigrated: Iterable[str] = (),
        reverting_copies: Iterable[str] = (),
    ) -> ObservedState:
        return cls(
            heads=tuple(sorted((s, tuple(sorted(h))) for s, h in heads.items())),
            completed_copies=tuple(sorted(set(completed_copies))),
            unmigrated=tuple(sorted(set(unmigrated))),
            reverting_copies=tuple(sorted(set(reverting_copies))),
        )

    @property
    def copies_to_revert(self) -> set[str]:
        """Copy names whose rows may be in their target: complete, or half reverted."""
        return set(self.completed_copies) | set(self.reverting_copies)

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.heads)


def _down_revision(downs: tuple[str, ...]) -> str | tuple[str, ...] | None:
    """Alembic's shape of down_revision: None at a base, a string, or a tuple at a merge."""
    if not downs:
        return None
    return downs[0] if len(downs) == 1 else downs


def upgrade_step(graph: FleetGraph, node: str) -> Step:
    if node in graph.copies:
        c = graph.copies[node]
        return CopyStep(name=c.name, source=c.source, target=c.target, table=c.table, target_table=c.target_table)
    rev = graph.revisions[node]
    down = _down_revision(rev.down_revisions)
    return UpgradeStep(
        service=rev.service,
        revision=rev.revision,
        down_revision=down,
        message=rev.message,
        requires=graph.cross_requires.get(node, ()),
        checksum=rev.checksum,
        path=rev.path,
    )


def downgrade_step(graph: FleetGraph, node: str) -> Step:
    if node in graph.copies:
        c = graph.copies[node]
        return RevertCopyStep(name=c.name, source=c.source, target=c.target, table=c.table, target_table=c.target_table)
    rev = graph.revisions[node]
    down = _down_revision(rev.down_revisions)
    return DowngradeStep(
        service=rev.service,
        revision=rev.revision,
        down_revision=down,
        message=rev.message,
        checksum=rev.checksum,
        path=rev.path,
        noop=downgrade_noop(rev.path, rev.down_revisions),
    )


def pending_nodes(graph: FleetGraph, state: ObservedState) -> set[str]:
    """Every revision not applied, and every copy not recorded complete whose window is open."""
    applied = graph.applied_nodes(state.as_dict())
    pending = {n for n in graph.revisions if n not in applied}
    done = set(state.completed_copies)
    for cnode, spec in graph.copies.items():
        if spec.name in done:
            continue
        # A copy whose `before` revisions are already applied can no longer run: its source
        # is gone. It is left out rather than planned to fail.
        if any(b in applied for b in graph.successors(cnode) if b not in graph.copies):
            continue
        pending.add(cnode)
    return pending


def plan_upgrade(
    graph: FleetGraph,
    state: ObservedState,
    env: str,
    targets: Sequence[str] = (),
    created: str = "",
) -> Plan:
    pending = pending_nodes(graph, state)
    if targets:
        wanted: set[str] = set()
        for ref in targets:
            wanted |= _expand_target(graph, ref)
        closure = graph.ancestors(wanted) | wanted
        selected = {n for n in closure if n in pending}
    else:
        selected = pending
    steps = tuple(upgrade_step(graph, n) for n in graph.order(selected))
    return seal(
        Plan(
            env=env,
            state=state.heads,
            steps=steps,
            checksums=_checksums(graph, steps),
            direction="upgrade",
            created=created,
            extra=(("completed_copies", ",".join(state.completed_copies)),),
        )
    )


def _expand_target(graph: FleetGraph, ref: str) -> set[str]:
    parsed = NodeId.parse(ref)
    service, rev = parsed.service, parsed.revision
    if (rev == "heads" or rev.endswith("@heads")) and service in graph.services:
        return {node_id(service, h) for h in graph.symbolic_heads(ref, "--target")}
    if rev == "base":
        raise GraphError(
            f"--target '{ref}': 'base' is not something to apply", "use `migrate rollback --to " + ref + "`"
        )
    return {graph.resolve(ref, where="--target")}


def plan_rollback_to(graph: FleetGraph, state: ObservedState, env: str, ref: str, created: str = "") -> Plan:
    """Take one service back to a revision and, first, every applied node that requires what
    is undone (transitively, in any service), and revert the copies that had to run before
    an undone revision.

    As ``alembic downgrade <rev>``, only the revisions that build on the target within the
    service are undone: another branch of the service (a second root, the other side of a
    branch point) stays. ``service@base`` undoes the whole service."""
    parsed = NodeId.parse(ref)
    service, rev = parsed.service, parsed.revision
    if not rev or service not in graph.services:
        graph.resolve(ref, where="--to")  # raises the right error
    applied = graph.applied_nodes(state.as_dict())
    if rev == "base":
        undo = {n for n in applied if service_of(n) == service}
    else:
        target = graph.resolve(ref, where="--to")
        undo = _service_descendants(graph, service, target) & applied
    done = {c for c, spec in graph.copies.items() if spec.name in state.copies_to_revert}
    while True:
        grown = undo | {n for n in graph.descendants(undo) if n in applied or n in done}
        # A completed copy ordered before something being undone (typically the drop of its
        # source table) is reverted too: the rows go back where that revision expects them.
        grown |= {c for c in done if any(s in grown for s in graph.successors(c))}
        if grown == undo:
            break
        undo = grown
    return _downgrade_plan(graph, state, env, undo, created)


def _service_descendants(graph: FleetGraph, service: str, node: str) -> set[str]:
    """The revisions of ``service`` that build on ``node`` (down_revision or depends_on,
    transitively) within the service's own tree; ``node`` itself is not one of them."""
    children: dict[str, list[str]] = {}
    for child, revision in graph.revisions.items():
        if revision.service == service:
            for parent in (*revision.down_revisions, *revision.depends_on):
                children.setdefault(node_id(service, parent), []).append(child)
    seen: set[str] = set()
    stack = list(children.get(node, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(children.get(current, ()))
    return seen


def plan_rollback_nodes(
    graph: FleetGraph, state: ObservedState, env: str, nodes: Sequence[str], created: str = ""
) -> Plan:
    """Undo the given nodes (those of one run), still applied, in reverse topological order."""
    applied = graph.applied_nodes(state.as_dict())
    done = state.copies_to_revert
    undo = set()
    for n in nodes:
        if n in graph.copies:
            if graph.copies[n].name in done:
                undo.add(n)
        elif n in applied:
            undo.add(n)
        elif n not in graph.revisions:
            raise MigrateError(f"the run applied '{n}', which is no longer in the tree", "restore the file")
    blockers = sorted(d for d in graph.descendants(undo) if d in applied and d not in undo and d not in graph.copies)
    if blockers:
        raise MigrateError(
            f"cannot undo this run: later revisions outside it still build on it: {', '.join(blockers[:5])}",
            "roll back the later run first (`migrate history` lists the runs), or use --to",
        )
    return _downgrade_plan(graph, state, env, undo, created)


def _downgrade_plan(graph: FleetGraph, state: ObservedState, env: str, undo: set[str], created: str) -> Plan:
    order = list(reversed(graph.order(undo)))
    steps = tuple(downgrade_step(graph, n) for n in order)
    return seal(
        Plan(
            env=env,
            state=state.heads,
            steps=steps,
            checksums=_checksums(graph, steps),
            direction="downgrade",
            created=created,
            extra=(("completed_copies", ",".join(state.completed_copies)),),
        )
    )


def _checksums(graph: FleetGraph, steps: Iterable[Step]) -> tuple[tuple[str, str], ...]:
    out = []
    for step in steps:
        if isinstance(step, UpgradeStep | DowngradeStep):
            out.append((step.id, step.checksum))
        else:
            spec = graph.copies[step.id]
            out.append((step.id, copy_spec_checksum(spec)))
    return tuple(sorted(out))


# The fields of a copy that a saved plan depends on. A field added to ``CopySpec`` later is
# not in it, so plans saved before stay valid; add one here only if changing it must make
# saved plans stale. (The text hashed is what ``repr(spec)`` was when the checksum hashed it,
# so the plans saved then keep their checksum.)
COPY_CHECKSUM_FIELDS = (
    "name",
    "source",
    "target",
    "table",
    "target_table",
    "columns",
    "key",
    "after",
    "before",
    "batch_size",
    "max_rows_per_second",
    "pause_seconds",
)


def copy_spec_checksum(spec: CopySpec) -> str:
    import hashlib

    text = "CopySpec(" + ", ".join(f"{name}={getattr(spec, name)!r}" for name in COPY_CHECKSUM_FIELDS) + ")"
    return hashlib.sha256(text.encode()).hexdigest()


def seal(plan: Plan) -> Plan:
    return replace(plan, fingerprint=fingerprint(plan))
