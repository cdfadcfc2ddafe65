"""Entry points of a copy: preflight, row estimate and ``copy_table``."""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine

from orchestrator.copy.capture import Capture, ReplayStats
from orchestrator.copy.checkpoint import (
    CheckpointStore,
    CopyCheckpoint,
    PreexistingKeys,
    ProgressCallback,
)
from orchestrator.copy.copier import (
    Copier,
    CopyResult,
    first_line,
    key_text,
)
from orchestrator.copy.dialects import impl_for
from orchestrator.copy.errors import (
    CopyError,
    CopyFailedError,
    CopyPreflightError,
    CopyRevertError,
)
from orchestrator.copy.preexisting import check_preexisting, scan_preexisting
from orchestrator.copy.revert import (
    delete_copied,
)
from orchestrator.copy.schema import (
    CopyPlan,
    build_plan,
    key_declared_unique,
    preflight_error,
    reflect_table,
)
from orchestrator.copy.streams import (
    TableSql,
    raw_connection,
)
from orchestrator.copy.verify import (
    VerifyOutcome,
    verify_copy,
)
from orchestrator.core.model import CopySpec


def _check_key(plan: CopyPlan, source: Engine) -> None:
    spec = plan.spec
    key_cols = [p.source for p in plan.key_pairs]
    names = [c.name for c in key_cols]
    sql = TableSql(source, plan.source)
    with raw_connection(source) as conn:
        for col in key_cols:
            if col.nullable and col.name not in plan.source.primary_key:
                rows = conn.fetch(f"SELECT 1 FROM {sql.name} WHERE {sql.q(col.name)} IS NULL LIMIT 1")
                if rows:
                    raise preflight_error(
                        spec,
                        "source",
                        f"key column '{col.name}' holds NULL, so rows cannot be told apart",
                        "choose key columns without NULLs (or fill them in first)",
                    )
        if key_declared_unique(plan.source, names):
            return
        rows = conn.fetch(
            f"SELECT {sql.cols(names)}, count(*) FROM {sql.name} GROUP BY {sql.cols(names)} HAVING count(*) > 1 LIMIT 1"
        )
    if rows:
        raise preflight_error(
            spec,
            "source",
            f"the key ({', '.join(names)}) is not unique: {key_text(names, rows[0][:-1])} appears {rows[0][-1]} times",
            "choose key columns whose values are unique (a primary key or a unique constraint)",
        )


def _prepare(spec: CopySpec, source: Engine, target: Engine) -> CopyPlan:
    plan = build_plan(spec, source, target)
    _check_key(plan, source)
    return plan


def preflight(spec: CopySpec, source: Engine, target: Engine) -> None:
    """Check, without writing anything, that the copy can run; raise CopyPreflightError if not.

    Both tables exist; the chosen columns exist on both sides with compatible types; the target
    has no NOT NULL column without a default left out; the key columns exist, are copied, hold
    no NULL, and are unique (declared, or proved by a GROUP BY ... HAVING count(*) > 1 query).
    """
    _prepare(spec, source, target)


def estimate_rows(spec: CopySpec, source: Engine) -> int | None:
    """Roughly how many rows the source table holds (for progress bars); None if unknown."""
    table = reflect_table(source, spec.table)
    if table is None:
        return None
    sql = TableSql(source, table)
    with raw_connection(source) as conn:
        known, estimate = impl_for(conn.dialect).estimate_rows(conn, sql, table)
        if known:
            return estimate
        rows = conn.fetch(sql.count())
        return int(rows[0][0]) if rows else None


# --- the copy ----------------------------------------------------------------------------------


def copy_table(
    spec: CopySpec,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    on_progress: ProgressCallback | None = None,
) -> CopyResult:
    """Copy the rows of ``spec.table`` from ``source`` into ``spec.target_table`` on ``target``.

    Resumes from ``store``'s checkpoint, saves one after every committed batch, verifies
    count and checksum at the end. On failure the rows it inserted are deleted and the
    checkpoint is reset before the error is raised.
    """
    started = time.monotonic()
    plan = _prepare(spec, source, target)
    total = estimate_rows(spec, source)
    capture = Capture(plan, source) if spec.mode == "follow" else None
    if capture is not None:
        capture.install()  # before a row is read: every later write is logged
    checkpoint = store.load()
    try:
        with raw_connection(source) as src, raw_connection(target) as tgt:
            copier = Copier(plan, src, tgt, source, target)
            if capture is not None:
                copier.upto, copier.bounded = copier.last_key(), True  # later rows are logged, and replayed
            if checkpoint is None:
                pre = scan_preexisting(copier)
                check_preexisting(copier, pre)  # before a row is written
                checkpoint = CopyCheckpoint(None, 0, pre, 0)
                store.save(checkpoint)
                uncertain = False
            else:
                uncertain = True
            checkpoint, method = copier.run_batches(checkpoint, store, uncertain, on_progress, total)
            if capture is None:
                outcome = verify_copy(copier, checkpoint.preexisting)
            else:
                # the source kept taking writes: they are in the log; the cut-over verifies
                outcome = _follow(capture, copier, checkpoint)
            check_preexisting(copier, checkpoint.preexisting)
    except CopyPreflightError:
        if capture is not None and checkpoint is None:
            capture.remove()
        raise
    except Exception as exc:
        if checkpoint is None:  # nothing was written
            if isinstance(exc, CopyError):
                raise
            raise _wrap(spec, exc) from exc
        failure = exc if isinstance(exc, CopyError) else _wrap(spec, exc)
        _cleanup_after_failure(plan, source, target, store, checkpoint.preexisting, failure, capture)
        if failure is exc:
            raise
        raise failure from exc
    seconds = time.monotonic() - started
    copied = outcome.target_count
    return CopyResult(
        rows_copied=copied,
        rows_skipped=outcome.skipped,
        source_rows=outcome.source_count + outcome.skipped,
        seconds=seconds,
        rows_per_second=(copied / seconds) if seconds > 0 else 0.0,
        checksum=outcome.checksum,
        method=method,
    )


FOLLOW_LAG = 1_000  # a follow-mode copy step ends with at most this many entries in the log


def _follow(capture: Capture, copier: Copier, checkpoint: CopyCheckpoint) -> VerifyOutcome:
    """The end of a follow-mode copy step: the writes made during the copy are replayed until
    the log is short; capture stays on until the cut-over."""
    capture.replay(copier, copier.src, checkpoint.preexisting, ReplayStats(), until=FOLLOW_LAG)
    copied = checkpoint.rows_copied
    return VerifyOutcome(copied + checkpoint.rows_skipped, copied, checkpoint.rows_skipped, "following")


def _wrap(spec: CopySpec, exc: BaseException) -> CopyFailedError:
    return CopyFailedError(
        f"copy '{spec.name}' from service '{spec.source}' to '{spec.target}', table "
        f"'{spec.table}', failed: {first_line(exc)}",
        "fix the cause and run again; the rows this copy had inserted were removed",
    )


def _cleanup_after_failure(
    plan: CopyPlan,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    pre: PreexistingKeys,
    failure: CopyError,
    capture: Capture | None,
) -> None:
    try:
        if capture is not None:
            capture.remove()  # first: no write may be logged for rows that are going
        delete_copied(plan, target, pre, None)
        store.save(CopyCheckpoint(None, 0, pre, 0))
    except Exception as cleanup_exc:
        raise CopyRevertError(
            f"{failure.message}; then removing the rows it had inserted failed too: "
            f"{first_line(cleanup_exc)}. The target table "
            f"'{plan.spec.target_table}' of service '{plan.spec.target}' may still hold "
            "copied rows; the checkpoint still describes them",
            "run the revert of this copy (migrate rollback) once the target database is reachable",
        ) from cleanup_exc


# --- verification ------------------------------------------------------------------------------
