"""The import graph of the ``orchestrator`` package, read with ``ast`` (nothing is imported).

Every module under ``orchestrator/`` is parsed; its imports are the module-level and
function-level ``import`` and ``from ... import`` statements, absolute or relative (resolved
against the module's package). ``from orchestrator import api`` imports the submodule
``orchestrator.api``: a name imported from a package counts as that submodule when it is one.
Imports under ``if TYPE_CHECKING:`` are left out when ``runtime_only`` is asked for (they run
only for the type checker, so they cannot close a cycle at run time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orchestrator

PACKAGE_DIR = Path(orchestrator.__file__).parent
ROOT_PACKAGE = "orchestrator"


@dataclass(frozen=True)
class Import:
    """One imported name, absolute: ``orchestrator.api``, ``sqlalchemy.orm``..."""

    name: str
    line: int
    type_checking: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def module_files() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its ``__init__.py``)."""
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def is_package(module: str) -> bool:
    return module_files()[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _base(module: str, level: int) -> str:
    """The package a relative import of ``level`` dots starts from, inside ``module``."""
    parts = module.split(".")
    if not is_package(module):
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def _names(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        base = _base(module, node.level)
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    names = [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    if len(names) < len(node.names) or any(n not in module_files() for n in names):
        yield source  # a name from the module itself, not only submodules of a package
    yield from names


def _walk(module: str, body: list[ast.stmt], type_checking: bool) -> Iterator[Import]:
    for stmt in body:
        yield from _walk_node(module, stmt, type_checking)


def _walk_node(module: str, node: ast.AST, type_checking: bool) -> Iterator[Import]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        for name in _names(module, node):
            yield Import(name, node.lineno, type_checking)
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        yield from _walk(module, node.body, True)
        yield from _walk(module, node.orelse, type_checking)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk_node(module, child, type_checking)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every name ``module`` imports: ``from a import b`` gives ``a.b``, and ``a`` unless every
    imported name is a submodule of package ``a``."""
    tree = ast.parse(module_files()[module].read_text(encoding="utf-8"))
    return tuple(_walk(module, tree.body, False))


def internal_target(name: str) -> str | None:
    """The orchestrator module an imported name loads: itself, or its longest module prefix."""
    modules = module_files()
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def internal_imports(module: str, *, runtime_only: bool = True) -> dict[str, int]:
    """The orchestrator modules ``module`` imports, each with the line of its first import.

    ``from orchestrator.x import name`` gives ``orchestrator.x.name`` when that is a module,
    else ``orchestrator.x``. The parent packages Python also runs on the way (``import a.b.c``
    runs ``a/__init__`` and ``a/b/__init__``) are not edges: a package that re-exports its
    submodules would otherwise make a cycle of every submodule that imports a sibling.
    """
    found: dict[str, int] = {}
    for imp in imports_of(module):
        if runtime_only and imp.type_checking:
            continue
        if not (imp.name == ROOT_PACKAGE or imp.name.startswith(ROOT_PACKAGE + ".")):
            continue
        target = internal_target(imp.name)
        if target is None or target == module:
            continue
        found.setdefault(target, imp.line)
    return found
