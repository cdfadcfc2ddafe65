"""A workspace that cannot load becomes a finding (MG001-MG004), located where possible."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence

from orchestrator.core.checks.findings import Finding, finding
from orchestrator.core.model import Manifest, NodeId, Revision, Service, copy_node_id
from orchestrator.errors import (
    AmbiguousReferenceError,
    CycleError,
    GraphError,
    ManifestError,
    MigrateError,
    UnknownReferenceError,
)


def load_failure(
    exc: MigrateError, manifest: Manifest | None, services: Sequence[Service], root: str, *, graph_stage: bool
) -> Finding:
    """The finding for an error raised while loading the manifest (``manifest`` None), the
    services' trees, or the graph (``graph_stage``: the trees loaded, the edges did not)."""
    revisions = {r.node: r for s in services for r in s.revisions}
    if isinstance(exc, ManifestError):
        line = _key_line(exc.file, exc.key) if exc.key else None
        return finding("MG004", None, exc.message, exc.hint, file=exc.file, line=line, root=root)
    if isinstance(exc, CycleError):
        node, file, line = _cycle_location(exc.path, revisions, manifest)
        return finding("MG001", node, exc.message, exc.hint, file=file, line=line, root=root)
    paths = sorted(
        [*(r.path for r in revisions.values()), *([manifest.path] if manifest else [])], key=len, reverse=True
    )
    if isinstance(exc, UnknownReferenceError | AmbiguousReferenceError) or (
        isinstance(exc, GraphError) and graph_stage
    ):
        where = getattr(exc, "where", None) or exc.message
        file = next((p for p in paths if where.startswith(p)), None)
        ref = getattr(exc, "ref", None)
        line = _line_containing(file, ref) if file and ref else None
        node = next((r.node for r in revisions.values() if r.path == file), None)
        if node is None and file and "[[copies]] '" in where:
            node = copy_node_id(where.split("[[copies]] '", 1)[1].split("'", 1)[0])
        return finding("MG002", node, exc.message, exc.hint, file=file, line=line, root=root)
    file = None
    if manifest is not None:
        for spec in manifest.services:
            if spec.script_location in exc.message:
                file = os.path.join(spec.script_location, "versions")
                break
        file = file or manifest.path
    return finding("MG003", None, exc.message, exc.hint, file=file, root=root)


def _cycle_location(
    path: Sequence[str], revisions: Mapping[str, Revision], manifest: Manifest | None
) -> tuple[str | None, str | None, int | None]:
    """The first edge of the cycle that is written down somewhere: a ``requires`` in a
    revision file, or an entry of the manifest."""
    for u, v in itertools.pairwise(path):
        rev = revisions.get(v)
        if rev is not None:
            full = NodeId.parse(u)
            for ref in rev.requires:
                if NodeId.parse(ref).abbreviates(full):
                    return v, rev.path, _line_containing(rev.path, ref)
        if manifest is not None:
            for ref in _refs(u, v):
                line = _line_containing(manifest.path, ref, prefix_of=True)
                if line is not None:
                    return v, manifest.path, line
    return (path[0] if path else None), (manifest.path if manifest else None), None


def _refs(u: str, v: str) -> Iterable[str]:
    for node in (v, u):
        yield node
        parsed = NodeId.parse(node)
        if parsed.copy_name is not None:
            yield 'name = "' + parsed.copy_name + '"'


def _line_containing(file: str | None, needle: str, prefix_of: bool = False) -> int | None:
    """The first line of ``file`` holding ``needle`` (with ``prefix_of``: a quoted reference
    that is a prefix of the node id ``needle``)."""
    if not file:
        return None
    try:
        with open(file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for i, line in enumerate(lines, 1):
        if needle in line:
            return i
        if prefix_of and "@" in needle:
            full = NodeId.parse(needle)
            if any(NodeId.parse(part).abbreviates(full) for part in line.split('"')[1::2]):
                return i
    return None


def _key_line(file: str, key: str) -> int | None:
    """Best effort: the line of the manifest where ``key`` (dotted, as in a ManifestError) is."""
    parts = [p for p in key.replace("tool.migrate.", "").split(".") if p]
    if not parts:
        return None
    try:
        with open(file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    last = parts[-1].split("[")[0].split(" ")[0]
    header = "[" + ".".join(parts[:-1]) + "]" if len(parts) > 1 else None
    start = 0
    if header:
        for i, line in enumerate(lines):
            if line.strip() == header:
                start = i
                break
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if stripped.startswith(last) and "=" in stripped:
            return i + 1
        if stripped == "[" + ".".join(parts) + "]":
            return i + 1
    return None
