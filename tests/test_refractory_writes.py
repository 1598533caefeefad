"""Refractoriness as Brian2 defines it, against Brian2's own trace.

A state whose equation is marked ``unless refractory`` is held for the refractory period: its
equation is not integrated, and the increments other systems send it (synaptic ``on_pre``
effects, ``PoissonInput`` counts) are dropped during the step it spikes in and its refractory
steps, as Brian2's conditional write does (``Variable.set_conditional_write(not_refractory)``).
A spike condition written with ``>=`` fires at equality.

The oracle is Brian2 2.9 itself: the trace below was recorded from this script (numpy target,
``dt = 0.1 ms``), whose neuron receives 0.5 mV every step from a source firing every step:

    G = NeuronGroup(1, "dv/dt = -v/tau : volt (unless refractory)", threshold="v > theta",
                    reset="v = V_r", refractory=2*ms, method="exact")   # tau 20 ms, theta 20 mV, V_r 10 mV
    G.v = 19.95*mV
    src = SpikeGeneratorGroup(1, zeros(40, int), arange(40)*0.1*ms)
    syn = Synapses(src, G, on_pre="v += 0.5*mV"); syn.connect()
    S = StateMonitor(G, "v", record=True); run(4*ms)

It spikes in step 1, is held at V_r = 10 mV for steps 1-20 whatever arrives, and integrates again
from step 21 (20 steps = 2 ms later).  Without the conditional write, v would climb by 0.5 mV a
step during the refractory period and fire again at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec

BACKENDS = ["reference", "onnxruntime", "torch", "tvm"]

# Brian2 2.9's StateMonitor trace of v (mV, rounded to 0.01 mV): v at the start of steps 0-39
BRIAN2_TRACE = [19.95, 20.35] + [10.0] * 20 + [
    10.45, 10.9, 11.34, 11.79, 12.23, 12.67, 13.1, 13.54, 13.97, 14.4, 14.83, 15.26, 15.68, 16.1,
    16.52, 16.94, 17.35, 17.77]

SPEC = """module refractory_writes "synaptic input to a refractory neuron"
neuron Every {
  spike when t >= 0 s             # '>=': fires from step 0, where t == 0
}
neuron BrunelLIF(tau = 20 ms, theta = 20 mV, Vr = 10 mV) {
  state v: mV = 19.95 mV
  dv/dt = -v / tau   unless refractory
  method exact
  spike when v > theta
  reset { v = Vr }
  refractory 2 ms
}
network Held {
  population S: Every[1]
  population P: BrunelLIF[1]
  projection syn: S -> P { connect all_to_all;  on_pre { v += 0.5 mV } }
  record v of P
  record spikes of S
}
simulate Held for 4 ms, dt = 0.1 ms
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> nspec.Model:
    path = tmp_path_factory.mktemp("refractory") / "held.nspec"
    path.write_text(SPEC, encoding="utf-8")
    return nspec.load(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refractory_neuron_drops_synaptic_input_as_brian2_does(model, backend):
    out = model.run(backend=backend)
    v_mV = np.asarray(out["v_P.v"], dtype=np.float64).ravel() * 1e3
    assert v_mV.shape == (40,)
    np.testing.assert_allclose(v_mV, BRIAN2_TRACE, atol=0.006)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greater_or_equal_fires_at_equality(model, backend):
    out = model.run(backend=backend)
    steps = np.round(np.asarray(out["spikes.t"]) / 1e-4).astype(int)
    np.testing.assert_array_equal(steps, np.arange(40))


def test_input_to_a_state_without_unless_refractory_still_arrives(tmp_path):
    """Only states marked 'unless refractory' are held: the same neuron with a plain equation keeps
    integrating and receiving while refractory (it cannot fire again until the period ends)."""
    path = tmp_path / "free.nspec"
    path.write_text(SPEC.replace("dv/dt = -v / tau   unless refractory", "dv/dt = -v / tau"), encoding="utf-8")
    out = nspec.load(path).run()
    v_mV = np.asarray(out["v_P.v"], dtype=np.float64).ravel() * 1e3
    assert v_mV[2] == pytest.approx(10.0, abs=1e-4)     # the reset still happens
    # decays by exp(-0.1/20) and gains 0.5 mV every refractory step
    expected = 10.0
    for k in range(3, 12):
        expected = expected * np.exp(-0.1 / 20) + 0.5
        assert v_mV[k] == pytest.approx(expected, abs=1e-3)
