"""The ONNX lowering against the NumPy reference interpreter (the oracle).

Every op is run through a one-node program in the whole-run and the per-step executor, on
batched, unbatched and mixed operands; spiking programs must reproduce the reference's spike
trains exactly.  Floats: rtol 1e-5, atol 1e-6 (float32), the tolerance ``to_onnx`` states.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from nspec.compiler import ir
from nspec.compiler.ir import INIT_ONLY, DType as D, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import CONTINUOUS
from nspec.dsl.diagnostics import NspecError, Span
from nspec.lowering import to_onnx
from nspec.lowering.onnx_propagate import DENSE_MIN_DENSITY
from nspec.lowering.to_onnx import RULES, OnnxExecutor
from nspec.runtime.executor import BackendError, RunRequest
from nspec.runtime.reference import ReferenceExecutor

RTOL, ATOL = 1e-5, 1e-6
B, T = 3, 2
MODES = ("whole-run", "step")


# ---------------------------------------------------------------- helpers
def draw(rng, kind: str, dtype: D, shape):
    """Random operand values of a kind that keeps the op in its domain."""
    if kind == "normal":
        x = rng.normal(0, 1.5, shape)
    elif kind == "positive":
        x = rng.uniform(0.2, 3.0, shape)
    elif kind == "wide":
        x = rng.uniform(-40, 40, shape)
    elif kind == "nonzero":
        x = rng.choice([-1, 1], shape) * (rng.integers(1, 5, shape) if dtype is D.i32 else rng.uniform(0.5, 4, shape))
    elif kind == "small":  # small integers (as floats too): equal values and exact zeros occur
        x = rng.integers(-2, 3, shape)
    elif kind == "bool":
        x = rng.random(shape) < 0.5
    elif kind == "status":  # a check status (site, step, value): clear (site 0) or failed at site 4
        x = rng.integers(0, 9, shape)
        x[..., 0] = rng.choice([0, 0, 4], shape[:-1])
    elif kind.startswith("index"):  # index<n>: valid take indices into n, negatives included
        n = int(kind[5:])
        x = rng.integers(-n, n, shape)
    else:
        raise ValueError(kind)
    return np.asarray(x, dtype=dtype.numpy)


def one_op(op, operands, dtype, shape, attrs=(), pattern=None, seed=0):
    """A program computing one node from params (unbatched) and inputs (batched) operands.

    ``operands`` are (kind, dtype, shape); ``pattern`` says which are batched (default none).
    A dummy state fixes the batch size, so unbatched results are broadcast over B.
    """
    rng = np.random.default_rng(seed)
    pattern = pattern or [False] * len(operands)
    g = GraphBuilder()
    args, params, inputs, pv, iv = [], [], [], {}, {}
    for k, ((kind, dt, sh), batched) in enumerate(zip(operands, pattern)):
        name = f"x{k}"
        role = "input" if batched else "param"
        args.append(g.arg(name, role, dt, sh))
        (inputs if batched else params).append(Var(name, dt, sh))
        if batched:
            iv[name] = draw(rng, kind, dt, (B, T, *sh))
        else:
            pv[name] = draw(rng, kind, dt, sh)
    s = g.arg("s", "state", D.f32, ())
    y = g.add(op, args, dtype, shape, attrs, Span("op.nspec", 7, 5))
    g.result("s", "next", s)
    g.result("y", "output", y)
    prog = Program("one_op", g.build(), GraphBuilder().build(), tuple(params), (Var("s", D.f32, ()),),
                   tuple(inputs), (Var("y", dtype, shape),))
    ir.verify_program(prog)
    return prog, RunRequest(pv, {"s": np.zeros(B, np.float32)}, iv, T)


def assert_same(got, want, exact=False):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if exact or not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def check(prog, request, modes=MODES, exact=False, **options):
    want = ReferenceExecutor(prog).run(request)
    for mode in modes:
        got = OnnxExecutor(prog, mode=mode, **options).run(request)
        for group in ("state", "outputs", "records"):
            w, g = getattr(want, group), getattr(got, group)
            assert sorted(g) == sorted(w), (mode, group)
            for k in w:
                assert_same(g[k], w[k], exact)
    return want


# ---------------------------------------------------------------- every op
def test_every_op_has_a_rule():
    assert set(Op) - INIT_ONLY - CONTINUOUS <= set(RULES)


def test_a_missing_rule_is_a_located_diagnostic():
    g = GraphBuilder()
    s = g.arg("s", "state", D.f32, ())
    r = g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), D.f32, (), (("dist", "uniform"),), Span("m.nspec", 3, 9))
    g.result("s", "next", g.add(Op.ADD, (s, r), D.f32, ()))
    prog = Program("p", g.build(), GraphBuilder().build(), (), (Var("s", D.f32, ()),), (), ())
    with pytest.raises(NspecError, match=r"m\.nspec:3:9: error: .*random"):
        to_onnx.step_model(prog)


F, I32, BOOL = D.f32, D.i32, D.bool
BIN_FLOAT = [(Op.ADD, "normal", "normal"), (Op.SUB, "normal", "normal"), (Op.MUL, "normal", "normal"),
             (Op.DIV, "normal", "nonzero"), (Op.POW, "positive", "normal"), (Op.MOD, "normal", "nonzero"),
             (Op.MAXIMUM, "small", "small"), (Op.MINIMUM, "small", "small")]
COMPARE = [Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE]
UNARY = [(Op.NEG, "normal"), (Op.ABS, "normal"), (Op.EXP, "normal"), (Op.LOG, "positive"), (Op.SQRT, "positive"),
         (Op.TANH, "normal"), (Op.SIGMOID, "wide"), (Op.RELU, "normal"), (Op.SILU, "normal"), (Op.SOFTPLUS, "wide"),
         (Op.SIN, "normal"), (Op.COS, "normal"), (Op.ERF, "normal"), (Op.FLOOR, "normal"), (Op.STOP_GRADIENT, "normal"),
         (Op.SPIKE, "small")]
TWO = [[False, False], [True, True], [True, False], [False, True]]


def cases():
    """(id, op, operands, dtype, shape, attrs, patterns)."""
    out = []
    for op, a, b in BIN_FLOAT:
        out.append((op.value, op, [(a, F, (3, 4)), (b, F, (4,))], F, (3, 4), (), TWO))
    for op in COMPARE:
        out.append((op.value, op, [("small", F, (3, 4)), ("small", F, (4,))], BOOL, (3, 4), (), TWO))
    for op in (Op.AND, Op.OR):
        out.append((op.value, op, [("bool", BOOL, (3, 4)), ("bool", BOOL, (3, 4))], BOOL, (3, 4), (), TWO))
    for op in (Op.DIV, Op.MOD, Op.ADD):
        out.append((f"{op.value}-i32", op, [("small", I32, (5,)), ("index3", I32, (5,))], I32, (5,), (), TWO)
                   if op is Op.ADD else
                   (f"{op.value}-i32", op, [("index9", I32, (5,)), ("nonzero", I32, (5,))], I32, (5,), (), TWO))
    for op, kind in UNARY:
        out.append((op.value, op, [(kind, F, (3, 4))], F, (3, 4), (), [[False], [True]]))
    out.append(("not", Op.NOT, [("bool", BOOL, (4,))], BOOL, (4,), (), [[False], [True]]))
    for src, dst, kind in ((F, I32, "wide"), (F, BOOL, "small"), (BOOL, F, "bool"), (I32, F, "index5"), (F, F, "normal")):
        out.append((f"cast-{src.value}-{dst.value}", Op.CAST, [(kind, src, (2, 3))], dst, (2, 3), (), [[False], [True]]))
    out.append(("where", Op.WHERE, [("bool", BOOL, (3, 4)), ("normal", F, (4,)), ("normal", F, ())], F, (3, 4), (),
                [[False] * 3, [True] * 3, [True, False, False], [False, True, False], [False, False, True]]))
    for op in (Op.SUM, Op.MEAN, Op.MAX, Op.MIN):
        for axes, keep in (((0,), False), ((1, 2), False), ((0, 1, 2), False), ((1,), True)):
            shape = tuple(1 if (keep and d in axes) else n for d, n in enumerate((3, 4, 2)) if keep or d not in axes)
            out.append((f"{op.value}{axes}{'k' if keep else ''}", op, [("normal", F, (3, 4, 2))], F, shape,
                        (("axes", axes), ("keepdims", keep)), [[False], [True]]))
    for axis, shape in ((0, (4,)), (-1, (3,))):
        out.append((f"argmax{axis}", Op.ARGMAX, [("small", F, (3, 4))], D.i64, shape, (("axis", axis),),
                    [[False], [True]]))
        out.append((f"logsumexp{axis}", Op.LOGSUMEXP, [("wide", F, (3, 4))], F, shape, (("axis", axis),),
                    [[False], [True]]))
    for axis in (0, -1):
        out.append((f"softmax{axis}", Op.SOFTMAX, [("wide", F, (3, 4))], F, (3, 4), (("axis", axis),),
                    [[False], [True]]))
    out.append(("layernorm", Op.LAYERNORM, [("normal", F, (3, 8))], F, (3, 8), (("eps", 1e-5),), [[False], [True]]))
    out.append(("layernorm-affine", Op.LAYERNORM, [("normal", F, (3, 8)), ("normal", F, (8,)), ("normal", F, (8,))],
                F, (3, 8), (("eps", 1e-5),), [[False] * 3, [True] * 3, [True, False, False], [False, True, True]]))
    for eq, shapes, shape in (("ij,jk->ik", ((3, 4), (4, 5)), (3, 5)), ("i,ij->j", ((4,), (4, 5)), (5,)),
                              ("ij->j", ((3, 4),), (4,)), ("ij,ij->i", ((3, 4), (3, 4)), (3,))):
        pats = TWO if len(shapes) == 2 else [[False], [True]]
        out.append((f"einsum-{eq}", Op.EINSUM, [("normal", F, s) for s in shapes], F, shape, (("equation", eq),), pats))
    for op in (Op.UNIFORM, Op.NORMAL):
        out.append((op.value, op, [("index9", D.i64, ()), ("index9", D.i64, ())], F, (2, 3),
                    (("stream", 3), ("streams", 4)), [[False, False], [True, True], [True, False], [False, True]]))
    for src, dst in (((3, 4), (2, 6)), ((3, 4), (12,)), ((12,), (3, 2, 2))):
        out.append((f"reshape{dst}", Op.RESHAPE, [("normal", F, src)], F, dst, (), [[False], [True]]))
    out.append(("transpose", Op.TRANSPOSE, [("normal", F, (2, 3, 4))], F, (4, 2, 3), (("perm", (2, 0, 1)),),
                [[False], [True]]))
    for src, dst in (((4,), (3, 4)), ((1, 4), (3, 4)), ((), (2, 3))):
        out.append((f"broadcast{src}", Op.BROADCAST, [("normal", F, src)], F, dst, (), [[False], [True]]))
    for axis, a, b, shape in ((0, (2, 4), (3, 4), (5, 4)), (-1, (3, 2), (3, 4), (3, 6))):
        out.append((f"concat{axis}", Op.CONCAT, [("normal", F, a), ("normal", F, b)], F, shape, (("axis", axis),), TWO))
    for starts, stops, steps, shape in (((1, None), (4, None), (1, -2), (3, 3)), ((-3, 0), (None, 6), (None, 3), (3, 2))):
        out.append((f"slice{starts}{steps}", Op.SLICE, [("normal", F, (5, 6))], F, shape,
                    (("starts", starts), ("stops", stops), ("steps", steps)), [[False], [True]]))
    for axis, idx, shape in ((0, (3,), (3, 4)), (1, (2,), (5, 2)), (1, (2, 3), (5, 2, 3)), (0, (), (4,))):
        n = (5, 4)[axis]
        out.append((f"gather{axis}-{idx}", Op.GATHER, [("normal", F, (5, 4)), (f"index{n}", I32, idx)], F, shape,
                    (("axis", axis),), TWO))
    three = [[False] * 3, [True] * 3, [True, False, False], [False, True, False], [False, False, True]]
    out.append(("scatter_add0", Op.SCATTER_ADD, [("normal", F, (5, 4)), ("index5", I32, (6,)), ("normal", F, (6, 4))],
                F, (5, 4), (("axis", 0),), three))
    out.append(("scatter_add1", Op.SCATTER_ADD, [("normal", F, (3, 5)), ("index5", I32, (4,)), ("normal", F, (3, 4))],
                F, (3, 5), (("axis", 1),), three))
    for kind, values in (("index", "index9"), ("divisor", "small")):  # index9 into 5: some fail, as some zeros
        out.append((f"check-{kind}", Op.CHECK, [("status", D.i64, (3,)), (values, I32, (2, 3))], D.i64, (3,),
                    (("site", 2), ("kind", kind), ("size", 5)), TWO))
    return out


PARAMS = [pytest.param(op, operands, dtype, shape, attrs, pat, id=f"{name}-{''.join('b' if p else 'u' for p in pat)}")
          for name, op, operands, dtype, shape, attrs, pats in cases() for pat in pats]


@pytest.mark.parametrize("op, operands, dtype, shape, attrs, pattern", PARAMS)
def test_op_matches_reference(op, operands, dtype, shape, attrs, pattern):
    prog, request = one_op(op, operands, dtype, shape, attrs, pattern)
    check(prog, request)


def test_op_cases_cover_every_lowered_op():
    covered = {p.values[0] for p in PARAMS} | {Op.CONST, Op.ARG, Op.PROPAGATE, Op.LOOP, Op.ITEM}
    assert set(RULES) <= covered


def test_logsumexp_of_all_minus_infinity_rows():
    prog, request = one_op(Op.LOGSUMEXP, [("normal", F, (3, 4))], F, (3,), (("axis", -1),), [True])
    request.inputs["x0"][:, :, 1] = -np.inf
    want = check(prog, request)
    assert np.isneginf(want.outputs["y"][:, :, 1]).all()


# ---------------------------------------------------------------- PROPAGATE
def csr(rng, n_pre, n_post, p):
    mask = rng.random((n_pre, n_post)) < p
    mask[1] = False  # an empty row
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    return indptr, np.nonzero(mask)[1].astype(np.int32)


def propagate_program(spikes_batched, weights_batched, const_csr, graded, n_pre=30, n_post=20, p=0.3, seed=0,
                      shared=False):
    """post = PROPAGATE(spk, CSR, w); ``shared``: one weight for all synapses (shape ())."""
    rng = np.random.default_rng(seed)
    indptr, indices = csr(rng, n_pre, n_post, p)
    nnz = () if shared else (len(indices),)
    g = GraphBuilder()
    sv = g.arg("spk", "input" if spikes_batched else "param", F, (n_pre,))
    wv = g.arg("w", "state" if weights_batched else "param", F, nnz)
    if const_csr:
        ip, ix = g.const(indptr, I32), g.const(indices, I32)
    else:
        ip, ix = g.arg("indptr", "param", I32, indptr.shape), g.arg("indices", "param", I32, indices.shape)
    y = g.add(Op.PROPAGATE, (sv, ip, ix, wv), F, (n_post,), (("n_post", n_post),))
    s = g.arg("s", "state", F, ())
    g.result("s", "next", s)
    g.result("y", "output", y)
    if weights_batched:
        g.result("w", "next", wv)
    params = [] if spikes_batched else [Var("spk", F, (n_pre,))]
    params += [] if weights_batched else [Var("w", F, nnz)]
    params += [] if const_csr else [Var("indptr", I32, indptr.shape), Var("indices", I32, indices.shape)]
    states = [Var("s", F, ())] + ([Var("w", F, nnz)] if weights_batched else [])
    prog = Program("prop", g.build(), GraphBuilder().build(), tuple(params), tuple(states),
                   (Var("spk", F, (n_pre,)),) if spikes_batched else (), (Var("y", F, (n_post,)),))
    spikes = (rng.random((B, T, n_pre) if spikes_batched else n_pre) < 0.4).astype(np.float32)
    if graded:
        spikes *= rng.uniform(0.5, 2, spikes.shape).astype(np.float32)
    w = rng.normal(0, 1, (B, *nnz) if weights_batched else nnz).astype(np.float32)
    pv = {"indptr": indptr, "indices": indices} if not const_csr else {}
    state = {"s": np.zeros(B, np.float32)}
    pv.update({} if spikes_batched else {"spk": spikes})
    (state if weights_batched else pv)["w"] = w
    return prog, RunRequest(pv, state, {"spk": spikes} if spikes_batched else {}, T)


@pytest.mark.parametrize("propagate", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("const_csr", [True, False], ids=["const", "param"])
@pytest.mark.parametrize("spikes_batched, weights_batched", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["u-u", "b-u", "u-b", "b-b"])
@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-synapse", "shared"])
def test_propagate_matches_reference(propagate, const_csr, spikes_batched, weights_batched, graded, shared):
    prog, request = propagate_program(spikes_batched, weights_batched, const_csr, graded, shared=shared)
    # the event-driven form adds in the reference's order: bit-identical; a dense MatMul may round differently.
    exact = propagate == "sparse" or weights_batched
    check(prog, request, exact=exact, propagate=propagate)
    check(prog, request, exact=True, propagate=propagate, strict=True, modes=("whole-run",))


@pytest.mark.parametrize("bind", [True, False], ids=["bound", "inputs"])
def test_propagate_auto_rule_follows_density(bind):
    def ops(p):
        prog, request = propagate_program(True, False, False, False, p=p)
        model = to_onnx.step_model(prog, bind=request.params if bind else None)
        return {n.op_type for n in model.graph.node}
    assert "MatMul" in ops(0.6) and "NonZero" not in ops(0.6)
    assert "NonZero" in ops(DENSE_MIN_DENSITY / 4) and "MatMul" not in ops(DENSE_MIN_DENSITY / 4)


# ---------------------------------------------------------------- LOOP and ITEM
def loop_program(h_batched, x_batched, until, count=6, nested=False):
    """h <- tanh(0.5 h + x) ``count`` times (or until sum(h) > 1.2 per sample); stacks 2h."""
    body = GraphBuilder()
    h = body.arg("h", "state", F, (4,))
    x = body.arg("x", "input", F, (4,))
    nh = body.add(Op.TANH, (body.add(Op.ADD, (body.add(Op.MUL, (h, body.const(0.5)), F, (4,)), x), F, (4,)),), F, (4,))
    if nested:  # an inner loop that adds x three times
        inner = GraphBuilder()
        a = inner.arg("a", "state", F, (4,))
        inner.result("a", "next", inner.add(Op.ADD, (a, inner.arg("x", "input", F, (4,))), F, (4,)))
        lp = body.add(Op.LOOP, (nh, x), F, (), (("body", inner.build()), ("count", 3), ("carried", ("a",)),
                                                ("invariant", ("x",)), ("stacked", ()), ("until", None)))
        nh = body.add(Op.TANH, (body.add(Op.ITEM, (lp,), F, (4,), (("index", 0),)),), F, (4,))
    body.result("h", "next", nh)
    body.result("y", "output", body.add(Op.MUL, (h, body.const(2.0)), F, (4,)))
    body.result("stop", "value", body.add(Op.GT, (body.add(Op.SUM, (nh,), F, (), (("axes", (0,)), ("keepdims", False))),
                                                   body.const(1.2)), BOOL, ()))
    g = GraphBuilder()
    h0 = g.arg("h0", "input" if h_batched else "param", F, (4,))
    x = g.arg("x", "input" if x_batched else "param", F, (4,))
    lp = g.add(Op.LOOP, (h0, x), F, (), (("body", body.build()), ("count", count), ("carried", ("h",)),
                                          ("invariant", ("x",)), ("stacked", ("y",)), ("until", "stop" if until else None)),
               Span("loop.nspec", 4, 1))
    g.result("h", "output", g.add(Op.ITEM, (lp,), F, (4,), (("index", 0),)))
    g.result("ys", "output", g.add(Op.ITEM, (lp,), F, (count, 4), (("index", 1),)))
    s = g.arg("s", "state", F, ())
    g.result("s", "next", s)
    rng = np.random.default_rng(3)
    # Batched operands differ per sample so that samples stop at different iterations (x = 0.1
    # never reaches the threshold, x = 0.4 after one iteration; h0 = 0.8 stops sooner than -0.8).
    centre = {"h0": (np.array([-0.8, 0.0, 0.8]) if not x_batched else np.zeros(B), 0.0),
              "x": (np.array([0.1, 0.2, 0.4]), 0.2)}
    pv, iv, inputs, params = {}, {}, [], []
    for name, batched in (("h0", h_batched), ("x", x_batched)):
        (inputs if batched else params).append(Var(name, F, (4,)))
        per_sample, single = centre[name]
        shape = (B, T, 4) if batched else (4,)
        value = (per_sample[:, None, None] if batched else single) + rng.uniform(-0.01, 0.01, shape)
        (iv if batched else pv)[name] = value.astype(np.float32)
    prog = Program("loop", g.build(), GraphBuilder().build(), tuple(params), (Var("s", F, ()),), tuple(inputs),
                   (Var("h", F, (4,)), Var("ys", F, (count, 4))))
    ir.verify_program(prog)
    return prog, RunRequest(pv, {"s": np.zeros(B, np.float32)}, iv, T)


@pytest.mark.parametrize("until", [False, True], ids=["fixed", "until"])
@pytest.mark.parametrize("h_batched, x_batched", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["u-u", "b-u", "u-b", "b-b"])
def test_loop_matches_reference(h_batched, x_batched, until):
    prog, request = loop_program(h_batched, x_batched, until)
    want = check(prog, request)
    ys = want.outputs["ys"][:, 0]
    # iterations that changed the stacked value, per sample: < 5 once a sample has stopped
    moving = [int(np.any(ys[b, 1:] != ys[b, :-1], axis=-1).sum()) for b in range(B)]
    if not until:
        assert moving == [5] * B
    elif h_batched or x_batched:
        assert len(set(moving)) == B  # each sample stopped at its own iteration
    else:
        assert moving[0] < 5  # the loop ended early


@pytest.mark.parametrize("count", [0, 1])
def test_loop_edge_counts(count):
    prog, request = loop_program(True, True, True, count=count)
    check(prog, request)


def test_nested_loop():
    prog, request = loop_program(True, False, True, nested=True)
    check(prog, request)


# ---------------------------------------------------------------- whole programs over many steps
def leaky_program(n=16):
    """v <- a v + W x (a leaky integrator with a dense input projection); outputs v."""
    g = GraphBuilder()
    v, x = g.arg("v", "state", F, (n,)), g.arg("x", "input", F, (8,))
    a, w = g.arg("a", "param", F, (n,)), g.arg("w", "param", F, (8, n))
    drive = g.add(Op.EINSUM, (x, w), F, (n,), (("equation", "i,ij->j"),))
    nv = g.add(Op.ADD, (g.add(Op.MUL, (a, v), F, (n,)), drive), F, (n,))
    g.result("v", "next", nv)
    g.result("y", "output", nv)
    prog = Program("leaky", g.build(), GraphBuilder().build(), (Var("a", F, (n,)), Var("w", F, (8, n))),
                   (Var("v", F, (n,)),), (Var("x", F, (8,)),), (Var("y", F, (n,)),), hyper=(("n", n),))
    rng = np.random.default_rng(5)
    return prog, {"a": rng.uniform(0.8, 0.99, n).astype(np.float32), "w": rng.normal(0, 0.3, (8, n)).astype(np.float32)}


def lif_program(n=60, p=0.15, seed=0):
    """v' = a v + PROPAGATE(spikes) + I; spike = SPIKE(v' - th); reset v' to 0 where it spiked."""
    rng = np.random.default_rng(seed)
    indptr, indices = csr(rng, n, n, p)
    w = rng.normal(0.12, 0.25, len(indices)).astype(np.float32)
    g = GraphBuilder()
    at = lambda line: Span("lif.nspec", line, 3)  # noqa: E731
    v, s = g.arg("P/v", "state", F, (n,), span=at(2)), g.arg("P/s", "state", F, (n,), span=at(3))
    i_in, a = g.arg("I", "input", F, (n,), span=at(4)), g.arg("a", "param", F, (), span=at(5))
    syn = g.add(Op.PROPAGATE, (s, g.const(indptr, I32), g.const(indices, I32), g.arg("w", "param", F, w.shape)),
                F, (n,), (("n_post", n),), span=at(8))
    av = g.add(Op.MUL, (a, v), F, (n,), span=at(9))
    v1 = g.add(Op.ADD, (g.add(Op.ADD, (av, syn), F, (n,), span=at(9)), i_in), F, (n,), span=at(10))
    spike = g.add(Op.SPIKE, (g.add(Op.SUB, (v1, g.const(1.0)), F, (n,), span=at(11)),), F, (n,),
                  (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))), span=at(11))
    fired = g.add(Op.GT, (spike, g.const(0.0)), BOOL, (n,), span=at(12))
    g.result("P/v", "next", g.add(Op.WHERE, (fired, g.const(0.0), v1), F, (n,), span=at(12)))
    g.result("P/s", "next", spike)
    g.result("P/spikes", "value", spike)
    prog = Program("lif", g.build(), GraphBuilder().build(), (Var("a", F, ()), Var("w", F, w.shape)),
                   (Var("P/v", F, (n,)), Var("P/s", F, (n,))), (Var("I", F, (n,)),), (),
                   hyper=(("n", n), ("p", p)), dt=1e-3)
    ir.verify_program(prog)
    return prog, {"a": np.float32(0.92), "w": w}


def lif_request(prog, params, steps=200, batch=2, record=(("P/spikes", 1), ("P/v", 3))):
    n = prog.states[0].shape[0]
    rng = np.random.default_rng(11)
    state = {"P/v": rng.uniform(0, 1, (batch, n)).astype(np.float32), "P/s": np.zeros((batch, n), np.float32)}
    # inputs cover more steps than the run: each step must read its own column
    drive = rng.uniform(0, 0.25, (batch, steps + 7, n)).astype(np.float32)
    return RunRequest(params, state, {"I": drive}, steps, record)


def test_leaky_integrator_200_steps():
    prog, params = leaky_program()
    rng = np.random.default_rng(6)
    request = RunRequest(params, {"v": rng.normal(0, 1, (4, 16)).astype(np.float32)},
                         {"x": rng.normal(0, 1, (4, 200, 8)).astype(np.float32)}, 200, (("v", 5),))
    check(prog, request)


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_spiking_program_200_steps_identical_spikes(strict):
    prog, params = lif_program()
    request = lif_request(prog, params)
    want = check(prog, request, exact=True, strict=strict)
    spikes = want.records["P/spikes"]
    assert 0.02 < spikes.mean() < 0.5  # it does spike, and not every step
    assert not np.array_equal(spikes[:, 0], spikes[:, 1])  # the two trials differ


def test_unbound_params_and_dynamic_steps_match_bound():
    prog, params = lif_program()
    request = lif_request(prog, params, steps=50)
    check(prog, request, exact=True, bind_params=False)


def test_step_streaming_keeps_state_between_calls():
    prog, params = lif_program()
    request = lif_request(prog, params, steps=20)
    want = ReferenceExecutor(prog).run(request)
    ex = OnnxExecutor(prog, mode="step")
    ex.reset(params, request.state)
    for t in range(20):
        got = ex.step({"I": request.inputs["I"][:, t]}, ("P/spikes",))
        np.testing.assert_array_equal(got["record/P/spikes"], want.records["P/spikes"][t])
    np.testing.assert_array_equal(ex.state["P/v"], want.state["P/v"])


def test_zero_steps_returns_the_state():
    prog, params = lif_program()
    request = lif_request(prog, params, steps=0)
    check(prog, request, exact=True)


def test_strict_turns_graph_optimisations_off():
    import onnxruntime as ort

    prog, params = lif_program()
    levels = {}
    for strict in (False, True):
        sess = to_onnx.session(to_onnx.step_model(prog), strict=strict)
        levels[strict] = sess.get_session_options().graph_optimization_level
    assert levels == {False: ort.GraphOptimizationLevel.ORT_ENABLE_ALL, True: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


# ---------------------------------------------------------------- the models as artifacts
def models():
    lif, lif_params = lif_program()
    loop, _ = loop_program(True, False, True, nested=True)
    op, _ = one_op(Op.GATHER, [("normal", F, (5, 4)), ("index4", I32, (2, 3))], F, (5, 2, 3), (("axis", 1),), [True, True])
    return [("lif", lif, lif_params), ("loop", loop, None), ("gather", op, None)]


@pytest.mark.parametrize("name, prog, params", models(), ids=lambda v: v if isinstance(v, str) else "")
def test_checker_and_shape_inference_pass(name, prog, params):
    for model in (to_onnx.step_model(prog), to_onnx.run_model(prog, 10, [("s", 2)] if name != "lif" else [("P/v", 2)]),
                  to_onnx.run_model(prog, None, bind=params), to_onnx.step_model(prog, bind=params)):
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        for out in inferred.graph.output:
            assert "B" in [d.dim_param for d in out.type.tensor_type.shape.dim], out.name


def test_names_spans_and_metadata():
    prog, params = lif_program()
    model = to_onnx.run_model(prog, 100, [("P/spikes", 1)])
    props = {p.key: p.value for p in model.metadata_props}
    assert props["nspec.program_sha256"] == hashlib.sha256(ir.print_program(prog).encode()).hexdigest()
    assert props["nspec.version"] == __import__("nspec").__version__
    assert json.loads(props["nspec.hyper"]) == {"n": 60, "p": 0.15}
    sig = json.loads(props["nspec.signature"])
    assert [(e["name"], e["role"]) for e in sig["inputs"]] == [("a", "param"), ("w", "param"), ("P/v", "state"),
                                                               ("P/s", "state"), ("I", "input")]
    assert {e["name"]: e["shape"] for e in sig["outputs"]} == {"next/P/v": ["B", 60], "next/P/s": ["B", 60],
                                                              "record/P/spikes": [100, "B", 60]}
    body = next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g
    spans = {n.name: n.doc_string for n in body.node}
    prop = [k for k in spans if k.startswith("step/propagate_") and k.endswith("@lif.nspec:8:3")]
    assert prop and spans[prop[0]] == "lif.nspec:8:3"
    assert any(k.startswith("step/spike_") and "@lif.nspec:11:3" in k for k in spans)


def test_export_never_overwrites_and_writes_external_data(tmp_path):
    prog, params = lif_program()
    path = tmp_path / "lif.onnx"
    to_onnx.export(prog, path, mode="step")
    with pytest.raises(FileExistsError):
        to_onnx.export(prog, path, mode="whole-run")
    to_onnx.export(prog, path, mode="whole-run", steps=30, force=True)
    assert onnx.load(str(path)).metadata_props
    big = tmp_path / "big.onnx"
    to_onnx.export(prog, big, external_data=True, params=params)
    # the weights (folded into padded tables) live in the data file, not in the model
    assert (tmp_path / "big.onnx.data").stat().st_size >= params["w"].nbytes
    assert params["w"][:64].tobytes() not in big.read_bytes()
    onnx.checker.check_model(str(big), full_check=True)
    with pytest.raises(BackendError):
        to_onnx.export(prog, tmp_path / "x.onnx", mode="weird")


FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np, onnxruntime as ort
    model, feeds, out = sys.argv[1:4]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    sig = json.loads(sess.get_modelmeta().custom_metadata_map["nspec.signature"])
    data = np.load(feeds)
    got = sess.run(None, {e["name"]: data[e["name"]] for e in sig["inputs"]})
    assert not any(m == "nspec" or m.startswith("nspec.") for m in sys.modules)
    np.savez(out, **{o.name.replace("/", "|"): v for o, v in zip(sess.get_outputs(), got)})
""")


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_exported_model_runs_in_a_fresh_process_without_nspec(tmp_path, external):
    prog, params = lif_program()
    request = lif_request(prog, params, steps=40)
    path = tmp_path / "model.onnx"
    to_onnx.export(prog, path, mode="whole-run", record=request.record, external_data=external)
    feeds = {**params, **request.state, **request.inputs, "@steps": np.int64(request.steps)}
    np.savez(tmp_path / "feeds.npz", **feeds)
    script = tmp_path / "run.py"
    script.write_text(FRESH)
    done = subprocess.run([sys.executable, "-I", str(script), str(path), str(tmp_path / "feeds.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    out = {k.replace("|", "/"): v for k, v in np.load(tmp_path / "out.npz").items()}
    got = OnnxExecutor(prog, bind_params=False).run(request)
    want = ReferenceExecutor(prog).run(request)
    for k in want.state:
        np.testing.assert_array_equal(out[f"next/{k}"], got.state[k])
        np.testing.assert_array_equal(out[f"next/{k}"], want.state[k])
    for k in want.records:
        np.testing.assert_array_equal(out[f"record/{k}"], got.records[k])
        np.testing.assert_array_equal(out[f"record/{k}"], want.records[k])


# ---------------------------------------------------------------- errors
def test_bad_options_and_undiscretised_programs():
    prog, _ = lif_program()
    for options in ({"mode": "sometimes"}, {"propagate": "magic"}, {"stirct": True}):
        with pytest.raises(BackendError):
            OnnxExecutor(prog, **options)
    g = GraphBuilder()
    v = g.arg("v", "state", F, ())
    g.result("v", "deriv", g.add(Op.NEG, (v,), F, ()))
    ode = Program("ode", g.build(), GraphBuilder().build(), (), (Var("v", F, (), Span("ode.nspec", 2, 9)),), (), ())
    with pytest.raises(NspecError, match=r"ode\.nspec:2:9: error: state 'v'"):
        to_onnx.step_model(ode)
    with pytest.raises(BackendError, match="cannot record 'nothing'"):
        to_onnx.run_model(prog, 5, [("nothing", 1)])


# ---------------------------------------------------------------- the seed models, compiled from their specs
SEEDS = [("specs/seeds/bdh.nspec", {"n_layer": 2, "n_embd": 32, "n_head": 2, "mlp_internal_dim_multiplier": 4,
                                    "vocab_size": 32}),
         ("specs/seeds/ctm.nspec", {}),
         ("specs/seeds/elm.nspec", {"num_input": 64, "num_memory": 16})]


@pytest.mark.parametrize("path, hyper", SEEDS, ids=["bdh", "ctm", "elm"])
def test_seed_models_match_reference(path, hyper):
    """Whole compiled models: contractions over many terms add in another order than numpy's, so
    the tolerance is relative to each array's largest magnitude (see the to_onnx docstring)."""
    import nspec

    model = nspec.load(path, **hyper)
    prog = model.program
    params, state = model.initial(2, None)
    rng = np.random.default_rng(0)
    inputs = {v.name: (rng.normal(0, 1, (2, 4, *v.shape)) if v.dtype.is_float else rng.integers(0, 2, (2, 4, *v.shape)))
              .astype(v.dtype.numpy) for v in prog.inputs}
    request = RunRequest(params, state, inputs, 4)
    want = ReferenceExecutor(prog).run(request)
    for mode in MODES:
        got = OnnxExecutor(prog, mode=mode).run(request)
        for group in ("state", "outputs"):
            for k, w in getattr(want, group).items():
                g = getattr(got, group)[k]
                assert g.shape == w.shape and g.dtype == w.dtype, k
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())), err_msg=k)
