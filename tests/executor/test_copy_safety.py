"""No rollback, resume or compensation may lose a moved row.

The example workspace's release moves ``users.addresses`` into ``shipping``::

    users:     ... 28b14b901000 (seed 8 addresses) ------------------> f43128fb8d05 (drop) -> [boom]
                                         \\                             ^
    copy:                                 +--> copy:addresses-to-shipping
                                         /
    shipping:  1e2badf1a395 -> a0578c77f893 (create addresses)

Each test asserts on the rows left in both databases, not on what the tool says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import api
from orchestrator.runtime.journal import open_journal
from tests.conftest import MakeDatabase
from tests.executor.example import COLUMNS, SEED, copy_example
from tests.executor.example import address_rows as _rows


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


MIGRATE = str(Path(sys.executable).with_name("migrate"))
COPY = "copy:addresses-to-shipping"
SHIPPING_BASE = "shipping@1e2badf1a395"
BOOM = '''"""boom

Revision ID: ffff00000001
Revises: f43128fb8d05
"""
from alembic import op

revision = "ffff00000001"
down_revision = "f43128fb8d05"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE boom_marker (id INTEGER)")
    raise RuntimeError("boom after the drop")


def downgrade() -> None:
    op.execute("DROP TABLE boom_marker")
'''


def _project(ws: Path, env: str, make_database: MakeDatabase | None) -> api.Project:
    if env == "dev":
        return api.open_project(str(ws / "migrate.toml"))
    assert make_database is not None
    environ = {
        "CI_USERS_DATABASE_URL": make_database("postgresql"),
        "CI_ORDERS_DATABASE_URL": make_database("postgresql"),
        "CI_BILLING_DATABASE_URL": make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
        "CI_SHIPPING_DATABASE_URL": make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
    }
    return api.open_project(str(ws / "migrate.toml"), environ=environ)


def _heads(project: api.Project, env: str) -> dict[str, tuple[str, ...]]:
    return api.observe(project, env).as_dict()


@pytest.mark.parametrize("env", ["dev", "ci"])
def test_failure_after_the_drop_brings_every_row_back(workspace: Path, env: str, make_database: MakeDatabase) -> None:
    """A users revision after the drop raises: compensation re-creates users.addresses, carries
    the 8 rows back from shipping, then drops shipping.addresses. Every row is in users."""
    project = _project(workspace, env, make_database)
    seeded = api.apply(project, env, targets=[SEED, SHIPPING_BASE])
    assert seeded.exit_code == 0, seeded.message
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    original = _rows(users, "addresses")
    assert original is not None and len(original) == 8
    (workspace / "services/users/migrations/versions/ffff00000001_boom.py").write_text(BOOM)
    project = _project_again(project, workspace)

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    assert failed.outcome == "rolled_back"
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") is None
    heads = _heads(project, env)
    assert heads["users"] == ("28b14b901000",) and heads["shipping"] == ("1e2badf1a395",)
    steps = {s.node: s.status for s in failed.steps}
    assert steps[COPY] == "undone" and steps["users@f43128fb8d05"] == "undone"


def _project_again(project: api.Project, ws: Path) -> api.Project:
    return api.open_project(str(ws / "migrate.toml"), environ=dict(project.environ))


def _set_copy_option(ws: Path, line: str) -> None:
    manifest = ws / "migrate.toml"
    manifest.write_text(manifest.read_text().replace("batch_size = 1000", f"batch_size = 1000\n{line}"))


def _count(url: str, table: str) -> int | None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return None
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("env", ["dev", "ci"])
def test_copy_resumed_after_a_kill_past_its_last_batch_can_be_reverted(
    workspace: Path, env: str, make_database: MakeDatabase
) -> None:
    """Killed in the pause after the last batch; the next apply resumes with nothing left to
    copy. Its revert still knows what the copy wrote: every row comes back to users."""
    _set_copy_option(workspace, "pause_seconds = 4")
    project = _project(workspace, env, make_database)
    assert api.apply(project, env, targets=[SEED]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    original = _rows(users, "addresses")

    proc = subprocess.Popen(
        [MIGRATE, "--config", str(workspace / "migrate.toml"), "apply", "--env", env],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in {**os.environ, **project.environ}.items() if k != "MIGRATE_CONFIG"},
    )
    try:
        deadline = time.monotonic() + 60
        while (_count(shipping, "addresses") or 0) < 8:
            assert proc.poll() is None and time.monotonic() < deadline, "the copy never wrote its batch"
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the 4 s pause after the last (only) batch
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    resumed = api.apply(project, env)
    assert resumed.exit_code == 0, resumed.message
    assert _rows(shipping, "addresses") == original and _rows(users, "addresses") is None

    back = api.rollback(project, env, to=SHIPPING_BASE)
    assert back.exit_code == 0, back.message
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") is None


@pytest.mark.parametrize("env", ["dev", "ci"])
def test_revert_carries_the_targets_changes_back(workspace: Path, env: str, make_database: MakeDatabase) -> None:
    """Once the move is done (the copy cut over and users.addresses was dropped), shipping is
    where the application writes: row 1 is edited there and row 500 is added. Rolling the
    move back re-creates users.addresses and carries every copied row back as shipping holds
    it, both changes included; the dry run says so first. (Before cut-over the source is the
    truth and a revert only deletes the copy: tests/executor/test_cutover.py.)"""
    project = _project(workspace, env, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    original = _rows(users, "addresses")
    moved = api.apply(project, env)
    assert moved.exit_code == 0, moved.message
    assert original is not None and _rows(shipping, "addresses") == original and _rows(users, "addresses") is None
    engine = sa.create_engine(shipping, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE addresses SET street = 'moved street' WHERE id = 1"))
        conn.execute(
            sa.text(
                "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
                "SELECT 500, user_id, 'new street', city, postcode, country, created_at FROM addresses WHERE id = 2"
            )
        )
    engine.dispose()
    expected = _rows(shipping, "addresses")
    assert expected is not None and len(expected) == 9 and expected != original

    dry = api.rollback(project, env, run_id=moved.run_id, dry_run=True)
    assert dry.exit_code == 0
    (note,) = dry.reverts
    assert (note.copied_rows, note.insert_into_source, note.update_in_source) == (9, 9, 0)
    assert "carry all 9 copied rows back into users.addresses" in note.text
    assert _rows(shipping, "addresses") == expected and _rows(users, "addresses") is None  # the dry run changed nothing

    back = api.rollback(project, env, run_id=moved.run_id)
    assert back.exit_code == 0, back.message
    assert _rows(users, "addresses") == expected
    assert _rows(shipping, "addresses") == []


@pytest.mark.parametrize("env", ["dev", "ci"])
def test_a_conflicting_row_in_the_target_fails_the_copy_and_the_drop_never_runs(
    workspace: Path, env: str, make_database: MakeDatabase
) -> None:
    """shipping.addresses already holds address 1 with another street. `apply` fails the copy
    naming the key and the column; the drop (users@f43128fb8d05) never runs: users keeps every
    row, shipping keeps only its own row, and every database is at its previous revision."""
    project = _project(workspace, env, make_database)
    assert api.apply(project, env, targets=[SEED, "shipping@a0578c77f893"]).exit_code == 0
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    original = _rows(users, "addresses")
    assert original is not None and len(original) == 8
    _insert_address(shipping, original[0], street="DIFFERENT")
    theirs = _rows(shipping, "addresses")
    heads = _heads(project, env)

    failed = api.apply(project, env)

    assert failed.exit_code == 1, failed.message
    steps = {s.node: s for s in failed.steps}
    copy = steps[COPY]
    assert copy.status == "failed" and copy.error is not None
    assert "key (id=1)" in copy.error and "column 'street'" in copy.error and "'DIFFERENT'" in copy.error
    assert steps["users@f43128fb8d05"].status == "pending"
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") == theirs
    assert _heads(project, env) == heads


def _insert_address(url: str, row: tuple[object, ...], **changes: object) -> None:
    """Insert ``row`` (as read by ``address_rows``) into ``url``'s addresses, with ``changes``."""
    values = dict(zip(COLUMNS.split(", "), row, strict=True)) | changes
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO addresses ({COLUMNS}) VALUES ({', '.join(':' + c for c in values)})"), values
        )
    engine.dispose()


def test_copy_record_survives_compensation_bookkeeping(workspace: Path) -> None:
    """What a revert knows comes from the env's copy record, not from step statuses: after
    the failed run of the first test, the record says the copy was reverted."""
    project = api.open_project(str(workspace / "migrate.toml"))
    assert api.apply(project, "dev").exit_code == 0
    journal = open_journal(project.manifest, "dev", project.environ)
    try:
        record = journal.copy_record("addresses-to-shipping")
        assert record is not None and record[0] == "copied"
        assert api.rollback(project, "dev").exit_code == 0
        record = journal.copy_record("addresses-to-shipping")
        assert record is not None and record[0] == "reverted"
    finally:
        journal.close()


@pytest.mark.parametrize("env", ["dev", "ci"])
@pytest.mark.parametrize("edit", ["copy removed", "copy after the drop"])
def test_re_fingerprinted_plan_without_its_copy_is_refused(
    workspace: Path, edit: str, env: str, make_database: MakeDatabase
) -> None:
    """A plan file edited so that the drop no longer follows the copy, then given a valid
    fingerprint again, is refused (exit 3) naming the step, by `apply` and by `check --plan`;
    no database changes."""
    import dataclasses
    import json

    from orchestrator.core.planfile import plan_to_json
    from orchestrator.core.planner import seal
    from orchestrator.errors import PlanConflictError

    project = _project(workspace, env, make_database)
    assert api.apply(project, env, targets=[SEED]).exit_code == 0
    users = project.url(env, "users")
    original = _rows(users, "addresses")
    heads = _heads(project, env)
    plan = api.make_plan(project, env).plan
    steps = [s for s in plan.steps if s.id != COPY]
    if edit == "copy after the drop":
        copy_step = next(s for s in plan.steps if s.id == COPY)
        drop = next(i for i, s in enumerate(steps) if s.id == "users@f43128fb8d05")
        steps.insert(drop + 1, copy_step)
    forged = seal(dataclasses.replace(plan, steps=tuple(steps)))
    path = workspace / "forged.json"
    path.write_text(json.dumps(plan_to_json(forged)))

    with pytest.raises(PlanConflictError) as caught:
        api.apply(project, env, plan_file=str(path))

    assert caught.value.exit_code == 3
    assert f"step users@f43128fb8d05 needs {COPY} first" in caught.value.message
    assert _rows(users, "addresses") == original
    assert _rows(project.url(env, "shipping"), "addresses") is None
    assert _heads(project, env) == heads and heads["users"] == ("28b14b901000",)
    checked = api.check(str(workspace / "migrate.toml"), environ=project.environ, plan_file=str(path))
    assert [f.code for f in checked.findings] == ["MG501"]
