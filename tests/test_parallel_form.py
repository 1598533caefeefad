"""The parallel-form pass (compiler/passes/parallel_form.py, run by runtime/parallel.py).

A recurrent spec whose only memory is sums of outer products read linearly (bdh.nspec, linear
attention without its normaliser, GLA with its per-key decay) runs a whole sequence as masked matmuls over a chunk of tokens,
and gives the logits and final states of the token-by-token run (``parallel_form=False``) within
1e-5 on every backend.  A spec that breaks one of the pass's conditions stays recurrent: the plan
names the condition, and no parallel form is built (asserted on the executor, not only on outputs).

What chance would give: the outputs change from token to token by more than 1e-3 here (asserted),
so a form whose mask is off by one token, which reads a token's neighbour, or which drops the
carried state, misses the 1e-5 tolerance by two orders of magnitude or more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.compiler.ir import Op, verify_program
from nspec.compiler.passes.parallel_form import parallel_form, plan_parallel_form

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "specs" / "seeds"
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

BDH_TINY = dict(n_layer=2, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, vocab_size=16)
BDH_TVM = dict(n_layer=1, n_embd=8, n_head=2, mlp_internal_dim_multiplier=2, vocab_size=16)


def bdh_weights(cfg, seed=0):
    """Random reference-keyed weights, std 0.1 so the Hebbian reads move the logits visibly."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    import seed_oracles as oracle
    return oracle.bdh_state_dict(cfg, np.random.default_rng(seed), std=0.1)


def both_runs(model, inputs, backend, **options):
    """(outputs, final state) of the run through the pass, then of the token-by-token run."""
    batch = next(iter(inputs.values())).shape[0]
    got = model.run(inputs=inputs, batch=batch, backend=backend, **options)
    got_state = model.get_state()
    want = model.run(inputs=inputs, batch=batch, backend=backend, parallel_form=False)
    return (got, got_state), (want, model.get_state())


def assert_equal_runs(got, want, tol=TOL):
    (out, state), (out_r, state_r) = got, want
    for k in out_r:
        assert out[k].shape == out_r[k].shape
        assert np.max(np.abs(out[k] - out_r[k])) < tol, k
        # the outputs move from token to token by far more than the tolerance (module docstring)
        assert np.max(np.abs(np.diff(out_r[k], axis=1))) > 1e-3, k
    assert set(state) == set(state_r)
    for k in state_r:
        assert np.max(np.abs(state[k] - state_r[k])) < tol * max(1.0, float(np.max(np.abs(state_r[k])))), k


# ---------------------------------------------------------------- the pass applies
def test_bdh_plan_finds_the_hebbian_states_and_the_position_counter():
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    plan = plan_parallel_form(model.program)
    assert plan.applies, plan.reason
    assert [a.state for a in plan.accumulators] == ["layers/0/S", "layers/1/S"]
    assert [c.state for c in plan.counters] == ["embed/position"]
    assert all(len(a.reads) == 1 for a in plan.accumulators)
    lifted = parallel_form(model.program, 5, plan)
    verify_program(lifted)
    assert [v.shape for v in lifted.inputs] == [(5,)] and lifted.outputs[0].shape == (5, 16)
    # the hoisted form holds no per-token outer product [5, nh, N, D]: only the two masks' matmuls
    assert not any(len(n.shape) == 4 and n.shape[0] == 5 and n.op is Op.EINSUM for n in lifted.step.nodes)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch"])
def test_bdh_through_the_pass_equals_the_recurrent_run(backend):
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    model.load_weights(bdh_weights(BDH_TINY))
    idx = np.random.default_rng(1).integers(0, 16, size=(2, 9))
    got, want = both_runs(model, {"idx": idx}, backend)
    assert_equal_runs(got, want)
    assert list(model.executor(backend).forms) == [(9, True, False)]  # the run went through the parallel form


def test_bdh_through_the_pass_on_tvm():
    pytest.importorskip("tvm")
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TVM)
    model.load_weights(bdh_weights(BDH_TVM))
    idx = np.random.default_rng(2).integers(0, 16, size=(1, 6))
    got, want = both_runs(model, {"idx": idx}, "tvm")
    assert_equal_runs(got, want)
    assert list(model.executor("tvm").forms) == [(6, True, False)]


def test_gla_over_more_than_one_decay_chunk():
    """70 tokens: one chunk of DECAY_CHUNK (64) tokens in the parallel form, then 6 stepped."""
    model = nspec.load(SEEDS / "gla.nspec", tau=2.0)
    x = np.random.default_rng(12).normal(size=(1, 70, 8)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, "reference")
    assert_equal_runs(got, want)
    assert list(model.executor("reference").forms) == [(64, True, True)]


def test_gla_through_the_pass_on_tvm():
    pytest.importorskip("tvm")
    model = nspec.load(SEEDS / "gla.nspec", tau=2.0, gate_rank=0, n_heads=1)
    x = np.random.default_rng(11).normal(size=(1, 5, 8)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, "tvm")
    assert_equal_runs(got, want)
    assert list(model.executor("tvm").forms) == [(5, True, False)]


def test_chunks_carry_the_state_and_a_resumed_run_starts_from_it():
    """11 tokens in chunks of 4: two parallel chunks, then 3 tokens stepped; then 5 more resumed
    from the state left (a non-zero Hebbian state and position at the start of the form)."""
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    model.load_weights(bdh_weights(BDH_TINY))
    idx = np.random.default_rng(3).integers(0, 16, size=(1, 16))
    first = model.run(inputs={"idx": idx[:, :11]}, batch=1, parallel_chunk=4)
    second = model.run(inputs={"idx": idx[:, 11:]}, batch=1, parallel_chunk=4, resume=True)
    chunked = ({"logits": np.concatenate([first["logits"], second["logits"]], axis=1)}, model.get_state())
    # (length, from zero, with final states): then 4 + 1 stepped, so both forms compute their final state
    assert list(model.executor("reference", parallel_chunk=4).forms) == [(4, True, True), (4, False, True)]
    want = model.run(inputs={"idx": idx}, batch=1, parallel_form=False)
    assert_equal_runs(chunked, (want, model.get_state()))
    assert chunked[1]["embed/position"][0] == 16


def test_stepping_token_by_token_stays_recurrent():
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    model.load_weights(bdh_weights(BDH_TINY))
    stepped = [model.step({"idx": np.int64(t)})["logits"] for t in (3, 1, 4)]
    assert model.executor("reference").forms == {}
    want = model.run(inputs={"idx": np.array([[3, 1, 4]])}, batch=1)
    assert list(model.executor("reference").forms) == [(3, True, False)]
    assert np.max(np.abs(np.stack(stepped) - want["logits"][0])) < TOL


def test_a_form_over_the_memory_limit_steps_recurrently():
    """200 tokens: the form's [H, 200, 200] scores need ~2.5 MB to compile, over a 1 MB limit that
    the step itself fits in: the run steps token by token and says why no form was built."""
    from nspec.compiler.limits import limits_for, using
    model = nspec.load(SEEDS / "linear_attention.nspec", normalize=False)
    x = np.random.default_rng(13).normal(size=(1, 200, 8)).astype(np.float32)
    with using(limits_for("1MB")):
        got, want = both_runs(model, {"x": x}, "reference")
    assert_equal_runs(got, want)
    ex = model.executor("reference")
    assert ex.forms == {(200, True, False): None} and "tensor of shape" in ex.declined[(200, True, False)]



# ---------------------------------------------------------------- the final state, summed when read
def test_a_run_leaves_its_last_chunk_s_final_state_to_be_summed_when_read():
    """The last chunk's form has no contraction over the time axis into a state (BDH's S_T, a
    quarter of its multiply-adds): it outputs k and v instead; the run's state holds the sums
    pending through the NaN check, and reading it adds them up to the stepped run's state."""
    from nspec.runtime.parallel import FinalState
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    model.load_weights(bdh_weights(BDH_TINY))
    plan = plan_parallel_form(model.program)
    shape = model.program.var("layers/0/S").shape
    into_state = lambda form: sum(n.op is Op.EINSUM and n.shape == shape for n in form.step.nodes)  # noqa: E731
    assert into_state(parallel_form(model.program, 5, plan, True)) == 2  # one per layer
    lean = parallel_form(model.program, 5, plan, True, final=False)
    verify_program(lean)
    assert into_state(lean) == 0 and [v.name for v in lean.states] == ["embed/position"]
    factors = {f"layers/{i}/S/{f}" for i in (0, 1) for f in ("key", "value")}
    assert {v.name for v in lean.outputs} == {"logits", *factors}
    idx = np.random.default_rng(14).integers(0, 16, size=(2, 5))
    out = model.run(inputs={"idx": idx}, batch=2)  # nan_check="error": the bound rules an overflow out
    assert isinstance(model.state, FinalState) and set(model.state.pending) == {"layers/0/S", "layers/1/S"}
    assert set(out) == {"logits"}
    got = (out, model.get_state())
    assert not model.state.pending
    want = model.run(inputs={"idx": idx}, batch=2, parallel_form=False), model.get_state()
    assert_equal_runs(got, want)


def test_stepping_on_after_a_run_starts_from_its_summed_state():
    model = nspec.load(SEEDS / "bdh.nspec", **BDH_TINY)
    model.load_weights(bdh_weights(BDH_TINY))
    idx = np.random.default_rng(15).integers(0, 16, size=(1, 7))
    model.run(inputs={"idx": idx[:, :6]}, batch=1)
    last = model.step({"idx": idx[0, 6]})["logits"]
    want = model.run(inputs={"idx": idx}, batch=1, parallel_form=False)["logits"][0, -1]
    assert np.max(np.abs(last - want)) < TOL
    assert model.get_state()["embed/position"][0] == 7


def test_the_nan_check_adds_up_a_pending_sum_that_may_overflow(tmp_path):
    """x ~ 1e38: S = sum_t k_t (x) x_t overflows f32 by step 2; the bound does not rule that out,
    so the check sums the pending state, finds Inf and names it, as for the stepped run."""
    from nspec.runtime.model import NonFiniteError
    model = hebb(tmp_path)
    x = np.full((1, 6, 3), 1e38, np.float32)
    for parallel in (True, False):
        with pytest.raises(NonFiniteError, match="'S'"):
            model.run(inputs={"x": x}, batch=1, parallel_form=parallel)

@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_linear_attention_without_its_normaliser(backend):
    model = nspec.load(SEEDS / "linear_attention.nspec", normalize=False)
    assert plan_parallel_form(model.program).applies
    x = np.random.default_rng(4).normal(size=(2, 7, 8)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, backend)
    assert_equal_runs(got, want)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch"])
def test_gla_its_gate_decaying_each_key_channel(backend):
    """S = diag(alpha_t) S + k v^T: the products of the gates between s and t weigh q_t k_s.
    tau = 2 (not the paper's 16) so the gates are far from 1: a form that left the decay out
    would give the open-gated outputs, which differ from these by more than 1e-2 (asserted)."""
    model = nspec.load(SEEDS / "gla.nspec", tau=2.0)
    plan = plan_parallel_form(model.program)
    assert plan.applies and plan.accumulators[0].decay is not None
    x = np.random.default_rng(8).normal(size=(2, 7, 8)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, backend)
    assert_equal_runs(got, want)
    undecayed = nspec.load(SEEDS / "gla.nspec", tau=1e12)
    undecayed.params = model.params
    open_gates = undecayed.run(inputs={"x": x}, batch=2, parallel_form=False)["y"]
    assert np.max(np.abs(open_gates - want[0]["y"])) > 1e-2
    assert list(model.executor(backend).forms) == [(7, True, False)]
    # and from a non-zero state: the start state's term, decayed
    x2 = np.random.default_rng(9).normal(size=(2, 5, 8)).astype(np.float32)
    model.run(inputs={"x": x}, batch=2, backend=backend)
    got = model.run(inputs={"x": x2}, batch=2, backend=backend, resume=True), model.get_state()
    model.run(inputs={"x": x}, batch=2, backend=backend, parallel_form=False)
    want = model.run(inputs={"x": x2}, batch=2, backend=backend, resume=True, parallel_form=False), model.get_state()
    assert_equal_runs(got, want)
    assert (5, False, False) in model.executor(backend).forms


# ---------------------------------------------------------------- the pass does not apply
def test_seed_specs_outside_the_conditions_stay_recurrent():
    """Linear attention's normaliser adds k, not an outer product."""
    normalised = plan_parallel_form(nspec.load(SEEDS / "linear_attention.nspec").program)
    assert not normalised.applies and "'z'" in normalised.reason and "outer product" in normalised.reason


TEMPLATE = """
module hebb "a Hebbian memory read by the input"
system M {{
  in x: f32[3]
  {extra_in}
  out y: f32[3]
  param W: f32[3, 3] = normal(0, 0.5)
  state S: f32[3, 3] = 0
  {extra_state}
  let k = tanh(W @ x)
  {k_line}
  y = {read}
  next S = {write}
}}
simulate M for 6 s, dt = 1 s
"""
BASE = dict(extra_in="", extra_state="", k_line="", read='einsum("i,ij->j", x, S)',
            write='S + einsum("i,j->ij", k, x)')

VIOLATIONS = {
    "S read nonlinearly": (dict(read='einsum("i,ij->j", x, relu(S))'), "not only read linearly"),
    "S in an output": (dict(read='einsum("i,ij->j", x, S) + S[0]'), "not only read linearly"),
    "S feeds k": (dict(k_line='let k2 = k + einsum("i,ij->j", x, S)', write='S + einsum("i,j->ij", k2, x)'),
                  "depend on it"),
    "S read by itself": (dict(read='einsum("ij,ij->j", S, S)'), "not only read linearly"),
    "a decay depending on S": (dict(write='reshape(exp(-abs(einsum("i,ij->j", x, S))), [3, 1]) * S + '
                                      'einsum("i,j->ij", k, x)'), "depend on it"),
    "a decay along the value's axis": (dict(write='reshape(sigmoid(x), [1, 3]) * S + einsum("i,j->ij", k, x)'),
                                       "its decay varies along an axis"),
    "a decay of either sign": (dict(write='reshape(tanh(x), [3, 1]) * S + einsum("i,j->ij", k, x)'),
                               "not known to be >= 0"),
    "a decay that is not a product": (dict(write='S - 0.1 * S * S + einsum("i,j->ij", k, x)'), "another recurrence"),
    "a summed index: not an outer product": (dict(write='S + einsum("i,j,j->ij", k, x, x)'), "outer product"),
    "another recurrent state": (dict(extra_state="state h: f32[3] = 0\n  next h = tanh(h + x)",
                                     read='einsum("i,ij->j", h, S)'), "'h'"),
    "a counter stepping by a fraction": (dict(extra_state="state c: f32 = 0\n  next c = c + 0.5",
                                              read='c * einsum("i,ij->j", x, S)'), "integer"),
    "an op with no rule for a time axis": (dict(extra_in="in i: i64", read='einsum("i,ij->j", x, S) * x[i]'),
                                           "no rule for a time axis"),
}


def hebb(tmp_path, **changes):
    path = tmp_path / "hebb.nspec"
    path.write_text(TEMPLATE.format(**{**BASE, **changes}))
    return nspec.load(path)


def test_the_base_hebbian_spec_goes_through_the_pass(tmp_path):
    """The template the violations change: one accumulator, read before its write."""
    model = hebb(tmp_path)
    assert plan_parallel_form(model.program).applies
    x = np.random.default_rng(5).normal(size=(1, 6, 3)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, "reference")
    assert_equal_runs(got, want)
    assert list(model.executor("reference").forms) == [(6, True, False)]


@pytest.mark.parametrize("write", ['0.9 * S + einsum("i,j->ij", k, x)',
                                   'reshape(sigmoid(x), [3, 1]) * S + einsum("i,j->ij", k, x)'])
def test_a_decay_of_the_state_or_of_its_key_rows_goes_through_the_pass(tmp_path, write):
    model = hebb(tmp_path, write=write)
    assert plan_parallel_form(model.program).accumulators[0].decay is not None
    x = np.random.default_rng(10).normal(size=(1, 6, 3)).astype(np.float32)
    got, want = both_runs(model, {"x": x}, "reference")
    assert_equal_runs(got, want)


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_a_spec_breaking_a_condition_stays_recurrent(tmp_path, name):
    changes, reason = VIOLATIONS[name]
    model = hebb(tmp_path, **changes)
    plan = plan_parallel_form(model.program)
    assert not plan.applies and reason in plan.reason, plan.reason
    rng = np.random.default_rng(6)
    inputs = {"x": rng.normal(size=(1, 6, 3)).astype(np.float32)}
    if "extra_in" in changes:
        inputs["i"] = rng.integers(0, 3, size=(1, 6))
    model.run(inputs=inputs, batch=1)
    assert model.executor("reference").forms == {}  # nothing was hoisted: it ran token by token


def test_nspec_run_no_parallel_form_gives_the_same_logits(tmp_path):
    """The command line's switch: the same run with and without the pass, one output file each."""
    from nspec.cli import main
    np.savez(tmp_path / "idx.npz", idx=np.random.default_rng(7).integers(0, 16, size=(1, 8)))
    params = [a for k, v in BDH_TINY.items() for a in ("--param", f"{k}={v}")]
    outs = []
    for flag in ([], ["--no-parallel-form"]):
        out = tmp_path / f"out{len(flag)}.npz"
        assert main(["run", str(SEEDS / "bdh.nspec"), *params, "--inputs", str(tmp_path / "idx.npz"), "-o", str(out),
                     "-q", *flag]) == 0
        with np.load(out) as f:
            outs.append(f["logits"])
    assert outs[0].shape == (1, 8, 16)
    assert np.max(np.abs(outs[0] - outs[1])) < TOL
    assert np.max(np.abs(np.diff(outs[1], axis=1))) > 1e-3  # what a shifted or uncarried form would miss by
