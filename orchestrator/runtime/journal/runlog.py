"""Runs and their steps (``migrate_runs``, ``migrate_steps``): a run is written when it starts,
with one pending row per step; each step's row is updated as it starts and ends; reads return
typed rows (``RunRow``, ``StepRow``). Every text written passes through redaction first."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa

from orchestrator.core.redact import redact_text
from orchestrator.lifeline import exit_if_orphaned
from orchestrator.runtime.journal.base import JournalBase, now_iso, whoami
from orchestrator.runtime.journal.schema import DONE_STATUSES, RunRow, StepRow, runs, steps


def _redacted(values: Mapping[str, Any], now: float) -> dict[str, Any]:
    """A step update ready to write: its texts redacted; an ended step gets ``completed_at``."""
    out = dict(values)
    for key in ("error", "statements"):
        if out.get(key):
            out[key] = redact_text(str(out[key]))
    if out.get("status") in DONE_STATUSES:
        out.setdefault("completed_at", now)
    return out


class RunLog(JournalBase):
    """The run and step operations of a journal (mixed into ``Journal``)."""

    def start_run(
        self,
        run_id: str,
        kind: str,
        fingerprint: str | None,
        plan_steps: list[dict[str, Any]],
        undoes_run: str | None = None,
        resumes_run: str | None = None,
        fresh_services: tuple[str, ...] = (),
    ) -> None:
        holder, host, pid = whoami()
        with self.tx() as conn:
            conn.execute(
                sa.insert(runs).values(
                    id=run_id,
                    env=self.env,
                    kind=kind,
                    fingerprint=fingerprint,
                    holder=holder,
                    host=host,
                    pid=pid,
                    started=now_iso(),
                    outcome="running",
                    undoes_run=undoes_run,
                    resumes_run=resumes_run,
                    fresh_services=",".join(fresh_services) or None,
                )
            )
            if plan_steps:
                conn.execute(sa.insert(steps), [{"run_id": run_id, "status": "pending", **s} for s in plan_steps])

    def finish_run(self, run_id: str, outcome: str, error: str | None = None) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(runs)
                .where(runs.c.id == run_id)
                .values(finished=now_iso(), outcome=outcome, error=redact_text(error) if error else None)
            )

    def mark_undone(self, run_id: str, by: str) -> None:
        with self.tx() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(undone_by=by))

    def mark_interrupted(self, run_id: str) -> None:
        with self.tx() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(outcome="interrupted", finished=now_iso()))
            conn.execute(
                sa.update(steps)
                .where(steps.c.run_id == run_id, steps.c.status == "running")
                .values(status="interrupted")
            )

    def step_update(self, run_id: str, seq: int, **values: Any) -> None:
        values = _redacted(values, time.time())
        with self.tx() as conn:
            conn.execute(sa.update(steps).where(steps.c.run_id == run_id, steps.c.seq == seq).values(**values))

    def step_updates(self, run_id: str, updates: list[tuple[int, dict[str, Any]]]) -> None:
        """Several step updates in one transaction (one step ends as the next one starts).

        This is the per-step hot path; on a SQLite state database it goes straight to the
        driver (a tenth of the cost of building the statements each time)."""
        now = time.time()
        rows = [(seq, _redacted(values, now)) for seq, values in updates]
        if self._sqlite_path is not None:
            self._sqlite_updates(run_id, rows)
            return
        with self.tx() as conn:
            for seq, values in rows:
                conn.execute(sa.update(steps).where(steps.c.run_id == run_id, steps.c.seq == seq).values(**values))

    def _sqlite_updates(self, run_id: str, rows: list[tuple[int, dict[str, Any]]]) -> None:
        exit_if_orphaned()
        conn = self._raw_sqlite()
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for seq, values in rows:
                        names = sorted(values)
                        assignments = ", ".join(f"{steps.c[n].name} = ?" for n in names)  # known columns only
                        conn.execute(
                            f"UPDATE migrate_steps SET {assignments} WHERE run_id = ? AND seq = ?",
                            [values[n] for n in names] + [run_id, seq],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def step_checkpoint(self, run_id: str, seq: int, checkpoint: str, rows: int) -> None:
        with self.tx() as conn:
            conn.execute(
                sa.update(steps)
                .where(steps.c.run_id == run_id, steps.c.seq == seq)
                .values(checkpoint=checkpoint, rows=rows)
            )

    # -- reads ----------------------------------------------------------------------------
    # ``run``, ``runs`` and ``run_steps`` still say ``dict[str, Any]``: their callers in
    # ``orchestrator/run/`` copy a row into a plain dict and pass rows on as ``dict[str, Any]``,
    # which a TypedDict is not. The typed readers ``run_row``, ``run_rows`` and ``step_rows``
    # return the same rows; once those callers use them, the untyped three go.
    def run(self, run_id: str) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self.run_row(run_id))

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.run_rows(limit))

    def run_steps(self, run_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.step_rows(run_id))

    def run_row(self, run_id: str) -> RunRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id, runs.c.env == self.env)).mappings().first()
            return cast("RunRow", dict(row)) if row else None

    def run_rows(self, limit: int | None = None) -> list[RunRow]:
        """This env's runs, newest first."""
        with self.engine.connect() as conn:
            q = sa.select(runs).where(runs.c.env == self.env).order_by(runs.c.started.desc(), runs.c.id.desc())
            if limit:
                q = q.limit(limit)
            return [cast("RunRow", dict(r)) for r in conn.execute(q).mappings()]

    def step_rows(self, run_id: str) -> list[StepRow]:
        """A run's steps, in plan order."""
        with self.engine.connect() as conn:
            q = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq)
            return [cast("StepRow", dict(r)) for r in conn.execute(q).mappings()]

    def last_undoable_run(self) -> RunRow | None:
        for run in self.run_rows():
            if run["kind"] == "apply" and run["outcome"] == "succeeded" and not run["undone_by"]:
                return run
        return None

    def running_runs(self) -> list[RunRow]:
        """Runs still marked running: once the lock is ours, their runner is gone."""
        with self.engine.connect() as conn:
            q = sa.select(runs).where(runs.c.env == self.env, runs.c.outcome == "running").order_by(runs.c.started)
            return [cast("RunRow", dict(r)) for r in conn.execute(q).mappings()]
