"""Change capture of follow-mode copies (SPEC section 9), on real databases: the triggers log
every insert, update (a key change included) and delete inside the writer's transaction;
replay makes the target equal the source; removal leaves no trigger and no log table."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from orchestrator.copy import PreexistingKeys, copy_table
from orchestrator.copy.capture import Capture, ReplayStats, capture_objects, replaying
from orchestrator.copy.errors import CopyPreflightError
from orchestrator.copy.revert import revert_copy
from orchestrator.copy.schema import build_plan
from tests.conftest import MakeDatabase
from tests.copy.helpers import MemoryStore, capture_objects_left, engine, execute, spec

DIRECTIONS = [("postgresql", "postgresql"), ("postgresql", "mysql"), ("mysql", "postgresql"), ("sqlite", "postgresql")]


def _table(url: str, rows: int) -> None:
    eng = engine(url)
    md = sa.MetaData()
    table = sa.Table(
        "items",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("qty", sa.Integer),
    )
    md.create_all(eng)
    with eng.begin() as conn:
        if rows:
            conn.execute(table.insert(), [{"id": i, "name": f"item {i}", "qty": i % 7} for i in range(1, rows + 1)])
    eng.dispose()


def _rows(url: str) -> list[tuple[object, ...]]:
    eng = engine(url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT id, name, qty FROM items ORDER BY id"))]
    finally:
        eng.dispose()


WRITES = (
    "INSERT INTO items (id, name, qty) VALUES (5001, 'inserted later', 1)",
    "UPDATE items SET name = 'updated later' WHERE id = 3",
    "DELETE FROM items WHERE id = 4",
    "UPDATE items SET id = 6001 WHERE id = 5",  # a key change: the old key goes, the new one comes
    "UPDATE items SET qty = NULL WHERE id = 1500",
)


@pytest.mark.parametrize(("src", "dst"), DIRECTIONS, ids=[f"{s}-to-{d}" for s, d in DIRECTIONS])
def test_writes_after_the_copy_are_logged_and_replayed(src: str, dst: str, make_database: MakeDatabase) -> None:
    source, target = make_database(src), make_database(dst)
    _table(source, 2000)
    _table(target, 0)
    copy = spec(table="items", mode="follow", batch_size=300)
    s, t = engine(source), engine(target)
    try:
        result = copy_table(copy, s, t, MemoryStore())
        assert result.rows_copied == 2000
        assert len(capture_objects_left(source)) >= 2  # the log table and its trigger(s)
        execute(source, *WRITES)
        assert _rows(target) != _rows(source)

        plan = build_plan(copy, s, t)
        with replaying(plan, s, t) as (capture, copier):
            assert capture.lag(copier.src) == 8  # an update logs its old and its new key
            stats = ReplayStats()
            assert capture.replay(copier, copier.src, PreexistingKeys(), stats) == 0
            assert capture.lag(copier.src) == 0
        assert _rows(target) == _rows(source)
        assert len(stats.keys) == 6 and stats.entries == 8  # 5001, 3, 4, 5, 6001, 1500
    finally:
        Capture(build_plan(copy, s, t), s).remove()
        s.dispose()
        t.dispose()
    assert capture_objects_left(source) == []


def test_capture_names_fit_every_identifier_limit() -> None:
    objects = capture_objects(spec(name="x" * 300, table="items", mode="follow"), ["id"])
    assert objects.log.startswith("migrate_capture_") and len(objects.log) <= 63
    assert "x" * 300 in objects.comment


def _limited_user(url: str) -> tuple[str, Callable[[], None]]:
    """A URL of ``url``'s database for a new user that may read and write its rows but may
    create neither tables nor triggers; and how to drop that user."""
    user = f"mig_ro_{uuid.uuid4().hex[:8]}"
    parsed = sa.engine.make_url(url)
    admin = engine(url)
    with admin.begin() as conn:
        if parsed.get_backend_name() == "postgresql":
            conn.execute(sa.text(f"CREATE ROLE {user} LOGIN"))
            conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {parsed.database} TO {user}"))
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {user}"))
            conn.execute(sa.text(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {user}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {user}"))
        else:
            conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"))
            conn.execute(sa.text(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'pw'"))
            for host in ("%", "localhost"):
                conn.execute(
                    sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{parsed.database}`.* TO '{user}'@'{host}'")
                )
    limited = parsed.set(username=user, password=None if parsed.get_backend_name() == "postgresql" else "pw")

    def drop() -> None:
        with admin.begin() as conn:
            if parsed.get_backend_name() == "postgresql":
                conn.execute(sa.text(f"DROP OWNED BY {user}"))
                conn.execute(sa.text(f"DROP ROLE {user}"))
            else:
                conn.execute(sa.text(f"DROP USER '{user}'@'%'"))
                conn.execute(sa.text(f"DROP USER '{user}'@'localhost'"))
        admin.dispose()

    return limited.render_as_string(hide_password=False), drop


@pytest.mark.parametrize("src", ["postgresql", "mysql"])
def test_a_missing_right_fails_before_any_row_moves_naming_it(src: str, make_database: MakeDatabase) -> None:
    source, target = make_database(src), make_database("sqlite")
    _table(source, 50)
    _table(target, 0)
    limited, drop = _limited_user(source)
    s, t = engine(limited), engine(target)
    try:
        with pytest.raises(CopyPreflightError) as failure:
            copy_table(spec(table="items", mode="follow"), s, t, MemoryStore())
        assert "CREATE and TRIGGER" in (failure.value.hint or "")
        assert "needs the rights to create a table and triggers" in failure.value.message
        assert _rows(target) == []
        assert len(_rows(source)) == 50
        assert capture_objects_left(source) == []
    finally:
        s.dispose()
        t.dispose()
        drop()


@pytest.mark.parametrize("src", ["postgresql", "mysql"])
def test_an_application_user_without_rights_on_the_log_still_writes_and_is_logged(
    src: str, make_database: MakeDatabase
) -> None:
    """Applications often write with a user of their own, granted the table and nothing else.
    The triggers log its writes with the rights of the user who created them."""
    source, target = make_database(src), make_database("sqlite")
    _table(source, 20)
    _table(target, 0)
    application, drop = _limited_user(source)  # granted the rows of `items`, before the log exists
    copy = spec(table="items", mode="follow")
    s, t = engine(source), engine(target)
    try:
        copy_table(copy, s, t, MemoryStore())
        execute(application, "UPDATE items SET name = 'by the application' WHERE id = 3")
        with replaying(build_plan(copy, s, t), s, t) as (capture, copier):
            assert capture.lag(copier.src) == 2
            capture.replay(copier, copier.src, PreexistingKeys(), ReplayStats())
        assert _rows(target) == _rows(source)
    finally:
        Capture(build_plan(copy, s, t), s).remove()
        s.dispose()
        t.dispose()
        drop()


def test_the_backfill_does_not_chase_rows_inserted_at_the_end(make_database: MakeDatabase) -> None:
    """A writer appends rows faster than small batches with pauses can copy them. The
    follow-mode backfill copies up to the last key it saw when it began, and ends; the rows
    appended meanwhile come through the log."""
    source, target = make_database("postgresql"), make_database("postgresql")
    _table(source, 100)
    _table(target, 0)
    stop = threading.Event()

    def append() -> None:
        eng = engine(source)
        with eng.connect() as conn:
            key, until = 100_000, time.monotonic() + 40  # a cap, should the copy never end
            while not stop.is_set() and time.monotonic() < until:
                key += 1
                with conn.begin():
                    conn.execute(sa.text(f"INSERT INTO items (id, name, qty) VALUES ({key}, 'appended', 0)"))
        eng.dispose()

    writer = threading.Thread(target=append)
    copy = spec(table="items", mode="follow", batch_size=10, pause_seconds=0.05)
    s, t = engine(source), engine(target)
    try:
        writer.start()
        time.sleep(0.2)
        began = time.monotonic()
        result = copy_table(copy, s, t, MemoryStore())
        took = time.monotonic() - began
        stop.set()
        writer.join()
        assert took < 20, "the backfill chased the appended rows"  # it would until the writer's cap
        assert 100 <= result.rows_copied < len(_rows(source))
        with replaying(build_plan(copy, s, t), s, t) as (capture, copier):
            capture.replay(copier, copier.src, PreexistingKeys(), ReplayStats())
        assert _rows(target) == _rows(source)
    finally:
        stop.set()
        Capture(build_plan(copy, s, t), s).remove()
        s.dispose()
        t.dispose()


@pytest.mark.parametrize("src", ["postgresql", "mysql"])
def test_a_cut_over_that_stopped_with_the_source_still_there_reverts_by_deleting_only(
    src: str, make_database: MakeDatabase
) -> None:
    """A cut-over that began ("cutting") but whose drop never ran left the source taking
    writes: its revert must not carry the target's older rows back over them."""
    source, target = make_database(src), make_database("sqlite")
    _table(source, 30)
    _table(target, 0)
    copy = spec(table="items")
    s, t = engine(source), engine(target)
    try:
        store = MemoryStore()
        copy_table(copy, s, t, store)
        assert store.checkpoint is not None
        store.save(store.checkpoint.with_cutover("cutting"))
        execute(source, "UPDATE items SET name = 'written after the cut-over began' WHERE id = 3")
        expected = _rows(source)

        revert_copy(copy, s, t, store)

        assert _rows(source) == expected
        assert _rows(target) == []
    finally:
        s.dispose()
        t.dispose()
