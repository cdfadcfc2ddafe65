"""What every command of the CLI shares: the typer app, the global options, error handling."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from orchestrator import api
from orchestrator.cli.console import err, print_json
from orchestrator.errors import MigrateError

app = typer.Typer(
    name="migrate",
    help="Plan, apply, verify and roll back migrations across many services' Alembic trees.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    config: str | None = None


STATE = _State()

EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment (default: the manifest's default_env).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output on stdout (and nothing else).")]


def fail(exc: MigrateError, as_json: bool) -> typer.Exit:
    if as_json:
        data = exc.to_dict()
        data.update({k: api.redact_text(str(data[k])) for k in ("error", "hint") if k in data})
        print_json(data)
    else:
        # the message is text, not markup: "[envs]" or "[tool.migrate]" must print as written
        err.print(f"[bold red]error:[/] {escape(api.redact_text(exc.message))}", markup=True, highlight=False)
        if exc.hint:
            err.print(f"[dim]hint:[/] {escape(api.redact_text(exc.hint))}", highlight=False)
    return typer.Exit(exc.exit_code)


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except MigrateError as exc:
            raise fail(exc, bool(kw.get("as_json") or kw.get("fmt") == "json")) from None

    return wrapper  # type: ignore[return-value]


def shown_path(path: str) -> str:
    """A path relative to the working directory when it is below it."""
    import os

    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def project() -> api.Project:
    return api.open_project(STATE.config)
