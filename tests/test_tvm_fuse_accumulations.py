"""The TVM backend's fast-mode pass, ``fuse-accumulations``, and its ``--emit tir`` driver stage.

The pass turns ``add(x, propagate(...))`` (the PROPAGATE used only there) into a PROPAGATE that
accumulates into ``x``.  Checked here: what it rewrites and what it leaves alone, that the result
verifies, that the reference interpreter gives the same values (within float rounding: the
events now add into ``x`` one at a time) on the CUBA spec and on a hand-built network, that the
TVM backend runs it in fast mode only and emits one loop nest less for it, and that ``nspec
compile --emit tir`` prints the module (``--emit relax`` too, with a deprecation warning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.cli import main
from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import PropagateAttrs, SignatureError, infer
from nspec.compiler.passes.fuse_accumulations import fuse_accumulations, fuse_graph
from nspec.compiler.pipeline import BACKEND_PASSES, TVM_PASSES
from nspec.lowering.tvm.emit import backend_program, tir_text
from nspec.lowering.tvm.executor import TvmExecutor
from nspec.lowering.tvm.tir import Options
from nspec.runtime.executor import RunRequest
from nspec.runtime.reference import ReferenceExecutor, initialize

F32, I64 = DType.f32, DType.i64
ROOT = Path(__file__).resolve().parents[1]
CUBA = ROOT / "specs" / "cuba.nspec"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))


def _network(x_kind: str = "decay", uses: int = 1) -> tuple[Program, dict, dict]:
    """Two neurons' spikes into three targets: g' = x + propagate(spikes), where x is a decayed
    state ("decay") or the state itself ("state"); ``uses`` 2 also outputs the PROPAGATE."""
    b = GraphBuilder()
    s = b.arg("s", "input", F32, (2,))
    g = b.arg("g", "state", F32, (3,))
    ip = b.arg("indptr", "param", I64, (3,))
    ix = b.arg("indices", "param", I64, (4,))
    w = b.arg("w", "param", F32, (4,))
    syn = b.add(Op.PROPAGATE, (s, ip, ix, w), F32, (3,), (("n_post", 3),))
    x = b.add(Op.MUL, (b.const(0.9), g), F32, (3,)) if x_kind == "decay" else g
    b.result("g", "next", b.add(Op.ADD, (x, syn), F32, (3,)))
    if uses == 2:
        b.result("syn", "output", syn)
    step = b.build()
    p = Program("net", step, ir.Graph((), ()),
                (Var("indptr", I64, (3,)), Var("indices", I64, (4,)), Var("w", F32, (4,))),
                (Var("g", F32, (3,)),), (Var("s", F32, (2,)),),
                (Var("syn", F32, (3,)),) if uses == 2 else (), (), dt=1e-4)
    ir.verify_program(p)
    params = {"indptr": np.array([0, 3, 4]), "indices": np.array([0, 2, 1, 2]),
              "w": np.array([0.1, 0.2, 0.3, 0.4], np.float32)}
    return p, params, {"g": np.array([[1.0, 2.0, 3.0]], np.float32)}


def _accumulating(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in graph.nodes if n.op is Op.PROPAGATE and n.attrs.accumulate]


# ---------------------------------------------------------------- the rewrite
def test_add_of_a_propagate_becomes_an_accumulating_propagate():
    p, _, _ = _network()
    q = fuse_accumulations(p)
    ir.verify_program(q)
    (acc,) = _accumulating(q.step)
    assert not any(n.op is Op.ADD for n in q.step.nodes)
    assert sum(n.op is Op.PROPAGATE for n in q.step.nodes) == 1  # the old PROPAGATE is dropped
    assert q.step.nodes[acc.inputs[4]].op is Op.MUL  # it starts from the decayed state
    assert q.step.result("g", "next").node == q.step.nodes.index(acc)
    assert "accumulate=True" in ir.print_graph(q.step) and "accumulate" not in ir.print_graph(p.step)


@pytest.mark.parametrize("x_kind, uses", [("state", 1), ("decay", 2)], ids=["x-is-a-leaf", "propagate-used-twice"])
def test_the_pattern_is_left_alone_when_a_guard_fails(x_kind, uses):
    p, _, _ = _network(x_kind, uses)
    assert fuse_graph(p.step) == p.step


def test_the_accumulator_is_typed_by_the_signature():
    p, _, _ = _network()
    s, g, ip, ix, w = p.step.nodes[:5]
    acc = PropagateAttrs(3, accumulate=True)
    assert infer(Op.PROPAGATE, (s, ip, ix, w, g), acc) == (F32, (3,))
    with pytest.raises(SignatureError, match="accumulator"):
        infer(Op.PROPAGATE, (s, ip, ix, w, s), acc)  # [2] is not [n_post]
    with pytest.raises(SignatureError, match="takes 5 inputs"):
        infer(Op.PROPAGATE, (s, ip, ix, w), acc)
    with pytest.raises(SignatureError, match="takes 4 inputs"):
        infer(Op.PROPAGATE, (s, ip, ix, w, g), PropagateAttrs(3))


# ---------------------------------------------------------------- values on the reference
def _run(p: Program, params, state, inputs, steps, record=()):
    return ReferenceExecutor(p).run(RunRequest(params, state, inputs, steps, tuple(record)))


def test_the_reference_gives_the_same_values_with_and_without_the_pass():
    p, params, state = _network()
    inputs = {"s": np.array([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]], np.float32)}
    want = _run(p, params, state, inputs, 4).state["g"]
    got = _run(fuse_accumulations(p), params, state, inputs, 4).state["g"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.array_equal(want, state["g"])  # events arrived


def test_the_pass_preserves_the_cuba_spec_on_the_reference():
    p = nspec.load(CUBA).program
    q = fuse_accumulations(p)
    ir.verify_program(q)
    assert len(_accumulating(q.step)) == 2  # the excitatory and the inhibitory projection
    params, state = initialize(p, 1, p.seed)
    want = _run(p, params, state, {}, 60, (("P/spike", 1),))
    got = _run(q, params, state, {}, 60, (("P/spike", 1),))
    assert want.records["P/spike"].sum() > 0  # events reached the accumulators
    np.testing.assert_array_equal(got.records["P/spike"], want.records["P/spike"])
    for name in want.state:
        np.testing.assert_allclose(got.state[name], want.state[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- the TVM backend
def test_the_backend_runs_the_pass_in_fast_mode_only():
    p, _, _ = _network()
    assert [(q.name, q.run) for q in TVM_PASSES] == [("fuse-accumulations", fuse_accumulations)]
    assert BACKEND_PASSES["tvm (fast mode)"] is TVM_PASSES
    assert backend_program(p, strict=True) is p
    assert _accumulating(backend_program(p, strict=False).step)


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_tvm_matches_the_reference_on_the_fused_pattern(strict):
    p, params, state = _network()
    rng = np.random.default_rng(3)
    inputs = {"s": (rng.random((1, 30, 2)) < 0.5).astype(np.float32)}
    request = RunRequest(params, state, inputs, 30, ())
    want = ReferenceExecutor(p).run(request).state["g"]
    got = TvmExecutor(p, progress=False, strict=strict).run(request).state["g"]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_fast_mode_updates_the_state_in_the_event_scan():
    """The fused kernel adds into the state's own buffer: no zeroed buffer, no addition pass."""
    p, _, _ = _network()
    fast, strict = tir_text(p, Options(parallel=False)), tir_text(p, Options(parallel=False, strict=True))
    scatter = 'state_g[v, T.Cast("int32", param_indices[v_5])] = state_g[v, T.Cast("int32", param_indices[v_5])] +'
    assert scatter in fast and scatter not in strict
    assert "] = T.float32(0.0)" in strict and "] = T.float32(0.0)" not in fast  # no zeroed buffer
    assert fast.count("for ") == strict.count("for ") - 2  # no zeroing loop, no addition loop


# ---------------------------------------------------------------- nspec compile --emit tir
def test_emit_tir_prints_the_module_and_relax_is_a_deprecated_alias(capsys):
    assert main(["compile", str(CUBA), "--emit", "tir"]) == 0
    tir, err = capsys.readouterr()
    assert "@T.prim_func" in tir and "def main(" in tir and not err
    assert main(["compile", str(CUBA), "--emit", "relax"]) == 0
    relax, err = capsys.readouterr()
    assert relax == tir
    assert err.strip() == "warning: --emit relax is deprecated; use --emit tir"
