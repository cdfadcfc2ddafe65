"""``migrate stamp``: record a service's revision without running a migration."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchestrator.core.graph import FleetGraph
from orchestrator.core.model import NodeId
from orchestrator.errors import EXIT_OK, EXIT_STEP_FAILED, MigrateError
from orchestrator.project import Project, observe
from orchestrator.run.planfiles import check_protected
from orchestrator.run.results import StampResult
from orchestrator.run.session import Session


def stamp(project: Project, env: str | None, ref: str, confirmed: bool = False, wait: float = 0.0) -> StampResult:
    """Record that a service's database is at ``service@rev`` (or ``service@base``: an empty
    version table) without running any migration: the repair after a revision was finished
    or undone by hand. Locked and journaled like a run of one step."""
    name = project.env(env)
    service, target = _stamp_target(project.graph, ref)
    check_protected(project, name, confirmed, "stamp")
    with Session(project, name, wait) as session:
        session.lock_services([service])
        before = observe(project, name, [service]).as_dict().get(service, ())
        if before == (() if target == "base" else (target,)):
            shown = _shown_heads(before)
            return StampResult(
                name, service, target, before, before, EXIT_OK, "nothing_to_do", f"{service} is already at {shown}."
            )
        return _run_stamp(project, session, service, target, before)


def _stamp_target(graph: FleetGraph, ref: str) -> tuple[str, str]:
    given = NodeId.parse(ref)
    if given.revision == "base" and given.service in graph.services:
        return given.service, "base"
    node = graph.resolve(ref, where="stamp")
    if node in graph.copies:
        raise MigrateError(
            f"stamp: '{ref}' is a copy step, which has no version row", "give service@revision or service@base"
        )
    resolved = NodeId.parse(node)
    return resolved.service, resolved.revision


def _shown_heads(heads: Sequence[str]) -> str:
    return ", ".join(heads) or "base"


def _run_stamp(project: Project, session: Session, service: str, target: str, before: tuple[str, ...]) -> StampResult:
    import time

    from orchestrator.run.units import database_error
    from orchestrator.runtime.journal import now_iso as journal_now

    assert session.journal is not None
    journal, run_id, env = session.journal, session.run_id, session.env
    node = f"{service}@{target}"
    row = {"seq": 1, "node": node, "kind": "stamp", "service": service, "revision": None, "checksum": None}
    if target != "base":
        row["revision"] = target
    journal.start_run(run_id, "stamp", None, [row], resumes_run=session.resumed[-1] if session.resumed else None)
    journal.step_update(run_id, 1, status="running", started=journal_now())
    t0 = time.perf_counter()
    try:
        after = _stamp_database(project, env, service, target)
    except Exception as exc:
        error = exc.message if isinstance(exc, MigrateError) else database_error(exc)
        message = f"stamp {node} failed: {error.rstrip().rstrip('.')}. {service} is at {_shown_heads(before)}."
        journal.step_update(run_id, 1, status="failed", finished=journal_now(), error=error)
        journal.finish_run(run_id, "failed", message)
        return StampResult(env, service, target, before, before, EXIT_STEP_FAILED, "failed", message, run_id)
    moved = json.dumps({"before": list(before), "after": list(after)})
    seconds = time.perf_counter() - t0
    journal.step_update(run_id, 1, status="applied", finished=journal_now(), seconds=seconds, checkpoint=moved)
    journal.finish_run(run_id, "succeeded")
    message = (
        f"Stamped {service} on env {env}: {_shown_heads(before)} -> {_shown_heads(after)} "
        f"(run {run_id}); no migration ran."
    )
    return StampResult(env, service, target, before, after, EXIT_OK, "succeeded", message, run_id)


def _stamp_database(project: Project, env: str, service: str, target: str) -> tuple[str, ...]:
    """Stamp through Alembic, then read the version table back through a connection of our own."""
    from orchestrator.runtime.alembic_runner import stamp_revision
    from orchestrator.runtime.engines import engine_for

    url = project.url(env, service)
    spec = project.graph.services[service].spec
    with engine_for(url) as engine, engine.connect() as conn:
        stamp_revision(spec, url, conn, target)
        if conn.in_transaction():
            conn.commit()
    after = observe(project, env, [service]).as_dict().get(service, ())
    if (target == "base" and after) or (target != "base" and target not in after):
        raise MigrateError(f"the version table of {service} reads {_shown_heads(after)} after the stamp")
    return after
