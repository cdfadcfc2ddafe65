"""Small scratch workspaces for `migrate check`, written from templates into tmp_path.

Each revision file is written from one template, so a test names only what matters: the
bodies of ``upgrade()`` and ``downgrade()`` and any module-level lines (``requires``,
``destructive``...). ``line_of`` finds the line of a marker in a written file, so tests
assert exact lines without counting them by hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from orchestrator.cli.app import app
from tests import helpers
from tests.helpers import Rev, manifest_data, rev, write_manifest

REPO = Path(__file__).resolve().parents[2]


def R(  # named like the class it replaces: the tests read `R("u2", "u1", ...)`
    id: str,
    down: str | tuple[str, ...] | None = None,
    upgrade: str = "pass",
    downgrade: str = "pass",
    attrs: str = "",
    message: str = "",
) -> Rev:
    """One revision file: ``attrs`` are module-level lines, bodies are unindented source."""
    extra = attrs.strip() + "\n" if attrs.strip() else ""
    return rev(id, down, message, upgrade_body=upgrade, downgrade_body=downgrade, extra=extra, bare=True)


def table(id: str, down: str | None, name: str, attrs: str = "", columns: str = "") -> Rev:
    """A revision that creates table ``name`` (id, label and ``columns``) and drops it on downgrade."""
    return R(
        id,
        down,
        upgrade=(
            f"op.create_table(\n    {name!r},\n    sa.Column('id', sa.Integer(), primary_key=True),\n"
            f"    sa.Column('label', sa.String(50), nullable=True),\n{columns})"
        ),
        downgrade=f"op.drop_table({name!r})",
        attrs=attrs,
        message=f"create {name}",
    )


def write_revision(root: Path, service: str, r: Rev) -> Path:
    return helpers.write_revision(root, service, r)


def workspace(
    tmp_path: Path,
    services: Mapping[str, Sequence[Rev]],
    *,
    copies: Sequence[Mapping[str, Any]] = (),
    requires: Sequence[tuple[str, Sequence[str]]] = (),
    envs: Mapping[str, Mapping[str, str] | str] | None = None,
    folder: str = "ws",
) -> Path:
    """Write a workspace (a manifest and one bare ``versions/`` tree per service); return its folder."""
    root = tmp_path / folder
    root.mkdir(parents=True, exist_ok=True)
    for name, revisions in services.items():
        (root / "services" / name / "versions").mkdir(parents=True, exist_ok=True)
        for r in revisions:
            write_revision(root, name, r)
    envs = {"dev": "sqlite:///.migrate/dev/{service}.db"} if envs is None else envs
    tables = {env: spec if isinstance(spec, str) else {"urls": dict(spec)} for env, spec in envs.items()}
    data = manifest_data(
        services, tables, copies, [{"node": node, "needs": list(needs)} for node, needs in requires], default_env=None
    )
    write_manifest(root / "migrate.toml", data)
    return root


def rev_path(root: Path, service: str, rev: str) -> Path:
    return root / "services" / service / "versions" / f"{rev}_rev.py"


def rel(root: Path, service: str, rev: str) -> str:
    """The ``file`` of a finding about that revision (relative to the manifest's folder)."""
    return f"services/{service}/versions/{rev}_rev.py"


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data

    def codes(self) -> list[str]:
        return [f["code"] for f in self.json()["findings"]]


def check(root: Path, *args: str, env: Mapping[str, str] | None = None) -> Run:
    """`migrate --config ROOT/migrate.toml check ARGS` in-process."""
    result = CliRunner().invoke(app, ["--config", str(root / "migrate.toml"), "check", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def check_json(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    run = check(root, "--format", "json", *args)
    return run.exit_code, run.json()
