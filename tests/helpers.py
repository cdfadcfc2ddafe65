"""Builders for scratch workspaces and small checks on real databases.

``make_workspace`` writes a manifest and one bare Alembic tree per service (``versions/``
only, so the built-in environment runs it unless ``env_py`` asks for an ``env.py``)::

    root = make_workspace(
        tmp_path,
        {
            "users": [rev("a1"), rev("a2", "a1")],
            "orders": [rev("b1", requires=["users@a2"])],
        },
        envs={"dev": "sqlite:///.migrate/dev/{service}.db"},
    )

Each revision creates one table (``<service>_<revision>`` unless ``table=`` says otherwise)
and its downgrade drops it, so applying and undoing it is visible in the reflected schema.
``fleet`` builds the same shapes as in-memory values for pure graph and planner tests.

This is the suite's one workspace builder: ``Rev`` and ``to_toml`` are also what
``tests/check/ws.py`` (``R``: bare revisions with hand-written bodies) and
``tests/executor/ledger_ws.py`` (revisions that keep a ledger) write with.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from orchestrator.core.graph import FleetGraph

REPO = Path(__file__).resolve().parents[1]
MIGRATE = str(Path(sys.executable).with_name("migrate"))

DownRevision = str | Sequence[str] | None


@dataclass(frozen=True)
class Rev:
    """One revision file to write. ``down`` is Alembic's down_revision (a tuple at a merge)."""

    id: str
    down: DownRevision = None
    message: str = ""
    requires: tuple[str, ...] = ()
    annotated: bool = False  # write `requires: list[str] = [...]` instead of `requires = [...]`
    depends_on: tuple[str, ...] = ()
    branch_labels: tuple[str, ...] = ()
    table: str | None = None  # default: "<service>_<id>"
    irreversible: bool = False
    destructive: bool = False
    upgrade_raises: str | None = None  # upgrade creates its table, then raises RuntimeError(this)
    downgrade_raises: str | None = None
    reads_db: bool = False  # upgrade queries the database first (cannot render offline)
    upgrade_body: str | None = None  # replace the generated body (indented by the writer)
    downgrade_body: str | None = None
    extra: str = ""  # module-level source appended verbatim
    bare: bool = False  # no `requires` line: `extra` holds every module-level attribute

    @property
    def downs(self) -> tuple[str, ...]:
        if self.down is None:
            return ()
        if isinstance(self.down, str):
            return (self.down,)
        return tuple(self.down)

    def message_text(self) -> str:
        return self.message or f"step {self.id}"

    def table_name(self, service: str) -> str:
        return self.table or f"{service}_{self.id}"


def rev(
    id: str,
    down: DownRevision = None,
    message: str = "",
    requires: Iterable[str] = (),
    **kw: Any,
) -> Rev:
    """A revision; ``rev("a2", "a1", requires=["users@b1"], irreversible=True)``."""
    if "depends_on" in kw:
        kw["depends_on"] = tuple(kw["depends_on"])
    if "branch_labels" in kw:
        kw["branch_labels"] = tuple(kw["branch_labels"])
    return Rev(id, down, message, tuple(requires), **kw)


def chain(prefix: str, count: int, **kw: Any) -> list[Rev]:
    """``count`` revisions ``<prefix>1 .. <prefix>N``, each on top of the previous one."""
    return [rev(f"{prefix}{i}", f"{prefix}{i - 1}" if i > 1 else None, **kw) for i in range(1, count + 1)]


# -- revision files -----------------------------------------------------------------------
def _indent(body: str) -> str:
    lines = [line.rstrip() for line in body.strip("\n").splitlines()]
    return "\n".join("    " + line if line else "" for line in lines)


def revision_source(service: str, r: Rev) -> str:
    table = r.table_name(service)
    if r.upgrade_body is not None:
        upgrade = r.upgrade_body
    else:
        upgrade = ""
        if r.reads_db:
            upgrade += 'existing = op.get_bind().execute(sa.text("SELECT count(*) FROM alembic_version")).scalar()\n'
            upgrade += "assert existing is not None\n"
        upgrade += (
            f"op.create_table(\n"
            f"    {table!r},\n"
            f'    sa.Column("id", sa.Integer(), primary_key=True),\n'
            f'    sa.Column("name", sa.String(50), nullable=True),\n'
            f")\n"
        )
        if r.upgrade_raises is not None:
            upgrade += f"raise RuntimeError({r.upgrade_raises!r})\n"
    if r.downgrade_body is not None:
        downgrade = r.downgrade_body
    else:
        downgrade = f"op.drop_table({table!r})\n"
        if r.downgrade_raises is not None:
            downgrade += f"raise RuntimeError({r.downgrade_raises!r})\n"
    down = None if not r.downs else r.downs[0] if len(r.downs) == 1 else r.downs
    requires_line = f"requires: list[str] = {list(r.requires)!r}" if r.annotated else f"requires = {list(r.requires)!r}"
    requires_line = "" if r.bare else requires_line + "\n"
    depends = None if not r.depends_on else list(r.depends_on)
    labels = None if not r.branch_labels else list(r.branch_labels)
    flags = ""
    if r.irreversible:
        flags += "irreversible = True\n"
    if r.destructive:
        flags += "destructive = True\n"
    revises = ", ".join(r.downs)
    return (
        f'"""{r.message_text()}\n\nRevision ID: {r.id}\nRevises: {revises}\n"""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {r.id!r}\n"
        f"down_revision = {down!r}\n"
        f"branch_labels = {labels!r}\n"
        f"depends_on = {depends!r}\n"
        f"{requires_line}"
        f"{flags}"
        f"{r.extra}\n\n"
        f"def upgrade():\n{_indent(upgrade)}\n\n\n"
        f"def downgrade():\n{_indent(downgrade)}\n"
    )


def revision_path(root: Path, service: str, r: Rev | str) -> Path:
    rid = r if isinstance(r, str) else r.id
    return root / "services" / service / "versions" / f"{rid}_rev.py"


def write_revision(root: Path, service: str, r: Rev) -> Path:
    """Write (or overwrite) one revision file of a workspace made by ``make_workspace``."""
    path = revision_path(root, service, r)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(revision_source(service, r), encoding="utf-8")
    return path


ENV_PY = '''"""Alembic's "sharing a connection" recipe, with a URL fallback."""
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
'''


# -- manifests ----------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer: scalars first, then tables, then arrays of tables."""
    lines: list[str] = []
    _write_table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    arrays = {
        k: v for k, v in data.items() if isinstance(v, list | tuple) and v and all(isinstance(i, Mapping) for i in v)
    }
    for k, v in data.items():
        if k not in tables and k not in arrays:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables.items():
        sub = [*path, _toml_key(k)]
        if not v or any(not isinstance(i, Mapping) for i in v.values()):
            lines += ["", f"[{'.'.join(sub)}]"]
        _write_table(lines, sub, v)
    for k, items in arrays.items():
        sub = [*path, _toml_key(k)]
        for item in items:
            lines += ["", f"[[{'.'.join(sub)}]]"]
            _write_table(lines, sub, item)


def manifest_data(
    services: Iterable[str],
    envs: Mapping[str, str | Mapping[str, Any]] | None = None,
    copies: Sequence[Mapping[str, Any]] = (),
    requires: Mapping[str, Sequence[str]] | Sequence[Mapping[str, Any]] = (),
    default_env: str | None = "dev",
    plans_dir: str | None = None,
    service_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest as a dict. An env given as a string is its ``url`` template."""
    envs = {"dev": "sqlite:///.migrate/dev/{service}.db"} if envs is None else envs
    data: dict[str, Any] = {}
    if plans_dir is not None:
        data["plans_dir"] = plans_dir
    if default_env is not None:
        data["default_env"] = default_env
    data["services"] = {
        name: {"script_location": f"services/{name}", **dict((service_options or {}).get(name, {}))}
        for name in services
    }
    data["envs"] = {name: {"url": env} if isinstance(env, str) else dict(env) for name, env in envs.items()}
    if copies:
        data["copies"] = [dict(c) for c in copies]
    if requires:
        if isinstance(requires, Mapping):
            data["requires"] = [{"node": node, "needs": list(needs)} for node, needs in requires.items()]
        else:
            data["requires"] = [dict(r) for r in requires]
    return data


def make_workspace(
    tmp_path: Path,
    services: Mapping[str, Sequence[Rev]],
    envs: Mapping[str, str | Mapping[str, Any]] | None = None,
    copies: Sequence[Mapping[str, Any]] = (),
    requires: Mapping[str, Sequence[str]] | Sequence[Mapping[str, Any]] = (),
    *,
    default_env: str | None = "dev",
    plans_dir: str | None = None,
    service_options: Mapping[str, Mapping[str, Any]] | None = None,
    env_py: bool | Iterable[str] = False,
    folder: str = "ws",
    manifest_name: str = "migrate.toml",
) -> Path:
    """Write a workspace under ``tmp_path/folder`` and return that folder.

    ``envs`` maps an env name to a URL template or to a whole ``[envs.NAME]`` table (e.g.
    ``{"urls": {"users": url}}``); the default is one SQLite file per service under
    ``.migrate/dev/``. ``requires`` is ``{"orders@b1": ["users@a1"]}`` or a list of
    ``[[requires]]`` tables. ``env_py`` gives every service (True) or the named ones an
    ``env.py``. With ``manifest_name="pyproject.toml"`` the manifest goes under
    ``[tool.migrate]``.
    """
    root = tmp_path / folder
    root.mkdir(parents=True, exist_ok=True)
    with_env = set(services) if env_py is True else set() if env_py is False else set(env_py)
    for name, revisions in services.items():
        versions = root / "services" / name / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        for r in revisions:
            write_revision(root, name, r)
        if name in with_env:
            (root / "services" / name / "env.py").write_text(ENV_PY, encoding="utf-8")
    data = manifest_data(services, envs, copies, requires, default_env, plans_dir, service_options)
    write_manifest(root / manifest_name, data)
    return root


def write_manifest(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as ``migrate.toml`` (or under ``[tool.migrate]`` of a pyproject.toml)."""
    if path.name == "pyproject.toml":
        text = '[project]\nname = "demo"\nversion = "0"\n\n' + to_toml({"tool": {"migrate": data}})
    else:
        text = to_toml(data)
    path.write_text(text, encoding="utf-8")
    return path


# -- in-memory graphs ---------------------------------------------------------------------
def fleet(
    services: Mapping[str, Sequence[Rev]],
    copies: Sequence[Mapping[str, Any]] = (),
    requires: Mapping[str, Sequence[str]] | None = None,
) -> FleetGraph:
    """A ``FleetGraph`` of in-memory revisions (each service's list is in base-to-head order)."""
    from orchestrator.core.graph import FleetGraph
    from orchestrator.core.model import CopySpec, Manifest, RequireSpec, Revision, Service, ServiceSpec

    built = []
    for name, revs in services.items():
        spec = ServiceSpec(name=name, script_location=f"/mem/{name}")
        children = {d for r in revs for d in r.downs}
        revisions = tuple(
            Revision(
                service=name,
                revision=r.id,
                down_revisions=r.downs,
                depends_on=r.depends_on,
                message=r.message_text(),
                path=f"/mem/{name}/versions/{r.id}_rev.py",
                checksum=f"sum-{name}-{r.id}",
                requires=r.requires,
                irreversible=r.irreversible,
                destructive=r.destructive,
                branch_labels=r.branch_labels,
                order=i,
            )
            for i, r in enumerate(revs)
        )
        built.append(
            Service(
                spec=spec,
                revisions=revisions,
                heads=tuple(r.id for r in revs if r.id not in children),
                bases=tuple(r.id for r in revs if not r.downs),
                has_env_py=False,
            )
        )
    copy_specs = tuple(
        CopySpec(
            name=c["name"],
            source=c["source"],
            target=c["target"],
            table=c["table"],
            target_table=c.get("target_table", c["table"]),
            after=tuple(c.get("after", ())),
            before=tuple(c.get("before", ())),
        )
        for c in copies
    )
    manifest = Manifest(
        path="/mem/migrate.toml",
        root="/mem",
        services=tuple(s.spec for s in built),
        copies=copy_specs,
        requires=tuple(RequireSpec(node, tuple(needs)) for node, needs in (requires or {}).items()),
    )
    return FleetGraph(manifest, built)


# -- databases ----------------------------------------------------------------------------
def alembic_upgrade(url: str, script_location: str | Path, target: str, version_table: str = "alembic_version") -> None:
    """Upgrade one database to ``target`` with Alembic's own API (not the orchestrator's)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(script_location))
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "version_table": version_table,
                    "script": script,
                    "fn": lambda heads, _ctx: script._upgrade_revs(target, heads),
                },
            )
            with Operations.context(context):
                context.run_migrations()
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    """The tables of a database, reflected (a SQLite file is opened read-only)."""
    engine = _reader(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def version_rows(url: str, version_table: str = "alembic_version") -> list[str]:
    """The sorted contents of a version table ([] when it does not exist)."""
    engine = _reader(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(version_table):
                return []
            t = sa.table(version_table, sa.column("version_num"))
            return sorted(conn.execute(sa.select(t.c.version_num)).scalars())
    finally:
        engine.dispose()


def sqlite_file(url: str) -> Path | None:
    u = sa.engine.make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database else None


def _reader(url: str) -> sa.Engine:
    path = sqlite_file(url)
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(path)
        return sa.create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True), poolclass=sa.pool.NullPool
        )
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


# -- running the CLI ----------------------------------------------------------------------
@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = field(default=None, repr=False)

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(args: Sequence[str], cwd: Path | None = None, env: Mapping[str, str | None] | None = None) -> Ran:
    """Run ``migrate ARGS`` in this process (typer's runner), in ``cwd``, with ``env`` set.

    A traceback is not a result: an exception other than SystemExit is re-raised.
    """
    from typer.testing import CliRunner

    from orchestrator.cli.app import app

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner(env={"MIGRATE_CONFIG": None, **dict(env or {})}).invoke(app, list(args))
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr, result.exception)


def run_migrate(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60) -> Ran:
    """Run the installed ``migrate`` command in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if k != "MIGRATE_CONFIG"}
    full_env.update(env or {})
    proc = subprocess.run(
        [MIGRATE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)
