"""``if`` and ``for`` in neuron and synapse bodies, and the integration method as a hyperparameter.

Oracles independent of the unroller: the same model written out by hand (the structured one must
run exactly like it), and for the methods, NumPy integrations of the same equations (Izhikevich's
nonlinear cell, where Euler and RK4 give different spike times) and the analytic solution of a
linear one (where every method agrees with exact integration to its order).  The method runs are
repeated on ONNX Runtime, a fast backend, against the same oracles.  Error cases of these
constructs live in the corpus (``specs/errors/if_*``, ``method_*``, ``family_state_*``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.dsl import NspecError

EXAMPLE = Path(__file__).resolve().parents[1] / "specs" / "examples" / "neuron_structure.nspec"


def load(tmp_path, text: str, name: str = "s.nspec", **hyper):
    path = tmp_path / name
    path.write_text(text)
    return nspec.load(path, **hyper)


def spikes(model, backend: str = "reference", **options) -> dict[str, np.ndarray]:
    out = model.run(backend=backend, **options)
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------- if and for, against written-out specs
ADAPTING = """
hyper adapt: bool = true
neuron Cell {
  state v: f32 = 0
  if adapt {
    state w: f32 = 0
    dw/dt = -w / (50 ms)
    dv/dt = (1.5 - v - w) / (10 ms)
  } else {
    dv/dt = (1.5 - v) / (10 ms)
  }
  spike when v > 1
  reset {
    v = 0
    if adapt { w += 0.2 }
  }
}
network N {
  population P: Cell[1]
  record spikes of P as sp
  record v of P as tr
}
simulate N for 200 ms
"""

WITH_ADAPTATION = """
neuron Cell {
  state v: f32 = 0
  state w: f32 = 0
  dw/dt = -w / (50 ms)
  dv/dt = (1.5 - v - w) / (10 ms)
  spike when v > 1
  reset {
    v = 0
    w += 0.2
  }
}
network N {
  population P: Cell[1]
  record spikes of P as sp
  record v of P as tr
}
simulate N for 200 ms
"""


@pytest.mark.parametrize("adapt", [True, False])
def test_an_if_in_a_neuron_and_its_reset_is_the_branch_written_out(tmp_path, adapt):
    structured = spikes(load(tmp_path, ADAPTING, adapt=adapt))
    written = WITH_ADAPTATION if adapt else WITH_ADAPTATION.replace("  state w: f32 = 0\n  dw/dt = -w / (50 ms)\n", "") \
        .replace(" - w)", ")").replace("    w += 0.2\n", "")
    by_hand = spikes(load(tmp_path, written, "hand.nspec"))
    assert structured.keys() == by_hand.keys()
    for k in by_hand:
        np.testing.assert_array_equal(structured[k], by_hand[k], err_msg=k)
    # the branches differ: adaptation slows the cell (so the comparison above is not vacuous)
    other = spikes(load(tmp_path, ADAPTING, "o.nspec", adapt=not adapt))
    assert (len(structured["sp.t"]) < len(other["sp.t"])) == adapt


FAMILY = """
hyper n: int = 3
let taus = [2 ms, 5 ms, 10 ms]
neuron Cell {
  state v: f32 = 0
  for k in range(n) {
    state g[k]: f32 = 0
    dg[k]/dt = (1 - g[k]) / taus[k]
  }
  let s[0] = g[0]
  for k in range(1, n) {
    let s[k] = s[k - 1] + g[k]
  }
  dv/dt = (s[n - 1] / n - v) / (10 ms)
  spike when v > 0.5
  reset {
    v = 0
    for k in range(n) { g[k] = 0 }
  }
}
network N {
  population P: Cell[2]
  record spikes of P as sp
  record v of P as tr
}
simulate N for 100 ms
"""

FAMILY_BY_HAND = """
neuron Cell {
  state v: f32 = 0
  state g0: f32 = 0
  state g1: f32 = 0
  state g2: f32 = 0
  dg0/dt = (1 - g0) / (2 ms)
  dg1/dt = (1 - g1) / (5 ms)
  dg2/dt = (1 - g2) / (10 ms)
  dv/dt = ((g0 + g1 + g2) / 3 - v) / (10 ms)
  spike when v > 0.5
  reset {
    v = 0
    g0 = 0
    g1 = 0
    g2 = 0
  }
}
network N {
  population P: Cell[2]
  record spikes of P as sp
  record v of P as tr
}
simulate N for 100 ms
"""


def test_a_for_family_of_states_and_equations_is_the_neuron_written_out(tmp_path):
    looped = load(tmp_path, FAMILY)
    assert [v.name for v in looped.program.states] == ["P/v", "P/g[0]", "P/g[1]", "P/g[2]"]
    structured, by_hand = spikes(looped), spikes(load(tmp_path, FAMILY_BY_HAND, "hand.nspec"))
    np.testing.assert_allclose(structured["tr.v"], by_hand["tr.v"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(structured["sp.t"], by_hand["sp.t"])
    # v(t) = mean_k 1 - (10 ms e^(-t/10 ms) - tau_k e^(-t/tau_k)) / (10 ms - tau_k) crosses 0.5 at 12.44 ms
    assert structured["sp.t"][0] == pytest.approx(12.4e-3, abs=1e-9)
    # one member: the loop declares one state and one equation
    single = load(tmp_path, FAMILY, "one.nspec", n=1)
    assert [v.name for v in single.program.states] == ["P/v", "P/g[0]"]


SYNAPSE = """
hyper plastic: bool = true
hyper copies: int = 2
neuron Counter {
  state v: f32 = 0
  dv/dt = 0 / (1 ms)
}
neuron Clock {
  state c: f32 = 0
  next c = c + 1
  spike when c >= 10
  reset { c = 0 }
}
synapse Syn {
  state w: f32 = 1
  if plastic {
    state trace: f32 = 0
    dtrace/dt = -trace / (10 ms)
  }
  on_pre {
    for i in range(copies) { v += w / copies }
    if plastic {
      trace += 1
      w += 0.5
    }
  }
}
network N {
  population Pre: Clock[1]
  population Post: Counter[1]
  projection p: Pre -> Post via Syn { connect all_to_all }
  record v of Post as tr
}
simulate N for 5 ms
"""


@pytest.mark.parametrize("plastic, total", [(True, 1 + 1.5 + 2 + 2.5), (False, 4.0)])
def test_if_and_for_in_a_synapse_and_its_on_pre(tmp_path, plastic, total):
    # the clock fires every 10 steps: 4 volleys in 50 steps; each adds w (in `copies` parts), and
    # the plastic synapse grows w by 0.5 after each
    out = spikes(load(tmp_path, SYNAPSE, plastic=plastic))
    assert out["tr.v"][-1, 0] == pytest.approx(total)
    assert out["tr.v"][-1, 0] == pytest.approx(spikes(load(tmp_path, SYNAPSE, "c.nspec", plastic=plastic, copies=5))
                                               ["tr.v"][-1, 0], rel=1e-6)


# ---------------------------------------------------------------- the integration method as a hyperparameter
def izhikevich(method: str, steps: int = 2000, dt: float = 0.1, drive: float = 10.0) -> np.ndarray:
    """Spike times (ms) of Izhikevich's regular-spiking cell, integrated in float64 by NumPy."""
    def f(y):
        v, u = y
        return np.array([0.04 * v * v + 5 * v + 140 - u + drive, 0.02 * (0.2 * v - u)])

    y, out = np.array([-65.0, -13.0]), []
    for n in range(steps):
        if method == "euler":
            y = y + dt * f(y)
        elif method == "midpoint":
            y = y + dt * f(y + dt / 2 * f(y))
        else:
            k1 = f(y)
            k2 = f(y + dt / 2 * k1)
            k3 = f(y + dt / 2 * k2)
            k4 = f(y + dt * k3)
            y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if y[0] >= 30:
            out.append(n * dt)
            y = np.array([-65.0, y[1] + 8.0])
    return np.array(out)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime"])
def test_the_method_hyperparameter_switches_izhikevichs_integration(backend):
    times = {}
    for method in ("euler", "midpoint", "rk4"):
        out = spikes(nspec.load(EXAMPLE, method=method), backend)
        want = izhikevich(method)
        np.testing.assert_allclose(out["izh.t"] * 1e3, want, atol=1e-6, err_msg=method)
        times[method] = out["izh.t"]
    assert not np.array_equal(times["euler"], times["rk4"])  # 162.3 ms against 161.1 ms for the fifth spike
    with pytest.raises(NspecError, match="method exact needs linear equations"):
        nspec.load(EXAMPLE, method="exact")


LINEAR = """
hyper m: str = "exact" one_of ["exact", "euler", "rk4"]
neuron Leaky(tau = 10 ms) {
  state v: f32 = 0
  dv/dt = (1.5 - v) / tau   method m
  spike when v > 1
  reset { v = 0 }
}
network N {
  population P: Leaky[1]
  record spikes of P as sp
  record v of P as tr
}
simulate N for 100 ms, dt = 0.1 ms
"""


@pytest.mark.parametrize("backend", ["reference", "onnxruntime"])
def test_on_a_linear_cell_rk4_agrees_with_exact_integration_and_euler_does_not(tmp_path, backend):
    runs = {m: spikes(load(tmp_path, LINEAR, f"{m}.nspec", m=m), backend) for m in ("exact", "euler", "rk4")}
    t = np.arange(1, 1001) * 1e-4  # v after each step, until the first spike at 10.99 ms
    free = 1.5 * (1 - np.exp(-t / 0.01))[:109]
    np.testing.assert_allclose(runs["exact"]["tr.v"][1:110, 0], free, rtol=1e-5)
    np.testing.assert_allclose(runs["rk4"]["tr.v"], runs["exact"]["tr.v"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(runs["rk4"]["sp.t"], runs["exact"]["sp.t"])
    # Euler's error, (dt/tau)^2 / 2 per step, is visible: the method was really switched
    assert np.abs(runs["euler"]["tr.v"] - runs["exact"]["tr.v"]).max() > 1e-4


def test_a_template_parameter_names_the_method_like_a_hyperparameter(tmp_path):
    text = LINEAR.replace('hyper m: str = "exact" one_of ["exact", "euler", "rk4"]\n', "") \
        .replace("neuron Leaky(tau = 10 ms)", 'neuron Leaky(tau = 10 ms, m = "exact")') \
        .replace("population P: Leaky[1]", 'population P: Leaky(m = "euler")[1]')
    by_template = spikes(load(tmp_path, text, "t.nspec"))
    by_hyper = spikes(load(tmp_path, LINEAR, "h.nspec", m="euler"))
    np.testing.assert_array_equal(by_template["tr.v"], by_hyper["tr.v"])
