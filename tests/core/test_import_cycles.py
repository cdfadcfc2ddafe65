"""No import cycle inside ``orchestrator/``: each module sits on the ones it imports.

The graph is read from the source (see ``tests/core/imports.py``): module-level and
function-level imports, absolute and relative; ``if TYPE_CHECKING:`` imports do not count.
"""

from __future__ import annotations

import networkx as nx

from tests.core.imports import internal_imports, module_files


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module in module_files():
        graph.add_node(module)
        for target, line in internal_imports(module).items():
            graph.add_edge(module, target, line=line)
    return graph


def _describe(graph: nx.DiGraph, cycle: list[str]) -> str:
    hops = zip(cycle, [*cycle[1:], cycle[0]], strict=True)
    return " -> ".join(f"{a} (line {graph.edges[a, b]['line']})" for a, b in hops) + f" -> {cycle[0]}"


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "orchestrator.core.graph" in graph
    assert graph.number_of_edges() > 20


def test_no_import_cycle_inside_orchestrator() -> None:
    graph = import_graph()
    cycles = sorted((sorted_cycle(c) for c in nx.simple_cycles(graph)), key=lambda c: (len(c), c))
    assert cycles == [], "import cycles:\n" + "\n".join(_describe(graph, c) for c in cycles)


def sorted_cycle(cycle: list[str]) -> list[str]:
    """The cycle rotated to start at its smallest module, so the report is stable."""
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]
