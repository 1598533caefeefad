"""Stream numbering: ``number_streams(program) -> program`` (pure).

Every ``UNIFORM`` node of the step graph (LOOP bodies included, depth first) gets the stream id of
its position among the draws of the flattened program, 0, 1, 2, ...  Draw sites are built with
stream 0 (a body does not know how often the diagram replicates it); numbering them after
flattening gives every replica and every site its own Threefry key (seed, stream), in an order
fixed by the program alone.  A program without draws is returned unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import count

from nspec.compiler.ir import Graph, Op, Program


def _number(graph: Graph, ids) -> Graph:
    nodes = []
    for n in graph.nodes:
        if n.op is Op.UNIFORM:
            n = replace(n, attrs=replace(n.attrs, stream=next(ids)))
        elif n.op is Op.LOOP and isinstance(n.attr("body"), Graph):
            n = replace(n, attrs=replace(n.attrs, body=_number(n.attr("body"), ids)))
        nodes.append(n)
    return replace(graph, nodes=tuple(nodes))


def _draws(graph: Graph) -> bool:
    return any(n.op is Op.UNIFORM or (n.op is Op.LOOP and _draws(n.attr("body"))) for n in graph.nodes)


def number_streams(program: Program) -> Program:
    """``program`` with its draw sites numbered 0, 1, 2, ... in graph order."""
    if not _draws(program.step):
        return program
    return replace(program, step=_number(program.step, count()))


__all__ = ["number_streams"]
