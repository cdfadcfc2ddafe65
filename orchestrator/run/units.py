"""Run one unit of work (a few consecutive revisions of one service, or one copy) and
journal every step of it before and after. Called in-process, or in a worker process
with ``--jobs N`` (Alembic's ``context``/``op`` are process-wide, so never in threads)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from orchestrator.core.model import CopySpec, ServiceSpec
from orchestrator.core.redact import redact_text
from orchestrator.errors import MigrateError
from orchestrator.events import CopyProgress, Event, StepFailed, StepFinished, StepStarted
from orchestrator.run.cutover import Cutovers
from orchestrator.runtime.alembic_runner import StatementLog, run_revisions
from orchestrator.runtime.engines import create_engine, dialect_of, engine_for
from orchestrator.runtime.journal import Journal, now_iso
from orchestrator.runtime.readback import StepReadback

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class Item:
    seq: int
    node: str
    revision: str  # "" for copies


@dataclass(frozen=True)
class Unit:
    kind: str  # upgrade | downgrade | copy | revert_copy
    items: tuple[Item, ...]
    service: str | None = None
    copy: CopySpec | None = None
    # revision id -> the copies it is the first `before` of: they cut over just before it runs
    cutovers: tuple[tuple[str, tuple[CopySpec, ...]], ...] = ()
    # Where the step rows live: for compensation these are the original apply rows.
    done_status: str = "applied"
    fail_status: str = "failed"


@dataclass(frozen=True)
class UnitContext:
    run_id: str
    env: str
    state_url: str
    specs: dict[str, ServiceSpec]
    urls: dict[str, str]


@dataclass
class UnitResult:
    done: list[tuple[int, str, float]] = field(default_factory=list)  # (seq, node, completed_at)
    failed: tuple[int, str, str, tuple[str, ...]] | None = None  # (seq, node, error, statements)


def database_error(exc: BaseException) -> str:
    """The database's own error message, one paragraph, redacted."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else f"{type(exc).__name__}: {exc}"
    if orig is None and not isinstance(exc, sa.exc.SQLAlchemyError):
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if "/versions/" in f.filename]
        if frames:
            f = frames[-1]
            text += f" (at {f.filename}:{f.lineno})"
    return redact_text(" ".join(text.split()))


def run_unit(unit: Unit, ctx: UnitContext, journal: Journal, emit: Emit) -> UnitResult:
    if unit.kind in ("upgrade", "downgrade"):
        return _run_revisions(unit, ctx, journal, emit)
    return _run_copy(unit, ctx, journal, emit)


def _run_revisions(unit: Unit, ctx: UnitContext, journal: Journal, emit: Emit) -> UnitResult:
    assert unit.service is not None
    spec = ctx.specs[unit.service]
    url = ctx.urls[unit.service]
    by_rev = {item.revision: item for item in unit.items}
    started: dict[str, float] = {}
    result = UnitResult()
    upgrade = unit.kind == "upgrade"

    finished: list[tuple[int, dict[str, Any], StepFinished]] = []  # committed, not yet journaled
    readback: StepReadback | None = None

    def flush(also: list[tuple[int, dict[str, Any]]] | None = None) -> None:
        updates = [(seq, values) for seq, values, _ in finished] + (also or [])
        if updates:
            journal.step_updates(ctx.run_id, updates)
        for _, _, event in finished:
            emit(event)
        finished.clear()

    mysql = dialect_of(url) in ("mysql", "mariadb")
    cutovers = Cutovers(journal, ctx.run_id, spec.name, ctx.urls, dict(unit.cutovers), emit, transactional=not mysql)
    held: list[sa.Connection] = []  # the unit's connection, once open

    def hook(rev: str, event: str) -> None:
        item = by_rev[rev]
        if event == "start":
            # One journal transaction: the previous revision committed, this one starts.
            started[rev] = time.perf_counter()
            flush([(item.seq, {"status": "running", "started": now_iso()})])
            emit(StepStarted(ctx.run_id, item.node, unit.kind))
            if upgrade and unit.cutovers:
                cutovers.start(rev, held[0])
        else:
            seconds = time.perf_counter() - started[rev]
            assert readback is not None
            readback.verify(rev, item.node)  # committed, and in the database given to it
            if upgrade and unit.cutovers:
                cutovers.done(rev, held[0])
            values = {"status": unit.done_status, "finished": now_iso(), "seconds": seconds}
            finished.append((item.seq, values, StepFinished(ctx.run_id, item.node, unit.kind, seconds)))
            result.done.append((item.seq, item.node, time.time()))

    def journal_statements(rev: str, statements: list[str]) -> None:
        # No transactional DDL: what a revision sent is on record before it runs, so a
        # crash half-way through leaves in the journal what may remain.
        journal.step_update(ctx.run_id, by_rev[rev].seq, statements="\n".join(statements))

    log = StatementLog([], on_statement=journal_statements) if mysql else None
    try:
        with engine_for(url) as engine, StepReadback(spec, url, engine, upgrade) as readback, engine.connect() as conn:
            # On SQLite each revision's transaction takes the write lock when it begins: begun
            # as a reader, it could not become a writer while an application writes meanwhile.
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            held.append(conn)
            try:
                if upgrade and unit.cutovers:
                    cutovers.prepare()
                run_revisions(spec, url, conn, [i.revision for i in unit.items], upgrade, hook, log)
            except BaseException:
                cutovers.failed()
                raise
        flush()
    except Exception as exc:
        flush()
        done = {seq for seq, _, _ in result.done}
        failing = next((i for i in unit.items if i.seq not in done), unit.items[-1])
        error = redact_text(exc.message) if isinstance(exc, MigrateError) else database_error(exc)
        statements = tuple(log.statements) if log is not None and log.current == failing.revision else ()
        journal.step_update(
            ctx.run_id,
            failing.seq,
            status=unit.fail_status,
            finished=now_iso(),
            error=error,
            statements="\n".join(statements) if statements else None,
        )
        result.failed = (failing.seq, failing.node, error, statements)
        emit(StepFailed(ctx.run_id, failing.node, unit.kind, error, statements))
    finally:
        cutovers.close()
    return result


class JournalCheckpointStore:
    """Keeps a copy's checkpoint in the journal: in the env's copy record (``migrate_copies``),
    which is what a revert reads, and, for history, in the step row of the attempt."""

    def __init__(self, journal: Journal, run_id: str, seq: int, name: str, for_revert: bool):
        self.journal = journal
        self.run_id = run_id
        self.seq = seq
        self.name = name
        self.for_revert = for_revert
        self._own: Any = None

    def load(self) -> Any:
        """For a copy: where an earlier attempt stands (None: start afresh). For a revert: what
        the copy wrote, whichever run wrote it and whatever its step rows say (None: nothing)."""
        from orchestrator.copy import CopyCheckpoint

        if self._own is not None:
            return self._own
        record = self.journal.copy_record(self.name)
        if record is None:
            return None
        state, text = record
        checkpoint = CopyCheckpoint.from_json(text)
        if state == "reverted":
            return None  # nothing of the copy is left in the target
        assert self.for_revert or state != "reverting", "finish the revert first (see revert_unfinished)"
        return checkpoint

    def revert_unfinished(self) -> bool:
        """A revert of this copy stopped half-way: some rows may be back in the source and
        gone from the target, others not. Only finishing it makes either side whole again."""
        record = self.journal.copy_record(self.name)
        return record is not None and record[0] == "reverting"

    def save(self, checkpoint: Any) -> None:
        """After each committed batch of a copy; at the end of a revert (all undone)."""
        self._own = checkpoint
        if self.for_revert:
            self.journal.set_copy_record(self.name, self.run_id, "reverted", checkpoint.to_json())
            return
        self.journal.set_copy_record(self.name, self.run_id, "copying", checkpoint.to_json())
        self.journal.step_checkpoint(self.run_id, self.seq, checkpoint.to_json(), checkpoint.rows_copied)

    def begin_revert(self) -> None:
        """Mark the copy as being reverted (nothing to mark when it never wrote anything)."""
        if self.journal.copy_record(self.name) is not None:
            self.journal.set_copy_record(self.name, self.run_id, "reverting")

    def finish_copy(self, awaits_cutover: bool) -> None:
        """The copy completed and verified: its record says so, checkpoint kept for the revert.
        A copy with a `before` revision cuts over just before it (``run.cutover``); until then
        the source is the truth. Without one, its own verification was its cut-over."""
        checkpoint = self.load()
        if checkpoint is None:
            return
        checkpoint = checkpoint.with_cutover("pending" if awaits_cutover else "done")
        self._own = checkpoint
        self.journal.set_copy_record(self.name, self.run_id, "copied", checkpoint.to_json())
        self.journal.step_checkpoint(self.run_id, self.seq, checkpoint.to_json(), checkpoint.rows_copied)


def _run_copy(unit: Unit, ctx: UnitContext, journal: Journal, emit: Emit) -> UnitResult:
    import orchestrator.copy as copying

    assert unit.copy is not None
    spec = unit.copy
    item = unit.items[0]
    result = UnitResult()
    revert = unit.kind == "revert_copy"
    store = JournalCheckpointStore(journal, ctx.run_id, item.seq, spec.name, for_revert=revert)
    source = create_engine(ctx.urls[spec.source])
    target = create_engine(ctx.urls[spec.target])
    t0 = time.perf_counter()
    journal.step_update(ctx.run_id, item.seq, status="running", started=now_iso())
    emit(StepStarted(ctx.run_id, item.node, unit.kind))

    def progress(rows: int, total: int | None) -> None:
        emit(CopyProgress(ctx.run_id, item.node, rows, total))

    try:
        if revert:
            store.begin_revert()
            rr = copying.revert_copy(spec, source, target, store, on_progress=progress)
            updated = (
                f", {rr.rows_updated_in_source} updated there to {spec.target}'s newer values"
                if rr.rows_updated_in_source
                else ""
            )
            detail = (
                f"{rr.rows_restored_to_source} rows restored to {spec.source}{updated}, "
                f"{rr.rows_deleted_from_target} removed from {spec.target}"
            )
            values: dict[str, Any] = {"rows": rr.rows_deleted_from_target}
        else:
            detail = ""
            if store.revert_unfinished():
                # Copying now would compare the target with a half-restored source, and a
                # failed copy deletes what it finds in the target: finish the revert first.
                finish = JournalCheckpointStore(journal, ctx.run_id, item.seq, spec.name, for_revert=True)
                rr = copying.revert_copy(spec, source, target, finish, on_progress=progress)
                detail = f"finished an interrupted revert first ({rr.rows_restored_to_source} rows restored); "
            copying.preflight(spec, source, target)
            cr = copying.copy_table(spec, source, target, store, on_progress=progress)
            detail += f"{cr.rows_copied} rows copied ({cr.rows_per_second:,.0f} rows/s, {cr.method}), "
            if spec.mode == "follow" and not spec.before:
                detail += _cut_over_alone(spec, source, target, store)
            elif spec.mode == "follow":
                detail += "following: capture stays on until the cut-over before " + ", ".join(spec.before)
            else:
                detail += "verified"
            store.finish_copy(awaits_cutover=bool(spec.before))
            values = {"rows": cr.rows_copied, "rows_per_second": cr.rows_per_second}
        seconds = time.perf_counter() - t0
        journal.step_update(
            ctx.run_id, item.seq, status=unit.done_status, finished=now_iso(), seconds=seconds, **values
        )
        result.done.append((item.seq, item.node, time.time()))
        emit(StepFinished(ctx.run_id, item.node, unit.kind, seconds, detail))
    except Exception as exc:
        error = getattr(exc, "message", None) or database_error(exc)
        error = redact_text(str(error))
        journal.step_update(ctx.run_id, item.seq, status=unit.fail_status, finished=now_iso(), error=error)
        result.failed = (item.seq, item.node, error, ())
        emit(StepFailed(ctx.run_id, item.node, unit.kind, error))
    finally:
        source.dispose()
        target.dispose()
    return result


def _cut_over_alone(spec: CopySpec, source: sa.Engine, target: sa.Engine, store: JournalCheckpointStore) -> str:
    """A follow-mode copy no revision waits for cuts over at the end of its own step."""
    from orchestrator.copy import CopyCheckpoint
    from orchestrator.copy.cutover import CopyCutoverError, cut_over_alone, cutover_plan

    checkpoint = store.load()
    assert checkpoint is not None  # the copy has just saved it
    try:
        done = cut_over_alone(cutover_plan(spec, source, target), source, target, checkpoint.preexisting)
    except CopyCutoverError:
        store.save(CopyCheckpoint(None, 0, checkpoint.preexisting, 0))  # its rows and capture are gone
        raise
    return (
        f"cut over: the last {done.drained.entries} logged change(s) replayed with writes blocked for "
        f"{done.blocked:.3f} s ({done.how}), capture removed"
    )


# -- worker-process entry point -----------------------------------------------------------
_worker_journal: dict[str, Journal] = {}
_worker_events: list[Any] = []  # the queue to the parent's event pump


def worker_init(events: Any, parent_pid: int) -> None:
    """First thing in a worker process: die with the parent (see lifeline), and forget the
    connections inherited from it (a forked child must never use, nor close, its sockets)."""
    from orchestrator import lifeline
    from orchestrator.runtime import engines

    lifeline.bind_to_parent(parent_pid)
    for engine in engines._shared.values():
        engine.dispose(close=False)
    engines._shared.clear()
    _worker_journal.clear()
    _worker_events[:] = [events]


def run_unit_in_worker(unit: Unit, ctx: UnitContext) -> UnitResult:
    from orchestrator.lifeline import exit_if_orphaned

    journal = _worker_journal.get(ctx.state_url)
    if journal is None:
        journal = Journal(ctx.state_url, ctx.env, create=False)
        _worker_journal[ctx.state_url] = journal
    events = _worker_events[0]

    def emit(event: Event) -> None:
        exit_if_orphaned()  # also once per copied batch: progress follows each one
        events.put(event)

    return run_unit(unit, ctx, journal, emit)
