"""Integration schemes, events, delays, plasticity and time structure against closed forms."""

import numpy as np
import pytest

import nspec


def load(tmp_path, text, name="m.nspec", **hyper):
    path = tmp_path / name
    path.write_text(text)
    return nspec.load(path, **hyper)


DECAY = """
system Decay {
  out x_out: f64
  state x: f64 = 1
  dx/dt = -x / (10 ms)  method METHOD
  x_out = x
}
simulate Decay for 20 ms, dt = 1 ms
"""


# One step of each scheme on dx/dt = -x / tau multiplies x by a polynomial in h = dt / tau (its
# Butcher tableau applied by hand), so after n steps x = factor ** n: the scheme's closed form.
STEP_FACTOR = {
    "euler": lambda h: 1 - h,
    "midpoint": lambda h: 1 - h + h ** 2 / 2,
    "rk4": lambda h: 1 - h + h ** 2 / 2 - h ** 3 / 6 + h ** 4 / 24,
    "exp_euler": lambda h: np.exp(-h),
    "exact": lambda h: np.exp(-h),
}


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("rk4", 4), ("exp_euler", None), ("exact", None)])
def test_integration_schemes_converge_at_their_order(tmp_path, method, order):
    errors = []
    for dt in ("2 ms", "1 ms"):
        m = load(tmp_path, DECAY.replace("METHOD", method).replace("dt = 1 ms", f"dt = {dt}"), f"{method}.nspec")
        steps = m.default_steps
        x = m.run()["x_out"]
        t = np.arange(steps) * m.dt
        np.testing.assert_allclose(x, STEP_FACTOR[method](m.dt / 10e-3) ** np.arange(steps), rtol=1e-12)
        errors.append(np.max(np.abs(x - np.exp(-t / 10e-3))))
    if order is None:  # exact for a linear equation (float32 rounding only)
        assert errors[0] < 1e-12 and errors[1] < 1e-12
    else:
        ratio = errors[0] / errors[1]
        assert 2 ** order * 0.7 < ratio < 2 ** order * 1.4, (errors, ratio)


def test_exact_integration_is_used_by_default_for_linear_equations(tmp_path):
    m = load(tmp_path, DECAY.replace("  method METHOD", ""))
    x = m.run()["x_out"]
    t = np.arange(m.default_steps) * m.dt
    np.testing.assert_allclose(x, np.exp(-t / 10e-3), rtol=1e-12)


def test_nonlinear_equation_falls_back_and_exact_is_refused(tmp_path):
    text = DECAY.replace("dx/dt = -x / (10 ms)", "dx/dt = -x * x / (10 ms)")
    m = load(tmp_path, text.replace("  method METHOD", ""), "auto.nspec")
    x = m.run()["x_out"]
    # the fallback is forward Euler: x[n + 1] = x[n] - dt x[n]^2 / tau, followed step by step
    h = m.dt / 10e-3
    np.testing.assert_allclose(x[1:], x[:-1] - h * x[:-1] ** 2, rtol=1e-12)
    # and it tracks the closed form x(t) = 1 / (1 + t / tau) to first order: at h = 0.1 the global
    # error of Euler on this equation reaches 0.0198 within the 20 ms; a wrong sign or power is off by > 0.1
    t = np.arange(m.default_steps) * m.dt
    assert np.max(np.abs(x - 1 / (1 + t / 10e-3))) < 0.025
    with pytest.raises(nspec.dsl.NspecError, match="method exact needs linear equations"):
        load(tmp_path, text.replace("METHOD", "exact"), "exact.nspec")


DELAY = """
neuron Src {
  state c: f32 = 0
  next c = c + 1
  spike when c > 2.5
  reset { c = -100 }
}
neuron Dst {
  state g: mV = 0 mV
  next g = g
}
network Net {
  population A: Src[1]
  population B: Dst[1]
  projection p: A -> B { connect one_to_one; delay DELAY;  on_pre { g += 1 mV } }
  record g of B as trace
  record spikes of A
}
simulate Net for 10 ms, dt = 1 ms
"""


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_synaptic_delay_shifts_arrival(tmp_path, delay):
    m = load(tmp_path, DELAY.replace("DELAY", f"{delay} ms"), f"d{delay}.nspec")
    out = m.run()
    spike_step = int(round(out["spikes.t"][0] / m.dt))
    g = out["trace.g"][:, 0]  # recorded before each step's update
    arrival = int(np.argmax(g > 0))
    assert arrival == spike_step + 1 + delay
    assert g[-1] == pytest.approx(1e-3)


STDP = """
neuron Clock(period = 5) {
  state c: f32 = 0
  state g: f32 = 0
  next c = c + 1
  spike when c > period - 0.5
  reset { c = 0 }
}
synapse Stdp(taupre = 20 ms, taupost = 20 ms, Apre = 0.01, Apost = -0.012, wmax = 1) {
  state w = 0.5
  state apre = 0
  state apost = 0
  dapre/dt = -apre / taupre  method exact
  dapost/dt = -apost / taupost  method exact
  on_pre  { g += w; apre += Apre; w = clip(w + apost, 0, wmax) }
  on_post { apost += Apost; w = clip(w + apre, 0, wmax) }
}
network Pair {
  population A: Clock(period = PRE)[1]
  population B: Clock(period = POST)[1]
  projection s: A -> B via Stdp { connect all_to_all }
}
simulate Pair for 200 ms, dt = 1 ms
"""


def test_stdp_potentiates_pre_before_post_and_depresses_the_reverse(tmp_path):
    # Pre fires every 6 steps, post every 7: the relative timing drifts through both orders.
    # Compare with a direct NumPy simulation of the same rule (Brian2's event semantics).
    m = load(tmp_path, STDP.replace("PRE", "6").replace("POST", "7"))
    out = m.run(record=["s/w", "A/spike", "B/spike"])
    w_nspec = out["s/w"][:, 0]
    pre, post = out["A/spike"][:, 0], out["B/spike"][:, 0]
    dt = m.dt
    w, apre, apost = 0.5, 0.0, 0.0
    expected = []
    for t in range(m.default_steps):
        expected.append(w)
        apre *= np.exp(-dt / 20e-3)
        apost *= np.exp(-dt / 20e-3)
        if pre[t]:
            apre += 0.01
            w = min(max(w + apost, 0), 1)
        if post[t]:
            apost += -0.012
            w = min(max(w + apre, 0), 1)
    np.testing.assert_allclose(w_nspec, np.array(expected, np.float32), rtol=1e-5, atol=1e-7)
    assert pre.sum() > 10 and post.sum() > 10


TICKS = """
system Count {
  in x: f32
  out trace: f32 stack
  out steps: f32
  state total: f32 = 0
  state n: f32 = 0
  until total > 5 max 20
  trace = total
  steps = n
  next total = total + x
  next n = n + 1
}
simulate Count for 1
"""


def test_until_stops_each_sample_at_its_own_tick(tmp_path):
    m = load(tmp_path, TICKS)
    out = m.run(inputs={"x": np.array([1.0, 2.0, 0.1], np.float32)}, batch=3)
    trace = out["trace"]
    assert trace.shape == (3, 20)
    # x = 1: total 0,1,2,...; the condition is read each tick before the update
    assert trace[0, :8].tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    assert trace[1, :5].tolist() == [0, 2, 4, 6, 6]
    np.testing.assert_allclose(trace[2], np.arange(20) * 0.1, rtol=1e-5)


WORKSPACE = """
workspace WS(dim = 3, modules = 2) {
  in write: f32[modules, dim];  in gates: f32[modules];  out read: f32[dim]
  slots 1
  write by softmax
}
composite Use {
  in a: f32[3];  in b: f32[3];  in g: f32[2]
  out seen: f32[3]
  box ws: WS
  wire a -> ws.write[0];  wire b -> ws.write[1];  wire g -> ws.gates
  wire ws.read -> seen
}
"""


def test_workspace_softmax_write_and_broadcast_read(tmp_path):
    m = load(tmp_path, WORKSPACE)
    a, b = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    g = np.array([2.0, 0.0])
    out = m.run(inputs={"a": np.stack([a, a]), "b": np.stack([b, b]), "g": np.stack([g, g])}, steps=2)
    p = np.exp(g) / np.exp(g).sum()
    np.testing.assert_allclose(out["seen"][0], 0)  # read is the content before the write (Moore)
    np.testing.assert_allclose(out["seen"][1], p[0] * a + p[1] * b, rtol=1e-6)


def test_replicated_box_runs_copies_side_by_side(tmp_path):
    text = """
system Acc {
  in x: f32[2];  out y: f32[2]
  state s: f32[2] = 0
  y = s
  next s = s + x
}
composite Many {
  in x: f32[3, 2];  out y: f32[3, 2]
  box cells: Acc[3]
  wire x -> cells.x
  wire cells.y -> y
}
"""
    m = load(tmp_path, text)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = m.run(inputs={"x": np.stack([x, x, x])}, steps=3)
    np.testing.assert_allclose(out["y"][2], 2 * x)
