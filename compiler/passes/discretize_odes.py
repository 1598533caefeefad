"""discretize-odes: every ``INTEGRATE`` node -> the nodes of its integration scheme.

Elaboration leaves continuous equations in the IR as ``INTEGRATE`` nodes (``ops.IntegrateAttrs``:
the method, the right-hand side as a graph, what the scheme needs from elaboration); this pass
replaces each one, and the ``ITEM``s reading it, by the discrete step that
``discretize.INTEGRATORS[method]`` builds (explicit Runge-Kutta by inlining the right-hand side
once per stage; exp_euler and exact from the linear structure).  It runs inside LOOP bodies
too.  Afterwards no graph holds an ``INTEGRATE``: backends never see one.
"""

from __future__ import annotations

from dataclasses import replace

from ..discretize import builder, discretize
from ..ir import Graph, GraphBuilder, Op, Program, Result


def discretize_odes(program: Program) -> Program:
    """``program`` with every continuous equation discretised (the same program if it has none)."""
    step = discretize_graph(program.step)
    return program if step is program.step else replace(program, step=step)


def has_integrate(graph: Graph) -> bool:
    return any(n.op is Op.INTEGRATE or (n.op is Op.LOOP and has_integrate(n.attrs.body)) for n in graph.nodes)


def discretize_graph(graph: Graph) -> Graph:
    """``graph`` with its INTEGRATE nodes replaced (``graph`` itself when it has none)."""
    if not has_integrate(graph):
        return graph
    g = GraphBuilder()
    b = builder(g)
    new: dict[int, int] = {}
    states: dict[int, list[int]] = {}  # INTEGRATE -> the nodes of its new states
    for i, n in enumerate(graph.nodes):
        if n.op is Op.INTEGRATE:
            states[i] = discretize(b, n, [new[j] for j in n.inputs])
        elif n.op is Op.ITEM and n.inputs[0] in states:
            new[i] = states[n.inputs[0]][n.attrs.index]
        else:
            attrs = replace(n.attrs, body=discretize_graph(n.attrs.body)) if n.op is Op.LOOP else n.attrs
            new[i] = g.add(n.op, [new[j] for j in n.inputs], n.dtype, n.shape, attrs, n.span)
    return Graph(tuple(g.nodes), tuple(Result(r.name, r.kind, new[r.node]) for r in graph.results))
