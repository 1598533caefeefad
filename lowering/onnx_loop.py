"""LOOP: the IR's internal loops as ONNX ``Loop`` nodes (semantics: "Loops" in ``compiler/ir.py``).

Carried names become loop-carried values and stacked outputs become scan outputs; invariants
are read straight from the enclosing scope, which ONNX bodies may see.  In a batched loop every
carried value and stacked output is batched (unbatched ones are broadcast), as in the reference.

With ``until``, two more kinds of values are carried: a ``done`` flag per sample, and the last
value of every stacked output.  An iteration computes the body, then applies the until rule
that every backend shares (``batching.until_step``, here over ONNX ``Where`` and ``Or``): samples
already done keep their carried values and repeat their last stacked outputs, and ``done``
becomes ``done or until``.  The ONNX loop condition is "some sample is still running".  An
early exit leaves fewer than ``count`` scan entries, so each stack is padded with its last value.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from nspec.compiler import ir
from nspec.compiler.batching import LoopSpec, Until, until_step
from nspec.compiler.ir import DType
from nspec.lowering.onnx_builder import INT64_MAX, ONNX_DTYPE, Emit, LoopValue, Val, value_info, where


def loop(e: Emit, n: ir.Node, args: list[Val], b: bool) -> LoopValue:
    try:
        spec = LoopSpec.of(n)
    except ir.IRError as exc:
        raise ir.IRError(f"{n.span}: {exc}") from None
    a = spec.attrs
    inits = [e.to_batch(v) if b else v for v in args[:len(a.carried)]]
    outer = dict(zip(a.invariant, args[len(a.carried):]))
    stack_types = [a.body.nodes[k] for k in spec.out_nodes]
    if a.count == 0:  # no iteration: the initial values, and empty stacks
        return LoopValue(tuple(inits) + tuple(Val(e.zeros(x.dtype, (0, *x.shape), b), x.dtype, (0, *x.shape), b)
                                              for x in stack_types))
    sub = e.scope.child(f"{e.label}/")
    fresh = e.builder.fresh
    it, cond_in = fresh(f"{sub.prefix}iter"), fresh(f"{sub.prefix}cond")
    carried_in = [Val(fresh(f"{sub.prefix}{name}"), v.dtype, v.shape, v.batched) for name, v in zip(a.carried, inits)]
    loop_inits = list(inits)
    if a.until is not None:  # the done flags, then each stacked output's last value
        for name, dtype, shape in [("done", DType.bool, ())] + [("last", x.dtype, x.shape) for x in stack_types]:
            carried_in.append(Val(fresh(f"{sub.prefix}{name}"), dtype, shape, b))
            loop_inits.append(Val(e.zeros(dtype, shape, b), dtype, shape, b))

    env = {**outer, **dict(zip(a.carried, carried_in))}
    vals = e.lower(sub, a.body, env, ir.batched(a.body, spec.unbatched([v.batched for v in args], b)))
    be = Emit(sub, e.label, e.span, e.options, e.lower)
    cond_out, carried_out, scans = _iteration(be, spec, vals, carried_in, cond_in, b)

    body_out = [be.op("Identity", v.name) for v in carried_out + scans]
    infos = [value_info(name, v.dtype, v.shape, v.batched) for name, v in zip(body_out, carried_out + scans)]
    graph = helper.make_graph(sub.nodes, f"{e.label}_body",
                              [value_info(it, DType.i64, (), False), value_info(cond_in, DType.bool, (), False)]
                              + [value_info(v.name, v.dtype, v.shape, v.batched) for v in carried_in],
                              [value_info(cond_out, DType.bool, (), False)] + infos)
    results = e.op("Loop", e.const(np.asarray(a.count, dtype=np.int64)), e.const(np.asarray(True)),
                   *(v.name for v in loop_inits), outputs=len(loop_inits) + len(scans), body=graph)
    results = results if isinstance(results, list) else [results]
    finals = [Val(name, v.dtype, v.shape, v.batched) for name, v in zip(results, inits)]
    stacks = [_stack(e, spec, seq, o, b) for seq, o in zip(results[len(loop_inits):], scans)]
    return LoopValue(tuple(finals + stacks))


def _until(be: Emit) -> Until:
    """The until rule's vocabulary as ONNX nodes in the body scope ``be``."""

    def keep(done: Val, old: Val, new: Val) -> Val:
        return Val(where(be, be.lift(done, len(old.shape)), old.name, new.name, old.dtype), old.dtype, old.shape,
                   old.batched)

    def either(done: Val, cond: Val) -> Val:
        return Val(be.op("Or", done.name, cond.name), DType.bool, (), done.batched)

    return Until(keep, either)


def _iteration(be: Emit, spec: LoopSpec, vals: list, carried_in: list[Val], cond_in: str, b: bool):
    """The body's loop condition, carried outputs and scan outputs (``Val``s in the body scope)."""
    n = len(spec.attrs.carried)
    nexts = [be.cast(vals[k], v.dtype) for k, v in zip(spec.next_nodes, carried_in)]
    outs = [vals[k] for k in spec.out_nodes]
    if b:
        nexts, outs = [be.to_batch(v) for v in nexts], [be.to_batch(v) for v in outs]
    if spec.until_node is None:
        return be.op("Identity", cond_in), nexts, outs
    cond = be.cast(vals[spec.until_node], DType.bool)
    done, nexts, outs = until_step(_until(be), carried_in[n], carried_in[:n], nexts, carried_in[n + 1:], outs, cond)
    running = be.op("Not", done.name)
    if b:  # any sample still running
        running = be.op("Cast", be.op("ReduceMax", be.op("Cast", running, to=ONNX_DTYPE[DType.i32]), keepdims=0),
                        to=ONNX_DTYPE[DType.bool])
    return running, nexts + [Val(done.name, DType.bool, (), b)] + outs, outs


def _stack(e: Emit, spec: LoopSpec, seq: str, o: Val, b: bool) -> Val:
    """A scan output ``[iterations, (B,) ...]`` as the ITEM value ``[(B,) count, ...]``."""
    if spec.attrs.until is not None:  # pad an early exit to `count` entries with the last one
        last = e.op("Slice", seq, e.i64([-1]), e.i64([INT64_MAX]), e.i64([0]))
        missing = e.op("Sub", e.i64([spec.attrs.count]), e.op("Shape", seq, start=0, end=1))
        pad = e.op("Expand", last, e.op("Concat", missing, e.i64([1] * o.rank), axis=0))
        seq = e.op("Concat", seq, pad, axis=0)
    if b:
        seq = e.op("Transpose", seq, perm=[1, 0] + list(range(2, o.rank + 1)))
    return Val(seq, o.dtype, (spec.attrs.count, *o.shape), b)
