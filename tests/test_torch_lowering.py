"""The PyTorch lowering against the NumPy reference interpreter, finite differences and hand-written torch.

Every op is checked batched and unbatched against ``runtime/reference.py``; whole programs are run by
both executors; gradients are checked against finite differences and an unrolled torch loop.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nspec.compiler.ir import INIT_ONLY, DType, Graph, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import CONTINUOUS, STEP_DRAWS
from nspec.lowering import surrogates
from nspec.lowering import to_torch as tt
from nspec.lowering import torch_rules as tr
from nspec.lowering.surrogates import SURROGATES, spike
from nspec.runtime import reference as ref
from nspec.runtime.executor import BackendError, RunRequest, executor_class

F32, F64, I64, BOOL = DType.f32, DType.f64, DType.i64, DType.bool


def test_every_op_has_a_rule():
    assert set(tt.RULES) == set(Op) - INIT_ONLY - CONTINUOUS


def test_registry_finds_the_torch_executor():
    assert executor_class("torch") is tt.TorchExecutor


# ---------------------------------------------------------------- single ops against the reference
def _values(rng, dtype: DType, shape, kind: str):
    """Random test values: ``kind`` picks the range (positive for log/sqrt/pow, indices, 0/1 spikes)."""
    if dtype is BOOL:
        return rng.random(shape) < 0.5
    if kind == "status":  # a check status (site, step, value): clear (site 0) or failed at site 4
        x = rng.integers(0, 9, size=shape)
        x[..., 0] = rng.choice([0, 0, 4], size=shape[:-1])
        return x.astype(dtype.numpy)
    if kind.startswith("idx"):
        return rng.integers(-int(kind[3:]), int(kind[3:]), size=shape).astype(dtype.numpy)
    if kind.startswith("int"):
        return rng.integers(0, int(kind[3:]), size=shape).astype(dtype.numpy)
    if kind == "pos":
        return rng.uniform(0.5, 2.0, size=shape).astype(dtype.numpy)
    if kind == "spikes":
        return (rng.random(shape) < 0.4).astype(dtype.numpy) * rng.choice([1.0, 0.5], size=shape).astype(dtype.numpy)
    value = rng.normal(size=shape)
    if kind == "nonzero":
        value = value + np.sign(value)
    return value.astype(dtype.numpy)


def _case(op, args, dtype, shape, attrs=(), kinds=()):
    """One op applied to ARGs ``(name, role, dtype, shape)``; ``kinds`` picks each ARG's values."""
    return (op, tuple(args), dtype, tuple(shape), tuple(attrs), tuple(kinds) or ("normal",) * len(args))


X23 = ("x", "input", F32, (2, 3))
P3 = ("p", "param", F32, (3,))
P23 = ("p", "param", F32, (2, 3))
Y23 = ("y", "input", F32, (2, 3))
S0 = ("s", "input", F32, ())

BINARY_ARITH = [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM]
COMPARISONS = [Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE]
UNARY = [Op.NEG, Op.ABS, Op.EXP, Op.TANH, Op.SIGMOID, Op.RELU, Op.SILU, Op.SOFTPLUS, Op.SIN, Op.COS, Op.ERF,
         Op.FLOOR, Op.STOP_GRADIENT, Op.SPIKE]

CASES = (
    [_case(op, [X23, P3], F32, (2, 3), kinds=("normal", "nonzero")) for op in BINARY_ARITH]
    + [_case(op, [S0, P23], F32, (2, 3), kinds=("normal", "nonzero")) for op in BINARY_ARITH]  # rank 0 vs rank 2
    + [_case(Op.POW, [("x", "input", F32, (2, 3)), P3], F32, (2, 3), kinds=("pos", "normal")),
       _case(Op.MOD, [X23, P3], F32, (2, 3), kinds=("normal", "nonzero")),
       _case(Op.MOD, [("i", "input", I64, (4,)), ("j", "param", I64, ())], I64, (4,), kinds=("idx9", "int5"))]
    + [_case(op, [X23, ("q", "input", F32, (3,))], BOOL, (2, 3)) for op in COMPARISONS]
    + [_case(op, [("c", "input", BOOL, (3,)), ("d", "param", BOOL, (2, 3))], BOOL, (2, 3)) for op in (Op.AND, Op.OR)]
    + [_case(op, [X23], F32, (2, 3)) for op in UNARY]
    + [_case(Op.LOG, [X23], F32, (2, 3), kinds=("pos",)), _case(Op.SQRT, [X23], F32, (2, 3), kinds=("pos",)),
       _case(Op.NOT, [("c", "input", BOOL, (2, 3))], BOOL, (2, 3)),
       _case(Op.CAST, [X23], I64, (2, 3)), _case(Op.CAST, [X23], BOOL, (2, 3)),
       _case(Op.CAST, [("i", "input", I64, (3,))], F32, (3,), kinds=("idx9",)),
       _case(Op.WHERE, [("c", "input", BOOL, (3,)), P23, S0], F32, (2, 3)),
       _case(Op.UNIFORM, [("k", "input", I64, ()), ("s", "input", I64, ())], F32, (2, 3), (("stream", 1), ("streams", 2)),
             kinds=("idx9", "int9")),
       _case(Op.UNIFORM, [("k", "param", I64, ()), ("s", "param", I64, ())], F32, (4,), (("stream", 0), ("streams", 1)),
             kinds=("int9", "idx9")),
       _case(Op.NORMAL, [("k", "input", I64, ()), ("s", "param", I64, ())], F32, (2, 3), (("stream", 1), ("streams", 2)),
             kinds=("idx9", "int9"))]
    + [_case(op, [X23], F32, (2,), (("axes", (1,)), ("keepdims", False))) for op in (Op.SUM, Op.MEAN, Op.MAX, Op.MIN)]
    + [_case(op, [X23], F32, (1, 1), (("axes", (0, 1)), ("keepdims", True))) for op in (Op.SUM, Op.MEAN, Op.MAX, Op.MIN)]
    + [_case(Op.SUM, [P23], F32, (3,), (("axes", (0,)), ("keepdims", False))),  # unbatched under a batch
       _case(Op.ARGMAX, [X23], I64, (2,), (("axis", -1),)),
       _case(Op.ARGMAX, [X23], I64, (3,), (("axis", 0),)),
       _case(Op.SOFTMAX, [X23], F32, (2, 3), (("axis", 0),)),
       _case(Op.SOFTMAX, [X23], F32, (2, 3), (("axis", -1),)),
       _case(Op.LOGSUMEXP, [X23], F32, (2,), (("axis", 1),)),
       _case(Op.LAYERNORM, [X23], F32, (2, 3), (("eps", 1e-5),)),
       _case(Op.LAYERNORM, [X23, P3, ("b", "param", F32, (3,))], F32, (2, 3), (("eps", 1e-5),)),
       _case(Op.LAYERNORM, [X23, ("w", "input", F32, (3,))], F32, (2, 3), (("eps", 1e-3),)),
       _case(Op.LAYERNORM, [X23, ("w", "param", F32, (2, 1)), ("b", "param", F32, ())], F32, (2, 3), (("eps", 1e-5),)),
       _case(Op.EINSUM, [X23, ("w", "param", F32, (3, 4))], F32, (2, 4), (("equation", "ij,jk->ik"),)),
       _case(Op.EINSUM, [X23, Y23], F32, (), (("equation", "ij,ij->"),)),
       _case(Op.EINSUM, [("w", "param", F32, (2, 3, 4)), X23], F32, (2, 4), (("equation", "hdn,hd->hn"),)),
       _case(Op.EINSUM, [P23, ("w", "param", F32, (3, 4))], F32, (2, 4), (("equation", "ij,jk->ik"),)),
       _case(Op.RESHAPE, [X23], F32, (3, 2)), _case(Op.RESHAPE, [X23], F32, (6,)),
       _case(Op.TRANSPOSE, [X23], F32, (3, 2), (("perm", (1, 0)),)),
       _case(Op.TRANSPOSE, [("x", "input", F32, (2, 3, 4))], F32, (4, 2, 3), (("perm", (2, 0, 1)),)),
       _case(Op.BROADCAST, [("x", "input", F32, (3,))], F32, (2, 3)),
       _case(Op.BROADCAST, [S0], F32, (2, 2)),
       _case(Op.BROADCAST, [("x", "input", F32, (2, 1))], F32, (2, 3)),
       _case(Op.CONCAT, [X23, ("p", "param", F32, (1, 3))], F32, (3, 3), (("axis", 0),)),
       _case(Op.CONCAT, [X23, P23, Y23], F32, (2, 9), (("axis", -1),)),
       _case(Op.SLICE, [("x", "input", F32, (4, 5))], F32, (2, 3),
             (("starts", (1, 0)), ("stops", (4, 5)), ("steps", (2, 2)))),
       _case(Op.GATHER, [("t", "param", F32, (5, 3)), ("i", "input", I64, (4,))], F32, (4, 3), (("axis", 0),),
             ("normal", "idx5")),
       _case(Op.GATHER, [("t", "input", F32, (3, 5)), ("i", "param", I64, (2,))], F32, (3, 2), (("axis", 1),),
             ("normal", "idx5")),
       _case(Op.GATHER, [("t", "input", F32, (3, 5)), ("i", "input", I64, (2, 2))], F32, (3, 2, 2), (("axis", 1),),
             ("normal", "int5")),
       _case(Op.GATHER, [("t", "input", F32, (5,)), ("i", "param", I64, ())], F32, (), (("axis", 0),),
             ("normal", "int5")),
       _case(Op.GATHER, [("t", "param", F32, (3, 5)), ("i", "input", I64, (2, 2))], F32, (3, 2, 2), (("axis", 1),),
             ("normal", "idx5")),
       _case(Op.SCATTER_ADD, [("base", "input", F32, (5, 2)), ("i", "param", I64, (4,)), ("v", "input", F32, (4, 2))],
             F32, (5, 2), (("axis", 0),), ("normal", "int5", "normal")),
       _case(Op.SCATTER_ADD, [("base", "param", F32, (5, 2)), ("i", "input", I64, (4,)), ("v", "param", F32, (4, 2))],
             F32, (5, 2), (("axis", 0),), ("normal", "int5", "normal")),
       _case(Op.SCATTER_ADD, [("base", "param", F32, (2, 5)), ("i", "param", I64, (6,)), ("v", "input", F32, (2, 6))],
             F32, (2, 5), (("axis", 1),), ("normal", "int5", "normal")),
       _case(Op.SCATTER_ADD, [("base", "param", F32, (5,)), ("i", "param", I64, (6,)), ("v", "param", F32, (6,))],
             F32, (5,), (("axis", 0),), ("normal", "int5", "normal")),
       _case(Op.CHECK, [("st", "input", I64, (3,)), ("i", "input", I64, (2, 3))], I64, (3,),
             (("site", 2), ("kind", "index"), ("size", 5)), ("status", "idx9")),
       _case(Op.CHECK, [("st", "input", I64, (3,)), ("i", "param", I64, (4,))], I64, (3,),
             (("site", 1), ("kind", "divisor")), ("status", "idx2")),
       _case(Op.CHECK, [("st", "param", I64, (3,)), ("i", "param", I64, (4,))], I64, (3,),
             (("site", 1), ("kind", "index"), ("size", 3)), ("status", "idx9"))]
)


def _op_graph(case) -> Graph:
    op, args, dtype, shape, attrs, _ = case
    b = GraphBuilder()
    nodes = [b.arg(name, role, dt, sh) for name, role, dt, sh in args]
    b.result("y", "output", b.add(op, nodes, dtype, shape, attrs))
    return b.build()


def _env(case, batch, seed=0):
    rng = np.random.default_rng(seed)
    env = {}
    for (name, role, dt, shape), kind in zip(case[1], case[5]):
        lead = (batch,) if batch and role != "param" else ()
        env[name] = _values(rng, dt, lead + shape, kind)
    return env


def _close(got: torch.Tensor, want: np.ndarray, rtol=2e-5, atol=2e-6):
    got = got.detach().cpu().numpy()
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].value}-{'x'.join(map(str, c[3])) or 'scalar'}")
def test_op_matches_reference(case, batch):
    graph = _op_graph(case)
    env = _env(case, batch)
    want = ref.evaluate(graph, env, batch)[("y", "output")]
    got = tt.evaluate(graph, env, batch)[("y", "output")]
    _close(got, np.asarray(want))


# Step draws are left out: each sample of a batch draws from its own stream (tests/test_random_streams.py),
# so sample b of a batched draw is not the unbatched draw.
@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in STEP_DRAWS
                                  and any(role != "param" for _, role, _, _ in c[1])][::3],
                         ids=lambda c: c[0].value)
def test_batched_op_equals_per_sample_runs(case):
    """The batching rule, independently of the reference: sample b of a batched run = a run on sample b."""
    graph = _op_graph(case)
    env = _env(case, 3, seed=1)
    whole = tt.evaluate(graph, env, 3)[("y", "output")]
    batched_args = {name for name, role, _, _ in case[1] if role != "param"}
    for k in range(3):
        one = {n: (v[k] if n in batched_args else v) for n, v in env.items()}
        _close(whole[k], tt.evaluate(graph, one, None)[("y", "output")].numpy(), rtol=1e-6, atol=1e-6)


def _csr(rng, n_pre, n_post, p):
    mask = rng.random((n_pre, n_post)) < p
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int64)
    return indptr, indices


def _propagate_graph(n_pre, n_post, nnz, weights_role, dtype=F32, shared=False):
    b = GraphBuilder()
    s = b.arg("s", "input", dtype, (n_pre,))
    ip = b.arg("indptr", "param", I64, (n_pre + 1,))
    ix = b.arg("indices", "param", I64, (nnz,))
    w = b.arg("w", weights_role, dtype, () if shared else (nnz,))
    b.result("y", "output", b.add(Op.PROPAGATE, [s, ip, ix, w], dtype, (n_post,), (("n_post", n_post),)))
    return b.build()


@pytest.mark.parametrize("mode", ["dense", "event", "auto"])
@pytest.mark.parametrize("weights_role", ["param", "input"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-synapse", "shared-weight"])
@pytest.mark.parametrize("batch", [None, 4])
def test_propagate_matches_reference(mode, weights_role, shared, batch):
    rng = np.random.default_rng(2)
    indptr, indices = _csr(rng, 7, 5, 0.5)
    graph = _propagate_graph(7, 5, len(indices), weights_role, shared=shared)
    lead = (batch,) if batch else ()
    w_shape = (lead if weights_role == "input" else ()) + (() if shared else (len(indices),))
    env = {"s": _values(rng, F32, lead + (7,), "spikes"), "indptr": indptr, "indices": indices,
           "w": rng.normal(size=w_shape).astype(np.float32)}
    want = ref.evaluate(graph, env, batch)[("y", "output")]
    consts: dict = {}
    plan = tt.compile_plan(graph, consts, frozenset(graph.args()) if batch is None else frozenset())
    frame = tt.Frame({k: torch.as_tensor(v) for k, v in env.items()}, {}, batch, propagate=mode)
    got = tt.execute(plan, frame)[graph.result("y").node]
    np.testing.assert_array_equal(got.numpy(), want)  # same summation order: bitwise equal


def test_propagate_gradient_wrt_spikes_and_weights():
    rng = np.random.default_rng(3)
    indptr, indices = _csr(rng, 6, 4, 0.6)
    s = torch.tensor(_values(rng, F64, (2, 6), "spikes"), requires_grad=True)
    w = torch.tensor(rng.normal(size=len(indices)), requires_grad=True)
    graph = _propagate_graph(6, 4, len(indices), "param", F64)
    consts: dict = {}
    plan = tt.compile_plan(graph, consts)
    frame = tt.Frame({"s": s, "indptr": torch.tensor(indptr), "indices": torch.tensor(indices), "w": w}, {}, 2)
    out = tt.execute(plan, frame)[graph.result("y").node]
    coef = torch.tensor(rng.normal(size=(2, 4)))
    (out * coef).sum().backward()
    # The dense matrix form: y[b, j] = sum_i s[b, i] * W[i, j] with W[i, j] = w[k] for the synapse (i, j).
    dense = np.zeros((6, 4))
    rows = np.repeat(np.arange(6), np.diff(indptr))
    np.add.at(dense, (rows, indices), w.detach().numpy())
    np.testing.assert_allclose(s.grad.numpy(), coef.numpy() @ dense.T, rtol=1e-12)
    sd = s.detach().numpy()
    np.testing.assert_allclose(w.grad.numpy(), (sd[:, rows] * coef.numpy()[:, indices]).sum(0), rtol=1e-12)


# ---------------------------------------------------------------- loops
def _loop_graph(until: bool) -> Graph:
    """x carried, a invariant: x <- 0.5 x + a; stacked y = x * 2; until sum(x) > 0.6 (per sample)."""
    body = GraphBuilder()
    x = body.arg("x", "state", F32, (2,))
    a = body.arg("a", "input", F32, (2,))
    nx = body.add(Op.ADD, [body.add(Op.MUL, [x, body.const(0.5)], F32, (2,)), a], F32, (2,))
    body.result("x", "next", nx)
    body.result("y", "output", body.add(Op.MUL, [x, body.const(2.0)], F32, (2,)))
    body.result("c", "value", body.add(Op.GT, [body.add(Op.SUM, [x], F32, (), (("axes", (0,)), ("keepdims", False))),
                                               body.const(0.6)], BOOL, ()))
    g = GraphBuilder()
    x0 = g.arg("x0", "param", F32, (2,))
    u = g.arg("u", "input", F32, (2,))
    loop = g.add(Op.LOOP, [x0, u], F32, (), (("body", body.build()), ("count", 6), ("carried", ("x",)),
                                             ("invariant", ("a",)), ("stacked", ("y",)),
                                             ("until", "c" if until else None)))
    g.result("final", "output", g.add(Op.ITEM, [loop], F32, (2,), (("index", 0),)))
    g.result("trace", "output", g.add(Op.ITEM, [loop], F32, (6, 2), (("index", 1),)))
    return g.build()


@pytest.mark.parametrize("until", [False, True])
@pytest.mark.parametrize("batch", [None, 5])
def test_loop_matches_reference(until, batch):
    graph = _loop_graph(until)
    rng = np.random.default_rng(4)
    lead = (batch,) if batch else ()
    env = {"x0": rng.normal(size=2).astype(np.float32), "u": rng.uniform(0, 0.8, size=lead + (2,)).astype(np.float32)}
    want = ref.evaluate(graph, env, batch)
    got = tt.evaluate(graph, env, batch)
    for key in [("final", "output"), ("trace", "output")]:
        _close(got[key], want[key])
    if until and batch:
        # Samples stop at different ticks: some traces are frozen early, some run to the bound.
        trace = got[("trace", "output")].numpy()
        stops = {min(k for k in range(6) if np.all(trace[b, k:] == trace[b, k])) for b in range(batch)}
        assert len(stops) > 1 and max(stops) < 5, stops


def test_unbatched_loop_inside_a_batched_graph():
    """A LOOP over params only is unbatched; its ITEMs then combine with batched values."""
    loop_node = _loop_graph(False).nodes[2]
    g = GraphBuilder()
    x0 = g.arg("x0", "param", F32, (2,))
    u = g.arg("u", "input", F32, (2,))
    loop = g.add(Op.LOOP, [x0, x0], F32, (), loop_node.attrs)
    final = g.add(Op.ITEM, [loop], F32, (2,), (("index", 0),))
    g.result("final", "output", g.add(Op.ADD, [final, u], F32, (2,)))
    graph = g.build()
    env = {"x0": np.array([0.3, -0.2], np.float32), "u": np.arange(6, dtype=np.float32).reshape(3, 2)}
    want = ref.evaluate(graph, env, 3)[("final", "output")]
    plan = tt.compile_plan(graph, {})
    assert plan.flags[loop] is False and plan.flags[-1] is True
    _close(tt.evaluate(graph, env, 3)[("final", "output")], want)


# ---------------------------------------------------------------- programs
def _program(name, step: Graph, init: Graph, params=(), states=(), inputs=(), outputs=(), seed=0) -> Program:
    return Program(name, step, init, tuple(params), tuple(states), tuple(inputs), tuple(outputs), seed=seed)


def _init_graph(values: dict[str, tuple[DType, np.ndarray]]) -> Graph:
    b = GraphBuilder()
    for name, (dtype, value) in values.items():
        b.result(name, "value", b.const(value, dtype))
    return b.build()


def leaky_integrator(n=4) -> Program:
    """v <- v * decay + (1 - decay) * (w * I); output y = v (read before the update)."""
    b = GraphBuilder()
    v = b.arg("v", "state", F32, (n,))
    i = b.arg("I", "input", F32, (n,))
    w = b.arg("w", "param", F32, (n,))
    decay = b.const(math.exp(-0.1))
    drive = b.add(Op.MUL, [b.add(Op.MUL, [w, i], F32, (n,)), b.const(1 - math.exp(-0.1))], F32, (n,))
    b.result("v", "next", b.add(Op.ADD, [b.add(Op.MUL, [v, decay], F32, (n,)), drive], F32, (n,)))
    b.result("y", "output", v)
    init = _init_graph({"w": (F32, np.linspace(0.5, 1.5, n)), "v": (F32, np.zeros(n))})
    return _program("leaky", b.build(), init, [Var("w", F32, (n,))], [Var("v", F32, (n,))],
                    [Var("I", F32, (n,))], [Var("y", F32, (n,))])


def spiking_network(n=30, seed=5) -> tuple[Program, dict]:
    """LIF neurons with recurrent CSR synapses: v <- a v + I + propagate(s); spike; reset to 0."""
    rng = np.random.default_rng(seed)
    indptr, indices = _csr(rng, n, n, 0.2)
    nnz = len(indices)
    b = GraphBuilder()
    v = b.arg("P/v", "state", F32, (n,))
    s = b.arg("P/s", "state", F32, (n,))
    drive = b.arg("I", "input", F32, (n,))
    ip = b.arg("indptr", "param", I64, (n + 1,))
    ix = b.arg("indices", "param", I64, (nnz,))
    w = b.arg("exc/w", "param", F32, (nnz,))
    syn = b.add(Op.PROPAGATE, [s, ip, ix, w], F32, (n,), (("n_post", n),))
    v1 = b.add(Op.ADD, [b.add(Op.ADD, [b.add(Op.MUL, [v, b.const(0.9)], F32, (n,)), drive], F32, (n,)), syn], F32, (n,))
    spk = b.add(Op.SPIKE, [b.add(Op.SUB, [v1, b.const(1.0)], F32, (n,))], F32, (n,),
                (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))
    b.result("P/v", "next", b.add(Op.WHERE, [b.add(Op.GT, [spk, b.const(0.0)], BOOL, (n,)), b.const(0.0), v1],
                                  F32, (n,)))
    b.result("P/s", "next", spk)
    b.result("P/spikes", "value", spk)
    b.result("rate", "output", b.add(Op.MEAN, [spk], F32, (), (("axes", (0,)), ("keepdims", False))))
    init = _init_graph({"indptr": (I64, indptr), "indices": (I64, indices),
                        "exc/w": (F32, rng.uniform(0, 0.3, nnz)), "P/v": (F32, np.zeros(n)), "P/s": (F32, np.zeros(n))})
    params = [Var("indptr", I64, (n + 1,), learnable=False), Var("indices", I64, (nnz,), learnable=False),
              Var("exc/w", F32, (nnz,))]
    program = _program("lif", b.build(), init, params, [Var("P/v", F32, (n,)), Var("P/s", F32, (n,))],
                       [Var("I", F32, (n,))], [Var("rate", F32, ())])
    return program, {"I": rng.uniform(0, 0.25, size=(3, 200, n)).astype(np.float32),
                     "P/v": rng.uniform(0, 1, size=(3, n)).astype(np.float32)}


def _request(program, inputs, state, steps, record=()):
    params = ref.initialize(program, 1, 0)[0]
    return RunRequest(params, state, inputs, steps, record)


def test_leaky_integrator_matches_reference_executor():
    program = leaky_integrator()
    rng = np.random.default_rng(6)
    inputs = {"I": rng.normal(size=(2, 200, 4)).astype(np.float32)}
    state = {"v": rng.normal(size=(2, 4)).astype(np.float32)}
    request = _request(program, inputs, state, 200, (("v", 10), ("y", 7)))
    want = ref.ReferenceExecutor(program).run(request)
    got = tt.TorchExecutor(program).run(request)
    np.testing.assert_array_equal(got.outputs["y"], want.outputs["y"])
    np.testing.assert_array_equal(got.state["v"], want.state["v"])
    for name in ("v", "y"):
        assert got.records[name].shape == want.records[name].shape
        np.testing.assert_array_equal(got.records[name], want.records[name])


@pytest.mark.parametrize("propagate", ["event", "dense"])
def test_spiking_network_has_the_reference_spikes(propagate):
    program, data = spiking_network()
    request = _request(program, {"I": data["I"]}, {"P/v": data["P/v"], "P/s": np.zeros_like(data["P/v"])}, 200,
                       (("P/spikes", 1), ("P/v", 1)))
    want = ref.ReferenceExecutor(program).run(request)
    got = tt.TorchExecutor(program, propagate=propagate).run(request)
    spikes = want.records["P/spikes"]
    assert 0.02 < spikes.mean() < 0.5  # the network is neither silent nor saturated
    np.testing.assert_array_equal(got.records["P/spikes"], spikes)
    np.testing.assert_array_equal(got.records["P/v"], want.records["P/v"])
    np.testing.assert_array_equal(got.outputs["rate"], want.outputs["rate"])


def test_module_forward_equals_the_executor():
    program, data = spiking_network()
    module = tt.to_module(program, return_state=True)
    x = torch.tensor(data["I"][:, :50])
    start = {"P/v": torch.tensor(data["P/v"])}
    out = module(state=start, I=x)
    request = _request(program, {"I": data["I"]}, {"P/v": data["P/v"], "P/s": np.zeros_like(data["P/v"])}, 50)
    want = ref.ReferenceExecutor(program).run(request)
    np.testing.assert_array_equal(out["rate"].detach().numpy(), want.outputs["rate"])
    np.testing.assert_array_equal(out["state/P/v"].detach().numpy(), want.state["P/v"])


def test_cuda_device_runs_or_is_refused():
    program = leaky_integrator()
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA"):
            tt.TorchExecutor(program, device="cuda")
        return
    rng = np.random.default_rng(7)
    request = _request(program, {"I": rng.normal(size=(2, 20, 4)).astype(np.float32)},
                       {"v": np.zeros((2, 4), np.float32)}, 20)
    want = ref.ReferenceExecutor(program).run(request)
    got = tt.TorchExecutor(program, device="cuda").run(request)
    np.testing.assert_allclose(got.outputs["y"], want.outputs["y"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- gradients
def recurrent(n=3, learned_start=False) -> Program:
    """x_{t+1} = tanh(W x_t + u_t), output y_t = x_{t+1}; float64.  With ``learned_start`` the
    initial state is the parameter x0 (an ARG in the init graph)."""
    b = GraphBuilder()
    x = b.arg("x", "state", F64, (n,))
    u = b.arg("u", "input", F64, (n,))
    w = b.arg("W", "param", F64, (n, n))
    nx = b.add(Op.TANH, [b.add(Op.ADD, [b.add(Op.EINSUM, [w, x], F64, (n,), (("equation", "ij,j->i"),)), u],
                                F64, (n,))], F64, (n,))
    b.result("x", "next", nx)
    b.result("y", "output", nx)
    ib = GraphBuilder()
    ib.result("W", "value", ib.const(np.random.default_rng(8).normal(0, 0.6, (n, n)), F64))
    params = [Var("W", F64, (n, n))]
    if learned_start:
        ib.result("x0", "value", ib.const(np.full(n, 0.1), F64))
        ib.result("x", "value", ib.arg("x0", "param", F64, (n,)))
        params.append(Var("x0", F64, (n,)))
    else:
        ib.result("x", "value", ib.const(np.zeros(n), F64))
    return _program("rnn", b.build(), ib.build(), params, [Var("x", F64, (n,))], [Var("u", F64, (n,))],
                    [Var("y", F64, (n,))])


def test_recurrent_gradient_equals_finite_differences_and_unrolled_torch():
    program = recurrent()
    module = tt.to_module(program)
    rng = np.random.default_rng(9)
    u = torch.tensor(rng.normal(size=(2, 6, 3)))
    x0 = torch.tensor(rng.normal(size=(2, 3)))
    loss = module(state={"x": x0}, u=u)["y"].sum()
    loss.backward()
    grad = module.weight_of("W").grad.numpy().copy()

    def unrolled(W):
        x, total = x0, 0
        for t in range(6):
            x = torch.tanh(x @ W.T + u[:, t])
            total = total + x.sum()
        return total

    W = module.weight_of("W").detach().clone().requires_grad_(True)
    unrolled(W).backward()
    np.testing.assert_allclose(grad, W.grad.numpy(), rtol=1e-12, atol=1e-14)

    eps = 1e-6
    fd = np.zeros_like(grad)
    with torch.no_grad():
        for idx in np.ndindex(*grad.shape):
            d = torch.zeros_like(W)
            d[idx] = eps
            fd[idx] = (unrolled(W + d) - unrolled(W - d)).item() / (2 * eps)
            module.weight_of("W").copy_(W + d)
            plus = module(state={"x": x0}, u=u)["y"].sum().item()
            module.weight_of("W").copy_(W - d)
            minus = module(state={"x": x0}, u=u)["y"].sum().item()
            module.weight_of("W").copy_(W)
            assert abs((plus - minus) / (2 * eps) - fd[idx]) < 1e-8
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_gradient_through_a_loop_equals_finite_differences():
    """Internal ticks: x <- tanh(W x + a) three times per step, every tick stacked (float64)."""
    body = GraphBuilder()
    x = body.arg("x", "state", F64, (3,))
    a = body.arg("a", "input", F64, (3,))
    w = body.arg("W", "input", F64, (3, 3))
    nx = body.add(Op.TANH, [body.add(Op.ADD, [body.add(Op.EINSUM, [w, x], F64, (3,), (("equation", "ij,j->i"),)), a],
                                     F64, (3,))], F64, (3,))
    body.result("x", "next", nx)
    body.result("h", "output", nx)
    g = GraphBuilder()
    u = g.arg("u", "input", F64, (3,))
    W = g.arg("W", "param", F64, (3, 3))
    loop = g.add(Op.LOOP, [u, u, W], F32, (), (("body", body.build()), ("count", 3), ("carried", ("x",)),
                                               ("invariant", ("a", "W")), ("stacked", ("h",)), ("until", None)))
    g.result("ticks", "output", g.add(Op.ITEM, [loop], F64, (3, 3), (("index", 1),)))
    graph = g.build()
    rng = np.random.default_rng(17)
    u0 = torch.tensor(rng.normal(size=(2, 3)))
    coef = torch.tensor(rng.normal(size=(2, 3, 3)))
    plan = tt.compile_plan(graph, {})

    def loss(weights):
        out = tt.execute(plan, tt.Frame({"u": u0, "W": weights}, {}, 2))[graph.result("ticks").node]
        return (out * coef).sum()

    W0 = torch.tensor(rng.normal(0, 0.5, size=(3, 3)), requires_grad=True)
    loss(W0).backward()
    eps = 1e-6
    fd = np.zeros((3, 3))
    with torch.no_grad():
        for idx in np.ndindex(3, 3):
            d = torch.zeros(3, 3, dtype=torch.float64)
            d[idx] = eps
            fd[idx] = (loss(W0 + d) - loss(W0 - d)).item() / (2 * eps)
    np.testing.assert_allclose(W0.grad.numpy(), fd, rtol=1e-6, atol=1e-9)


class _SuperSpike(torch.autograd.Function):
    """The test's own SuperSpike: heaviside forward, 1 / (25 |x| + 1)^2 backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (25 * x.abs() + 1) ** 2


def test_spiking_gradient_equals_a_hand_written_surrogate_network():
    program, data = spiking_network(n=20, seed=18)
    module = tt.to_module(program)
    x = torch.tensor(data["I"][:, :25, :20]) * 2
    v0 = torch.tensor(data["P/v"][:, :20])
    out = module(state={"P/v": v0}, I=x)["rate"]
    coef = torch.tensor(np.random.default_rng(19).normal(size=out.shape), dtype=torch.float32)
    (out * coef).sum().backward()
    got = module.weight_of("exc/w").grad.numpy()

    indptr, indices = module.weight_of("indptr").numpy(), module.weight_of("indices").numpy()
    w = module.weight_of("exc/w").detach().clone().requires_grad_(True)
    rows = torch.tensor(np.repeat(np.arange(20), np.diff(indptr)))
    dense = torch.zeros(20, 20).index_put((rows, torch.tensor(indices)), w, accumulate=True)
    v, s, rates = v0, torch.zeros_like(v0), []
    for t in range(25):
        v1 = v * 0.9 + x[:, t] + s @ dense
        s = _SuperSpike.apply(v1 - 1.0)
        v = torch.where(s > 0, torch.zeros_like(v1), v1)
        rates.append(s.mean(-1))
    want_rate = torch.stack(rates, 1)
    np.testing.assert_array_equal(out.detach().numpy(), want_rate.detach().numpy())  # the same spikes
    assert 0 < want_rate.mean() < 0.5
    (want_rate * coef).sum().backward()
    assert np.abs(w.grad.numpy()).sum() > 0
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_learned_start_state_gets_gradients_and_trains():
    program = recurrent(learned_start=True)
    module = tt.to_module(program)
    u = torch.tensor(np.random.default_rng(10).normal(size=(4, 5, 3)))
    start = module.initial_state(4)["x"]
    np.testing.assert_allclose(start.detach().numpy(), np.full((4, 3), 0.1))
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    target = torch.zeros(4, 5, 3, dtype=torch.float64)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ((module(u=u)["y"] - target) ** 2).mean()
        loss.backward()
        assert module.weight_of("x0").grad is not None and module.weight_of("x0").grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def plastic_program(plastic=True) -> Program:
    """w <- w + eta * x (a local rule when ``plastic``); output y = sum(w * x) * g."""
    b = GraphBuilder()
    w = b.arg("w", "state", F64, (3,))
    x = b.arg("x", "input", F64, (3,))
    eta = b.arg("eta", "param", F64, ())
    g = b.arg("g", "param", F64, ())
    b.result("w", "next", b.add(Op.ADD, [w, b.add(Op.MUL, [eta, x], F64, (3,))], F64, (3,)))
    y = b.add(Op.SUM, [b.add(Op.MUL, [w, x], F64, (3,))], F64, (), (("axes", (0,)), ("keepdims", False)))
    b.result("y", "output", b.add(Op.MUL, [y, g], F64, ()))
    init = _init_graph({"eta": (F64, 0.5), "g": (F64, 2.0), "w": (F64, np.zeros(3))})
    return _program("hebb", b.build(), init, [Var("eta", F64, ()), Var("g", F64, ())],
                    [Var("w", F64, (3,), plastic=plastic)], [Var("x", F64, (3,))], [Var("y", F64, ())])


@pytest.mark.parametrize("plastic, plasticity_grad, eta_learns",
                         [(True, False, False), (True, True, True), (False, False, True)])
def test_plastic_updates_run_without_gradients(plastic, plasticity_grad, eta_learns):
    module = tt.to_module(plastic_program(plastic), plasticity_grad=plasticity_grad)
    x = torch.tensor(np.random.default_rng(11).normal(size=(2, 3, 3)))
    out = module(x=x)["y"]
    out.sum().backward()
    grad = module.weight_of("eta").grad
    assert (grad is not None and grad.abs().item() > 0) == eta_learns
    assert module.weight_of("g").grad.abs().item() > 0
    # Values do not depend on the gradient mode: w_t = eta * sum_{s<t} x_s, y_t = g * <w_t, x_t>.
    xs = x.numpy()
    w = 0.5 * np.cumsum(np.concatenate([np.zeros((2, 1, 3)), xs[:, :-1]], 1), 1)
    np.testing.assert_allclose(out.detach().numpy(), 2.0 * (w * xs).sum(-1), rtol=1e-12)


# ---------------------------------------------------------------- surrogates
SURROGATE_FORMULAS = {
    "fast_sigmoid": lambda x, slope=25.0: 1 / (slope * np.abs(x) + 1) ** 2,
    "arctan": lambda x, alpha=2.0: alpha / 2 / (1 + (np.pi / 2 * alpha * x) ** 2),
    "sigmoid": lambda x, slope=25.0: slope * np.exp(-slope * x) / (1 + np.exp(-slope * x)) ** 2,
    "triangle": lambda x, width=1.0: np.maximum(0, 1 - np.abs(x) / width),
    "straight_through": lambda x: np.ones_like(x),
}


def test_surrogate_table_is_the_documented_one():
    assert set(SURROGATES) == set(SURROGATE_FORMULAS)


@pytest.mark.parametrize("name", sorted(SURROGATE_FORMULAS))
@pytest.mark.parametrize("args", [(), "custom"])
def test_surrogate_gradient_matches_its_formula(name, args):
    if args == "custom":
        args = tuple(0.5 + 3.0 * (k + 1) for k in range(len(SURROGATES[name].defaults)))
    x = np.linspace(-1.5, 1.5, 41)
    xt = torch.tensor(x, requires_grad=True)
    _, full = surrogates.resolve(name, args)
    y = spike(xt, name, full)
    np.testing.assert_array_equal(y.detach().numpy(), (x > 0).astype(float))
    coef = np.random.default_rng(12).normal(size=x.shape)
    (y * torch.tensor(coef)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), coef * SURROGATE_FORMULAS[name](x, *args), rtol=1e-10, atol=1e-12)


def test_spike_node_uses_the_surrogate_in_its_attrs_and_defaults_to_fast_sigmoid():
    for attrs, formula in [((("surrogate", "arctan"), ("surrogate_args", (4.0,))), lambda x: SURROGATE_FORMULAS["arctan"](x, 4.0)),
                           ((), SURROGATE_FORMULAS["fast_sigmoid"])]:
        b = GraphBuilder()
        v = b.arg("v", "input", F64, (5,))
        b.result("s", "output", b.add(Op.SPIKE, [v], F64, (5,), attrs))
        plan = tt.compile_plan(b.build(), {})
        x = torch.linspace(-0.2, 0.2, 5, dtype=torch.float64).reshape(1, 5).requires_grad_(True)
        tt.execute(plan, tt.Frame({"v": x}, {}, 1))[1].sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), formula(x.detach().numpy()), rtol=1e-12)


def test_unknown_surrogate_and_init_only_ops_are_located_errors():
    from nspec.dsl.diagnostics import Span
    span = Span("model.nspec", 3, 7)
    b = GraphBuilder()
    v = b.arg("v", "input", F32, (2,))
    b.result("s", "output", b.add(Op.SPIKE, [v], F32, (2,), (("surrogate", "bogus"), ("surrogate_args", ())), span))
    with pytest.raises(BackendError, match=r"model.nspec:3:7: error: .*unknown surrogate 'bogus'"):
        tt.compile_plan(b.build(), {})
    b = GraphBuilder()
    lo, hi = b.const(0.0), b.const(1.0)
    b.result("r", "output", b.add(Op.RANDOM, [lo, hi], F32, (2,), (("dist", "uniform"),), span))
    with pytest.raises(BackendError, match=r"model.nspec:3:7: error: .*no rule"):
        tt.compile_plan(b.build(), {})


def test_runtime_failures_name_the_node_and_its_spec_line():
    from nspec.dsl.diagnostics import Span
    # (an index out of range is no failure: every backend clamps it and a CHECK reports it,
    # tests/test_memory_safety.py; values of the wrong size are one)
    b = GraphBuilder()
    t = b.arg("t", "input", F32, (2,))
    i = b.arg("i", "input", F32, (2,))
    b.result("y", "output", b.add(Op.ADD, [t, i], F32, (2,), (), Span("model.nspec", 9, 4)))
    env = {"t": np.zeros((1, 2), np.float32), "i": np.zeros((1, 3), np.float32)}
    with pytest.raises(BackendError, match=r"model.nspec:9:4: error: %2 \(add\): .*size"):
        tt.evaluate(b.build(), env, 1)


# ---------------------------------------------------------------- weights and names
def keyed_program() -> Program:
    """Params with external keys, an unkeyed nested path, a frozen index buffer and a reparam."""
    b = GraphBuilder()
    tok = b.arg("tok", "input", I64, ())
    h = b.arg("h", "state", F32, (4,))
    emb = b.arg("embed", "param", F32, (10, 4))
    enc = b.arg("enc", "param", F32, (4, 4))
    w0 = b.arg("mlp/w0", "param", F32, (4, 4))
    idx = b.arg("idx", "param", I64, (2,))
    tau = b.arg("cortex/L4/tau", "param", F32, (4,))
    e = b.add(Op.GATHER, [emb, tok], F32, (4,), (("axis", 0),))
    z = b.add(Op.EINSUM, [b.add(Op.ADD, [e, h], F32, (4,)), enc], F32, (4,), (("equation", "i,ij->j"),))
    z = b.add(Op.EINSUM, [b.add(Op.RELU, [z], F32, (4,)), w0], F32, (4,), (("equation", "i,ij->j"),))
    # bounded(1, 20) via sigmoid, as the elaborator emits it after the raw parameter's ARG
    tau = b.add(Op.ADD, [b.add(Op.MUL, [b.add(Op.SIGMOID, [tau], F32, (4,)), b.const(19.0)], F32, (4,)),
                         b.const(1.0)], F32, (4,))
    nh = b.add(Op.DIV, [z, tau], F32, (4,))
    b.result("h", "next", nh)
    b.result("y", "output", b.add(Op.GATHER, [nh, idx], F32, (2,), (("axis", 0),)))
    rng = np.random.default_rng(13)
    init = _init_graph({"embed": (F32, rng.normal(size=(10, 4))), "enc": (F32, rng.normal(size=(4, 4))),
                        "mlp/w0": (F32, rng.normal(size=(4, 4))), "idx": (I64, np.array([3, 1])),
                        "cortex/L4/tau": (F32, rng.normal(size=4)), "h": (F32, np.zeros(4))})
    params = [Var("embed", F32, (10, 4), key="embed.weight"), Var("enc", F32, (4, 4), key="encoder"),
              Var("mlp/w0", F32, (4, 4), key="mlp.network.0.weight"),
              Var("idx", I64, (2,), key="out_neuron_indices", learnable=False),
              Var("cortex/L4/tau", F32, (4,), reparam=("bounded", 1.0, 20.0, "sigmoid"))]
    return _program("keyed", b.build(), init, params, [Var("h", F32, (4,))], [Var("tok", I64, ())],
                    [Var("y", F32, (2,))])


def test_state_dict_keys_are_the_external_names_and_load_strictly():
    program = keyed_program()
    module = tt.to_module(program)
    sd = module.state_dict()
    assert set(sd) == {"embed.weight", "encoder", "mlp.network.0.weight", "out_neuron_indices", "cortex.L4.tau"}
    assert sd["out_neuron_indices"].dtype == torch.int64
    assert {n for n, _ in module.named_parameters()} == set(sd) - {"out_neuron_indices"}
    tok = torch.tensor([[1, 2, 3], [4, 5, 6]])
    before = module(tok=tok)["y"]
    rng = np.random.default_rng(14)
    new = {k: (torch.tensor(rng.normal(size=v.shape), dtype=v.dtype) if v.dtype.is_floating_point
               else torch.tensor([0, 2])) for k, v in sd.items()}
    module.load_state_dict(new, strict=True)
    after = module(tok=tok)["y"]
    assert not torch.allclose(before, after)
    other = tt.to_module(program)
    other.load_state_dict(module.state_dict(), strict=True)
    torch.testing.assert_close(other(tok=tok)["y"], after)
    with pytest.raises(RuntimeError):
        other.load_state_dict({k: v for k, v in new.items() if k != "encoder"}, strict=True)


def test_reparameterised_params_are_stored_raw():
    """The step graph holds the reparameterisation's ops: the module stores and trains the raw value."""
    program = keyed_program()
    module = tt.to_module(program)
    params = ref.initialize(program, 1, 0)[0]
    np.testing.assert_array_equal(module.state_dict()["cortex.L4.tau"].numpy(), params["cortex/L4/tau"])
    tok = np.array([[1, 2, 3, 4]])
    want = ref.ReferenceExecutor(program).run(RunRequest(params, {"h": np.zeros((1, 4), np.float32)}, {"tok": tok}, 4))
    got = module(tok=torch.tensor(tok))["y"]
    np.testing.assert_allclose(got.detach().numpy(), want.outputs["y"], rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert module.weight_of("cortex/L4/tau").grad.abs().sum() > 0


def test_module_survives_deepcopy_and_torch_save(tmp_path):
    import copy
    program = keyed_program()
    module = tt.to_module(program)
    tok = torch.tensor([[1, 2, 3]])
    want = module(tok=tok)["y"]
    twin = copy.deepcopy(module)
    with torch.no_grad():
        module.weight_of("enc").mul_(2)  # the copy owns its weights
    torch.testing.assert_close(twin(tok=tok)["y"], want)
    torch.save(twin, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(loaded(tok=tok)["y"], want)


def test_clashing_weight_names_are_refused():
    program = keyed_program()
    params = list(program.params)
    params[1] = Var("enc", F32, (4, 4), key="embed")  # "embed" is already a submodule (embed.weight)
    with pytest.raises(BackendError, match="clashes"):
        tt.to_module(Program(program.name, program.step, program.init, tuple(params), program.states,
                             program.inputs, program.outputs))


# ---------------------------------------------------------------- torch.compile
def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    program = recurrent()
    module = tt.to_module(program)
    rng = np.random.default_rng(15)
    u = torch.tensor(rng.normal(size=(2, 4, 3)))
    x0 = {"x": torch.tensor(rng.normal(size=(2, 3)))}
    eager = module(state=x0, u=u)["y"]
    compiled = torch.compile(module)
    got = compiled(state=x0, u=u)["y"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo captured the run
    torch.testing.assert_close(got, eager, rtol=1e-10, atol=1e-12)
    got.sum().backward()
    assert module.weight_of("W").grad is not None


def test_compiled_executor_step_matches_the_reference():
    torch._dynamo.reset()
    program = leaky_integrator()
    rng = np.random.default_rng(16)
    request = _request(program, {"I": rng.normal(size=(2, 30, 4)).astype(np.float32)},
                       {"v": rng.normal(size=(2, 4)).astype(np.float32)}, 30, (("v", 3),))
    want = ref.ReferenceExecutor(program).run(request)
    got = tt.TorchExecutor(program, compile=True).run(request)
    np.testing.assert_allclose(got.outputs["y"], want.outputs["y"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.records["v"], want.records["v"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the seed models' reference weights
# The authors' bundles (config, weights, inputs, outputs) live outside the repository.
CONFORMANCE = Path(__file__).parent / "conformance"  # the authors' bundles, copied from shared/conformance
SEEDS = Path(__file__).resolve().parent.parent / "specs" / "seeds"


@pytest.mark.parametrize("bundle, spec, hyper", [
    ("bdh_tiny", "bdh.nspec", {"n_layer": 2, "n_embd": 32, "n_head": 2, "mlp_internal_dim_multiplier": 8,
                               "vocab_size": 16}),
    ("ctm_tiny", "ctm.nspec", {}),
])
def test_authors_state_dict_loads_strictly_and_reproduces_their_outputs(bundle, spec, hyper):
    """The authors' own state_dict keys load with strict=True and the module reproduces their outputs."""
    from safetensors.torch import load_file
    from nspec.compiler.driver import compile_file

    module = tt.to_module(compile_file(SEEDS / spec, hyper))
    weights = load_file(CONFORMANCE / f"{bundle}.weights.safetensors")
    assert set(module.state_dict()) == set(weights)
    module.load_state_dict(weights, strict=True)
    inputs = dict(np.load(CONFORMANCE / f"{bundle}.inputs.npz"))
    outputs = dict(np.load(CONFORMANCE / f"{bundle}.outputs.npz"))
    tolerance = json.loads((CONFORMANCE / f"{bundle}.json").read_text())["tolerance"]
    (x,) = inputs.values()
    port = module._nspec.program.inputs[0]
    x = torch.as_tensor(x)
    if x.dim() == len(port.shape) + 1:
        x = x[:, None]  # one data step (CTM thinks in internal ticks)
    got = module(**{port.name: x})
    loss = 0
    for key, want in outputs.items():
        value = got[key][:, 0] if got[key].shape[1] == 1 and want.ndim == got[key].dim() - 1 else got[key]
        np.testing.assert_allclose(value.detach().numpy(), want, atol=tolerance, rtol=0)
        loss = loss + value.sum()
    loss.backward()
    grads = [p.grad for p in module.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


# ---------------------------------------------------------------- work done once per run
ONCE_SPEC = """
system Leaky {
  in x: f32[3]
  out y: f32[3]
  param tau: f32[3] = 5 bounded(1, 20) via sigmoid
  state v: f32[3] = 0
  let kappa = exp(-1 / tau)
  y = kappa * v + x
  next v = kappa * v + x
}
"""


@pytest.mark.parametrize("interpret", [False, True])
def test_parameter_only_values_are_computed_once_per_run(tmp_path, monkeypatch, interpret):
    """kappa = exp(-1 / tau) depends on a parameter only: one EXP per run, not one per step; a new run
    (here with other weights) computes it again, and the outputs equal the reference's.  Counted in
    the interpreter's rule, or in the ``torch.exp`` that generated code calls."""
    import nspec
    from nspec.lowering import torch_codegen as cg

    path = tmp_path / "leaky.nspec"
    path.write_text(ONCE_SPEC)
    model = nspec.load(path)
    calls = []
    monkeypatch.setattr(cg, "INTERPRET", interpret)
    if interpret:
        exp_rule = tr._RULE_OF["exp"]
        monkeypatch.setitem(tr._RULE_OF, "exp", lambda s, xs, frame: calls.append(1) or exp_rule(s, xs, frame))
    else:
        exp = torch.exp
        monkeypatch.setattr(torch, "exp", lambda x: calls.append(1) or exp(x))
    x = np.ones((2, 7, 3), np.float32)
    for raw in (0.0, 1.5):
        model.load_weights({"tau": np.full(3, raw, np.float32)})
        calls.clear()
        got = model.run({"x": x}, batch=2, backend="torch")["y"]
        assert len(calls) == 1
        np.testing.assert_allclose(got, model.run({"x": x}, batch=2, backend="reference")["y"], rtol=1e-6)


def test_linear_shaped_einsums_take_the_linear_kernel():
    assert tr.linear_form("ai,oi->ao") and tr.linear_form("i,oi->o") and tr.linear_form("bti,oi->bto")
    assert not tr.linear_form("ai,io->ao") and not tr.linear_form("ai,oi->oa") and not tr.linear_form("ii,oi->o")
    assert not tr.linear_form("ai,aoi->ao") and not tr.linear_form("ai,bi,ci->abc")
