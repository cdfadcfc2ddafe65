"""Read each service's Alembic tree into plain ``Revision`` values.

Loading a script directory means importing every revision file, which dominates the cost of
planning a large fleet. Parsed metadata is cached under ``.migrate/cache/``, one file per
service, validated the way git validates its index: an entry is trusted while the file's
path, size, mtime_ns, inode and ctime_ns are unchanged (ctime, which no program can set back,
catches an edit that kept the size and restored the mtime with ``os.utime``); when any of them
changed, the content hash decides; a file whose content changed is never served from the cache
(the whole service is re-read through Alembic). An entry written within two seconds of the
file's mtime or ctime is "racy" and is always re-hashed on the next read, so an edit in the
same clock tick is still seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.model import Revision, Service, ServiceSpec
from orchestrator.errors import GraphError

CACHE_VERSION = 3
_RACY_NS = 2_000_000_000


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _as_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(str(v) for v in value)
    return (str(value),)


@dataclass
class _Entry:
    stat: tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns
    racy: bool
    meta: dict[str, Any]


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _version_files(versions: Path) -> list[str]:
    out: list[str] = []
    try:
        with os.scandir(versions) as it:
            for entry in it:
                name = entry.name
                if name.endswith(".py") and not name.startswith(("_", ".")) and entry.is_file():
                    out.append(entry.path)
    except FileNotFoundError:
        pass
    out.sort()
    return out


class RevisionCache:
    """The on-disk cache of parsed revision metadata for one workspace."""

    def __init__(self, folder: str | None):
        self.folder = Path(folder) if folder else None

    def _file(self, spec: ServiceSpec) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(spec.script_location.encode()).hexdigest()[:16]
        return self.folder / f"{spec.name}-{digest}.json"

    def read(self, spec: ServiceSpec) -> dict[str, _Entry]:
        path = self._file(spec)
        if path is None:
            return {}
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        if data.get("version") != CACHE_VERSION or data.get("location") != spec.script_location:
            return {}
        return {p: _Entry(tuple(e["stat"]), bool(e["racy"]), e["meta"]) for p, e in data.get("files", {}).items()}

    def write(self, spec: ServiceSpec, entries: dict[str, _Entry]) -> None:
        path = self._file(spec)
        if path is None:
            return
        now = time.time_ns()
        files = {
            p: {"stat": list(e.stat), "racy": e.racy or now - max(e.stat[1], e.stat[3]) < _RACY_NS, "meta": e.meta}
            for p, e in entries.items()
        }
        payload = {"version": CACHE_VERSION, "location": spec.script_location, "files": files}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(payload, separators=(",", ":")))  # json.dumps uses the C encoder
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only workspace still plans, only without the cache


def load_services(specs: list[ServiceSpec], cache: RevisionCache | None = None) -> list[Service]:
    """Read every service's tree. Services the cache cannot serve are read through Alembic,
    in worker processes when there are many files (importing revision files is CPU-bound)."""
    cached: list[dict[str, dict[str, Any]] | None] = []
    stale: list[int] = []
    for i, spec in enumerate(specs):
        metas = _from_cache(spec, cache)
        cached.append(metas)
        if metas is None:
            stale.append(i)
    if stale:
        loaded = _load_many([specs[i] for i in stale])
        for i, metas in zip(stale, loaded, strict=True):
            cached[i] = metas
            if cache is not None:
                fresh = {}
                for path, meta in metas.items():
                    try:
                        fresh[path] = _Entry(_stat_key(os.stat(path)), False, meta)
                    except OSError:
                        continue
                cache.write(specs[i], fresh)
    out = []
    for spec, metas in zip(specs, cached, strict=True):
        assert metas is not None
        location = Path(spec.script_location)
        out.append(_build_service(spec, list(metas.values()), has_env_py=(location / "env.py").is_file()))
    return out


def _from_cache(spec: ServiceSpec, cache: RevisionCache | None) -> dict[str, dict[str, Any]] | None:
    """The service's metadata if the cache can vouch for every file, else None."""
    if cache is None:
        return None
    cached = cache.read(spec)
    if not cached:
        return None
    files = _version_files(Path(spec.script_location) / "versions")
    if len(files) != len(cached):
        return None
    metas: dict[str, dict[str, Any]] = {}
    fresh: dict[str, _Entry] = {}
    dirty = False
    for path in files:
        entry = cached.get(path)
        if entry is None:
            return None
        try:
            key = _stat_key(os.stat(path))
        except OSError:
            return None
        if entry.stat != key or entry.racy:
            if file_sha256(path) != entry.meta["checksum"]:
                return None  # changed content is never served from the cache
            dirty = True
            entry = _Entry(key, False, entry.meta)
        metas[path] = entry.meta
        fresh[path] = entry
    if dirty:
        cache.write(spec, fresh)
    return metas


_PARALLEL_MIN_FILES = 400


def _load_many(specs: list[ServiceSpec]) -> list[dict[str, dict[str, Any]]]:
    import threading

    workers = min(len(specs), os.cpu_count() or 1)
    total = sum(len(_version_files(Path(s.script_location) / "versions")) for s in specs)
    if workers < 2 or total < _PARALLEL_MIN_FILES or threading.active_count() > 1:
        return [_load_with_alembic(s) for s in specs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from orchestrator.lifeline import bind_to_parent

    # fork: the children inherit the imported modules, so they start at once; only safe in
    # a single-threaded parent, which is checked above. They die with it (see lifeline).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=bind_to_parent, initargs=(os.getpid(),)) as pool:
        return list(pool.map(_load_with_alembic, specs, chunksize=max(1, len(specs) // (workers * 4))))


def _load_with_alembic(spec: ServiceSpec) -> dict[str, dict[str, Any]]:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from orchestrator.isolation import service_code

    try:
        script = ScriptDirectory(spec.script_location)
        with service_code():  # a revision file's module-level print() goes to stderr, not stdout
            scripts = list(script.revision_map.iterate_revisions("heads", "base"))
    except CommandError as exc:
        raise GraphError(f"service '{spec.name}': Alembic cannot read {spec.script_location}: {exc}") from exc
    except Exception as exc:  # a revision file that does not import is the user's input
        raise GraphError(
            f"service '{spec.name}': a revision file in {spec.script_location}/versions "
            f"failed to load: {type(exc).__name__}: {exc}",
            "fix the file so that `python -c 'import ...'` of it succeeds",
        ) from exc
    by_id = {s.revision: s for s in script.revision_map._revision_map.values() if s is not None}
    metas: dict[str, dict[str, Any]] = {}
    for sc in scripts:
        module = sc.module  # type: ignore[attr-defined]
        deps: list[str] = []
        for dep in _as_tuple(getattr(sc, "dependencies", ())):
            resolved = by_id.get(dep)
            if resolved is None:
                try:
                    resolved = script.revision_map.get_revision(dep)
                except Exception:
                    resolved = None
            deps.append(resolved.revision if resolved is not None else dep)
        path = os.path.abspath(sc.path)  # type: ignore[attr-defined]
        metas[path] = {
            "path": path,
            "revision": sc.revision,
            "down": list(_as_tuple(sc.down_revision)),
            "depends_on": deps,
            "branch_labels": sorted(_as_tuple(sc.branch_labels)),
            "message": sc.doc,  # type: ignore[attr-defined]
            "requires": list(_as_tuple(getattr(module, "requires", None))),
            "irreversible": bool(getattr(module, "irreversible", False)),
            "destructive": bool(getattr(module, "destructive", False)),
            "checksum": file_sha256(path),
        }
    return metas


def _build_service(spec: ServiceSpec, metas: Iterable[dict[str, Any]], has_env_py: bool) -> Service:
    metas = list(metas)
    paths = {m["revision"]: m for m in metas}
    ids = set(paths)
    for m in metas:
        for down in m["down"]:
            if down not in ids:
                raise GraphError(
                    f"service '{spec.name}': revision {m['revision']} names down_revision "
                    f"'{down}', which is not in {spec.script_location}/versions"
                )
    order = _service_order(metas)
    children: set[str] = set()
    for m in metas:
        children.update(m["down"])
    revisions = []
    for index, rev_id in enumerate(order):
        m = paths[rev_id]
        revisions.append(
            Revision(
                service=spec.name,
                revision=rev_id,
                down_revisions=tuple(m["down"]),
                depends_on=tuple(m["depends_on"]),
                message=m["message"],
                path=m.get("path", ""),
                checksum=m["checksum"],
                requires=tuple(m["requires"]),
                irreversible=m["irreversible"],
                destructive=m["destructive"],
                branch_labels=tuple(m["branch_labels"]),
                order=index,
            )
        )
    heads = tuple(r.revision for r in revisions if r.revision not in children)
    bases = tuple(r.revision for r in revisions if not r.down_revisions)
    return Service(spec=spec, revisions=tuple(revisions), heads=heads, bases=bases, has_env_py=has_env_py)


def _service_order(metas: list[dict[str, Any]]) -> list[str]:
    """Base-to-head order of one tree; among revisions ready at once, the smaller id first."""
    import heapq

    ids = {m["revision"] for m in metas}
    indegree: dict[str, int] = {}
    children: dict[str, list[str]] = {i: [] for i in ids}
    for m in metas:
        parents = [d for d in (*m["down"], *m["depends_on"]) if d in ids]
        indegree[m["revision"]] = len(set(parents))
        for p in set(parents):
            children[p].append(m["revision"])
    ready = [i for i, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        rev = heapq.heappop(ready)
        out.append(rev)
        for child in children[rev]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if len(out) != len(ids):
        stuck = sorted(ids - set(out))
        raise GraphError(f"revisions {', '.join(stuck[:5])} form a down_revision cycle")
    return out
