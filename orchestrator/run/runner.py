"""Run a plan inside a session: journal it, execute its units (one by one, or in parallel
batches from ``schedule`` on a ``UnitRunner``), compensate a failure, build the result."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from orchestrator.core.manifest import state_url
from orchestrator.core.model import CopySpec, CopyStep, DowngradeStep, Plan, RevertCopyStep, Step, UpgradeStep
from orchestrator.errors import EXIT_OK, EXIT_STEP_FAILED, MigrateError
from orchestrator.events import Event, Notice, Observer, RunFinished, RunStarted
from orchestrator.project import Project, observe
from orchestrator.run import compensate as compensating
from orchestrator.run.compensate import repair_steps
from orchestrator.run.results import RunResult, StepOutcome, noop_notes
from orchestrator.run.schedule import Dispatch, Schedule, group, service_of
from orchestrator.run.session import Session
from orchestrator.run.units import Item, Unit, UnitContext, UnitResult, run_unit
from orchestrator.run.workers import LocalProcessPool, UnitRunner
from orchestrator.runtime.journal import Journal


def _step_row(seq: int, step: Step) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seq": seq,
        "node": step.id,
        "kind": step.kind,
        "service": None,
        "revision": None,
        "checksum": None,
    }
    if isinstance(step, UpgradeStep | DowngradeStep):
        row.update(service=step.service, revision=step.revision, checksum=step.checksum or None)
    return row


def _services_of(project: Project, plan: Plan) -> list[str]:
    """The plan's services, and those of the copies cutting over before one of its steps."""
    names = list(plan.services)
    for step in plan.steps:
        if isinstance(step, UpgradeStep):
            for copy in project.graph.copies_before(step.id):
                spec = project.graph.copies[copy]
                names += [n for n in (spec.source, spec.target) if n not in names]
    return names


def _resource(step: Step, project: Project, env: str) -> tuple[str, ...]:
    if isinstance(step, UpgradeStep | DowngradeStep):
        return (project.url(env, step.service),)
    return (project.url(env, step.source), project.url(env, step.target))


class Runner:
    def __init__(
        self,
        project: Project,
        session: Session,
        plan: Plan,
        kind: str,
        observer: Observer,
        jobs: int,
        no_rollback: bool,
        undoes_run: str | None = None,
    ):
        self.project = project
        self.session = session
        assert session.journal is not None
        self.journal: Journal = session.journal
        self.plan = plan
        self.kind = kind
        self.observer = observer
        self.jobs = max(1, jobs)
        self.no_rollback = no_rollback
        self.undoes_run = undoes_run
        self.run_id = session.run_id
        self.env = plan.env
        self.steps = list(plan.steps)
        self.seq_of = {step.id: i + 1 for i, step in enumerate(self.steps)}
        self.completed: list[tuple[float, int, str]] = []  # (completed_at, seq, node)
        # Services whose database had never been migrated: a full compensation leaves them so.
        self.untouched: list[str] = []
        self.ctx = UnitContext(
            run_id=self.run_id,
            env=self.env,
            state_url=state_url(project.manifest, self.env, project.environ),
            specs={name: svc.spec for name, svc in project.graph.services.items()},
            urls={name: project.url(self.env, name) for name in _services_of(project, plan)},
        )

    def emit(self, event: Event) -> None:
        self.observer(event)

    def unit_for(self, steps: list[Step], done_status: str = "applied", fail_status: str = "failed") -> Unit:
        first = steps[0]
        items = tuple(
            Item(self.seq_of[s.id], s.id, s.revision if isinstance(s, UpgradeStep | DowngradeStep) else "")
            for s in steps
        )
        if isinstance(first, UpgradeStep | DowngradeStep):
            cutovers = self.cutovers(steps) if isinstance(first, UpgradeStep) else ()
            return Unit(
                first.kind,
                items,
                service=first.service,
                done_status=done_status,
                fail_status=fail_status,
                cutovers=cutovers,
            )
        assert isinstance(first, CopyStep | RevertCopyStep)
        return Unit(
            first.kind,
            items,
            copy=self.project.graph.copies[first.id],
            done_status=done_status,
            fail_status=fail_status,
        )

    def cutovers(self, steps: list[Step]) -> tuple[tuple[str, tuple[CopySpec, ...]], ...]:
        """For each revision among ``steps``, the copies that cut over just before it: those
        naming it in their ``before`` (the first of those to run cuts over; the others find it done)."""
        graph = self.project.graph
        out = []
        for step in steps:
            assert isinstance(step, UpgradeStep)
            specs = tuple(graph.copies[c] for c in graph.copies_before(step.id))
            if specs:
                out.append((step.revision, specs))
        return tuple(out)

    def _record(self, result: UnitResult) -> None:
        for seq, node, at in result.done:
            self.completed.append((at, seq, node))

    def restore_untouched(self, services: list[str] | None = None) -> None:
        from orchestrator.runtime.state import drop_empty_version_table

        for service in self.untouched if services is None else services:
            if service not in self.ctx.urls:
                continue
            spec = self.project.graph.services[service].spec
            drop_empty_version_table(self.ctx.urls[service], spec.version_table)

    def run(self) -> RunResult:
        self.journal.start_run(
            self.run_id,
            self.kind,
            self.plan.fingerprint,
            [_step_row(i + 1, s) for i, s in enumerate(self.steps)],
            undoes_run=self.undoes_run,
            resumes_run=self.session.resumed[-1] if self.session.resumed else None,
            fresh_services=tuple(self.untouched),
        )
        self.emit(RunStarted(self.run_id, self.env, self.kind, tuple(s.id for s in self.steps)))
        if self.session.took_over is not None:
            t = self.session.took_over
            self.emit(Notice(self.run_id, f"took over the lock of run {t.run_id} ({t.holder}): {t.liveness()}"))
        if self.session.resumed:
            self.emit(
                Notice(
                    self.run_id,
                    f"continuing after interrupted run(s) {', '.join(self.session.resumed)} "
                    "from the databases' real state",
                )
            )
        try:
            failure = self._execute_serial() if self.jobs == 1 else self._execute_parallel()
        except BaseException as exc:
            self.journal.finish_run(self.run_id, "interrupted", f"{type(exc).__name__}: {exc}")
            raise
        if failure is None:
            self.journal.finish_run(self.run_id, "succeeded")
            if self.undoes_run:
                self.journal.mark_undone(self.undoes_run, self.run_id)
                undone = self.journal.run(self.undoes_run) or {}
                self.restore_untouched([s for s in (undone.get("fresh_services") or "").split(",") if s])
            self.emit(RunFinished(self.run_id, "succeeded"))
            verb = "applied" if self.kind == "apply" else "rolled back"
            done = f"{len(self.steps)} step(s) {verb} on env {self.env} (run {self.run_id})."
            return self.result(EXIT_OK, "succeeded", "\n".join([done, *noop_notes(self.plan)]))
        _seq, node, error, statements = failure
        message = f"step {node} failed: {error.rstrip().rstrip('.')}."
        if statements:
            message += (
                f" {service_of(node)}'s database has no transactional DDL; these statements of the failed "
                "revision may have run and may remain: " + " | ".join(statements) + "."
            )
        if self.kind == "rollback":
            return self.needs_attention(message)
        if self.no_rollback:
            self.journal.finish_run(self.run_id, "failed", message)
            self.emit(RunFinished(self.run_id, "failed"))
            return self.result(
                EXIT_STEP_FAILED,
                "failed",
                message + f" Kept the {len(self.completed)} step(s) applied before it (--no-rollback).",
                next_steps=(
                    *(repair_steps(self.env, node) if statements else ()),
                    f"migrate rollback --env {self.env} --run {self.run_id}",
                    f"migrate apply --env {self.env}",
                ),
            )
        return self.compensate(message, node if statements else None)

    def _execute_serial(self) -> tuple[int, str, str, tuple[str, ...]] | None:
        for batch in group(self.steps):
            result = run_unit(self.unit_for(batch), self.ctx, self.journal, self.emit)
            self._record(result)
            if result.failed:
                return result.failed
        return None

    def _execute_parallel(self) -> tuple[int, str, str, tuple[str, ...]] | None:
        graph = self.project.graph
        depends_on = graph.successors if self.kind == "rollback" else graph.predecessors
        resources = {s.id: _resource(s, self.project, self.env) for s in self.steps}
        dispatch = Dispatch(Schedule.build(self.steps, depends_on, resources), self.jobs)
        failure: tuple[int, str, str, tuple[str, ...]] | None = None
        running: dict[Future[UnitResult], tuple[str, ...]] = {}
        with self.unit_runner() as runner:
            while dispatch.remaining or running:
                if failure is None:
                    for batch, res in dispatch.start():
                        running[runner.submit(self.unit_for(batch))] = res
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()
                    dispatch.finish(running.pop(fut), (node for _, node, _ in result.done))
                    self._record(result)
                    if result.failed and failure is None:
                        failure = result.failed
                if failure is not None and not running:
                    break
        self.completed.sort()
        return failure

    def unit_runner(self) -> UnitRunner:
        """Where the units of a parallel run execute (the seam for remote workers)."""
        return LocalProcessPool(self.jobs, self.ctx, self.emit)

    # compensation (see compensate.py)
    def compensate(self, message: str, partial: str | None = None) -> RunResult:
        return compensating.compensate(self, message, partial)

    def needs_attention(self, message: str) -> RunResult:
        return compensating.needs_attention(self, message)

    def _heads_after(self) -> dict[str, list[str]]:
        """Each service's heads once every step of the plan has run (no database read)."""
        heads = {svc: set(h) for svc, h in self.plan.state}
        for step in self.plan.steps:
            if isinstance(step, UpgradeStep | DowngradeStep):
                down = step.down_revision
                downs = set() if down is None else {down} if isinstance(down, str) else set(down)
                current = heads.setdefault(step.service, set())
                if isinstance(step, UpgradeStep):
                    heads[step.service] = (current - downs) | {step.revision}
                else:
                    heads[step.service] = (current - {step.revision}) | downs
        return {svc: sorted(h) for svc, h in heads.items() if svc in self.plan.services}

    def state_report(self) -> dict[str, list[str]]:
        try:
            state = observe(self.project, self.env, list(self.plan.services))
        except MigrateError:
            return {}
        return {s: list(h) for s, h in state.heads}

    def result(self, code: int, outcome: str, message: str, next_steps: tuple[str, ...] = ()) -> RunResult:
        rows = self.journal.run_steps(self.run_id)
        outcomes = tuple(StepOutcome(r["node"], r["kind"], r["status"], r["seconds"], r["error"]) for r in rows)
        if code == EXIT_STEP_FAILED and not next_steps:
            next_steps = ("fix the cause of the failed step, then `migrate apply --env " + self.env + "`",)
        return RunResult(
            self.env,
            self.kind,
            self.plan,
            code,
            outcome,
            message,
            self.run_id,
            outcomes,
            took_over=self.session.took_over_json,
            resumed=self.session.resumed,
            state_after=self.state_report() if code else self._heads_after(),
            next_steps=next_steps,
        )
