"""The example workspace at the repository's root passes the gate, statically and on a round
trip (it carries `destructive = True` where it drops, retypes or renames on purpose)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.check.ws import REPO, check
from tests.conftest import PG_SERVER, require_server

MIGRATE = str(Path(sys.executable).with_name("migrate"))


def test_the_example_workspace_passes() -> None:
    proc = subprocess.run([MIGRATE, "check"], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == "migrate check: 22 revisions in 4 services, 1 copy"
    assert proc.stdout.rstrip().endswith("✓ no findings")
    run = check(REPO, "--format", "json", "--fail-on", "warning")
    assert run.exit_code == 0
    assert run.json()["findings"] == []


def _dev_env() -> dict[str, int]:
    folder = REPO / ".migrate" / "dev"
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


def test_the_example_workspace_round_trips_on_sqlite() -> None:
    before = _dev_env()
    run = check(REPO, "--roundtrip", "--format", "json")
    assert run.exit_code == 0, run.stdout
    data = run.json()
    assert data["findings"] == []
    assert data["summary"]["roundtrip"] == "temporary SQLite databases"
    assert any("copy:addresses-to-shipping" in n for n in data["notes"])  # skipped, and said so
    assert _dev_env() == before  # scratch databases, not the dev environment


def test_the_example_workspace_round_trips_on_postgresql() -> None:
    require_server("postgresql")
    run = check(REPO, "--roundtrip", "--scratch-url", PG_SERVER, "--format", "junit")
    assert run.exit_code == 0, run.stdout
    suites = ET.fromstring(run.stdout)
    suite = next(s for s in suites.findall("testsuite") if s.get("name", "").startswith("roundtrip:"))
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert len([n for n in cases if n and "@" in n and not n.endswith("@base")]) == 22
    assert {"users@base", "orders@base", "billing@base", "shipping@base"} <= set(cases)
    skipped = cases["copy:addresses-to-shipping"].find("skipped")
    assert skipped is not None and "not round-tripped" in (skipped.get("message") or "")
    assert suite.get("failures") == "0"


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_a_clean_run_prints_no_annotations(fmt: str) -> None:
    run = check(REPO, "--format", fmt)
    assert run.exit_code == 0
    if fmt == "github":
        assert run.stdout == ""
