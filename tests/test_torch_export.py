"""``nspec compile --target torch``: a ``torch.export`` program of one step, loaded and looped in a
fresh Python that cannot import nspec (``-I -S``: no site packages, torch's folder added by hand,
nspec's importability checked), equal to ``Model.run(backend="torch")``: a spiking network with
random draws in its initial state and its steps, and torch.nn.LSTM with the conformance bundle's
weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nspec
from nspec.cli import main

SEEDS = Path(__file__).parent.parent / "specs" / "seeds"
CONFORMANCE = Path(__file__).parent / "conformance"

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPIKING = """\
module spiking "a small CUBA-like network: random initial membranes, rand() spikes, random wiring"
neuron Cell {
  param taum = 20 ms;  param taue = 5 ms
  param Vt = -50 mV;   param Vr = -60 mV;  param El = -49 mV
  in I: mV merge sum
  state v: mV = Vr + uniform(0, 1) * (Vt - Vr)
  state ge: mV = 0 mV
  dv/dt  = (ge - (v - El) + I) / taum
  dge/dt = -ge / taue
  spike when v > Vt or rand() < 0.01;  reset { v = Vr }
}
network Net {
  in drive: f32[20] mV
  out y: f32[20]
  population P: Cell[20]
  projection exc: P -> P { connect p = 0.2;  on_pre { ge += 1.62 mV } }
  wire drive -> P.I
  y = P.spike
}
simulate Net for 5 ms, dt = 0.1 ms, seed = 3
"""

# Runs in `python -I -S`: the loop of the manifest, over every artifact named on the command line.
LOOP = textwrap.dedent("""\
    import importlib.util, json, sys
    sys.path.append(sys.argv[1])  # torch's site-packages; without site, no .pth (no editable nspec) is read
    assert importlib.util.find_spec("nspec") is None, "nspec is importable"
    import numpy as np, torch
    for manifest, inputs, steps, out in zip(*[iter(sys.argv[2:])] * 4):
        folder = manifest.rsplit("/", 1)[0]
        m = json.load(open(manifest))
        step = torch.export.load(folder + "/" + m["files"]["program"]).module()
        state = torch.load(folder + "/" + m["files"]["state0"])
        x = dict(np.load(inputs))
        names = [e["name"] for e in m["step_inputs"] if e["role"] == "state"]
        ins = [e["name"] for e in m["step_inputs"] if e["role"] == "input"]
        outs = [e["name"] for e in m["step_outputs"] if e["role"] == "output"]
        got = {k: [] for k in outs}
        for t in range(int(steps)):
            res = step(*[state[k] for k in names], *[torch.as_tensor(x[k][:, t]) for k in ins])
            state = dict(zip(names, res[:len(names)]))
            for k, v in zip(outs, res[len(names):]):
                got[k].append(v)
        np.savez(out, **{k: torch.stack(v, 1).numpy() for k, v in got.items()},
                 **{"state/" + k: v.numpy() for k, v in state.items()})
    assert "nspec" not in sys.modules
    print("ran without nspec")
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both specs exported through the command line and run in one fresh process (torch starts once)."""
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "spiking.nspec").write_text(SPIKING)
    rng = np.random.default_rng(0)
    np.savez(tmp / "spiking.in.npz", drive=rng.normal(0, 5, (2, 50, 20)).astype(np.float32))
    meta = json.loads((CONFORMANCE / "lstm_tiny.json").read_text())
    with np.load(CONFORMANCE / "lstm_tiny.inputs.npz") as data:
        np.savez(tmp / "lstm.in.npz", input=data["input"][:, None])  # [B, T = 1, seq_len, input_size]
    params = [a for k, v in meta["config"].items() for a in ("--param", f"{k}={json.dumps(v)}")]
    assert main(["compile", str(tmp / "spiking.nspec"), "--target", "torch", "--batch", "2", "-o", f"{tmp}/out/"]) == 0
    weights = str(CONFORMANCE / "lstm_tiny.weights.safetensors")
    assert main(["compile", str(SEEDS / "lstm.nspec"), *params, "--weights", weights,
                 "--target", "torch", "--batch", "2", "-o", f"{tmp}/out/lstm.pt2"]) == 0
    site = str(Path(torch.__file__).parent.parent)
    args = [str(tmp / "out/spiking.json"), str(tmp / "spiking.in.npz"), "50", str(tmp / "spiking.got.npz"),
            str(tmp / "out/lstm.json"), str(tmp / "lstm.in.npz"), "1", str(tmp / "lstm.got.npz")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", LOOP, site, *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran without nspec" in done.stdout
    return tmp, meta


def read(path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_the_spiking_step_runs_without_nspec_as_the_torch_backend(exported):
    tmp, _ = exported
    got = read(tmp / "spiking.got.npz")
    model = nspec.load(tmp / "spiking.nspec")
    want = model.run(inputs=read(tmp / "spiking.in.npz"), batch=2, backend="torch")
    assert got["y"].shape == want["y"].shape == (2, 50, 20)
    assert 0 < want["y"].sum() < want["y"].size  # it spikes, and not everywhere
    np.testing.assert_array_equal(got["y"], want["y"])
    assert {f"state/{k}" for k in model.state} == {k for k in got if k.startswith("state/")}
    for name, value in model.state.items():  # the membranes, the step counter and the run's seed
        np.testing.assert_array_equal(got[f"state/{name}"], value)


def test_the_lstm_step_runs_without_nspec_as_the_torch_backend_and_torch(exported):
    tmp, meta = exported
    got = read(tmp / "lstm.got.npz")
    model = nspec.load(SEEDS / "lstm.nspec", weights=CONFORMANCE / "lstm_tiny.weights.safetensors", **meta["config"])
    want = model.run(inputs=read(tmp / "lstm.in.npz"), batch=2, backend="torch")
    assert set(want) == {"output", "h_n", "c_n"} and not model.program.states
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    with np.load(CONFORMANCE / "lstm_tiny.outputs.npz") as torch_lstm:  # and torch.nn.LSTM's own values
        assert np.max(np.abs(got["output"][:, 0] - torch_lstm["output"])) <= meta["tolerance"]


def test_the_manifest_gives_the_calling_convention(exported):
    tmp, _ = exported
    m = json.loads((tmp / "out/spiking.json").read_text())
    assert m["files"] == {"program": "spiking.pt2", "state0": "spiking.state0.pt"}
    assert (m["batch"], m["dt_seconds"], m["default_steps"], m["seed"]) == (2, 1e-4, 50, 3)
    assert [(e["name"], e["role"], e["shape"]) for e in m["step_inputs"]] == [
        ("P/v", "state", [2, 20]), ("P/ge", "state", [2, 20]), ("P/step_count", "state", [2]),
        ("P/rng_seed", "state", [2]), ("drive", "input", [2, 20])]
    assert [e["role"] for e in m["step_outputs"]] == ["state"] * 4 + ["output"]
    program = torch.export.load(tmp / "out/spiking.pt2")
    assert len(program.state_dict) + len(program.constants) > 0  # the weights travel inside


def test_a_step_torch_export_cannot_trace_is_a_located_error(tmp_path, capsys):
    spec = Path(__file__).parent.parent / "specs" / "examples" / "run_until.nspec"
    assert main(["compile", str(spec), "--target", "torch", "-o", f"{tmp_path}/"]) == 1
    err = capsys.readouterr().err
    assert "run_until.nspec:17:3: error: %3 (loop)" in err
    assert "torch.export cannot trace one step of NewtonSqrt" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("flags, message", [
    (["--target", "onnx", "--weights", "w.safetensors"], "--weights is read by --target torch and --target nir only"),
    (["--target", "onnx", "--batch", "2"], "--batch is read by --target torch only"),
    (["--target", "torch", "--step"], "--target torch exports one step"),
    (["--target", "torch", "--weights", "missing.safetensors"], "--weights: no such file: missing.safetensors"),
])
def test_flags_torch_export_does_not_take(flags, message, tmp_path, capsys):
    (tmp_path / "s.nspec").write_text(SPIKING)
    assert main(["compile", str(tmp_path / "s.nspec"), *flags, "-o", f"{tmp_path}/out/"]) == 1
    assert message in capsys.readouterr().err
