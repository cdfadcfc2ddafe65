"""The failure x kill matrix of the example workspace's move of ``users.addresses`` into
``shipping``, with enough rows for several batches.

Failure positions (a revision ``F`` that raises, placed with the manifest)::

    before the copy:   ... F -> copy -> drop         (F in the copy's `after`)
    after the copy:    ... copy -> F -> drop         (F in the copy's `before`; the drop needs F)
    after the drop:    ... copy -> drop -> F         (F revises the drop)

each compensated by the run itself, or kept (``--no-rollback``) and rolled back by hand. Then
kills (SIGKILL of a real ``migrate`` process) in each phase of a copy: its batches, the pause
after its last batch, its verification, and its revert; each followed by a plain ``apply`` (or
``rollback``) that resumes. After every scenario each original row is in users or in shipping,
exactly once and unchanged, and where the copy is not recorded complete shipping holds none.

Where the databases are: ``dev`` (SQLite), ``ci`` (users on PostgreSQL, shipping on MariaDB)
and, for the kills in the batches and in the pause, ``ci`` the other way round (users on
MariaDB, shipping on PostgreSQL: a MariaDB to PostgreSQL copy).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import api
from tests.conftest import MakeDatabase
from tests.executor.example import SEED, copy_example
from tests.executor.example import address_rows as _rows


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


MIGRATE = str(Path(sys.executable).with_name("migrate"))
ROWS = 3000
COPY = "copy:addresses-to-shipping"
FAIL_ID = "ffff00000009"


def _failing(down: str, service: str) -> str:
    return f'''"""fails on purpose"""
from alembic import op

revision = "{FAIL_ID}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE {service}_marker (id INTEGER)")
    raise RuntimeError("F fails")


def downgrade() -> None:
    op.execute("DROP TABLE {service}_marker")
'''


def _place_failure(ws: Path, position: str) -> None:
    manifest = ws / "migrate.toml"
    text = manifest.read_text()
    if position == "after the drop":
        path = ws / "services/users/migrations/versions" / f"{FAIL_ID}_f.py"
        path.write_text(_failing("f43128fb8d05", "users"))
        return
    path = ws / "services/shipping/migrations/versions" / f"{FAIL_ID}_f.py"
    path.write_text(_failing("f280d87d553b", "shipping"))
    if position == "before the copy":
        text = text.replace('"shipping@a0578c77f893",', f'"shipping@{FAIL_ID}", "shipping@a0578c77f893",')
    else:
        text = text.replace('"users@f43128fb8d05",', f'"users@f43128fb8d05", "shipping@{FAIL_ID}",')
        text += f'\n[[requires]]\nnode = "users@f43128fb8d05"\nneeds = ["shipping@{FAIL_ID}"]\n'
    manifest.write_text(text)


def _set(ws: Path, **options: object) -> None:
    manifest = ws / "migrate.toml"
    text = manifest.read_text().replace("batch_size = 1000\n", "")
    lines = "".join(f"{k} = {v}\n" for k, v in options.items())
    manifest.write_text(text.replace('table = "addresses"', f'table = "addresses"\n{lines}', 1))


def _project(ws: Path, where: str, make_database: MakeDatabase) -> tuple[api.Project, str]:
    """The workspace and its env: ``dev`` (SQLite), ``ci`` (users on PostgreSQL, shipping on
    MariaDB), or ``mariadb-to-pg``: the ``ci`` env with users on MariaDB and shipping on
    PostgreSQL."""
    if where == "dev":
        return api.open_project(str(ws / "migrate.toml")), "dev"

    def mariadb() -> str:
        return make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql")

    reversed_ = where == "mariadb-to-pg"
    environ = {
        "CI_USERS_DATABASE_URL": mariadb() if reversed_ else make_database("postgresql"),
        "CI_ORDERS_DATABASE_URL": make_database("postgresql"),
        "CI_BILLING_DATABASE_URL": mariadb(),
        "CI_SHIPPING_DATABASE_URL": make_database("postgresql") if reversed_ else mariadb(),
    }
    (ws / "ci.env").write_text("".join(f"{k}={v}\n" for k, v in environ.items()))
    return api.open_project(str(ws / "migrate.toml"), environ=environ), "ci"


def _seed(project: api.Project, env: str, n: int = ROWS) -> list[tuple[object, ...]]:
    """Seed users (8 addresses), then add rows up to ``n``; return them all."""
    assert api.apply(project, env, targets=[SEED]).exit_code == 0
    users = project.url(env, "users")
    engine = sa.create_engine(users, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        template = conn.execute(sa.text("SELECT user_id, city, postcode, country, created_at FROM addresses")).first()
        assert template is not None
        conn.execute(
            sa.text(
                "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
                "VALUES (:id, :user_id, :street, :city, :postcode, :country, :created_at)"
            ),
            [dict(template._mapping, id=i, street=f"{i} Long Road") for i in range(9, n + 1)],
        )
    engine.dispose()
    rows = _rows(users, "addresses")
    assert rows is not None and len(rows) == n
    return rows


def _assert_every_row_once(project: api.Project, env: str, original: list[tuple[object, ...]]) -> None:
    in_users = _rows(project.url(env, "users"), "addresses") or []
    in_shipping = _rows(project.url(env, "shipping"), "addresses") or []
    completed = COPY.removeprefix("copy:") in api.observe(project, env).completed_copies
    if not completed:
        assert in_shipping == [], "the copy is not complete, yet shipping holds rows"
        assert in_users == original
    elif in_users and in_shipping:  # copied, source not dropped yet: both hold every row
        assert in_users == original and in_shipping == original
    else:
        assert sorted(in_users + in_shipping) == sorted(original)


@pytest.mark.parametrize("where", ["dev", "ci"])
@pytest.mark.parametrize("keep", [False, True], ids=["compensated", "no-rollback"])
@pytest.mark.parametrize("position", ["before the copy", "after the copy", "after the drop"])
def test_failure_positions(workspace: Path, position: str, keep: bool, where: str, make_database: MakeDatabase) -> None:
    _set(workspace, batch_size=500)
    project, env = _project(workspace, where, make_database)
    original = _seed(project, env)
    before = api.observe(project, env).as_dict()
    _place_failure(workspace, position)
    project = api.open_project(str(workspace / "migrate.toml"), environ=dict(project.environ))

    failed = api.apply(project, env, no_rollback=keep)

    assert failed.exit_code == 1, failed.message
    assert any(s.node.endswith(FAIL_ID) and s.status == "failed" for s in failed.steps)
    _assert_every_row_once(project, env, original)
    if keep:
        back = api.rollback(project, env, run_id=failed.run_id)
        assert back.exit_code == 0, back.message
    after = api.observe(project, env).as_dict()
    assert {s: after[s] for s in before} == before
    assert _rows(project.url(env, "users"), "addresses") == original
    assert _rows(project.url(env, "shipping"), "addresses") is None


def _spawn(ws: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MIGRATE_CONFIG"}
    ci_env = ws / "ci.env"
    if ci_env.exists():
        env.update(line.split("=", 1) for line in ci_env.read_text().splitlines())
    return subprocess.Popen(
        [MIGRATE, "--config", str(ws / "migrate.toml"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


_ENGINES: dict[str, sa.Engine] = {}


def _count(url: str) -> int:
    """Rows in ``addresses`` (-1: no such table), on a kept connection so polling is quick."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sa.create_engine(url, poolclass=sa.pool.StaticPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("addresses"):
                return -1
            return int(conn.execute(sa.text("SELECT count(*) FROM addresses")).scalar_one())
    except sa.exc.OperationalError:  # SQLite busy under the writer: ask again
        return -2


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def _kill_in_phase(proc: subprocess.Popen[bytes], shipping: str, ready: Callable[[int], bool]) -> None:
    """Kill ``proc`` once ``ready(rows in shipping)`` holds and it has copied a row more than
    shipping held when it started (so each of several kills lands in a later batch)."""
    held = max(_count(shipping), 0)
    _kill_when(proc, lambda: (rows := _count(shipping)) > held and ready(rows))


def _kill_when(proc: subprocess.Popen[bytes], ready: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not ready():  # type: ignore[operator]
            assert proc.poll() is None, "the process ended before the phase to kill it in"
            assert time.monotonic() < deadline, "the phase never came"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:  # not when it ended: the assertion above says why
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


BIG = 20_000  # rows where a phase is short: verification, revert
PHASES = {
    # phase: (rows, copy options, when to kill: f(rows in shipping))
    "batches": (ROWS, {"batch_size": 500, "pause_seconds": 0.4}, lambda s: 0 < s < ROWS),
    # killed in the batches three times in a row, each run further on, before the resume
    "batches, three kills": (ROWS, {"batch_size": 500, "pause_seconds": 0.4}, lambda s: 0 < s < ROWS),
    "pause": (ROWS, {"batch_size": 1000, "pause_seconds": 3}, lambda s: s == ROWS),
    # one batch of every row, then verification at once (no pause)
    "verification": (BIG, {"batch_size": BIG}, lambda s: s == BIG),
    "revert": (BIG, {"batch_size": 200}, None),
    "revert, then apply": (BIG, {"batch_size": 200}, None),
}


KILLS = [(phase, where) for phase in PHASES if phase != "batches, three kills" for where in ("dev", "ci")]
KILLS += [("batches, three kills", "mariadb-to-pg"), ("pause", "mariadb-to-pg")]


@pytest.mark.parametrize(("phase", "where"), KILLS, ids=[f"{phase}-{where}" for phase, where in KILLS])
def test_kill_in_each_phase_then_resume(workspace: Path, where: str, phase: str, make_database: MakeDatabase) -> None:
    n, options, ready = PHASES[phase]
    _set(workspace, **options)
    project, env = _project(workspace, where, make_database)
    original = _seed(project, env, n)
    users, shipping = project.url(env, "users"), project.url(env, "shipping")

    for _ in range(3 if phase.endswith("three kills") else 0 if phase.startswith("revert") else 1):
        assert ready is not None
        _kill_in_phase(_spawn(workspace, "apply", "--env", env), shipping, ready)
        # killed mid-copy: the source is untouched, the target holds a part of it, unchanged
        assert _rows(users, "addresses") == original
        assert set(_rows(shipping, "addresses") or []) <= set(original)
    resumed = api.apply(project, env)
    assert resumed.exit_code == 0, resumed.message
    _assert_every_row_once(project, env, original)
    assert _rows(shipping, "addresses") == original

    if phase.startswith("revert"):
        proc = _spawn(workspace, "rollback", "--env", env)
        _kill_when(proc, lambda: 0 < _count(users) < n or 0 < _count(shipping) < n)
    if phase == "revert, then apply":
        # A careless user goes forward instead of finishing the rollback: the half-reverted
        # copy is not complete, so it runs again before the drop; no row is lost.
        forward = api.apply(project, env)
        assert forward.exit_code == 0, forward.message
        assert _rows(users, "addresses") is None
        assert _rows(shipping, "addresses") == original
    back = api.rollback(project, env, to="shipping@1e2badf1a395")
    assert back.exit_code == 0, back.message
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") is None
