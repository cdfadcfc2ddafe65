"""`migrate`: one small function per command; each parses options, calls the API, renders."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape

from orchestrator import api
from orchestrator.cli import check_cmd, render
from orchestrator.cli.common import STATE, EnvOpt, JsonOpt, app, handles_errors, project, shown_path
from orchestrator.cli.console import err, out, print_json, print_raw
from orchestrator.errors import ConfirmationNeededError


@app.callback()
def main_options(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Manifest file (default: $MIGRATE_CONFIG, migrate.toml, pyproject.toml)."),
    ] = None,
) -> None:
    STATE.config = config


@app.command()
@handles_errors
def services(as_json: JsonOpt = False) -> None:
    """Registered services, their heads and script locations."""
    rows = api.list_services(project())
    if as_json:
        print_json({"services": [r.to_json() for r in rows]})
    else:
        out.print(render.services_table(rows))


class GraphFormat(StrEnum):
    tree = "tree"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


@app.command()
@handles_errors
def graph(
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="tree, mermaid, dot or json.")] = GraphFormat.tree,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Mark applied and pending nodes of this environment.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The whole dependency graph of every service's revisions and copy steps."""
    result = api.graph(project(), env)
    if as_json or fmt is GraphFormat.json:
        print_json(result.to_json())
    elif fmt is GraphFormat.mermaid:
        print_raw(render.graph_mermaid(result))
    elif fmt is GraphFormat.dot:
        print_raw(render.graph_dot(result))
    else:
        out.print(render.graph_tree(result))


@app.command()
@handles_errors
def status(env: EnvOpt = None, as_json: JsonOpt = False) -> None:
    """Per service: database, current revision(s), head(s), pending count; last and interrupted runs."""
    result = api.status(project(), env)
    if as_json:
        print_json(result.to_json())
        return
    out.print(render.status_table(result))
    for line in render.status_extra(result):
        out.print(line, highlight=False)


@app.command()
@handles_errors
def plan(
    env: EnvOpt = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="service@rev to reach (repeatable); default: every head.")
    ] = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Show the SQL of each step (offline; touches no database).")
    ] = False,
    out_file: Annotated[
        str | None, typer.Option("--out", "-o", help="Write a plan file (a path, or '' for plans_dir).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The ordered pending steps for an environment."""
    result = api.make_plan(project(), env, target or (), sql=sql, out=out_file)
    if as_json:
        print_json(result.to_json())
    elif sql:
        print_raw(render.plan_sql_text(result))
    else:
        if result.plan.steps:
            out.print(render.plan_table(result))
        else:
            out.print(f"Nothing to do: env {result.plan.env} is at every head.")
    if result.out_path and not as_json:
        err.print(f"plan written to {shown_path(result.out_path)}", highlight=False)


@app.command()
@handles_errors
def new(
    service: Annotated[str, typer.Argument(help="The service whose tree gets the revision.")],
    message: Annotated[str, typer.Option("--message", "-m", help="The revision's message.")],
    requires: Annotated[
        list[str] | None, typer.Option("--requires", "-r", help="service@rev this revision requires (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a revision in a service's tree, with its cross-service `requires` filled in."""
    result = api.new_revision(project(), service, message, requires or ())
    if as_json:
        print_json(
            {
                "service": result.service,
                "revision": result.revision,
                "path": result.path,
                "requires": list(result.requires),
            }
        )
    else:
        out.print(f"created {result.service}@{result.revision}: {result.path}", highlight=False)
        if result.requires:
            out.print("requires " + ", ".join(result.requires), highlight=False)


def _confirm(project: api.Project, env: str | None, yes: bool) -> bool:
    """--yes, or on a terminal a typed confirmation of a protected environment's name."""
    if yes:
        return True
    name = project.env(env)
    if not project.manifest.env(name).protected:
        return False
    return _typed_name(name, f"env [bold]{escape(name)}[/] is protected.")


def _typed_name(name: str, why: str) -> bool:
    """On a terminal: say why (rich markup), ask for the environment's name, check the answer."""
    if not sys.stdin.isatty():
        return False
    err.print(f"{why} Type its name to go on: ", end="")
    answer = sys.stdin.readline().strip()
    return answer == name


def _render_run(result: Any, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
    else:
        if result.outcome == "dry_run":
            title = f"Dry run: {result.kind} on env {result.env} ({len(result.plan.steps)} steps)"
            if result.plan.steps:
                out.print(render.plan_table(api.PlanResult(result.plan), title=title))
                if result.sql:
                    print_raw(render.plan_sql_text(api.PlanResult(result.plan, result.sql)))
                for note in getattr(result, "reverts", ()):
                    out.print(f"{note.node}: would {note.text}.", highlight=False)
        style = {0: "green", 1: "red", 4: "bold red"}.get(result.exit_code, "yellow")
        err.print(f"[{style}]{result.message}[/]", highlight=False)
        for step in result.next_steps:
            err.print(f"[dim]next:[/] {step}", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


WaitOpt = Annotated[float, typer.Option("--wait", help="Wait up to SECONDS for a lock held by another run.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Confirm a protected environment without a prompt.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would run; change nothing anywhere.")]


@app.command()
@handles_errors
def apply(
    plan_file: Annotated[str | None, typer.Argument(help="A plan file made by `migrate plan --out`.")] = None,
    env: EnvOpt = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="service@rev to reach (repeatable).")
    ] = None,
    dry_run: DryOpt = False,
    yes: YesOpt = False,
    no_rollback: Annotated[bool, typer.Option("--no-rollback", help="On failure keep what succeeded.")] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=64, help="Run steps on different databases at once.")
    ] = 1,
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Apply the pending steps (computed now, or a saved plan file)."""
    from orchestrator.cli.progress import ProgressObserver

    proj = project()
    confirmed = dry_run or _confirm(proj, env, yes)
    result = api.apply(
        proj,
        env,
        plan_file,
        target or (),
        dry_run=dry_run,
        confirmed=confirmed,
        no_rollback=no_rollback,
        jobs=jobs,
        wait=wait,
        observer=ProgressObserver(quiet=False),
    )
    _render_run(result, as_json)


@app.command()
@handles_errors
def rollback(
    env: EnvOpt = None,
    run: Annotated[
        str | None, typer.Option("--run", help="The run to undo (default: the last successful one).")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Take one service back to service@rev (or service@base).")
    ] = None,
    dry_run: DryOpt = False,
    yes: YesOpt = False,
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Undo a run, or take a service back to a revision (dependents in other services first)."""
    from orchestrator.cli.progress import ProgressObserver

    proj = project()
    confirmed = dry_run or _confirm(proj, env, yes)
    result = api.rollback(
        proj, env, run_id=run, to=to, dry_run=dry_run, confirmed=confirmed, wait=wait, observer=ProgressObserver()
    )
    _render_run(result, as_json)


@app.command()
@handles_errors
def unlock(
    env: EnvOpt = None,
    yes: YesOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Release it even while its holder may be alive (recorded in the journal).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Release an environment's lock whose holder is gone (--force: even one that may be alive)."""

    proj = project()
    try:
        result = api.unlock(proj, env, yes, force=force)
    except ConfirmationNeededError as exc:
        if not _typed_name(exc.env, escape(api.redact_text(exc.message))):
            raise
        result = api.unlock(proj, env, True, force=force)
    released = result.released
    if as_json:
        print_json(result.to_json())
    elif released is None:
        err.print("No lock is held.")
    elif result.forced_record:
        err.print(
            f"Force-released the lock of {released.describe()}; journal record {result.forced_record} says so.",
            highlight=False,
        )
    else:
        err.print(f"Released the lock of {released.describe()} ({released.liveness()}).", highlight=False)


@app.command()
@handles_errors
def stamp(
    ref: Annotated[
        str, typer.Argument(metavar="SERVICE@REV", help="service@revision (or a unique prefix), @head or @base.")
    ],
    env: EnvOpt = None,
    yes: YesOpt = False,
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Record that a database is at a revision without running anything (after a repair by hand)."""

    proj = project()
    result = api.stamp(proj, env, ref, confirmed=_confirm(proj, env, yes), wait=wait)
    if as_json:
        print_json(result.to_json())
    else:
        style = "green" if result.exit_code == 0 else "red"
        err.print(f"[{style}]{escape(result.message)}[/]", highlight=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@handles_errors
def history(
    env: EnvOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The runs in the journal, with their steps and outcomes."""

    runs = api.history(project(), env, limit)
    if as_json:
        print_json({"runs": runs})
    else:
        out.print(render.history_tree(runs))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


app.command("check")(check_cmd.check)  # registered last: `migrate --help` lists it last

if __name__ == "__main__":
    main()
