"""Scratch workspaces for executor tests: services whose revisions keep a ledger.

Every revision creates its own table (with an index), and inserts one row naming itself
into the service's ``ledger`` table; its downgrade removes both. A revision that ran twice
would leave two ledger rows, so the ledger proves that nothing was applied twice.

Failures are injected from the environment, so one workspace serves every scenario:
``MIGRATE_TEST_FAIL=<rev>`` makes that revision's upgrade fail inside the database (after
its table was created), ``MIGRATE_TEST_FAIL_DOWN=<rev>`` makes its downgrade fail, and
``MIGRATE_TEST_FAIL_EARLY=<rev>`` makes it fail before it changed anything, and
``MIGRATE_TEST_SLEEP=<seconds>`` makes every revision sleep (for kill tests).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.helpers import Rev, to_toml

__all__ = ["DbState", "Rev", "Workspace", "build", "chain", "rev_ids", "snapshot", "snapshots"]

REVISION = '''"""{message}

Revision ID: {rev}
Revises: {down}
"""
import os
import time

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down_repr}
branch_labels = None
depends_on = None
requires = {requires!r}
irreversible = {irreversible!r}


def upgrade():
    if os.environ.get("MIGRATE_TEST_FAIL_EARLY") == revision:
        op.execute("INSERT INTO no_such_table_{rev} (x) VALUES (1)")
    if os.environ.get("MIGRATE_TEST_SLEEP"):
        time.sleep(float(os.environ["MIGRATE_TEST_SLEEP"]))
{ledger_create}    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(50), nullable=False),
    )
    op.create_index("ix_{table}_label", "{table}", ["label"])
    op.execute("INSERT INTO ledger (rev) VALUES ('{rev}')")
    if os.environ.get("MIGRATE_TEST_FAIL") == revision:
        op.execute("INSERT INTO no_such_table_{rev} (x) VALUES (1)")


def downgrade():
    if os.environ.get("MIGRATE_TEST_FAIL_DOWN") == revision:
        op.execute("INSERT INTO no_such_table_{rev} (x) VALUES (1)")
    op.execute("DELETE FROM ledger WHERE rev = '{rev}'")
    op.drop_index("ix_{table}_label", table_name="{table}")
    op.drop_table("{table}")
{ledger_drop}'''

LEDGER_CREATE = """    op.create_table("ledger", sa.Column("rev", sa.String(40), primary_key=True))
"""
LEDGER_DROP = """    op.drop_table("ledger")
"""


@dataclass
class Workspace:
    root: Path
    manifest: Path
    revisions: dict[str, list[str]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def heads(self) -> dict[str, str]:
        return {svc: revs[-1] for svc, revs in self.revisions.items()}


def rev_ids(service: str, count: int) -> list[str]:
    prefix = service[:4].ljust(4, "x")
    return [f"{prefix}{i:08d}" for i in range(1, count + 1)]


def build(
    root: Path,
    services: Mapping[str, Sequence[Rev]],
    urls: Mapping[str, str],
    *,
    env: str = "test",
    protected: bool = False,
    state_url: str | None = None,
    copies: str = "",
) -> Workspace:
    """Write a workspace (manifest + one Alembic tree per service, without env.py)."""
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root=root, manifest=root / "migrate.toml")
    for service, revs in services.items():
        versions = root / service / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        ws.revisions[service] = [r.id for r in revs]
        for i, r in enumerate(revs):
            down = revs[i - 1].id if i else None
            (versions / f"{r.id}.py").write_text(
                REVISION.format(
                    message=f"{service} step {i + 1}",
                    rev=r.id,
                    down=down or "",
                    down_repr=repr(down),
                    requires=list(r.requires),
                    irreversible=r.irreversible,
                    table=f"t_{r.id}",
                    ledger_create=LEDGER_CREATE if i == 0 else "",
                    ledger_drop=LEDGER_DROP if i == 0 else "",
                ),
                encoding="utf-8",
            )
    ws.urls.update(urls)
    env_table: dict[str, Any] = {"protected": True} if protected else {}
    if state_url:
        env_table["state_url"] = state_url
    env_table["urls"] = dict(urls)
    data = {
        "default_env": env,
        "services": {service: {"script_location": service} for service in services},
        "envs": {env: env_table},
    }
    ws.manifest.write_text(to_toml(data) + "\n" + textwrap.dedent(copies), encoding="utf-8")
    return ws


def chain(service: str, count: int, requires: Mapping[int, Sequence[str]] | None = None) -> list[Rev]:
    """``count`` revisions of one service; ``requires`` maps a 1-based index to its requires."""
    requires = requires or {}
    return [Rev(r, requires=tuple(requires.get(i + 1, ()))) for i, r in enumerate(rev_ids(service, count))]


# -- observing real database state ----------------------------------------------------------
@dataclass(frozen=True)
class DbState:
    versions: tuple[str, ...]
    tables: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # (table, columns, indexes)
    ledger: tuple[str, ...]


def snapshot(url: str) -> DbState:
    """The database's real state: alembic_version, reflected schema, and ledger rows."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return DbState((), (), ())
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            names = sorted(insp.get_table_names())
            tables = tuple(
                (
                    name,
                    tuple(sorted(c["name"] for c in insp.get_columns(name))),
                    tuple(sorted(str(i["name"]) for i in insp.get_indexes(name))),
                )
                for name in names
            )
            versions: tuple[str, ...] = ()
            if "alembic_version" in names:
                versions = tuple(sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))))
            ledger: tuple[str, ...] = ()
            if "ledger" in names:
                ledger = tuple(r[0] for r in conn.execute(sa.text("SELECT rev FROM ledger ORDER BY rev")))
            return DbState(versions, tables, ledger)
    finally:
        engine.dispose()


def snapshots(ws: Workspace) -> dict[str, DbState]:
    return {svc: snapshot(url) for svc, url in ws.urls.items()}
