"""Load a whole workspace: the manifest, every service's tree, and the fleet graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.graph import FleetGraph
from orchestrator.core.manifest import load_manifest
from orchestrator.core.model import Manifest
from orchestrator.core.revisions import RevisionCache, load_services


@dataclass(frozen=True)
class Workspace:
    manifest: Manifest
    graph: FleetGraph


def cache_folder(manifest: Manifest) -> str:
    return str(Path(manifest.root, ".migrate", "cache"))


def load_graph(manifest: Manifest, use_cache: bool = True) -> FleetGraph:
    cache = RevisionCache(cache_folder(manifest) if use_cache else None)
    services = load_services(list(manifest.services), cache)
    return FleetGraph(manifest, services)


def load_workspace(
    config: str | None = None,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_cache: bool = True,
) -> Workspace:
    manifest = load_manifest(config, cwd, environ)
    return Workspace(manifest, load_graph(manifest, use_cache))
