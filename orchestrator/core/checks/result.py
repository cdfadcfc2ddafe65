"""The result of ``migrate check``: findings plus what was examined, and its exit code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.checks.findings import RULES, Finding, Level, at_least
from orchestrator.core.checks.rules import RuleOutcome
from orchestrator.errors import EXIT_BAD_INPUT, EXIT_NEEDS_ATTENTION, EXIT_OK, EXIT_STEP_FAILED

FORMAT = "migrate-check/1"


@dataclass(frozen=True)
class CheckResult:
    findings: tuple[Finding, ...]
    outcomes: tuple[RuleOutcome, ...]  # one per rule that ran, in the order they ran
    root: str  # the manifest's folder: every finding's ``file`` is relative to it
    load_failed: bool = False
    services: int = 0
    revisions: int = 0
    revisions_checked: int = 0
    copies: int = 0
    env: str | None = None
    since: str | None = None
    plan_file: str | None = None
    roundtrip: str | None = None  # where the round trip ran (redacted), None if it did not
    notes: tuple[str, ...] = field(default=())
    baseline: str | None = None  # the --baseline file whose findings are left out
    baselined: int = 0  # how many findings it left out

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == "warning")

    def failing(self, fail_on: Level) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if at_least(f.level, fail_on))

    def exit_code(self, fail_on: Level = "error") -> int:
        """2 when the workspace could not load; 4 when the round trip could not return an
        environment to the revisions it found (MG605); else 1 if a finding is at ``fail_on``
        or above."""
        if self.load_failed:
            return EXIT_BAD_INPUT
        if any(f.code == "MG605" for f in self.findings):
            return EXIT_NEEDS_ATTENTION
        return EXIT_STEP_FAILED if self.failing(fail_on) else EXIT_OK

    @property
    def all_notes(self) -> tuple[str, ...]:
        return self.notes + tuple(n for o in self.outcomes for n in o.notes)

    def to_json(self, fail_on: Level = "error") -> dict[str, Any]:
        return {
            "format": FORMAT,
            "findings": [f.to_json() for f in self.findings],
            "summary": {
                "errors": self.errors,
                "warnings": self.warnings,
                "fail_on": fail_on,
                "exit_code": self.exit_code(fail_on),
                "services": self.services,
                "revisions": self.revisions,
                "revisions_checked": self.revisions_checked,
                "copies": self.copies,
                "rules": [o.group for o in self.outcomes],
                "env": self.env,
                "since": self.since,
                "plan_file": self.plan_file,
                "roundtrip": self.roundtrip,
                "baseline": self.baseline,
                "baselined": self.baselined,
            },
            "notes": list(self.all_notes),
        }


def sort_findings(findings: Sequence[Finding], rank: Callable[[str], Any]) -> tuple[Finding, ...]:
    """Deterministic order: workspace-level first, then by service, node order, code, line."""
    groups = list(RULES)

    def key(f: Finding) -> tuple[Any, ...]:
        node_rank = rank(f.node) if f.node is not None else ()
        return (
            f.node is not None,
            f.service or "",
            node_rank,
            groups.index(f.group),
            f.code,
            f.line or 0,
            f.message,
        )

    return tuple(sorted(dict.fromkeys(findings), key=key))
