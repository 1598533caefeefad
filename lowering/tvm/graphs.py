"""Graph facts the TVM backend's scheduler and kernels share: what a node waits
for, how PROPAGATE sees its spike vector, the graphs nested in LOOPs, and who uses what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from nspec.compiler.ir import Graph, Op
from nspec.compiler.ops import LoopAttrs


ACCUMULATOR = 4  # the input position of an accumulating PROPAGATE's starting value (ops.PropagateAttrs)


def spike_view(graph: Graph, i: int) -> tuple[int, int]:
    """PROPAGATE's spike input seen through 1-D unit-step SLICEs: (base node, offset)."""
    offset = 0
    while True:
        n = graph.nodes[i]
        if n.op is Op.SLICE and len(n.shape) == 1 and n.attrs.steps[0] == 1:
            offset += n.attrs.starts[0]
            i = n.inputs[0]
        else:
            return i, offset


def deps(graph: Graph, i: int) -> tuple[int, ...]:
    """The nodes ``i`` waits for: its inputs, except that PROPAGATE reads its spikes' base node
    (through the slices ``spike_view`` looks through)."""
    n = graph.nodes[i]
    if n.op is Op.PROPAGATE:
        return (spike_view(graph, n.inputs[0])[0],) + n.inputs[1:]
    return n.inputs


def all_graphs(graph: Graph) -> Iterator[Graph]:
    """``graph`` and every LOOP body nested in it, outermost first."""
    yield graph
    for n in graph.nodes:
        if n.op is Op.LOOP:
            yield from all_graphs(LoopAttrs.of(n).body)


@dataclass(frozen=True, slots=True)
class Uses:
    """Who uses what in one scheduled graph: the ``live`` nodes, each live node's ``consumers``
    (by ``deps``, in node order) and the ``inline`` leaves recomputed wherever they are read."""

    live: frozenset[int]
    consumers: dict[int, tuple[int, ...]]
    inline: frozenset[int]


__all__ = ["ACCUMULATOR", "spike_view", "deps", "all_graphs", "Uses"]
