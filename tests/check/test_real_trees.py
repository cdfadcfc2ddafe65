"""The gate on trees shaped like published ones: the false positives they taught us, one
fixture tree per pattern (tests/fixtures/check), and the baseline that lets an old tree
adopt the gate."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.check.ws import REPO, R, check, check_json, line_of, rel, rev_path, table, workspace

FIXTURES = REPO / "tests" / "fixtures" / "check"


def expected(root: Path) -> list[tuple[str, int, str]]:
    """(code, line, level) of every `# expect MGxxx [warning]` marker of the fixture's revisions."""
    out = []
    for path in sorted((root / "services" / "app" / "versions").glob("*.py")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.search(r"# expect (MG\d{3})( warning)?", line)
            if m:
                level = "warning" if m.group(2) or m.group(1) in ("MG203", "MG205") else "error"
                out.append((m.group(1), i, level))
    return sorted(out)


def findings_of(root: Path) -> tuple[int, list[dict[str, object]]]:
    code, data = check_json(root)
    return code, data["findings"]


@pytest.mark.parametrize("fixture", ["backfill", "computed_names", "dialect_branches", "sqlite_rebuild"])
def test_each_fixture_reports_exactly_its_marked_lines(fixture: str) -> None:
    root = FIXTURES / fixture
    code, found = findings_of(root)
    assert sorted((f["code"], f["line"], f["level"]) for f in found) == expected(root)
    assert code == (1 if any(level == "error" for _, _, level in expected(root)) else 0)


def test_not_null_after_a_backfill_is_not_flagged() -> None:
    _, found = findings_of(FIXTURES / "backfill")
    assert [f["message"] for f in found] == [
        "app@b2 sets NOT NULL on column 'events.kind' of an existing table",
        "app@b2 sets NOT NULL on column 'events.source' of an existing table",
    ]


def test_computed_names_are_said_to_be_computed_never_made_up_literals() -> None:
    _, found = findings_of(FIXTURES / "computed_names")
    messages = [str(f["message"]) for f in found]
    assert messages == [  # sorted by code, then line
        "app@b2 drops a table whose name is computed at run time (`f\"{'tmp'}_import\"`)",
        "app@b2 drops column 'team_id' of a table whose name is computed at run time (`table_name`)",
        "app@b2 drops column 'events.legacy'",
        "app@b2 renames a table whose name is computed at run time (`original_name`) to a name computed at "
        "run time (`new_name`)",
    ]
    assert not any("'original_name'" in m or "'?" in m for m in messages)


def test_one_finding_per_revision_whatever_the_dialect_branches() -> None:
    _, found = findings_of(FIXTURES / "dialect_branches")
    assert [f["message"] for f in found] == [
        "app@b2 drops column 'users.legacy'",
        "app@b2 changes the type of column 'users.id'",
    ]


def test_a_table_rebuilt_in_place_is_not_a_drop_or_a_rename() -> None:
    _, found = findings_of(FIXTURES / "sqlite_rebuild")
    assert [f["message"] for f in found] == [
        "app@b2 drops table 'events'",
        "app@b2 changes the type of column 'users.email'",
    ]


# -- baseline -----------------------------------------------------------------------------
def _old_tree(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(FIXTURES / "destructive", root, ignore=shutil.ignore_patterns(".migrate"))
    return root


def _new_drop(root: Path) -> Path:
    path = root / "services" / "app" / "versions" / "a5_drop.py"
    path.write_text(
        '"""drop a column"""\nfrom alembic import op\n\nrevision = "a5"\ndown_revision = "a4"\n\n\n'
        'def upgrade():\n    op.drop_column("purchases", "note")\n\n\n'
        'def downgrade():\n    op.execute("ALTER TABLE purchases ADD COLUMN note TEXT")\n',
        encoding="utf-8",
    )
    return path


def test_baseline_round_trip_reports_only_the_new_destructive_revision(tmp_path: Path) -> None:
    root = _old_tree(tmp_path)
    base = tmp_path / "check-baseline.json"
    code, before = check_json(root)
    old = len(before["findings"])
    assert code == 1 and old > 5
    written = check(root, "--format", "json", "--write-baseline", str(base))
    assert written.exit_code == 0, written.stdout + written.stderr
    assert written.json()["findings"] == [] and written.json()["summary"]["baselined"] == old
    data = json.loads(base.read_text(encoding="utf-8"))
    assert data["format"] == "migrate-check-baseline/1"
    assert len(data["findings"]) == old
    keys = [(e["node"], e["code"], e["message"]) for e in data["findings"]]
    assert keys == sorted(keys)
    assert all("line" not in e for e in data["findings"])  # a moved line does not touch the file

    code, same = check_json(root, "--baseline", str(base))
    assert (code, same["findings"]) == (0, [])
    path = _new_drop(root)
    code, after = check_json(root, "--baseline", str(base))
    assert code == 1
    assert [(f["code"], f["node"], f["line"]) for f in after["findings"]] == [
        ("MG202", "app@a5", line_of(path, "drop_column"))
    ]
    assert after["summary"]["baseline"] == str(base) and after["summary"]["baselined"] == old


def test_moving_a_flagged_line_does_not_make_it_new(tmp_path: Path) -> None:
    root = _old_tree(tmp_path)
    base = tmp_path / "b.json"
    old = check_json(root)[1]["findings"]
    assert check(root, "--write-baseline", str(base)).exit_code == 0
    path = root / "services" / "app" / "versions" / "a2_reshape.py"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("def upgrade():\n", "def upgrade():\n\n\n\n    # moved down\n", 1), encoding="utf-8")
    code, data = check_json(root)
    assert code == 1 and len(data["findings"]) == len(old)
    assert [f["line"] for f in data["findings"]] == [f["line"] + 4 for f in old]  # found, lower down
    code, data = check_json(root, "--baseline", str(base))
    assert (code, data["findings"]) == (0, [])


def test_every_format_works_with_a_baseline(tmp_path: Path) -> None:
    root = _old_tree(tmp_path)
    base = tmp_path / "b.json"
    assert check(root, "--write-baseline", str(base)).exit_code == 0
    _new_drop(root)
    junit = check(root, "--format", "junit", "--baseline", str(base))
    assert junit.exit_code == 1
    assert junit.stdout.count("<failure ") == 1 and 'type="MG202"' in junit.stdout and "app@a5" in junit.stdout
    github = check(root, "--format", "github", "--baseline", str(base))
    assert github.exit_code == 1
    lines = github.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("::error ") and "a5_drop.py" in lines[0]
    text = check(root, "--baseline", str(base))
    assert text.exit_code == 1
    assert "app@a5 drops column 'purchases.note'" in text.stdout and "a2_reshape" not in text.stdout
    assert re.search(r"b\.json: \d+ known findings not shown", text.stdout.replace("\n", ""))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "is not JSON"),
        (b'{"format": "migrate-check-baseline/9", "findings": []}', "key 'format' must be"),
        (b'{"format": "migrate-check-baseline/1", "findings": {}}', "key 'findings' must be a list"),
        (b'{"format": "migrate-check-baseline/1", "findings": [{"code": 1}]}', "findings[0] must be"),
        (b"\xff\xfe not utf-8", "cannot read the baseline file"),
    ],
)
def test_a_bad_baseline_file_is_exit_2_and_names_it(tmp_path: Path, content: bytes, says: str) -> None:
    root = workspace(tmp_path, {"app": [table("u1", None, "users"), R("u2", "u1", "op.drop_table('users')")]})
    base = tmp_path / "bad.json"
    base.write_bytes(content)
    run = check(root, "--baseline", str(base))
    assert run.exit_code == 2
    assert says in run.stderr and str(base) in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert base.read_bytes() == content


def test_a_missing_baseline_file_says_how_to_write_one(tmp_path: Path) -> None:
    root = workspace(tmp_path, {"app": [table("u1", None, "users")]})
    run = check(root, "--baseline", str(tmp_path / "nope.json"))
    assert run.exit_code == 2
    assert "does not exist" in run.stderr and "--write-baseline" in run.stderr
    assert rel(root, "app", "u1") and rev_path(root, "app", "u1").is_file()
