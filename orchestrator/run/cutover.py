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
    from orchestrator.copy.cutover import Handoff

Emit = Callable[[Event], None]


@dataclass
class _Open:
    spec: CopySpec
    checkpoint: object
    began: float
    how: str
    blocker: sa.Connection | None  # a connection of its own to the source, or None: the unit's
    verified: bool = False  # past the verification: the revision's own statements may have run
    handoff: Handoff | None = None  # MariaDB, same database: the block passes to the revision


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
    transactional: bool = True

    def start(self, revision: str, conn: sa.Connection) -> None:
        """Inside ``revision``'s transaction on ``conn``, before its migration runs."""
        from orchestrator.copy import CopyCheckpoint
        from orchestrator.copy.cutover import (
            CopyCutoverError,
            Handoff,
            block_writes,
            connection_id,
            cutover_plan,
            hands_over,
            release,
            verify_blocked,
        )
        from orchestrator.copy.revert import delete_copied
        from orchestrator.copy.schema import reflect_table

        for spec in self.by_revision.get(revision, ()):
            record = self.journal.copy_record(spec.name)
            if record is None or record[0] != "copied":
                continue
            checkpoint = CopyCheckpoint.from_json(record[1])
            if checkpoint.cutover in ("done", None):
                continue  # cut over already, or recorded before cut-overs existed
            with engine_for(self.urls[spec.source]) as source, engine_for(self.urls[spec.target]) as target:
                if checkpoint.cutover == "cutting" and reflect_table(source, spec.table) is None:
                    # A run stopped in this cut-over after a revision that is not
                    # transactional (MariaDB) dropped the table under the block: the copy was
                    # verified then, and no write could follow. Nothing is left to compare.
                    continue
                # "cutting" otherwise: a run stopped in this cut-over before the revision
                # committed; writes may have come since, so it is verified again.
                plan = cutover_plan(spec, source, target)
            self.journal.set_copy_record(spec.name, self.run_id, "copied", checkpoint.with_cutover("cutting").to_json())
            began = time.monotonic()
            blocker = None
            on = conn
            handed = hands_over(conn)
            if spec.source != self.service or handed:  # see copy.cutover: a connection of its own
                source = self._stack.enter_context(engine_for(self.urls[spec.source]))
                blocker = self._stack.enter_context(source.connect())
                self._blockers.append(blocker)
                blocker.begin()
                on = blocker
            how = block_writes(on, spec.table)
            opened = _Open(spec, checkpoint, began, how, blocker)
            self._open.setdefault(revision, []).append(opened)
            with engine_for(self.urls[spec.source]) as source, engine_for(self.urls[spec.target]) as target:
                try:
                    verify_blocked(plan, on, source, target, checkpoint.preexisting, how)
                except CopyCutoverError:
                    # Before cut-over the source is the truth: the stale copy goes, and the
                    # copy is planned again (the next apply copies afresh).
                    delete_copied(plan, target, checkpoint.preexisting, None)
                    fresh = CopyCheckpoint(None, 0, checkpoint.preexisting, 0)
                    self.journal.set_copy_record(spec.name, self.run_id, "reverted", fresh.to_json())
                    self._open[revision].remove(opened)
                    if blocker is not None:
                        blocker.rollback()
                        release(blocker)
                    raise
            opened.verified = True
            if handed and spec.source == self.service:
                opened.handoff = Handoff(on, connection_id(conn), spec.table)

    def done(self, revision: str, conn: sa.Connection) -> None:
        """``revision`` committed: the block ends; its copies have cut over."""
        from orchestrator.copy import CopyCheckpoint
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
            assert isinstance(o.checkpoint, CopyCheckpoint)
            done = o.checkpoint.with_cutover("done", blocked)
            self.journal.set_copy_record(o.spec.name, self.run_id, "copied", done.to_json())
            self.emit(
                Notice(
                    self.run_id,
                    f"copy:{o.spec.name} cut over before {self.service}@{revision[:12]}: source verified "
                    f"again with writes blocked ({o.how}); writers were blocked for {blocked:.3f} s",
                )
            )

    def failed(self) -> None:
        """The unit failed. A cut-over whose revision was rolled back (transactional DDL, or
        the failure came before the revision's own statements) is pending again; otherwise it
        stays ``cutting``, and a revert carries the rows back."""
        from orchestrator.copy import CopyCheckpoint
        from orchestrator.copy.cutover import release

        for opened in self._open.values():
            for o in opened:
                if o.handoff is not None:
                    with suppress(sa.exc.DBAPIError):
                        o.handoff.stop()
                if o.blocker is not None:
                    with suppress(sa.exc.DBAPIError):
                        o.blocker.rollback()
                        release(o.blocker)
                if self.transactional or not o.verified:
                    assert isinstance(o.checkpoint, CopyCheckpoint)
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
