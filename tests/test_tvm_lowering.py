"""The TVM backend against the reference interpreter: every op, a spiking network spike for spike
in strict mode, a dense program with LOOPs, the compile cache, and CUDA code generation without a
GPU.  Programs are built by hand with ``ir.GraphBuilder`` so each test names what it checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import CONTINUOUS
from nspec.lowering.tvm import build, cache as tvm_cache, rules
from nspec.lowering.tvm.executor import TvmExecutor
from nspec.runtime.executor import BackendError, RunRequest
from nspec.runtime.reference import ReferenceExecutor

F32, I32, I64, BOOL = DType.f32, DType.i32, DType.i64, DType.bool


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))


def _program(name, b: GraphBuilder, params=(), states=(), inputs=(), outputs=(), monitors=()) -> Program:
    step = b.build()
    p = Program(name, step, ir.Graph((), ()), tuple(params), tuple(states), tuple(inputs), tuple(outputs),
                tuple(monitors), dt=1e-4)
    ir.verify_program(p)
    return p


def _run_both(p: Program, request: RunRequest, **options):
    ref = ReferenceExecutor(p).run(request)
    got = TvmExecutor(p, progress=False, **options).run(request)
    return ref, got


def _assert_close(name, a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind == "f":
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6, err_msg=name)
    else:
        np.testing.assert_array_equal(b, a, err_msg=name)


# ---------------------------------------------------------------- every op
def _op_program():
    """One step graph computing every op on small shapes; each op's value is an output."""
    b = GraphBuilder()
    outs = []

    def out(name, node):
        n = b.nodes[node]
        outs.append(Var(name, n.dtype, n.shape))
        b.result(name, "output", node)

    x = b.arg("x", "input", F32, (3, 4))         # in (0.5, 2)
    y = b.arg("y", "input", F32, (3, 4))         # in (-1, 1)
    z = b.arg("z", "param", F32, (4,))
    idx = b.arg("idx", "param", I32, (5,))
    k = b.arg("k", "param", I64, ())
    s = b.arg("s", "state", F32, (4,))
    half = b.const(0.5)
    for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM):
        out(op.value, b.add(op, (x, y), F32, (3, 4)))
    out("mod", b.add(Op.MOD, (y, x), F32, (3, 4)))
    out("add_bcast", b.add(Op.ADD, (x, z), F32, (3, 4)))
    out("mul_scalar", b.add(Op.MUL, (y, half), F32, (3, 4)))
    cmp = {}
    for op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE):
        cmp[op] = b.add(op, (y, b.const(0.25)), BOOL, (3, 4))
        out(op.value, cmp[op])
    out("and", b.add(Op.AND, (cmp[Op.LT], cmp[Op.NE]), BOOL, (3, 4)))
    out("or", b.add(Op.OR, (cmp[Op.GT], cmp[Op.EQ]), BOOL, (3, 4)))
    out("not", b.add(Op.NOT, (cmp[Op.LT],), BOOL, (3, 4)))
    for op in (Op.NEG, Op.ABS, Op.EXP, Op.TANH, Op.SIGMOID, Op.RELU, Op.SILU, Op.SOFTPLUS, Op.SIN, Op.COS,
               Op.ERF, Op.FLOOR, Op.STOP_GRADIENT):
        out(op.value, b.add(op, (y,), F32, (3, 4)))
    for op in (Op.LOG, Op.SQRT):
        out(op.value, b.add(op, (x,), F32, (3, 4)))
    out("where", b.add(Op.WHERE, (cmp[Op.GT], x, y), F32, (3, 4)))
    seed = b.arg("seed", "param", I64, ())
    out("uniform", b.add(Op.UNIFORM, (k, seed), F32, (3, 4), (("stream", 2), ("streams", 3))))
    out("normal", b.add(Op.NORMAL, (k, seed), F32, (3, 4), (("stream", 1), ("streams", 3))))
    out("cast_i32", b.add(Op.CAST, (b.add(Op.MUL, (x, b.const(3.0)), F32, (3, 4)),), I32, (3, 4)))
    out("cast_f32", b.add(Op.CAST, (cmp[Op.GT],), F32, (3, 4)))
    out("spike", b.add(Op.SPIKE, (y,), F32, (3, 4), (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,)))))
    for op in (Op.SUM, Op.MEAN, Op.MAX, Op.MIN):
        out(op.value, b.add(op, (y,), F32, (3,), (("axes", (1,)), ("keepdims", False))))
        out(op.value + "_keep", b.add(op, (x,), F32, (1, 4), (("axes", (0,)), ("keepdims", True))))
    out("argmax", b.add(Op.ARGMAX, (y,), I64, (3,), (("axis", 1),)))
    out("softmax", b.add(Op.SOFTMAX, (y,), F32, (3, 4), (("axis", -1),)))
    out("logsumexp", b.add(Op.LOGSUMEXP, (y,), F32, (4,), (("axis", 0),)))
    out("layernorm", b.add(Op.LAYERNORM, (x, z, z), F32, (3, 4), (("eps", 1e-5),)))
    out("einsum", b.add(Op.EINSUM, (x, y), F32, (3, 3), (("equation", "ij,kj->ik"),)))
    out("einsum_vec", b.add(Op.EINSUM, (x, z), F32, (3,), (("equation", "ij,j->i"),)))
    out("reshape", b.add(Op.RESHAPE, (x,), F32, (4, 3)))
    out("transpose", b.add(Op.TRANSPOSE, (y,), F32, (4, 3), (("perm", (1, 0)),)))
    out("broadcast", b.add(Op.BROADCAST, (z,), F32, (3, 4)))
    out("concat", b.add(Op.CONCAT, (x, y), F32, (6, 4), (("axis", 0),)))
    out("slice", b.add(Op.SLICE, (x,), F32, (2, 2), (("starts", (1, 0)), ("stops", (3, 4)), ("steps", (1, 2)))))
    out("gather", b.add(Op.GATHER, (x, idx), F32, (3, 5), (("axis", 1),)))
    cols = b.const(np.array([3, 0, 3], np.int32), I32)
    vals = b.add(Op.SLICE, (y,), F32, (3, 3), (("starts", (0, 0)), ("stops", (3, 3)), ("steps", (1, 1))))
    out("scatter_add", b.add(Op.SCATTER_ADD, (x, cols, vals), F32, (3, 4), (("axis", 1),)))
    row = b.add(Op.RESHAPE, (b.add(Op.SLICE, (y,), F32, (1, 4), (("starts", (0, 0)), ("stops", (1, 4)),
                                                                  ("steps", (1, 1)))),), F32, (4,))
    spikes = b.add(Op.SPIKE, (row,), F32, (4,), (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))
    indptr = b.const(np.array([0, 2, 3, 3, 5], np.int64), I64)
    indices = b.const(np.array([0, 2, 1, 0, 2], np.int64), I64)
    weights = b.const(np.array([0.5, -1.0, 2.0, 0.25, 4.0], np.float32))
    out("propagate", b.add(Op.PROPAGATE, (spikes, indptr, indices, weights), F32, (3,), (("n_post", 3),)))
    status = b.arg("st", "state", I64, (3,))
    picks = b.add(Op.CAST, (b.add(Op.MUL, (y, b.const(9.0)), F32, (3, 4)),), I64, (3, 4))  # some in [-4, 4), some not
    b.result("st", "next", b.add(Op.CHECK, (status, picks), I64, (3,), (("site", 3), ("kind", "index"), ("size", 4))))
    out("check", b.add(Op.CHECK, (status, picks), I64, (3,), (("site", 2), ("kind", "divisor"))))
    empty = b.const(np.zeros((0,), np.float32))  # an empty constant is an argument too (ELM has one)
    out("empty_sum", b.add(Op.ADD, (b.add(Op.SUM, (empty,), F32, (), (("axes", (0,)), ("keepdims", False))), x),
                           F32, (3, 4)))
    total = b.add(Op.SUM, (x,), F32, (4,), (("axes", (0,)), ("keepdims", False)))
    b.result("s", "next", b.add(Op.ADD, (s, b.add(Op.MUL, (total, half), F32, (4,))), F32, (4,)))
    monitors = [ir.Monitor("s", "state", ("s",), None, 1), ir.Monitor("p", "state", ("propagate",), None, 2)]
    return _program("ops", b, params=[Var("z", F32, (4,)), Var("idx", I32, (5,)), Var("k", I64, ()), Var("seed", I64, ())],
                    states=[Var("s", F32, (4,)), Var("st", I64, (3,))],
                    inputs=[Var("x", F32, (3, 4)), Var("y", F32, (3, 4))], outputs=outs, monitors=monitors)


def test_every_op_outside_init_has_a_rule():
    missing = [op for op in Op if op not in ir.INIT_ONLY | CONTINUOUS and op not in rules.RULES]
    assert not missing


def op_request(batch: int = 2, steps: int = 3) -> RunRequest:
    """Inputs, parameters and state for ``_op_program`` (bench/cuba.py --gpu runs it on CUDA too)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 2.0, (batch, steps, 3, 4)).astype(np.float32)
    y = rng.uniform(-1.0, 1.0, (batch, steps, 3, 4)).astype(np.float32)
    y[:, :, 0, 1] = 0.25  # exercises EQ and the comparison boundaries
    params = {"z": rng.uniform(-1, 1, 4).astype(np.float32), "idx": np.array([3, 0, 1, 1, 2], np.int32),
              "k": np.array(2 ** 32 + 5, np.int64), "seed": np.array(2 ** 33 + 77, np.int64)}
    state = {"s": rng.uniform(-1, 1, (batch, 4)).astype(np.float32), "st": np.zeros((batch, 3), np.int64)}
    return RunRequest(params, state, {"x": x, "y": y}, steps, (("s", 1), ("propagate", 2)))


def test_every_op_matches_the_reference():
    p = _op_program()
    ops_used = {n.op for n in p.step.nodes}
    assert ops_used >= set(Op) - ir.INIT_ONLY - CONTINUOUS - {Op.LOOP, Op.ITEM}  # LOOP: see the dense test
    req = op_request()
    ref, got = _run_both(p, req)
    for name in ref.outputs:
        _assert_close(name, ref.outputs[name], got.outputs[name])
    for name in ref.records:
        _assert_close("record " + name, ref.records[name], got.records[name])
    _assert_close("state s", ref.state["s"], got.state["s"])
    _assert_close("state st", ref.state["st"], got.state["st"])


# ---------------------------------------------------------------- a spiking network
def cuba_like(n: int = 400, n_exc: int = 320, p_conn: float = 0.05, seed: int = 3) -> tuple[Program, dict, dict]:
    """A CUBA-shaped LIF network (exact-integration propagator, refractory counter, two CSR
    projections from population slices), with its parameters and initial state."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    v = b.arg("P/v", "state", F32, (n,))
    ge = b.arg("P/ge", "state", F32, (n,))
    gi = b.arg("P/gi", "state", F32, (n,))
    refr = b.arg("P/refractory", "state", F32, (n,))
    one, zero = b.const(1.0), b.const(0.0)
    in_refr = b.add(Op.GT, (refr, zero), BOOL, (n,))
    lin = b.add(Op.ADD, (b.add(Op.MUL, (b.const(0.995012), v), F32, (n,)),
                         b.add(Op.MUL, (b.const(0.004938), ge), F32, (n,))), F32, (n,))
    lin = b.add(Op.ADD, (lin, b.add(Op.MUL, (b.const(0.004963), gi), F32, (n,))), F32, (n,))
    lin = b.add(Op.ADD, (lin, b.const(-0.000244)), F32, (n,))
    v1 = b.add(Op.WHERE, (in_refr, v, lin), F32, (n,))
    spike = b.add(Op.SPIKE, (b.add(Op.SUB, (v1, b.const(-0.05)), F32, (n,)),), F32, (n,),
                  (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))
    spike = b.add(Op.MUL, (spike, b.add(Op.CAST, (b.add(Op.NOT, (in_refr,), BOOL, (n,)),), F32, (n,))), F32, (n,))
    fired = b.add(Op.GT, (spike, zero), BOOL, (n,))
    params, nexts = {}, {}
    for proj, (lo, hi, w, g, decay) in {"exc": (0, n_exc, 0.00162, ge, 0.980199),
                                        "inh": (n_exc, n, -0.009, gi, 0.99005)}.items():
        conn = rng.random((hi - lo, n)) < p_conn
        indptr = np.concatenate([[0], np.cumsum(conn.sum(1))]).astype(np.int64)
        indices = np.nonzero(conn)[1].astype(np.int64)
        params[f"{proj}/indptr"], params[f"{proj}/indices"] = indptr, indices
        ip = b.arg(f"{proj}/indptr", "param", I64, indptr.shape)
        ix = b.arg(f"{proj}/indices", "param", I64, indices.shape)
        pre = b.add(Op.SLICE, (spike,), F32, (hi - lo,), (("starts", (lo,)), ("stops", (hi,)), ("steps", (1,))))
        syn = b.add(Op.PROPAGATE, (pre, ip, ix, b.const(w)), F32, (n,), (("n_post", n),))
        nexts[g] = b.add(Op.ADD, (b.add(Op.MUL, (b.const(decay), g), F32, (n,)), syn), F32, (n,))
    b.result("P/spike", "value", spike)
    b.result("P/v", "next", b.add(Op.WHERE, (fired, b.const(-0.06), v1), F32, (n,)))
    b.result("P/ge", "next", nexts[ge])
    b.result("P/gi", "next", nexts[gi])
    count = b.add(Op.MAXIMUM, (b.add(Op.SUB, (refr, one), F32, (n,)), zero), F32, (n,))
    b.result("P/refractory", "next", b.add(Op.WHERE, (fired, b.const(50.0), count), F32, (n,)))
    pvars = [Var(k, I64, a.shape) for k, a in params.items()]
    svars = [Var(s, F32, (n,)) for s in ("P/v", "P/ge", "P/gi", "P/refractory")]
    monitors = [ir.Monitor("spikes", "spikes", ("P/spike",), None, 1)]
    prog = _program("cuba_like", b, params=pvars, states=svars, monitors=monitors)
    state = {"P/v": rng.uniform(-0.06, -0.05, (1, n)).astype(np.float32),
             "P/ge": np.zeros((1, n), np.float32), "P/gi": np.zeros((1, n), np.float32),
             "P/refractory": np.zeros((1, n), np.float32)}
    return prog, params, state


def test_strict_spiking_network_matches_the_reference_spike_for_spike():
    p, params, state = cuba_like()
    steps = 400
    req = RunRequest(params, state, {}, steps, (("P/spike", 1), ("P/v", 10)))
    ref, got = _run_both(p, req, strict=True)
    spikes = ref.records["P/spike"]
    assert 20 < spikes.sum() < 0.5 * spikes.size  # the network fires, sparsely
    np.testing.assert_array_equal(got.records["P/spike"], spikes)
    np.testing.assert_array_equal(got.records["P/v"], ref.records["P/v"])
    for name in ref.state:
        np.testing.assert_array_equal(got.state[name], ref.state[name], err_msg=name)


def test_fast_mode_agrees_with_the_reference_on_short_runs_and_in_rate():
    p, params, state = cuba_like()
    short = RunRequest(params, state, {}, 40, (("P/spike", 1),))
    ref, got = _run_both(p, short)
    np.testing.assert_array_equal(got.records["P/spike"], ref.records["P/spike"])
    long = RunRequest(params, state, {}, 1500, (("P/spike", 1),))
    ref, got = _run_both(p, long)
    r_ref, r_got = ref.records["P/spike"].mean(), got.records["P/spike"].mean()
    assert r_ref > 0 and abs(r_got - r_ref) < 0.15 * r_ref


def test_batched_trials_run_independently():
    n = 410  # not a multiple of the vector width: the scalar tail loop runs too
    p, params, state = cuba_like(n=n, n_exc=330)
    rng = np.random.default_rng(9)
    batch = {k: np.repeat(v, 3, axis=0) for k, v in state.items()}
    batch["P/v"] = rng.uniform(-0.06, -0.05, (3, n)).astype(np.float32)
    req = RunRequest(params, batch, {}, 120, (("P/spike", 1),))
    ref, got = _run_both(p, req, strict=True)
    np.testing.assert_array_equal(got.records["P/spike"], ref.records["P/spike"])


def test_cuba_spec_matches_the_reference_in_strict_mode():
    import nspec
    from nspec.runtime.reference import initialize

    p = nspec.load("specs/cuba.nspec").program
    params, state = initialize(p, 1, p.seed)
    ref, got = _run_both(p, RunRequest(params, state, {}, 300, (("P/spike", 1),)), strict=True)
    assert ref.records["P/spike"].sum() > 100
    np.testing.assert_array_equal(got.records["P/spike"], ref.records["P/spike"])


# ---------------------------------------------------------------- a dense program with LOOPs
def _loop_program(until: bool) -> Program:
    """h <- tanh(W h + x) for 6 ticks inside each step (stacked outputs), optionally stopping once
    mean(h) > 0.2; the step's output is the sum over ticks, the state keeps the final h."""
    b = GraphBuilder()
    body = GraphBuilder()
    h = body.arg("h", "state", F32, (4,))
    w = body.arg("W", "input", F32, (4, 4))
    xb = body.arg("xin", "input", F32, (4,))
    pre = body.add(Op.ADD, (body.add(Op.EINSUM, (w, h), F32, (4,), (("equation", "ij,j->i"),)), xb), F32, (4,))
    hn = body.add(Op.TANH, (pre,), F32, (4,))
    body.result("h", "next", hn)
    body.result("y", "output", body.add(Op.MUL, (hn, body.const(2.0)), F32, (4,)))
    if until:
        m = body.add(Op.MEAN, (hn,), F32, (), (("axes", (0,)), ("keepdims", False)))
        body.result("stop", "value", body.add(Op.GT, (m, body.const(0.2)), BOOL, ()))
    h0 = b.arg("h", "state", F32, (4,))
    W = b.arg("W", "param", F32, (4, 4))
    x = b.arg("x", "input", F32, (4,))
    loop = b.add(Op.LOOP, (h0, W, x), F32, (), (("body", body.build()), ("count", 6), ("carried", ("h",)),
                                                ("invariant", ("W", "xin")), ("stacked", ("y",)),
                                                ("until", "stop" if until else None)))
    hf = b.add(Op.ITEM, (loop,), F32, (4,), (("index", 0),))
    ys = b.add(Op.ITEM, (loop,), F32, (6, 4), (("index", 1),))
    b.result("h", "next", hf)
    b.result("out", "output", b.add(Op.SUM, (ys,), F32, (4,), (("axes", (0,)), ("keepdims", False))))
    b.result("ticks", "output", ys)
    return _program("loop_until" if until else "loop", b, params=[Var("W", F32, (4, 4))], states=[Var("h", F32, (4,))],
                    inputs=[Var("x", F32, (4,))], outputs=[Var("out", F32, (4,)), Var("ticks", F32, (6, 4))],
                    monitors=[ir.Monitor("h", "state", ("h",), None, 1)])


@pytest.mark.parametrize("until", [False, True])
def test_dense_program_with_a_loop_matches_the_reference(until):
    p = _loop_program(until)
    rng = np.random.default_rng(4)
    params = {"W": rng.normal(0, 0.6, (4, 4)).astype(np.float32)}
    state = {"h": rng.normal(0, 0.5, (3, 4)).astype(np.float32)}
    x = rng.normal(0.2, 0.5, (3, 5, 4)).astype(np.float32)
    ref, got = _run_both(p, RunRequest(params, state, {"x": x}, 5, (("h", 1),)))
    for name in ("out", "ticks"):
        _assert_close(name, ref.outputs[name], got.outputs[name])
    _assert_close("h", ref.state["h"], got.state["h"])
    _assert_close("record h", ref.records["h"], got.records["h"])


# ---------------------------------------------------------------- the compile cache
def _tiny() -> Program:
    b = GraphBuilder()
    s = b.arg("s", "state", F32, (8,))
    b.result("s", "next", b.add(Op.ADD, (b.add(Op.MUL, (s, b.const(0.5)), F32, (8,)), b.const(1.0)), F32, (8,)))
    return _program("tiny", b, states=[Var("s", F32, (8,))])


def _run_tiny(func_sig):
    import tvm

    func, sig, _ = func_sig
    s = tvm.runtime.tensor(np.zeros((1, 8), np.float32))
    ws = [tvm.runtime.empty((n,), d) for d, n in sig.workspace]
    func(s, *ws, 3)
    return s.numpy()


def _replace(path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_cache_hits_and_detects_corruption(tmp_path):
    p = _tiny()
    first = build.compile_program(p, progress=False)
    assert first[2]["cache"] == "miss"
    np.testing.assert_allclose(_run_tiny(first), np.full((1, 8), 1.75, np.float32))
    entry = tvm_cache.cache_root() / first[2]["key"]
    lib = entry / tvm_cache.LIBRARY
    # The first compile loaded the stored library, so this process maps it: the corrupted bytes
    # go into a new file renamed over it (rewriting a mapped library in place would crash the
    # process; the cache itself only ever renames entries into place).
    _replace(lib, lib.read_bytes()[:-100] + b"x" * 100)  # same size, different bytes
    assert build.compile_program(p, progress=False)[2]["cache"] == "miss"
    manifest = json.loads((entry / tvm_cache.MANIFEST).read_text())
    manifest["key"] = "0" * 64  # a stale manifest
    (entry / tvm_cache.MANIFEST).write_text(json.dumps(manifest))
    assert build.compile_program(p, progress=False)[2]["cache"] == "miss"
    (entry / tvm_cache.MANIFEST).write_text("{not json")
    assert build.compile_program(p, progress=False)[2]["cache"] == "miss"
    _replace(lib, lib.read_bytes()[:1000])  # truncated
    assert build.compile_program(p, progress=False)[2]["cache"] == "miss"
    hit = build.compile_program(p, progress=False)
    assert hit[2]["cache"] == "hit" and hit[2]["key"] == first[2]["key"]
    np.testing.assert_allclose(_run_tiny(hit), np.full((1, 8), 1.75, np.float32))


def test_cache_key_changes_with_program_target_and_mode():
    p = _tiny()
    keys = {tvm_cache.cache_key(build.cache_parts(p, t, strict, (), 256))
            for t in ("llvm", "cuda") for strict in (False, True)}
    assert len(keys) == 4
    b = GraphBuilder()
    s = b.arg("s", "state", F32, (8,))
    b.result("s", "next", b.add(Op.ADD, (b.add(Op.MUL, (s, b.const(0.5000001)), F32, (8,)), b.const(1.0)), F32, (8,)))
    other = _program("tiny", b, states=[Var("s", F32, (8,))])
    assert build.cache_parts(other, "llvm", False, (), 256) != build.cache_parts(p, "llvm", False, (), 256)


# ---------------------------------------------------------------- export and CUDA code generation
def test_export_writes_library_and_manifest_and_never_overwrites(tmp_path):
    p, _, _ = cuba_like(n=64, n_exc=48)
    path = tmp_path / "net.so"
    build.export(p, path, target="tvm-llvm")
    manifest = json.loads((tmp_path / "net.so.json").read_text())
    assert path.stat().st_size > 0 and manifest["signature"]["records"] == ["P/spike"]
    with pytest.raises(BackendError):
        build.export(p, path, target="tvm-llvm")
    build.export(p, path, target="tvm-llvm", force=True)


def test_cuda_code_generation_needs_no_gpu(tmp_path):
    p, _, _ = cuba_like(n=64, n_exc=48)
    path = tmp_path / "net_cuda.so"
    build.export(p, path, target="tvm-cuda")
    assert path.stat().st_size > 0
    assert json.loads((tmp_path / "net_cuda.so.json").read_text())["inputs"]["target"]["kind"] == "cuda"
    ex, _ = build.build(p, "cuda", False, ("P/spike",), 128)
    src = ex.mod.imports[0].inspect_source()
    assert "__global__" in src and "atomicAdd" in src and "__syncthreads" in src


def test_spike_records_larger_than_the_event_buffer_are_complete():
    """Recorded spike vectors travel as event lists; a run with more events than the first buffer
    holds (every neuron fires every step) is repeated with room, and matches the reference."""
    n = 64
    b = GraphBuilder()
    v = b.arg("v", "state", F32, (n,))
    s = b.add(Op.SPIKE, (b.add(Op.ADD, (v, b.const(1.0)), F32, (n,)),), F32, (n,),
              (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))
    ring = np.roll(np.arange(n), 1).astype(np.int64)
    syn = b.add(Op.PROPAGATE, (s, b.const(np.arange(n + 1, dtype=np.int64), I64), b.const(ring, I64),
                               b.const(0.001)), F32, (n,), (("n_post", n),))
    b.result("spike", "value", s)
    b.result("v", "next", b.add(Op.SUB, (b.add(Op.MUL, (v, b.const(0.5)), F32, (n,)), syn), F32, (n,)))
    p = _program("all_fire", b, states=[Var("v", F32, (n,))])
    state = {"v": np.zeros((2, n), np.float32)}
    ref, got = _run_both(p, RunRequest({}, state, {}, 100, (("spike", 1),)))
    assert ref.records["spike"].sum() == 2 * n * 100 > 1024
    np.testing.assert_array_equal(got.records["spike"], ref.records["spike"])
    np.testing.assert_allclose(got.state["v"], ref.state["v"], rtol=1e-6)
