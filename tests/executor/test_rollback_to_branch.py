"""``rollback --to`` on a tree with a second, branch-labelled root undoes only what builds on
the target, as ``alembic downgrade <rev>`` does, on real SQLite and PostgreSQL databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import MakeDatabase
from tests.helpers import alembic_upgrade, make_workspace, rev, run_migrate, tables, version_rows


def alembic_downgrade(url: str, script_location: Path, target: str) -> None:
    """Downgrade one database to ``target`` with Alembic's own API (not the orchestrator's)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(script_location))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(
                conn, opts={"script": script, "fn": lambda heads, _ctx: script._downgrade_revs(target, heads)}
            )
            with Operations.context(context):
                context.run_migrations()
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_rollback_to_a_labelled_second_root_keeps_the_main_line(
    tmp_path: Path, dialect_name: str, make_database: MakeDatabase
) -> None:
    """Apply all, then `rollback --to users@bb0000000001`: only bb..02 is undone.

    users:  aa..01 -- aa..02 -- aa..03 -- aa..04
            bb..01 -- bb..02          (bb..01: down_revision None, branch label "side")
    """
    main = [rev(f"aa000000000{i}", f"aa000000000{i - 1}" if i > 1 else None) for i in range(1, 5)]
    side = [rev("bb0000000001", branch_labels=["side"]), rev("bb0000000002", "bb0000000001")]
    url, alembic_url = make_database(dialect_name), make_database(dialect_name)
    ws = make_workspace(tmp_path, {"users": [*main, *side]}, envs={"dev": {"urls": {"users": url}}})
    applied = run_migrate(["apply", "--json"], ws)
    assert applied.exit_code == 0, applied.stderr
    every_table = {f"users_{r.id}" for r in [*main, *side]}
    assert every_table <= tables(url)
    assert version_rows(url) == ["aa0000000004", "bb0000000002"]

    result = run_migrate(["rollback", "--to", "users@bb0000000001", "--json"], ws)

    assert result.exit_code == 0, result.stderr
    out = result.json()
    assert [s["id"] for s in out["plan"]["steps"]] == ["users@bb0000000002"]
    assert version_rows(url) == ["aa0000000004", "bb0000000001"]
    assert tables(url) == (every_table - {"users_bb0000000002"}) | {"alembic_version"}
    # Plain Alembic, upgrading another database to the same heads and downgrading it to the
    # same target, ends in the same state.
    alembic_upgrade(alembic_url, ws / "services/users", "heads")
    assert version_rows(alembic_url) == ["aa0000000004", "bb0000000002"]
    alembic_downgrade(alembic_url, ws / "services/users", "bb0000000001")
    assert version_rows(alembic_url) == version_rows(url)
    assert tables(alembic_url) == tables(url)
    # The label names the same revision; base still undoes the whole service.
    assert run_migrate(["rollback", "--to", "users@side", "--json"], ws).json()["plan"]["steps"] == []
    assert run_migrate(["rollback", "--to", "users@base", "--json"], ws).exit_code == 0
    assert version_rows(url) == []
    assert tables(url) <= {"alembic_version"}
