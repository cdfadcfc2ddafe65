"""MySQL/MariaDB advisory lock names fit the 64-character limit, the same from every run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.runtime.dblock import mysql_lock_name
from tests.conftest import MYSQL_SERVER, create_server_database, drop_server_database
from tests.executor.ledger_ws import build, chain, snapshot

MIGRATE = str(Path(sys.executable).with_name("migrate"))
LONG_NAME = "mig_lock_" + "x" * 48 + "_" + os.urandom(3).hex()  # 64 characters, MySQL's maximum


def test_short_names_are_kept_and_long_ones_hashed_to_64_characters() -> None:
    assert mysql_lock_name("orders") == "migrate:orders"
    assert mysql_lock_name("d" * 56) == "migrate:" + "d" * 56  # exactly 64: kept
    a, b = mysql_lock_name("d" * 57), mysql_lock_name("d" * 56 + "e")
    assert len(a) == len(b) == 64 and a != b  # same 39-character prefix, different hash
    assert a.startswith("migrate:" + "d" * 39 + ":")
    assert mysql_lock_name("d" * 57) == a  # stable: every orchestrator computes the same name


@pytest.fixture
def long_database() -> Iterator[str]:
    assert len(LONG_NAME) == 64
    url = create_server_database("mysql", LONG_NAME)
    yield url
    drop_server_database("mysql", LONG_NAME)


def _used_by(admin: sa.Connection, name: str) -> int | None:
    found = admin.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
    return None if found is None else int(found)


def test_apply_on_a_64_character_database_name_takes_the_short_lock(long_database: str, tmp_path: Path) -> None:
    ws = build(tmp_path / "ws", {"users": chain("users", 2)}, {"users": long_database})
    expected = mysql_lock_name(LONG_NAME)
    assert len(expected) == 64 and expected != f"migrate:{LONG_NAME}"
    admin = sa.create_engine(f"{MYSQL_SERVER}/", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    run = subprocess.Popen(
        [MIGRATE, "--config", str(ws.manifest), "apply"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MIGRATE_TEST_SLEEP": "1.5"},  # each revision sleeps while the run holds the lock
    )
    holder = None
    try:
        with admin.connect() as conn:
            deadline = time.monotonic() + 30
            while holder is None and run.poll() is None and time.monotonic() < deadline:
                holder = _used_by(conn, expected)
                time.sleep(0.05)
        _out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    assert holder is not None, "no session held the lock under its 64-character name while the run went on"
    assert snapshot(long_database).versions == (ws.revisions["users"][-1],)
    assert snapshot(long_database).ledger == tuple(ws.revisions["users"])
    with admin.connect() as conn:
        assert _used_by(conn, expected) is None  # released at the end of the run
    admin.dispose()
