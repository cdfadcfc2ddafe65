"""Cut-overs inside a unit of revisions: the copies whose ``before`` revision is about to run
are verified again with writes to their source table blocked (``copy.cutover``), and the
journal follows each one: ``pending`` (copied; the source is the truth, a revert only deletes
the copied rows), ``cutting`` (the ``before`` revision may have run: a revert carries rows
back), ``done``."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from orchestrator.core.model import CopySpec
from orchestrator.events import Event, Notice
from orchestrator.runtime.engines import engine_for
from orchestrator.runtime.journal import Journal

if TYPE_CHECKING:
    from orchestrator.copy import CopyCheckpoint
    from orchestrator.copy.capture import Capture
    from orchestrator.copy.cutover import FollowWatch, Handoff
    from orchestrator.copy.schema import CopyPlan


def reflect_source_gone(spec: CopySpec, source: sa.Engine) -> bool:
    from orchestrator.copy.schema import reflect_table

    return reflect_table(source, spec.table) is None


Emit = Callable[[Event], None]


@dataclass
class _Open:
    spec: CopySpec
    checkpoint: CopyCheckpoint
    began: float
    how: str
    blocker: sa.Connection | None  # a connection of its own to the source, or None: the unit's
    verified: bool = False  # past the verification: the revision's own statements may have run
    handoff: Handoff | None = None  # MariaDB, same database: the block passes to the revision
    capture: Capture | None = None  # a follow-mode copy's: removed once the revision committed
    checked: str = "source verified again in full with writes blocked"  # for the output


@dataclass
class Cutovers:
    """The cut-overs of one unit of revisions of ``service``: ``by_revision`` maps a revision
    id to the copies it is the first ``before`` of."""

    journal: Journal
    run_id: str
    service: str
    urls: dict[str, str]
    by_revision: dict[str, tuple[CopySpec, ...]]
    emit: Emit
    _open: dict[str, list[_Open]] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)
    _blockers: list[sa.Connection] = field(default_factory=list)
    _watches: dict[str, FollowWatch] = field(default_factory=dict)  # copy name: what it saw before the block
    _remove: list[Capture] = field(default_factory=list)
    transactional: bool = True

    def prepare(self) -> None:
        """Before the unit's first revision: each follow-mode copy to cut over in this unit
        catches up with its log and is verified in full while writes go on (``watch_follow``),
        outside any revision's transaction."""
        from orchestrator.copy.cutover import catch_up, cutover_plan, watch_follow

        for specs in self.by_revision.values():
            for spec in specs:
                checkpoint = self._pending(spec)
                if checkpoint is None or spec.mode != "follow":
                    continue
                with engine_for(self.urls[spec.source]) as source, engine_for(self.urls[spec.target]) as target:
                    if reflect_source_gone(spec, source):
                        continue
                    plan = cutover_plan(spec, source, target)
                    self._watches[spec.name] = watch_follow(plan, source, target, checkpoint.preexisting)
                    catch_up(
                        plan, source, target, checkpoint.preexisting, self._watches[spec.name], spec.cutover_max_block
                    )

    def _pending(self, spec: CopySpec) -> CopyCheckpoint | None:
        """The checkpoint of a copy that has yet to cut over, or None."""
        from orchestrator.copy import CopyCheckpoint

        record = self.journal.copy_record(spec.name)
        if record is None or record[0] != "copied":
            return None
        checkpoint = CopyCheckpoint.from_json(record[1])
        if checkpoint.cutover in ("done", None):
            return None  # cut over already, or recorded before cut-overs existed
        return checkpoint

    def start(self, revision: str, conn: sa.Connection) -> None:
        """Inside ``revision``'s transaction on ``conn``, before its migration runs."""
        from orchestrator.copy.cutover import cutover_plan

        for spec in self.by_revision.get(revision, ()):
            checkpoint = self._pending(spec)
            if checkpoint is None:
                continue
            with engine_for(self.urls[spec.source]) as source, engine_for(self.urls[spec.target]) as target:
                if checkpoint.cutover == "cutting" and reflect_source_gone(spec, source):
                    # A run stopped in this cut-over after a revision that is not
                    # transactional (MariaDB) dropped the table under the block: the copy was
                    # verified then, and no write could follow. Nothing is left to compare.
                    continue
                # "cutting" otherwise: a run stopped in this cut-over before the revision
                # committed; writes may have come since, so it is verified again.
                plan = cutover_plan(spec, source, target)
                own = self.service in (spec.source, spec.target) and conn.dialect.name == "sqlite"
                if spec.mode == "follow" and not own:
                    # (the revision's transaction holds a SQLite database's write lock: the
                    # log is drained under the block, on that transaction, instead)
                    self._catch_up(plan, source, target, checkpoint)
            self._cut_over(revision, conn, plan, checkpoint)

    def _catch_up(self, plan: CopyPlan, source: sa.Engine, target: sa.Engine, checkpoint: CopyCheckpoint) -> None:
        from orchestrator.copy.cutover import catch_up, watch_follow

        spec = plan.spec
        watch = self._watches.get(spec.name)
        if watch is None:
            watch = self._watches[spec.name] = watch_follow(plan, source, target, checkpoint.preexisting)
        catch_up(plan, source, target, checkpoint.preexisting, watch, spec.cutover_max_block)

    def _cut_over(self, revision: str, conn: sa.Connection, plan: CopyPlan, checkpoint: CopyCheckpoint) -> None:
        from orchestrator.copy import CopyCheckpoint
        from orchestrator.copy.capture import Capture
        from orchestrator.copy.cutover import (
            CopyCutoverError,
            Handoff,
            block_writes,
            connection_id,
            drain_blocked,
            hands_over,
            release,
            verify_blocked,
        )
        from orchestrator.copy.revert import delete_copied

        spec = plan.spec
        self.journal.set_copy_record(spec.name, self.run_id, "copied", checkpoint.with_cutover("cutting").to_json())
        blocker = None
        on = conn
        handed = hands_over(conn)
        if spec.source != self.service or handed:  # see copy.cutover: a connection of its own
            source = self._stack.enter_context(engine_for(self.urls[spec.source]))
            blocker = self._stack.enter_context(source.connect())
            self._blockers.append(blocker)
            blocker.begin()
            on = blocker
        follow = spec.mode == "follow"
        capture = None
        if follow:
            with engine_for(self.urls[spec.source]) as source:
                capture = Capture(plan, source)
        began = time.monotonic()
        how = block_writes(on, spec.table, capture.log_table if capture is not None else None)
        opened = _Open(spec, checkpoint, began, how, blocker, capture=capture)
        self._open.setdefault(revision, []).append(opened)
        with engine_for(self.urls[spec.source]) as source, engine_for(self.urls[spec.target]) as target:
            try:
                if follow:
                    watch = self._watches.pop(spec.name)
                    drained = drain_blocked(plan, on, source, target, checkpoint.preexisting, watch)
                    opened.checked = (
                        f"the last {drained.entries} logged change(s) replayed and the {drained.compared} row(s) "
                        "changed since the full verification compared, with writes blocked"
                    )
                else:
                    verify_blocked(plan, on, source, target, checkpoint.preexisting, how)
            except CopyCutoverError:
                # Before cut-over the source is the truth: the stale copy goes, and the
                # copy is planned again (the next apply copies afresh). A capture goes once
                # the revision's transaction, which holds the block, has ended (``close``).
                delete_copied(plan, target, checkpoint.preexisting, None)
                fresh = CopyCheckpoint(None, 0, checkpoint.preexisting, 0)
                self.journal.set_copy_record(spec.name, self.run_id, "reverted", fresh.to_json())
                self._open[revision].remove(opened)
                if capture is not None:
                    self._remove.append(capture)
                if blocker is not None:
                    blocker.rollback()
                    release(blocker)
                raise
        opened.verified = True
        if handed and spec.source == self.service:
            opened.handoff = Handoff(on, connection_id(conn), spec.table, spec.cutover_max_block)

    def done(self, revision: str, conn: sa.Connection) -> None:
        """``revision`` committed: the block ends; its copies have cut over."""
        from orchestrator.copy.cutover import release

        opened = self._open.pop(revision, [])
        for o in opened:
            if o.handoff is not None:
                o.handoff.stop()
            if o.blocker is not None:
                o.blocker.commit()
                release(o.blocker)
            ended = o.handoff.handed_over if o.handoff is not None else None
            blocked = (ended or time.monotonic()) - o.began
            if o.capture is not None:
                # the revision has run: nothing is left to follow. Removed after the unit: the
                # next revision's transaction may hold a SQLite database's write lock now
                self._remove.append(o.capture)
            done = o.checkpoint.with_cutover("done", blocked)
            self.journal.set_copy_record(o.spec.name, self.run_id, "copied", done.to_json())
            self.emit(
                Notice(
                    self.run_id,
                    f"copy:{o.spec.name} cut over before {self.service}@{revision[:12]}: {o.checked}; "
                    f"writers were blocked for {blocked:.3f} s ({o.how}; readers went on)",
                )
            )

    def failed(self) -> None:
        """The unit failed. A cut-over whose revision was rolled back (transactional DDL, or
        the failure came before the revision's own statements) is pending again; otherwise it
        stays ``cutting``, and a revert carries the rows back."""
        from orchestrator.copy.cutover import release

        for opened in self._open.values():
            for o in opened:
                if o.handoff is not None:
                    with suppress(sa.exc.DBAPIError):
                        o.handoff.stop()
                    if o.handoff.refused:
                        self.emit(
                            Notice(
                                self.run_id,
                                f"copy:{o.spec.name}: the cut-over stopped `{o.handoff.refused}`: on MariaDB the "
                                f"revision after a copy must drop (or rename) {o.spec.table} before any other "
                                "statement that waits for it, or writers queued behind the cut-over would get in "
                                "first; nothing was dropped",
                            )
                        )
                if o.blocker is not None:
                    with suppress(sa.exc.DBAPIError):
                        o.blocker.rollback()
                        release(o.blocker)
                if self.transactional or not o.verified:
                    pending = o.checkpoint.with_cutover("pending")
                    self.journal.set_copy_record(o.spec.name, self.run_id, "copied", pending.to_json())
        self._open.clear()

    def close(self) -> None:
        """Return the blockers' connections to their pools with no block left on them."""
        from orchestrator.copy.cutover import release

        for blocker in self._blockers:
            with suppress(sa.exc.DBAPIError):
                release(blocker)
        self._stack.close()
        for capture in self._remove:  # cut over, or refused: no block holds by now
            capture.remove()
        self._remove.clear()
