"""The journal's tables in the state database, and the typed rows read back from them.

Tables (created and versioned by the tool itself; ``migrate_meta`` holds the schema version):

* ``migrate_runs``: one row per apply or rollback run (and one per ``unlock --force``);
* ``migrate_steps``: one row per step of a run, written before the step starts and after it
  ends (status, timings, error, revision-file checksum, copy checkpoint and throughput);
* ``migrate_lock``: at most one row per environment, naming the run that holds it;
* ``migrate_copies``: one row per environment and copy: what the copy has written into its
  target (its checkpoint: which target keys pre-existed, how far it got) and where it stands
  (``copying``, ``copied``, ``reverting``, ``reverted``). A revert reads what to undo from here,
  whatever the step rows of the runs say: a copy resumed, compensated or interrupted at any
  point is always known.

The rows the journal returns are ``TypedDict``s (``RunRow``, ``StepRow``) keyed like the
columns, and a copy's record is the named tuple ``CopyRecord``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, TypedDict

import sqlalchemy as sa

SCHEMA_VERSION = 2  # 2: migrate_copies

RunKind = Literal["apply", "rollback", "unlock"]  # unlock: a forced release
RunOutcome = Literal[
    "running", "succeeded", "rolled_back", "failed", "needs_attention", "interrupted", "force_released"
]
StepKind = Literal["upgrade", "downgrade", "copy", "revert_copy", "stamp"]
StepStatus = Literal["pending", "running", "applied", "failed", "undone", "undo_failed", "interrupted", "skipped"]
CopyState = Literal["copying", "copied", "reverting", "reverted"]
COPY_STATES: tuple[CopyState, ...] = ("copying", "copied", "reverting", "reverted")
DONE_STATUSES = ("applied", "undone", "failed", "undo_failed")  # a step that ended: completed_at is set

metadata = sa.MetaData()
meta_table = sa.Table(
    "migrate_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
runs = sa.Table(
    "migrate_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("env", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # RunKind
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.String(40), nullable=False),
    sa.Column("finished", sa.String(40)),
    sa.Column("outcome", sa.String(30), nullable=False),  # RunOutcome
    sa.Column("error", sa.Text),
    sa.Column("undoes_run", sa.String(40)),
    sa.Column("undone_by", sa.String(40)),
    sa.Column("resumes_run", sa.String(40)),
    # services whose database had never been migrated before this run (comma-separated):
    # undoing the whole run also removes the version table it created there
    sa.Column("fresh_services", sa.Text),
)
steps = sa.Table(
    "migrate_steps",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # StepKind
    sa.Column("service", sa.String(100)),
    sa.Column("revision", sa.String(64)),
    sa.Column("status", sa.String(20), nullable=False),  # StepStatus
    sa.Column("started", sa.String(40)),
    sa.Column("finished", sa.String(40)),
    sa.Column("seconds", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("statements", sa.Text),
    sa.Column("checksum", sa.String(64)),
    sa.Column("checkpoint", sa.Text),
    sa.Column("rows", sa.BigInteger),
    sa.Column("rows_per_second", sa.Float),
    sa.Column("completed_at", sa.Float),  # monotonic-ish ordering of completions (time.time())
)
sa.Index("ix_migrate_steps_node", steps.c.node)
lock_table = sa.Table(
    "migrate_lock",
    metadata,
    sa.Column("env", sa.String(100), primary_key=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("since", sa.String(40), nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
)
copies_table = sa.Table(
    "migrate_copies",
    metadata,
    sa.Column("env", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),  # CopyState
    sa.Column("checkpoint", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)


class RunRow(TypedDict):
    """One row of ``migrate_runs``."""

    id: str
    env: str
    kind: RunKind
    fingerprint: str | None
    holder: str
    host: str
    pid: int
    started: str
    finished: str | None
    outcome: RunOutcome
    error: str | None
    undoes_run: str | None
    undone_by: str | None
    resumes_run: str | None
    fresh_services: str | None


class StepRow(TypedDict):
    """One row of ``migrate_steps``."""

    run_id: str
    seq: int
    node: str
    kind: StepKind
    service: str | None
    revision: str | None
    status: StepStatus
    started: str | None
    finished: str | None
    seconds: float | None
    error: str | None
    statements: str | None
    checksum: str | None
    checkpoint: str | None
    rows: int | None
    rows_per_second: float | None
    completed_at: float | None


class CopyRecord(NamedTuple):
    """Where one copy stands in an env, and its checkpoint (JSON): what a revert undoes."""

    state: CopyState
    checkpoint: str
