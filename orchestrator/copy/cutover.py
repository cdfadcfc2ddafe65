"""The cut-over of a copy (SPEC section 9): just before the first ``before`` revision of a copy
runs, writes to the source table are blocked and the copy is verified again, re-reading the
source. A ``before`` revision (typically the one that drops the source table) never follows a
stale copy: a source row written after the copy fails the cut-over, naming how many rows
differ, before anything is dropped.

How writes are blocked, on the connection that then runs the ``before`` revision, so that no
write can land between the verification and the revision:

* PostgreSQL: ``LOCK TABLE ... IN EXCLUSIVE MODE`` inside the revision's transaction (readers
  go on; writers wait until it commits or rolls back).
* SQLite: a write statement that changes nothing takes the database's write lock inside the
  revision's transaction (readers go on; every writer of that file waits).
* MariaDB: ``LOCK TABLES ... READ`` on a connection of its own (readers go on; writers wait).
  ``LOCK TABLES`` forbids the session that holds it any table it did not lock, so the revision
  cannot run under it. Instead the block is handed over (``Handoff``): the revision runs on its
  own connection, and the moment its ``DROP TABLE`` (or ``RENAME TABLE``) of the source table
  waits for the table's metadata lock, the block is released. MariaDB grants that waiting
  exclusive lock before the writers queued behind the block, so none of them can write between
  the verification and the drop. Another statement of the revision that waits for the table
  (an ``ALTER``, a ``DELETE``) would let the writers in first: it is stopped (``KILL QUERY``)
  after ``cutover_max_block``, and the revision fails.

When the ``before`` revision belongs to another service than the copy's source, the block is
taken on a connection of its own to the source, and held until that revision has committed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.copy.capture import Capture, ReplayStats, replaying
from orchestrator.copy.checkpoint import PreexistingKeys
from orchestrator.copy.copier import Copier, where_filter
from orchestrator.copy.dialects import DialectImpl, impl_for, impl_for_sqlalchemy
from orchestrator.copy.errors import CopyConflictError, CopyFailedError, CopyVerificationError
from orchestrator.copy.preexisting import check_preexisting
from orchestrator.copy.revert import delete_copied
from orchestrator.copy.schema import CopyPlan, build_plan, dialect_of, quote_identifier, split_table_name
from orchestrator.copy.streams import RawConn, raw_connection
from orchestrator.copy.values import CanonKey
from orchestrator.copy.verify import canon_rows, verify_copy, verify_streams
from orchestrator.core.model import CopySpec


class CopyCutoverError(CopyFailedError):
    """The source changed after the copy: the cut-over refused to let the drop run."""

    def __init__(self, message: str, hint: str | None = None, *, differing: int):
        super().__init__(message, hint)
        self.differing = differing


class CopyCutoverBusyError(CopyFailedError):
    """Writes come too fast for a cut-over within ``cutover_max_block``; nothing was blocked."""


@dataclass(frozen=True)
class CutoverCheck:
    rows: int  # rows compared (outside the pre-existing keys)
    checksum: str
    how: str  # how writes were blocked, for the output


class _Borrowed(RawConn):
    """The DBAPI connection of a transaction someone else owns: reads only, never ends it."""

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def _dbapi(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection


def _run(dbapi: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = dbapi.cursor()
    try:
        cur.execute(sql)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def _quoted(dialect: str, table: str) -> str:
    schema, name = split_table_name(table)
    parts = [name] if not schema else [schema, name]
    return ".".join(quote_identifier(dialect, p) for p in parts)  # type: ignore[arg-type]


def _impl(conn: sa.Connection) -> DialectImpl:
    impl = impl_for_sqlalchemy(conn.dialect.name)
    assert impl is not None, conn.dialect.name  # a copy's databases passed preflight
    return impl


def block_writes(conn: sa.Connection, table: str, log: str | None = None) -> str:
    """Block writes to ``table`` on ``conn``, inside its open transaction (PostgreSQL, SQLite)
    or until ``release`` (MariaDB). ``log``: the change-log table of a follow-mode copy, which
    the blocking session drains. Returns how, for the output."""
    impl = _impl(conn)
    _run(_dbapi(conn), impl.block_statement(_quoted(impl.name, table), log and _quoted(impl.name, log)))
    return impl.block_how.format(table=table)


def release(conn: sa.Connection) -> None:
    """End a block that outlives its transaction (MariaDB); others end with their transaction."""
    unblock = _impl(conn).unblock_sql
    if unblock:
        _run(_dbapi(conn), unblock)


def hands_over(conn: sa.Connection) -> bool:
    """Whether a block on this database is a session's, which the revision cannot run under:
    it is then held on a connection of its own and handed over (``Handoff``)."""
    return _impl(conn).hands_over_block


def connection_id(conn: sa.Connection) -> int:
    """The server's id of a MariaDB session, as its process list shows it."""
    return int(_run(_dbapi(conn), "SELECT CONNECTION_ID()")[0][0])


class Handoff:
    """Hands a MariaDB block held by ``blocker`` over to the session ``runner``, which runs the
    ``before`` revision: a thread watches the process list, and releases the block as soon as
    ``runner`` waits for a metadata lock in a statement that names ``table``. ``stop`` releases
    it in any case (the revision ended without touching the table, or failed)."""

    POLL_SECONDS = 0.002

    def __init__(self, blocker: sa.Connection, runner: int, table: str, patience: float) -> None:
        self._dbapi = _dbapi(blocker)
        self._runner = runner
        self._name = split_table_name(table)[1].lower()
        # the statements whose wait is the hand-over: they ask for the table's exclusive lock
        # at once, so no queued writer can get in between
        name = re.escape(self._name)
        self._takes_over = re.compile(
            rf"^\s*(drop|rename)\s+table\s+(if\s+exists\s+)?([`\w]+\.)?`?{name}`?(\s|,|;|$)", re.IGNORECASE
        )
        self._patience = patience
        self.refused: str | None = None  # why the revision's statement was stopped
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._released = False
        self.handed_over: float | None = None  # monotonic time of the hand-over
        self._thread = threading.Thread(target=self._watch, name="migrate-cutover", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        sql = f"SELECT STATE, INFO FROM information_schema.PROCESSLIST WHERE ID = {self._runner}"
        waiting_since: float | None = None
        while not self._stop.wait(self.POLL_SECONDS):
            with self._lock:
                if self._released:
                    return
                rows = _run(self._dbapi, sql)
                state, info = (str(v or "") for v in rows[0]) if rows else ("", "")
                if "metadata lock" not in state.lower() or self._name not in info.lower():
                    waiting_since = None
                    continue
                if self._takes_over.match(info):
                    self._release()
                    self.handed_over = time.monotonic()
                    return
                # Another statement waits for the table (an ALTER, a DML): releasing would let
                # the queued writers in before it. Stop it instead, once patience runs out.
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > self._patience:
                    self.refused = info.strip().splitlines()[0][:200]
                    _run(self._dbapi, f"KILL QUERY {self._runner}")
                    return

    def _release(self) -> None:
        if not self._released:
            self._released = True
            _run(self._dbapi, "UNLOCK TABLES")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._release()


@contextmanager
def _utc(raw: RawConn) -> Iterator[None]:
    """Compare timestamps in UTC, as the copy wrote them, on a borrowed session that reads
    them in its own time zone (MariaDB), then give the session its zone back."""
    zone_sql = impl_for(raw.dialect).session_zone_sql
    if zone_sql is None:
        yield
        return
    read, set_zone = zone_sql
    zone = raw.fetch(read)[0][0]
    raw.execute(set_zone, ("+00:00",))
    try:
        yield
    finally:
        raw.execute(set_zone, (zone,))


def cutover_plan(spec: CopySpec, source: Engine, target: Engine) -> CopyPlan:
    """The copy's plan, reflected before writes are blocked (reflection uses connections of
    its own, which must not queue behind the block)."""
    return build_plan(spec, source, target)


def verify_blocked(
    plan: CopyPlan,
    conn: sa.Connection,
    source: Engine,
    target: Engine,
    pre: PreexistingKeys,
    how: str,
) -> CutoverCheck:
    """Verify the copy again (count and checksum of every copied column), reading the source
    on ``conn``, which blocks writes to it. Raises ``CopyCutoverError`` when they differ."""
    spec = plan.spec
    proxy = conn.connection
    src = _Borrowed(dialect_of(source), proxy.driver_connection, proxy)
    with raw_connection(target) as tgt, _utc(src):
        copier = Copier(plan, src, tgt, source, target)
        try:
            outcome = verify_copy(copier, pre)
        except CopyVerificationError as exc:
            differing = count_differences(copier, pre)
            raise CopyCutoverError(
                f"cut-over refused: {where_filter(spec, 'source')} changed after the copy "
                f"({differing} row{'s' if differing != 1 else ''} differ; "
                f"{exc.message.split('; ', 1)[-1]}), so the revision that follows the copy did not "
                f"run and nothing was dropped; the source keeps every write, and the copied rows were "
                f"removed from {spec.target}.{spec.target_table}. Something still writes to "
                f'{spec.source}.{spec.table}: stop its writers, or set mode = "follow" on this copy so that '
                f"their writes are captured and replayed, then apply again, which copies again",
                differing=differing,
            ) from exc
        _check_preexisting_blocked(copier, pre)
    return CutoverCheck(outcome.target_count, outcome.checksum, how)


def _check_preexisting_blocked(copier: Copier, pre: PreexistingKeys) -> None:
    """Rows the target held before the copy are not the copy's and are not compared above;
    their source rows may have changed since, and the drop would lose that: they must still
    be equal, under the block."""
    spec = copier.plan.spec
    try:
        check_preexisting(copier, pre)
    except CopyConflictError as exc:
        raise CopyCutoverError(
            f"cut-over refused: {exc.message}; a row {spec.target}.{spec.target_table} held before the copy "
            f"was changed in {spec.source}.{spec.table} since, so the revision that follows the copy did not "
            "run and nothing was dropped; the copied rows were removed",
            "make the two rows equal (or remove the target's), then apply again, which copies again",
            differing=1,
        ) from exc


def count_differences(copier: Copier, pre: PreexistingKeys) -> int:
    """Rows that differ between the two sides, by key: source rows missing from the target or
    held there with other values, plus target rows the source lacks."""
    return len(differing_keys(copier, pre))


def differing_keys(copier: Copier, pre: PreexistingKeys) -> dict[CanonKey, tuple[Any, ...]]:
    """The keys of the rows counted by ``count_differences``, as the source's driver takes them."""
    source, target = canon_rows(copier, 0), canon_rows(copier, 1)
    differing: dict[CanonKey, tuple[Any, ...]] = {}
    for side, other in ((source, target), (target, source)):
        lo: Sequence[Any] | None = None
        while True:
            rows = side.after(lo)
            if not rows:
                break
            lo = tuple(rows[-1][0][i] for i in copier.plan.key_index)
            wanted = [r for r in rows if not pre.contains(r[2])]
            if not wanted:
                continue
            keys = [_other_key(copier, side is source, row) for row, _, _ in wanted]
            found = {ck: canon for _, canon, ck in other.by_keys(keys)}
            for row, canon, ck in wanted:
                theirs = found.get(ck)
                # from the source: missing or different; from the target: only missing (a
                # different row was counted from the source's side)
                if theirs is None or (side is source and theirs != canon):
                    key = tuple(row[i] for i in copier.plan.key_index)
                    differing[ck] = key if side is source else copier.keys.to_source(key)
    return differing


def compare_keys(copier: Copier, keys: Mapping[CanonKey, tuple[Any, ...]]) -> dict[CanonKey, tuple[Any, ...]]:
    """The rows of ``keys`` (as the source's driver takes them) that differ between the two
    sides; a row missing on one side differs."""
    source, target = canon_rows(copier, 0), canon_rows(copier, 1)
    wanted = list(keys.items())
    differing: dict[CanonKey, tuple[Any, ...]] = {}
    for i in range(0, len(wanted), COMPARE_KEYS):
        chunk = wanted[i : i + COMPARE_KEYS]
        theirs = {ck: canon for _, canon, ck in source.by_keys([k for _, k in chunk])}
        ours = {ck: canon for _, canon, ck in target.by_keys([copier.keys.to_target(k) for _, k in chunk])}
        differing.update((ck, k) for ck, k in chunk if theirs.get(ck) != ours.get(ck))
    return differing


COMPARE_KEYS = 500
NARROW_TO = 50  # keys few enough to compare under the block
NARROW_ROUNDS = 4
REPLAY_SECONDS = 60.0  # the longest one replay runs before the cut-over looks again


# --- follow mode ---------------------------------------------------------------------------


@dataclass
class FollowWatch:
    """What a follow-mode cut-over learnt before blocking writes: the keys that differed in
    its full verification, run while writes went on (``suspects``), and the replays since
    (``since``), whose keys are compared again under the block."""

    suspects: dict[CanonKey, tuple[Any, ...]]
    since: ReplayStats


def watch_follow(plan: CopyPlan, source: Engine, target: Engine, pre: PreexistingKeys) -> FollowWatch:
    """Before the block: replay until the log is short, then verify in full (count and
    checksum of every copied column) while writes go on.

    Where the source gives a consistent snapshot (PostgreSQL, MariaDB), the verification is
    exact: in one repeatable-read transaction the log entries it sees are replayed with the
    rows as that snapshot holds them, so the target is exactly the snapshot, which is then
    compared. Elsewhere (SQLite, where a long read would hold writers back) a row written
    during the verification may differ: the differing keys are kept as suspects, compared
    again before and under the block. Either way every key replayed from then on is
    remembered (``FollowWatch.since``)."""
    with replaying(plan, source, target) as (capture, copier):
        capture.replay(copier, copier.src, pre, ReplayStats(), until=1_000, deadline=time.monotonic() + REPLAY_SECONDS)
        since = ReplayStats()
        pinned = _Borrowed(copier.src.dialect, copier.src.dbapi, copier.src.proxy)
        if impl_for(pinned.dialect).begin_snapshot(pinned):
            snapshot = Copier(plan, pinned, copier.tgt, source, target)
            capture.replay(snapshot, pinned, pre, ReplayStats())  # what the snapshot sees
            try:
                if verify_streams(snapshot, pre) is None:
                    verify_copy(snapshot, pre)
                suspects: dict[CanonKey, tuple[Any, ...]] = {}
            except CopyVerificationError as exc:
                suspects = _suspects(snapshot, pre, exc)
            finally:
                copier.src.commit()  # the replayed entries are forgotten
            return FollowWatch(suspects, since)
        try:
            verify_copy(copier, pre)
            suspects = {}
        except CopyVerificationError as exc:
            suspects = _suspects(copier, pre, exc)
        return FollowWatch(suspects, since)


def _suspects(copier: Copier, pre: PreexistingKeys, failure: CopyVerificationError) -> dict[CanonKey, tuple[Any, ...]]:
    """The keys of the rows that differ, to compare again; a difference no key names (a row
    whose key is NULL, say) cannot be compared again, so it fails the cut-over now."""
    suspects = differing_keys(copier, pre)
    if not suspects:
        spec = copier.plan.spec
        raise CopyCutoverBusyError(
            f"{where_filter(spec, 'source')}: the verification before the cut-over failed and the "
            f"difference could not be narrowed down to a key ({failure.message}); nothing was blocked "
            "or dropped, and the copy goes on following",
            "look for rows whose key is NULL or duplicated in the source, fix them, then apply again",
        ) from failure
    return suspects


def catch_up(
    plan: CopyPlan, source: Engine, target: Engine, pre: PreexistingKeys, watch: FollowWatch, block: float
) -> int:
    """Just before the block: replay the log, and narrow the keys that must be compared under
    the block. The keys written during the full verification are compared now, outside the
    block; what still differs, and what is logged from that comparison on, is all that stays.
    Each round is shorter than the one before, so a few leave about what is written during
    one comparison of a few hundred rows, whatever the table's size. When writes come too fast
    for comparing what is left to fit in half of ``block`` seconds (``cutover_max_block``),
    it fails without blocking anything, after a bounded number of rounds. Returns the keys
    left."""
    spec = plan.spec
    with replaying(plan, source, target) as (capture, copier):
        per_key = 0.0005  # seconds to compare one key, until measured
        for round_ in range(NARROW_ROUNDS * 3):
            capture.replay(copier, copier.src, pre, watch.since, deadline=time.monotonic() + REPLAY_SECONDS)
            keys = {**watch.suspects, **watch.since.keys}
            if len(keys) <= NARROW_TO or (round_ >= NARROW_ROUNDS and len(keys) * per_key <= block / 2):
                return len(keys)
            fresh = ReplayStats()
            started = time.monotonic()
            watch.suspects, watch.since = compare_keys(copier, keys), fresh
            per_key = (time.monotonic() - started) / len(keys)
    raise CopyCutoverBusyError(
        f"{where_filter(spec, 'source')}: cannot cut over within cutover_max_block ({block:g} s): "
        f"{len(watch.suspects) + len(watch.since.keys)} rows changed during each of "
        f"{NARROW_ROUNDS * 3} rounds of comparison, more than can be compared with writes blocked "
        "for that long. Nothing was blocked, and the copy goes on following",
        "apply again when writes are fewer, or raise cutover_max_block for this copy",
    )


def drain_blocked(
    plan: CopyPlan,
    conn: sa.Connection,
    source: Engine,
    target: Engine,
    pre: PreexistingKeys,
    watch: FollowWatch,
) -> Drained:
    """Under the block, on ``conn``: replay the whole log, then compare the rows of every key
    logged since the full verification, and those it found different. Raises
    ``CopyCutoverError`` when any still differs."""
    spec = plan.spec
    proxy = conn.connection
    src = _Borrowed(dialect_of(source), proxy.driver_connection, proxy)
    with raw_connection(target) as tgt, _utc(src):
        copier = Copier(plan, src, tgt, source, target)
        before = watch.since.entries
        Capture(plan, source).replay(copier, src, pre, watch.since)
        drained = watch.since.entries - before
        keys = {**watch.suspects, **watch.since.keys}
        differing = len(compare_keys(copier, keys))
        if not differing and impl_for(src.dialect).triggers_miss_changes:
            differing = _count_difference(copier, pre)
        if not differing:
            _check_preexisting_blocked(copier, pre)
    if differing:
        raise CopyCutoverError(
            f"cut-over refused: {where_filter(spec, 'target')} does not match {where_filter(spec, 'source')} "
            f"after replaying every logged change ({differing} row{'s' if differing != 1 else ''} differ), so "
            f"the revision that follows the copy did not run and nothing was dropped; the source keeps every "
            f"write, and the copy and its change capture were removed. Something other than this copy writes "
            f"to {spec.target}.{spec.target_table}, or a change escaped the triggers (TRUNCATE is not logged): "
            f"stop it, then apply again, which copies again",
            differing=differing,
        )
    return Drained(len(keys), drained)


def _other_key(copier: Copier, from_source: bool, row: Sequence[Any]) -> tuple[Any, ...]:
    return copier.keys.to_target_in(row) if from_source else copier.keys.to_source_in(row)


def _count_difference(copier: Copier, pre: PreexistingKeys) -> int:
    """How far the row counts of the two sides are apart: where the triggers can miss a
    change (MariaDB's cascading foreign keys, SQLite's REPLACE), a missed insert or delete
    shows here. (Not with pre-existing target rows, whose keys the source may lack.)"""
    if pre:
        return 0
    counts = []
    for conn, sql in ((copier.src, copier.ssql), (copier.tgt, copier.tsql)):
        counts.append(int(conn.fetch(sql.count())[0][0]))
        conn.rollback()
    return abs(counts[0] - counts[1])


@dataclass(frozen=True)
class Drained:
    """What a follow-mode cut-over did under its block."""

    compared: int  # rows compared
    entries: int  # log entries replayed: the lag left when the block was taken


@dataclass(frozen=True)
class AloneCutover:
    blocked: float  # seconds writers were blocked
    how: str
    drained: Drained


def cut_over_alone(plan: CopyPlan, source: Engine, target: Engine, pre: PreexistingKeys) -> AloneCutover:
    """The cut-over of a follow-mode copy that no revision waits for, at the end of its step:
    verify in full while writes go on, then block writes on a connection of its own, drain
    the log, compare the rows logged since, and remove the capture."""
    watch = watch_follow(plan, source, target, pre)
    catch_up(plan, source, target, pre, watch, plan.spec.cutover_max_block)
    capture = Capture(plan, source)
    with source.connect() as conn:
        conn.begin()
        began = time.monotonic()
        how = block_writes(conn, plan.spec.table, capture.log_table)
        try:
            drained = drain_blocked(plan, conn, source, target, pre, watch)
        except CopyCutoverError:
            conn.rollback()
            release(conn)
            capture.remove()
            delete_copied(plan, target, pre, None)
            raise
        conn.commit()
        release(conn)
        blocked = time.monotonic() - began
    capture.remove()
    return AloneCutover(blocked, how, drained)
