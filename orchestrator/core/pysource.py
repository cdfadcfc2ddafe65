"""Facts read from a revision file's source without importing it (pure, AST only)."""

from __future__ import annotations

import ast
from functools import lru_cache
from typing import Literal


def _is_trivial(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    # a docstring or a bare constant / Ellipsis
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _raises_not_implemented(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Raise) or stmt.exc is None:
        return False
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


@lru_cache(maxsize=4096)
def parse(path: str) -> ast.Module | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def downgrade_kind(path: str) -> str:
    """'real', 'missing', 'empty' (only docstrings/pass) or 'not_implemented'."""
    tree = parse(path)
    if tree is None:
        return "missing"
    return body_kind(function(tree, "downgrade"))


def body_kind(fn: ast.FunctionDef | None) -> str:
    """'real', 'missing', 'empty' (only docstrings/pass) or 'not_implemented'."""
    if fn is None:
        return "missing"
    body = [s for s in fn.body if not _is_trivial(s)]
    if not body:
        return "empty"
    if len(body) == 1 and _raises_not_implemented(body[0]):
        return "not_implemented"
    return "real"


def is_merge_noop(path: str, down_revisions: tuple[str, ...]) -> bool:
    """A merge revision as `alembic merge` writes it: two or more down revisions, and both
    upgrade() and downgrade() empty. It has nothing to undo."""
    if len(down_revisions) < 2:
        return False
    tree = parse(path)
    if tree is None:
        return False
    return body_kind(function(tree, "upgrade")) == "empty" and body_kind(function(tree, "downgrade")) == "empty"


def downgrade_noop(path: str, down_revisions: tuple[str, ...]) -> Literal["", "empty", "merge"]:
    """How undoing a revision is a no-op: "merge" (nothing to undo), "empty" (its downgrade()
    does nothing, so its changes stay) or "" (a real downgrade, or one that cannot run)."""
    if downgrade_kind(path) != "empty":
        return ""
    return "merge" if is_merge_noop(path, down_revisions) else "empty"
