"""Networks are systems (issue #13): their ports, and networks as boxes of hybrid diagrams.

* Readouts: ``out`` ports reading a population's spikes, a slice of them, a state, and spike
  counts and rates over a window equal the same quantities computed here with NumPy from the
  recorded spikes and states, and equal the reference on every backend.
* Inputs: a network input wired into a neuron input is checked for its unit, dtype and shape;
  ``in drive: f32[10] mV`` into LIF's current ``I`` (nA) is refused, naming both units (it used
  to be accepted, and fired at 500 Hz).  Readout mistakes are located diagnostics too.
* Feedthrough: a spike or rate output reads this step's input, a state output does not; a loop
  through a network box needs state somewhere, exactly as for any box, and is otherwise refused
  with the cycle's path.
* A workspace routes between two spiking modules: the broadcast of one module's rates makes the
  other, silent alone, fire.
* The hybrid diagram (``specs/examples/hybrid.nspec``: LIF network -> LSTM -> feedback into the
  network) gives the reference's spikes bit for bit on ONNX Runtime, torch and TVM (strict mode),
  its other values to float32 rounding; and it trains on torch through the spikes' surrogate
  gradients (SGD lowers the loss; the feedback weights, whose only way to the loss is through the
  spiking network, get a gradient).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nspec
from nspec.dsl import NspecError
from nspec.runtime.train import train

ROOT = Path(__file__).resolve().parent.parent
HYBRID = ROOT / "specs" / "examples" / "hybrid.nspec"
DT = 1e-3

PORTS = """\
from "std/neurons.nspec" import LIF

network Net {
  in drive: f32[10] nA
  out s: f32[4]
  out r: f32[10] Hz
  out c: f32[3]
  out one: f32[10]
  out v: f32[10] mV
  out tail: f32[5] mV
  population P: LIF(taum = 10 ms)[10]
  wire drive -> P.I
  s = P[2:6].spike
  r = rate(P, 5 ms)
  c = count(P[7:10], 3 ms)
  one = count(P, 1 ms)
  v = P.v
  tail = P[5:].v
}

simulate Net for 100 ms, dt = 1 ms
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def write(tmp_path: Path, text: str, name: str = "model.nspec") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def compile_error(tmp_path: Path, text: str, **hyper) -> str:
    with pytest.raises(NspecError) as info:
        nspec.load(write(tmp_path, text), **hyper)
    return info.value.render()


def windowed(spikes: np.ndarray, steps: int) -> np.ndarray:
    """Spikes per neuron in the last ``steps`` steps, this one included (zeros before the run)."""
    padded = np.concatenate([np.zeros((steps - 1, spikes.shape[1]), spikes.dtype), spikes])
    return np.stack([padded[t:t + steps].sum(0) for t in range(spikes.shape[0])])


def drive(steps: int = 100, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(0, 0.6, size=(steps, 10)) * 1e-9).astype(np.float32)


# ---------------------------------------------------------------- readouts
def test_readouts_equal_numpy_over_the_recorded_spikes_and_states(tmp_path):
    model = nspec.load(write(tmp_path, PORTS))
    out = model.run(inputs={"drive": drive()}, steps=100, record=["P/spike"])
    spikes = np.asarray(out["P/spike"], np.float32)
    assert 50 < spikes.sum() < 0.5 * spikes.size  # the population fires, neither silent nor saturated
    np.testing.assert_array_equal(out["s"], spikes[:, 2:6])
    np.testing.assert_array_equal(out["r"], (windowed(spikes, 5) / np.float32(5 * DT)).astype(np.float32))
    np.testing.assert_array_equal(out["c"], windowed(spikes[:, 7:10], 3))
    np.testing.assert_array_equal(out["one"], spikes)
    # a state readout is the state at the start of the step: the initial value, then each step's end
    states = nspec.load(write(tmp_path, PORTS.replace("  wire drive", "  record v of P as trace\n  wire drive")))
    trace = states.run(inputs={"drive": drive()}, steps=100)["trace.v"]
    np.testing.assert_array_equal(out["v"], trace)
    np.testing.assert_array_equal(out["tail"], trace[:, 5:])
    assert out["v"][0] == pytest.approx([-0.065] * 10)


def test_readouts_carry_their_units_into_the_program(tmp_path):
    program = nspec.load(write(tmp_path, PORTS)).program
    units = {v.name: v.unit for v in program.outputs}
    assert units == {"s": "", "r": "Hz", "c": "", "one": "", "v": "V", "tail": "V"}
    windows = {v.name: v.shape for v in program.states if v.name.endswith("/window")}
    assert windows == {"r/window": (4, 10), "c/window": (2, 3)}  # a window of one step needs no state


@pytest.mark.parametrize("backend, options", [("onnxruntime", {}), ("torch", {}), ("tvm", {"strict": True})])
def test_readouts_equal_the_reference_on_every_backend(tmp_path, backend, options):
    model = nspec.load(write(tmp_path, PORTS))
    want = model.run(inputs={"drive": drive()}, steps=100, record=["P/spike"])
    got = model.run(inputs={"drive": drive()}, steps=100, record=["P/spike"], backend=backend, **options)
    for key in ("P/spike", "s", "r", "c", "one"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_allclose(got["v"], want["v"], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- inputs and mistakes
def test_a_voltage_wired_into_a_current_is_refused_naming_both_units(tmp_path):
    text = """\
        from "std/neurons.nspec" import LIF

        network Net {
          in drive: f32[10] mV
          population P: LIF[10]
          wire drive -> P.I
        }
        """
    message = compile_error(tmp_path, text)
    assert "model.nspec:6:3: error: unit mismatch on wire drive -> P.I: V into A" in message
    assert "the network's input 'drive' is f32[10] V, neuron LIF's input 'I' is f32[10] A" in message
    ok = nspec.load(write(tmp_path, text.replace("mV", "nA")))  # the same wire in the right unit runs
    assert {v.name: v.unit for v in ok.program.inputs} == {"drive": "A"}


NET = """\
from "std/neurons.nspec" import LIF

neuron Counter {{
  state n: f32 = 0
}}

network Net {{
  in drive: f32[10] nA
  out o: {type}
  population P: LIF[10]
  population C: Counter[10]
  wire drive -> P.I
  {body}
}}
"""


@pytest.mark.parametrize("type_, body, where, message", [
    ("f32[10]", "o = rate(P, 10 ms)", "13:7", "unit mismatch: output 'o' is f32[10], the readout reads f32[10] Hz"),
    ("f32[10]", "o = P[0:5].spike", "13:7", "shape mismatch: output 'o' is f32[10], the readout reads f32[5]"),
    ("bool[10]", "o = P.spike", "13:7", "type mismatch: output 'o' is bool[10], the readout reads f32[10]"),
    ("f32[10] mV", "o = P.w", "13:7", "neuron LIF has no state 'w'; a readout reads 'spike' or a state (v, Is)"),
    ("f32[10]", "o = C.spike", "13:7", "C.spike: neuron Counter of population 'C' has no 'spike when' condition"),
    ("f32[10]", "o = Q.spike", "13:7", "unknown population 'Q'; populations: P, C"),
    ("f32[10]", "o = P[5:20].spike", "13:7", "slice [5:20] is out of range for population 'P' of size 10"),
    ("f32[10]", "o = 2 * P.spike", "13:7", "a network's output reads a population directly"),
    ("f32[10]", "o = mean(P, 5 ms)", "13:7", "'mean' is not a readout of a network"),
    ("f32[10]", "o = count(P)", "13:7", "count in a readout takes a population and a window: 'count(P, 10 ms)'"),
    ("f32[10] Hz", "o = rate(P, 5 mV)", "13:15", "the window of rate is one duration, like 10 ms; got V"),
    ("f32[10]", "o = count(P, 0 ms)", "13:16", "the window 0 s is shorter than one step (dt = 0.0001 s)"),
    ("f32[10]", "o = count(P, 0.25 ms)", "13:16", "the window 0.00025 s is not a whole number of steps"),
    ("f32[10]", "o = count(P, 1e12 s)", "13:16", "the window is 1e+12 s, 1e+16 steps of dt = 0.0001 s; at most 2**53"),
    ("f32[10]", "o = count(P, 1e5 s)", "13:7", "a tensor of shape [999999999, 10] (9,999,999,990 values)"),
    ("f32[10]", "o = P.spike; o = P.spike", "13:16", "output 'o' is already assigned (line 13)"),
    ("f32[10]", "o = P.spike; w = P.v", "13:16", "'w' is not a port of this network"),
    ("f32[10]", "wire P.spike -> o", "13:3", "a network's output port is a readout: write 'o = P.spike'"),
    ("f32[10]", "o = P.spike; wire drive -> P.v", "13:30", "neuron LIF has no input port 'v'; 'v' is a state, and "
                                                           "a network input drives an input port (its inputs: I)"),
    ("f32[10]", "o = P.spike; wire drive -> C.n", "13:30", "neuron Counter has no input port 'n'; 'n' is a state"),
])
def test_readout_and_wire_mistakes_are_located(tmp_path, type_, body, where, message):
    rendered = compile_error(tmp_path, NET.format(type=type_, body=body))
    assert f"model.nspec:{where}: error: {message}" in rendered, rendered


def test_input_dtype_and_shape_are_checked(tmp_path):
    text = NET.format(type="f32[10]", body="o = P.spike").replace("in drive: f32[10] nA", "in drive: f64[10] nA")
    assert "type mismatch on wire drive -> P.I: f64 into f32" in compile_error(tmp_path, text)
    text = NET.format(type="f32[10]", body="o = P.spike").replace("in drive: f32[10] nA", "in drive: f32[5] nA")
    assert "shape mismatch on wire drive -> P.I: [5] into [10]" in compile_error(tmp_path, text)


# ---------------------------------------------------------------- feedthrough and loops
LOOP = """\
from "std/neurons.nspec" import LIF

network Net {{
  in drive: f32[4] nA
  out s: f32[4]
  out v: f32[4] mV
  population P: LIF[4]
  wire drive -> P.I
  s = P.spike
  v = P.v
}}

# back into the network as a current: a Mealy box, its output reads this step's input
system Back {{
  in x: f32[4] {unit}
  out I: f32[4] nA
  I = x * {scale}
}}

composite Loop {{
  in u: f32[4] nA
  out s: f32[4]
  box net: Net
  box back: Back
  wire u -> net.drive
  wire net.{port} -> back.x
  wire back.I -> net.drive
  wire net.s -> s
}}
"""


def test_a_loop_through_a_network_output_that_reads_the_input_is_an_instantaneous_cycle(tmp_path):
    message = compile_error(tmp_path, LOOP.format(unit="", scale="1 nA", port="s"))
    assert ("model.nspec:26:3: error: instantaneous cycle in Loop: back.I -> net.drive -> net.s -> back.x -> back.I"
            in message)


def test_a_loop_through_a_state_readout_is_guarded_and_runs(tmp_path):
    # v is read at the start of the step: the network's v output does not read this step's drive
    model = nspec.load(write(tmp_path, LOOP.format(unit="mV", scale="0.01 nA / mV", port="v")), target="Loop")
    u = np.full((200, 4), 0.5e-9, np.float32)
    out = model.run(inputs={"u": u}, steps=200)
    # v is about -60 mV between spikes, so the loop subtracts about 0.6 nA: LIF's 0.15 nA rheobase is not reached
    assert out["s"].sum() == 0
    alone = nspec.load(write(tmp_path, LOOP.format(unit="mV", scale="0 nA / mV", port="v")), target="Loop")
    assert alone.run(inputs={"u": u}, steps=200)["s"].sum() > 0  # without the loop, 0.5 nA fires


def test_perturbing_this_steps_drive_changes_the_spike_output_but_not_the_state_output(tmp_path):
    model = nspec.load(write(tmp_path, LOOP.format(unit="", scale="1 nA", port="s")), target="Net")
    base = np.full((30, 4), 0.3e-9, np.float32)
    kicked = base.copy()
    kicked[20] = 1e-7  # one step of 100 nA: 50 mV in 0.1 ms
    a = model.run(inputs={"drive": base}, steps=30)
    b = model.run(inputs={"drive": kicked}, steps=30)
    np.testing.assert_array_equal(a["v"][:21], b["v"][:21])  # v at step 20 is read before step 20's drive
    assert not np.array_equal(a["v"][21], b["v"][21])
    assert not np.array_equal(a["s"][20], b["s"][20])  # spikes at step 20 read step 20's drive


WORKSPACE = """\
from "std/neurons.nspec" import LIF
from "std/workspace.nspec" import SoftmaxWorkspace

network Module(bias = 0 nA) {{
  in drive: f32[4] nA
  out r: f32[4] Hz
  population P: LIF(I0 = bias)[4]
  wire drive -> P.I
  r = rate(P, 10 ms)
}}

system Scale {{
  in r: f32[4] Hz
  out y: f32[4]
  y = r / 100 Hz
}}

system Current(gain = 0.1 nA) {{
  in x: f32[4]
  out I: f32[4] nA
  I = x * gain
}}

composite Routed {{
  out a: f32[4] Hz
  out b: f32[4] Hz
  box m0: Module(bias = 0.5 nA)
  box m1: Module(bias = 0.1 nA)
  box s0: Scale
  box s1: Scale
  box ws: SoftmaxWorkspace(dim = 4, modules = 2)
  box back: Current(gain = {gain})
  wire m0.r -> s0.r, a
  wire m1.r -> s1.r, b
  wire s0.y -> ws.write[0]
  wire s1.y -> ws.write[1]
  wire ws.read -> back.x
  wire back.I -> m0.drive, m1.drive
}}

simulate Routed for 200 ms, dt = 1 ms
"""


def test_a_workspace_routes_between_spiking_modules(tmp_path):
    """m1 alone (0.1 nA bias, below LIF's 0.15 nA rheobase) is silent; the workspace broadcasts
    m0's rates back to both modules as a current, and m1 fires."""
    routed = nspec.load(write(tmp_path, WORKSPACE.format(gain="0.1 nA"))).run(steps=200)
    alone = nspec.load(write(tmp_path, WORKSPACE.format(gain="0 nA"))).run(steps=200)
    assert alone["b"].max() == 0 and alone["a"].mean() > 50
    assert routed["b"].mean() > 5
    torch_run = nspec.load(write(tmp_path, WORKSPACE.format(gain="0.1 nA"))).run(steps=200, backend="torch")
    np.testing.assert_array_equal(torch_run["b"], routed["b"])


# ---------------------------------------------------------------- the hybrid diagram
def hybrid_inputs(steps: int = 100) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).uniform(0, 1.6, size=(steps, 8)).astype(np.float32)}


@pytest.fixture(scope="module")
def hybrid_reference():
    model = nspec.load(HYBRID)
    return model, model.run(inputs=hybrid_inputs(), steps=100, record=["net/P/spike"])


@pytest.mark.parametrize("backend, options", [("onnxruntime", {}), ("torch", {}), ("tvm", {"strict": True})])
def test_the_hybrid_diagram_equals_the_reference_on_every_backend(hybrid_reference, backend, options):
    model, want = hybrid_reference
    spikes = want["net/P/spike"]
    assert 0.05 < spikes.mean() < 0.6  # the spiking part is active, so the comparison says something
    got = model.run(inputs=hybrid_inputs(), steps=100, record=["net/P/spike"], backend=backend, **options)
    assert set(got) == set(want)
    np.testing.assert_array_equal(got["net/P/spike"], spikes)
    np.testing.assert_array_equal(got["spikes"], want["spikes"])
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-5)


def test_the_hybrid_diagram_trains_through_the_spiking_network():
    """SGD on the hybrid diagram (LSTM, head and feedback weights), targets that depend on the
    drive: the loss falls, and the feedback weights get a gradient, which reaches them only
    through the spikes' surrogate."""
    model = nspec.load(HYBRID)
    rng = np.random.default_rng(0)
    level = rng.uniform(0.4, 1.6, size=32).astype(np.float32)
    x = (level[:, None] + 0.1 * rng.normal(size=(32, 8))).astype(np.float32)
    target = np.stack([level - 1, 1 - level], 1).astype(np.float32)
    history = train(model, {"x": x, "target": target}, "mse:y:target", optimizer="sgd", lr=0.5, steps=40,
                    batch_size=16, time_steps=30, progress=False)
    first, last = np.mean(history.losses[:5]), np.mean(history.losses[-5:])
    assert last < 0.25 * first, history.losses

    module = history.module
    module.zero_grad()
    out = module(x=torch.from_numpy(np.repeat(x[:, None], 30, 1)))
    ((out["y"][:, -1] - torch.from_numpy(target)) ** 2).mean().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    assert torch.isfinite(grads["back.W"]).all() and float(grads["back.W"].abs().sum()) > 0

    # the trained weights run on the reference backend and give torch's outputs
    ref = model.run(inputs={"x": np.repeat(x[:1], 30, 0)}, steps=30)
    np.testing.assert_array_equal(ref["spikes"], out["spikes"][0].detach().numpy())
    np.testing.assert_allclose(ref["y"], out["y"][0].detach().numpy(), rtol=1e-4, atol=1e-5)
