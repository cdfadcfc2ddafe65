"""Cut-over of a snapshot copy (SPEC section 9): a write to the source after the copy never
lets the drop run, and the revert of a copy that has not cut over leaves the source alone.

The example workspace moves ``users.addresses`` into ``shipping`` and then drops it in
``users@f43128fb8d05``. Each test asserts on the rows left in both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import api
from orchestrator.copy import CopyCheckpoint, PreexistingKeys
from orchestrator.runtime.journal import open_journal
from tests.conftest import MakeDatabase
from tests.copy.helpers import capture_objects_left
from tests.executor.example import SEED, copy_example
from tests.executor.example import address_rows as _rows

MIGRATE = str(Path(sys.executable).with_name("migrate"))
COPY = "copy:addresses-to-shipping"
DROP = "users@f43128fb8d05"


def _project(ws: Path, where: str, make_database: MakeDatabase) -> tuple[api.Project, str]:
    """The workspace and its env: ``dev`` (SQLite), ``ci`` (users on PostgreSQL, shipping on
    MariaDB), or ``ci`` with users on MariaDB and shipping on PostgreSQL."""
    if where == "dev":
        return api.open_project(str(ws / "migrate.toml")), "dev"
    mariadb_users = where == "ci-mariadb-users"
    users = make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql") if mariadb_users else None
    environ = {
        "CI_USERS_DATABASE_URL": users or make_database("postgresql"),
        "CI_ORDERS_DATABASE_URL": make_database("postgresql"),
        "CI_BILLING_DATABASE_URL": make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
        "CI_SHIPPING_DATABASE_URL": make_database("postgresql")
        if mariadb_users
        else make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
    }
    return api.open_project(str(ws / "migrate.toml"), environ=environ), "ci"


def _write(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


LATE_WRITES = (
    "UPDATE addresses SET street = 'written after the copy' WHERE id = 3",
    "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
    "SELECT 900, user_id, 'inserted after the copy', city, postcode, country, created_at FROM addresses WHERE id = 1",
)


def _copy_record(project: api.Project, env: str) -> tuple[str, CopyCheckpoint]:
    journal = open_journal(project.manifest, env, project.environ)
    try:
        record = journal.copy_record("addresses-to-shipping")
    finally:
        journal.close()
    assert record is not None
    return record[0], CopyCheckpoint.from_json(record[1])


@pytest.mark.parametrize("where", ["dev", "ci", "ci-mariadb-users"])
def test_a_write_after_the_copy_stops_the_drop(tmp_path: Path, where: str, make_database: MakeDatabase) -> None:
    """The copy ran in one apply; the source then took an update and an insert. The next
    apply's cut-over re-reads the source with writes blocked, sees 2 rows differ, and fails
    before the drop: users.addresses keeps every write, the stale copy is removed from
    shipping, every database is at its previous revision. Once the writers stopped, apply
    copies again and the move completes with the late writes in shipping."""
    workspace = copy_example(tmp_path, mode="snapshot")
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    copied = api.apply(project, env, targets=[COPY])
    assert copied.exit_code == 0, copied.message
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    state, checkpoint = _copy_record(project, env)
    assert state == "copied" and checkpoint.cutover == "pending" and not checkpoint.cut_over
    _write(users, *LATE_WRITES)
    expected = _rows(users, "addresses")
    assert expected is not None and len(expected) == 9
    heads = api.observe(project, env).as_dict()

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    failing = next(s for s in failed.steps if s.status == "failed")
    assert failing.node == DROP
    assert failing.error is not None and "cut-over refused" in failing.error and "2 rows differ" in failing.error
    assert _rows(users, "addresses") == expected  # nothing dropped, every write kept
    assert _rows(shipping, "addresses") == []  # the stale copy went
    assert api.observe(project, env).as_dict() == heads
    assert _copy_record(project, env)[0] == "reverted"

    again = api.apply(project, env)

    assert again.exit_code == 0, again.message
    assert _rows(shipping, "addresses") == expected
    assert _rows(users, "addresses") is None
    state, checkpoint = _copy_record(project, env)
    assert state == "copied" and checkpoint.cutover == "done" and checkpoint.blocked_seconds is not None


@pytest.mark.parametrize("where", ["dev", "ci"])
def test_revert_before_cut_over_leaves_the_source_alone(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """Until cut-over the source is the truth: rolling back a copy whose drop has not run
    deletes the copied rows from the target and carries nothing back, so an update made to
    the source after the copy is not overwritten by the copy's older value."""
    workspace = copy_example(tmp_path, mode="snapshot")
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    _write(users, *LATE_WRITES)
    expected = _rows(users, "addresses")

    dry = api.rollback(project, env, dry_run=True)
    (note,) = dry.reverts
    assert (note.copied_rows, note.insert_into_source, note.update_in_source) == (8, 0, 0)
    assert "has not cut over" in note.text

    back = api.rollback(project, env)

    assert back.exit_code == 0, back.message
    assert _rows(users, "addresses") == expected
    assert _rows(shipping, "addresses") == []


def test_checkpoint_keeps_its_cut_over_state() -> None:
    """The state survives the journal's JSON; a checkpoint written before cut-overs existed
    reads as cut over (its revert carries rows back, as it always did)."""
    pending = CopyCheckpoint((8,), 8, PreexistingKeys(), 0).with_cutover("pending")
    assert CopyCheckpoint.from_json(pending.to_json()) == pending and not pending.cut_over
    done = pending.with_cutover("done", 0.25)
    assert CopyCheckpoint.from_json(done.to_json()).blocked_seconds == 0.25
    legacy = CopyCheckpoint((8,), 8, PreexistingKeys(), 0)
    assert "cutover" not in legacy.to_json() and CopyCheckpoint.from_json(legacy.to_json()).cut_over


ORIGINAL_DROP = '''
def upgrade() -> None:
    """Upgrade schema."""
    op.drop_table("addresses")


def downgrade() -> None:
'''
SLOW_DROP = '''
def upgrade() -> None:
    """Upgrade schema."""
    import time

    op.create_table("moved_tables", sa.Column("name", sa.String(50), primary_key=True))
    op.execute("INSERT INTO moved_tables (name) VALUES ('addresses')")
    time.sleep(2)  # a writer queues up behind the cut-over's block meanwhile
    op.drop_table("addresses")


def downgrade() -> None:
'''


def _slow_drop(workspace: Path) -> Path:
    drop = workspace / "services/users/migrations/versions/f43128fb8d05_drop_addresses_moved_to_shipping.py"
    head, tail = drop.read_text().split(ORIGINAL_DROP)
    drop.write_text(head + SLOW_DROP + tail)
    return workspace


def _writer(url: str, start: threading.Event, stop: threading.Event, committed: list[int], failed: list[str]) -> None:
    """Inserts one row at a time, each in its own transaction, from the moment ``start`` is
    set; records each insert that committed, and stops at the first that failed."""
    start.wait(60)
    time.sleep(0.5)  # the block is taken and the source verified (8 rows) by then
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        for key in range(5000, 5200):
            if stop.is_set():
                return
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
                            f"SELECT {key}, user_id, 'written during the cut-over', city, postcode, country, "
                            "created_at FROM addresses WHERE id = 1"
                        )
                    )
            except sa.exc.DBAPIError as exc:
                failed.append(str(exc.orig))
                return
            committed.append(key)
            time.sleep(0.01)
    finally:
        engine.dispose()


@pytest.mark.parametrize("where", ["dev", "ci", "ci-mariadb-users"])
def test_no_write_slips_in_between_the_cut_over_and_the_drop(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """A writer starts inserting into users.addresses just after the cut-over began, while
    the drop revision first creates and fills another table, then sleeps. Its inserts wait
    behind the block and fail once the table is gone: every insert that committed is in
    shipping, none was dropped. On MariaDB this also shows the revision may touch tables
    other than the source, which the block (handed over to it) does not forbid."""
    workspace = _slow_drop(copy_example(tmp_path, mode="snapshot"))
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    before = _rows(users, "addresses")
    assert before is not None

    start, stop = threading.Event(), threading.Event()
    committed: list[int] = []
    failed: list[str] = []
    writer = threading.Thread(target=_writer, args=(users, start, stop, committed, failed))
    writer.start()

    def watch() -> None:  # the writer starts when the journal says the cut-over began
        while not stop.is_set():
            if _copy_record(project, env)[1].cutover == "cutting":
                start.set()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = api.apply(project, env)
    finally:
        stop.set()
        start.set()
        writer.join()
        watcher.join()

    assert result.exit_code == 0, result.message
    assert _rows(users, "addresses") is None
    with sa.create_engine(users, poolclass=sa.pool.NullPool).connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM moved_tables")).scalars().all() == ["addresses"]
    moved = _rows(shipping, "addresses")
    assert moved is not None
    assert moved[: len(before)] == before
    assert [int(str(r[0])) for r in moved[len(before) :]] == committed  # every committed write, once
    assert failed, "the writer's insert behind the block should have failed once the table was dropped"
    assert _copy_record(project, env)[1].cutover == "done"


def _kill_in_the_cut_over(workspace: Path, project: api.Project, env: str) -> None:
    """Run `migrate apply` and SIGKILL it while the (slow) drop revision runs under the
    cut-over's block."""
    process = subprocess.Popen(
        [MIGRATE, "--config", str(workspace / "migrate.toml"), "apply", "--env", env],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **project.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while _copy_record(project, env)[1].cutover != "cutting":
            assert process.poll() is None and time.monotonic() < deadline, "the cut-over never began"
            time.sleep(0.01)
        time.sleep(0.5)  # inside the revision's sleep, under the block
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("where", ["dev", "ci"])
def test_a_run_killed_in_the_cut_over_verifies_again_when_resumed(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """SIGKILL while the drop revision runs under the cut-over's block: its transaction dies
    with the process, the journal says the cut-over began ("cutting"). Writes then reach the
    source while nothing runs. The resumed apply must verify again, so it refuses the drop
    and every write is still in users.addresses."""
    workspace = _slow_drop(copy_example(tmp_path, mode="snapshot"))
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    _kill_in_the_cut_over(workspace, project, env)
    assert api.observe(project, env).as_dict()["users"] == ("ea29cd865dcc",)  # the drop died with it
    _write(users, *LATE_WRITES)
    expected = _rows(users, "addresses")
    assert expected is not None and len(expected) == 9

    resumed = api.apply(project, env)

    assert resumed.exit_code == 1, resumed.message
    failing = next(s for s in resumed.steps if s.status == "failed")
    assert failing.node == DROP and failing.error is not None and "2 rows differ" in failing.error
    assert _rows(users, "addresses") == expected
    assert _rows(shipping, "addresses") == []
    assert api.observe(project, env).as_dict()["users"] == ("ea29cd865dcc",)


@pytest.mark.parametrize("where", ["dev", "ci", "ci-mariadb-users"])
def test_follow_mode_carries_writes_made_after_the_copy_through_the_cut_over(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """mode = "follow": the copy step ends with capture on; the source then takes an update,
    an insert and a delete. The next apply replays them, cuts over with writes blocked, runs
    the drop: shipping holds exactly what users held, and no trigger or log table remains."""
    workspace = copy_example(tmp_path, mode="follow")
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    copied = api.apply(project, env, targets=[COPY])
    assert copied.exit_code == 0, copied.message
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    assert capture_objects_left(users) != []
    _write(users, *LATE_WRITES, "DELETE FROM addresses WHERE id = 2")
    expected = _rows(users, "addresses")
    assert expected is not None and len(expected) == 8
    (following,) = api.status(project, env).following_copies
    assert (following.copy, following.lag) == ("addresses-to-shipping", 4)  # an update logs two keys

    done = api.apply(project, env)

    assert done.exit_code == 0, done.message
    assert _rows(shipping, "addresses") == expected
    assert _rows(users, "addresses") is None
    assert capture_objects_left(users) == []
    state, checkpoint = _copy_record(project, env)
    assert state == "copied" and checkpoint.cutover == "done" and checkpoint.blocked_seconds is not None


LIVE = {
    # direction: (users' dialect, shipping's dialect)
    "pg-to-pg": ("postgresql", "postgresql"),
    "pg-to-mariadb": ("postgresql", "mariadb"),
    "mariadb-to-pg": ("mariadb", "postgresql"),
    "sqlite-to-pg": ("sqlite", "postgresql"),
}
LIVE_ROWS = 100_000


def _live_project(ws: Path, direction: str, make_database: MakeDatabase) -> api.Project:
    def url(dialect: str) -> str:
        if dialect == "mariadb":
            return make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql")
        return make_database(dialect)

    users, shipping = LIVE[direction]
    environ = {
        "CI_USERS_DATABASE_URL": url(users),
        "CI_ORDERS_DATABASE_URL": url("postgresql"),
        "CI_BILLING_DATABASE_URL": url("mariadb"),
        "CI_SHIPPING_DATABASE_URL": url(shipping),
    }
    return api.open_project(str(ws / "migrate.toml"), environ=environ)


def _seed_many(url: str, first: int, rows: int) -> None:
    """``rows`` more addresses, ids from ``first``, each copying address 1 but its street."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            one = conn.execute(
                sa.text("SELECT user_id, city, postcode, country, created_at FROM addresses WHERE id = 1")
            )
            user_id, city, postcode, country, created_at = one.one()
            insert = sa.text(
                "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
                "VALUES (:id, :user_id, :street, :city, :postcode, :country, :created_at)"
            )
            batch = [
                {
                    "id": i,
                    "user_id": user_id,
                    "street": f"street {i}",
                    "city": city,
                    "postcode": postcode,
                    "country": country,
                    "created_at": created_at,
                }
                for i in range(first, first + rows)
            ]
            for i in range(0, len(batch), 10_000):
                conn.execute(insert, batch[i : i + 10_000])
    finally:
        engine.dispose()


def _streets(url: str) -> dict[int, str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {int(i): str(s) for i, s in conn.execute(sa.text("SELECT id, street FROM addresses"))}
    finally:
        engine.dispose()


@pytest.mark.parametrize("direction", list(LIVE))
def test_a_live_writer_loses_nothing_through_a_follow_mode_move(
    tmp_path: Path, direction: str, make_database: MakeDatabase
) -> None:
    """A writer process inserts, updates and deletes addresses at 200 writes per second, each
    in its own transaction, from before the copy until the drop: through the backfill of
    100,000 rows, the replay, a pause while nothing runs, the cut-over and the drop. Then
    shipping.addresses is exactly what every committed write made of users.addresses, and
    no trigger or log table remains."""
    workspace = copy_example(tmp_path, mode="follow")
    project = _live_project(workspace, direction, make_database)
    env = "ci"
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    _seed_many(users, 1000, LIVE_ROWS)
    expected = _streets(users)
    log, stop = tmp_path / "writes.jsonl", tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.live_writer", users, str(log), str(stop), "200", "7", "1000", "100999"],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 30
        while not log.exists() or len(log.read_text().splitlines()) < 20:
            assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.05)
        copied = api.apply(project, env, targets=[COPY])
        assert copied.exit_code == 0, copied.message
        time.sleep(1.5)  # writes go on while nothing runs
        done = api.apply(project, env)
        assert done.exit_code == 0, done.message
        writer.wait(timeout=30)  # its next write finds the table gone
    finally:
        stop.touch()
        writer.wait(timeout=30)

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert "stopped" in lines[-1], "the writer should have been writing until the drop"
    writes = lines[:-1]
    assert len(writes) > 200
    for write in writes:
        if write["op"] == "delete":
            expected.pop(write["id"])
        else:
            expected[write["id"]] = write["street"]
    assert _streets(shipping) == expected
    assert _rows(users, "addresses") is None
    assert capture_objects_left(users) == []


FAILING_DROP = '''
def upgrade() -> None:
    """Upgrade schema."""
    raise RuntimeError("the drop revision fails")


def downgrade() -> None:
'''


@pytest.mark.parametrize("where", ["dev", "ci"])
def test_follow_mode_a_failing_revision_before_the_cut_over_removes_capture_and_copy(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """One apply runs the follow-mode copy, then its `before` revision fails. The run rolls
    back: the copy had not cut over, so its rows leave shipping, its capture leaves users,
    and users.addresses keeps every row and the write made after the copy."""
    workspace = copy_example(tmp_path, mode="follow")
    drop = workspace / "services/users/migrations/versions/f43128fb8d05_drop_addresses_moved_to_shipping.py"
    head, tail = drop.read_text().split(ORIGINAL_DROP)
    drop.write_text(head + FAILING_DROP + tail)
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    original = _rows(users, "addresses")

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    assert next(s for s in failed.steps if s.status == "failed").node == DROP
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") in ([], None)  # emptied, or its table undone too
    assert capture_objects_left(users) == []


@pytest.mark.parametrize("where", ["dev", "ci"])
def test_follow_mode_killed_in_the_backfill_then_written_to_loses_nothing(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """SIGKILL while the follow-mode copy pauses between batches; writes reach the source
    while nothing runs (the capture, left in place, logs them). The next apply resumes the
    copy, replays the log, cuts over and drops: shipping holds every write."""
    workspace = copy_example(tmp_path, mode="follow")
    manifest = workspace / "migrate.toml"
    manifest.write_text(manifest.read_text().replace("batch_size = 1000", "batch_size = 2\npause_seconds = 1"))
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    process = subprocess.Popen(
        [MIGRATE, "--config", str(manifest), "apply", "--env", env, "--target", COPY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **project.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while len(_rows(shipping, "addresses") or []) < 2:
            assert process.poll() is None and time.monotonic() < deadline, "the copy never began"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert capture_objects_left(users) != []
    # rows the copy had passed change too
    _write(
        users,
        *LATE_WRITES,
        "UPDATE addresses SET street = 'after the kill' WHERE id = 1",
        "DELETE FROM addresses WHERE id = 2",
    )
    expected = _rows(users, "addresses")

    done = api.apply(project, env)

    assert done.exit_code == 0, done.message
    assert _rows(shipping, "addresses") == expected
    assert _rows(users, "addresses") is None
    assert capture_objects_left(users) == []


@pytest.mark.parametrize("where", ["dev", "ci"])
def test_follow_mode_killed_in_the_cut_over_replays_what_came_since(
    tmp_path: Path, where: str, make_database: MakeDatabase
) -> None:
    """SIGKILL while the drop revision runs under the follow-mode cut-over's block; writes
    then reach the source. The resumed apply replays them and completes the move."""
    workspace = _slow_drop(copy_example(tmp_path, mode="follow"))
    project, env = _project(workspace, where, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    _kill_in_the_cut_over(workspace, project, env)
    _write(users, *LATE_WRITES)
    expected = _rows(users, "addresses")

    resumed = api.apply(project, env)

    assert resumed.exit_code == 0, resumed.message
    assert _rows(shipping, "addresses") == expected
    assert _rows(users, "addresses") is None
    assert capture_objects_left(users) == []


@pytest.mark.parametrize("mode", ["snapshot", "follow"])
def test_a_row_the_target_held_before_the_copy_and_changed_since_in_the_source_stops_the_drop(
    tmp_path: Path, mode: str, make_database: MakeDatabase
) -> None:
    """shipping already held address 1, equal to users' (a pre-existing row: not the copy's,
    not compared with the copied rows). users then changes address 1. The cut-over checks the
    pre-existing rows again under the block and refuses: the drop would lose that update."""
    workspace = copy_example(tmp_path, mode=mode)
    project, env = _project(workspace, "dev", make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    _write(
        shipping,
        "ATTACH DATABASE '" + users.removeprefix("sqlite:///") + "' AS u",
        "INSERT INTO addresses SELECT * FROM u.addresses WHERE id = 1",
    )
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    _write(users, "UPDATE addresses SET street = 'changed after the copy' WHERE id = 1")
    expected = _rows(users, "addresses")

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    failing = next(s for s in failed.steps if s.status == "failed")
    assert failing.node == DROP and failing.error is not None and "cut-over refused" in failing.error
    assert _rows(users, "addresses") == expected
    assert capture_objects_left(users) == []


def test_mariadb_hand_over_stops_a_statement_that_would_let_writers_in(
    tmp_path: Path, make_database: MakeDatabase
) -> None:
    """On MariaDB the block passes to the revision only at its DROP of the table. A revision
    that first deletes from the table would wait behind the block, and releasing it would let
    queued writers in before the drop: that statement is stopped, the revision fails, nothing
    is dropped and users keeps every row."""
    workspace = copy_example(tmp_path, mode="snapshot")
    manifest = workspace / "migrate.toml"
    manifest.write_text(
        manifest.read_text().replace("batch_size = 1000", 'batch_size = 1000\ncutover_max_block = "300ms"')
    )
    drop = workspace / "services/users/migrations/versions/f43128fb8d05_drop_addresses_moved_to_shipping.py"
    head, tail = drop.read_text().split(ORIGINAL_DROP)
    delete_first = ORIGINAL_DROP.replace(
        '    op.drop_table("addresses")',
        '    op.execute("DELETE FROM addresses WHERE id = 8")\n    op.drop_table("addresses")',
    )
    drop.write_text(head + delete_first + tail)
    project, env = _project(workspace, "ci-mariadb-users", make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    assert api.apply(project, env, targets=[COPY]).exit_code == 0
    users = project.url(env, "users")
    expected = _rows(users, "addresses")

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    assert next(s for s in failed.steps if s.status == "failed").node == DROP
    assert _rows(users, "addresses") == expected
