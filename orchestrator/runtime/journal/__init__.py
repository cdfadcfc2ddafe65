"""The journal and the environment lock, in the state database (``state_url``).

One module per concern: ``schema`` (the tables and the typed rows read from them), ``base``
(the connection, schema creation and versioning, the write transaction), ``lock`` (the
environment lock, its lease and heartbeat), ``runlog`` (runs and steps), ``copies`` (copy
records) and ``status`` (what `migrate status` shows). ``Journal`` puts the operations
together; this module also opens a journal for an env of a manifest.

Every text that reaches these tables passes through the redaction function first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from orchestrator.core.manifest import state_url
from orchestrator.core.model import Manifest
from orchestrator.runtime.engines import sqlite_path
from orchestrator.runtime.journal.base import new_run_id, now_iso, whoami
from orchestrator.runtime.journal.copies import CopyLog
from orchestrator.runtime.journal.lock import HEARTBEAT_SECONDS, LEASE_SECONDS, EnvLock, Heartbeat, LockInfo, pid_alive
from orchestrator.runtime.journal.runlog import RunLog
from orchestrator.runtime.journal.schema import (
    COPY_STATES,
    SCHEMA_VERSION,
    CopyRecord,
    CopyState,
    RunKind,
    RunOutcome,
    RunRow,
    StepKind,
    StepRow,
    StepStatus,
)
from orchestrator.runtime.journal.status import interrupted_brief, run_brief, stopped_run

__all__ = [
    "COPY_STATES",
    "HEARTBEAT_SECONDS",
    "LEASE_SECONDS",
    "SCHEMA_VERSION",
    "CopyRecord",
    "CopyState",
    "Heartbeat",
    "Journal",
    "LockInfo",
    "RunKind",
    "RunOutcome",
    "RunRow",
    "StepKind",
    "StepRow",
    "StepStatus",
    "copy_states",
    "journal_exists",
    "new_run_id",
    "now_iso",
    "open_journal",
    "pid_alive",
    "status_summary",
    "whoami",
]


class Journal(RunLog, CopyLog, EnvLock):
    """One environment's journal and lock. Safe to open from several processes."""


def journal_exists(manifest: Manifest, env: str, environ: Mapping[str, str] | None = None) -> bool:
    url = state_url(manifest, env, environ)
    path = sqlite_path(url)
    return path is None or os.path.exists(path)


def open_journal(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None, create: bool = True
) -> Journal:
    return Journal(state_url(manifest, env, environ), env, create=create)


def copy_states(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(completed copies, copies whose revert stopped half-way) of an env; reads only."""
    if not journal_exists(manifest, env, environ):
        return (), ()
    journal = open_journal(manifest, env, environ, create=False)
    try:
        return journal.completed_copies(), journal.reverting_copies()
    except sa.exc.DatabaseError:
        return (), ()
    finally:
        journal.close()


def copy_records(
    manifest: Manifest, names: Sequence[str], env: str, environ: Mapping[str, str] | None = None
) -> dict[str, CopyRecord]:
    """The journal's records of the copies ``names`` (those it has); reads only."""
    if not names or not journal_exists(manifest, env, environ):
        return {}
    journal = open_journal(manifest, env, environ, create=False)
    try:
        return {n: r for n in names if (r := journal.copy_record(n)) is not None}
    except sa.exc.DatabaseError:
        return {}
    finally:
        journal.close()


def status_summary(
    manifest: Manifest, env: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(last run, interrupted run, lock) for `migrate status`; reads only, creates nothing."""
    if not journal_exists(manifest, env, environ):
        return None, None, None
    journal = open_journal(manifest, env, environ, create=False)
    try:
        recent = journal.run_rows(limit=20)
        lock = journal.lock_info()
        stopped = stopped_run(recent, lock)
        last = run_brief(recent[0]) if recent else None
        interrupted = None if stopped is None else interrupted_brief(stopped, journal.step_rows(stopped["id"]))
        return last, interrupted, lock.to_json() if lock else None
    except sa.exc.DatabaseError:
        return None, None, None
    finally:
        journal.close()
