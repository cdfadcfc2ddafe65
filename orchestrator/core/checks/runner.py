"""Run every rule over a loaded workspace and assemble the result. Pure: whatever needs a
database or git (the environment's state, the changed files, the round trip) comes in as a
value."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from orchestrator.core.checks.findings import Finding
from orchestrator.core.checks.load import load_failure
from orchestrator.core.checks.result import CheckResult, sort_findings
from orchestrator.core.checks.rules import (
    RuleOutcome,
    SourceIndex,
    check_copies,
    check_dependent_drops,
    check_destructive,
    check_downgrades,
    check_env_requires,
    check_heads,
)
from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import EnvSpec, Manifest, Service
from orchestrator.errors import MigrateError


def evaluate(
    graph: FleetGraph,
    *,
    sources: SourceIndex | None = None,
    changed: Collection[str] | None = None,
    since: str | None = None,
    env: str | None = None,
    applied: Collection[str] | None = None,
    pending: Sequence[str] | None = None,
    plan_file: str | None = None,
    plan_outcome: RuleOutcome | None = None,
    plan_steps: Sequence[str] | None = None,
    extra: Sequence[RuleOutcome] = (),
    roundtrip: str | None = None,
) -> CheckResult:
    """Every static rule, then the outcomes computed elsewhere (the plan file, the round trip).

    ``changed`` (real paths) limits the revision-level rules to those files; ``applied`` and
    ``pending`` (the plan order) describe ``env`` when one was given; ``plan_steps`` is the
    order of a plan file's steps.
    """
    sources = sources or SourceIndex(graph)
    if changed is None:
        nodes = [r.node for s in graph.services.values() for r in s.revisions]
    else:
        nodes = [r.node for s in graph.services.values() for r in s.revisions if r.path in changed]
    outcomes: list[RuleOutcome] = [
        RuleOutcome("graph", ("graph",)),
        check_heads(graph, sources),
        check_downgrades(graph, sources, nodes),
        check_destructive(graph, sources, nodes),
    ]
    applied_set = frozenset(applied or ())
    outcomes.append(_cross_service(graph, sources, applied_set, pending))
    if env is not None:
        outcomes.append(check_env_requires(graph, sources, env, applied_set, pending or (), "the plan"))
    if plan_outcome is not None:
        outcomes.append(plan_outcome)
        if env is not None and plan_steps is not None:
            file_check = check_env_requires(graph, sources, env, applied_set, plan_steps, "the plan file")
            seen = set(outcomes[-2].findings) if outcomes[-2].group == "env-requires" else set()
            extra_findings = tuple(f for f in file_check.findings if f not in seen)
            if extra_findings:
                outcomes.append(RuleOutcome("env-requires", (), extra_findings))
    outcomes.extend(extra)
    findings: list[Finding] = [f for o in outcomes for f in o.findings]
    return CheckResult(
        findings=sort_findings(findings, _ranker(graph)),
        outcomes=_merge(outcomes),
        root=graph.manifest.root,
        services=len(graph.services),
        revisions=len(graph.revisions),
        revisions_checked=len(nodes),
        copies=len(graph.copies),
        env=env,
        since=since,
        plan_file=plan_file,
        roundtrip=roundtrip,
    )


def _cross_service(
    graph: FleetGraph, sources: SourceIndex, applied: frozenset[str], pending: Sequence[str] | None
) -> RuleOutcome:
    """The copy rules and the dependent drops, as one group."""
    if graph.copies:
        order: list[str] = graph.order() if pending is None else [*graph.order(applied), *pending]
    else:
        order = []
    copies = check_copies(graph, sources, order)
    drops = check_dependent_drops(graph, sources)
    return RuleOutcome(
        "cross-service",
        tuple(dict.fromkeys([*copies.subjects, *drops.subjects])),
        copies.findings + drops.findings,
    )


def _merge(outcomes: Sequence[RuleOutcome]) -> tuple[RuleOutcome, ...]:
    merged: dict[str, RuleOutcome] = {}
    for o in outcomes:
        prev = merged.get(o.group)
        if prev is None:
            merged[o.group] = o
        else:
            merged[o.group] = RuleOutcome(
                o.group,
                tuple(dict.fromkeys([*prev.subjects, *o.subjects])),
                prev.findings + o.findings,
                prev.skipped + o.skipped,
                prev.notes + o.notes,
            )
    return tuple(merged.values())


def _ranker(graph: FleetGraph) -> Callable[[str], tuple[str, int, str]]:
    def rank(node: str) -> tuple[str, int, str]:
        try:
            return graph.sort_key(node)
        except KeyError:
            return ("", 0, node)

    return rank


def failed_load(
    exc: MigrateError,
    manifest: Manifest | None,
    services: Sequence[Service],
    root: str,
    *,
    graph_stage: bool,
    since: str | None = None,
    env: str | None = None,
    plan_file: str | None = None,
) -> CheckResult:
    """The result when the workspace does not load: one finding, and exit code 2."""
    f = load_failure(exc, manifest, services, root, graph_stage=graph_stage)
    return CheckResult(
        findings=(f,),
        outcomes=(RuleOutcome("graph", ("graph",), (f,)),),
        root=root,
        load_failed=True,
        services=len(services) if services else (len(manifest.services) if manifest else 0),
        revisions=sum(len(s.revisions) for s in services),
        env=env,
        since=since,
        plan_file=plan_file,
    )


def refuse_roundtrip_in_env(env: EnvSpec, manifest_path: str) -> None:
    """``check --roundtrip --env E`` runs on E's own databases: only an env the manifest
    declares throw-away (``scratch = true``) may be used so; anything else is refused (exit 2)."""
    if env.scratch:
        return
    why = "it is protected" if env.protected else "the manifest does not declare it throw-away (scratch = true)"
    raise MigrateError(
        f"--roundtrip --env {env.name} would upgrade, downgrade and take to base the databases of env "
        f"'{env.name}', and {why}; nothing was touched",
        "round-trip on scratch databases instead: add --scratch-url SERVER_URL (throw-away databases "
        "created and dropped on that server), or drop --env (temporary SQLite files)"
        + ("" if env.protected else f"; or set `scratch = true` under [envs.{env.name}] in {manifest_path}"),
    )
