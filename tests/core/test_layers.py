"""The layers hold: the planning core stays pure, the CLI goes through ``api``, and the I/O
layers never reach up into the façade or the CLI.

The rules are data (``RULES``); the test runs once per module, so a failure names the module
and each offending import with its line. Imports are read with ``ast`` (module-level and
function-level, absolute and relative, ``TYPE_CHECKING`` ones included: a layer may not even
name what it must not use).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import orchestrator.core
from tests.core.imports import imports_of, module_files

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


# -- the layer rules, for every module -------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """Modules under ``layer`` import none of ``forbidden``; with ``only`` set, the orchestrator
    modules they import must all fall under one of ``only`` (third-party imports are free)."""

    layer: str
    why: str
    forbidden: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None


RULES = (
    Rule(
        "orchestrator.core",
        "the planning core (with core/checks) is pure: no engine, console or I/O layer",
        forbidden=(
            *FORBIDDEN,
            "orchestrator.copy",
            "orchestrator.run",
            "orchestrator.project",
        ),
    ),
    Rule(
        "orchestrator.cli",
        "the CLI goes through the one façade, api",
        only=("orchestrator.api", "orchestrator.errors", "orchestrator.events", "orchestrator.cli"),
    ),
    Rule(
        "orchestrator.runtime",
        "the I/O layer never reaches up to the façade or the CLI",
        forbidden=("orchestrator.api", "orchestrator.cli"),
    ),
    Rule(
        "orchestrator.copy",
        "the copy engine never reaches up to the façade or the CLI",
        forbidden=("orchestrator.api", "orchestrator.cli"),
    ),
    Rule(
        "orchestrator.run",
        "the executor is under the façade: it never imports api or the CLI",
        forbidden=("orchestrator.api", "orchestrator.cli"),
    ),
    Rule(
        "orchestrator.project",
        "the project is under the façade: it never imports api",
        forbidden=("orchestrator.api", "orchestrator.cli"),
    ),
)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _rules_for(module: str) -> list[Rule]:
    return [rule for rule in RULES if _under(module, rule.layer)]


def _outside(name: str, only: tuple[str, ...] | None) -> bool:
    """An orchestrator module that a rule with ``only`` does not allow."""
    if only is None or name == "orchestrator" or not _under(name, "orchestrator"):
        return False
    return not any(_under(name, allowed) for allowed in only)


def _violations(module: str, rule: Rule) -> list[str]:
    bad: list[str] = []
    for imp in imports_of(module):
        if any(_under(imp.name, f) for f in rule.forbidden) or _outside(imp.name, rule.only):
            bad.append(f"line {imp.line}: {imp.name}")
    unique = sorted(set(bad), key=lambda s: (int(s.split(":")[0][5:]), s))
    return [b for b in unique if not any(b.startswith(other + ".") for other in unique)]  # `a`, not `a.name` too


RULED = sorted(m for m in module_files() if _rules_for(m))


def test_every_layer_has_modules() -> None:
    assert any(_under(m, "orchestrator.core.checks") for m in RULED)
    assert any(_under(m, "orchestrator.cli") for m in RULED)


@pytest.mark.parametrize("module", RULED)
def test_module_keeps_its_layer_rules(module: str) -> None:
    broken = [(rule.why, _violations(module, rule)) for rule in _rules_for(module)]
    report = [f"{module}: {why}:\n    " + "\n    ".join(bad) for why, bad in broken if bad]
    assert not report, "\n".join(report)
