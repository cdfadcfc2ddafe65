"""What an interrupted run left behind, and what continues it: the text ``migrate status``
shows for a run that stopped half-way."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from orchestrator.errors import MigrateError
from orchestrator.project import Project


def explain_interrupted(project: Project, env: str, run: dict[str, Any]) -> None:
    """Add to an interrupted run's summary what state it left and what continues it
    (``message`` and ``continue_with``); each step it stopped in gets ``may_remain``: the step
    ran on a database without transactional DDL, so part of its statements may have stayed."""
    from orchestrator.runtime.engines import dialect_of

    for step in run.get("stopped_in", []):
        try:
            url = project.url(env, step["service"]) if step["service"] else None
        except MigrateError:
            url = None
        step["may_remain"] = (
            url is not None and step["kind"] in ("upgrade", "downgrade") and dialect_of(url) in ("mysql", "mariadb")
        )
    if run["kind"] == "rollback":
        text, command = _rollback_advice(project, env, run)
    elif run.get("failed"):
        command = f"migrate rollback --env {env} --run {run['id']}"
        text = (
            f"it stopped while undoing its steps after {', '.join(run['failed'])} failed"
            + _listed("; undone so far", run.get("undone", []))
            + _listed("; still applied", [*run.get("done", []), *(s["node"] for s in run.get("stopped_in", []))])
            + f". `{command}` finishes the undo; `migrate apply --env {env}` would go forward instead."
        )
    else:
        command = f"migrate apply --env {env}"
        text = f"`{command}` continues it from the databases' real state."
    partial = [s for s in run.get("stopped_in", []) if s["may_remain"]]
    if partial:
        if run["kind"] == "apply" and not run.get("failed"):
            text = f"`{command}` continues it from the databases' real state, after the repair below."
        undoing = run["kind"] == "rollback" or bool(run.get("failed"))
        text += "".join(" " + _partial_advice(project, env, step, undoing) for step in partial)
    run["message"] = f"{run['kind']} run {run['id']} was interrupted: {text}"
    run["continue_with"] = command


def nothing_left(run: dict[str, Any], pending: Collection[str]) -> bool:
    """Whether an interrupted apply run has left nothing for ``apply`` to continue: a later run
    took it over (it is ``interrupted``, no longer ``running``) and every step it had not
    finished is applied in the databases now. A kill between a step's commit and its journal
    write leaves such a run; the apply that takes over then has nothing to do and records no
    run of its own, so the journal's newest word is still the interrupted run."""
    if run["kind"] != "apply" or run["outcome"] != "interrupted" or run.get("failed"):
        return False
    return not any(node in pending for node in run.get("left", []))


def _listed(label: str, nodes: Sequence[str]) -> str:
    return f"{label}: {', '.join(nodes)}" if nodes else ""


def _rollback_advice(project: Project, env: str, run: dict[str, Any]) -> tuple[str, str]:
    if run.get("undoes_run"):
        command = f"migrate rollback --env {env} --run {run['undoes_run']}"
        what = f"undoing run {run['undoes_run']}"
    else:
        command = f"migrate rollback --env {env} --to {_rollback_target(project, run)}"
        what = "taking a service back (--to)"
    text = (
        f"it was {what}"
        + _listed("; undone so far", run.get("done", []))
        + _listed("; still to undo", run.get("left", []))
        + f". `{command}` continues it (not `migrate apply`, which would re-apply what it undid)."
    )
    return text, command


def _rollback_target(project: Project, run: dict[str, Any]) -> str:
    """The ``--to`` of an interrupted rollback: the revision below the last one it was to undo
    (everything that required the service's revisions is undone before them)."""
    nodes = [n for n in [*run.get("done", []), *run.get("left", [])] if n in project.graph.revisions]
    if not nodes:
        return "SERVICE@REV"
    last = project.graph.revisions[nodes[-1]]
    downs = last.down_revisions
    return f"{last.service}@{downs[0] if len(downs) == 1 else 'base' if not downs else 'REV'}"


def _partial_advice(project: Project, env: str, step: dict[str, Any], undoing: bool) -> str:
    """A step that stopped on a database without transactional DDL; ``undoing``: it was being
    undone (a rollback run, or an apply run undoing its steps after a failure)."""
    node, service = step["node"], step["service"]
    upgrade = not undoing
    listed = " | ".join(step["statements"]) if step["statements"] else "none was journaled; look at the database"
    if upgrade:
        stamp_to = node
    else:
        revision = project.graph.revisions.get(node)
        downs = revision.down_revisions if revision else ()
        stamp_to = f"{service}@{downs[0] if len(downs) == 1 else 'base' if not downs else 'REV'}"
    retry = "migrate apply" if upgrade else "migrate rollback"
    return (
        f"Step {node} ({'upgrade' if upgrade else 'downgrade'}) was running on {service}'s database, which has "
        f"no transactional DDL: it may have left part of its statements behind ({listed}). `{retry}` will "
        f"retry it and may fail on what remains. Repair: finish or undo those statements by hand; if you finished the "
        f"{'revision' if upgrade else 'downgrade'}, record it with `migrate stamp --env {env} {stamp_to}` "
        "before continuing."
    )


__all__ = ["explain_interrupted", "nothing_left"]
