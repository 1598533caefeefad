"""torch.nn.LSTM, GRU and RNN as specs (specs/seeds/{lstm,gru,rnn}.nspec) equal to PyTorch's.

The interoperability contract of SEED_MODELS.md for a whole-sequence recurrent call: ``nspec run
specs/seeds/<m>.nspec --param <torch's constructor arguments> --weights <torch's state_dict> --inputs
<input [B, T, F]> --output O --backend B`` writes ``output`` [B, T, H] and ``h_n`` (``c_n``)
[num_layers, B, H] as torch returns them, within the bundle's tolerance on every backend;
``Model.to_torch()`` loads torch's state_dict strictly and has torch's gradients.

Two kinds of truth: the bundles (``tests/conformance/{lstm,gru,rnn}_tiny``, made by torch 2.13 with
their float64 gradients) and, for configurations they do not cover (three layers, no bias,
projections, relu, two directions, other batch and sequence lengths), torch.nn.LSTM / GRU / RNN
themselves.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import nspec
from nspec.cli import main
from nspec.runtime.executor import BackendError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "specs" / "seeds"
CONFORMANCE = Path(__file__).parent / "conformance"
BACKENDS = ("reference", "onnxruntime", "torch", "tvm")
MODELS = ("lstm", "gru", "rnn")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def bundle(model: str):
    name = f"{model}_tiny"
    meta = json.loads((CONFORMANCE / f"{name}.json").read_text())
    with np.load(CONFORMANCE / f"{name}.inputs.npz") as i, np.load(CONFORMANCE / f"{name}.outputs.npz") as o:
        inputs, outputs = {k: i[k] for k in i.files}, {k: o[k] for k in o.files}
    return meta, CONFORMANCE / f"{name}.weights.safetensors", inputs, outputs


def max_diffs(got: dict, want: dict) -> dict[str, float]:
    for name, value in want.items():
        assert got[name].shape == value.shape, f"{name}: shape {got[name].shape}, want {value.shape}"
    return {name: float(np.max(np.abs(got[name] - value))) for name, value in want.items()}


# ---------------------------------------------------------------- the bundles, through `nspec run`
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_bundle_reproduced_through_nspec_run(model, backend, tmp_path):
    """torch's constructor arguments as --param, its state_dict as --weights, input [B, T, F] as
    --inputs (the leading axis read as the batch): torch's output, h_n (and c_n), in its layouts."""
    meta, weights, _, outputs = bundle(model)
    params = [a for k, v in meta["config"].items() for a in ("--param", f"{k}={json.dumps(v)}")]
    out = tmp_path / "out.npz"
    assert main(["run", str(SEEDS / f"{model}.nspec"), *params, "--weights", str(weights),
                 "--inputs", str(CONFORMANCE / f"{model}_tiny.inputs.npz"), "--output", str(out),
                 "--backend", backend, "-q"]) == 0
    with np.load(out) as data:
        got = {k: data[k] for k in data.files}
    assert set(got) == set(meta["outputs"])
    errors = max_diffs(got, outputs)
    assert max(errors.values()) <= meta["tolerance"], errors


# ---------------------------------------------------------------- to_torch: strict keys and gradients
@pytest.mark.parametrize("model", MODELS)
def test_to_torch_loads_the_state_dict_strictly_and_has_torchs_gradients(model):
    from safetensors.numpy import load_file

    meta, weights, inputs, outputs = bundle(model)
    check = meta["gradient_check"]
    module = nspec.load(SEEDS / f"{model}.nspec", **meta["config"]).to_torch()
    state_dict = load_file(str(weights))
    assert set(module.state_dict()) == set(state_dict)   # exactly torch's keys
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()}, strict=True)
    out = module(input=torch.as_tensor(inputs["input"]))  # torch's layout: [B, T, F], one data step
    assert float(np.max(np.abs(out["output"].detach().numpy() - outputs["output"]))) <= meta["tolerance"]
    R = torch.as_tensor(np.load(CONFORMANCE / check["R_file"])["R"])
    (out["output"] * R).sum().backward()
    want = load_file(str(CONFORMANCE / check["grads_file"]))
    grads = dict(module.named_parameters())
    assert sorted(grads) == sorted(check["params"])
    for key, value in want.items():
        got = grads[key].grad.double().numpy()
        scale = float(np.max(np.abs(value)))
        assert scale > 0, key
        assert float(np.max(np.abs(got - value))) <= 1e-4 * scale, key


def test_to_torch_takes_the_sequence_with_or_without_a_time_axis():
    """torch's layout, input [B, T, F] -> h_n [num_layers, B, H] (one data step, no time axis from the
    caller), and the program module's [B, steps, T, F] -> [B, steps, ...] give the same values."""
    module = nspec.load(SEEDS / "lstm.nspec", num_layers=2).to_torch()
    x = torch.randn(3, 6, 4)
    one = module(input=x)
    assert {k: tuple(v.shape) for k, v in one.items()} == {"output": (3, 6, 5), "h_n": (2, 3, 5), "c_n": (2, 3, 5)}
    timed = module(input=x[:, None])
    assert {k: tuple(v.shape) for k, v in timed.items()} == {"output": (3, 1, 6, 5), "h_n": (3, 1, 2, 5),
                                                             "c_n": (3, 1, 2, 5)}
    torch.testing.assert_close(one["output"], timed["output"][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(one["h_n"], timed["h_n"][:, 0].transpose(0, 1), rtol=0, atol=0)
    with pytest.raises(BackendError, match=r"input 'input' has shape \[6, 4\]; its port is \[6, 4\], so give "
                                                 r"it as \[B, T, 6, 4\] \(a sequence of steps\) or \[B, 6, 4\]"):
        module(input=x[0])
    with pytest.raises(BackendError, match="inputs without a time axis are one data step, but steps=2"):
        module(input=x, steps=2)


def test_to_torch_refuses_inputs_that_mix_the_two_layouts(tmp_path):
    path = tmp_path / "two.nspec"
    path.write_text("system S {\n  in a: f32[2]\n  in b: f32[2]\n  out y: f32[2]\n  y = a + b\n}\n")
    module = nspec.load(path).to_torch()
    assert tuple(module(a=torch.ones(3, 2), b=torch.ones(3, 2))["y"].shape) == (3, 2)
    assert tuple(module(a=torch.ones(3, 4, 2), b=torch.ones(3, 4, 2))["y"].shape) == (3, 4, 2)
    with pytest.raises(BackendError, match=r"inputs mix the two layouts: a without a time axis \(\[B, \*shape\], "
                                                 r"one data step\), b with one \(\[B, T, \*shape\]\)"):
        module(a=torch.ones(3, 2), b=torch.ones(3, 4, 2))


# ---------------------------------------------------------------- held-out configurations, torch as the oracle
HELD_OUT = [
    ("lstm", dict(input_size=3, hidden_size=4, num_layers=3, bias=False)),
    ("lstm", dict(input_size=3, hidden_size=5, num_layers=2, proj_size=2)),
    ("gru", dict(input_size=3, hidden_size=4, num_layers=3, bias=False)),
    ("rnn", dict(input_size=3, hidden_size=4, num_layers=2, nonlinearity="relu")),
    ("rnn", dict(input_size=2, hidden_size=3, num_layers=3, nonlinearity="tanh", bias=False)),
]
# bidirectional=true: a `_reverse` weight family per layer, h_n with 2 * num_layers rows
BIDIRECTIONAL = [
    ("lstm", dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)),
    ("lstm", dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)),
    ("gru", dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)),
    ("rnn", dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, nonlinearity="relu")),
]
HELD_OUT += BIDIRECTIONAL
TORCH_CLASSES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


def config_id(model: str, config: dict) -> str:
    return f"{model}-{'-'.join(f'{k}{v}' for k, v in config.items())}"


def torch_reference(model: str, config: dict, seed: int):
    """torch.nn.<Model>(**config, batch_first=True) with weights U(-1, 1) (wider than torch's init,
    so saturation and relu's zeros occur), an input [3, 4, input_size] and torch's results by name."""
    torch.manual_seed(seed)
    reference = TORCH_CLASSES[model](**config, batch_first=True).eval()
    for p in reference.parameters():
        torch.nn.init.uniform_(p, -1.0, 1.0)
    x = torch.randn(3, 4, config["input_size"])
    with torch.no_grad():
        y, state = reference(x)
    h_n, c_n = state if model == "lstm" else (state, None)
    want = {"output": y.numpy(), "h_n": h_n.numpy()} | ({"c_n": c_n.numpy()} if c_n is not None else {})
    return reference, x, want


@lru_cache(maxsize=None)
def held_out_run(index: int):
    """(the spec of HELD_OUT[index] with torch's weights loaded, input, torch's results): loaded once
    and run on every backend (a Model keeps one executor per backend)."""
    model, config = HELD_OUT[index]
    reference, x, want = torch_reference(model, config, index)
    spec = nspec.load(SEEDS / f"{model}.nspec", **config)
    spec.load_weights({k: v.numpy() for k, v in reference.state_dict().items()})
    return spec, x.numpy(), want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model, config", HELD_OUT, ids=[config_id(m, c) for m, c in HELD_OUT])
def test_held_out_configuration_matches_torch(model, config, backend):
    """Random weights, batch 3, length 4: nspec on each backend against torch.nn.<Model>(**config,
    batch_first=True) itself, whose state_dict loads by its own keys."""
    spec, x, want = held_out_run(HELD_OUT.index((model, config)))
    errors = max_diffs(spec.run({"input": x}, batch=3, backend=backend), want)
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("model, config", HELD_OUT, ids=[config_id(m, c) for m, c in HELD_OUT])
def test_to_torch_loads_torchs_state_dict_and_has_its_gradients(model, config):
    """Model.to_torch() of each held-out configuration: exactly torch's keys (a bidirectional cell's
    with the `_reverse` family, a bias-free one's without biases), strict loading, torch's results in
    torch's layout, and torch's autograd gradients of sum(output * R) + sum(h_n * Q) within 1e-4 of
    their largest, for every parameter."""
    reference, x, want = torch_reference(model, config, 100 + HELD_OUT.index((model, config)))
    module = nspec.load(SEEDS / f"{model}.nspec", **config).to_torch()
    assert set(module.state_dict()) == set(reference.state_dict())
    assert any(k.endswith("_l1_reverse") for k in module.state_dict()) == config.get("bidirectional", False)
    module.load_state_dict(reference.state_dict(), strict=True)
    got = module(input=x)
    assert max(max_diffs({k: v.detach().numpy() for k, v in got.items()}, want).values()) <= 1e-5
    R, Q = torch.randn(want["output"].shape), torch.randn(want["h_n"].shape)
    (got["output"] * R).sum().add((got["h_n"] * Q).sum()).backward()
    y, state = reference(x)
    (y * R).sum().add(((state[0] if model == "lstm" else state) * Q).sum()).backward()
    grads = dict(module.named_parameters())
    assert sorted(grads) == sorted(k for k, _ in reference.named_parameters())
    for key, p in reference.named_parameters():
        scale = float(p.grad.abs().max())
        assert scale > 0, key
        assert float((grads[key].grad - p.grad).abs().max()) <= 1e-4 * scale, key


# ---------------------------------------------------------------- what is not supported is said, where
@pytest.mark.parametrize("model, param, message", [
    ("lstm", "num_layers=0", "num_layers must be at least 1"),
    ("gru", "batch_first=false", "batch_first=false is not supported"),
    ("lstm", "proj_size=5", "proj_size must be >= 0 and < hidden_size"),
    ("rnn", "nonlinearity=gelu", "'nonlinearity' = 'gelu' is not one of 'tanh', 'relu'"),
])
def test_unsupported_arguments_are_located_errors(model, param, message, tmp_path, capsys):
    args = ["run", str(SEEDS / f"{model}.nspec"), "--param", param,
            "--inputs", str(CONFORMANCE / f"{model}_tiny.inputs.npz"), "--output", str(tmp_path / "o.npz"), "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{model}.nspec:" in err and message in err and "^" in err and "Traceback" not in err


def test_bias_false_drops_the_bias_keys(tmp_path, capsys):
    """Strict loading: a state_dict with biases does not fit a bias=false model, and says which keys."""
    _, weights, _, _ = bundle("gru")
    args = ["run", str(SEEDS / "gru.nspec"), "--param", "num_layers=2", "--param", "bias=false",
            "--weights", str(weights), "--inputs", str(CONFORMANCE / "gru_tiny.inputs.npz"),
            "--output", str(tmp_path / "o.npz"), "-q"]
    assert main(args) == 1
    assert "unknown key(s) bias_hh_l0, bias_hh_l1, bias_ih_l0, bias_ih_l1" in capsys.readouterr().err


# ---------------------------------------------------------------- the `batch_axis` port flag
BATCH_AXIS = """
system S {
  in x: f32[3]
  out y: f32[2, 3] %s
  y = reshape(concat([x, 2 * x], axis = 0), [2, 3])
}
"""


def test_batch_axis_places_the_batch_of_a_one_step_result(tmp_path):
    path = tmp_path / "s.nspec"
    path.write_text(BATCH_AXIS % "batch_axis 1")
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = nspec.load(path).run({"x": x}, batch=4)["y"]
    assert y.shape == (2, 4, 3)
    np.testing.assert_array_equal(y, np.stack([x, 2 * x]))


@pytest.mark.parametrize("flag, message", [
    ("batch_axis 3", "'batch_axis 3' must be a whole number from 0 to the port's rank 2"),
    ("batch_axis 0.5", "'batch_axis 0.5' must be a whole number"),
])
def test_a_batch_axis_outside_the_port_is_a_located_error(flag, message, tmp_path, capsys):
    path = tmp_path / "s.nspec"
    path.write_text(BATCH_AXIS % flag)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4:3: error: {message}" in err and "^" in err


def test_batch_axis_on_an_input_is_a_located_error(tmp_path, capsys):
    path = tmp_path / "s.nspec"
    path.write_text(BATCH_AXIS.replace("in x: f32[3]", "in x: f32[3] batch_axis 1") % "")
    assert main(["check", str(path)]) == 1
    assert f"{path}:3:3: error: 'batch_axis' applies to output ports" in capsys.readouterr().err
