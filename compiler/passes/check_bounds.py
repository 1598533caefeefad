"""The check-bounds pass: ``check_bounds(program) -> program`` (pure).

Indices and integer divisors (``compiler/bounds.py``): a constant one that is invalid, or a
parameter whose constant initial value is, is a located compile error here.  Each site whose values
are known only at run time gets a ``CHECK`` node chained through one status value per sample,
``(site, step, value)``: the program gains the state ``nspec/status`` (initially zeros), whose next
value is the chained status with its step count advanced while no check has failed.  A site inside
a LOOP body (internal ticks) is chained through the LOOP as one more carried value, read back with
an ITEM after it (the ITEMs of stacked outputs shift by one).  A program with no such site is
returned unchanged, so its runs cost nothing more.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import count
from typing import Iterator

import numpy as np

from nspec.compiler.bounds import STATUS, Site, classify, static_errors
from nspec.compiler.ir import DType, Graph, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import STATUS_SHAPE
from nspec.dsl.diagnostics import NspecError, SourceMap, error


def _chain(graph: Graph, loops: tuple[int, ...], g: GraphBuilder, status: int,
           sites: dict[tuple, list[Site]], numbers: Iterator[int]) -> tuple[int, list[int]]:
    """Copy ``graph`` into ``g`` with a CHECK after each site's node, threading ``status`` (a node of
    ``g``); returns the last status and each old node's new index."""
    new: list[int] = []
    carried_at: dict[int, int] = {}  # a LOOP given the status as a carried value -> its old carried count
    for i, n in enumerate(graph.nodes):
        inputs = [new[j] for j in n.inputs]
        inner = loops + (i,)
        if n.op is Op.LOOP and any(at[:len(inner)] == inner for at, _ in sites):
            a = n.attrs
            body = GraphBuilder()
            body_status, body_new = _chain(a.body, inner, body, body.arg(STATUS, "state", DType.i64, STATUS_SHAPE),
                                           sites, numbers)
            for r in a.body.results:
                body.result(r.name, r.kind, body_new[r.node])
            body.result(STATUS, "next", body_status)
            k = len(a.carried)
            attrs = replace(a, body=body.build(), carried=a.carried + (STATUS,))
            new.append(g.add(Op.LOOP, inputs[:k] + [status] + inputs[k:], attrs=attrs, span=n.span))
            status = g.add(Op.ITEM, [new[-1]], DType.i64, STATUS_SHAPE, (("index", k),), n.span)
            carried_at[i] = k
            continue
        attrs = n.attrs
        if n.op is Op.ITEM and n.inputs[0] in carried_at and attrs.index >= carried_at[n.inputs[0]]:
            attrs = replace(attrs, index=attrs.index + 1)  # a stacked output: after the new carried value
        new.append(g.add(n.op, inputs, n.dtype, n.shape, attrs, n.span))
        for s in sites.get((loops, i), ()):
            status = g.add(Op.CHECK, [status, new[s.operand]], DType.i64, STATUS_SHAPE,
                           (("site", next(numbers)), ("kind", s.kind), ("size", s.size)), s.span)
    return status, new


def check_bounds(program: Program) -> Program:
    """Raise the compile-time errors of the program's sites; chain CHECKs for its run-time ones."""
    diags = static_errors(program.step, program.init)
    if diags:
        raise NspecError(diags, SourceMap())
    sites: dict[tuple, list[Site]] = {}
    checked = set()
    runtime_csr = [s for s in classify(program.step) if s.when == "run" and s.kind in ("indptr", "indices")]
    if runtime_csr:  # the language builds connectivity from constants (or parameters) only
        raise NspecError([error(s.span, "synaptic connectivity must be constant or parameters; this one is "
                                        "computed at run time") for s in runtime_csr], SourceMap())
    for s in classify(program.step):
        # a second site on the same values (x[i] and scatter_add(..., i, ...)) could never fail first
        if s.when == "run" and (s.loops, s.operand, s.kind, s.size) not in checked:
            checked.add((s.loops, s.operand, s.kind, s.size))
            sites.setdefault((s.loops, s.node), []).append(s)
    if not sites:
        return program
    g = GraphBuilder()
    status, new = _chain(program.step, (), g, g.arg(STATUS, "state", DType.i64, STATUS_SHAPE), sites, count(1))
    for r in program.step.results:
        g.result(r.name, r.kind, new[r.node])
    head = g.add(Op.SLICE, [status], DType.i64, (1,), (("starts", (0,)), ("stops", (1,)), ("steps", (1,))))
    clear = g.add(Op.EQ, [head, g.const(np.zeros(1, np.int64), DType.i64)], DType.bool, (1,))
    counted = g.add(Op.ADD, [status, g.const(np.array([0, 1, 0], np.int64), DType.i64)], DType.i64, STATUS_SHAPE)
    g.result(STATUS, "next", g.add(Op.WHERE, [clear, counted, status], DType.i64, STATUS_SHAPE))
    init = GraphBuilder()
    init.nodes, init.results = list(program.init.nodes), list(program.init.results)
    init.result(STATUS, "value", init.const(np.zeros(STATUS_SHAPE, np.int64), DType.i64))
    var = Var(STATUS, DType.i64, STATUS_SHAPE, learnable=False)
    return replace(program, step=g.build(), init=init.build(), states=program.states + (var,))


__all__ = ["check_bounds"]
