"""The seed models (BDH, CTM, ELM v1 and v2) reproduce the authors' reference forward passes.

The interoperability contract of SEED_MODELS.md: ``nspec run specs/seeds/<model>.nspec --param k=v
... --weights W --inputs I --output O --backend B`` takes the reference constructor's arguments as
they are (and nothing else: CTM's input width and token count are bound by the data), loads the
reference state_dict by its own keys, and writes the reference outputs under their own names,
within 1e-4 on every backend.

Two kinds of truth: the authors' bundles (``tests/conformance``, produced by their code) and the
independent NumPy oracles of ``tests/seed_oracles.py`` (written from the equations), first checked
against the bundles and then used on configurations and random weights the bundles do not cover.
Reference-layout inputs are batched (``[B, T, ...]`` or ``[B, ...]``): the runs pass ``--batch B``,
and one test checks that ``nspec run`` reads the leading axis as the batch without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seed_oracles as oracle
from nspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "specs" / "seeds"
CONFORMANCE = Path(__file__).parent / "conformance"
TOLERANCE = 1e-4
BACKENDS = ("reference", "onnxruntime", "torch", "tvm")
BUNDLES = ("bdh_tiny", "ctm_tiny", "elm_tiny", "elm_neuronio_best")
OUTPUTS = {"bdh": ("logits",), "ctm": ("predictions", "certainties"), "elm": ("Y",), "elm_v2": ("Y",)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------- the command-line contract
def params(config: dict) -> list[str]:
    """``--param k=v`` for each reference constructor argument (None means the reference default)."""
    out = []
    for key, value in config.items():
        if value is not None:
            out += ["--param", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return out


def run_args(model, config, weights, inputs_path, output, backend, batch=None) -> list[str]:
    return (["run", str(SEEDS / f"{model}.nspec")] + params(config)
            + ["--weights", str(weights), "--inputs", str(inputs_path), "--output", str(output),
               "--backend", backend, "-q"] + (["--batch", str(batch)] if batch else []))


def nspec_run(tmp_path, model, config, weights, inputs: dict, backend="reference") -> dict:
    """``nspec run`` in process on named inputs; the outputs file, read back."""
    stem = f"{Path(weights).name.replace('.', '_')}_{backend}"
    inputs_path, output = tmp_path / f"in_{stem}.npz", tmp_path / f"out_{stem}.npz"
    np.savez(inputs_path, **inputs)
    batch = next(iter(inputs.values())).shape[0]
    assert main(run_args(model, config, weights, inputs_path, output, backend, batch)) == 0
    with np.load(output) as data:
        return {k: data[k] for k in data.files}


def save_weights(path: Path, state_dict: dict) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
    return path


def assert_close(got: dict, want: dict, names) -> None:
    for name in names:
        assert got[name].shape == want[name].shape, f"{name}: shape {got[name].shape}, want {want[name].shape}"
        err = float(np.max(np.abs(got[name] - want[name])))
        assert err <= TOLERANCE, f"{name}: max |diff| {err:.3g} > {TOLERANCE}"


def bundle(name: str):
    meta = json.loads((CONFORMANCE / f"{name}.json").read_text())
    with np.load(CONFORMANCE / f"{name}.inputs.npz") as i, np.load(CONFORMANCE / f"{name}.outputs.npz") as o:
        inputs, outputs = {k: i[k] for k in i.files}, {k: o[k] for k in o.files}
    return meta, CONFORMANCE / f"{name}.weights.safetensors", inputs, outputs


# ---------------------------------------------------------------- the authors' bundles
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_reproduced_through_nspec_run(name, backend, tmp_path):
    """The reference config as --param, the reference state_dict as --weights: the reference outputs."""
    meta, weights, inputs, outputs = bundle(name)
    got = nspec_run(tmp_path, meta["model"], meta["config"], weights, inputs, backend)
    assert_close(got, outputs, meta["outputs"])


@pytest.mark.parametrize("name", ["bdh_tiny", "ctm_tiny", "elm_tiny"])
def test_bundle_reproduced_by_the_nspec_command(name, tmp_path):
    """The same contract as a shell runs it: ``python -m nspec run ...`` in a fresh process."""
    meta, weights, inputs, outputs = bundle(name)
    config = meta["config"]
    output = tmp_path / "out.npz"
    batch = next(iter(inputs.values())).shape[0]
    args = run_args(meta["model"], config, weights, CONFORMANCE / f"{name}.inputs.npz", output, "reference", batch)
    done = subprocess.run([sys.executable, "-m", "nspec", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(output) as data:
        assert_close({k: data[k] for k in data.files}, outputs, meta["outputs"])


@pytest.mark.parametrize("name", ["ctm_tiny", "elm_tiny"])
def test_nspec_run_reads_the_leading_npz_axis_as_the_batch(name, tmp_path):
    """Without --batch, x (B, C, S) is B samples, not B data steps of one sample (which would carry
    CTM's state from sample 0 into sample 1 and still have the reference's shape)."""
    meta, weights, inputs, outputs = bundle(name)
    config = meta["config"]
    output = tmp_path / "out.npz"
    assert main(run_args(meta["model"], config, weights, CONFORMANCE / f"{name}.inputs.npz", output, "reference")) == 0
    with np.load(output) as data:
        assert_close({k: data[k] for k in data.files}, outputs, meta["outputs"])


@pytest.mark.parametrize("name", BUNDLES)
def test_oracle_reproduces_bundle(name):
    """The oracles are trusted only because they reproduce the authors' outputs first."""
    meta, weights, inputs, outputs = bundle(name)
    from safetensors.numpy import load_file

    sd, cfg = load_file(str(weights)), meta["config"]
    if meta["model"] == "bdh":
        got = {"logits": oracle.bdh_forward(sd, cfg, inputs["idx"])}
    elif meta["model"] == "ctm":
        got = dict(zip(("predictions", "certainties"), oracle.ctm_forward(sd, cfg, inputs["x"])))
    else:
        got = {"Y": oracle.elm_forward(sd, cfg, inputs["X"])}
    assert_close(got, outputs, meta["outputs"])


def test_oracle_routing_matches_the_released_neuronio_buffers():
    """The oracle's NeuronIO routing (interlaced inputs, overlapping windows) is the released one."""
    from safetensors.numpy import load_file

    meta, weights, _, _ = bundle("elm_neuronio_best")
    sd = load_file(str(weights))
    idx, mask = oracle.elm_routing(meta["config"], np.random.default_rng(0))
    np.testing.assert_array_equal(idx, sd["input_to_synapse_indices"])
    np.testing.assert_array_equal(mask, sd["valid_indices_mask"])


# ---------------------------------------------------------------- other configurations vs the oracles
def check_against_oracle(tmp_path, model, config, state_dict, inputs, want, backends=("reference",)):
    weights = save_weights(tmp_path / "w.safetensors", state_dict)
    for backend in backends:
        got = nspec_run(tmp_path, model, config, weights, inputs, backend)
        try:
            assert_close(got, want, OUTPUTS[model])
        except AssertionError as exc:
            raise AssertionError(f"{backend}: {exc}") from None


# TVM runs one held-out BDH configuration (and the bundle, above): the others compile in 9 to 23 s of
# CPU each with the cache cold (measured: L3-h4 23 s, V256 9 s, T512 18 s; all equal the oracle).
BDH_CASES = [  # (config, T, backends)
    (dict(n_layer=1, n_embd=16, n_head=1, mlp_internal_dim_multiplier=4, vocab_size=7), 9, BACKENDS),
    (dict(n_layer=3, n_embd=24, n_head=4, mlp_internal_dim_multiplier=6, vocab_size=30), 20, BACKENDS[:3]),
    (dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=3, vocab_size=256, dropout=0.1), 33, BACKENDS[:3]),
    # one long sequence: 512 tokens of Hebbian state
    (dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16), 512, BACKENDS[:3]),
]


@pytest.mark.parametrize("config, T, backends", BDH_CASES, ids=["L1-h1", "L3-h4", "V256", "T512"])
def test_bdh_matches_oracle(config, T, backends, tmp_path):
    rng = np.random.default_rng(T)
    sd = oracle.bdh_state_dict(config, rng)
    idx = rng.integers(0, config["vocab_size"], size=(2, T))
    want = {"logits": oracle.bdh_forward(sd, config, idx)}
    check_against_oracle(tmp_path, "bdh", config, sd, {"idx": idx}, want, backends)


CTM_BASE = dict(iterations=4, d_model=24, d_input=8, heads=2, n_synch_out=6, n_synch_action=5, synapse_depth=3,
                memory_length=5, deep_nlms=True, memory_hidden_dims=3, do_layernorm_nlm=False, backbone_type="none",
                positional_embedding_type="none", out_dims=4, prediction_reshaper=[-1], dropout=0.0,
                neuron_select_type="random-pairing", n_random_pairing_self=2)
# TVM compiles each CTM configuration in 5 to 11 s of CPU with the cache cold (all of them equal the
# oracle there): it runs the four synapse and NLM variants with random pairing, depth 2 with random
# selection and the shallow LayerNorm NLMs with first-last selection, so every synapse depth, NLM form
# and neuron selection type meets TVM once; the other backends run every configuration.
CTM_CASES = [  # (changes to CTM_BASE, input (C, S), backends)
    ({}, (3, 7), BACKENDS[:3]),
    ({"neuron_select_type": "random"}, (3, 7), BACKENDS[:3]),
    ({"neuron_select_type": "first-last"}, (3, 7), BACKENDS[:3]),
    ({"d_model": 40, "d_input": 12, "heads": 4, "iterations": 7, "memory_length": 3, "memory_hidden_dims": 6,
      "n_synch_out": 9, "n_synch_action": 11, "out_dims": 10, "n_random_pairing_self": 0}, (5, 12), BACKENDS[:3]),
    ({"d_model": 16, "neuron_select_type": "first-last", "n_synch_out": 8, "n_synch_action": 8, "iterations": 2},
     (2, 4), BACKENDS[:3]),
    # every synapse depth: 1 is GLU + LayerNorm (keys synapses.1/.3), 2 a one-block U-Net, 5 the CIFAR-10 depth
    ({"synapse_depth": 1}, (3, 7), BACKENDS),
    ({"synapse_depth": 2, "neuron_select_type": "random"}, (3, 7), BACKENDS),
    ({"synapse_depth": 5, "d_model": 40}, (3, 7), BACKENDS),
    # shallow NLMs (one SuperLinear M -> 2), and the LayerNorm over each SuperLinear's input
    ({"deep_nlms": False}, (3, 7), BACKENDS),
    ({"do_layernorm_nlm": True}, (3, 7), BACKENDS),
    ({"deep_nlms": False, "do_layernorm_nlm": True, "synapse_depth": 1, "neuron_select_type": "first-last"}, (3, 7),
     BACKENDS),
]


@pytest.mark.parametrize("changes, shape, backends", CTM_CASES,
                         ids=["random-pairing", "random", "first-last", "wider", "first-last-full", "depth1", "depth2",
                              "depth5", "shallow-nlm", "layernorm-nlm", "shallow-layernorm-depth1"])
def test_ctm_matches_oracle(changes, shape, backends, tmp_path):
    rng = np.random.default_rng(len(str(changes)))
    config = {**CTM_BASE, **changes}
    sd = oracle.ctm_state_dict(config, shape[0], rng)
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    want = dict(zip(("predictions", "certainties"), oracle.ctm_forward(sd, config, x)))
    check_against_oracle(tmp_path, "ctm", config, sd, {"x": x}, want, backends)


# every configuration on every backend: an ELM compiles on TVM in about 1 s of CPU
ELM_CASES = [  # (config, T, backends)
    (dict(num_input=6, num_output=2, num_memory=4, mlp_hidden_size=8, memory_tau_max=20.0, learn_memory_tau=True),
     25, BACKENDS),
    (dict(num_input=6, num_output=3, num_memory=5, num_branch=3, num_synapse_per_branch=4,
          input_to_synapse_routing="random_routing", mlp_activation="silu", lambda_value=2.5, delta_t=0.5), 25, BACKENDS),
    (dict(num_input=10, num_output=2, num_memory=4, num_branch=3, num_synapse_per_branch=4,
          input_to_synapse_routing="neuronio_routing", memory_tau_max=150.0), 40, BACKENDS),
    (dict(num_input=6, num_output=2, num_memory=4, memory_tau_min=2.0, memory_tau_max=7.0, w_s_value=0.2,
          tau_s_value=2.0, tau_b_value=2.0), 25, BACKENDS),
    # deeper MLPs: mlp.network.{0, 2, ..., 2L}
    (dict(num_input=6, num_output=2, num_memory=4, mlp_hidden_size=7, mlp_num_layers=2, mlp_activation="silu"),
     20, BACKENDS),
    (dict(num_input=5, num_output=3, num_memory=6, mlp_num_layers=4, num_branch=5, num_synapse_per_branch=2,
          input_to_synapse_routing="random_routing"), 20, BACKENDS),
    (dict(num_input=6, num_output=2, num_memory=4, mlp_num_layers=0), 15, BACKENDS),  # one Linear
]


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@pytest.mark.parametrize("config, T, backends", ELM_CASES,
                         ids=["plain", "random-routing", "neuronio-routing", "tau-range", "mlp2", "mlp4-routing",
                                                      "mlp0"])
def test_elm_matches_oracle(version, config, T, backends, tmp_path):
    rng = np.random.default_rng(T + version)
    config = {k: v for k, v in config.items() if k != ("tau_b_value" if version == 1 else "tau_s_value")}
    sd = oracle.elm_state_dict(config, rng, version)
    X = rng.normal(size=(2, T, config["num_input"])).astype(np.float32)
    want = {"Y": oracle.elm_forward(sd, config, X, version)}
    check_against_oracle(tmp_path, "elm" if version == 1 else "elm_v2", config, sd, {"X": X}, want, backends)


def test_elm_v2_widens_an_empty_tau_range(tmp_path):
    """v2 alone sets tau_max := max(tau_min + 3e-6, tau_max): tau_min > tau_max still runs, as in the reference."""
    config = dict(num_input=6, num_output=2, num_memory=4, memory_tau_min=3.0, memory_tau_max=2.0)
    rng = np.random.default_rng(9)
    sd = oracle.elm_state_dict(config, rng, 2)
    X = rng.normal(size=(2, 20, 6)).astype(np.float32)
    want = {"Y": oracle.elm_forward(sd, config, X, 2)}
    check_against_oracle(tmp_path, "elm_v2", config, sd, {"X": X}, want)


# ---------------------------------------------------------------- weights files and their errors
def test_weights_load_from_torch_and_npz_state_dicts(tmp_path):
    """The contract's three formats: a torch.save'd state_dict (weights_only) and .npz give the same run."""
    import torch

    config = dict(num_input=6, num_output=2, num_memory=4, mlp_hidden_size=8)
    rng = np.random.default_rng(3)
    sd = oracle.elm_state_dict(config, rng)
    X = rng.normal(size=(1, 10, 6)).astype(np.float32)
    want = {"Y": oracle.elm_forward(sd, config, X)}
    torch.save({k: torch.as_tensor(v) for k, v in sd.items()}, tmp_path / "sd.pt")
    np.savez(tmp_path / "sd.npz", **sd)
    for path in (tmp_path / "sd.pt", tmp_path / "sd.npz"):
        assert_close(nspec_run(tmp_path, "elm", config, path, {"X": X}), want, ["Y"])


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("lm_head"), "missing key(s) lm_head"),
    (lambda sd: sd.update(extra=np.zeros(3, np.float32)), "unknown key(s) extra"),
    (lambda sd: sd.update(encoder=sd["encoder"][:, :, :-1]), "'encoder' has shape [2, 16, 31]"),
])
def test_a_state_dict_that_does_not_fit_is_a_clear_error(change, message, tmp_path, capsys):
    config = dict(n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, vocab_size=5)
    sd = oracle.bdh_state_dict(config, np.random.default_rng(0))
    change(sd)
    weights = save_weights(tmp_path / "w.safetensors", sd)
    np.savez(tmp_path / "in.npz", idx=np.zeros((1, 3), np.int64))
    code = main(run_args("bdh", config, weights, tmp_path / "in.npz", tmp_path / "o.npz", "reference", 1))
    assert code == 1
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- which keys each configuration declares
@pytest.mark.parametrize("model, changes", [
    ("ctm", {"synapse_depth": 1}), ("ctm", {"synapse_depth": 4}), ("ctm", {"deep_nlms": False}),
    ("ctm", {"do_layernorm_nlm": True}), ("elm", {"mlp_num_layers": 3}), ("elm_v2", {"mlp_num_layers": 0}),
])
def test_spec_declares_exactly_the_reference_state_dict_keys(model, changes):
    """The keys a configuration's spec loads are the keys of the reference state_dict with that
    configuration (the oracle's, which follows the authors' module layout), with the same shapes."""
    import nspec

    if model == "ctm":
        config = {**CTM_BASE, **changes}
        sd = oracle.ctm_state_dict(config, 3, np.random.default_rng(0))
        hyper = {**config, "in_channels": 3, "n_tokens": 7}
    else:
        config = {"num_input": 6, "num_output": 2, "num_memory": 4, **changes}
        sd = oracle.elm_state_dict(config, np.random.default_rng(0), 1 if model == "elm" else 2)
        hyper = config
    model_ = nspec.load(SEEDS / f"{model}.nspec", **hyper)
    shapes = {p.key: tuple(p.shape) for p in model_.program.params}
    assert shapes == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("model", ["elm", "elm_v2"])
def test_learn_memory_tau_decides_whether_tau_m_is_trained(model):
    """As the reference's requires_grad: _proto_tau_m is a trained parameter only with learn_memory_tau,
    otherwise a buffer (still loaded from the state_dict by its key)."""
    import nspec

    for learn in (True, False):
        module = nspec.load(SEEDS / f"{model}.nspec", num_input=6, num_output=2, num_memory=4,
                            learn_memory_tau=learn).to_torch()
        trained = dict(module.named_parameters())
        assert ("_proto_tau_m" in trained) is learn
        assert "_proto_tau_m" in module.state_dict()
        assert "_proto_w_s" in trained and "tau_s" not in trained and "tau_b" not in trained
