"""A copy killed with SIGKILL part-way resumes from its checkpoint: no row lost, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.copy import CopyCheckpoint, checksum_table, copy_table
from tests.conftest import MakeDatabase, require_server
from tests.copy.helpers import FileStore, count, engine, spec

ROOT = Path(__file__).resolve().parents[2]
N_ROWS = 200_000
COLUMNS = ["id", "account_id", "title", "amount", "created_at", "note", "active"]


def events_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "events",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False),
    )


def fill_events(url: str, n: int) -> None:
    eng = engine(url)
    md = sa.MetaData()
    table = events_table(md)
    md.create_all(eng)
    if eng.dialect.name == "sqlite":
        with eng.begin() as conn:  # generated inside SQLite: fast and deterministic
            conn.exec_driver_sql(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                "INSERT INTO events SELECT i, i % 9973, 'event ' || i || ' ✓', "
                "(i % 100000) / 100.0, "
                "strftime('%Y-%m-%d %H:%M:%f', 1600000000 + i * 37, 'unixepoch') || '000', "
                "CASE WHEN i % 5 = 0 THEN NULL ELSE 'note for ' || i END, i % 3 = 0 FROM s",
                (n,),
            )
    else:
        with eng.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {
                        "id": i,
                        "account_id": i % 9973,
                        "title": f"event {i} ✓",
                        "amount": (i % 100000) / 100,
                        "created_at": sa.func.now(),
                        "note": None if i % 5 == 0 else f"note for {i}",
                        "active": i % 3 == 0,
                    }
                    for i in range(1, n + 1)
                ],
            )
    eng.dispose()


def make_empty_events(url: str) -> None:
    eng = engine(url)
    md = sa.MetaData()
    events_table(md)
    md.create_all(eng)
    eng.dispose()


@pytest.mark.parametrize(("src", "dst"), [("sqlite", "postgresql"), ("sqlite", "mysql")])
def test_resume_after_sigkill(src: str, dst: str, make_database: MakeDatabase, tmp_path: Path) -> None:
    require_server(dst)
    src_url, dst_url = make_database(src), make_database(dst)
    fill_events(src_url, N_ROWS)
    make_empty_events(dst_url)
    checkpoint_path = tmp_path / "checkpoint.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.copy.resume_child", src_url, dst_url, str(checkpoint_path),
         "7000", "60000"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if checkpoint_path.exists():
                saved = CopyCheckpoint.from_json(checkpoint_path.read_text())
                if saved.rows_copied >= 40_000:
                    break
            assert child.poll() is None, "the child finished before it could be killed"
            time.sleep(0.01)
        time.sleep(0.05)  # let it get part-way into the next batch
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    killed_at = CopyCheckpoint.from_json(checkpoint_path.read_text())
    assert 0 < killed_at.rows_copied < N_ROWS
    # what the target holds is what was committed: at least the checkpoint, at most one batch more
    partial = count(dst_url, "events")
    assert killed_at.rows_copied <= partial <= killed_at.rows_copied + 7000

    store = FileStore(checkpoint_path)
    copy_spec = spec(name="events-copy", table="events", batch_size=7000)
    result = copy_table(copy_spec, engine(src_url), engine(dst_url), store)

    assert count(dst_url, "events") == N_ROWS
    assert result.rows_copied == N_ROWS
    assert result.rows_skipped == 0
    if dst == "postgresql":  # the rows copied before the kill were hashed again from the source
        assert result.checksum.startswith("sha256-text:")
    assert checksum_table(engine(src_url), "events", COLUMNS, ["id"]) == checksum_table(
        engine(dst_url), "events", COLUMNS, ["id"]
    )
    final = store.load()
    assert final is not None and final.last_key == (N_ROWS,)
