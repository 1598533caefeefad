"""Internal ticks: a system's step repeated T times per data step (CTM), as an explicit LOOP.

``ticks T`` makes the body one tick: states are carried from tick to tick, inputs and
parameters are loop invariants.  Output ports declared ``stack`` collect every tick (their
shape gains a trailing tick axis, as the CTM's ``predictions (B, out, T)``); other outputs give
the last tick's value.  ``until cond max N`` stops a sample's ticks once ``cond`` holds (at
most N ticks): its carried values freeze and its stacked outputs repeat the last value.
"""

from __future__ import annotations

from dataclasses import replace

from nspec.dsl import ast as A

from .expressions import ExprBuilder
from .ir import DType, Graph, GraphBuilder, Op, Role
from .limits import check_iterations
from .systems import Primitive


def wrap_ticks(b: ExprBuilder, graph: GraphBuilder, prim: Primitive, stmts) -> Primitive:
    """``prim`` whose step is one tick, repeated by a LOOP node as the ``ticks``/``until`` statement in
    ``stmts`` says.  ``graph`` is the builder of the step (``prim.step`` is still open in it) and ``b``
    an expression builder over the body's names, for the count and the ``until`` condition."""
    ticks = [s for s in stmts if isinstance(s, A.Ticks)]
    untils = [s for s in stmts if isinstance(s, A.Until)]
    if len(ticks) + len(untils) > 1:
        b.fail(stmts[1].span, "a system has one 'ticks' or 'until' statement")
    until_name = None
    if ticks:
        count = b.static_int(ticks[0].count, "the number of ticks")
        span = ticks[0].span
    else:
        count = b.static_int(untils[0].bound, "the bound of 'until'")
        span = untils[0].span
        cond = b.expr(untils[0].condition)
        if cond.dtype is not DType.bool or cond.shape != ():
            b.fail(untils[0].condition.span, "an 'until' condition must be one bool per sample; reduce it with "
                                             "max()/min() or compare a scalar")
        until_name = "until"
        graph.result(until_name, "value", b.node(cond, untils[0].span))
    if count <= 0:
        what, node = ("the number of ticks", ticks[0].count) if ticks else ("the bound of 'until'", untils[0].bound)
        b.fail(node.span, f"{what} must be positive, got {count}")
    if too_many := check_iterations("the number of ticks" if ticks else "the bound of 'until'", count):
        b.fail((ticks[0].count if ticks else untils[0].bound).span, too_many)
    inner = graph.build()
    carried = tuple(s.name for s in prim.states)
    invariant = tuple(p.name for p in prim.inputs) + tuple(p.name for p in prim.params)
    stacked = tuple(p.name for p in prim.outputs)
    # The body reads carried values as role "state" and invariants as role "input" (the LOOP contract).
    nodes = []
    for n in inner.nodes:
        if n.op is Op.ARG:
            role = Role.state if n.attr("name") in carried else Role.input
            n = replace(n, attrs=replace(n.attrs, role=role))
        nodes.append(n)
    results = tuple(r for r in inner.results if r.kind in ("next", "output") or r.name == until_name)
    loop_body = Graph(tuple(nodes), results)
    g = GraphBuilder()
    ins = [g.arg(s.name, "state", s.dtype, s.shape, s.span) for s in prim.states]
    ins += [g.arg(p.name, "input", p.dtype, p.shape, p.span) for p in prim.inputs]
    ins += [g.arg(p.name, "param", p.dtype, p.shape, p.span) for p in prim.params]
    loop = g.add(Op.LOOP, ins, DType.f32, (), (("body", loop_body), ("count", count), ("carried", carried),
                                               ("invariant", invariant), ("stacked", stacked), ("until", until_name)),
                 span)
    for i, s in enumerate(prim.states):
        g.result(s.name, "next", g.add(Op.ITEM, [loop], s.dtype, s.shape, (("index", i),), span))
    outputs = []
    for j, p in enumerate(prim.outputs):
        all_ticks = g.add(Op.ITEM, [loop], p.dtype, (count,) + p.shape, (("index", len(carried) + j),), span)
        if p.stack:
            perm = tuple(range(1, len(p.shape) + 1)) + (0,)
            value = g.add(Op.TRANSPOSE, [all_ticks], p.dtype, p.shape + (count,), (("perm", perm),), span)
            outputs.append(replace(p, shape=p.shape + (count,)))
        else:
            rank = len(p.shape) + 1
            last = g.add(Op.SLICE, [all_ticks], p.dtype, (1,) + p.shape,
                         (("starts", (count - 1,) + (0,) * len(p.shape)), ("stops", (count,) + p.shape),
                          ("steps", (1,) * rank)), span)
            value = g.add(Op.RESHAPE, [last], p.dtype, p.shape, (), span)
            outputs.append(p)
        g.result(p.name, "output", value)
    return replace(prim, outputs=tuple(outputs), step=g.build())
