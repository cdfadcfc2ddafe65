"""Machine renderings of a check result: JUnit XML and GitHub workflow annotations.

The JSON form is ``CheckResult.to_json``; the rich text form lives with the CLI.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from orchestrator.core.checks.findings import RULES, Finding, Level, at_least
from orchestrator.core.checks.result import CheckResult


def junit_xml(result: CheckResult, fail_on: Level = "error") -> str:
    """One test suite per rule, one test case per subject (service, node, copy, step) the
    rule examined. Findings at or above ``fail_on`` are failures; below it, they are kept
    in the test case's output; a subject the rule skipped is a skipped test case."""
    suites = ET.Element("testsuites", name="migrate check")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for outcome in result.outcomes:
        rule = RULES[outcome.group]
        by_subject: dict[str, list[Finding]] = {}
        for f in result.findings:
            if f.group == outcome.group:
                by_subject.setdefault(_subject(f, outcome.group), []).append(f)
        subjects = list(dict.fromkeys([*outcome.subjects, *by_subject]))
        skipped = dict(outcome.skipped)
        subjects += [s for s in skipped if s not in subjects]
        suite = ET.SubElement(suites, "testsuite", name=f"{outcome.group}: {rule.title}")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for subject in subjects:
            case = ET.SubElement(suite, "testcase", classname=f"migrate.check.{outcome.group}", name=subject)
            counts["tests"] += 1
            found = by_subject.get(subject, [])
            located = next((f for f in found if f.file), None)
            if located is not None:
                case.set("file", located.file or "")
                if located.line:
                    case.set("line", str(located.line))
            failing = [f for f in found if at_least(f.level, fail_on)]
            if failing:
                counts["failures"] += 1
                failure = ET.SubElement(
                    case,
                    "failure",
                    message="; ".join(f"{f.code} {f.message}" for f in failing),
                    type=failing[0].code,
                )
                failure.text = "\n\n".join(_finding_text(f) for f in failing)
            elif subject in skipped and not found:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=skipped[subject])
            quiet = [f for f in found if f not in failing]
            if quiet:
                out = ET.SubElement(case, "system-out")
                out.text = "\n\n".join(_finding_text(f) for f in quiet)
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("errors", "0")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _subject(f: Finding, group: str) -> str:
    if group == "graph":
        return "graph"  # the graph loads or it does not: one test case
    if f.node is not None:
        return f.node
    if group == "plan-file":
        return f.file or "plan"
    return f.file or "workspace"


def _finding_text(f: Finding) -> str:
    where = f"{f.file}:{f.line}" if f.file and f.line else f.file or ""
    text = f"{f.level} {f.code} ({f.title})" + (f" at {where}" if where else "") + f"\n{f.message}"
    if f.hint:
        text += f"\nhint: {f.hint}"
    return text


def github_annotations(result: CheckResult, environ: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """``::error file=...,line=...,title=...::message`` lines, one per finding. Paths are made
    relative to ``$GITHUB_WORKSPACE`` (or the working directory) so the annotations land on
    the pull request's files."""
    environ = os.environ if environ is None else environ
    base = environ.get("GITHUB_WORKSPACE") or cwd or os.getcwd()
    lines = []
    for f in result.findings:
        props = []
        if f.file:
            path = f.file if os.path.isabs(f.file) else os.path.join(result.root, f.file)
            rel = os.path.relpath(path, base)
            props.append(f"file={_prop(rel.replace(os.sep, '/') if not rel.startswith('..') else path)}")
            if f.line:
                props.append(f"line={f.line}")
        props.append(f"title={_prop(f'{f.code} {f.title}')}")
        message = f.message + (f"\nhint: {f.hint}" if f.hint else "")
        lines.append(f"::{f.level} {','.join(props)}::{_data(message)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
