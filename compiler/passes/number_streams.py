"""Stream numbering: ``number_streams(program) -> program`` (pure).

Every ``UNIFORM`` and ``NORMAL`` node of the step graph (LOOP bodies included, depth first) gets the stream id of
its position among the draws of the flattened program, 0, 1, 2, ..., and the number of draws, so
that its key (seed, stream + streams * step_hi) is distinct for every site and every high word of
the step counter (``compiler/threefry.py``).  Draw sites are built with stream 0 of 1 (a body does
not know how often the diagram replicates it); numbering them after flattening gives every
replica and every site its own Threefry key, in an order fixed by the program alone.  A program
without draws is returned unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import count

from nspec.compiler.ir import Graph, Op, Program
from nspec.compiler.ops import STEP_DRAWS


def _number(graph: Graph, ids, streams: int) -> Graph:
    nodes = []
    for n in graph.nodes:
        if n.op in STEP_DRAWS:
            n = replace(n, attrs=replace(n.attrs, stream=next(ids), streams=streams))
        elif n.op is Op.LOOP and isinstance(n.attr("body"), Graph):
            n = replace(n, attrs=replace(n.attrs, body=_number(n.attr("body"), ids, streams)))
        nodes.append(n)
    return replace(graph, nodes=tuple(nodes))


def _draws(graph: Graph) -> int:
    return sum(1 if n.op in STEP_DRAWS else _draws(n.attr("body")) if n.op is Op.LOOP else 0 for n in graph.nodes)


def number_streams(program: Program) -> Program:
    """``program`` with its draw sites numbered 0, 1, 2, ... in graph order."""
    streams = _draws(program.step)
    if not streams:
        return program
    return replace(program, step=_number(program.step, count(), streams))


__all__ = ["number_streams"]
