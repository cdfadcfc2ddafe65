"""The four output formats and --fail-on, on the destructive-operations fixture."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.check.ws import REPO, R, check, table, workspace

ROOT = REPO / "tests" / "fixtures" / "check" / "destructive"
A2 = "services/app/versions/a2_reshape.py"


def test_json_has_the_documented_schema() -> None:
    run = check(ROOT, "--format", "json")
    assert run.exit_code == 1
    data = run.json()
    assert set(data) == {"format", "findings", "summary", "notes"}
    assert data["format"] == "migrate-check/1"
    for f in data["findings"]:
        assert set(f) == {"code", "level", "node", "file", "line", "message", "hint"}
        assert re.fullmatch(r"MG\d{3}", f["code"]) and f["level"] in ("error", "warning")
    summary = data["summary"]
    assert summary["errors"] == 8 and summary["warnings"] == 4
    assert summary["fail_on"] == "error" and summary["exit_code"] == 1
    assert (summary["services"], summary["revisions"], summary["copies"]) == (1, 4, 0)
    assert check(ROOT, "--json").json() == data  # --json is --format json


def test_text_groups_by_service_and_says_what_to_do() -> None:
    run = check(ROOT)
    assert run.exit_code == 1
    lines = run.stdout.splitlines()
    assert lines[0] == "migrate check: 4 revisions in 1 service"
    assert "app" in lines
    assert any(re.match(rf"\s+error\s+MG201 table dropped\s+{A2}:18$", line) for line in lines)
    assert "hint: if this is intended, declare `destructive = True`" in run.stdout
    assert lines[-1] == "✗ 8 errors, 4 warnings: failing on error (exit 1)"


def test_junit_is_one_suite_per_rule_and_one_case_per_node() -> None:
    run = check(ROOT, "--format", "junit")
    assert run.exit_code == 1
    suites = ET.fromstring(run.stdout)
    assert suites.tag == "testsuites"
    by_name = {s.get("name", "").split(":")[0]: s for s in suites.findall("testsuite")}
    assert list(by_name) == ["graph", "heads", "downgrade", "destructive", "cross-service"]
    destructive = by_name["destructive"]
    cases = {c.get("name"): c for c in destructive.findall("testcase")}
    assert list(cases) == ["app@a1", "app@a2", "app@a3", "app@a4"]
    failure = cases["app@a2"].find("failure")
    assert failure is not None and failure.get("type") == "MG201"
    assert cases["app@a2"].get("file") == A2
    assert failure.text is not None and failure.text.count("error MG") == 8
    out = cases["app@a2"].find("system-out")
    assert out is not None and out.text is not None and out.text.count("warning MG") == 4
    assert all(cases[n].find("failure") is None for n in ("app@a1", "app@a3", "app@a4"))
    assert destructive.get("tests") == "4" and destructive.get("failures") == "1"
    assert suites.get("failures") == "1"
    assert int(suites.get("tests", "0")) == sum(int(s.get("tests", "0")) for s in suites.findall("testsuite"))


def test_junit_counts_warnings_as_failures_with_fail_on_warning() -> None:
    suites = ET.fromstring(check(ROOT, "--format", "junit", "--fail-on", "warning").stdout)
    suite = next(s for s in suites.findall("testsuite") if s.get("name", "").startswith("destructive:"))
    case = next(c for c in suite.findall("testcase") if c.get("name") == "app@a2")
    failure = case.find("failure")
    assert failure is not None and failure.text is not None and failure.text.count("warning MG") == 4


ANNOTATION = re.compile(r"^::(error|warning) file=([^,]+),line=(\d+),title=(MG\d{3}) [^:]+::(.+)$")


def test_github_annotations_land_on_the_files() -> None:
    run = check(ROOT, "--format", "github", env={"GITHUB_WORKSPACE": str(REPO)})
    assert run.exit_code == 1
    lines = run.stdout.splitlines()
    assert len(lines) == 12
    parsed = [ANNOTATION.match(line) for line in lines]
    assert all(parsed), lines
    seen = {(m.group(1), m.group(2), int(m.group(3)), m.group(4)) for m in parsed if m}
    path = f"tests/fixtures/check/destructive/{A2}"
    assert ("error", path, 18, "MG201") in seen
    assert ("warning", path, 20, "MG203") in seen
    assert {level for level, _, _, code in seen if code in ("MG203", "MG205")} == {"warning"}
    assert all("%0Ahint: " in line for line in lines)  # the hint is on the annotation's second line
    assert "8 errors, 4 warnings" in run.stderr


def test_fail_on_chooses_the_level_that_fails(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {
            "app": [
                table("a1", None, "users", columns="    sa.Column('age', sa.Integer()),\n"),
                R(
                    "a2",
                    "a1",
                    upgrade="op.alter_column('users', 'age', type_=sa.BigInteger())",
                    downgrade="op.alter_column('users', 'age', type_=sa.Integer())",
                ),
            ]
        },
    )
    assert check(root).exit_code == 0
    assert check(root, "--fail-on", "warning").exit_code == 1
    assert check(root, "--fail-on", "warning", "--format", "json").json()["summary"]["exit_code"] == 1
    assert check(root, "--fail-on", "fatal").exit_code == 2


def test_junit_and_github_when_the_graph_does_not_load(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        {
            "users": [table("u1", None, "users", attrs='requires = ["orders@o1"]')],
            "orders": [table("o1", None, "orders", attrs='requires = ["users@u1"]')],
        },
    )
    run = check(root, "--format", "junit")
    assert run.exit_code == 2
    suites = ET.fromstring(run.stdout)
    [suite] = suites.findall("testsuite")
    [case] = suite.findall("testcase")
    assert case.get("name") == "graph"
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "MG001"
    run = check(root, "--format", "github", env={"GITHUB_WORKSPACE": str(root)})
    assert run.exit_code == 2
    [line] = run.stdout.splitlines()
    m = ANNOTATION.match(line)
    assert m is not None and m.group(4) == "MG001" and m.group(2).startswith("services/")
    assert "does not load" in run.stderr
