"""`--roundtrip` on real databases: scratch SQLite files, throw-away server databases, or an
environment's own databases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.core.model import ServiceSpec
from orchestrator.runtime.alembic_runner import run_revisions
from orchestrator.runtime.engines import create_engine
from tests.check.ws import R, check, check_json, line_of, rel, rev_path, table, workspace
from tests.conftest import MYSQL_SERVER, PG_SERVER, MakeDatabase, require_server

SERVERS = {"sqlite": None, "postgresql": PG_SERVER, "mysql": MYSQL_SERVER}


def scratch_args(dialect: str) -> list[str]:
    require_server(dialect)
    server = SERVERS[dialect]
    return [] if server is None else ["--scratch-url", server]


def forgetful(tmp_path: Path) -> Path:
    """Three services (three databases), each with a second revision whose downgrade forgets
    one thing its upgrade made:

    idx: x1 (items) -- x2 (index ix_items_label + column note; downgrade drops only the column)
    col: c1 (notes) -- c2 (columns a and b; downgrade drops only a)
    fk:  f1 (parent, child) -- f2 (foreign key + column extra; downgrade drops only the column)
    """
    batch = "with op.batch_alter_table({t!r}) as batch_op:\n"
    return workspace(
        tmp_path,
        {
            "idx": [
                table("x1", None, "items"),
                R(
                    "x2",
                    "x1",
                    upgrade=(
                        "op.create_index('ix_items_label', 'items', ['label'])\n"
                        "op.add_column('items', sa.Column('note', sa.String(20), nullable=True))"
                    ),
                    downgrade=batch.format(t="items") + "    batch_op.drop_column('note')",
                ),
            ],
            "col": [
                table("c1", None, "notes"),
                R(
                    "c2",
                    "c1",
                    upgrade=(
                        "op.add_column('notes', sa.Column('a', sa.Integer(), nullable=True))\n"
                        "op.add_column('notes', sa.Column('b', sa.Integer(), nullable=True))"
                    ),
                    downgrade=batch.format(t="notes") + "    batch_op.drop_column('a')",
                ),
            ],
            "fk": [
                R(
                    "f1",
                    None,
                    upgrade=(
                        "op.create_table('parent', sa.Column('id', sa.Integer(), primary_key=True))\n"
                        "op.create_table('child', sa.Column('id', sa.Integer(), primary_key=True),\n"
                        "                sa.Column('parent_id', sa.Integer(), nullable=True))"
                    ),
                    downgrade="op.drop_table('child')\nop.drop_table('parent')",
                ),
                R(
                    "f2",
                    "f1",
                    upgrade=(
                        batch.format(t="child")
                        + "    batch_op.create_foreign_key('fk_child_parent', 'parent', ['parent_id'], ['id'])\n"
                        "op.add_column('child', sa.Column('extra', sa.Integer(), nullable=True))"
                    ),
                    downgrade=batch.format(t="child") + "    batch_op.drop_column('extra')",
                ),
            ],
        },
    )


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_roundtrip_catches_a_forgotten_index_column_and_foreign_key(tmp_path: Path, dialect: str) -> None:
    root = forgetful(tmp_path)
    assert check_json(root)[0] == 0  # the static rules see nothing wrong
    code, data = check_json(root, "--roundtrip", *scratch_args(dialect))
    assert code == 1
    got = {f["node"]: f for f in data["findings"]}
    assert sorted(got) == ["col@c2", "fk@f2", "idx@x2"]
    assert all(f["code"] == "MG601" and f["level"] == "error" for f in got.values())
    assert "index ix_items_label on 'items' is left behind" in got["idx@x2"]["message"]
    assert "column 'notes.b' is left behind" in got["col@c2"]["message"]
    assert "foreign key fk_child_parent on 'child' is left behind" in got["fk@f2"]["message"]
    f = got["col@c2"]
    assert (f["file"], f["line"]) == (rel(root, "col", "c2"), line_of(rev_path(root, "col", "c2"), "def downgrade"))
    assert data["summary"]["roundtrip"].startswith("temporary SQLite" if dialect == "sqlite" else "throw-away")
    assert "roundtrip" in data["summary"]["rules"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_roundtrip_names_an_upgrade_or_downgrade_that_raises(tmp_path: Path, dialect: str) -> None:
    """up: u1 -- u2 (upgrade raises)        down: d1 -- d2 (downgrade raises) -- d3"""
    root = workspace(
        tmp_path,
        {
            "up": [table("u1", None, "a"), R("u2", "u1", "raise RuntimeError('no space left')", "pass")],
            "down": [
                table("d1", None, "b"),
                R("d2", "d1", "op.add_column('b', sa.Column('c', sa.Integer()))", "op.drop_column('b', 'nope')"),
                table("d3", "d2", "e"),
            ],
        },
    )
    code, data = check_json(root, "--roundtrip", *scratch_args(dialect))
    assert code == 1
    got = {f["code"]: f for f in data["findings"] if f["code"].startswith("MG6")}
    assert sorted(got) == ["MG602", "MG603"]
    assert got["MG602"]["node"] == "up@u2" and "no space left" in got["MG602"]["message"]
    assert got["MG602"]["line"] == line_of(rev_path(root, "up", "u2"), "def upgrade")
    assert got["MG603"]["node"] == "down@d2" and "right after its upgrade" in got["MG603"]["message"]
    assert any(n.startswith("round trip on ") for n in data["notes"])
    suites = ET.fromstring(check(root, "--roundtrip", "--format", "junit", *scratch_args(dialect)).stdout)
    suite = next(s for s in suites.findall("testsuite") if s.get("name", "").startswith("roundtrip:"))
    skipped = {c.get("name"): c.find("skipped") for c in suite.findall("testcase")}
    reason = skipped["down@d3"]
    assert reason is not None and reason.get("message") == "the round trip of 'down' stopped at down@d2"


def test_roundtrip_on_an_environment_checks_the_way_down_to_base(tmp_path: Path, make_database: MakeDatabase) -> None:
    """env ci (scratch = true): app is already at a1, whose downgrade forgets its table; a2 is
    pending. The step-by-step part only sees a2; going down to base finds what a1 leaves
    behind, and the table it left makes the return to a1 fail: exit 4, naming where app is."""
    url = make_database("postgresql")
    root = workspace(
        tmp_path,
        {
            "app": [
                R("a1", None, "op.create_table('kept', sa.Column('id', sa.Integer()))", "op.execute('SELECT 1')"),
                table("a2", "a1", "more"),
            ]
        },
        envs={"ci": {"app": url}},
    )
    manifest = root / "migrate.toml"
    manifest.write_text(manifest.read_text() + "\n[envs.ci]\nscratch = true\n", encoding="utf-8")
    spec = ServiceSpec("app", str(root / "services" / "app"))
    engine = create_engine(url)
    with engine.connect() as conn:
        run_revisions(spec, url, conn, ["a1"], upgrade=True)
    code, data = check_json(root, "--env", "ci", "--roundtrip")
    assert code == 4
    got = {f["code"]: f for f in data["findings"]}
    assert sorted(got) == ["MG604", "MG605"]
    assert got["MG604"]["node"] == "app@a1" and "tables remain: kept" in got["MG604"]["message"]
    assert got["MG605"]["node"] == "app"
    assert "'app' is at base, not app@a1: upgrading app@a1 failed" in got["MG605"]["message"]
    assert data["summary"]["roundtrip"] == "the databases of env 'ci' (scratch)"
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("kept")
    engine.dispose()


def test_roundtrip_refuses_a_protected_environment(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"app": [table("a1", None, "t")]})
    manifest = root / "migrate.toml"
    manifest.write_text(manifest.read_text() + '\n[envs.prod]\nurl = "sqlite:///prod-{service}.db"\nprotected = true\n')
    run = check(root, "--env", "prod", "--roundtrip")
    assert run.exit_code == 2
    assert "protected" in run.stderr
    assert not (root / "prod-app.db").exists()
