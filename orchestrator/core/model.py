"""Plain values the rest of the tool passes around: frozen, hashable, comparable with ``==``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

COPY_PREFIX = "copy:"


@dataclass(frozen=True)
class NodeId:
    """One node of the fleet graph: a revision of a service (``service@revision``) or a copy
    step (``copy:name``). Text becomes a ``NodeId`` here and only here (``parse``), and
    ``str()`` gives the text back. (A tenant, when one tree is applied to many databases, is
    one more field.)

    ``revision`` is everything after the first '@', so a symbolic reference such as
    ``users@label@head`` parses too; an empty ``service`` or ``revision`` means the text was
    not a node reference."""

    service: str = ""
    revision: str = ""
    copy_name: str | None = None  # set (possibly "") for a copy node; then service and revision are ""

    @classmethod
    def parse(cls, text: str) -> NodeId:
        if text.startswith(COPY_PREFIX):
            return cls(copy_name=text[len(COPY_PREFIX) :])
        service, _, revision = text.partition("@")
        return cls(service, revision)

    @classmethod
    def copy(cls, name: str) -> NodeId:
        return cls(copy_name=name)

    @property
    def is_copy(self) -> bool:
        return self.copy_name is not None

    def abbreviates(self, full: NodeId) -> bool:
        """Whether this reference names the revision node ``full`` by a prefix of its id."""
        return (
            self.copy_name is None
            and self.service == full.service
            and bool(self.revision)
            and full.revision.startswith(self.revision)
        )

    def __str__(self) -> str:
        if self.copy_name is not None:
            return COPY_PREFIX + self.copy_name
        return f"{self.service}@{self.revision}"


def node_id(service: str, revision: str) -> str:
    """The text of the node of one revision (``str(NodeId(service, revision))``, on a hot path)."""
    return f"{service}@{revision}"


def copy_node_id(name: str) -> str:
    return COPY_PREFIX + name


def service_of(node: str) -> str:
    """The service of a revision node's text ("" for a copy node)."""
    return NodeId.parse(node).service


@dataclass(frozen=True)
class ServiceSpec:
    """One `[services.NAME]` table of the manifest."""

    name: str
    script_location: str  # absolute path of the Alembic script directory
    version_table: str = "alembic_version"
    target_metadata: str | None = None  # "package.module:attr", used by the built-in env
    naming_convention: tuple[tuple[str, str], ...] = ()
    # (variable, value as written) set while the service's env.py and revisions run; a value
    # may hold {url} (the service's URL in the env being run) and ${VAR}s
    environ: tuple[tuple[str, str], ...] = ()


CopyMode = Literal["snapshot", "follow"]
COPY_MODES: tuple[CopyMode, ...] = ("snapshot", "follow")


@dataclass(frozen=True)
class CopySpec:
    """One `[[copies]]` entry: move the rows of ``table`` from ``source`` to ``target``."""

    name: str
    source: str
    target: str
    table: str
    target_table: str
    columns: tuple[str, ...] | None = None  # None: the columns both tables share
    key: tuple[str, ...] | None = None  # None: the source table's primary key
    after: tuple[str, ...] = ()  # node references as written in the manifest
    before: tuple[str, ...] = ()
    batch_size: int = 50_000
    max_rows_per_second: float | None = None
    pause_seconds: float = 0.0
    # SPEC section 9: "snapshot" copies once and re-verifies at cut-over; "follow" captures the
    # source's writes with triggers and replays them until cut-over
    mode: CopyMode = "snapshot"
    cutover_max_block: float = 2.0  # seconds writes to the source may be blocked at cut-over

    @property
    def node(self) -> str:
        return copy_node_id(self.name)


@dataclass(frozen=True)
class RequireSpec:
    """One `[[requires]]` entry of the manifest."""

    node: str
    needs: tuple[str, ...]


@dataclass(frozen=True)
class EnvSpec:
    """One `[envs.NAME]` table. URLs are kept raw (``${VAR}`` unexpanded) until used."""

    name: str
    url: str | None = None  # template with {service}
    urls: tuple[tuple[str, str], ...] = ()  # per-service overrides
    state_url: str | None = None
    protected: bool = False
    scratch: bool = False  # throw-away databases: `check --roundtrip --env` may run on them

    def raw_url_for(self, service: str) -> str | None:
        for name, url in self.urls:
            if name == service:
                return url
        if self.url is None:
            return None
        return self.url.replace("{service}", service)


@dataclass(frozen=True)
class Manifest:
    path: str  # absolute path of the manifest file
    root: str  # its folder; relative paths in it are relative to this
    services: tuple[ServiceSpec, ...]
    envs: tuple[EnvSpec, ...] = ()
    copies: tuple[CopySpec, ...] = ()
    requires: tuple[RequireSpec, ...] = ()
    plans_dir: str = "plans"
    default_env: str | None = None

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def env(self, name: str) -> EnvSpec:
        for spec in self.envs:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True)
class Revision:
    """One Alembic revision of one service, as read from its file."""

    service: str
    revision: str  # full id
    down_revisions: tuple[str, ...]  # () at a base, two or more at a merge
    depends_on: tuple[str, ...] = ()  # Alembic's own depends_on (same service)
    message: str = ""
    path: str = ""
    checksum: str = ""  # sha256 of the file's bytes
    requires: tuple[str, ...] = ()  # cross-service references as written in the file
    irreversible: bool = False
    destructive: bool = False
    branch_labels: tuple[str, ...] = ()
    order: int = 0  # position in the service's own base-to-head order

    @property
    def node(self) -> str:
        return node_id(self.service, self.revision)


@dataclass(frozen=True)
class Service:
    spec: ServiceSpec
    revisions: tuple[Revision, ...]  # base-to-head order (deterministic)
    heads: tuple[str, ...]
    bases: tuple[str, ...]
    has_env_py: bool

    @property
    def name(self) -> str:
        return self.spec.name


# --- plans -------------------------------------------------------------------------------

# The words the journal, the results and the events use. They are ``Literal`` strings, so a
# value compares equal to (and serialises as) the plain string other modules still write.
StepKind = Literal["upgrade", "downgrade", "copy", "revert_copy"]  # a plan's steps
JournalStepKind = StepKind | Literal["stamp"]  # a journal row also records `migrate stamp`
StepStatus = Literal["pending", "running", "applied", "failed", "undone", "undo_failed", "interrupted", "skipped"]
DONE_STATUSES: tuple[StepStatus, ...] = ("applied", "undone", "failed", "undo_failed")  # a step that ended
RunKind = Literal["apply", "rollback", "unlock"]  # unlock: a forced release
RunOutcome = Literal[  # a run as the journal records it
    "running", "succeeded", "rolled_back", "failed", "needs_attention", "interrupted", "force_released"
]
ResultOutcome = Literal[  # what a command reports
    "succeeded", "nothing_to_do", "dry_run", "rolled_back", "failed", "needs_attention"
]
NoopKind = Literal["", "empty", "merge"]
NOOP_NOTES: dict[str, str] = {
    "empty": "no-op: its downgrade() is empty, so its changes stay",
    "merge": "no-op: a merge revision, nothing to undo",
}


@dataclass(frozen=True)
class UpgradeStep:
    service: str
    revision: str
    down_revision: str | tuple[str, ...] | None
    message: str
    requires: tuple[str, ...] = ()  # resolved cross-service requirements, "svc@fullid"
    checksum: str = ""
    path: str = ""
    kind: StepKind = "upgrade"

    @property
    def id(self) -> str:
        return node_id(self.service, self.revision)


@dataclass(frozen=True)
class DowngradeStep:
    """Undo one revision: the database goes from ``revision`` to ``down_revision``."""

    service: str
    revision: str
    down_revision: str | tuple[str, ...] | None
    message: str
    checksum: str = ""
    path: str = ""
    kind: StepKind = "downgrade"
    # "" (a real downgrade), "empty" (downgrade() does nothing: undone as a no-op, as Alembic
    # does, and the revision's changes stay) or "merge" (a merge revision: nothing to undo)
    noop: NoopKind = ""

    @property
    def note(self) -> str:
        return NOOP_NOTES.get(self.noop, "")

    @property
    def id(self) -> str:
        return node_id(self.service, self.revision)


@dataclass(frozen=True)
class CopyStep:
    name: str
    source: str
    target: str
    table: str
    target_table: str
    kind: StepKind = "copy"

    @property
    def id(self) -> str:
        return copy_node_id(self.name)


@dataclass(frozen=True)
class RevertCopyStep:
    name: str
    source: str
    target: str
    table: str
    target_table: str
    kind: StepKind = "revert_copy"

    @property
    def id(self) -> str:
        return copy_node_id(self.name)


Step = UpgradeStep | DowngradeStep | CopyStep | RevertCopyStep


@dataclass(frozen=True)
class Plan:
    """An ordered, immutable list of steps for one environment, and what it was made from."""

    env: str
    state: tuple[tuple[str, tuple[str, ...]], ...]  # (service, applied heads), sorted
    steps: tuple[Step, ...]
    checksums: tuple[tuple[str, str], ...] = ()  # (node, sha256 of its file), sorted
    direction: Literal["upgrade", "downgrade"] = "upgrade"
    created: str = ""
    fingerprint: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def completed_copies(self) -> tuple[str, ...]:
        """The copies complete when the plan was made. They are kept in ``extra`` (as
        "a,b"), which the fingerprint of saved plans already covers."""
        return tuple(c for c in dict(self.extra).get("completed_copies", "").split(",") if c)

    def state_dict(self) -> dict[str, list[str]]:
        return {svc: list(heads) for svc, heads in self.state}

    @property
    def services(self) -> tuple[str, ...]:
        names: set[str] = set()
        for step in self.steps:
            if isinstance(step, UpgradeStep | DowngradeStep):
                names.add(step.service)
            else:
                names.update((step.source, step.target))
        return tuple(sorted(names))
