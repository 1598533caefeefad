"""The standard library against its namesakes and its papers.

* ``specs/lib/layers.nspec``'s LSTMCell, GRUCell and MultiheadAttention (and Linear, LayerNorm,
  Embedding) equal ``torch.nn.LSTMCell``, ``torch.nn.GRUCell``, ``torch.nn.MultiheadAttention``
  (``nn.Linear``, ``nn.LayerNorm``, ``nn.Embedding``) loaded with the same weights, step by step
  over a sequence (the cells' state carried from step to step), through the LayerZoo composite of
  ``specs/examples/lib_layers.nspec``.
* ``specs/lib/neurons.nspec``'s Izhikevich and AdEx neurons, run in ``specs/examples/lib_neurons.nspec``
  (forward Euler, dt = 0.1 ms), spike when an independent integration of the papers' equations
  says they do: classical Runge-Kutta at dt = 0.01 ms written here from Izhikevich (2003) and
  Brette & Gerstner (2005), converged (halving its step moves no spike by more than 0.05%).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import nspec

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ROOT / "specs" / "examples" / "lib_layers.nspec"
NEURONS = ROOT / "specs" / "examples" / "lib_neurons.nspec"
STEPS = 6


# ---------------------------------------------------------------- layers against torch.nn
@pytest.fixture(scope="module")
def layers():
    """torch.nn namesakes of LayerZoo's boxes (random weights; biases that torch initialises at 0
    or 1 are drawn at random too, so that their placement is checked) and the spec's outputs with
    those weights over STEPS steps of random inputs."""
    torch.manual_seed(0)
    namesakes = {"l": torch.nn.Linear(4, 2), "n": torch.nn.LayerNorm(4), "e": torch.nn.Embedding(10, 4),
                 "c": torch.nn.LSTMCell(4, 5), "g": torch.nn.GRUCell(4, 5),
                 "a": torch.nn.MultiheadAttention(4, 2, batch_first=True)}
    with torch.no_grad():
        for module in (namesakes["n"], namesakes["a"]):
            for name, p in module.named_parameters():
                if "bias" in name or isinstance(module, torch.nn.LayerNorm):
                    p.normal_()
    model = nspec.load(LAYERS)
    ours = model.state_dict()
    weights = {}
    for box, module in namesakes.items():
        for key, value in module.state_dict().items():
            slash, dot = f"{box}/{key}", f"{box}.{key}"
            weights[slash if slash in ours else dot] = value.numpy()
    assert set(weights) <= set(ours)  # every torch parameter has its namesake in the spec
    model.load_weights(weights, strict=False)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(STEPS, 4)).astype(np.float32),
              "kv": rng.normal(size=(STEPS, 3, 4)).astype(np.float32),
              "idx": rng.integers(0, 10, size=STEPS)}
    return namesakes, inputs, model.run(inputs=inputs, steps=STEPS)


def close(have, want, key):
    # float32 on both sides: the spec's reference interpreter and torch round differently only
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, err_msg=key)


def test_lstm_cell_equals_torch(layers):
    namesakes, inputs, out = layers
    h = c = torch.zeros(1, 5)
    with torch.no_grad():
        for t in range(STEPS):
            h, c = namesakes["c"](torch.as_tensor(inputs["x"][t])[None], (h, c))
            close(out["lstm"][t], h[0].numpy(), f"lstm step {t}")
    assert np.ptp(out["lstm"], axis=0).max() > 1e-2  # the state moves, so carrying it is checked


def test_gru_cell_equals_torch(layers):
    namesakes, inputs, out = layers
    h = torch.zeros(1, 5)
    with torch.no_grad():
        for t in range(STEPS):
            h = namesakes["g"](torch.as_tensor(inputs["x"][t])[None], h)
            close(out["gru"][t], h[0].numpy(), f"gru step {t}")
    assert np.ptp(out["gru"], axis=0).max() > 1e-2


def test_multihead_attention_equals_torch(layers):
    """One query token attending over the n_keys tokens of kv (keys = values), as CTM uses it."""
    namesakes, inputs, out = layers
    with torch.no_grad():
        for t in range(STEPS):
            kv = torch.as_tensor(inputs["kv"][t])[None]
            y, _ = namesakes["a"](torch.as_tensor(inputs["x"][t])[None, None], kv, kv)
            close(out["attn"][t], y[0, 0].numpy(), f"attn step {t}")


def test_linear_layernorm_and_embedding_equal_torch(layers):
    namesakes, inputs, out = layers
    with torch.no_grad():
        x = torch.as_tensor(inputs["x"])
        close(out["lin"], namesakes["l"](x).numpy(), "lin")
        close(out["norm"], namesakes["n"](x).numpy(), "norm")
        close(out["emb"], namesakes["e"](torch.as_tensor(inputs["idx"])).numpy(), "emb")


# ---------------------------------------------------------------- neurons against their papers
def rk4_spike_times(rhs, y, dt: float, t_end: float, spiked, reset) -> np.ndarray:
    """Spike times (ms) of ``y' = rhs(y)`` integrated by classical Runge-Kutta with step ``dt`` (ms):
    after each step, ``spiked(y)`` emits a spike at the step's end and ``reset(y)`` applies the reset."""
    times = []
    for i in range(int(round(t_end / dt))):
        k1 = rhs(y)
        k2 = rhs([a + dt / 2 * k for a, k in zip(y, k1)])
        k3 = rhs([a + dt / 2 * k for a, k in zip(y, k2)])
        k4 = rhs([a + dt * k for a, k in zip(y, k3)])
        y = [a + dt / 6 * (p + 2 * q + 2 * r + s) for a, p, q, r, s in zip(y, k1, k2, k3, k4)]
        if spiked(y):
            times.append((i + 1) * dt)
            y = reset(y)
    return np.array(times)


def izhikevich_spike_times(I: float = 10.0, t_end: float = 1000.0) -> np.ndarray:
    """Izhikevich (2003), regular spiking (a = 0.02, b = 0.2, c = -65, d = 8), v and u in mV, t in ms:
    v' = 0.04 v^2 + 5 v + 140 - u + I, u' = a (b v - u); if v >= 30: v <- c, u <- u + d.
    Starts at rest as the library does: v = c, u = b c."""
    a, b, c, d = 0.02, 0.2, -65.0, 8.0
    return rk4_spike_times(lambda y: (0.04 * y[0] ** 2 + 5 * y[0] + 140 - y[1] + I, a * (b * y[0] - y[1])),
                           [c, b * c], 0.01, t_end, lambda y: y[0] >= 30, lambda y: [c, y[1] + d])


def adex_spike_times(I: float = 1000.0, t_end: float = 1000.0) -> np.ndarray:
    """Brette & Gerstner (2005), tonic spiking (their Table 1), in pF, nS, mV, ms and pA:
    C V' = -gL (V - EL) + gL DeltaT exp((V - VT) / DeltaT) - w + I, tauw w' = a (V - EL) - w;
    when V passes Vcut = VT + 10 mV: V <- Vr = EL, w <- w + b.  Starts at V = EL, w = 0."""
    C, gL, EL, VT, DeltaT, tauw, a, b = 281.0, 30.0, -70.6, -50.4, 2.0, 144.0, 4.0, 80.5
    vcut = VT + 10.0
    return rk4_spike_times(
        lambda y: ((-gL * (y[0] - EL) + gL * DeltaT * math.exp((y[0] - VT) / DeltaT) - y[1] + I) / C,
                   (a * (y[0] - EL) - y[1]) / tauw),
        [EL, 0.0], 0.01, t_end, lambda y: y[0] > vcut, lambda y: [EL, y[1] + b])


@pytest.fixture(scope="module")
def zoo_spikes():
    """Spike times (ms) of neuron 0 of each of lib_neurons' populations over its 1 s run."""
    model = nspec.load(NEURONS)
    recorded = ["Izh/spike", "Adex/spike"]
    out = model.run(steps=10000, record=recorded)
    # a spike emitted by step t crossed the threshold within it, by the step's end: (t + 1) dt
    return {k.split("/")[0]: (np.nonzero(out[k][:, 0])[0] + 1) * model.dt * 1e3 for k in recorded}


@pytest.mark.parametrize("population, reference, windows", [
    ("Izh", izhikevich_spike_times, (500.0, 1000.0)),   # about 24 Hz (12 spikes in the first 500 ms)
    ("Adex", adex_spike_times, (100.0, 1000.0)),        # 50 Hz over the first 100 ms, 31 Hz over 1 s
], ids=["izhikevich", "adex"])
def test_library_neuron_spikes_when_the_papers_equations_do(zoo_spikes, population, reference, windows):
    """Every spike within 4% + 0.3 ms of the reference time, and the same count in each window the
    spec's tests use.  Measured: forward Euler at 0.1 ms lags most on the first interval, where v
    rises fastest (Izhikevich's second spike 27.1 ms against 26.24 ms, 3.3%), then lengthens each
    interval by 0.3 .. 0.7% (the last spike in 1 s is 6.7 ms late for Izhikevich, 3 ms for AdEx);
    0.3 ms (3 steps) covers the first spike (3.40 ms against 3.13 ms).  A wrong coefficient or
    reset moves far more: d = 6 instead of 8 mV gives 28 spikes in 1 s and a second spike at
    13.5 ms; I = 11 instead of 10 gives 26 spikes."""
    want, have = reference(), zoo_spikes[population]
    assert len(want) >= 20
    n = min(len(want), len(have))
    np.testing.assert_allclose(have[:n], want[:n], rtol=0.04, atol=0.3)
    for window in windows:
        assert np.sum(have <= window) == np.sum(want <= window), (population, window, have, want)
