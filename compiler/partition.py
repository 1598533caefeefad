"""Partition a compiled network by neuron ranges: each worker's part of the step graph.

A network's step graph couples neurons in one place only: the event-driven ``PROPAGATE`` from a
presynaptic spike vector to postsynaptic increments.  Everything else a population computes is
elementwise over its neurons (integration, threshold, reset, refractoriness, counter-based draws),
so a worker holding neurons ``lo:hi`` of every population can run its slice of every value, given
the *global* spike vectors that its ``PROPAGATE`` nodes read.  This module finds those index spaces
in a ``Program`` and builds each worker's part; ``runtime/partition.py`` runs the parts and
exchanges the spikes (NEST's scheme: every minimum-delay interval).

**Index spaces.**  ``_link`` walks the step graph once and relates every axis of every value to the
axes it is computed from, as positions in a shared space (a weighted union-find: an axis is
``offset + i`` of its space's root).  Elementwise ops, broadcasts, reshapes that only add or drop
unit axes, reductions over other axes and ``scatter_add`` along an identity index share positions;
``slice`` and ``concat`` shift them.  ``PROPAGATE`` joins nothing: its spike input is indexed by the
presynaptic neurons, its result by the postsynaptic ones.  A space that holds an axis of a state is
a *population* (named by the states' boxes, ``P``) and is split into ranges.

**What is accepted** (anything else is a ``PartitionError`` at the spec line of the node):

* a spiking network (a ``<pop>/spike`` value) with no input or output ports;
* every op that reads a population's values is elementwise over its neurons (those above) or a
  ``PROPAGATE`` whose indptr and indices are constants and whose weights do not depend on a state
  (synapses without plasticity); a gather, an einsum, a reduction over neurons, a loop, a strided
  slice or a plastic synapse couples neurons in ways the exchange of spikes does not carry;
* the values a ``PROPAGATE`` sends are 0/1 events (checked at run time): only their indices travel;
* delays are FIFO states (``delay d``) of ``d >= 1`` steps, or none (a one-step delay: the increment
  lands in the next state).

**Each worker's part.**  ``build_part`` rebuilds the step graph with every population axis cut to
the worker's range (states, per-neuron constants, broadcasts, slices and reshapes resized; a draw
made whole and then sliced, so its values are the single process's), and each ``PROPAGATE``
restricted to the synapses whose target is in the range (its CSR columns kept in their order, so
each target sums its events in the single process's order and the floats agree bit for bit).
Its spike input is read from the exchanged global vector, an ``input`` named ``exchange/%k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nspec.dsl.diagnostics import Span, UNKNOWN_SPAN

from .ir import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, REDUCTIONS, Graph, GraphBuilder, Op, Program
from .ops import STEP_DRAWS

_ELEMENTWISE = ELEMENTWISE_BINARY | ELEMENTWISE_UNARY | {Op.WHERE, Op.BROADCAST}


class PartitionError(ValueError):
    """A network the partitioner cannot split, located at the spec line that stops it."""

    def __init__(self, span: Span, message: str):
        super().__init__(f"{span}: error: cannot partition: {message}")
        self.span = span


# ---------------------------------------------------------------- index spaces
class _Positions:
    """Weighted union-find over (node, axis): ``pos(a) = pos(parent(a)) + offset(a)``."""

    def __init__(self):
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}
        self.offset: dict[tuple[int, int], int] = {}

    def find(self, a: tuple[int, int]) -> tuple[tuple[int, int], int]:
        """(root, position of ``a``'s index 0 in the root's space); the path walked is compressed."""
        path = []
        while a in self.parent:
            path.append(a)
            a = self.parent[a]
        off = 0
        for b in reversed(path):  # nearest the root first: each offset becomes relative to the root
            off += self.offset[b]
            self.parent[b], self.offset[b] = a, off
        return a, (self.offset[path[0]] if path else 0)

    def union(self, a, b, d: int) -> bool:
        """Record ``pos(a) = pos(b) + d``; False if it contradicts what is known."""
        (ra, oa), (rb, ob) = self.find(a), self.find(b)
        if ra == rb:
            return oa == ob + d
        self.parent[ra], self.offset[ra] = rb, ob + d - oa
        return True


def _align(pos: _Positions, i: int, out_shape, j: int, in_shape) -> bool:
    """An input's axes share positions with the result's axes they broadcast to (sizes equal)."""
    lead = len(out_shape) - len(in_shape)
    return all(pos.union((j, k), (i, k + lead), 0) for k, size in enumerate(in_shape) if size == out_shape[k + lead])


def _squeezed(shape) -> list[int]:
    return [k for k, s in enumerate(shape) if s != 1]


def _axes(graph: Graph, i: int) -> list[tuple[int, int]]:
    """Every axis of node ``i`` and of its inputs."""
    return [(j, k) for j in (i, *graph.nodes[i].inputs) for k in range(len(graph.nodes[j].shape))]


def _link(graph: Graph) -> tuple[_Positions, list[tuple[int, str, list[tuple[int, int]]]]]:
    """Relate the axes of the step graph's values.  Returns the positions and the places they cannot
    be followed: (node, why, the axes that must not index a population there)."""
    pos, blocked = _Positions(), []
    for i, n in enumerate(graph.nodes):
        ins = [graph.nodes[j] for j in n.inputs]
        ok = True
        if n.op in _ELEMENTWISE:
            ok = all(_align(pos, i, n.shape, j, x.shape) for j, x in zip(n.inputs, ins))
        elif n.op is Op.SLICE:
            a = n.attrs
            if any(s != 1 for s in a.steps) or any(s < 0 for s in a.starts):
                blocked.append((i, "a strided slice", _axes(graph, i)))
                continue
            ok = all(pos.union((i, k), (n.inputs[0], k), s) for k, s in enumerate(a.starts))
        elif n.op is Op.CONCAT:
            axis, off = n.attr("axis") % len(n.shape), 0
            for j, x in zip(n.inputs, ins):
                ok &= all(pos.union((j, k), (i, k), off if k == axis else 0) for k in range(len(n.shape)))
                off += x.shape[axis]
        elif n.op is Op.RESHAPE:
            src, dst = _squeezed(ins[0].shape), _squeezed(n.shape)
            if [ins[0].shape[k] for k in src] != [n.shape[k] for k in dst]:
                blocked.append((i, "a reshape that merges or splits axes", _axes(graph, i)))
                continue
            ok = all(pos.union((i, b), (n.inputs[0], a), 0) for a, b in zip(src, dst))
        elif n.op in REDUCTIONS:
            axes = {a % len(ins[0].shape) for a in n.attr("axes")}
            kept = [k for k in range(len(ins[0].shape)) if k not in axes]
            ok = all(pos.union((i, k if n.attr("keepdims") else o), (n.inputs[0], k), 0) for o, k in enumerate(kept))
            blocked.append((i, f"a '{n.op.value}' over neurons", [(n.inputs[0], k) for k in sorted(axes)]))
        elif n.op is Op.SCATTER_ADD:
            idx = graph.nodes[n.inputs[1]]
            identity = (idx.op is Op.CONST and n.attr("axis") % len(n.shape) == 0 and ins[2].shape == n.shape
                        and np.array_equal(idx.attr("value"), np.arange(n.shape[0])))
            if not identity:
                blocked.append((i, "a scatter-add over synapses (summed continuous coupling)", _axes(graph, i)))
                continue
            ok = _align(pos, i, n.shape, n.inputs[0], ins[0].shape) and _align(pos, i, n.shape, n.inputs[2],
                                                                                ins[2].shape)
        elif n.op is Op.PROPAGATE:
            if n.attr("accumulate"):
                ok = pos.union((n.inputs[4], 0), (i, 0), 0)
            blocked.append((i, "the weights of this projection are state ('{pop}': plastic synapses), which the "
                               "workers would have to share; only spikes are exchanged",
                            [(n.inputs[3], k) for k in range(len(ins[3].shape))]))
        elif n.op not in (Op.ARG, Op.CONST) and n.op not in STEP_DRAWS:
            blocked.append((i, f"'{n.op.value}'", _axes(graph, i)))
        if not ok:
            blocked.append((i, f"'{n.op.value}' combining different neurons of one population", _axes(graph, i)))
    return pos, blocked


# ---------------------------------------------------------------- the partition
@dataclass(frozen=True, slots=True)
class Population:
    """One index space split across workers: its name (the boxes of its states, ``P``), its size and
    each worker's range ``(lo, hi)``."""

    name: str
    size: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Exchange:
    """A value whose events workers send each other: step-graph node ``node``, covering positions
    ``start:start + size`` of population ``population``; only its nonzero indices travel."""

    node: int
    population: int
    start: int
    size: int

    @property
    def arg(self) -> str:
        return f"exchange/%{self.node}"


@dataclass(frozen=True)
class Partition:
    """A program split over ``workers``: the populations with their ranges and the exchanged values."""

    program: Program
    workers: int
    populations: tuple[Population, ...]
    exchanges: tuple[Exchange, ...]
    positions: _Positions
    roots: tuple[tuple[int, int], ...]  # each population's root axis in ``positions``

    def where(self, node: int, axis: int) -> tuple[int, int] | None:
        """(population index, position of the value's index 0) of an axis, or None if it is not split."""
        root, off = self.positions.find((node, axis))
        return (self.roots.index(root), off) if root in self.roots else None


def _first_span(program: Program) -> Span:
    return next((n.span for n in program.step.nodes if n.span.line), UNKNOWN_SPAN)


def partition(program: Program, workers: int, ranges: dict[str, list[tuple[int, int]]] | None = None) -> Partition:
    """Split ``program``'s populations into ``workers`` contiguous ranges (equal sizes unless ``ranges``
    gives them by population name); raise ``PartitionError`` for a network it cannot split."""
    step = program.step
    spikes = [r for r in step.results if r.kind == "value" and r.name.endswith("/spike")]
    if not spikes:
        raise PartitionError(_first_span(program), f"'{program.name}' is not a spiking network: a partitioned run "
                                                   "splits populations (a 'network' with 'population's) by neurons")
    for v in program.inputs + program.outputs:
        raise PartitionError(v.span, f"'{v.name}' is a port of the run target; a partitioned run takes no inputs and "
                                     "gives no outputs (record spikes or states instead)")
    pos, blocked = _link(step)
    args = step.args()
    # a population's neurons: axis 0 of its spikes and of its per-neuron states (boxes are named ``P/...``)
    members: dict[str, list[int]] = {}
    for r in spikes:
        members.setdefault(r.name.rsplit("/", 1)[0], []).append(r.node)
    for v in program.states:
        if len(v.shape) == 1 and v.name in args:
            members.setdefault(v.name.rsplit("/", 1)[0], []).append(args[v.name])
    names: dict[tuple[int, int], set[str]] = {}
    for name, nodes in members.items():
        for i in nodes[1:]:  # states that never meet in an expression are still one population's
            if not pos.union((i, 0), (nodes[0], 0), 0):
                raise PartitionError(step.nodes[i].span, f"population '{name}' has values of different sizes")
    for name, nodes in members.items():  # after the unions: populations sharing a node are split as one
        names.setdefault(pos.find((nodes[0], 0))[0], set()).add(name)
    roots = tuple(sorted(names, key=lambda r: sorted(names[r])))
    extent = {r: [0, 0] for r in roots}
    for i, n in enumerate(step.nodes):
        for k, size in enumerate(n.shape):
            root, off = pos.find((i, k))
            if root in extent:
                extent[root][0], extent[root][1] = min(extent[root][0], off), max(extent[root][1], off + size)
    for i, why, axes in blocked:
        hit = [pos.find(a)[0] for a in axes if pos.find(a)[0] in extent]
        if hit:
            pop = "+".join(sorted(names[hit[0]]))
            raise PartitionError(step.nodes[i].span, why.format(pop=pop) if "{pop}" in why else (
                f"{why} reads neurons of population '{pop}' across the ranges of the workers; a partitioned "
                "network couples its neurons through spikes (projections) only"))
    pops = []
    for r in roots:
        lo, hi = extent[r]
        name = "+".join(sorted(names[r]))
        if lo != 0:
            raise PartitionError(_first_span(program), f"population '{name}' is indexed from {lo}, not 0")
        given = (ranges or {}).get(name)
        if hi < workers:
            raise ValueError(f"population '{name}' has {hi} neurons, fewer than the {workers} workers")
        if given is None:
            edges = np.linspace(0, hi, workers + 1).round().astype(int)
            given = list(zip(edges[:-1], edges[1:]))
        given = [(int(a), int(b)) for a, b in given]
        if len(given) != workers or given[0][0] != 0 or given[-1][1] != hi or any(
                b <= a for a, b in given) or any(b != a2 for (_, b), (a2, _) in zip(given, given[1:])):
            raise ValueError(f"population '{name}' ({hi} neurons) needs {workers} non-empty contiguous ranges "
                             f"covering 0:{hi} in order, got {given}")
        pops.append(Population(name, hi, tuple(given)))
    unknown = sorted(set(ranges or {}) - {p.name for p in pops})
    if unknown:
        raise ValueError(f"ranges for {', '.join(unknown)}: not a population of '{program.name}' "
                         f"(its populations: {', '.join(p.name for p in pops)})")
    exchanges = {}
    for i, n in enumerate(step.nodes):
        if n.op is not Op.PROPAGATE:
            continue
        for j in n.inputs[1:3]:
            if step.nodes[j].op is not Op.CONST:
                raise PartitionError(n.span, "a projection whose connectivity is computed at run time")
        root = n.inputs[0]
        while step.nodes[root].op is Op.SLICE:  # exchange the population's vector, not each projection's slice
            root = step.nodes[root].inputs[0]
        at = pos.find((root, 0))
        if at[0] in roots and root not in exchanges:
            if len(step.nodes[root].shape) != 1:
                raise PartitionError(n.span, "a projection from a value with more than one axis per neuron")
            exchanges[root] = Exchange(root, roots.index(at[0]), at[1], step.nodes[root].shape[0])
    return Partition(program, workers, tuple(pops), tuple(exchanges.values()), pos, roots)


# ---------------------------------------------------------------- one worker's part
@dataclass(frozen=True)
class Part:
    """Worker ``w``'s step graph and how its values sit in the whole network's.

    ``cuts``: each state's and parameter's local part as (start, stop) per axis of the full value;
    ``starts``: for each recorded name (a state or a ``value`` result), the index of its local
    element 0 along axis 0 in the full value, or None if every worker holds all of it;
    ``sends``: (exchange, local node holding this worker's part of it, index of its element 0)."""

    worker: int
    step: Graph
    cuts: dict[str, tuple[tuple[int, int], ...]]
    starts: dict[str, int | None]
    sends: tuple[tuple[Exchange, int, int], ...]


class _Builder:
    """Rebuilds the step graph node by node with every population axis cut to worker ``w``'s range."""

    def __init__(self, part: Partition, w: int):
        self.part, self.w = part, w
        self.nodes = part.program.step.nodes
        self.g = GraphBuilder()
        self.m: list[int] = []

    def local(self, i: int, k: int) -> tuple[int, int]:
        """(start, stop) of the worker's part of axis ``k`` of node ``i``, in that axis's indices."""
        size = self.nodes[i].shape[k]
        at = self.part.where(i, k)
        if at is None:
            return 0, size
        pop, p = at
        lo, hi = self.part.populations[pop].ranges[self.w]
        a, b = max(p, lo), min(p + size, hi)
        return (a - p, b - p) if b > a else (0, 0)

    def cut(self, i: int) -> tuple[tuple[int, int], ...]:
        return tuple(self.local(i, k) for k in range(len(self.nodes[i].shape)))

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.cut(i))

    def sliced(self, j: int, bounds, span: Span) -> int:
        """SLICE of new node ``j`` to ``bounds`` (its own indices), or ``j`` itself when that is all of it."""
        shape = self.g.nodes[j].shape
        if all((a, b) == (0, s) for (a, b), s in zip(bounds, shape)):
            return j
        return self.g.add(Op.SLICE, [j], attrs=(("starts", tuple(a for a, _ in bounds)),
                                                ("stops", tuple(b for _, b in bounds)),
                                                ("steps", (1,) * len(shape))), span=span)

    def build(self) -> Part:
        exchanged = {e.node: e for e in self.part.exchanges}
        step = self.part.program.step
        needed = self.needed(exchanged)
        for i, n in enumerate(self.nodes):
            self.m.append(self.node(i, n, exchanged) if i in needed else -1)
        for r in step.results:
            self.g.result(r.name, r.kind, self.m[r.node])
        args = step.args()
        cuts, starts = {}, {}
        for v in self.part.program.params + self.part.program.states:
            node = args.get(v.name, step.result(v.name, "next").node if step.result(v.name, "next") else None)
            cuts[v.name] = self.cut(node) if node is not None else tuple((0, s) for s in v.shape)
        for m in self.part.program.monitors:
            for name in m.variables:
                r = step.result(name, "value")
                node = r.node if r is not None else args.get(name)
                split = node is not None and self.nodes[node].shape and self.part.where(node, 0) is not None
                starts[name] = self.local(node, 0)[0] if split else None
        sends = tuple((e, self.m[e.node], self.local(e.node, 0)[0]) for e in self.part.exchanges)
        return Part(self.w, self.g.build(), cuts, starts, sends)

    def needed(self, exchanged: dict[int, Exchange]) -> set[int]:
        """The nodes the results read, where a propagation of exchanged spikes reads the exchange and its
        own connectivity rather than the local spikes and the whole network's (rebuilt in ``propagate``)."""
        seen: set[int] = set()
        todo = [r.node for r in self.part.program.step.results] + list(exchanged)  # what workers send
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            n = self.nodes[i]
            todo.extend(n.inputs[3:] if n.op is Op.PROPAGATE and self.root(n.inputs[0]) in exchanged else n.inputs)
        return seen

    def root(self, i: int) -> int:
        """The value a chain of slices starts from (a population's spike vector)."""
        while self.nodes[i].op is Op.SLICE:
            i = self.nodes[i].inputs[0]
        return i

    def node(self, i: int, n, exchanged: dict[int, Exchange]) -> int:
        g, m, span = self.g, self.m, n.span
        cut = self.cut(i)
        whole = all((a, b) == (0, s) for (a, b), s in zip(cut, n.shape))
        if n.op is Op.ARG:
            return g.arg(n.attr("name"), n.attr("role").value, n.dtype, self.shape(i), span)
        if n.op is Op.CONST:
            value = n.attr("value")
            return g.add(Op.CONST, (), n.dtype, self.shape(i), (("value", value[tuple(slice(a, b) for a, b in cut)]),),
                         span) if not whole else g.add(Op.CONST, (), n.dtype, n.shape, n.attrs, span)
        if n.op in (Op.BROADCAST, Op.RESHAPE):
            return g.add(n.op, [m[n.inputs[0]]], attrs=(("shape", self.shape(i)),), span=span)
        if n.op is Op.SLICE:
            src = self.cut(n.inputs[0])
            bounds = []
            for k, ((a, b), (s0, _), start) in enumerate(zip(cut, src, n.attr("starts"))):
                lo = start + a - s0 if b > a else 0  # in the input's local indices
                bounds.append((lo, lo + b - a))
            return self.sliced(m[n.inputs[0]], bounds, span)
        if n.op in STEP_DRAWS:  # drawn whole, so every neuron gets the single process's number
            return self.sliced(g.add(n.op, [m[j] for j in n.inputs], n.dtype, n.shape, n.attrs, span), cut, span)
        if n.op is Op.SCATTER_ADD:  # along the identity index (see _link): elementwise
            index = g.const(np.arange(self.shape(i)[0]), self.nodes[n.inputs[1]].dtype, span)
            return g.add(n.op, [m[n.inputs[0]], index, m[n.inputs[2]]], attrs=n.attrs, span=span)
        if n.op is Op.PROPAGATE:
            return self.propagate(i, n, exchanged)
        return g.add(n.op, [m[j] for j in n.inputs], attrs=n.attrs, span=span)

    def propagate(self, i: int, n, exchanged: dict[int, Exchange]) -> int:
        """The projection's synapses onto the worker's neurons, fed by the global spike vector."""
        g, m, span = self.g, self.m, n.span
        spikes, indptr, indices, weights = n.inputs[:4]
        root = self.root(spikes)
        if root in exchanged:
            e = exchanged[root]
            whole = g.arg(e.arg, "input", self.nodes[root].dtype, (e.size,), span)
            start = self.part.where(spikes, 0)[1] - e.start
            src = self.sliced(whole, [(start, start + self.nodes[spikes].shape[0])], span)
        else:
            src = m[spikes]
        a, b = self.local(i, 0)
        ptr, cols = self.nodes[indptr].attr("value"), self.nodes[indices].attr("value")
        keep = (cols >= a) & (cols < b)  # the synapses onto this worker's neurons, in their order
        rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))[keep]
        new_ptr = np.zeros_like(ptr)
        np.add.at(new_ptr, rows + 1, 1)
        inputs = [src, g.const(np.cumsum(new_ptr), self.nodes[indptr].dtype, span),
                  g.const(cols[keep] - a, self.nodes[indices].dtype, span)]
        w = self.nodes[weights]
        if w.shape == ():
            inputs.append(m[weights])
        elif w.op is Op.CONST:
            inputs.append(g.const(w.attr("value")[keep], w.dtype, span))
        else:
            inputs.append(g.add(Op.GATHER, [m[weights], g.const(np.flatnonzero(keep), self.nodes[indices].dtype, span)],
                                attrs=(("axis", 0),), span=span))
        inputs += [m[j] for j in n.inputs[4:]]
        return g.add(Op.PROPAGATE, inputs, attrs=(("n_post", b - a), ("accumulate", n.attr("accumulate"))), span=span)


def build_part(part: Partition, w: int) -> Part:
    """Worker ``w``'s part of a partitioned program (see the module docstring)."""
    return _Builder(part, w).build()
