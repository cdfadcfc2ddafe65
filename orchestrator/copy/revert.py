"""Deleting copied rows, and the revert of a copy (rollback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator.copy.capture import remove_capture
from orchestrator.copy.checkpoint import (
    CheckpointStore,
    CopyCheckpoint,
    PreexistingKeys,
    ProgressCallback,
)
from orchestrator.copy.copier import (
    CHUNK_ROWS,
    LOOKUP_KEYS,
    Copier,
    RevertResult,
    first_line,
    where_filter,
)
from orchestrator.copy.errors import (
    CopyError,
    CopyRevertError,
)
from orchestrator.copy.preexisting import pages
from orchestrator.copy.schema import (
    CopyPlan,
    build_plan,
    reflect_table,
)
from orchestrator.copy.streams import (
    TableSql,
    raw_connection,
)
from orchestrator.copy.values import (
    RowHasher,
    ValueProblem,
    canon_function,
    canonical,
)
from orchestrator.copy.writers import RowWriteError
from orchestrator.core.model import CopySpec

# --- deleting copied rows, revert ---------------------------------------------------------------


def delete_copied(plan: CopyPlan, target: Engine, pre: PreexistingKeys, on_progress: ProgressCallback | None) -> int:
    """Delete every target row outside the pre-existing keys, in committed slices."""
    tsql = TableSql(target, plan.target)
    key = [p.target.name for p in plan.key_pairs]
    canon = [canon_function(k) for k in plan.key_kinds]
    deleted = 0
    lo: tuple[Any, ...] | None = None
    with raw_connection(target) as tgt:
        while True:
            if not pre:
                sql, params = tsql.bound_after(key, None, 10_000)
                rows = tgt.fetch(sql, params)
                if not rows:
                    sql, params = tsql.last_after(key, None)
                    rows = tgt.fetch(sql, params)
                if not rows:
                    break
                sql, params = tsql.delete_range(key, None, rows[0])
                deleted += max(0, tgt.execute(sql, params))
                tgt.commit()
            else:
                sql, params = tsql.keys_after(key, lo, 1_000)
                rows = tgt.fetch(sql, params)
                if not rows:
                    break
                lo = tuple(rows[-1])
                doomed = [r for r in rows if not pre.contains(canonical(canon, r))]
                if doomed:
                    sql, params = tsql.delete_by_keys(key, doomed)
                    deleted += max(0, tgt.execute(sql, params))
                tgt.commit()
            if on_progress is not None:
                on_progress(deleted, None)
    return deleted


@dataclass
class _CarryBack:
    """One slice of the target's copied rows, split by what the source holds for their keys."""

    rows: int = 0  # copied target rows looked at
    missing: list[Any] = field(default_factory=list)  # the source lacks the key: insert
    changed: list[Any] = field(default_factory=list)  # the source's row differs: update


def _carry_back_slices(copier: Copier, pre: PreexistingKeys) -> Iterator[_CarryBack]:
    """Walk the target's copied rows (every row outside the pre-existing keys) in key order and
    compare each with the source's row of the same key. ``copier`` reads the target
    (``ssql``) and writes the source (``tsql``): it runs on the reversed plan."""
    back = copier.plan
    hasher = RowHasher([p.kind for p in back.columns])
    step = max(1, min(back.spec.batch_size, CHUNK_ROWS))
    for rows in pages(copier.src, copier.ssql, copier.scols, copier.skey, back.key_index, step):
        found = _CarryBack()
        cands = [r for r in rows if not pre.contains(copier.canon_key(r))]
        found.rows = len(cands)
        for start in range(0, len(cands), LOOKUP_KEYS):
            part = cands[start : start + LOOKUP_KEYS]
            keys = [copier.keys.to_target_in(r) for r in part]
            qsql, qparams = copier.tsql.select_by_keys(copier.tcols, copier.tkey, keys)
            have = {}
            for r in copier.tgt.fetch(qsql, qparams):
                canon = hasher.canon(r)
                have[tuple(canon[i] for i in back.key_index)] = canon
            for r in part:
                canon = hasher.canon(r)
                current = have.get(tuple(canon[i] for i in back.key_index))
                if current is None:
                    found.missing.append(r)
                elif current != canon:
                    found.changed.append(r)
        copier.tgt.rollback()
        yield found


def _converted(copier: Copier, rows: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for row in rows:
        vals = list(row)
        i = -1
        try:
            for i, f in copier.convs:
                if vals[i] is not None:
                    vals[i] = f(vals[i])
        except ValueProblem as problem:
            raise copier.value_error(row, i, str(problem)) from None
        out.append(vals)
    return out


def _update_rows(copier: Copier, rows: list[list[Any]]) -> None:
    """Set the copied columns of the source's rows to the target's values, by key."""
    key_index = copier.plan.key_index
    other = [i for i in range(len(copier.tcols)) if i not in key_index]
    if not other:
        return  # every copied column is part of the key: a row found cannot differ
    tsql = copier.tsql
    sets = ", ".join(f"{tsql.q(copier.tcols[i])} = {tsql.mark}" for i in other)
    cond = " AND ".join(f"{tsql.q(k)} = {tsql.mark}" for k in copier.tkey)
    sql = f"UPDATE {tsql.name} SET {sets} WHERE {cond}"
    cur = copier.tgt.cursor()
    try:
        cur.executemany(sql, [tuple(r[i] for i in other) + tuple(r[i] for i in key_index) for r in rows])
    finally:
        cur.close()


def _restore_to_source(
    plan: CopyPlan,
    source: Engine,
    target: Engine,
    pre: PreexistingKeys,
    on_progress: ProgressCallback | None,
) -> tuple[int, int]:
    """Carry the target's current version of every copied row back into the source: rows the
    source lacks are inserted, rows it holds with other values in the copied columns are
    updated (the target is where the application wrote since the copy). Returns (inserted,
    updated)."""
    back = plan.reversed()  # reads the target, writes the source
    inserted = updated = 0
    with raw_connection(target) as tgt, raw_connection(source) as src:
        copier = Copier(back, tgt, src, target, source)
        for found in _carry_back_slices(copier, pre):
            if not (found.missing or found.changed):
                continue
            try:
                if found.missing:
                    copier.writer.write_batch([_converted(copier, found.missing)])
                if found.changed:
                    _update_rows(copier, _converted(copier, found.changed))
            except RowWriteError as exc:
                src.rollback()
                raise CopyRevertError(
                    f"{where_filter(plan.spec, 'source')}: restoring copied rows failed: {first_line(exc.cause)}",
                    "make the source table able to hold the rows again, then revert again",
                ) from exc.cause
            src.commit()
            inserted += len(found.missing)
            updated += len(found.changed)
            if on_progress is not None:
                on_progress(inserted + updated, None)
    return inserted, updated


@dataclass(frozen=True)
class RevertPreview:
    """What a revert would do to rows, read without writing anything."""

    copied_rows: int  # target rows outside the pre-existing keys: carried back, then deleted
    to_insert: int  # of those, keys the source lacks
    to_update: int  # of those, rows the source holds with other values
    source_missing: bool  # the source table does not exist (yet): every row would be inserted
    cut_over: bool = True  # False: the source is still the truth, rows are only deleted

    def describe(self, spec: CopySpec) -> str:
        if self.copied_rows == 0:
            return f"nothing to revert: {spec.target} holds no row this copy wrote"
        if not self.cut_over:
            return (
                f"delete the {self.copied_rows} copied rows from {spec.target}.{spec.target_table}; "
                f"{spec.source}.{spec.table} is left as it is (the copy has not cut over, so the "
                "source still holds every row and every later write)"
            )
        same = self.copied_rows - self.to_insert - self.to_update
        where = f"{spec.source}.{spec.table}"
        carry = (
            f"carry all {self.copied_rows} copied rows back into {where} once it exists again"
            if self.source_missing
            else f"carry {self.to_insert + self.to_update} of the {self.copied_rows} copied rows back into "
            f"{where} ({self.to_insert} inserted, {self.to_update} updated with the target's newer "
            f"values, {same} already equal)"
        )
        return f"{carry}, then delete the {self.copied_rows} copied rows from {spec.target}.{spec.target_table}"


def preview_revert(spec: CopySpec, source: Engine, target: Engine, checkpoint: CopyCheckpoint | None) -> RevertPreview:
    """Count what ``revert_copy`` would carry back and delete; writes nothing."""
    if checkpoint is None or reflect_table(target, spec.target_table) is None:
        return RevertPreview(0, 0, 0, False)
    if not checkpoint.cut_over and reflect_table(source, spec.table) is not None:
        return RevertPreview(_count_copied(spec, target, checkpoint), 0, 0, False, cut_over=False)
    if reflect_table(source, spec.table) is None:
        # The source table is re-created by a downgrade that runs before the revert: every
        # copied row will be inserted into it.
        info = reflect_table(target, spec.target_table)
        assert info is not None
        with raw_connection(target) as tgt:
            total = int(tgt.fetch(TableSql(target, info).count())[0][0])
            tgt.rollback()
        n = max(0, total - checkpoint.preexisting.count)
        return RevertPreview(n, n, 0, True)
    plan = build_plan(spec, source, target)
    copied = to_insert = to_update = 0
    with raw_connection(target) as tgt, raw_connection(source) as src:
        copier = Copier(plan.reversed(), tgt, src, target, source)
        for found in _carry_back_slices(copier, checkpoint.preexisting):
            copied += found.rows
            to_insert += len(found.missing)
            to_update += len(found.changed)
        src.rollback()
    return RevertPreview(copied, to_insert, to_update, False)


def revert_copy(
    spec: CopySpec,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    on_progress: ProgressCallback | None = None,
) -> RevertResult:
    """Undo a copy: carry the target's current version of every copied row back into the
    source (inserting what it lacks, updating what differs), then delete the copied rows from
    the target (every row outside the pre-existing keys). Idempotent."""
    started = time.monotonic()
    if spec.mode == "follow":
        remove_capture(spec, source)  # first: nothing is followed any more
    checkpoint = store.load()
    if checkpoint is None:  # the copy never began: it wrote nothing
        return RevertResult(0, 0, time.monotonic() - started)
    if not checkpoint.cut_over and reflect_table(source, spec.table) is not None:
        # (a source table gone without a cut-over on record is not trusted: the path below
        # refuses until it exists again, and then carries every row back)
        return _delete_only(spec, source, target, store, checkpoint, on_progress, started)
    if reflect_table(source, spec.table) is None:
        raise CopyRevertError(
            f"{where_filter(spec, 'source')}: the table does not exist, so the copied rows cannot be restored into it",
            "re-create the source table (downgrade the revision that dropped it), then revert "
            "again; the target still holds the rows",
        )
    plan = build_plan(spec, source, target)
    pre = checkpoint.preexisting
    try:
        inserted, updated = _restore_to_source(plan, source, target, pre, on_progress)
        deleted = delete_copied(plan, target, pre, on_progress)
    except CopyError:
        raise
    except Exception as exc:
        raise CopyRevertError(
            f"copy '{spec.name}': revert failed: {first_line(exc)}",
            "fix the cause and revert again: a revert can be repeated safely",
        ) from exc
    store.save(CopyCheckpoint(None, 0, pre, 0))
    return RevertResult(inserted, deleted, time.monotonic() - started, rows_updated_in_source=updated)


def _count_copied(spec: CopySpec, target: Engine, checkpoint: CopyCheckpoint) -> int:
    info = reflect_table(target, spec.target_table)
    assert info is not None
    with raw_connection(target) as tgt:
        total = int(tgt.fetch(TableSql(target, info).count())[0][0])
        tgt.rollback()
    return max(0, total - checkpoint.preexisting.count)


def _delete_only(
    spec: CopySpec,
    source: Engine,
    target: Engine,
    store: CheckpointStore,
    checkpoint: CopyCheckpoint,
    on_progress: ProgressCallback | None,
    started: float,
) -> RevertResult:
    """The revert of a copy that has not cut over: until cut-over the source is the truth
    (writes after the copy went there), so only the rows the copy inserted are deleted and
    nothing is carried back (SPEC section 9)."""
    pre = checkpoint.preexisting
    if reflect_table(target, spec.target_table) is None:
        deleted = 0
    else:
        try:
            deleted = delete_copied(build_plan(spec, source, target), target, pre, on_progress)
        except CopyError:
            raise
        except Exception as exc:
            raise CopyRevertError(
                f"copy '{spec.name}': removing the copied rows failed: {first_line(exc)}",
                "fix the cause and revert again: a revert can be repeated safely",
            ) from exc
    store.save(CopyCheckpoint(None, 0, pre, 0))
    return RevertResult(0, deleted, time.monotonic() - started)
