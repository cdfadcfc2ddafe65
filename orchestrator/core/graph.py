"""The fleet graph: every revision of every service and every copy step, as one DAG.

networkx lives only in this module; callers get plain strings, tuples and dataclasses.
An edge ``u -> v`` means "u must be applied before v".

The edges are kept in plain adjacency dicts, which is all that planning the common case
needs; the networkx ``DiGraph`` (ancestors, descendants, the path of a cycle) is built on
first use, so that a plain ``migrate plan`` on a large fleet does not pay for importing it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.core.model import CopySpec, Manifest, NodeId, Revision, Service, node_id
from orchestrator.errors import (
    AmbiguousReferenceError,
    CycleError,
    GraphError,
    UnknownReferenceError,
)

EdgeKind = Literal["down_revision", "depends_on", "requires", "after", "before"]
_COPY_ORDER = 10**9


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind


class FleetGraph:
    """Built once from the manifest and the services' revisions; read-only afterwards."""

    def __init__(self, manifest: Manifest, services: Iterable[Service]):
        self.manifest = manifest
        self.services: dict[str, Service] = {s.name: s for s in sorted(services, key=lambda s: s.name)}
        self.revisions: dict[str, Revision] = {}
        self._prefix_index: dict[str, list[str]] = {}
        self._labels: dict[tuple[str, str], str] = {}
        for svc in self.services.values():
            ids = []
            for rev in svc.revisions:
                self.revisions[rev.node] = rev
                ids.append(rev.revision)
                for label in rev.branch_labels:
                    self._labels[(svc.name, label)] = rev.revision
            self._prefix_index[svc.name] = sorted(ids)
        self.copies: dict[str, CopySpec] = {c.node: c for c in manifest.copies}
        self.cross_requires: dict[str, tuple[str, ...]] = {}
        self._succ: dict[str, dict[str, EdgeKind]] = {}
        self._pred: dict[str, dict[str, EdgeKind]] = {}
        self._nx_graph: Any = None
        self._branch_cache: dict[str, dict[str, frozenset[str]]] = {}
        self._sort_key: dict[str, tuple[str, int, str]] = {}
        self._build()

    # -- construction ---------------------------------------------------------------------
    def _build(self) -> None:
        for node, rev in self.revisions.items():
            self.add_node(node)
            self._sort_key[node] = (rev.service, rev.order, rev.revision)
        for node, rev in self.revisions.items():
            for down in rev.down_revisions:
                self.add_edge(node_id(rev.service, down), node, kind="down_revision")
            for dep in rev.depends_on:
                dep_node = self.resolve(f"{rev.service}@{dep}", where=f"{rev.path} (depends_on)")
                self.add_edge(dep_node, node, kind="depends_on")
        self._add_requires(self._collect_requires())
        for copy in self.manifest.copies:
            self._add_copy(copy)
        self._check_acyclic()

    def _collect_requires(self) -> dict[str, list[str]]:
        """Every node's cross-service requirements, from its revision file and the manifest."""
        requires: dict[str, list[str]] = {}
        for node, rev in self.revisions.items():
            for ref in rev.requires:
                needed = self.resolve(ref, where=f"{rev.path} (requires)", allow_symbolic=False)
                requires.setdefault(node, []).append(needed)
        for i, req in enumerate(self.manifest.requires):
            where = f"{self.manifest.path} [[requires]] #{i + 1}"
            node = self.resolve(req.node, where=where + " node", allow_symbolic=False)
            for ref in req.needs:
                needed = self.resolve(ref, where=where + " needs", allow_symbolic=False)
                requires.setdefault(node, []).append(needed)
        return requires

    def _add_requires(self, requires: dict[str, list[str]]) -> None:
        for node, needed_list in requires.items():
            unique: list[str] = []
            for needed in needed_list:
                if needed == node:
                    raise CycleError([node, node])
                if needed not in unique:
                    unique.append(needed)
                if not self.has_edge(needed, node):
                    self.add_edge(needed, node, kind="requires")
            service = NodeId.parse(node).service
            self.cross_requires[node] = tuple(sorted(n for n in unique if NodeId.parse(n).service != service))

    def _add_copy(self, copy: CopySpec) -> None:
        cnode = copy.node
        self.add_node(cnode)
        self._sort_key[cnode] = (copy.target, _COPY_ORDER, copy.name)
        where = f"{self.manifest.path} [[copies]] '{copy.name}'"
        for ref in copy.after:
            self.add_edge(self.resolve(ref, where=where + " after", allow_symbolic=False), cnode, kind="after")
        for ref in copy.before:
            self.add_edge(cnode, self.resolve(ref, where=where + " before", allow_symbolic=False), kind="before")

    def add_node(self, node: str) -> None:
        self._succ.setdefault(node, {})
        self._pred.setdefault(node, {})

    def add_edge(self, u: str, v: str, kind: EdgeKind) -> None:
        self.add_node(u)
        self.add_node(v)
        self._succ[u].setdefault(v, kind)
        self._pred[v].setdefault(u, kind)

    def has_edge(self, u: str, v: str) -> bool:
        return v in self._succ.get(u, {})

    def _nx(self) -> Any:
        if self._nx_graph is None:
            import networkx as nx

            g = nx.DiGraph()
            g.add_nodes_from(self._succ)
            g.add_edges_from((u, v, {"kind": k}) for u, vs in self._succ.items() for v, k in vs.items())
            self._nx_graph = g
        return self._nx_graph

    def _check_acyclic(self) -> None:
        if len(self.order()) == len(self._succ):
            return
        import networkx as nx

        cycle = nx.find_cycle(self._nx())
        path = [u for u, _v, *_ in cycle]
        path.append(path[0])
        raise CycleError(path)

    # -- references -----------------------------------------------------------------------
    def resolve(self, ref: str, where: str, allow_symbolic: bool = True) -> str:
        """Resolve ``service@rev`` (full id, unique prefix, branch label; ``head`` when
        ``allow_symbolic``) or ``copy:name`` to a node id."""
        parsed = NodeId.parse(ref)
        if parsed.is_copy:
            if ref in self.copies:
                return ref
            raise UnknownReferenceError(ref, where, _close(ref, list(self.copies)))
        service, rev = parsed.service, parsed.revision
        if not service or not rev:
            raise GraphError(
                f"{where}: '{ref}' is not a node reference",
                "write service@revision, e.g. users@3a9c0d1e2f4b (a unique prefix is enough)",
            )
        if service not in self.services:
            raise UnknownReferenceError(ref, where, [f"{s}@{rev}" for s in _close(service, list(self.services))])
        if rev in ("head", "heads") or "@" in rev:
            if not allow_symbolic:
                raise GraphError(f"{where}: '{ref}' must name a revision, not '{rev}'", "use the revision id")
            return self._resolve_head(ref, where)
        if (service, rev) in self._labels:
            return node_id(service, self._labels[(service, rev)])
        ids = self._prefix_index[service]
        import bisect

        i = bisect.bisect_left(ids, rev)
        matches = []
        while i < len(ids) and ids[i].startswith(rev):
            matches.append(ids[i])
            i += 1
        if len(matches) == 1:
            return node_id(service, matches[0])
        if len(matches) > 1:
            raise AmbiguousReferenceError(ref, where, [node_id(service, m) for m in matches[:5]])
        return self._unknown_revision(ref, where, service, rev)

    def _resolve_head(self, ref: str, where: str) -> str:
        """``service@head`` or ``service@label@head``: the one head there, as Alembic resolves it."""
        heads = self.symbolic_heads(ref, where)
        if ref.endswith("@heads"):
            raise GraphError(
                f"{where}: '{ref}' names every head ({', '.join(heads)}); one revision is needed here",
                f"name one of them, e.g. {node_id(NodeId.parse(ref).service, heads[0])}",
            )
        service = NodeId.parse(ref).service
        if len(heads) == 1:
            return node_id(service, heads[0])
        spread = self.branch_labels(service)
        labels = sorted({label for h in heads for label in spread[h]})
        single = [label for label in labels if sum(label in spread[h] for h in heads) == 1]
        branches = ", ".join(f"`{service}@{label}@head`" for label in single)
        raise GraphError(
            f"{where}: '{ref}': multiple heads in service '{service}' ({', '.join(heads)}); "
            "'head' must name exactly one",
            f"use `{ref}s` for all of them, "
            + (f"or one branch: {branches}" if branches else f"or merge them with `alembic merge` ({' '.join(heads)})"),
        )

    def symbolic_heads(self, ref: str, where: str) -> tuple[str, ...]:
        """The heads ``service@head(s)`` or ``service@label@head(s)`` stands for (revision ids)."""
        parsed = NodeId.parse(ref)
        service, rev = parsed.service, parsed.revision
        label, sep, word = rev.rpartition("@")
        if word not in ("head", "heads") or (sep and not label):
            raise GraphError(
                f"{where}: '{ref}' is not a node reference",
                f"write {service}@head, {service}@heads, {service}@<branch label>@head or {service}@<revision>",
            )
        heads = self.services[service].heads
        if not sep:
            return heads
        labels = self.branch_labels(service)
        known = sorted({name for names in labels.values() for name in names})
        if label not in known:
            shown = ", ".join(known) if known else "none"
            raise GraphError(
                f"{where}: '{ref}': service '{service}' has no branch label '{label}' (its labels: {shown})",
                "branch labels come from `branch_labels` in the revision files",
            )
        return tuple(h for h in heads if label in labels[h])

    def branch_labels(self, service: str) -> dict[str, frozenset[str]]:
        """Every revision's branch labels, spread as Alembic spreads them: a label covers the
        revision that declares it, its descendants, and its ancestors down to a branch point
        or a merge."""
        found = self._branch_cache.get(service)
        if found is None:
            found = _spread_labels(self.services[service].revisions)
            self._branch_cache[service] = found
        return found

    def _unknown_revision(self, ref: str, where: str, service: str, rev: str) -> str:
        ids = self._prefix_index[service]
        suggestions = [node_id(service, m) for m in difflib.get_close_matches(rev, ids, n=2, cutoff=0.5)]
        if not suggestions:
            suggestions = [node_id(service, m) for m in ids if m.startswith(rev[:3])][:2]
        if not suggestions:
            for other, other_ids in self._prefix_index.items():
                if other != service and any(m.startswith(rev) for m in other_ids):
                    found = next(m for m in other_ids if m.startswith(rev))
                    suggestions.append(node_id(other, found))
        raise UnknownReferenceError(ref, where, suggestions)

    # -- queries --------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.order())

    def edges(self) -> tuple[Edge, ...]:
        key = self._sort_key
        return tuple(
            Edge(u, v, k)
            for u, v, k in sorted(
                ((u, v, k) for u, vs in self._succ.items() for v, k in vs.items()), key=lambda e: (key[e[1]], key[e[0]])
            )
        )

    def sort_key(self, node: str) -> tuple[str, int, str]:
        return self._sort_key[node]

    def order(self, nodes: Iterable[str] | None = None) -> list[str]:
        """Deterministic topological order of ``nodes`` (default: all), by the graph's edges.

        Only edges between the given nodes count; ties break by service name, then the
        service's own revision order. (Kahn's algorithm over a heap of sort keys: the same
        order as networkx's lexicographical_topological_sort, without the subgraph views.)
        """
        import heapq

        succ = self._succ
        subset = set(succ) if nodes is None else set(nodes)
        indegree = dict.fromkeys(subset, 0)
        for node in subset:
            for child in succ[node]:
                if child in indegree:
                    indegree[child] += 1
        key = self._sort_key
        heap = [(key[n], n) for n, d in indegree.items() if d == 0]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            _, node = heapq.heappop(heap)
            out.append(node)
            for child in succ[node]:
                if child in indegree:
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        heapq.heappush(heap, (key[child], child))
        return out

    def ancestors(self, nodes: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for node in nodes:
            if node not in out:
                out |= _reach(self._pred, node)
        return out

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for node in nodes:
            if node not in out:
                out |= _reach(self._succ, node)
        return out

    def copies_before(self, node: str) -> tuple[str, ...]:
        """The copy nodes that name ``node`` in their ``before``."""
        return tuple(sorted(u for u, kind in self._pred.get(node, {}).items() if kind == "before"))

    def predecessors(self, node: str) -> list[str]:
        return sorted(self._pred[node], key=self._sort_key.__getitem__)

    def successors(self, node: str) -> list[str]:
        return sorted(self._succ[node], key=self._sort_key.__getitem__)

    def service_ancestors(self, service: str, heads: Iterable[str]) -> set[str]:
        """Revisions of ``service`` at or below the given heads, within the service's own tree."""
        seen: set[str] = set()
        stack = [node_id(service, h) for h in heads]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            rev = self.revisions[node]
            stack.extend(node_id(service, d) for d in (*rev.down_revisions, *rev.depends_on))
        return seen

    def applied_nodes(self, state: Mapping[str, Iterable[str]]) -> set[str]:
        applied: set[str] = set()
        for service, heads in state.items():
            if service not in self.services:
                continue
            for head in heads:
                if node_id(service, head) not in self.revisions:
                    raise GraphError(
                        f"service '{service}': the database is at revision '{head}', which is not in "
                        f"{self.services[service].spec.script_location}/versions",
                        "the tree is older than the database: check out the branch that added it, "
                        "or `alembic stamp` the database",
                    )
            applied |= self.service_ancestors(service, heads)
        return applied


def _reach(adjacency: dict[str, dict[str, EdgeKind]], start: str) -> set[str]:
    """Every node reachable from ``start`` (not itself), as networkx's ancestors/descendants."""
    seen: set[str] = set()
    stack = list(adjacency[start])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(adjacency[node])
    return seen


def _spread_labels(revisions: Iterable[Revision]) -> dict[str, frozenset[str]]:
    by_id = {r.revision: r for r in revisions}
    children: dict[str, list[str]] = {}
    for r in by_id.values():
        for down in r.down_revisions:
            children.setdefault(down, []).append(r.revision)
    labels: dict[str, set[str]] = {rid: set() for rid in by_id}
    for r in by_id.values():
        if not r.branch_labels:
            continue
        for rid in {r.revision} | _reach_ids(children, r.revision):
            labels[rid].update(r.branch_labels)
        current: Revision | None = r
        while current is not None and len(children.get(current.revision, ())) < 2 and len(current.down_revisions) < 2:
            labels[current.revision].update(r.branch_labels)
            current = by_id.get(current.down_revisions[0]) if current.down_revisions else None
    return {rid: frozenset(names) for rid, names in labels.items()}


def _reach_ids(children: dict[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(children.get(start, ()))
    while stack:
        rid = stack.pop()
        if rid not in seen:
            seen.add(rid)
            stack.extend(children.get(rid, ()))
    return seen


def _close(word: str, options: list[str]) -> list[str]:
    return difflib.get_close_matches(word, options, n=2, cutoff=0.5)
