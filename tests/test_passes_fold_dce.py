"""Constant folding and dead-code elimination keep every value, shrink graphs and keep the IR valid."""

from __future__ import annotations

import numpy as np
import pytest

from nspec.compiler.ir import DType, Graph, GraphBuilder, Op, Program, Var, verify, verify_program
from nspec.compiler.passes.eliminate_dead_code import eliminate_dead_code, eliminate_dead_graph
from nspec.compiler.passes.fold_constants import FOLD_LIMIT, fold_constants, fold_graph
from nspec.dsl.diagnostics import Span
from nspec.runtime.reference import evaluate, initialize

f32, i64, boolean = DType.f32, DType.i64, DType.bool
SPAN = Span("m.nspec", 7, 3)


def run(graph: Graph, env, batch=None):
    return evaluate(graph, env, batch=batch)


def assert_same_values(before: Graph, after: Graph, env, batch=None):
    verify(after)
    a, b = run(before, env, batch), run(after, env, batch)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.broadcast_to(b[key], a[key].shape), a[key], err_msg=str(key))


def ops(graph: Graph) -> list[str]:
    return [n.op.value for n in graph.nodes]


def constant_heavy_graph() -> Graph:
    """y = x * (exp(0) * 3) + (2 - 2) ;  z = sum(c) * x  with c a constant vector; a dead node."""
    g = GraphBuilder()
    x = g.arg("x", "state", f32, (4,))
    three = g.add(Op.MUL, (g.add(Op.EXP, (g.const(0.0),), f32, ()), g.const(3.0)), f32, (), span=SPAN)
    zero = g.add(Op.SUB, (g.const(2.0), g.const(2.0, f32)), f32, ())
    y = g.add(Op.ADD, (g.add(Op.MUL, (x, three), f32, (4,)), zero), f32, (4,))
    c = g.const(np.array([1.0, 2.0, 3.0, 4.0]))
    total = g.add(Op.SUM, (c,), f32, (), (("axes", (0,)), ("keepdims", False)))
    g.add(Op.LOG, (x,), f32, (4,))  # dead
    g.result("x", "next", y)
    g.result("z", "output", g.add(Op.MUL, (total, x), f32, (4,)))
    return g.build()


def test_fold_then_dce_keeps_values_and_shrinks():
    before = constant_heavy_graph()
    folded = fold_graph(before)
    env = {"x": np.array([[1.0, -2.0, 3.5, 0.0], [0.5, 0.25, -1.0, 8.0]], np.float32)}
    assert_same_values(before, folded, env, batch=2)
    cleaned = eliminate_dead_graph(folded)
    assert_same_values(before, cleaned, env, batch=2)
    assert len(cleaned.nodes) < len(before.nodes)
    # x * 3 (the +0 is gone), sum(c) * x: one arg, two constants, two multiplies
    assert sorted(ops(cleaned)) == sorted(["arg", "const", "mul", "const", "mul"])
    three = [n for n in cleaned.nodes if n.op is Op.CONST and n.attr("value") == 3.0]
    assert len(three) == 1 and three[0].span == SPAN  # the folded constant keeps its node's span


def test_folded_values_are_the_interpreters():
    g = GraphBuilder()
    a = g.const(np.array([0.5, -1.5, 2.0]))
    chain = g.add(Op.SIGMOID, (g.add(Op.MUL, (a, g.const(3.0)), f32, (3,)),), f32, (3,))
    g.result("y", "output", g.add(Op.SOFTMAX, (chain,), f32, (3,), (("axis", 0),)))
    g.result("k", "output", g.add(Op.ARGMAX, (a,), i64, (), (("axis", 0),)))
    before = g.build()
    after = eliminate_dead_graph(fold_graph(before))
    assert ops(after) == ["const", "const"]
    assert_same_values(before, after, {})
    assert after.nodes[after.result("k").node].dtype is i64


IDENTITY_CASES = [
    # (op, operands given as "x" or a constant, dtype, expected to vanish)
    (Op.MUL, ["x", 1.0], f32, True),
    (Op.MUL, [1.0, "x"], f32, True),
    (Op.ADD, ["x", 0.0], f32, True),
    (Op.ADD, [0.0, "x"], f32, True),
    (Op.SUB, ["x", 0.0], f32, True),
    (Op.SUB, [0.0, "x"], f32, False),  # 0 - x is -x, not x
    (Op.DIV, ["x", 1.0], f32, True),
    (Op.DIV, [1.0, "x"], f32, False),
    (Op.POW, ["x", 1.0], f32, True),
    (Op.POW, ["x", 0.0], f32, True),   # becomes the constant 1
    (Op.MUL, ["x", 0.0], f32, False),  # inf * 0 is nan: never folded for floats
    (Op.MUL, ["x", 0], i64, True),
    (Op.MUL, ["x", 2.0], f32, False),
    (Op.AND, ["x", True], boolean, True),
    (Op.AND, [False, "x"], boolean, True),
    (Op.OR, ["x", False], boolean, True),
    (Op.OR, [True, "x"], boolean, True),
]


@pytest.mark.parametrize("op,operands,dtype,vanishes", IDENTITY_CASES)
def test_identities(op, operands, dtype, vanishes):
    g = GraphBuilder()
    x = g.arg("x", "state", dtype, (5,))
    ins = [x if v == "x" else g.const(v, dtype) for v in operands]
    g.result("y", "output", g.add(op, ins, dtype, (5,)))
    before = g.build()
    after = eliminate_dead_graph(fold_graph(before))
    if dtype is f32:
        values = np.array([[1.5, -2.0, np.inf, np.nan, -0.0]], np.float32)
    elif dtype is i64:
        values = np.array([[3, -4, 0, 7, 1]])
    else:
        values = np.array([[True, False, True, False, True]])
    assert_same_values(before, after, {"x": values}, batch=1)
    assert (op.value not in ops(after)) == vanishes, ops(after)


def test_identities_never_lose_broadcasting_or_dtype():
    g = GraphBuilder()
    x = g.arg("x", "state", f32, (3,))
    g.result("a", "output", g.add(Op.MUL, (x, g.const(np.ones((2, 3)))), f32, (2, 3)))  # x*1 broadcasts x
    g.result("b", "output", g.add(Op.WHERE, (g.const(True, boolean), x, g.const(np.zeros((2, 3)))), f32, (2, 3)))
    g.result("c", "output", g.add(Op.CAST, (x,), DType.f64, (3,)))
    before = g.build()
    after = eliminate_dead_graph(fold_graph(before))
    assert_same_values(before, after, {"x": np.array([[1.0, 2.0, 3.0]], np.float32)}, batch=1)
    assert {"mul", "where", "cast"} <= set(ops(after))


def test_structural_no_ops():
    g = GraphBuilder()
    x = g.arg("x", "state", f32, (2, 3))
    c = g.arg("c", "state", boolean, (2, 3))
    neg2 = g.add(Op.NEG, (g.add(Op.NEG, (x,), f32, (2, 3)),), f32, (2, 3))
    same = g.add(Op.RESHAPE, (g.add(Op.TRANSPOSE, (neg2,), f32, (2, 3), (("perm", (0, 1)),)),), f32, (2, 3))
    cast = g.add(Op.CAST, (g.add(Op.BROADCAST, (same,), f32, (2, 3)),), f32, (2, 3))
    g.result("y", "output", g.add(Op.WHERE, (g.add(Op.NOT, (g.add(Op.NOT, (c,), boolean, (2, 3)),), boolean, (2, 3)),
                                             cast, g.const(0.0)), f32, (2, 3)))
    g.result("t", "output", g.add(Op.TRANSPOSE, (x,), f32, (3, 2), (("perm", (1, 0)),)))
    before = g.build()
    after = eliminate_dead_graph(fold_graph(before))
    rng = np.random.default_rng(0)
    env = {"x": rng.normal(size=(2, 2, 3)).astype(np.float32), "c": rng.random((2, 2, 3)) < 0.5}
    assert_same_values(before, after, env, batch=2)
    assert sorted(ops(after)) == ["arg", "arg", "const", "transpose", "where"]


def test_fold_does_not_blow_up_broadcasts():
    g = GraphBuilder()
    big = g.add(Op.BROADCAST, (g.const(0.0),), f32, (FOLD_LIMIT + 1,))
    small = g.add(Op.BROADCAST, (g.const(2.0),), f32, (8,))
    g.result("big", "output", big)
    g.result("small", "output", small)
    after = fold_graph(g.build())
    assert after.nodes[after.result("big").node].op is Op.BROADCAST
    assert after.nodes[after.result("small").node].op is Op.CONST


def test_fold_leaves_failing_ops_for_the_run():
    g = GraphBuilder()
    g.result("p", "output", g.add(Op.POW, (g.const(2, i64), g.const(-1, i64)), i64, ()))
    after = fold_graph(g.build())
    assert after.nodes[after.result("p").node].op is Op.POW


def loop_graph() -> Graph:
    body = GraphBuilder()
    h, a = body.arg("h", "state", f32, (3,)), body.arg("a", "input", f32, (3,))
    scale = body.add(Op.MUL, (body.const(0.5), body.const(2.0)), f32, ())  # folds to 1, then h*1 -> h
    body.add(Op.EXP, (a,), f32, (3,))  # dead inside the body
    body.result("h", "next", body.add(Op.ADD, (body.add(Op.MUL, (h, scale), f32, (3,)), a), f32, (3,)))
    body.result("o", "output", body.add(Op.TANH, (h,), f32, (3,)))
    g = GraphBuilder()
    a = g.arg("a", "input", f32, (3,))
    h0 = g.add(Op.MUL, (g.const(np.zeros(3)), g.const(4.0)), f32, (3,))
    attrs = (("body", body.build()), ("count", 3), ("carried", ("h",)), ("invariant", ("a",)), ("stacked", ("o",)),
             ("until", None))
    loop = g.add(Op.LOOP, (h0, a), f32, (), attrs)
    g.result("h", "output", g.add(Op.ITEM, (loop,), f32, (3,), (("index", 0),)))
    g.result("o", "output", g.add(Op.ITEM, (loop,), f32, (3, 3), (("index", 1),)))
    return g.build()


def test_passes_reach_into_loop_bodies():
    before = loop_graph()
    after = eliminate_dead_graph(fold_graph(before))
    env = {"a": np.array([[0.1, -0.2, 0.3], [1.0, 2.0, -3.0]], np.float32)}
    assert_same_values(before, after, env, batch=2)
    body_before = before.nodes[[n.op for n in before.nodes].index(Op.LOOP)].attr("body")
    body_after = after.nodes[[n.op for n in after.nodes].index(Op.LOOP)].attr("body")
    assert sorted(ops(body_after)) == ["add", "arg", "arg", "tanh"]
    assert len(body_after.nodes) < len(body_before.nodes)


def random_init_program() -> Program:
    g = GraphBuilder()
    u = g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), f32, (3,), (("dist", "uniform"),))
    ones = g.add(Op.POW, (u, g.const(0.0)), f32, (3,))  # x^0 -> 1 must not drop the draw
    g.result("a", "value", g.add(Op.ADD, (ones, g.const(0.0)), f32, (3,)))
    g.result("b", "value", g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), f32, (2,), (("dist", "normal"),)))
    g.add(Op.RANDOM, (g.const(5.0), g.const(6.0)), f32, (4,), (("dist", "uniform"),))  # dead: never drawn
    g.result("s", "value", g.add(Op.MUL, (g.arg("b", "param", f32, (2,)), g.const(1.0)), f32, (2,)))
    step = GraphBuilder()
    s = step.arg("s", "state", f32, (2,))
    step.result("s", "next", step.add(Op.ADD, (s, step.add(Op.SUB, (step.const(1.0), step.const(1.0)), f32, ())),
                                      f32, (2,)))
    step.result("y", "output", s)
    return Program("r", step.build(), g.build(), params=(Var("a", f32, (3,)), Var("b", f32, (2,))),
                   states=(Var("s", f32, (2,)),), inputs=(), outputs=(Var("y", f32, (2,)),))


def test_program_passes_keep_initialisation_and_verify():
    before = random_init_program()
    after = eliminate_dead_code(fold_constants(before))
    verify_program(after)
    assert len(after.init.nodes) < len(before.init.nodes)
    assert len(after.step.nodes) < len(before.step.nodes)
    assert sum(n.op is Op.RANDOM for n in after.init.nodes) == 2
    for (pa, sa), (pb, sb) in zip([initialize(before, 2, 3)], [initialize(after, 2, 3)]):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])
    env = {"s": np.array([[1.0, 2.0]], np.float32)}
    assert_same_values(before.step, after.step, env, batch=1)


def test_passes_are_pure():
    before = constant_heavy_graph()
    program = Program("p", before, GraphBuilder().build(), (), (Var("x", f32, (4,)),), (), (Var("z", f32, (4,)),))
    eliminate_dead_code(fold_constants(program))
    assert program.step is before and len(before.nodes) == len(constant_heavy_graph().nodes)


def test_a_constant_array_of_one_value_becomes_a_scalar_operand():
    # where(spike, [Vr, Vr, Vr], v) reads an immediate: the reset of every LIF spec
    g = GraphBuilder()
    v = g.arg("v", "state", f32, (3,))
    spike = g.add(Op.GT, (v, g.const(1.0)), boolean, (3,))
    g.result("v", "next", g.add(Op.WHERE, (spike, g.const(np.full(3, -0.06, np.float32)), v), f32, (3,), span=SPAN))
    g.result("w", "output", g.add(Op.ADD, (v, g.const(np.array([1.0, 2.0, 3.0], np.float32))), f32, (3,)))
    g.result("u", "output", g.add(Op.MUL, (g.const(np.full(3, 2.0, np.float32)), g.const(np.float32(1.5))),
                                   f32, (3,)))
    before = g.build()
    after = eliminate_dead_graph(fold_graph(before))
    env = {"v": np.array([[0.5, 2.0, 1.5], [3.0, -1.0, 0.0]], np.float32)}
    assert_same_values(before, after, env, batch=2)
    where = next(n for n in after.nodes if n.op is Op.WHERE)
    reset = after.nodes[where.inputs[1]]
    assert reset.op is Op.CONST and reset.shape == () and reset.attr("value") == np.float32(-0.06)
    add = next(n for n in after.nodes if n.op is Op.ADD)
    assert after.nodes[add.inputs[1]].shape == (3,)      # values that differ stay an array
    u = after.nodes[next(r.node for r in after.results if r.name == "u")]
    assert u.op is Op.CONST and u.shape == (3,)          # no operand keeps the shape: folded whole
