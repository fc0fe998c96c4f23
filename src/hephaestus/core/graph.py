"""Plain graph algorithms over step keys, used by validation and the engine.

A graph here is a mapping from each node to the tuple of its successors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "descendants",
    "find_cycle",
    "postdominators",
    "predecessors",
    "reachable_from",
    "topological_order",
]

Graph = Mapping[str, tuple[str, ...]]


def predecessors(graph: Graph) -> dict[str, frozenset[str]]:
    preds: dict[str, set[str]] = {node: set() for node in graph}
    for node, succs in graph.items():
        for succ in succs:
            preds.setdefault(succ, set()).add(node)
    return {node: frozenset(p) for node, p in preds.items()}


def reachable_from(graph: Graph, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(graph.get(node, ()))
    return seen


def find_cycle(graph: Graph) -> list[str] | None:
    """A list of nodes forming a cycle (first node repeated at the end), or `None`."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    for root in graph:
        if color[root] != white:
            continue
        # Iterative DFS keeping the current path, so deep graphs need no recursion.
        path: list[str] = [root]
        iters = [iter(graph.get(root, ()))]
        color[root] = grey
        while iters:
            node = next(iters[-1], None)
            if node is None:
                color[path.pop()] = black
                iters.pop()
                continue
            state = color.get(node, white)
            if state == grey:
                return [*path[path.index(node) :], node]
            if state == white:
                color[node] = grey
                path.append(node)
                iters.append(iter(graph.get(node, ())))
    return None


def topological_order(graph: Graph) -> list[str]:
    """Nodes so that every edge goes forward; the graph must be acyclic."""
    preds = predecessors(graph)
    indegree = {node: len(p) for node, p in preds.items()}
    ready = [node for node, degree in indegree.items() if degree == 0]
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for succ in graph.get(node, ()):
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    return order


def descendants(graph: Graph, order: list[str]) -> dict[str, frozenset[str]]:
    """For each node, every node reachable from it (itself excluded)."""
    result: dict[str, frozenset[str]] = {}
    for node in reversed(order):
        below: set[str] = set()
        for succ in graph.get(node, ()):
            below.add(succ)
            below |= result[succ]
        result[node] = frozenset(below)
    return result


def postdominators(graph: Graph, order: list[str]) -> dict[str, frozenset[str]]:
    """For each node, the nodes that lie on every path from it to a leaf (itself included).

    Leaves are treated as edges into one virtual exit, so for a graph whose
    leaves are all `Done`, a node's post-dominators are where all its paths meet.
    """
    result: dict[str, frozenset[str]] = {}
    for node in reversed(order):
        succs = graph.get(node, ())
        if not succs:
            result[node] = frozenset({node})
            continue
        common = set(result[succs[0]])
        for succ in succs[1:]:
            common &= result[succ]
        result[node] = frozenset(common | {node})
    return result
