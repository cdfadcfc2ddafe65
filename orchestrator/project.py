"""A loaded workspace (``Project``) and what opens, observes and renders it.

The façade (``orchestrator.api``) and the executor (``orchestrator.run``) both build on it;
it imports neither.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.core.graph import FleetGraph
from orchestrator.core.manifest import env_name_or_default, service_url
from orchestrator.core.model import Manifest, Plan, UpgradeStep
from orchestrator.core.planner import ObservedState
from orchestrator.core.workspace import load_workspace

if TYPE_CHECKING:
    from orchestrator.runtime.alembic_runner import RenderedStep


@dataclass
class Project:
    """A loaded workspace plus the process environment its ``${VARS}`` come from."""

    manifest: Manifest
    graph: FleetGraph
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def env(self, name: str | None) -> str:
        return env_name_or_default(self.manifest, name)

    def url(self, env: str, service: str) -> str:
        return service_url(self.manifest, env, service, self.environ)


def open_project(
    config: str | None = None,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_cache: bool = True,
) -> Project:
    environ = dict(os.environ if environ is None else environ)
    ws = load_workspace(config, cwd, environ, use_cache=use_cache)
    return Project(ws.manifest, ws.graph, environ)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- state -------------------------------------------------------------------------------
def observe(project: Project, env: str, services: Sequence[str] | None = None) -> ObservedState:
    """Read every service's current revisions (and the journal's completed copies)."""
    from orchestrator.runtime.state import read_state

    wanted = [
        (name, project.url(env, name), svc.spec.version_table)
        for name, svc in project.graph.services.items()
        if services is None or name in services
    ]

    def read(item: tuple[str, str, str]) -> tuple[tuple[str, ...], bool]:
        name, url, table = item
        return read_state(url, table, name)

    if len(wanted) > 2:  # one round trip per database: read them concurrently
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, len(wanted))) as pool:
            results = list(pool.map(read, wanted))
    else:
        results = [read(item) for item in wanted]
    heads = {name: found for (name, _, _), (found, _) in zip(wanted, results, strict=True)}
    unmigrated = [name for (name, _, _), (_, has_table) in zip(wanted, results, strict=True) if not has_table]
    completed, reverting = _copy_states(project, env)
    return ObservedState.of(heads, completed, unmigrated, reverting)


def _copy_states(project: Project, env: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(completed copies, copies whose revert stopped half-way), from the journal."""
    if not project.manifest.copies:
        return (), ()
    from orchestrator.runtime.journal import copy_states

    return copy_states(project.manifest, env, project.environ)


# -- SQL text ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StepSQL:
    step_id: str
    sql: str | None
    error: str | None
    dialect: str | None = None  # the dialect it was rendered for; None for a copy step
    revision: bool = True  # False: a copy step, which has no SQL text to render

    @property
    def unrendered(self) -> bool:
        """A revision step that offline mode could not render."""
        return self.revision and self.error is not None


def render_sql(project: Project, plan: Plan) -> tuple[StepSQL, ...]:
    from orchestrator.runtime.alembic_runner import render_offline

    out = []
    for step in plan.steps:
        if isinstance(step, UpgradeStep):
            down = (
                ()
                if step.down_revision is None
                else (step.down_revision,)
                if isinstance(step.down_revision, str)
                else step.down_revision
            )
            spec = project.graph.services[step.service].spec
            url = project.url(plan.env, step.service)
            r = render_offline(spec, url, step.revision, down)
            out.append(_step_sql(step.id, r, url))
        elif step.kind == "downgrade":
            spec = project.graph.services[step.service].spec  # type: ignore[union-attr]
            url = project.url(plan.env, step.service)  # type: ignore[union-attr]
            r = render_offline(spec, url, step.revision, (), upgrade=False)  # type: ignore[union-attr]
            out.append(_step_sql(step.id, r, url))
        else:
            out.append(StepSQL(step.id, None, "a data copy (rows are streamed, not SQL text)", revision=False))
    return tuple(out)


def _step_sql(step_id: str, rendered: RenderedStep, url: str) -> StepSQL:
    from orchestrator.runtime.engines import dialect_of

    error = None if rendered.error is None else f"cannot be rendered offline: {rendered.error}"
    return StepSQL(step_id, rendered.sql, error, rendered.dialect or dialect_of(url))


__all__ = ["Project", "StepSQL", "now_iso", "observe", "open_project", "render_sql"]
