"""LOOP: the IR's internal loops as ONNX ``Loop`` nodes (semantics: "Loops" in ``compiler/ir.py``).

Carried names become loop-carried values and stacked outputs become scan outputs; invariants
are read straight from the enclosing scope, which ONNX bodies may see.  In a batched loop every
carried value and stacked output is batched (unbatched ones are broadcast), as in the reference.

With ``until``, two more kinds of values are carried: a ``done`` flag per sample, and the last
value of every stacked output.  An iteration computes the body, then for samples already done
keeps their carried values and repeats their last stacked outputs (``Where``); ``done`` becomes
``done or until``; the ONNX loop condition is "some sample is still running".  An early exit
leaves fewer than ``count`` scan entries, so each stack is padded with its last value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from nspec.compiler import ir
from nspec.compiler.ir import DType
from nspec.lowering.onnx_builder import INT64_MAX, ONNX_DTYPE, Emit, LoopValue, Val, value_info, where


@dataclass(frozen=True, slots=True)
class Spec:
    """A LOOP node's attributes, with the body results they name."""

    body: ir.Graph
    count: int
    carried: tuple[str, ...]
    invariant: tuple[str, ...]
    until: str | None
    nexts: tuple[int, ...]    # body node of each carried name's next value
    stacked: tuple[int, ...]  # body node of each stacked output

    @classmethod
    def of(cls, n: ir.Node) -> "Spec":
        body = n.attr("body")

        def node(name: str, kind: str) -> int:
            r = body.result(name, kind)
            if r is None:
                raise ir.IRError(f"{n.span}: the LOOP body has no {kind} result {name!r}")
            return r.node

        carried = tuple(n.attr("carried", ()))
        return cls(body, int(n.attr("count")), carried, tuple(n.attr("invariant", ())), n.attr("until"),
                   tuple(node(c, "next") for c in carried), tuple(node(s, "output") for s in n.attr("stacked", ())))


def loop(e: Emit, n: ir.Node, args: list[Val], b: bool) -> LoopValue:
    spec = Spec.of(n)
    inits = [e.to_batch(v) if b else v for v in args[:len(spec.carried)]]
    outer = dict(zip(spec.invariant, args[len(spec.carried):]))
    stack_types = [spec.body.nodes[k] for k in spec.stacked]
    if spec.count == 0:  # no iteration: the initial values, and empty stacks
        return LoopValue(tuple(inits) + tuple(Val(e.zeros(x.dtype, (0, *x.shape), b), x.dtype, (0, *x.shape), b)
                                              for x in stack_types))
    sub = e.scope.child(f"{e.label}/")
    fresh = e.builder.fresh
    it, cond_in = fresh(f"{sub.prefix}iter"), fresh(f"{sub.prefix}cond")
    carried_in = [Val(fresh(f"{sub.prefix}{name}"), v.dtype, v.shape, v.batched) for name, v in zip(spec.carried, inits)]
    loop_inits = list(inits)
    if spec.until is not None:  # the done flags, then each stacked output's last value
        for name, dtype, shape in [("done", DType.bool, ())] + [("last", x.dtype, x.shape) for x in stack_types]:
            carried_in.append(Val(fresh(f"{sub.prefix}{name}"), dtype, shape, b))
            loop_inits.append(Val(e.zeros(dtype, shape, b), dtype, shape, b))

    unbatched = {k for k, v in outer.items() if not v.batched} | (set() if b else set(spec.carried))
    env = {**outer, **dict(zip(spec.carried, carried_in))}
    vals = e.lower(sub, spec.body, env, ir.batched(spec.body, unbatched))
    be = Emit(sub, e.label, e.span, e.options, e.lower)
    cond_out, carried_out, scans = _iteration(be, spec, vals, carried_in, cond_in, b)

    body_out = [be.op("Identity", v.name) for v in carried_out + scans]
    infos = [value_info(name, v.dtype, v.shape, v.batched) for name, v in zip(body_out, carried_out + scans)]
    graph = helper.make_graph(sub.nodes, f"{e.label}_body",
                              [value_info(it, DType.i64, (), False), value_info(cond_in, DType.bool, (), False)]
                              + [value_info(v.name, v.dtype, v.shape, v.batched) for v in carried_in],
                              [value_info(cond_out, DType.bool, (), False)] + infos)
    results = e.op("Loop", e.const(np.asarray(spec.count, dtype=np.int64)), e.const(np.asarray(True)),
                   *(v.name for v in loop_inits), outputs=len(loop_inits) + len(scans), body=graph)
    results = results if isinstance(results, list) else [results]
    finals = [Val(name, v.dtype, v.shape, v.batched) for name, v in zip(results, inits)]
    stacks = [_stack(e, spec, seq, o, b) for seq, o in zip(results[len(loop_inits):], scans)]
    return LoopValue(tuple(finals + stacks))


def _iteration(be: Emit, spec: Spec, vals: list, carried_in: list[Val], cond_in: str, b: bool):
    """The body's loop condition, carried outputs and scan outputs (``Val``s in the body scope)."""
    n = len(spec.carried)
    nexts = [be.cast(vals[k], v.dtype) for k, v in zip(spec.nexts, carried_in)]
    outs = [vals[k] for k in spec.stacked]
    if b:
        nexts, outs = [be.to_batch(v) for v in nexts], [be.to_batch(v) for v in outs]
    if spec.until is None:
        return be.op("Identity", cond_in), nexts, outs
    done, lasts = carried_in[n], carried_in[n + 1:]

    def keep(old: Val, new: Val) -> Val:  # a finished sample keeps its old value
        return Val(where(be, be.lift(done, len(old.shape)), old.name, new.name, old.dtype), old.dtype, old.shape,
                   old.batched)

    nexts = [keep(v, nv) for v, nv in zip(carried_in, nexts)]
    outs = [keep(last, o) for last, o in zip(lasts, outs)]
    r = spec.body.result(spec.until, "value")
    if r is None:
        raise ir.IRError(f"the LOOP body has no value result {spec.until!r} (its until condition)")
    done_next = be.op("Or", done.name, be.cast(vals[r.node], DType.bool).name)
    running = be.op("Not", done_next)
    if b:  # any sample still running
        running = be.op("Cast", be.op("ReduceMax", be.op("Cast", running, to=ONNX_DTYPE[DType.i32]), keepdims=0),
                        to=ONNX_DTYPE[DType.bool])
    return running, nexts + [Val(done_next, DType.bool, (), b)] + outs, outs


def _stack(e: Emit, spec: Spec, seq: str, o: Val, b: bool) -> Val:
    """A scan output ``[iterations, (B,) ...]`` as the ITEM value ``[(B,) count, ...]``."""
    if spec.until is not None:  # pad an early exit to `count` entries with the last one
        last = e.op("Slice", seq, e.i64([-1]), e.i64([INT64_MAX]), e.i64([0]))
        missing = e.op("Sub", e.i64([spec.count]), e.op("Shape", seq, start=0, end=1))
        pad = e.op("Expand", last, e.op("Concat", missing, e.i64([1] * o.rank), axis=0))
        seq = e.op("Concat", seq, pad, axis=0)
    if b:
        seq = e.op("Transpose", seq, perm=[1, 0] + list(range(2, o.rank + 1)))
    return Val(seq, o.dtype, (spec.count, *o.shape), b)
