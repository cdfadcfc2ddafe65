"""`migrate check`: the pre-deploy CI gate (registered on the main app)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from orchestrator import api
from orchestrator.api import CheckResult, Finding, Level, github_annotations, junit_xml
from orchestrator.cli.common import STATE, handles_errors
from orchestrator.cli.console import err, out, print_json, print_raw


class CheckFormat(StrEnum):
    text = "text"
    json = "json"
    junit = "junit"
    github = "github"


class FailOn(StrEnum):
    error = "error"
    warning = "warning"


@handles_errors
def check(
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Also check against this environment's state (read only when given). With --roundtrip and no "
            "--scratch-url, the round trip runs on its databases: only for an env declared `scratch = true`, "
            "which is returned to the revisions it was found at.",
        ),
    ] = None,
    roundtrip: Annotated[
        bool, typer.Option("--roundtrip", help="Upgrade, downgrade and re-upgrade every step on scratch databases.")
    ] = False,
    scratch_url: Annotated[
        str | None,
        typer.Option(
            "--scratch-url",
            help="Server for --roundtrip's throw-away databases (e.g. postgresql+psycopg://postgres@127.0.0.1:5432); "
            "default: temporary SQLite files.",
        ),
    ] = None,
    plan_file: Annotated[str | None, typer.Option("--plan", help="Check that this plan file is still valid.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Revision-level rules only for revisions added or changed since this git ref."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", help="Report only findings not recorded in this file (see --write-baseline)."),
    ] = None,
    write_baseline: Annotated[
        str | None,
        typer.Option("--write-baseline", help="Record today's findings in this file, to adopt the gate."),
    ] = None,
    fmt: Annotated[CheckFormat, typer.Option("--format", "-f", help="text, json, junit or github.")] = CheckFormat.text,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="The lowest level of finding that makes the exit code 1.")
    ] = FailOn.error,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """The CI gate: refuse a change set that would break a deploy (exit 1), or a broken graph (exit 2)."""
    if as_json:
        fmt = CheckFormat.json
    threshold: Level = "warning" if fail_on is FailOn.warning else "error"
    hook = _progress() if roundtrip and fmt is CheckFormat.text and sys.stderr.isatty() else None
    result = api.check(
        STATE.config,
        env=env,
        roundtrip=roundtrip,
        scratch_url=scratch_url,
        plan_file=plan_file,
        since=since,
        hook=hook,
        baseline=baseline,
        write_baseline=write_baseline,
    )
    if fmt is CheckFormat.json:
        print_json(result.to_json(threshold))
    elif fmt is CheckFormat.junit:
        print_raw(junit_xml(result, threshold))
    elif fmt is CheckFormat.github:
        text = github_annotations(result)
        if text:
            print_raw(text)
        err.print(_summary(result, threshold), highlight=False)
    else:
        out.print(render_text(result, threshold), highlight=False)
    code = result.exit_code(threshold)
    if code:
        raise typer.Exit(code)


def _progress() -> Callable[[str, str], None]:
    def hook(node: str, phase: str) -> None:
        err.print(f"[dim]round trip: {phase} {node}[/]", highlight=False)

    return hook


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


_STYLE = {"error": "bold red", "warning": "yellow"}


def render_text(result: CheckResult, fail_on: Level) -> Group:
    """Findings grouped by service, then notes and a one-line summary."""
    parts: list[Text] = []
    head = Text("migrate check", style="bold")
    head.append(
        f": {_n(result.revisions, 'revision')} in {_n(result.services, 'service')}"
        + (f", {_n(result.copies, 'copy', 'copies')}" if result.copies else "")
        + (f"; revision rules on {result.revisions_checked} changed since {result.since}" if result.since else "")
        + (f"; env {result.env}" if result.env else ""),
        style="none",
    )
    parts.append(head)
    groups: dict[str, list[Finding]] = {}
    for f in result.findings:
        groups.setdefault(f.service or "workspace", []).append(f)
    for name, findings in groups.items():
        parts.append(Text(""))
        parts.append(Text(name, style="bold underline"))
        for f in findings:
            line = Text("  ")
            line.append(f"{f.level:<7}", style=_STYLE[f.level])
            line.append(f" {f.code} ", style="bold")
            line.append(f.title)
            if f.file:
                line.append(f"  {f.file}" + (f":{f.line}" if f.line else ""), style="cyan")
            parts.append(line)
            parts.append(Text("    " + f.message))
            if f.hint:
                parts.append(Text("    hint: " + f.hint, style="dim"))
    notes = result.all_notes
    if notes:
        parts.append(Text(""))
        parts.extend(Text("note: " + n, style="dim") for n in notes)
    parts.append(Text(""))
    parts.append(_summary(result, fail_on))
    return Group(*parts)


def _summary(result: CheckResult, fail_on: Level) -> Text:
    code = result.exit_code(fail_on)
    if result.load_failed:
        return Text("✗ the workspace does not load (exit 2)", style="bold red")
    counts = (
        f"{result.errors} error{'s' * (result.errors != 1)}, {result.warnings} warning{'s' * (result.warnings != 1)}"
    )
    if code:
        return Text(f"✗ {counts}: failing on {fail_on} (exit {code})", style="bold red")
    if result.findings:
        return Text(f"✓ {counts}: nothing at the --fail-on {fail_on} level", style="green")
    return Text("✓ no findings", style="bold green")
