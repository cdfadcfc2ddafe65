"""Change capture of a follow-mode copy (SPEC section 9): triggers on the source table record
the key of every inserted, updated and deleted row in a change-log table of the source
database, inside the writer's own transaction, so a committed write is always logged. Replay
reads the logged keys in batches, reads the current source rows, writes them into the target
(or deletes the target's row when the source's is gone), then forgets the replayed entries.

The statements that create and drop the capture are per dialect (``DialectImpl.capture_*``);
reading and forgetting the log, and replaying it, are the same SQL everywhere.

Replay is idempotent: a crash between the target's commit and the log's leaves entries that
are replayed again, writing the same current rows. Entries are forgotten by their sequence
numbers, never by a range: a writer's entry that was not committed when a batch was read
keeps its place in the log.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator.copy.checkpoint import PreexistingKeys
from orchestrator.copy.copier import Copier, first_line
from orchestrator.copy.dialects import CaptureObjects, DialectImpl, impl_for
from orchestrator.copy.errors import CopyPreflightError
from orchestrator.copy.schema import CopyPlan, dialect_of, reflect_table, split_table_name
from orchestrator.copy.streams import RawConn, raw_connection
from orchestrator.copy.values import CanonKey
from orchestrator.core.model import CopySpec

REPLAY_KEYS = 500  # logged entries read per replay batch


def capture_objects(spec: CopySpec, keys: Sequence[str]) -> CaptureObjects:
    """The names of ``spec``'s capture: ``migrate_capture_`` and a digest of the copy's name
    (a name of any length fits every database's identifier limit)."""
    schema, table = split_table_name(spec.table)
    base = "migrate_capture_" + hashlib.sha256(spec.name.encode()).hexdigest()[:10]
    comment = (
        f"migrate: change log of the follow-mode copy '{spec.name}' ({spec.source}.{spec.table} -> "
        f"{spec.target}.{spec.target_table}); removed at its cut-over or revert"
    )
    return CaptureObjects(schema, table, base + "_log", base, tuple(keys), comment)


def remove_capture(spec: CopySpec, source: Engine) -> None:
    """Drop ``spec``'s triggers and log table if they exist (the source table may be gone)."""
    impl = impl_for(dialect_of(source))
    with raw_connection(source) as conn:
        _run(conn, impl.capture_remove(capture_objects(spec, ())))
        conn.commit()


def capture_lag(spec: CopySpec, source: Engine) -> int | None:
    """Entries waiting in ``spec``'s change log, or None when it has no capture."""
    objects = capture_objects(spec, ())
    log = f"{objects.schema}.{objects.log}" if objects.schema else objects.log
    if reflect_table(source, log) is None:
        return None
    impl = impl_for(dialect_of(source))
    with raw_connection(source) as conn:
        return int(conn.fetch(f"SELECT count(*) FROM {impl.qualified(objects.schema, objects.log)}")[0][0])


def _run(conn: RawConn, statements: Sequence[str]) -> None:
    cur = conn.cursor()
    try:
        for statement in statements:
            cur.execute(statement)
    finally:
        cur.close()


@dataclass
class ReplayStats:
    """What replays wrote: the keys they touched (canonical form: the key as the source holds
    it), the entries forgotten, and when the last batch ended."""

    keys: dict[CanonKey, tuple[Any, ...]] = field(default_factory=dict)
    entries: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.seconds if self.seconds > 0 else 0.0


class Capture:
    """The change capture of one copy on its source database."""

    def __init__(self, plan: CopyPlan, source: Engine):
        self.plan = plan
        self.spec = plan.spec
        self.source = source
        self.impl: DialectImpl = impl_for(dialect_of(source))
        self.objects = capture_objects(self.spec, [p.source.name for p in plan.key_pairs])
        self.log = self.impl.qualified(self.objects.schema, self.objects.log)
        keys = ", ".join(self.impl.quote(k) for k in self.objects.keys)
        self._read_sql = f"SELECT migrate_seq, {keys} FROM {self.log} ORDER BY migrate_seq LIMIT {REPLAY_KEYS}"
        self._count_sql = f"SELECT count(*) FROM {self.log}"

    # --- the triggers and the log table ---------------------------------------------------

    def install(self) -> None:
        """Create the log table and the triggers (again: it is idempotent). A missing right
        fails here, before any row moves, naming it."""
        try:
            with raw_connection(self.source) as conn:
                objects = self.objects
                if objects.schema is None and (schema := self.impl.capture_schema(conn)) is not None:
                    objects = replace(objects, schema=schema)
                _run(conn, self.impl.capture_install(objects))
                conn.commit()
        except Exception as exc:
            if self.impl.privilege_denied(exc):
                raise CopyPreflightError(
                    f"copy '{self.spec.name}' (mode = \"follow\") needs the rights to create a table and "
                    f"triggers in {self.spec.source}'s database, on {self.spec.table}: {first_line(exc)}",
                    "grant CREATE and TRIGGER on that database to the user of its URL (or use the default "
                    'mode = "snapshot", which needs neither); nothing was copied',
                ) from exc
            raise

    def remove(self, conn: RawConn | None = None) -> None:
        """Drop the triggers and the log table, on ``conn`` (its transaction; the caller
        commits) or on a connection of its own."""
        if conn is not None:
            _run(conn, self.impl.capture_remove(self.objects))
            return
        with raw_connection(self.source) as own:
            _run(own, self.impl.capture_remove(self.objects))
            own.commit()

    @property
    def log_table(self) -> str:
        """The log table's name as a copy names tables: ``schema.name`` or ``name``."""
        schema = self.objects.schema
        return f"{schema}.{self.objects.log}" if schema else self.objects.log

    def installed(self) -> bool:
        return reflect_table(self.source, self.log_table) is not None

    # --- the log ----------------------------------------------------------------------------

    def lag(self, src: RawConn) -> int:
        """Entries waiting in the log."""
        n = int(src.fetch(self._count_sql)[0][0])
        src.commit()
        return n

    def replay(
        self,
        copier: Copier,
        src: RawConn,
        pre: PreexistingKeys,
        stats: ReplayStats,
        *,
        until: int = 0,
        deadline: float | None = None,
    ) -> int:
        """Replay logged entries until at most ``until`` wait (0: until the log is empty, as
        it stays under a block) or ``deadline`` (a ``time.monotonic()``) has passed. Source
        reads go through ``src``, which may be the connection that blocks writers. Returns
        the entries left, as last seen."""
        left = 0
        while True:
            started = time.monotonic()
            entries = src.fetch(self._read_sql)
            src.commit()
            if not entries:
                return 0
            self._apply(copier, src, pre, [tuple(e[1:]) for e in entries], stats)
            seqs = [int(e[0]) for e in entries]
            src.execute(f"DELETE FROM {self.log} WHERE migrate_seq IN ({', '.join(map(str, seqs))})")
            src.commit()
            stats.entries += len(seqs)
            stats.batches += 1
            stats.seconds += time.monotonic() - started
            if len(entries) < REPLAY_KEYS:
                return 0  # that was the whole log, as it stood
            if until or deadline is not None:
                left = self.lag(src)
                if left <= until or (deadline is not None and time.monotonic() >= deadline):
                    return left

    def _apply(
        self, copier: Copier, src: RawConn, pre: PreexistingKeys, logged: list[tuple[Any, ...]], stats: ReplayStats
    ) -> None:
        """Make the target's rows of the ``logged`` keys what the source's are now."""
        keys: dict[CanonKey, tuple[Any, ...]] = {}
        for key in logged:
            ck = copier.keys.canon(key)
            if not pre.contains(ck):  # rows the target had before the copy are not the copy's
                keys.setdefault(ck, key)
        if not keys:
            return
        stats.keys.update(keys)
        sql, params = copier.ssql.select_by_keys(copier.scols, copier.skey, list(keys.values()))
        rows = src.fetch(sql, params)
        src.commit()
        tgt = copier.tgt
        dsql, dparams = copier.tsql.delete_by_keys(copier.tkey, [copier.keys.to_target(k) for k in keys.values()])
        tgt.execute(dsql, dparams)
        if rows:
            copier.writer.write_batch([[copier.convert(row) for row in rows]])
        tgt.commit()


@contextmanager
def replaying(plan: CopyPlan, source: Engine, target: Engine) -> Iterator[tuple[Capture, Copier]]:
    """A capture and a copier on connections of their own, for replays outside a block."""
    with raw_connection(source) as src, raw_connection(target) as tgt:
        yield Capture(plan, source), Copier(plan, src, tgt, source, target)
