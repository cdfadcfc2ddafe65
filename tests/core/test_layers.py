"""The planning core stays pure: it reads files, and opens no database, console or engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orchestrator.core

CORE = Path(orchestrator.core.__file__).parent
PLANNING = ["graph", "manifest", "model", "planfile", "planner", "pysource", "redact", "revisions", "workspace"]
FORBIDDEN = (
    "sqlalchemy",
    "alembic.runtime",
    "alembic.operations",
    "alembic.command",
    "rich",
    "typer",
    "orchestrator.runtime",
    "orchestrator.cli",
    "orchestrator.executor",
    "orchestrator.api",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # function-level imports too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", PLANNING)
def test_core_module_imports_no_engine_console_or_runtime(module: str) -> None:
    imported = _imports(CORE / f"{module}.py")
    bad = sorted(n for n in imported if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert bad == []
