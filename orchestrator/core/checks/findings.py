"""Findings as data: a stable code, a level, where it applies, what is wrong and how to fix it.

The catalog below is the contract of ``migrate check``: a code never changes meaning, and
docs/check.md describes each one. Codes are grouped by rule; a rule is what a JUnit report
shows as one test suite, with one test case per node it examined.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from orchestrator.core.model import NodeId

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    group: str  # id of the rule (a JUnit test suite)
    title: str  # the rule as a sentence that should hold


@dataclass(frozen=True)
class Code:
    code: str
    level: Level
    group: str
    title: str


RULES: dict[str, Rule] = {
    r.group: r
    for r in (
        Rule("graph", "the graph loads: no cycle, every reference resolves"),
        Rule("heads", "each service has a single head"),
        Rule("downgrade", "every revision has a real downgrade()"),
        Rule("destructive", "destructive operations are declared"),
        Rule("cross-service", "no step removes what another step or service still needs"),
        Rule("env-requires", "requirements are applied first in the environment"),
        Rule("plan-file", "the plan file is still valid"),
        Rule("roundtrip", "every downgrade exactly undoes its upgrade"),
    )
}

CODES: dict[str, Code] = {
    c.code: c
    for c in (
        Code("MG001", "error", "graph", "dependency cycle"),
        Code("MG002", "error", "graph", "unresolved reference"),
        Code("MG003", "error", "graph", "a revision tree cannot be read"),
        Code("MG004", "error", "graph", "the manifest is invalid"),
        Code("MG101", "error", "heads", "more than one head"),
        Code("MG201", "error", "destructive", "table dropped"),
        Code("MG202", "error", "destructive", "column dropped"),
        Code("MG203", "warning", "destructive", "column type changed"),
        Code("MG204", "error", "destructive", "table or column renamed"),
        Code("MG205", "warning", "destructive", "NOT NULL added to an existing table"),
        Code("MG301", "error", "downgrade", "no real downgrade()"),
        Code("MG302", "warning", "downgrade", "irreversible revision whose downgrade() does nothing"),
        Code("MG401", "error", "cross-service", "a copy reads something dropped before it"),
        Code("MG402", "warning", "cross-service", "drops or renames something another step or service uses"),
        Code("MG403", "error", "env-requires", "a requirement is not applied first"),
        Code("MG501", "error", "plan-file", "the plan file is stale"),
        Code("MG502", "error", "plan-file", "the environment moved since the plan was made"),
        Code("MG601", "error", "roundtrip", "downgrade does not restore the schema"),
        Code("MG602", "error", "roundtrip", "upgrade failed"),
        Code("MG603", "error", "roundtrip", "downgrade failed"),
        Code("MG604", "error", "roundtrip", "tables remain after downgrading to base"),
        Code("MG605", "error", "roundtrip", "the environment was not returned to the revisions it was found at"),
    )
}


@dataclass(frozen=True)
class Finding:
    """One problem. ``file`` is relative to the manifest's folder (absolute when outside it)."""

    code: str
    level: Level
    node: str | None
    file: str | None
    line: int | None
    message: str
    hint: str | None = None

    @property
    def title(self) -> str:
        return CODES[self.code].title

    @property
    def group(self) -> str:
        return CODES[self.code].group

    @property
    def service(self) -> str | None:
        """The service the finding belongs to (None for the workspace, "copies" for a copy)."""
        if self.node is None:
            return None
        parsed = NodeId.parse(self.node)
        return "copies" if parsed.is_copy else parsed.service

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "level": self.level,
            "node": self.node,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "hint": self.hint,
        }


def finding(
    code: str,
    node: str | None,
    message: str,
    hint: str | None = None,
    *,
    file: str | None = None,
    line: int | None = None,
    root: str = "",
    level: Level | None = None,
) -> Finding:
    """A finding of ``code`` at its catalog level (or a lower ``level``, for a finding that may
    not hold, such as one about a name computed at run time); ``file`` is made relative to
    ``root``."""
    return Finding(code, level or CODES[code].level, node, relative(file, root), line, message, hint)


def relative(path: str | None, root: str) -> str | None:
    if not path:
        return None
    if not root or not os.path.isabs(path):
        return path.replace(os.sep, "/")
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        return path.replace(os.sep, "/")
    return rel.replace(os.sep, "/")


def at_least(level: Level, threshold: Level) -> bool:
    """Whether a finding of ``level`` counts under ``--fail-on threshold``."""
    return threshold == "warning" or level == "error"
