"""The reference interpreter against direct NumPy (and torch) computations, op by op.

Every single-op case runs under every pattern of batched operands: a batched evaluation must give,
for each trial b, the op applied to trial b's operands (the batching rule of compiler/ir.py).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nspec.compiler.ir import DType, Graph, GraphBuilder, IRError, Monitor, Node, Op, Program, Result, Var
from nspec.compiler.ops import CONTINUOUS
from nspec.dsl.diagnostics import Span
from nspec.runtime.executor import BackendError, RunRequest
from nspec.runtime.reference import RULES, EvaluationError, ReferenceExecutor, evaluate, initialize

B = 3
f32, f64, i64, boolean = DType.f32, DType.f64, DType.i64, DType.bool
DTYPES = {d.numpy: d for d in DType}


def rand(*shape, lo=-2.0, hi=2.0, seed=0):
    """[B, *shape] float32 values, one per trial."""
    return np.random.default_rng(seed).uniform(lo, hi, (B,) + shape).astype(np.float32)


def bools(*shape, seed=0):
    return np.random.default_rng(seed).random((B,) + shape) < 0.5


def ints(*shape, lo=0, hi=5, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, (B,) + shape).astype(np.int64)


def op_graph(op: Op, operands, dtype: DType, shape, attrs=(), flags=None) -> Graph:
    """A graph computing one ``op`` node from ARGs a0, a1, ...; batched ones are inputs, others params."""
    flags = flags or [False] * len(operands)
    g = GraphBuilder()
    ins = [g.arg(f"a{k}", "input" if b else "param", DTYPES[x.dtype], x.shape[1:])
           for k, (x, b) in enumerate(zip(operands, flags))]
    g.result("y", "output", g.add(op, ins, dtype, shape, attrs))
    return g.build()


def check(op: Op, operands, dtype: DType, shape, fn, attrs=(), rtol=1e-5, atol=1e-6, unbatched=()):
    """``op`` on trial-indexed ``operands`` ([B, ...] each) against ``fn``, under every batched pattern
    (operands whose position is in ``unbatched`` are never batched)."""
    patterns = itertools.product(*[[False] if k in unbatched else [False, True] for k in range(len(operands))])
    for flags in patterns:
        graph = op_graph(op, operands, dtype, shape, attrs, list(flags))
        env = {f"a{k}": x if b else x[0] for k, (x, b) in enumerate(zip(operands, flags))}
        got = evaluate(graph, env, batch=B if any(flags) else None)[("y", "output")]
        trials = range(B) if any(flags) else [0]
        want = np.stack([np.asarray(fn(*[x[t] if b else x[0] for x, b in zip(operands, flags)]))
                         for t in trials])
        if not any(flags):
            want = want[0]
        assert got.dtype == dtype.numpy, (op, flags, got.dtype)
        assert got.shape == want.shape, (op, flags, got.shape, want.shape)
        if dtype.is_float:
            np.testing.assert_allclose(got, want.astype(np.float64), rtol=rtol, atol=atol, err_msg=f"{op} {flags}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {flags}")


def test_every_op_has_a_rule():
    assert set(Op) - CONTINUOUS == set(RULES)  # INTEGRATE is discretised before any backend


# ---------------------------------------------------------------- elementwise
BINARY = [
    (Op.ADD, lambda a, b: a + b), (Op.SUB, lambda a, b: a - b), (Op.MUL, lambda a, b: a * b),
    (Op.DIV, lambda a, b: a / b), (Op.MAXIMUM, lambda a, b: np.where(a > b, a, b)),
    (Op.MINIMUM, lambda a, b: np.where(a < b, a, b)),
]


@pytest.mark.parametrize("op,fn", BINARY, ids=[o.name for o, _ in BINARY])
@pytest.mark.parametrize("sa,sb,out", [((2, 3), (2, 3), (2, 3)), ((3,), (2, 3), (2, 3)), ((2, 1), (3,), (2, 3)),
                                       ((), (4,), (4,))])
def test_arithmetic_broadcasts_per_sample(op, fn, sa, sb, out):
    check(op, [rand(*sa, seed=1), rand(*sb, lo=0.5, hi=3.0, seed=2)], f32, out, fn)


def test_pow_mod_div_semantics():
    check(Op.POW, [rand(2, 3, lo=0.1, hi=3.0), rand(3, lo=-2, hi=2, seed=3)], f32, (2, 3),
          lambda a, b: np.exp(b.astype(np.float64) * np.log(a.astype(np.float64))))
    # mod takes the divisor's sign (Python semantics), whatever the dividend's
    check(Op.MOD, [rand(4, lo=-7, hi=7), rand(4, lo=1, hi=3, seed=5) * np.float32(-1)], f32, (4,),
          lambda a, b: a - b * np.floor(a / b), rtol=1e-4, atol=1e-5)
    check(Op.DIV, [ints(3, lo=-9, hi=9).astype(np.float32), np.full((B, 3), 4, np.float32)], f32, (3,),
          lambda a, b: a / 4.0)


COMPARE = [(Op.LT, lambda a, b: a < b), (Op.LE, lambda a, b: a <= b), (Op.GT, lambda a, b: a > b),
           (Op.GE, lambda a, b: a >= b), (Op.EQ, lambda a, b: a == b), (Op.NE, lambda a, b: a != b)]


@pytest.mark.parametrize("op,fn", COMPARE, ids=[o.name for o, _ in COMPARE])
def test_comparisons_give_bool(op, fn):
    # small integers as floats, so that ties occur
    check(op, [ints(2, 3, seed=1).astype(np.float32), ints(3, seed=2).astype(np.float32)], boolean, (2, 3), fn)


def test_logic():
    check(Op.AND, [bools(2, 3, seed=1), bools(3, seed=2)], boolean, (2, 3), lambda a, b: a & b)
    check(Op.OR, [bools(2, 3, seed=1), bools(3, seed=2)], boolean, (2, 3), lambda a, b: a | b)
    check(Op.NOT, [bools(4)], boolean, (4,), lambda a: ~a)
    check(Op.WHERE, [bools(2, 3), rand(3, seed=1), rand(seed=2)], f32, (2, 3),
          lambda c, a, b: [[a[j] if c[i, j] else b for j in range(3)] for i in range(2)])


def test_cast_and_spike():
    check(Op.CAST, [rand(5, lo=-3, hi=3)], i64, (5,), lambda a: np.trunc(a).astype(np.int64))
    check(Op.CAST, [bools(5)], f32, (5,), lambda a: np.array([1.0 if v else 0.0 for v in a]))
    x = rand(6)
    x[:, 0] = 0.0  # heaviside(0) is 0: a spike needs x > 0
    check(Op.SPIKE, [x], f32, (6,), lambda a: np.array([1.0 if v > 0 else 0.0 for v in a]),
          attrs=(("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))


UNARY = [
    (Op.NEG, lambda x: -x), (Op.ABS, lambda x: np.sqrt(x * x)), (Op.EXP, lambda x: np.e ** x),
    (Op.TANH, lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1)), (Op.SIGMOID, lambda x: 1 / (1 + np.exp(-x))),
    (Op.RELU, lambda x: x * (x > 0)), (Op.SILU, lambda x: x / (1 + np.exp(-x))),
    (Op.SOFTPLUS, lambda x: np.logaddexp(0, x)), (Op.SIN, lambda x: np.imag(np.exp(1j * x))),
    (Op.COS, lambda x: np.real(np.exp(1j * x))), (Op.FLOOR, lambda x: x - np.mod(x, 1.0)),
    (Op.ERF, np.vectorize(math.erf)),  # the standard library's, not SciPy's (the oracle's)
    (Op.STOP_GRADIENT, lambda x: x),  # the identity forward; its zero gradient: tests/test_torch_lowering.py
]


@pytest.mark.parametrize("op,fn", UNARY, ids=[o.name for o, _ in UNARY])
def test_unary_functions(op, fn):
    check(op, [rand(2, 4, lo=-4, hi=4)], f32, (2, 4), lambda x: fn(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_log_and_sqrt():
    check(Op.LOG, [rand(5, lo=0.01, hi=9)], f32, (5,), lambda x: np.log2(x.astype(np.float64)) / np.log2(np.e))
    check(Op.SQRT, [rand(5, lo=0, hi=9)], f32, (5,), lambda x: x.astype(np.float64) ** 0.5)


def test_sigmoid_and_softplus_are_stable_at_extremes():
    x = np.array([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], np.float32)
    sig = evaluate(op_graph(Op.SIGMOID, [x[None]], f32, (7,)), {"a0": x})[("y", "output")]
    sp = evaluate(op_graph(Op.SOFTPLUS, [x[None]], f32, (7,)), {"a0": x})[("y", "output")]
    assert np.all(np.isfinite(sig)) and np.all(np.isfinite(sp))
    np.testing.assert_allclose(sig, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sp, torch.nn.functional.softplus(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-30)


# ---------------------------------------------------------------- reductions and normalisations
@pytest.mark.parametrize("op,fn", [(Op.SUM, np.sum), (Op.MEAN, np.mean), (Op.MAX, np.max), (Op.MIN, np.min)],
                         ids=["SUM", "MEAN", "MAX", "MIN"])
@pytest.mark.parametrize("axes,keep", [((0,), False), ((1,), True), ((0, 2), False), ((0, 1, 2), True)])
def test_reductions(op, fn, axes, keep):
    x = rand(2, 3, 4)
    shape = tuple(1 if a in axes else s for a, s in enumerate((2, 3, 4)) if keep or a not in axes)
    check(op, [x], f32, shape, lambda v: fn(v.astype(np.float64), axis=axes, keepdims=keep),
          attrs=(("axes", axes), ("keepdims", keep)))


def test_argmax_softmax_logsumexp():
    x = rand(3, 4, lo=-5, hi=5)
    check(Op.ARGMAX, [x], i64, (3,), lambda v: [int(np.argmax(row)) for row in v], attrs=(("axis", 1),))
    check(Op.ARGMAX, [x], i64, (4,), lambda v: [int(np.argmax(col)) for col in v.T], attrs=(("axis", 0),))
    for axis in (0, 1, -1):
        want = lambda v: torch.softmax(torch.from_numpy(v).double(), dim=axis).numpy()
        check(Op.SOFTMAX, [x], f32, (3, 4), want, attrs=(("axis", axis),))
    check(Op.LOGSUMEXP, [x], f32, (3,), lambda v: torch.logsumexp(torch.from_numpy(v).double(), 1).numpy(),
          attrs=(("axis", 1),))
    check(Op.LOGSUMEXP, [x], f32, (4,), lambda v: torch.logsumexp(torch.from_numpy(v).double(), 0).numpy(),
          attrs=(("axis", 0),))


def test_softmax_and_logsumexp_extremes():
    x = np.array([[1000.0, 1000.0], [-np.inf, -np.inf], [-np.inf, 3.0]], np.float32)
    lse = evaluate(op_graph(Op.LOGSUMEXP, [x[None]], f32, (3,), (("axis", 1),)), {"a0": x})[("y", "output")]
    np.testing.assert_allclose(lse, [1000 + np.log(2), -np.inf, 3.0], rtol=1e-6)
    sm = evaluate(op_graph(Op.SOFTMAX, [x[:1][None]], f32, (1, 2), (("axis", 1),)), {"a0": x[:1]})[("y", "output")]
    np.testing.assert_allclose(sm, [[0.5, 0.5]])


def test_layernorm_matches_torch():
    x, w, b = rand(2, 5, lo=-3, hi=3), rand(5, seed=1), rand(5, seed=2)
    for eps in (1e-5, 1e-2):
        def ln(*args):
            t = [torch.from_numpy(a).double() for a in args]
            return torch.nn.functional.layer_norm(t[0], (5,), *t[1:], eps=eps).numpy()
        check(Op.LAYERNORM, [x], f32, (2, 5), ln, attrs=(("eps", eps),), rtol=1e-4, atol=1e-5)
        check(Op.LAYERNORM, [x, w], f32, (2, 5), ln, attrs=(("eps", eps),), rtol=1e-4, atol=1e-5)
        check(Op.LAYERNORM, [x, w, b], f32, (2, 5), ln, attrs=(("eps", eps),), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- contractions
def test_einsum_with_batched_operands():
    x, W = rand(4), rand(2, 4, 5, seed=1)
    check(Op.EINSUM, [x, W], f32, (2, 5), lambda a, w: np.tensordot(a, w, axes=([0], [1])),
          attrs=(("equation", "d,hdn->hn"),))
    a, b = rand(2, 3), rand(3, 4, seed=1)
    check(Op.EINSUM, [a, b], f32, (2, 4), lambda p, q: p @ q, attrs=(("equation", "ij,jk->ik"),))
    check(Op.EINSUM, [a, b], f32, (4, 2), lambda p, q: (p @ q).T, attrs=(("equation", "ij,jk->ki"),))
    check(Op.EINSUM, [a, rand(5, seed=2)], f32, (2, 3, 5), lambda p, q: p[:, :, None] * q,
          attrs=(("equation", "ij,k->ijk"),))
    check(Op.EINSUM, [a], f32, (2,), lambda p: p.sum(1), attrs=(("equation", "ij->i"),))
    # an equation that already uses the letters a batch axis could take
    check(Op.EINSUM, [a, b], f32, (2, 4), lambda p, q: p @ q, attrs=(("equation", "ab,bc->ac"),))


# ---------------------------------------------------------------- shape and indexing
def test_reshape_broadcast_transpose():
    x = rand(2, 3)
    check(Op.RESHAPE, [x], f32, (3, 2), lambda v: np.array(v.ravel().tolist()).reshape(3, 2))
    check(Op.RESHAPE, [x], f32, (6,), lambda v: np.array(v.ravel().tolist()))
    check(Op.BROADCAST, [rand(3)], f32, (2, 3), lambda v: np.stack([v, v]))
    check(Op.BROADCAST, [rand(2, 1)], f32, (2, 3), lambda v: np.concatenate([v, v, v], axis=1))
    check(Op.BROADCAST, [rand()], f32, (2, 2), lambda v: np.full((2, 2), v))
    y = rand(2, 3, 4)
    check(Op.TRANSPOSE, [y], f32, (3, 2, 4), lambda v: np.swapaxes(v, 0, 1), attrs=(("perm", (1, 0, 2)),))
    check(Op.TRANSPOSE, [y], f32, (4, 2, 3), lambda v: np.moveaxis(v, 2, 0), attrs=(("perm", (2, 0, 1)),))


def test_concat_and_slice():
    check(Op.CONCAT, [rand(2, 3), rand(1, 3, seed=1)], f32, (3, 3), lambda a, b: np.vstack([a, b]),
          attrs=(("axis", 0),))
    check(Op.CONCAT, [rand(2, 3), rand(2, 2, seed=1), rand(2, 1, seed=2)], f32, (2, 6),
          lambda *v: np.hstack(v), attrs=(("axis", 1),))
    check(Op.CONCAT, [rand(2, 3), rand(2, 2, seed=1)], f32, (2, 5), lambda *v: np.hstack(v), attrs=(("axis", -1),))
    x = rand(6, 5)
    check(Op.SLICE, [x], f32, (2, 3), lambda v: v[[1, 3]][:, [0, 1, 2]],
          attrs=(("starts", (1, 0)), ("stops", (5, 3)), ("steps", (2, 1))))
    check(Op.SLICE, [x], f32, (6, 2), lambda v: v[:, [4, 2]],
          attrs=(("starts", (0, 4)), ("stops", (6, 1)), ("steps", (1, -2))))


def test_gather():
    x = rand(5, 3)
    idx = ints(4, lo=0, hi=5, seed=7)
    check(Op.GATHER, [x, idx], f32, (4, 3), lambda v, i: np.array([v[k] for k in i]), attrs=(("axis", 0),))
    idx2 = ints(2, 2, lo=0, hi=3, seed=8)
    check(Op.GATHER, [x, idx2], f32, (5, 2, 2), lambda v, i: np.array([[[row[i[a, b]] for b in range(2)]
                                                                          for a in range(2)] for row in v]),
          attrs=(("axis", 1),))
    scalar = ints(lo=0, hi=5, seed=9)
    check(Op.GATHER, [x, scalar], f32, (3,), lambda v, i: v[int(i)], attrs=(("axis", 0),))
    y = rand(2, 5, 3)
    check(Op.GATHER, [y, idx], f32, (2, 4, 3), lambda v, i: np.stack([[v[a, k] for k in i] for a in range(2)]),
          attrs=(("axis", 1),))


def scatter_loop(base, idx, values, axis):
    out = np.array(base, dtype=np.float64)
    for k, j in enumerate(idx):
        dst = [slice(None)] * out.ndim
        src = [slice(None)] * out.ndim
        dst[axis], src[axis] = j, k
        out[tuple(dst)] += values[tuple(src)]
    return out


def test_scatter_add_accumulates_repeated_indices():
    idx = np.array([[0, 2, 0, 4], [1, 1, 1, 3], [4, 3, 2, 1]], np.int64)
    check(Op.SCATTER_ADD, [rand(5, 3), idx, rand(4, 3, seed=1)], f32, (5, 3),
          lambda b, i, v: scatter_loop(b, i, v, 0), attrs=(("axis", 0),))
    idx1 = np.array([[0, 0, 4], [2, 1, 2], [3, 3, 3]], np.int64)
    check(Op.SCATTER_ADD, [rand(2, 5), idx1, rand(2, 3, seed=1)], f32, (2, 5),
          lambda b, i, v: scatter_loop(b, i, v, 1), attrs=(("axis", 1),))


# ---------------------------------------------------------------- propagation
def random_csr(n_pre, n_post, p, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_pre, n_post)) < p
    # a repeated target within a row (a multi-synapse) must add up
    rows = [np.concatenate([np.flatnonzero(m), np.flatnonzero(m)[:1]]) for m in mask]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate(rows).astype(np.int64)


def dense(indptr, indices, weights, n_pre, n_post):
    W = np.zeros((n_pre, n_post))
    for i in range(n_pre):
        for k in range(indptr[i], indptr[i + 1]):
            W[i, indices[k]] += weights if np.ndim(weights) == 0 else weights[k]
    return W


@pytest.mark.parametrize("spike_kind", ["bool", "float"])
@pytest.mark.parametrize("weight_kind", ["vector", "scalar"])
def test_propagate_matches_dense_matrix(spike_kind, weight_kind):
    n_pre, n_post = 30, 20
    indptr, indices = random_csr(n_pre, n_post, 0.2, seed=1)
    nnz = len(indices)
    spikes = bools(n_pre, seed=2) if spike_kind == "bool" else rand(n_pre, seed=2) * bools(n_pre, seed=3)
    spikes[:, :3] = 0  # some silent rows, and a silent first row
    weights = rand(nnz, seed=4) if weight_kind == "vector" else rand(seed=4)
    ip, ix = np.broadcast_to(indptr, (B,) + indptr.shape), np.broadcast_to(indices, (B,) + indices.shape)
    check(Op.PROPAGATE, [spikes, ip, ix, weights], f32, (n_post,),
          lambda s, p, i, w: s.astype(np.float64) @ dense(p, i, w, n_pre, n_post), attrs=(("n_post", n_post),),
          rtol=1e-5, atol=1e-5, unbatched=(1, 2))


def test_propagate_with_no_spikes_is_zero():
    indptr, indices = random_csr(8, 6, 0.5, seed=1)
    g = op_graph(Op.PROPAGATE, [np.zeros((1, 8), bool), indptr[None], indices[None], rand(len(indices))[:1]],
                 f32, (6,), (("n_post", 6),))
    out = evaluate(g, {"a0": np.zeros(8, bool), "a1": indptr, "a2": indices, "a3": np.ones(len(indices), np.float32)})
    np.testing.assert_array_equal(out[("y", "output")], np.zeros(6, np.float32))


# ---------------------------------------------------------------- loops
def loop_node(g, inits, body, count, carried, invariant, stacked, until=None):
    attrs = (("body", body), ("count", count), ("carried", carried), ("invariant", invariant),
             ("stacked", stacked), ("until", until))
    return g.add(Op.LOOP, inits, f32, (), attrs)


def test_loop_carried_invariant_stacked():
    body = GraphBuilder()
    x, a = body.arg("x", "state", f32, (2,)), body.arg("a", "input", f32, (2,))
    body.result("x", "next", body.add(Op.ADD, (body.add(Op.MUL, (x, a), f32, (2,)), body.const(1.0)), f32, (2,)))
    body.result("y", "output", body.add(Op.MUL, (x, body.const(2.0)), f32, (2,)))
    body = body.build()
    for x_role, a_role in [("state", "param"), ("param", "input"), ("param", "param"), ("state", "input")]:
        g = GraphBuilder()
        x0, a0 = g.arg("x0", x_role, f32, (2,)), g.arg("a", a_role, f32, (2,))
        loop = loop_node(g, (x0, a0), body, 4, ("x",), ("a",), ("y",))
        g.result("x", "output", g.add(Op.ITEM, (loop,), f32, (2,), (("index", 0),)))
        g.result("ys", "output", g.add(Op.ITEM, (loop,), f32, (4, 2), (("index", 1),)))
        xs, as_ = rand(2, seed=1), rand(2, seed=2)
        batch = x_role == "state" or a_role == "input"
        env = {"x0": xs if x_role == "state" else xs[0], "a": as_ if a_role == "input" else as_[0]}
        out = evaluate(g.build(), env, batch=B if batch else None)
        for t in range(B if batch else 1):
            xv = (xs[t] if x_role == "state" else xs[0]).astype(np.float64)
            av = (as_[t] if a_role == "input" else as_[0]).astype(np.float64)
            ys = []
            for _ in range(4):
                ys.append(2 * xv)
                xv = xv * av + 1
            got_x = out[("x", "output")][t] if batch else out[("x", "output")]
            got_ys = out[("ys", "output")][t] if batch else out[("ys", "output")]
            np.testing.assert_allclose(got_x, xv, rtol=1e-5)
            np.testing.assert_allclose(got_ys, np.array(ys), rtol=1e-5)


def until_body():
    body = GraphBuilder()
    x, thr = body.arg("x", "state", f32, ()), body.arg("thr", "input", f32, ())
    x1 = body.add(Op.ADD, (x, body.const(1.0)), f32, ())
    body.result("x", "next", x1)
    body.result("y", "output", body.add(Op.MUL, (x1, body.const(10.0)), f32, ()))
    body.result("stop", "value", body.add(Op.GE, (x1, thr), boolean, ()))
    return body.build()


def until_reference(thr: float, count: int):
    """The docstring's semantics, one sample at a time: run, collect, then freeze once the condition held."""
    x, ys, done = 0.0, [], False
    for _ in range(count):
        if done:
            ys.append(ys[-1])
            continue
        x1 = x + 1
        ys.append(10 * x1)
        done = x1 >= thr
        x = x1
    return x, ys


def test_loop_until_freezes_each_sample():
    g = GraphBuilder()
    thr = g.arg("thr", "input", f32, ())
    loop = loop_node(g, (g.const(0.0), thr), until_body(), 6, ("x",), ("thr",), ("y",), until="stop")
    g.result("x", "output", g.add(Op.ITEM, (loop,), f32, (), (("index", 0),)))
    g.result("ys", "output", g.add(Op.ITEM, (loop,), f32, (6,), (("index", 1),)))
    graph = g.build()
    thresholds = np.array([2.0, 4.0, 50.0], np.float32)
    out = evaluate(graph, {"thr": thresholds}, batch=3)
    for b, th in enumerate(thresholds):
        x, ys = until_reference(float(th), 6)
        assert out[("x", "output")][b] == x
        np.testing.assert_array_equal(out[("ys", "output")][b], ys)
    # every sample done early: the loop stops, stacked outputs still have `count` entries
    out = evaluate(graph, {"thr": np.array([1.0, 2.0, 2.0], np.float32)}, batch=3)
    np.testing.assert_array_equal(out[("ys", "output")], [until_reference(t, 6)[1] for t in (1.0, 2.0, 2.0)])
    out = evaluate(graph, {"thr": np.float32(3.0)})
    assert out[("x", "output")] == 3.0
    np.testing.assert_array_equal(out[("ys", "output")], until_reference(3.0, 6)[1])


def test_loop_missing_result_is_caught_when_the_item_is_built():
    # The ITEM's signature reads the LOOP body's results, so the graph cannot even be built.
    g = GraphBuilder()
    loop = loop_node(g, (g.const(0.0), g.const(1.0)), until_body(), 3, ("x",), ("thr",), ("nope",))
    with pytest.raises(IRError, match="no output result 'nope'"):
        g.add(Op.ITEM, (loop,), f32, (3,), (("index", 1),))


# ---------------------------------------------------------------- randomness and initialisation
def random_graph(dist, a, b, shape):
    g = GraphBuilder()
    g.result("r", "value", g.add(Op.RANDOM, (g.const(a), g.const(b)), f32, shape, (("dist", dist),)))
    return g.build()


def draw(dist, a, b, shape, seed):
    return evaluate(random_graph(dist, a, b, shape), {}, rng=np.random.default_rng(seed))[("r", "value")]


def test_random_is_reproducible_and_follows_the_stream():
    u = draw("uniform", -1.0, 3.0, (2000,), seed=5)
    np.testing.assert_array_equal(u, draw("uniform", -1.0, 3.0, (2000,), seed=5))
    assert not np.array_equal(u, draw("uniform", -1.0, 3.0, (2000,), seed=6))
    np.testing.assert_array_equal(u, np.random.default_rng(5).uniform(-1, 3, 2000).astype(np.float32))
    assert u.min() >= -1 and u.max() <= 3 and abs(u.mean() - 1.0) < 0.1
    n = draw("normal", 2.0, 0.5, (4000,), seed=1)
    assert n.dtype == np.float32 and abs(n.mean() - 2.0) < 0.05 and abs(n.std() - 0.5) < 0.05
    for shape in [(4, 6), (6, 4), (3, 2, 2)]:
        q = draw("orthogonal", 1.5, 0.0, shape, seed=2).astype(np.float64).reshape(shape[0], -1)
        small = q @ q.T if q.shape[0] <= q.shape[1] else q.T @ q
        np.testing.assert_allclose(small, 1.5 ** 2 * np.eye(min(q.shape)), atol=1e-5)


def test_random_without_generator_is_an_error():
    with pytest.raises(EvaluationError, match="random generator"):
        evaluate(random_graph("uniform", 0.0, 1.0, (3,)), {})


def init_program() -> Program:
    g = GraphBuilder()
    w = g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), f32, (3,), (("dist", "normal"),))
    g.result("W", "value", w)
    g.result("c", "value", g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), f32, (2,), (("dist", "uniform"),)))
    u = g.add(Op.RANDOM, (g.const(0.0), g.const(1.0)), f32, (3,), (("dist", "uniform"),))
    g.result("v", "value", g.add(Op.ADD, (u, g.arg("W", "param", f32, (3,))), f32, (3,)))
    g.result("z", "value", g.const(0.0))
    step = GraphBuilder()
    v, z = step.arg("v", "state", f32, (3,)), step.arg("z", "state", f32, (2,))
    step.result("v", "next", v)
    step.result("z", "next", z)
    return Program("p", step.build(), g.build(), params=(Var("W", f32, (3,)), Var("c", f32, (2,))),
                   states=(Var("v", f32, (3,)), Var("z", f32, (2,))), inputs=(), outputs=())


def test_initialize_streams():
    program = init_program()
    params, states = initialize(program, batch=3, seed=7)
    rng = np.random.default_rng(7)
    w = rng.normal(0, 1, 3).astype(np.float32)
    np.testing.assert_array_equal(params["W"], w)  # params draw in node order from default_rng(seed)
    np.testing.assert_array_equal(params["c"], rng.uniform(0, 1, 2).astype(np.float32))
    assert states["v"].shape == (3, 3) and states["z"].shape == (3, 2) and states["z"].dtype == np.float32
    for b in range(3):
        want = np.random.default_rng([7, b]).uniform(0, 1, 3).astype(np.float32) + w
        np.testing.assert_array_equal(states["v"][b], want)
    one_params, one_states = initialize(program, batch=1, seed=7)
    np.testing.assert_array_equal(one_states["v"][0], states["v"][0])
    np.testing.assert_array_equal(one_params["W"], params["W"])
    np.testing.assert_array_equal(states["z"], np.zeros((3, 2)))


# ---------------------------------------------------------------- the executor
def leaky_program(a: float = 0.9) -> Program:
    """x' = a x + u; output y = 2 x (of the current state); value z = x + u."""
    g = GraphBuilder()
    x, u, ap = g.arg("x", "state", f32, (2,)), g.arg("u", "input", f32, (2,)), g.arg("a", "param", f32, ())
    g.result("x", "next", g.add(Op.ADD, (g.add(Op.MUL, (ap, x), f32, (2,)), u), f32, (2,)))
    g.result("y", "output", g.add(Op.MUL, (x, g.const(2.0)), f32, (2,)))
    g.result("z", "value", g.add(Op.ADD, (x, u), f32, (2,)))
    init = GraphBuilder()
    init.result("a", "value", init.const(a))
    init.result("x", "value", init.const(np.ones(2)))
    return Program("leaky", g.build(), init.build(), params=(Var("a", f32, ()),), states=(Var("x", f32, (2,)),),
                   inputs=(Var("u", f32, (2,)),), outputs=(Var("y", f32, (2,)),),
                   monitors=(Monitor("M", "state", ("x",), None, 3),))


def test_executor_runs_a_leaky_integrator():
    program = leaky_program()
    T = 8
    u = rand(T, 2, seed=3)[:2]  # [B=2, T, 2]
    x0 = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    request = RunRequest({"a": np.float32(0.9)}, {"x": x0}, {"u": u}, steps=T,
                         record=(("x", 3), ("y", 2), ("z", 1)))
    result = ReferenceExecutor(program).run(request)
    xs, ys, zs = [], [], []
    x = x0.copy()
    for t in range(T):
        xs.append(x.copy())
        ys.append(x * np.float32(2))
        zs.append(x + u[:, t])
        x = np.float32(0.9) * x + u[:, t]
    np.testing.assert_array_equal(result.state["x"], x)
    np.testing.assert_array_equal(result.outputs["y"], np.stack(ys, axis=1))
    assert result.records["x"].shape == (T // 3, 2, 2)
    np.testing.assert_array_equal(result.records["x"], np.stack(xs[0:T:3][: T // 3]))
    np.testing.assert_array_equal(result.records["y"], np.stack(ys[0:T:2]))
    np.testing.assert_array_equal(result.records["z"], np.stack(zs))


def test_executor_uses_initialize():
    program = leaky_program(a=0.5)
    params, state = initialize(program, batch=2, seed=0)
    out = ReferenceExecutor(program).run(RunRequest(params, state, {"u": np.zeros((2, 3, 2), np.float32)}, steps=3))
    np.testing.assert_array_equal(out.state["x"], np.full((2, 2), 0.125, np.float32))


def test_executor_refuses_derivatives_and_unknown_records():
    p = leaky_program()
    step = Graph(p.step.nodes, tuple(r if r.kind != "next" else type(r)(r.name, "deriv", r.node)
                                     for r in p.step.results))
    with pytest.raises(BackendError, match="discretis"):
        ReferenceExecutor(Program("d", step, p.init, p.params, p.states, p.inputs, p.outputs))
    request = RunRequest({"a": np.float32(1)}, {"x": np.zeros((1, 2), np.float32)},
                         {"u": np.zeros((1, 2, 2), np.float32)}, steps=2, record=(("nothing", 1),))
    with pytest.raises(BackendError, match="nothing"):
        ReferenceExecutor(p).run(request)


def lif_program(n, indptr, indices, weights):
    """A small LIF network: exact leak, threshold, reset, and exponential synapses fed by PROPAGATE."""
    g = GraphBuilder()
    v, ge = g.arg("v", "state", f32, (n,)), g.arg("ge", "state", f32, (n,))
    I = g.arg("I", "input", f32, (n,))
    leak = g.add(Op.MUL, (g.add(Op.SUB, (g.const(-49.0), v), f32, (n,)), g.const(0.05)), f32, (n,))
    vi = g.add(Op.ADD, (g.add(Op.ADD, (v, leak), f32, (n,)), g.add(Op.ADD, (ge, I), f32, (n,))), f32, (n,))
    spk = g.add(Op.GT, (vi, g.const(-50.0)), boolean, (n,))
    g.result("spikes", "value", spk)
    g.result("v", "next", g.add(Op.WHERE, (spk, g.const(-60.0), vi), f32, (n,)))
    syn = g.add(Op.PROPAGATE, (spk, g.const(indptr, i64), g.const(indices, i64), g.const(weights)), f32, (n,),
                (("n_post", n),))
    g.result("ge", "next", g.add(Op.ADD, (g.add(Op.MUL, (ge, g.const(0.9)), f32, (n,)), syn), f32, (n,)))
    init = GraphBuilder()
    init.result("v", "value", init.const(np.full(n, -60.0)))
    init.result("ge", "value", init.const(np.zeros(n)))
    states = (Var("v", f32, (n,)), Var("ge", f32, (n,)))
    return Program("lif", g.build(), init.build(), (), states, (Var("I", f32, (n,)),), ())


def test_executor_lif_network_matches_a_numpy_simulation():
    n, T = 120, 150
    indptr, indices = random_csr(n, n, 0.1, seed=11)
    # quarter-multiples sum exactly in float32, so any summation order gives identical spikes
    weights = np.random.default_rng(12).integers(1, 5, len(indices)).astype(np.float32) * np.float32(0.25)
    program = lif_program(n, indptr, indices, weights)
    rng = np.random.default_rng(13)
    v0 = rng.uniform(-60, -50, (2, n)).astype(np.float32)
    I = rng.uniform(0, 1.2, (2, T, n)).astype(np.float32)
    result = ReferenceExecutor(program).run(RunRequest({}, {"v": v0, "ge": np.zeros((2, n), np.float32)}, {"I": I},
                                                       steps=T, record=(("spikes", 1),)))
    W = dense(indptr, indices, weights, n, n).astype(np.float32)
    v, ge, spikes = v0.copy(), np.zeros((2, n), np.float32), []
    for t in range(T):
        vi = (v + (np.float32(-49) - v) * np.float32(0.05)) + (ge + I[:, t])
        spk = vi > np.float32(-50)
        spikes.append(spk)
        v = np.where(spk, np.float32(-60), vi)
        ge = ge * np.float32(0.9) + spk.astype(np.float32) @ W
    assert np.stack(spikes).sum() > 50
    np.testing.assert_array_equal(result.records["spikes"], np.stack(spikes))
    np.testing.assert_array_equal(result.state["v"], v)
    np.testing.assert_array_equal(result.state["ge"], ge)


def test_declared_shape_mismatch_is_located():
    g = GraphBuilder()
    x = g.arg("x", "param", f32, (3,))
    with pytest.raises(IRError, match=r"sum .*declared f32\[3\], its signature gives f32\[\]"):
        g.add(Op.SUM, (x,), f32, (3,), (("axes", (0,)), ("keepdims", False)))
    # A graph assembled by hand, past the builder, is still caught by the interpreter at the node.
    bad = Node(Op.SUM, (x,), f32, (3,), (("axes", (0,)), ("keepdims", False)))
    graph = Graph((*g.build().nodes, bad), (Result("y", "output", 1),))
    with pytest.raises(EvaluationError, match=r"%1 \(sum\).*declared shape"):
        evaluate(graph, {"x": np.ones(3, np.float32)})


def test_check_finite_locates_the_first_non_finite_node():
    g = GraphBuilder()
    x = g.arg("x", "param", f32, (2,))
    logx = g.add(Op.LOG, (x,), f32, (2,), span=Span("n.nspec", 5, 7))
    g.result("y", "output", g.add(Op.MUL, (logx, g.const(2.0)), f32, (2,)))
    graph = g.build()
    out = evaluate(graph, {"x": np.array([1.0, 0.0], np.float32)})  # IEEE semantics by default
    np.testing.assert_array_equal(out[("y", "output")], [0.0, -np.inf])
    with pytest.raises(EvaluationError, match=r"n\.nspec:5:7: %1 \(log\): produced a non-finite"):
        evaluate(graph, {"x": np.array([1.0, 0.0], np.float32)}, check_finite=True)
