"""One scenario per rule: a clean workspace passes; each broken one yields exactly the expected
code at the expected file and line."""

from __future__ import annotations

import re
from pathlib import Path

from tests.check.ws import REPO, R, check, check_json, line_of, rel, rev_path, table, workspace, write_revision

FIXTURES = REPO / "tests" / "fixtures" / "check"


def only(data: dict[str, object]) -> dict[str, object]:
    findings = data["findings"]
    assert isinstance(findings, list) and len(findings) == 1, findings
    found = findings[0]
    assert isinstance(found, dict)
    return found


def test_a_clean_workspace_passes(tmp_path: Path) -> None:
    """users: u1 -- u2      orders: o1 (requires users@u1)"""
    root = workspace(
        tmp_path,
        {
            "users": [table("u1", None, "users"), table("u2", "u1", "profiles")],
            "orders": [table("o1", None, "orders", attrs='requires = ["users@u1"]')],
        },
    )
    code, data = check_json(root)
    assert code == 0
    assert data["findings"] == []
    summary = data["summary"]
    assert summary["errors"] == summary["warnings"] == 0
    assert (summary["services"], summary["revisions"], summary["revisions_checked"]) == (2, 3, 3)
    assert summary["rules"] == ["graph", "heads", "downgrade", "destructive", "cross-service"]
    assert not (root / ".migrate" / "dev").exists()  # no environment was touched


def test_no_environment_is_read_without_env(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "users")]},
        envs={"prod": {"users": "${UNSET_DATABASE_URL_FOR_CHECK}"}},
    )
    run = check(root)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert "no findings" in run.stdout


# -- the graph loads ----------------------------------------------------------------------
def test_a_cycle_is_an_error_finding_and_exit_2(tmp_path: Path) -> None:
    """users@u1 requires orders@o1 and orders@o1 requires users@u1."""
    root = workspace(
        tmp_path,
        {
            "users": [table("u1", None, "users", attrs='requires = ["orders@o1"]')],
            "orders": [table("o1", None, "orders", attrs='requires = ["users@u1"]')],
        },
    )
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert f["code"] == "MG001" and f["level"] == "error"
    assert re.search(r"(users@u1 -> orders@o1 -> users@u1|orders@o1 -> users@u1 -> orders@o1)", str(f["message"]))
    service, rev = str(f["node"]).split("@")
    assert f["file"] == rel(root, service, rev)
    assert f["line"] == line_of(rev_path(root, service, rev), "requires =")
    assert data["summary"]["exit_code"] == 2


def test_an_unknown_requirement_names_the_file_and_line(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {
            "users": [table("u1", None, "users")],
            "orders": [table("o1", None, "orders", attrs='requires = ["users@zz9"]')],
        },
    )
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert (f["code"], f["node"], f["file"]) == ("MG002", "orders@o1", rel(root, "orders", "o1"))
    assert f["line"] == line_of(rev_path(root, "orders", "o1"), "users@zz9")
    assert "users@zz9" in str(f["message"])


def test_an_unknown_reference_in_the_manifest_names_its_line(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "addresses")], "shipping": [table("s1", None, "addresses")]},
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "shipping",
                "table": "addresses",
                "after": ["users@u1", "shipping@s7"],
            }
        ],
    )
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert (f["code"], f["node"], f["file"]) == ("MG002", "copy:mv", "migrate.toml")
    assert f["line"] == line_of(root / "migrate.toml", "shipping@s7")


def test_a_tree_that_cannot_be_read_is_mg003(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"users": [table("u1", None, "users")]})
    rev_path(root, "users", "u1").write_text("revision = 'u1'\ndown_revision = None\ndef upgrade(:\n", encoding="utf-8")
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert f["code"] == "MG003" and f["node"] is None
    assert f["file"] == "services/users/versions"


def test_an_invalid_manifest_is_mg004(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"users": [table("u1", None, "users")]})
    manifest = root / "migrate.toml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("script_location", "script_locaton"))
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert (f["code"], f["file"]) == ("MG004", "migrate.toml")
    assert f["line"] == line_of(manifest, "script_locaton")
    assert "script_location" in str(f["message"])


# -- one head per service -----------------------------------------------------------------
def test_two_heads_name_the_exact_merge_command(tmp_path: Path) -> None:
    """Two pull requests, each on top of u1:

    users: u1 -+- u2
               +- u3
    """
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "users"), table("u2", "u1", "a"), table("u3", "u1", "b")]},
    )
    code, data = check_json(root)
    assert code == 1
    f = only(data)
    assert (f["code"], f["level"], f["node"]) == ("MG101", "error", "users")
    assert f["file"] == rel(root, "users", "u3")
    assert f["line"] == line_of(rev_path(root, "users", "u3"), "down_revision =")
    assert 'merge -m "merge heads" u2 u3' in str(f["hint"])
    assert str(f["hint"]).startswith("merge them into one head: `alembic -c ")


def test_the_merge_command_uses_the_tree_alembic_ini(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "users"), table("u2", "u1", "a"), table("u3", "u1", "b")]},
    )
    (root / "services" / "users" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s\n", encoding="utf-8"
    )
    _, data = check_json(root)
    assert (
        only(data)["hint"]
        == 'merge them into one head: `alembic -c services/users/alembic.ini merge -m "merge heads" u2 u3`'
    )


# -- a real downgrade() -------------------------------------------------------------------
def test_downgrades_that_do_nothing_are_flagged(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {
            "app": [
                table("a1", None, "t1"),
                R("a2", "a1", upgrade="op.execute('SELECT 1')", downgrade='"""Nothing to undo."""\n# really\npass'),
                R("a3", "a2", upgrade="op.execute('SELECT 1')", downgrade="raise NotImplementedError()"),
                R(
                    "a4",
                    "a3",
                    upgrade="op.execute('SELECT 1')",
                    downgrade="raise NotImplementedError",
                    attrs="irreversible: bool = True",
                ),
                R("a5", "a4", upgrade="op.execute('SELECT 1')", downgrade="pass", attrs="irreversible = True"),
                R("a6", "a5", upgrade="op.execute('SELECT 1')", downgrade="op.execute('SELECT 2')"),
            ]
        },
    )
    missing = write_revision(root, "app", R("a7", "a6", upgrade="op.execute('SELECT 1')"))
    missing.write_text(missing.read_text(encoding="utf-8").split("def downgrade")[0], encoding="utf-8")
    code, data = check_json(root)
    assert code == 1
    got = [(f["code"], f["level"], f["node"], f["line"]) for f in data["findings"]]
    assert got == [
        ("MG301", "error", "app@a2", line_of(rev_path(root, "app", "a2"), "def downgrade")),
        ("MG301", "error", "app@a3", line_of(rev_path(root, "app", "a3"), "def downgrade")),
        ("MG302", "warning", "app@a5", line_of(rev_path(root, "app", "a5"), "def downgrade")),
        ("MG301", "error", "app@a7", line_of(rev_path(root, "app", "a7"), "revision =")),
    ]
    messages = {f["node"]: f["message"] for f in data["findings"]}
    assert "does nothing" in messages["app@a2"]
    assert "NotImplementedError" in messages["app@a3"]
    assert "no downgrade() function" in messages["app@a7"]
    assert "irreversible = True" in data["findings"][1]["hint"]


# -- destructive operations ---------------------------------------------------------------
def test_every_destructive_operation_at_its_line() -> None:
    """The fixture marks each line to flag with `# expect MGxxx`; nothing else may be flagged
    (opted-in lines, NOT NULL in create_table, a NOT NULL column with a server default, a
    column added to a table created in the same revision, the annotated and plain
    `destructive = True` revisions)."""
    root = FIXTURES / "destructive"
    path = root / "services" / "app" / "versions" / "a2_reshape.py"
    expected = sorted(
        (m.group(1), i)
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in [re.search(r"# expect (MG\d{3})", line)]
        if m
    )
    code, data = check_json(root)
    assert code == 1
    got = sorted((f["code"], f["line"]) for f in data["findings"])
    assert got == expected
    assert {f["file"] for f in data["findings"]} == {"services/app/versions/a2_reshape.py"}
    assert {f["node"] for f in data["findings"]} == {"app@a2"}
    levels = {f["code"]: f["level"] for f in data["findings"]}
    assert levels == {"MG201": "error", "MG202": "error", "MG203": "warning", "MG204": "error", "MG205": "warning"}


def test_destructive_true_opts_in_in_both_forms(tmp_path: Path) -> None:
    drop = R(
        "u2", "u1", upgrade="op.drop_table('users')", downgrade="op.create_table('users', sa.Column('id', sa.Integer))"
    )
    for attrs, codes in (("", ["MG201"]), ("destructive = True", []), ("destructive: bool = True  # on purpose", [])):
        root = workspace(
            tmp_path,
            {"app": [table("u1", None, "users"), R(drop.id, drop.down, drop.upgrade_body, drop.downgrade_body, attrs)]},
            folder=f"ws{len(attrs)}",
        )
        code, data = check_json(root)
        assert [f["code"] for f in data["findings"]] == codes
        assert code == (1 if codes else 0)


def test_an_allow_comment_on_the_line_or_above_opts_in(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {
            "app": [
                table(
                    "u1",
                    None,
                    "users",
                    columns="    sa.Column('a', sa.Integer()),\n    sa.Column('b', sa.Integer()),\n",
                ),
                R(
                    "u2",
                    "u1",
                    upgrade=(
                        "op.drop_column('users', 'a')  # migrate: allow MG202\n"
                        "# migrate: allow MG202 (b moved to profiles)\n"
                        "op.drop_column('users', 'b')\n"
                        "op.drop_column('users', 'label')  # migrate: allow MG201\n"
                    ),
                    downgrade="op.add_column('users', sa.Column('a', sa.Integer()))",
                ),
            ]
        },
    )
    code, data = check_json(root)
    f = only(data)
    assert (f["code"], f["line"]) == ("MG202", line_of(rev_path(root, "app", "u2"), "'label'"))
    assert code == 1


# -- cross-service hazards ----------------------------------------------------------------
def _move(tmp_path: Path, *, target: str, after: list[str], before: list[str], folder: str = "ws") -> Path:
    """users: u1 (addresses) -- u2 (drops addresses.city)       <target>: s1 (addresses)
    copy:mv copies users.addresses (id, city) into <target>."""
    return workspace(
        tmp_path,
        {
            "users": [
                table("u1", None, "addresses", columns="    sa.Column('city', sa.String(50)),\n"),
                R(
                    "u2",
                    "u1",
                    upgrade="op.drop_column('addresses', 'city')",
                    downgrade="op.add_column('addresses', sa.Column('city', sa.String(50)))",
                    attrs="destructive = True",
                ),
            ],
            target: [table("s1", None, "addresses", columns="    sa.Column('city', sa.String(50)),\n")],
        },
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": target,
                "table": "addresses",
                "columns": ["id", "city"],
                "after": after,
                "before": before,
            }
        ],
        folder=folder,
    )


def test_a_copy_reading_a_column_dropped_before_it_is_an_error(tmp_path: Path) -> None:
    root = _move(tmp_path, target="shipping", after=["users@u2", "shipping@s1"], before=[])
    code, data = check_json(root)
    assert code == 1
    f = only(data)
    assert (f["code"], f["level"], f["node"]) == ("MG401", "error", "users@u2")
    assert (f["file"], f["line"]) == (rel(root, "users", "u2"), line_of(rev_path(root, "users", "u2"), "drop_column"))
    assert "copy:mv reads users.addresses.city" in str(f["message"])
    assert "`after`" in str(f["hint"])


def test_a_drop_placed_before_the_copy_by_the_order_alone_is_an_error(tmp_path: Path) -> None:
    """The copy's target sorts after 'users', so the unordered drop runs first."""
    root = _move(tmp_path, target="warehouse", after=["users@u1", "warehouse@s1"], before=[])
    code, data = check_json(root)
    f = only(data)
    assert (f["code"], f["node"]) == ("MG401", "users@u2")
    assert f["hint"] == 'add "users@u2" to `before` of [[copies]] "mv" in the manifest, so that it runs after the copy'
    assert code == 1


def test_a_drop_after_the_copy_by_chance_is_a_warning(tmp_path: Path) -> None:
    """The copy's target sorts before 'users': the copy runs first, but nothing says so."""
    root = _move(tmp_path, target="shipping", after=["users@u1", "shipping@s1"], before=[])
    code, data = check_json(root)
    f = only(data)
    assert (f["code"], f["level"], f["node"]) == ("MG402", "warning", "users@u2")
    assert f["line"] == line_of(rev_path(root, "users", "u2"), "drop_column")
    assert code == 0


def test_a_drop_ordered_after_every_copy_is_fine(tmp_path: Path) -> None:
    root = _move(tmp_path, target="warehouse", after=["users@u1", "warehouse@s1"], before=["users@u2"])
    code, data = check_json(root)
    assert (code, data["findings"]) == (0, [])


def _profiles(tmp_path: Path, drop_attrs: str, folder: str = "ws") -> Path:
    """users: u1 (profiles) -- u2 (drops profiles)      orders: o1 (requires users@u1) -- o2"""
    return workspace(
        tmp_path,
        {
            "users": [
                table("u1", None, "profiles"),
                R(
                    "u2",
                    "u1",
                    upgrade="op.drop_table('profiles')",
                    downgrade="op.create_table('profiles', sa.Column('id', sa.Integer(), primary_key=True))",
                    attrs="destructive = True\n" + drop_attrs,
                ),
            ],
            "orders": [
                table("o1", None, "orders", attrs='requires = ["users@u1"]'),
                table("o2", "o1", "order_notes"),
            ],
        },
        folder=folder,
    )


def test_dropping_what_another_service_requires_is_a_warning(tmp_path: Path) -> None:
    root = _profiles(tmp_path, "")
    code, data = check_json(root)
    f = only(data)
    assert (f["code"], f["level"], f["node"]) == ("MG402", "warning", "users@u2")
    assert f["line"] == line_of(rev_path(root, "users", "u2"), "drop_table")
    assert "users@u1 introduced and orders@o1 (service 'orders') requires" in str(f["message"])
    assert code == 0
    strict = check(root, "--fail-on", "warning")
    assert strict.exit_code == 1


def test_a_drop_that_requires_the_dependent_service_moved_on_is_fine(tmp_path: Path) -> None:
    root = _profiles(tmp_path, 'requires = ["orders@o2"]', folder="ws2")
    code, data = check_json(root)
    assert (code, data["findings"]) == (0, [])


def test_a_cycle_through_a_copy_points_at_the_manifest(tmp_path: Path) -> None:
    """users: u1 -- u2;  copy:mv after users@u2 and before users@u1: u1 -> u2 -> copy:mv -> u1."""
    root = workspace(
        tmp_path,
        {"users": [table("u1", None, "a"), table("u2", "u1", "b")], "shipping": [table("s1", None, "a")]},
        copies=[
            {
                "name": "mv",
                "source": "users",
                "target": "shipping",
                "table": "a",
                "after": ["users@u2"],
                "before": ["users@u1"],
            }
        ],
    )
    code, data = check_json(root)
    assert code == 2
    f = only(data)
    assert f["code"] == "MG001" and "copy:mv" in str(f["message"])
    assert f["file"] == "migrate.toml"
    assert f["line"] in (line_of(root / "migrate.toml", "after ="), line_of(root / "migrate.toml", "before ="))


def test_the_python_entry_point_returns_the_result(tmp_path: Path) -> None:
    from orchestrator import api

    root = workspace(tmp_path, {"users": [table("u1", None, "users"), table("u2", "u1", "a"), table("u3", "u1", "b")]})
    result = api.check(str(root / "migrate.toml"))
    assert [(f.code, f.node) for f in result.findings] == [("MG101", "users")]
    assert (result.errors, result.warnings, result.exit_code(), result.exit_code("warning")) == (1, 0, 1, 1)
    assert result.root == str(root)
    assert [o.group for o in result.outcomes][:2] == ["graph", "heads"]
