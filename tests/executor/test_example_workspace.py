"""The repository's own example workspace, end to end: the addresses move from users to
shipping, applied and rolled back, on SQLite (dev) and on PostgreSQL + MariaDB (ci)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import api
from tests.conftest import MakeDatabase
from tests.executor.example import SEED, copy_example
from tests.executor.example import address_rows as _rows


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return copy_example(tmp_path, mode=None)  # as it ships: follow mode


def _move_and_restore(project: api.Project, env: str) -> None:
    users, shipping = project.url(env, "users"), project.url(env, "shipping")
    seeded = api.apply(project, env, targets=[SEED])
    assert seeded.exit_code == 0, seeded.message
    original = _rows(users, "addresses")
    assert original is not None and len(original) == 8

    plan = api.make_plan(project, env)
    assert "copy:addresses-to-shipping" in [s.id for s in plan.plan.steps]
    assert dict(plan.estimates)["copy:addresses-to-shipping"] == 8

    moved = api.apply(project, env)
    assert moved.exit_code == 0, moved.message
    assert _rows(users, "addresses") is None  # dropped by users@f43128fb8d05
    assert _rows(shipping, "addresses") == original
    copy_step = next(s for s in api.history(project, env)[0]["steps"] if s["kind"] == "copy")
    assert copy_step["status"] == "applied" and copy_step["rows"] == 8 and copy_step["rows_per_second"] > 0

    back = api.rollback(project, env)
    assert back.exit_code == 0, back.message
    assert _rows(users, "addresses") == original  # every row back in the source
    assert _rows(shipping, "addresses") is None
    assert api.observe(project, env).as_dict()["users"] == ("28b14b901000",)

    again = api.apply(project, env)  # and the release can be applied again
    assert again.exit_code == 0, again.message
    assert _rows(shipping, "addresses") == original

    # Taking users back to before the drop also reverts the copy that had to precede it.
    to_seed = api.rollback(project, env, to=SEED)
    assert to_seed.exit_code == 0, to_seed.message
    assert [s.id for s in to_seed.plan.steps][-1] == "copy:addresses-to-shipping"
    assert _rows(users, "addresses") == original
    assert _rows(shipping, "addresses") == []
    assert api.apply(project, env).exit_code == 0
    assert _rows(shipping, "addresses") == original


def test_dev_on_sqlite(workspace: Path):
    _move_and_restore(api.open_project(str(workspace / "migrate.toml")), "dev")


def test_ci_on_postgresql_and_mariadb(workspace: Path, make_database: MakeDatabase):
    environ = {
        "CI_USERS_DATABASE_URL": make_database("postgresql"),
        "CI_ORDERS_DATABASE_URL": make_database("postgresql"),
        "CI_BILLING_DATABASE_URL": make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
        "CI_SHIPPING_DATABASE_URL": make_database("mysql").replace("mysql+pymysql", "mariadb+pymysql"),
    }
    _move_and_restore(api.open_project(str(workspace / "migrate.toml"), environ=environ), "ci")
