"""``migrate check``: the rules of the pre-deploy gate, as pure functions that return findings.

See docs/check.md for every finding code, the JSON schema and CI examples.
"""

from __future__ import annotations

from orchestrator.core.checks.findings import CODES, RULES, Finding, Level, finding
from orchestrator.core.checks.result import FORMAT, CheckResult
from orchestrator.core.checks.rules import RuleOutcome, SourceIndex
from orchestrator.core.checks.runner import evaluate, failed_load, refuse_roundtrip_in_env

__all__ = [
    "CODES",
    "FORMAT",
    "RULES",
    "CheckResult",
    "Finding",
    "Level",
    "RuleOutcome",
    "SourceIndex",
    "evaluate",
    "failed_load",
    "finding",
    "refuse_roundtrip_in_env",
]
