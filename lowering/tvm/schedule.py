"""Scheduling one graph for the TVM backend: which nodes are live, which are recomputed inline,
the level of every node, which fusible nodes get buffers, and the order of kernels and loop nests.

Levels order the work of one step: a kernel runs after its inputs (level = 1 + theirs), and a
fusible node joins its inputs' loop unless it reads them at another index or shape (then it
starts the next level and the input is stored to a buffer).  Within a level, kernels run first,
then the loop nests, one per shape, so a neuron population's whole state update is one pass over
the neuron index.

A PROPAGATE that accumulates (written by the ``fuse-accumulations`` pass, fast mode) starts from
its accumulator ``x``.  When ``x`` is computed in a loop nest, that loop also stores ``x`` into
the PROPAGATE's buffer (the PROPAGATE is *seeded* there: it is a member of ``x``'s group as well
as a kernel), so ``x`` needs no buffer of its own and the kernel only adds the events; a state
whose next value it is can be updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nspec.compiler.ir import Graph, Op
from nspec.lowering.tvm.graphs import ACCUMULATOR, Uses, deps, spike_view
from nspec.lowering.tvm.rules import FUSIBLE, aligned_read


def is_inline_leaf(graph: Graph, flags, i: int) -> bool:
    """Leaves, and unbatched scalar expressions of them, are recomputed wherever they are used."""
    n = graph.nodes[i]
    if n.op in (Op.ARG, Op.CONST):
        return True
    return n.op in FUSIBLE and not flags[i] and int(np.prod(n.shape)) == 1 and all(
        is_inline_leaf(graph, flags, j) for j in n.inputs)


def uses_of(graph: Graph, roots, flags) -> Uses:
    """The nodes ``roots`` need, their consumers, and which of them are inline leaves."""
    live: set[int] = set()
    todo = list(roots)
    while todo:
        i = todo.pop()
        if i not in live:
            live.add(i)
            todo.extend(deps(graph, i))
    consumers: dict[int, list[int]] = {i: [] for i in live}
    for i in sorted(live):
        for j in deps(graph, i):
            consumers[j].append(i)
    inline = frozenset(i for i in live if is_inline_leaf(graph, flags, i))
    return Uses(frozenset(live), {i: tuple(c) for i, c in consumers.items()}, inline)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one graph is scheduled: live nodes, levels, which fusible nodes get buffers, the
    nodes PROPAGATE reads as byte masks, and the execution order of kernels and loop nests."""

    live: frozenset[int]
    level: dict
    stored: frozenset[int]
    masks: frozenset[int]
    order: tuple  # ("kernel", node) | ("group", shape, (fusible nodes and seeded PROPAGATEs...))
    flags: tuple[bool, ...]
    seeded: dict  # accumulating PROPAGATE -> its accumulator, computed (and stored into it) in a loop nest


def seeds(graph: Graph, uses: Uses) -> dict[int, int]:
    """Accumulating PROPAGATEs whose accumulator is computed in a loop nest: node -> accumulator."""
    out = {}
    for i in sorted(uses.live):
        n = graph.nodes[i]
        if n.op is Op.PROPAGATE and n.attrs.accumulate:
            x = n.inputs[ACCUMULATOR]
            if graph.nodes[x].op in FUSIBLE and x not in uses.inline:
                out[i] = x
    return out


def _levels(graph: Graph, uses: Uses) -> dict[int, int]:
    inline = uses.inline
    level: dict[int, int] = {}

    def fusible(j):
        return graph.nodes[j].op in FUSIBLE

    for i in sorted(uses.live):
        n = graph.nodes[i]
        if i in inline:
            level[i] = 0
        elif n.op in FUSIBLE:
            lv = 0
            for k, j in enumerate(n.inputs):
                if j in inline:
                    continue
                joins = fusible(j) and aligned_read(graph, n, k)
                lv = max(lv, level[j] + (0 if joins or not fusible(j) else 1))
            level[i] = lv
        else:
            level[i] = 1 + max((level[j] for j in deps(graph, i) if j not in inline), default=0)
    return level


def _seed_only(graph: Graph, seeded: dict, c: int, i: int) -> bool:
    """Does ``c`` read ``i`` only as the accumulator it is seeded with (in ``i``'s loop)?"""
    return seeded.get(c) == i and all(j != i for k, j in enumerate(deps(graph, c)) if k != ACCUMULATOR)


def plan_graph(graph: Graph, roots: list[int], flags) -> Plan:
    """Schedule ``graph`` so that every node in ``roots`` is computed and stored."""
    uses = uses_of(graph, roots, flags)
    live, inline = uses.live, uses.inline
    seeded = seeds(graph, uses)
    level = _levels(graph, uses)
    roots_set = set(roots)
    stored, masks = set(seeded), set()
    for i in sorted(live):
        n = graph.nodes[i]
        if n.op is Op.PROPAGATE:
            masks.add(spike_view(graph, n.inputs[0])[0])
        if i in inline or n.op not in FUSIBLE:
            continue
        for c in uses.consumers[i]:
            cn = graph.nodes[c]
            same_loop = _seed_only(graph, seeded, c, i) or cn.op in FUSIBLE and level[c] == level[i] and all(
                aligned_read(graph, cn, k) for k, j in enumerate(cn.inputs) if j == i)
            if not same_loop:
                stored.add(i)
        if i in roots_set:
            stored.add(i)
    order = []
    for lv in sorted(set(level[i] for i in live if i not in inline)):
        order += [("kernel", i) for i in sorted(live) if level[i] == lv and i not in inline
                  and graph.nodes[i].op not in FUSIBLE]
        groups: dict[tuple, list[int]] = {}
        for i in sorted(live):
            group_level = level[seeded[i]] if i in seeded else level[i] if graph.nodes[i].op in FUSIBLE else None
            if group_level == lv and i not in inline:
                groups.setdefault(graph.nodes[i].shape, []).append(i)
        order += [("group", shape, tuple(nodes)) for shape, nodes in groups.items()]
    return Plan(frozenset(live), level, frozenset(stored), frozenset(masks), tuple(order), tuple(flags), seeded)


def _inline_reach(graph: Graph, plan: Plan, root: int) -> set[int]:
    """The nodes read when ``root``'s value is read after the step: ``root``, and while a node is
    not stored (an inline expression, evaluated where it is read), the nodes it reads.  A stored
    value was computed into its own buffer during the step: what it came from is not read again."""
    seen, todo = set(), [root]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            if i not in plan.stored:
                todo.extend(graph.nodes[i].inputs)
    return seen


def in_place_ok(graph: Graph, plan: Plan, arg: int, nxt: int, end_readers: set[int]) -> bool:
    """May ``nxt`` (the next value of the state read by ARG ``arg``) be stored over that state
    while the step runs?  Only if every read of the old value happens earlier, or in the same
    loop body at the same index."""
    n = graph.nodes[nxt]
    if nxt not in plan.stored or not (n.op in FUSIBLE or nxt in plan.seeded) or arg in end_readers:
        return False
    if any(arg in _inline_reach(graph, plan, r) for r in end_readers):
        return False  # an output or record computing from the old value is copied out after the step
    pos, written = {}, None  # where each node is read from (a seeded kernel: its kernel), where nxt is written
    for k, item in enumerate(plan.order):
        for i in ((item[1],) if item[0] == "kernel" else item[2]):
            pos[i] = k
            written = k if i == nxt and written is None else written
    for c in plan.live:
        for k, j in enumerate(deps(graph, c)):
            if j != arg:
                continue
            if c not in pos:  # an inline scalar expression of the state: read anywhere
                return False
            if pos[c] < written:
                continue
            # a read at the same index in the same vector loop sees the old value (writes go last);
            # a scalar group has no loop, so there the old value must be read before the write
            if (pos[c] == written and graph.nodes[c].op in FUSIBLE and graph.nodes[c].shape != ()
                    and aligned_read(graph, graph.nodes[c], k)):
                continue
            return False
    return True


__all__ = ["is_inline_leaf", "uses_of", "Plan", "seeds", "plan_graph", "in_place_ok"]
