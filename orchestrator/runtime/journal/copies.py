"""Copy records (``migrate_copies``): where each copy of an env stands and what it wrote into its
target (its checkpoint), which is what a revert undoes; and which copies are complete, read
from those records and, for journals older than them, from the copy steps' rows."""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa

from orchestrator.runtime.journal.base import JournalBase, now_iso
from orchestrator.runtime.journal.schema import COPY_STATES, CopyRecord, CopyState, copies_table, runs, steps


class CopyLog(JournalBase):
    """The copy-record operations of a journal (mixed into ``Journal``)."""

    def completed_copies(self) -> tuple[str, ...]:
        """Copy names whose most recent copy/revert step left the rows copied."""
        with self.engine.connect() as conn:
            q = (
                sa.select(steps.c.node, steps.c.kind, steps.c.status, steps.c.completed_at)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(runs.c.env == self.env, steps.c.node.like("copy:%"))
                .where(steps.c.status.in_(("applied", "undone")))
                .order_by(steps.c.completed_at)
            )
            state: dict[str, bool] = {}
            for node, kind, status, _ in conn.execute(q):
                name = node[len("copy:") :]
                if kind == "copy":
                    state[name] = status == "applied"
                elif kind == "revert_copy" and status == "applied":
                    state[name] = False
            try:  # the copy record, where there is one, knows better than step statuses
                records = conn.execute(
                    sa.select(copies_table.c.name, copies_table.c.state).where(copies_table.c.env == self.env)
                ).all()
            except sa.exc.DBAPIError:  # a journal of schema 1, read without upgrading it
                records = []
            for name, copy_state in records:
                # "copying" or "reverting": rows of the copy may be on both sides, half moved;
                # it is not complete, so it runs (again) before anything drops its source.
                state[str(name)] = copy_state == "copied"
            return tuple(sorted(n for n, done in state.items() if done))

    def copy_record(self, name: str) -> CopyRecord | None:
        """(state, checkpoint JSON) of a copy in this env, or None if it never wrote anything.

        A journal written before ``migrate_copies`` existed falls back to the newest step row
        holding a checkpoint: the copy state it describes is "copied"."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(copies_table.c.state, copies_table.c.checkpoint).where(
                        copies_table.c.env == self.env, copies_table.c.name == name
                    )
                ).first()
        except sa.exc.DBAPIError:  # a journal of schema 1, read without upgrading it (dry run)
            row = None
        if row is not None:
            return CopyRecord(cast("CopyState", str(row[0])), str(row[1]))
        with self.engine.connect() as conn:
            legacy = conn.execute(
                sa.select(steps.c.checkpoint)
                .join(runs, runs.c.id == steps.c.run_id)
                .where(runs.c.env == self.env, steps.c.node == f"copy:{name}", steps.c.kind == "copy")
                .where(steps.c.checkpoint.is_not(None))
                .order_by(steps.c.started.desc())
                .limit(1)
            ).first()
        return None if legacy is None else CopyRecord("copied", str(legacy[0]))

    def reverting_copies(self) -> tuple[str, ...]:
        """Copy names whose revert stopped half-way (rows may be on both sides)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(copies_table.c.name).where(
                        copies_table.c.env == self.env, copies_table.c.state == "reverting"
                    )
                ).all()
        except sa.exc.DBAPIError:  # a journal of schema 1
            return ()
        return tuple(sorted(str(r[0]) for r in rows))

    def set_copy_record(self, name: str, run_id: str, state: str, checkpoint: str | None = None) -> None:
        """Record where a copy stands; ``checkpoint=None`` keeps the one recorded."""
        assert state in COPY_STATES, state
        values: dict[str, Any] = {"state": state, "run_id": run_id, "updated": now_iso()}
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        key = (copies_table.c.env == self.env) & (copies_table.c.name == name)
        with self.tx() as conn:
            if conn.execute(sa.update(copies_table).where(key).values(**values)).rowcount:
                return
            if checkpoint is None:
                raise RuntimeError(f"copy '{name}' has no checkpoint to move to state {state}")
            conn.execute(sa.insert(copies_table).values(env=self.env, name=name, **values))
