"""Accumulation fusion: ``fuse_accumulations(program) -> program`` (pure), the TVM backend's pass.

A pattern ``consumer(x, producer(...))`` whose producer is used only there becomes the producer
accumulating into ``x``: the producer gains ``x`` as an extra input and an attribute saying so,
and takes the consumer's place.  For synaptic events, ``add(x, propagate(s, indptr, indices,
w))`` becomes ``propagate(s, indptr, indices, w, x) accumulate=True``: the event scan adds into
the synaptic state itself, so CUBA's step is one vector pass over the neurons plus the scan,
with no zeroed buffer and no extra addition pass.

The additions then round in another order than the reference's (``x + (e1 + e2)`` becomes
``(x + e1) + e2``), so only the TVM backend's fast mode runs this pass; the reference
interpreter has a rule for the accumulating form so tests can compare the two programs.

The rewritten producer sits at the consumer's index (every input is defined before it); the
old producer, now unused, is dropped.  LOOP bodies are rewritten the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from nspec.compiler.ir import Graph, Node, Op, Program, Result


@dataclass(frozen=True, slots=True)
class Accumulate:
    """``consumer(x, producer(...)) -> producer(..., x)`` with the producer's attribute
    ``flag`` set; ``guard(x)`` says whether ``x`` may be the accumulator."""

    producer: Op
    consumer: Op
    flag: str
    guard: Callable[[Node], bool]


RULES: tuple[Accumulate, ...] = (
    # add(x, propagate(s, ...)) -> propagate(s, ..., x) accumulate  (x not a leaf: a state or
    # constant would have to be copied into a buffer first, so nothing is saved)
    Accumulate(Op.PROPAGATE, Op.ADD, "accumulate", lambda x: x.op not in (Op.ARG, Op.CONST)),
)


def _uses(graph: Graph) -> list[int]:
    """How many times each node is read: as an input, or as a result of the graph."""
    count = [0] * len(graph.nodes)
    for n in graph.nodes:
        for j in n.inputs:
            count[j] += 1
    for r in graph.results:
        count[r.node] += 1
    return count


def _match(rule: Accumulate, graph: Graph, uses: list[int], a: int) -> tuple[int, int] | None:
    """(producer, x) when ``rule`` matches consumer node ``a``, else None."""
    an = graph.nodes[a]
    if an.op is not rule.consumer or len(an.inputs) != 2:
        return None
    for p, x in (an.inputs, an.inputs[::-1]):
        pn, xn = graph.nodes[p], graph.nodes[x]
        if (pn.op is rule.producer and uses[p] == 1 and p != x and not getattr(pn.attrs, rule.flag)
                and (pn.dtype, pn.shape) == (an.dtype, an.shape) == (an.dtype, xn.shape) and rule.guard(xn)):
            return p, x
    return None


def fuse_graph(graph: Graph) -> Graph:
    """``graph`` with every match of ``RULES`` fused, in it and in its LOOP bodies."""
    uses = _uses(graph)
    fused: dict[int, tuple[Accumulate, int, int]] = {}  # consumer -> (rule, producer, x)
    for a in range(len(graph.nodes)):
        for rule in RULES:
            found = _match(rule, graph, uses, a)
            if found is not None:
                fused[a] = (rule, *found)
                break
    dropped = {p for _, p, _ in fused.values()}
    nodes: list[Node] = []
    where: dict[int, int] = {}  # old index -> new index
    for i, n in enumerate(graph.nodes):
        if i in dropped:
            continue
        if i in fused:
            rule, p, x = fused[i]
            pn = graph.nodes[p]
            n = replace(pn, inputs=pn.inputs + (x,), attrs=replace(pn.attrs, **{rule.flag: True}), span=n.span)
        elif n.op is Op.LOOP:
            n = replace(n, attrs=replace(n.attrs, body=fuse_graph(n.attrs.body)))
        where[i] = len(nodes)
        nodes.append(replace(n, inputs=tuple(where[j] for j in n.inputs)))
    results = tuple(Result(r.name, r.kind, where[r.node]) for r in graph.results)
    return Graph(tuple(nodes), results)


def fuse_accumulations(program: Program) -> Program:
    """``program`` with accumulations fused in its step graph (the init graph runs once, on the
    host, by the reference interpreter: nothing to gain there)."""
    return replace(program, step=fuse_graph(program.step))


__all__ = ["Accumulate", "RULES", "fuse_graph", "fuse_accumulations"]
