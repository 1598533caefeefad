"""BDH in the authors' parallel form (specs/seeds/bdh_parallel.nspec) reproduces the reference.

One data step is one whole sequence: ``idx: i64[T]`` -> ``logits: f32[T, vocab_size]``, so idx
(B, T) and one step give logits (B, T, V), the reference forward's shapes.  T is a hyperparameter
(``--param T=<len>``); everything else is the reference constructor's arguments, and the weights
are the reference state_dict, the same file as the recurrent form (specs/seeds/bdh.nspec) loads.

Three truths: the authors' bundle (tests/conformance/bdh_tiny.*), the NumPy oracle of
tests/seed_oracles.py (float64, parallel form) on other sizes and random weights, and the
recurrent spec on the same weights file (a different computation: a Hebbian state streamed token
by token, so equal logits check the parallel spec's mask, positions and head layout).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import seed_oracles as oracle
from nspec.cli import main
from test_seeds import BACKENDS, CONFORMANCE, SEEDS, assert_close, bundle, nspec_run, params, save_weights
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

MODEL = "bdh_parallel"


def with_length(config: dict, idx: np.ndarray) -> dict:
    """The reference config plus the sequence length the reference reads from idx (B, T)."""
    return {**config, "T": int(idx.shape[1])}


# ---------------------------------------------------------------- the authors' bundle
@pytest.mark.parametrize("backend", BACKENDS)
def test_bundle_reproduced_through_nspec_run(backend, tmp_path):
    """The reference config and --param T=<len>, the reference state_dict: the reference logits."""
    meta, weights, inputs, outputs = bundle("bdh_tiny")
    got = nspec_run(tmp_path, MODEL, with_length(meta["config"], inputs["idx"]), weights, inputs, backend)
    assert_close(got, outputs, meta["outputs"])


def test_bundle_reproduced_by_the_nspec_command(tmp_path):
    """The same as a shell runs it, without --batch: the npz's leading axis is the batch."""
    meta, weights, inputs, outputs = bundle("bdh_tiny")
    output = tmp_path / "out.npz"
    args = (["run", str(SEEDS / f"{MODEL}.nspec")] + params(with_length(meta["config"], inputs["idx"]))
            + ["--weights", str(weights), "--inputs", str(CONFORMANCE / "bdh_tiny.inputs.npz"),
               "--output", str(output), "-q"])
    done = subprocess.run([sys.executable, "-m", "nspec", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(output) as data:
        assert_close({k: data[k] for k in data.files}, outputs, meta["outputs"])


# ---------------------------------------------------------------- other configurations vs the oracle
CASES = [  # (config, B, T, backends)
    (dict(n_layer=1, n_embd=16, n_head=1, mlp_internal_dim_multiplier=4, vocab_size=7), 2, 9, BACKENDS),
    (dict(n_layer=3, n_embd=24, n_head=4, mlp_internal_dim_multiplier=6, vocab_size=30), 3, 20, BACKENDS[:3]),
    (dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=3, vocab_size=256, dropout=0.1), 1, 33,
     BACKENDS[:3]),
    # one token: the mask is all zero, each layer reduces to x = LN(x + LN(0 @ decoder)) = LN(x)
    (dict(n_layer=2, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, vocab_size=11), 2, 1, ("reference",)),
    # long sequences: RoPE phases of positions up to 511, a 512 x 512 causal mask
    (dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16), 2, 512, BACKENDS[:3]),
    (dict(n_layer=1, n_embd=64, n_head=4, mlp_internal_dim_multiplier=16, vocab_size=64), 1, 300, ("reference",)),
]


@pytest.mark.parametrize("config, B, T, backends", CASES, ids=["L1-h1", "L3-h4", "V256", "T1", "T512", "D64-T300"])
def test_matches_oracle(config, B, T, backends, tmp_path):
    rng = np.random.default_rng(T + B)
    sd = oracle.bdh_state_dict(config, rng)
    idx = rng.integers(0, config["vocab_size"], size=(B, T))
    want = {"logits": oracle.bdh_forward(sd, config, idx)}
    weights = save_weights(tmp_path / "w.safetensors", sd)
    for backend in backends:
        got = nspec_run(tmp_path, MODEL, {**config, "T": T}, weights, {"idx": idx}, backend)
        try:
            assert_close(got, want, ["logits"])
        except AssertionError as exc:
            raise AssertionError(f"{backend}: {exc}") from None


# ---------------------------------------------------------------- the recurrent form on the same weights
@pytest.mark.parametrize("config, T", [
    (dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16), 40),
    (dict(n_layer=3, n_embd=24, n_head=3, mlp_internal_dim_multiplier=4, vocab_size=50), 17),
], ids=["L2-h2", "L3-h3"])
def test_equals_the_recurrent_form_on_one_weights_file(config, T, tmp_path):
    """bdh.nspec (Hebbian state, one token per step) and bdh_parallel.nspec (one sequence per step)
    load one safetensors file and give the same logits."""
    rng = np.random.default_rng(7 * T)
    weights = save_weights(tmp_path / "w.safetensors", oracle.bdh_state_dict(config, rng))
    idx = rng.integers(0, config["vocab_size"], size=(2, T))
    runs = {form: tmp_path / form for form in ("recurrent", "parallel")}
    for folder in runs.values():
        folder.mkdir()
    recurrent = nspec_run(runs["recurrent"], "bdh", config, weights, {"idx": idx})
    parallel = nspec_run(runs["parallel"], MODEL, {**config, "T": T}, weights, {"idx": idx})
    assert parallel["logits"].shape == (2, T, config["vocab_size"])
    assert_close(parallel, recurrent, ["logits"])


def test_both_forms_declare_the_same_weight_keys_and_shapes():
    """The reference state_dict layout, key for key, in both specs (at the reference defaults)."""
    import nspec

    def layout(name, **hyper):
        model = nspec.load(SEEDS / f"{name}.nspec", **hyper)
        return {v.key or v.name: tuple(v.shape) for v in model.program.params}

    small = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16)
    got = layout(MODEL, T=5, **small)
    assert got == layout("bdh", **small)
    assert set(got) == {"embed.weight", "encoder", "encoder_v", "decoder", "lm_head", "attn.freqs"}


# ---------------------------------------------------------------- user errors
def test_a_sequence_of_another_length_than_T_is_a_clear_error(tmp_path, capsys):
    config = dict(n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, vocab_size=5)
    weights = save_weights(tmp_path / "w.safetensors", oracle.bdh_state_dict(config, np.random.default_rng(0)))
    np.savez(tmp_path / "in.npz", idx=np.zeros((2, 7), np.int64))
    args = (["run", str(SEEDS / f"{MODEL}.nspec")] + params({**config, "T": 6})
            + ["--weights", str(weights), "--inputs", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz"),
               "-q"])
    assert main(args) == 1
    assert "input 'idx' has shape [2, 7]; the port is i64[6]" in capsys.readouterr().err
