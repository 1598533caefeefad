"""Dead-code elimination: ``eliminate_dead_code(program) -> program`` (pure).

A node is live when a result of its graph reads it, directly or through other live nodes.  The
pass keeps the live nodes of the step graph, the init graph and every LOOP body (where the
body's own results are the roots), in their order, and renumbers inputs and results.
"""

from __future__ import annotations

from dataclasses import replace

from nspec.compiler.ir import Graph, Op, Program, Result


def live_nodes(graph: Graph) -> list[bool]:
    """For each node: is it reachable from a result?  (Inputs precede their users, so one
    backward sweep suffices.)"""
    live = [False] * len(graph.nodes)
    for r in graph.results:
        live[r.node] = True
    for i in range(len(graph.nodes) - 1, -1, -1):
        if live[i]:
            for j in graph.nodes[i].inputs:
                live[j] = True
    return live


def eliminate_dead_graph(graph: Graph) -> Graph:
    """``graph`` without the nodes no result reads, LOOP bodies included."""
    where: dict[int, int] = {}  # old index -> new index
    nodes = []
    for i, (n, keep) in enumerate(zip(graph.nodes, live_nodes(graph))):
        if not keep:
            continue
        n = replace(n, inputs=tuple(where[j] for j in n.inputs))
        if n.op is Op.LOOP and isinstance(n.attr("body"), Graph):
            body = eliminate_dead_graph(n.attr("body"))
            n = replace(n, attrs=replace(n.attrs, body=body))
        where[i] = len(nodes)
        nodes.append(n)
    return Graph(tuple(nodes), tuple(Result(r.name, r.kind, where[r.node]) for r in graph.results))


def eliminate_dead_code(program: Program) -> Program:
    """``program`` with dead nodes removed from its step graph, init graph and LOOP bodies."""
    return replace(program, step=eliminate_dead_graph(program.step), init=eliminate_dead_graph(program.init))


__all__ = ["eliminate_dead_code", "eliminate_dead_graph", "live_nodes"]
