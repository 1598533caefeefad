"""LIF with constant drive against the analytic f-I curve (an oracle nobody here wrote).

rate(I) = 1 / (t_ref + tau * ln((E_L + R I - V_reset) / (E_L + R I - V_th)))

With exact integration the only discretisation error is the spike time's rounding to the grid,
so each interspike interval must be within one dt of the analytic one (and the rate within 1%
where that is looser).
"""

import numpy as np
import pytest

import nspec

SPEC = """
neuron LIF(tau = 10 ms, R = 100 Mohm, E_L = -70 mV, V_th = -50 mV, V_reset = -70 mV) {
  in I: nA
  state v: mV = E_L
  dv/dt = (E_L - v + R * I) / tau   unless refractory
  spike when v > V_th
  reset { v = V_reset }
  refractory 2 ms
}
network Drive(n = 8) {
  in drive: f32[n] nA
  population P: LIF[n]
  wire drive -> P.I
  record spikes of P
}
simulate Drive for 1 s, dt = 0.1 ms, method = exact
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fi") / "lif_fi.nspec"
    path.write_text(SPEC)
    return nspec.load(path)


def analytic_isi(current):
    tau, r, e_l, v_th, v_reset, t_ref = 10e-3, 100e6, -70e-3, -50e-3, -70e-3, 2e-3
    drive = e_l + r * current
    return t_ref + tau * np.log((drive - v_reset) / (drive - v_th))


def test_rate_matches_analytic_f_i_curve(model):
    currents = np.linspace(0.25e-9, 2.0e-9, 8)
    out = model.run(inputs={"drive": currents})
    dt = model.dt
    for n, current in enumerate(currents):
        times = out["spikes.t"][out["spikes.i"] == n]
        assert len(times) > 5, f"neuron {n} fired {len(times)} times"
        isi = np.diff(times)
        expected = analytic_isi(current)
        tolerance = max(dt, 0.01 * expected)
        assert np.all(np.abs(isi - expected) <= tolerance + 1e-9), (current, isi[:5], expected)
        rate, rate_expected = 1 / isi.mean(), 1 / expected
        assert abs(rate - rate_expected) <= max(0.01 * rate_expected, rate_expected ** 2 * dt)


def test_subthreshold_drive_never_fires(model):
    # R * I = 19 mV < V_th - E_L = 20 mV: v approaches -51 mV and stays below threshold.
    out = model.run(inputs={"drive": np.full(8, 0.19e-9)})
    assert out["spikes.i"].size == 0
