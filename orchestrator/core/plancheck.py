"""Check a saved plan's steps against the graph (pure).

A plan file's fingerprint catches accidents, not intent: a file whose copy step was removed,
or moved after the revision that drops the copy's source, can be re-fingerprinted by hand.
Before such a plan runs, every step is checked against the graph and the state the plan was
made for: each prerequisite is applied there or comes earlier in the plan, so nothing the
steps need is left out and every copy comes before its ``before`` revisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import CopyStep, Plan, UpgradeStep
from orchestrator.errors import PlanConflictError

_HINT = "the plan file was edited; make a new one with `migrate plan --out` and review that"


@dataclass(frozen=True)
class StepProblem:
    node: str
    needs: str | None  # the prerequisite that is neither applied nor earlier, if that is the problem
    message: str


def check_plan_steps(graph: FleetGraph, plan: Plan, source: str) -> None:
    """Raise ``PlanConflictError`` (exit 3) naming the first step the graph does not allow."""
    problems = plan_step_problems(graph, plan, source)
    if problems:
        raise PlanConflictError(problems[0].message, _HINT)


def plan_step_problems(graph: FleetGraph, plan: Plan, source: str) -> list[StepProblem]:
    """Every step of ``plan`` that the graph does not allow, in plan order."""
    applied = graph.applied_nodes({s: h for s, h in plan.state})
    completed = set(plan.completed_copies)
    done = applied | {node for node, spec in graph.copies.items() if spec.name in completed}
    in_plan = {s.id for s in plan.steps}
    earlier: set[str] = set()
    problems = []
    for step in plan.steps:
        node = step.id
        if not isinstance(step, UpgradeStep | CopyStep):
            problems.append(StepProblem(node, None, f"{source}: step {node} is a {step.kind} step in an upgrade plan"))
        elif node not in graph.revisions and node not in graph.copies:
            problems.append(StepProblem(node, None, f"{source}: step {node} is not in the graph"))
        elif node in earlier:
            problems.append(StepProblem(node, None, f"{source}: step {node} appears twice"))
        elif node in done:
            problems.append(StepProblem(node, None, f"{source}: step {node} is already applied in env '{plan.env}'"))
        else:
            for need in sorted(graph.predecessors(node)):
                if need in done or need in earlier:
                    continue
                where = "comes later in the plan" if need in in_plan else "is missing from it"
                harm = "drop rows before they are copied" if need in graph.copies else "break the order"
                problems.append(
                    StepProblem(
                        node,
                        need,
                        f"{source}: step {node} needs {need} first, which is not applied in env "
                        f"'{plan.env}' and {where}; running this plan could {harm}",
                    )
                )
        earlier.add(node)
    return problems
