"""Run one service's revisions through Alembic's own Python API.

The orchestrator decides exactly which revisions run, so it hands Alembic the list of
``RevisionStep`` objects itself (through the ``fn`` of an ``EnvironmentContext``), on one
connection, with one transaction per revision. The service's own ``env.py`` runs when there
is one (the connection is in ``config.attributes["connection"]`` and ``sqlalchemy.url`` is
set); otherwise a built-in environment does what a plain env.py would.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import RevisionStep
from alembic.script import ScriptDirectory

from orchestrator.core.manifest import service_environ
from orchestrator.core.model import ServiceSpec
from orchestrator.core.redact import redact_text
from orchestrator.errors import MigrateError
from orchestrator.isolation import handlers_off_stdout, service_code

# (revision id, event) -> None; event is "start" or "done" (after the revision's commit).
StepHook = Callable[[str, str], None]


class _OrchestratedContext(EnvironmentContext):
    """An EnvironmentContext whose ``configure`` always adds what the orchestrator needs,
    whatever the service's env.py passes."""

    orchestrator_opts: dict[str, Any]

    def configure(self, *args: Any, **kw: Any) -> None:
        opts = self.orchestrator_opts
        kw["transaction_per_migration"] = True
        if opts.get("transactional_ddl") is not None:
            kw["transactional_ddl"] = opts["transactional_ddl"]
        if opts.get("as_sql"):
            kw.setdefault("literal_binds", True)
            if kw.get("url") is None and kw.get("connection") is None:
                kw["url"] = opts["url"]
            kw.pop("connection", None) if kw.get("url") else None
        super().configure(*args, **kw)


# Alembic installs ``alembic.context``'s module-level proxy per class: let the subclass use the
# proxy set up for EnvironmentContext, so env.py's ``context.config`` and ``context.configure``
# reach this instance.
_OrchestratedContext._setups[_OrchestratedContext] = EnvironmentContext._setups[EnvironmentContext]


def _hooked_step(revision_map: Any, revision: Any, is_upgrade: bool, on_start: Callable[[], None]) -> RevisionStep:
    """A RevisionStep that reports when its migration function starts. The wrapper keeps the
    function's name: Alembic logs "Running upgrade <from> -> <rev>" from it."""
    step = RevisionStep(revision_map, revision, is_upgrade)
    fn = step.migration_fn

    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> Any:
        handlers_off_stdout()  # a logging handler env.py set up on the real stdout
        on_start()
        return fn(*args, **kw)

    step.migration_fn = run
    return step


_scripts: dict[tuple[str, tuple[tuple[str, int, int], ...]], ScriptDirectory] = {}


def script_directory(cfg: Config, location: str) -> ScriptDirectory:
    """Alembic's ScriptDirectory for a location, kept for the life of the process while
    none of its revision files changed (loading one imports every revision file)."""
    import os

    versions = os.path.join(location, "versions")
    try:
        stamp = tuple(
            sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(versions) if e.is_file())
        )
    except OSError:
        stamp = ()
    key = (location, stamp)
    script = _scripts.get(key)
    if script is None:
        if len(_scripts) > 64:
            _scripts.clear()
        script = ScriptDirectory.from_config(cfg)
        with service_code():  # importing the revision files: what they print goes to stderr
            script.revision_map.heads  # noqa: B018  # loads the map
        _scripts[key] = script
    return script


def _environ(spec: ServiceSpec, url: str) -> dict[str, str]:
    """The service's ``environ`` with ``{url}`` = ``url`` (its ``${VARS}`` were checked when
    the URL was resolved from the manifest)."""
    return service_environ(spec, url, os.environ, file=f"the manifest's [services.{spec.name}]")


def make_config(spec: ServiceSpec, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", spec.script_location)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _target_metadata(spec: ServiceSpec) -> sa.MetaData | None:
    if spec.target_metadata:
        module, _, attr = spec.target_metadata.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise MigrateError(
                f"service '{spec.name}': target_metadata '{spec.target_metadata}' cannot be imported: {exc}",
                "check the module path and that it is importable from the manifest's folder",
            ) from exc
        return obj  # type: ignore[no-any-return]
    if spec.naming_convention:
        return sa.MetaData(naming_convention=dict(spec.naming_convention))
    return None


def _builtin_env(context: _OrchestratedContext, spec: ServiceSpec, connection: sa.Connection | None) -> None:
    kw: dict[str, Any] = {"version_table": spec.version_table, "target_metadata": _target_metadata(spec)}
    if context.is_offline_mode():
        context.configure(url=context.orchestrator_opts["url"], literal_binds=True, **kw)
    else:
        context.configure(connection=connection, **kw)
    with context.begin_transaction():
        context.run_migrations()


@dataclass
class StatementLog:
    """Statements sent to a database while one revision ran (for non-transactional DDL).

    ``on_statement`` is called with the revision and its statements so far just before each
    statement that may change the database is sent, so a crash leaves them on record. They are
    kept redacted: they are only ever shown and journaled, and a statement may hold a secret
    (a revision setting a password from the connection's, say)."""

    statements: list[str]
    current: str | None = None
    on_statement: Callable[[str, list[str]], None] | None = None

    def add(self, statement: str) -> None:
        # one line each: journaled one a line (masked first: a newline may be inside a secret)
        self.statements.append(" ".join(redact_text(statement).split()))
        if self.on_statement is not None and self.current is not None and _may_write(statement):
            self.on_statement(self.current, list(self.statements))


_READS = ("select", "show", "describe", "desc", "explain", "set")


def _may_write(statement: str) -> bool:
    words = statement.lstrip(" (\n\t").split(None, 1)
    return bool(words) and words[0].lower() not in _READS


def run_revisions(
    spec: ServiceSpec,
    url: str,
    connection: sa.Connection,
    revisions: Sequence[str],
    upgrade: bool,
    hook: StepHook | None = None,
    statement_log: StatementLog | None = None,
) -> None:
    """Apply (or undo) exactly ``revisions``, in order, on ``connection``."""
    cfg = make_config(spec, url)
    cfg.attributes["connection"] = connection
    script = script_directory(cfg, spec.script_location)
    pending = list(revisions)
    state = {"started": None}

    def on_start_of(rev: str) -> Callable[[], None]:
        def on_start() -> None:
            previous = state["started"]
            if previous is not None and hook:
                hook(previous, "done")  # the previous revision's transaction has committed
            state["started"] = rev  # type: ignore[assignment]
            if statement_log is not None:
                statement_log.statements.clear()
                statement_log.current = rev
            if hook:
                hook(rev, "start")

        return on_start

    def fn(heads: Any, _context: Any) -> list[RevisionStep]:
        rmap = script.revision_map
        return [_hooked_step(rmap, script.get_revision(r), upgrade, on_start_of(r)) for r in pending]

    listener = None
    if statement_log is not None:

        def listener(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
            statement_log.add(statement)

        sa.event.listen(connection, "before_cursor_execute", listener)
    context = _OrchestratedContext(cfg, script, fn=fn)
    dialect = connection.dialect.name
    context.orchestrator_opts = {"transactional_ddl": True if dialect == "sqlite" else None, "url": url}
    try:
        with service_code(_environ(spec, url)), context:
            if script.dir and _has_env_py(script):
                script.run_env()
            else:
                _builtin_env(context, spec, connection)
        if state["started"] is not None and hook:
            hook(state["started"], "done")
    finally:
        if listener is not None:
            sa.event.remove(connection, "before_cursor_execute", listener)


def stamp_revision(spec: ServiceSpec, url: str, connection: sa.Connection, target: str) -> None:
    """Record ``target`` (a revision id, or ``base``) in the service's version table without
    running any migration: Alembic's own stamp steps, through the service's env.py when it has
    one, else the built-in environment (and so its ``version_table``)."""
    cfg = make_config(spec, url)
    cfg.attributes["connection"] = connection
    script = script_directory(cfg, spec.script_location)

    def fn(heads: Any, _context: Any) -> Any:
        return script._stamp_revs((target,), heads)

    context = _OrchestratedContext(cfg, script, fn=fn, destination_rev=(target,))
    dialect = connection.dialect.name
    context.orchestrator_opts = {"transactional_ddl": True if dialect == "sqlite" else None, "url": url}
    with service_code(_environ(spec, url)), context:
        if script.dir and _has_env_py(script):
            script.run_env()
        else:
            _builtin_env(context, spec, connection)


def _has_env_py(script: ScriptDirectory) -> bool:
    import os

    return os.path.isfile(os.path.join(script.dir, "env.py"))


@dataclass(frozen=True)
class RenderedStep:
    revision: str
    sql: str | None
    error: str | None
    dialect: str | None = None  # the dialect Alembic's context rendered for (None: never configured)


def render_offline(
    spec: ServiceSpec, url: str, revision: str, down: Sequence[str], upgrade: bool = True
) -> RenderedStep:
    """The SQL one revision would run, through Alembic's offline mode, touching no database."""
    buf = io.StringIO()
    cfg = make_config(spec, url)
    cfg.output_buffer = buf
    script = script_directory(cfg, spec.script_location)
    start: Any = (tuple(down) or None) if upgrade else (revision,)

    def fn(heads: Any, _context: Any) -> list[RevisionStep]:
        return [RevisionStep(script.revision_map, script.get_revision(revision), upgrade)]

    context = _OrchestratedContext(cfg, script, fn=fn, as_sql=True, starting_rev=start)
    context.orchestrator_opts = {"as_sql": True, "url": url}
    try:
        with service_code(_environ(spec, url)), context:
            if _has_env_py(script):
                script.run_env()
            else:
                _builtin_env(context, spec, None)
    except Exception as exc:  # offline mode cannot run code that reads the database
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return RenderedStep(revision, None, reason, _rendered_dialect(context))
    return RenderedStep(revision, buf.getvalue(), None, _rendered_dialect(context))


def _rendered_dialect(context: EnvironmentContext) -> str | None:
    """The dialect name of the migration context env.py configured, whatever URL it used."""
    migration = getattr(context, "_migration_context", None)
    dialect = getattr(migration, "dialect", None)
    return None if dialect is None else str(dialect.name)
