"""The example workspace at the repository root, and plans that are the same in every process."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, Ran, run_cli, run_migrate


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of migrate.toml and services/ (the repository's own dev databases may be in any state)."""
    root = tmp_path_factory.mktemp("example")
    shutil.copy(REPO / "migrate.toml", root / "migrate.toml")
    shutil.copytree(REPO / "services", root / "services", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _graph(root: Path) -> dict[str, Any]:
    result = run_cli(["graph", "--format", "json"], cwd=root)
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = result.json()
    return data


def _assert_order_respects_edges(steps: list[str], edges: list[dict[str, str]], applied: set[str]) -> None:
    position = {node: i for i, node in enumerate(steps)}
    for edge in edges:
        if edge["to"] in position:
            assert edge["from"] in applied or position[edge["from"]] < position[edge["to"]], edge


def test_plan_lists_every_revision_in_an_order_that_respects_every_edge(example: Path) -> None:
    graph = _graph(example)
    result = run_cli(["plan", "--env", "dev", "--json"], cwd=example)
    assert result.exit_code == 0, result.stderr
    plan = result.json()
    steps = [s["id"] for s in plan["steps"]]
    assert sorted(steps) == sorted(n["id"] for n in graph["nodes"])
    assert len({n["id"] for n in graph["nodes"] if n["kind"] == "revision"}) == 22
    assert "copy:addresses-to-shipping" in steps
    _assert_order_respects_edges(steps, graph["edges"], applied=set())
    assert {e["kind"] for e in graph["edges"]} == {"down_revision", "requires", "after", "before"}
    assert not (example / ".migrate" / "dev").exists()


def test_plan_at_the_repository_root_is_its_pending_set(tmp_path: Path) -> None:
    """At the root itself, whatever state its dev databases are in."""
    graph = _graph(REPO)
    result = run_cli(["plan", "--env", "dev", "--json"], cwd=REPO)
    assert result.exit_code == 0, result.stderr
    plan = result.json()
    downs: dict[str, list[str]] = {}
    for edge in graph["edges"]:
        if edge["kind"] == "down_revision":
            downs.setdefault(edge["to"], []).append(edge["from"])
    applied: set[str] = set()
    stack = [f"{service}@{head}" for service, heads in plan["state"].items() for head in heads]
    while stack:
        node = stack.pop()
        if node not in applied:
            applied.add(node)
            stack.extend(downs.get(node, []))
    steps = [s["id"] for s in plan["steps"]]
    revisions = {n["id"] for n in graph["nodes"] if n["kind"] == "revision"}
    assert {s for s in steps if s in revisions} == revisions - applied
    _assert_order_respects_edges(steps, graph["edges"], applied)


def _plan(root: Path, seed: str) -> Ran:
    result = run_migrate(["plan", "--env", "dev", "--json"], cwd=root, env={"PYTHONHASHSEED": seed})
    assert result.exit_code == 0, result.stderr
    return result


def test_the_plan_and_fingerprint_are_identical_between_processes(example: Path) -> None:
    shutil.rmtree(example / ".migrate" / "cache", ignore_errors=True)
    cold = _plan(example, "1").json()  # reads the files through Alembic
    warm = _plan(example, "2").json()  # served from the cache, another hash seed
    here = run_cli(["plan", "--env", "dev", "--json"], cwd=example).json()
    assert cold["fingerprint"] == warm["fingerprint"] == here["fingerprint"]
    assert cold["steps"] == warm["steps"] == here["steps"]
    assert cold["checksums"] == warm["checksums"]
