"""A baseline: the findings an old tree already had, so that ``check`` reports only new ones.

``check --write-baseline FILE`` records today's findings; ``check --baseline FILE`` then
leaves out every finding recorded there. A finding is matched by its code, its node and a
fingerprint of the finding that does not depend on where it is in the file: moving a line
(blank lines added above it, a docstring grown) leaves it matched, while a new drop in the
same revision is new. The file is JSON, versioned, sorted and indented, so that a change to
it reads well in a diff. Pure: the caller reads and writes the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.core.checks.findings import Finding
from orchestrator.core.checks.result import CheckResult
from orchestrator.errors import MigrateError

BASELINE_FORMAT = "migrate-check-baseline/1"
NEVER_BASELINED = frozenset({"MG605"})  # the state of a database now, not a fact of the tree
_LINE_REF = re.compile(r"(\bline\s+\d+|:\d+\b)", re.I)


def fingerprint(f: Finding) -> str:
    """A stable hash of what the finding says: code, node (or file, when it has no node) and
    its message with whitespace collapsed and line numbers removed."""
    message = _LINE_REF.sub("", " ".join(f.message.split()))
    subject = f.node if f.node is not None else f"file:{f.file or ''}"
    return hashlib.sha256("\0".join((f.code, subject, message)).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    code: str
    node: str | None
    fingerprint: str


def baseline_text(findings: Iterable[Finding]) -> str:
    """The baseline file for ``findings``: one entry per finding, sorted by node, code and
    message; ``file`` and ``message`` are there for the reader, only code, node and
    fingerprint are matched."""
    entries = {
        (f.node or "", f.code, f.message, fingerprint(f)): {
            "code": f.code,
            "node": f.node,
            "fingerprint": fingerprint(f),
            "file": f.file,
            "message": f.message,
        }
        for f in findings
        if f.code not in NEVER_BASELINED
    }
    data = {"format": BASELINE_FORMAT, "findings": [entries[k] for k in sorted(entries)]}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def parse_baseline(text: str, path: str) -> frozenset[Entry]:
    """The entries of a baseline file; anything else is a clear error (exit 2)."""
    hint = f"write it again with `migrate check --write-baseline {path}`"
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise MigrateError(f"baseline file {path} is not JSON ({exc})", hint) from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise MigrateError(
            f"baseline file {path}: key 'format' must be {BASELINE_FORMAT!r}, found {found!r}",
            hint,
        )
    items = data.get("findings")
    if not isinstance(items, list):
        raise MigrateError(f"baseline file {path}: key 'findings' must be a list", hint)
    out = set()
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("code", "fingerprint"))
        if not ok or not isinstance(item.get("node"), str | None):
            raise MigrateError(
                f"baseline file {path}: findings[{i}] must be an object with string 'code' and 'fingerprint' "
                "and a string or null 'node'",
                hint,
            )
        out.add(Entry(item["code"], item["node"], item["fingerprint"]))
    return frozenset(out)


def apply_baseline(result: CheckResult, entries: frozenset[Entry], path: str) -> CheckResult:
    """``result`` without the findings recorded in the baseline, with a note saying how many
    were left out and how many recorded ones are gone (fixed). A workspace that does not
    load is reported whatever the baseline says."""
    if result.load_failed:
        return result
    kept: list[Finding] = []
    matched: set[Entry] = set()
    for f in result.findings:
        entry = Entry(f.code, f.node, fingerprint(f))
        if entry in entries and f.code not in NEVER_BASELINED:
            matched.add(entry)
        else:
            kept.append(f)
    left_out = len(result.findings) - len(kept)
    notes = [f"baseline {path}: {left_out} known finding{'s' * (left_out != 1)} not shown"]
    gone = len(entries - matched)
    if gone:
        notes.append(
            f"baseline {path}: {gone} recorded finding{'s' * (gone != 1)} no longer found; "
            f"`migrate check --write-baseline {path}` drops {'them' if gone != 1 else 'it'}"
        )
    keep = set(kept)
    outcomes = tuple(replace(o, findings=tuple(f for f in o.findings if f in keep)) for o in result.outcomes)
    return replace(
        result,
        findings=tuple(kept),
        outcomes=outcomes,
        notes=result.notes + tuple(notes),
        baseline=path,
        baselined=left_out,
    )


__all__ = ["BASELINE_FORMAT", "Entry", "apply_baseline", "baseline_text", "fingerprint", "parse_baseline"]
