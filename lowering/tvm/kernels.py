"""Kernel rules of the TVM backend: the ops that are not fused into loop nests (PROPAGATE,
reductions, normalisations, GATHER, SCATTER_ADD, ITEM) as templated TIR loop nests writing a
materialised buffer.  EINSUM's kernel is in ``einsum_tiles.py``, LOOP's in the emitter (a LOOP
emits a nested graph).

Every kernel is ``kernel(em, graph, i, vals, plan)``: it reads its inputs' values from ``vals``
and writes ``vals[i]`` (a buffer the emitter allocated).

PROPAGATE is event-driven: the loop that computes its spikes also writes a byte mask, and the
kernel scans that mask eight neurons at a time (one 64-bit compare) and adds ``spike * weight``
along the CSR rows of the neurons that fired, in the reference's order (presynaptic index
ascending, then synapse index), so strict mode reproduces spike trains.  On CUDA it adds with
``atomicAdd`` (in strict mode row by row, which keeps the reference's order for every
postsynaptic neuron when a row has no repeated targets).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from nspec.compiler.ir import Graph, Node
from nspec.lowering.tvm.graphs import ACCUMULATOR, spike_view
from nspec.lowering.tvm.tir import LOGICAL, Ref, broadcast_index, cast, imm, tvm_modules

if TYPE_CHECKING:  # annotations only: the emitter and scheduler import the rule table, which imports this
    from nspec.lowering.tvm.emitter import Emitter
    from nspec.lowering.tvm.schedule import Plan

def propagate(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    """Event-driven CSR propagation into ``vals[i]``, from zeros or, for an accumulating
    PROPAGATE, from its accumulator (stored there by its loop nest when the schedule seeded it)."""
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    base, offset = spike_view(graph, n.inputs[0])
    n_pre = graph.nodes[n.inputs[0]].shape[0]
    mask, fusible = em.masks[base]
    spikes = vals[base]
    indptr, indices, weights = (vals[j] for j in n.inputs[1:ACCUMULATOR])
    out = vals[i]
    dt = LOGICAL[n.dtype]
    n_post = n.attrs.n_post
    w_rank = len(graph.nodes[n.inputs[3]].shape)
    if not n.attrs.accumulate:
        em.vloop((n_post,), lambda idx, lane: out.store(idx, imm(0, dt)))
        em.sync()
    elif i not in plan.seeded:  # an accumulator no loop nest stored here: start from a copy
        em.copy(out, vals[n.inputs[ACCUMULATOR]], (n_post,))
        em.sync()

    def row(pre, strided):
        lo = T.bind(cast(indptr.load((pre,)), "int32"))
        hi = T.bind(cast(indptr.load((pre + 1,)), "int32"))
        s = cast(spikes.load((offset + pre,)), dt)

        def add(k):
            w = cast(weights.load((k,) if w_rank else ()), dt)
            j = cast(indices.load((k,)), "int32")
            if em.opts.device == "cuda":
                T.evaluate(T.call_intrin(dt, "tirx.cuda.atomic_add", T.address_of(out.buf[out.prefix + (j,)]), w * s))
            else:
                out.store((j,), out.load((j,)) + w * s)

        if strided:
            nthr = em.opts.threads
            with T.serial(0, tirx.floordiv(hi - lo + nthr - 1, nthr)) as it:
                k = lo + it * nthr + em.tx
                with T.If(k < hi):
                    with T.Then():
                        add(k)
        else:
            with T.serial(lo, hi) as k:
                add(k)

    def fired(pre):
        return mask.load((offset + pre,)) if fusible else cast(spikes.load((offset + pre,)), "bool")

    if em.opts.device == "cuda":
        if em.opts.strict:
            with T.serial(0, n_pre) as pre:
                with T.If(fired(pre)):
                    with T.Then():
                        row(pre, strided=True)
                        em.sync()
        else:
            stack, (pre,) = em.foreach((n_pre,))
            with stack:
                with T.If(fired(pre)):
                    with T.Then():
                        row(pre, strided=False)
    elif fusible and offset % 8 == 0:
        # eight mask bytes per 64-bit word: a step with few events costs n_pre / 8 compares
        with T.serial(0, -(-n_pre // 8)) as w:
            word = T.reinterpret("int64", mask.buf[tirx.Ramp(offset + w * 8, 1, 8)])
            with T.If(tirx.NE(word, imm(0, "int64"))):
                with T.Then():
                    with T.serial(0, 8) as lane:
                        pre = w * 8 + lane
                        with T.If(tirx.And(pre < n_pre, fired(pre))):
                            with T.Then():
                                row(pre, strided=False)
    else:
        with T.serial(0, n_pre) as pre:
            with T.If(fired(pre)):
                with T.Then():
                    row(pre, strided=False)


def reduce(kind: str):
    """SUM, MEAN, MAX or MIN over ``attrs.axes``."""
    def rule(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
        _, tirx, _, T = tvm_modules()
        n = graph.nodes[i]
        x = vals[n.inputs[0]]
        in_shape = graph.nodes[n.inputs[0]].shape
        axes = tuple(sorted(a % len(in_shape) for a in n.attrs.axes)) if in_shape else ()
        keep = bool(n.attrs.keepdims)
        kept = [d for d in range(len(in_shape)) if d not in axes]
        out = vals[i]
        dt = LOGICAL[n.dtype]
        stack, idx = em.foreach(n.shape)
        with stack:
            pos = {d: idx[d] if keep else idx[k] for k, d in enumerate(kept)}
            first = tuple(0 if d in axes else pos[d] for d in range(len(in_shape)))
            init = imm(0, dt) if kind in ("sum", "mean") else cast(x.load(first), dt)
            out.store(idx, init)
            with contextlib.ExitStack() as red:
                rv = {d: red.enter_context(T.serial(0, in_shape[d])) for d in axes}
                full = tuple(rv[d] if d in axes else pos[d] for d in range(len(in_shape)))
                v = cast(x.load(full), dt)
                acc = out.load(idx)
                out.store(idx, {"sum": acc + v, "mean": acc + v, "max": tirx.Max(acc, v),
                                "min": tirx.Min(acc, v)}[kind])
            if kind == "mean":
                count = int(np.prod([in_shape[d] for d in axes]))
                out.store(idx, out.load(idx) / imm(count, dt))

    return rule


def _rows(em: Emitter, shape, axis):
    """Loops over every index of ``shape`` except ``axis``: (stack, fn(j) -> full index, index)."""
    outer_shape = tuple(d for k, d in enumerate(shape) if k != axis)
    stack, idx = em.foreach(outer_shape)

    def at(j):
        idx_l = list(idx)
        idx_l.insert(axis, j)
        return tuple(idx_l)

    return stack, at, idx


def argmax(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    x = vals[n.inputs[0]]
    shape = graph.nodes[n.inputs[0]].shape
    axis = n.attrs.axis % len(shape)
    out = vals[i]
    stack, at, idx = _rows(em, shape, axis)
    with stack:
        out.store(idx, imm(0, LOGICAL[n.dtype]))
        with T.serial(1, shape[axis]) as j:
            best = cast(out.load(idx), "int32")
            with T.If(x.load(at(j)) > x.load(at(best))):
                with T.Then():
                    out.store(idx, cast(j, LOGICAL[n.dtype]))


def softmax(log: bool):
    """SOFTMAX, or LOGSUMEXP when ``log``, along ``attrs.axis`` (max-shifted)."""
    def rule(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
        _, tirx, _, T = tvm_modules()
        n = graph.nodes[i]
        x = vals[n.inputs[0]]
        shape = graph.nodes[n.inputs[0]].shape
        axis = n.attrs.axis % len(shape)
        dt = LOGICAL[n.dtype]
        outer_shape = tuple(d for k, d in enumerate(shape) if k != axis)
        m = Ref(em.scratch(outer_shape, dt), (), dt)
        s = Ref(em.scratch(outer_shape, dt), (), dt)
        out = vals[i]
        stack, at, idx = _rows(em, shape, axis)
        with stack:
            m.store(idx, x.load(at(0)))
            with T.serial(1, shape[axis]) as j:
                m.store(idx, tirx.Max(m.load(idx), x.load(at(j))))
            if log:
                fin = tirx.isfinite(m.load(idx))
                m.store(idx, tirx.Select(fin, m.load(idx), imm(0, dt)))
            s.store(idx, imm(0, dt))
            with T.serial(0, shape[axis]) as j:
                e = tirx.exp(x.load(at(j)) - m.load(idx))
                if not log:
                    out.store(at(j), e)
                s.store(idx, s.load(idx) + e)
            if log:
                out.store(idx, tirx.log(s.load(idx)) + m.load(idx))
            else:
                with T.serial(0, shape[axis]) as j:
                    out.store(at(j), out.load(at(j)) / s.load(idx))

    return rule


def layernorm(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    xs = [vals[j] for j in n.inputs]
    shapes = [graph.nodes[j].shape for j in n.inputs]
    shape = n.shape
    dt = LOGICAL[n.dtype]
    axis = len(shape) - 1
    outer_shape = shape[:-1]
    mean = Ref(em.scratch(outer_shape, dt), (), dt)
    var = Ref(em.scratch(outer_shape, dt), (), dt)
    out = vals[i]
    width = imm(shape[-1], dt)

    def x_at(k, full):
        return cast(xs[k].load(broadcast_index(full, shapes[k], shape)), dt)

    stack, at, idx = _rows(em, shape, axis)
    with stack:
        mean.store(idx, imm(0, dt))
        with T.serial(0, shape[-1]) as j:
            mean.store(idx, mean.load(idx) + x_at(0, at(j)))
        mean.store(idx, mean.load(idx) / width)
        var.store(idx, imm(0, dt))
        with T.serial(0, shape[-1]) as j:
            d = x_at(0, at(j)) - mean.load(idx)
            var.store(idx, var.load(idx) + d * d)
        var.store(idx, tirx.sqrt(var.load(idx) / width + imm(n.attrs.eps, dt)))
        with T.serial(0, shape[-1]) as j:
            y = (x_at(0, at(j)) - mean.load(idx)) / var.load(idx)
            if len(xs) > 1:
                y = y * x_at(1, at(j))
            if len(xs) > 2:
                y = y + x_at(2, at(j))
            out.store(at(j), y)


def in_range(k, size: int):
    """An int64 index as an int32 position in [0, size): negative ones from the end, the rest clamped,
    so that no load or store leaves its buffer (``interpret.in_range``; a CHECK reports the index)."""
    tirx = tvm_modules().tirx
    k = tirx.Select(k < imm(0, "int64"), k + imm(size, "int64"), k)
    return cast(tirx.Max(tirx.Min(k, imm(size - 1, "int64")), imm(0, "int64")), "int32")


def gather(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    x, ind = vals[n.inputs[0]], vals[n.inputs[1]]
    xs = graph.nodes[n.inputs[0]].shape
    ks = graph.nodes[n.inputs[1]].shape
    axis = n.attrs.axis % len(xs)
    out = vals[i]
    stack, idx = em.foreach(n.shape)
    with stack:
        k = in_range(cast(ind.load(idx[axis:axis + len(ks)]), "int64"), xs[axis])
        out.store(idx, x.load(idx[:axis] + (k,) + idx[axis + len(ks):]))


def scatter_add(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    base, ind, values = (vals[j] for j in n.inputs)
    vs = graph.nodes[n.inputs[2]].shape
    ks = graph.nodes[n.inputs[1]].shape
    axis = n.attrs.axis % len(n.shape)
    out = vals[i]
    dt = LOGICAL[n.dtype]
    em.copy(out, base, n.shape)
    em.sync()
    # serial, in the values' order, as np.add.at
    with em.single():
        with contextlib.ExitStack() as s:
            idx = tuple(s.enter_context(T.serial(0, d)) for d in vs)
            k = in_range(cast(ind.load(idx[axis:axis + len(ks)]), "int64"), n.shape[axis])
            oidx = idx[:axis] + (k,) + idx[axis + len(ks):]
            out.store(oidx, out.load(oidx) + cast(values.load(idx), dt))


# kind -> the TIR condition of interpret.CHECK_FAILS on an int64 value
CHECK_FAILS_TIR = {
    "index": lambda v, size: tvm_modules().tirx.Or(v < imm(-size, "int64"), v >= imm(size, "int64")),
    "divisor": lambda v, size: tvm_modules().tirx.EQ(v, imm(0, "int64")),
}


def check(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    """CHECK: the status, or (site, its step, the first failing value) when it is clear and x fails;
    serial, in x's order, so that 'first' is the reference's."""
    _, tirx, _, T = tvm_modules()
    n = graph.nodes[i]
    status, x = vals[n.inputs[0]], vals[n.inputs[1]]
    a = n.attrs
    out = vals[i]
    em.copy(out, status, n.shape)
    em.sync()
    with em.single():
        with contextlib.ExitStack() as s:
            idx = tuple(s.enter_context(T.serial(0, d)) for d in graph.nodes[n.inputs[1]].shape)
            v = cast(x.load(idx), "int64")
            with T.If(tirx.And(CHECK_FAILS_TIR[a.kind](v, a.size), tirx.EQ(out.load((0,)), imm(0, "int64")))):
                with T.Then():
                    out.store((0,), imm(a.site, "int64"))
                    out.store((2,), v)
    em.sync()


def item(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    n: Node = graph.nodes[i]
    vals[i] = vals[n.inputs[0]][n.attrs.index]


__all__ = ["propagate", "reduce", "argmax", "softmax", "layernorm", "gather", "scatter_add", "check", "in_range", "item"]
