"""Stochastic equations: white noise ``xi`` in continuous equations (Brian2's semantics) and the
schemes that integrate it, checked against the Ornstein-Uhlenbeck process's analytic statistics.

The OU process dx/dt = -x/tau + sigma sqrt(2/tau) xi is Gaussian with stationary variance sigma^2
and autocorrelation exp(-|lag|/tau).  Euler-Maruyama's update with a = dt/tau,

    x_{n+1} = (1 - a) x_n + sigma sqrt(2 a) N_n,

is an AR(1) process with coefficient rho = 1 - a, so its stationary variance V solves
V = rho^2 V + 2 a sigma^2:  V = sigma^2 * 2 / (2 - a)  (EM's O(dt) bias, +0.5% at a = 0.01), and
its autocorrelation at lag k steps is rho^k (instead of exp(-k a)).  The tests expect EM's values
and state the sampling error of each estimate for n units of T correlated samples:

* the mean of x^2 over an AR(1) series has variance (2 V^2 / (n T)) (1 + rho^2) / (1 - rho^2): the
  samples of x^2 are correlated with coefficient rho^(2|k|), an effective sample size
  n T (1 - rho^2) / (1 + rho^2) (about n T / 100 at rho = 0.99);
* the sample autocorrelation r_k has Bartlett's variance, for an AR(1) process,
  (1 / (n T)) [(1 + rho^2)(1 - rho^(2k)) / (1 - rho^2) - 2 k rho^(2k)].

Each estimate must fall within 4 of its standard errors (a chance failure in 1/15000 per check);
the continuous-time values are within that plus EM's bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.compiler.driver import compile_file
from nspec.compiler.ir import Op
from nspec.dsl.diagnostics import NspecError

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["onnxruntime", "torch", "tvm"]
TAU, SIGMA, DT = 10e-3, 2e-3, 1e-4

OU = """
neuron OU(tau = 10 ms, sigma = 2 mV) {
  state x: mV = 0 mV
  dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi
}

neuron NoisyLIF(tau = 10 ms, sigma = 3 mV) {
  state v: mV = 0 mV
  dv/dt = (15 mV - v) / tau + sigma * sqrt(2 / tau) * xi  unless refractory
  spike when v > 20 mV
  reset { v = 0 mV }
  refractory 2 ms
}

network Noisy {
  population U: OU[1000]
  population N: NoisyLIF[100]
  record x of U as ou
  record v of N as trace
  record spikes of N as raster
}

simulate Noisy for 1 s, dt = DT, seed = 5
"""


def write(tmp_path, text: str, name: str = "sde.nspec") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path, text: str, name: str = "sde.nspec"):
    return nspec.load(str(write(tmp_path, text, name)))


# ---------------------------------------------------------------- statistics of the OU process
def ou_checks(x: np.ndarray, a: float, sigma: float, lags=(10, 50, 100, 200)) -> list[tuple[str, float, float, float]]:
    """(what, estimate, EM's expectation, standard error) for samples ``x`` [T, n] of the
    stationary EM-discretised OU process with a = dt/tau."""
    rho = 1 - a
    T, n = x.shape
    var = sigma ** 2 * 2 / (2 - a)
    v = float(np.mean(np.square(x, dtype=np.float64)))
    out = [("mean", float(np.mean(x, dtype=np.float64)), 0.0, np.sqrt(var / (n * T) * (1 + rho) / (1 - rho))),
           ("variance", v, var, var * np.sqrt(2 / (n * T) * (1 + rho ** 2) / (1 - rho ** 2)))]
    for k in lags:
        r = float(np.mean(x[k:].astype(np.float64) * x[:-k]) / v)
        bartlett = ((1 + rho ** 2) * (1 - rho ** (2 * k)) / (1 - rho ** 2) - 2 * k * rho ** (2 * k)) / (n * (T - k))
        out.append((f"autocorrelation at lag {k}", r, rho ** k, np.sqrt(bartlett)))
    return out


def assert_ou(x: np.ndarray, a: float, sigma: float, lags=(10, 50, 100, 200)) -> None:
    for what, got, want, se in ou_checks(x, a, sigma, lags):
        assert abs(got - want) < 4 * se, f"{what}: {got:.6g}, expected {want:.6g} +- 4 x {se:.3g}"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The spec and its reference run (1 s: 10000 steps of 1000 OU units and 100 noisy LIF cells)."""
    model = load(tmp_path_factory.mktemp("sde"), OU.replace("DT", "0.1 ms"))
    return model, model.run(backend="reference")


def test_ou_variance_and_autocorrelation_match_the_analytic_values(noisy):
    _, out = noisy
    x = out["ou.x"][1000:]  # after 10 tau the start at x = 0 is forgotten (variance deficit rho^2000 ~ 2e-9)
    assert x.shape == (9000, 1000)
    assert_ou(x, DT / TAU, SIGMA)
    # the continuous process's values, within the sampling error plus EM's bias
    for what, got, want, se in ou_checks(x, DT / TAU, SIGMA, lags=(100,)):
        exact = {"mean": 0.0, "variance": SIGMA ** 2}.get(what, np.exp(-1.0))
        assert abs(got - exact) < 4 * se + abs(want - exact), what


def test_euler_maruyama_has_its_known_variance_bias_at_a_coarse_step(tmp_path):
    """dt = tau / 5: EM's stationary variance is sigma^2 * 2 / (2 - 0.2) = 1.111 sigma^2, far outside
    the sampling error of the continuous value sigma^2 (the update is x + f dt + g sqrt(dt) N)."""
    text = OU.replace("DT", "2 ms").replace("population N: NoisyLIF[100]", "").replace(
        "record v of N as trace\n  record spikes of N as raster", "")
    out = load(tmp_path, text).run(steps=2000)
    x = out["ou.x"][100:]
    assert_ou(x, 0.2, SIGMA, lags=(1, 2, 5))
    (_, _, _, _), (_, v, want, se), *_ = ou_checks(x, 0.2, SIGMA, lags=(1,))
    assert abs(v - SIGMA ** 2) > 20 * se and want == pytest.approx(SIGMA ** 2 / 0.9)


@pytest.fixture(scope="module")
def short_reference(noisy):
    model, _ = noisy
    return model.run(backend="reference", steps=2000)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_integrates_the_same_noise(noisy, short_reference, backend):
    """A shorter run (200 ms) on each backend: the same seed gives the same trajectories within a
    float32 tolerance, the same spike trains, and the OU statistics."""
    model, _ = noisy
    got = model.run(backend=backend, steps=2000, **({"strict": True} if backend == "tvm" else {}))
    ref = short_reference
    # NORMAL draws have the same bits on every backend, and Euler-Maruyama's update is plain
    # arithmetic, so the trajectories are bit-identical (TVM in strict mode: no FMA contraction).
    np.testing.assert_array_equal(got["ou.x"], ref["ou.x"])
    np.testing.assert_array_equal(got["trace.v"], ref["trace.v"])
    assert len(ref["raster.i"]) > 50
    np.testing.assert_array_equal(got["raster.i"], ref["raster.i"])
    np.testing.assert_array_equal(got["raster.t"], ref["raster.t"])
    assert_ou(got["ou.x"][1000:], DT / TAU, SIGMA, lags=(10, 100))


def test_refractory_cells_hold_their_noise(noisy):
    """While refractory, v stays exactly at its reset value: the hold covers the noise term."""
    _, out = noisy
    v, steps = out["trace.v"], np.rint(out["raster.t"] / DT).astype(int)
    held = 0
    for i, t in zip(out["raster.i"], steps):
        after = v[t + 1: t + 20, i]  # v is recorded before each step: from t + 1 on, the reset value
        if len(after) == 19:
            np.testing.assert_array_equal(after, 0.0)
            held += 1
    assert held > 50
    assert np.count_nonzero(v[:, 0] == 0.0) < 0.5 * len(v)  # outside refractoriness the noise moves v


# ---------------------------------------------------------------- noise names and draws
SHARED = """
system Pair(tau = 10 ms) {
  out a: f32[500]
  out b: f32[500]
  out c: f32[500]
  state x: f32[500] = 0
  state y: f32[500] = 0
  state z: f32[500] = 0
  dx/dt = -x / tau + sqrt(2 / tau) * xi_1
  dy/dt = -y / tau + sqrt(2 / tau) * xi_1
  dz/dt = -z / tau + sqrt(2 / tau) * xi_2
  a = x
  b = y
  c = z
}
simulate Pair for 100 ms, dt = 0.1 ms
"""


def test_one_noise_name_is_one_draw_and_two_names_are_independent(tmp_path):
    model = load(tmp_path, SHARED)
    draws = [n for n in model.program.step.nodes if n.op in (Op.UNIFORM, Op.NORMAL)]
    assert [n.op for n in draws] == [Op.NORMAL, Op.NORMAL]  # one normal draw per noise name
    assert sorted(n.attrs.stream for n in draws) == [0, 1]  # numbered after the draws were made
    out = model.run(steps=1000)
    np.testing.assert_array_equal(out["a"], out["b"])  # the same name: the same noise
    x, z = out["a"][200:].astype(np.float64), out["c"][200:].astype(np.float64)
    corr = np.mean(x * z) / np.sqrt(np.mean(x * x) * np.mean(z * z))
    # independent AR(1) series with rho = 0.99: corr has variance (1 + rho^2) / (1 - rho^2) / (n T)
    se = np.sqrt(99.5 / x.size)
    assert abs(corr) < 4 * se


def test_elaboration_splits_an_equation_at_its_noise(tmp_path):
    program = compile_file(write(tmp_path, SHARED), until="flatten-systems")
    integrates = [n for n in program.step.nodes if n.op is Op.INTEGRATE]
    (node,) = integrates
    a = node.attrs
    assert a.method == "euler" and a.names == ("x", "y", "z") and a.noises == ("xi_1", "xi_2")
    assert set(a.noises) <= set(a.reads)
    folded = dict(a.folded)  # the factors sqrt(2 / tau) are compile-time numbers
    assert folded["x@xi_1"].value == pytest.approx(np.sqrt(2 / TAU)) and "x@xi_2" not in folded
    assert a.rhs.result("x", "deriv") is not None
    multiplicative = compile_file(write(tmp_path, SHARED.replace("sqrt(2 / tau) * xi_2", "z * sqrt(2 / tau) * xi_2"),
                                        "m.nspec"), until="flatten-systems")
    by_names = {n.attrs.names: n.attrs for n in multiplicative.step.nodes if n.op is Op.INTEGRATE}
    assert by_names[("z",)].method == "heun"  # Brian2's choice for multiplicative noise
    assert by_names[("z",)].rhs.result("z@xi_2", "value") is not None


def test_a_pure_noise_equation_is_a_wiener_process(tmp_path):
    """dx/dt = sigma * xi (no drift): Var x(t) = sigma^2 t; over 500 units the sample variance of
    x(t) has a relative standard error sqrt(2 / 500)."""
    text = ("system W {\n  out y: f32[500] mV\n  state x: f32[500] mV = 0 mV\n"
            "  dx/dt = 2 mV / sqrt(1 s) * xi\n  y = x\n}\nsimulate W for 1 s, dt = 1 ms\n")
    out = load(tmp_path, text).run(steps=1000)
    var = float(np.var(out["y"][-1].astype(np.float64)))
    want = (2e-3) ** 2 * 0.999  # x recorded before the last step: 999 steps of 1 ms
    assert abs(var / want - 1) < 4 * np.sqrt(2 / 500)


# ---------------------------------------------------------------- multiplicative noise: heun and milstein
GBM = """
system G {
  out xs: f64[1000]
  state x: f64[1000] = 1
  state w: f64[1000] = 0
  dx/dt = 0.5 * x / (1 s) + 2 * x / sqrt(1 s) * xi  method M
  dw/dt = xi / sqrt(1 s)  method M
  xs = x
}
simulate G for 10 ms, dt = 1 ms
"""


def test_multiplicative_noise_is_read_as_stratonovich(tmp_path):
    """Geometric Brownian motion dx/dt = mu x + s x xi read as Stratonovich (Brian2's reading):
    log x(t) = mu t + s W(t), so over 1000 units the mean of log x(1 s) is mu = 0.5 within
    4 s / sqrt(1000) = 0.25 (Ito's reading would give mu - s^2/2 = -1.5)."""
    for method in ("heun", "milstein"):
        model = load(tmp_path, GBM.replace("method M", f"method {method}"), f"{method}.nspec")
        model.run(steps=1000)
        state = model.get_state()
        log_x = np.log(state["x"][0])
        w = state["w"][0]  # the same noise, integrated alone: W(t) itself
        assert abs(float(np.mean(log_x)) - 0.5) < 4 * 2 / np.sqrt(1000), method
        assert abs(float(np.var(w)) - 1.0) < 4 * np.sqrt(2 / 1000), method
        # strong convergence: the path of log x follows 0.5 t + 2 W(t)
        assert float(np.sqrt(np.mean((log_x - 0.5 - 2 * w) ** 2))) < 0.1, method


def test_milstein_takes_brian2s_derivative_free_step(tmp_path):
    """One step from x = 1: w gets dW exactly (additive noise), and x gets
    x + f dt + g dW + (g(x_s) - g(x)) dW^2 / (2 sqrt(dt)) with x_s = x + f dt + g sqrt(dt)."""
    model = load(tmp_path, GBM.replace("method M", "method milstein"))
    model.run(steps=1)
    state = model.get_state()
    dw, x = state["w"][0], state["x"][0]
    dt, mu, s = 1e-3, 0.5, 2.0
    g = s * 1.0
    g_support = s * (1.0 + mu * dt + g * np.sqrt(dt))
    want = 1.0 + mu * dt + g * dw + (g_support - g) * dw ** 2 / (2 * np.sqrt(dt))
    np.testing.assert_allclose(x, want, rtol=1e-6)
    assert np.ptp(dw) > 0


def test_milstein_is_euler_maruyama_for_additive_noise(tmp_path):
    ou = OU.replace("DT", "0.1 ms").replace("population N: NoisyLIF[100]", "").replace(
        "record v of N as trace\n  record spikes of N as raster", "")
    em = load(tmp_path, ou, "em.nspec").run(steps=300)
    mil = load(tmp_path, ou.replace("* xi\n", "* xi  method milstein\n"), "mil.nspec").run(steps=300)
    np.testing.assert_array_equal(em["ou.x"], mil["ou.x"])


# ---------------------------------------------------------------- located errors
NEURON = """neuron OU(tau = 10 ms, sigma = 2 mV) {
  state x: mV = 0 mV
  state y: f32[2] mV = 0 mV
  EQUATION
}
network Net {
  population P: OU[4]
  record x of P as m
}
simulate Net for 1 ms, dt = 0.1 ms
"""


@pytest.mark.parametrize("equation, where, message", [
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi^2", "4:46", "dx/dt must be linear in its noise, f + g * xi: "
                                                               "here 'xi' is raised to a power"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * exp(xi)", "4:46", "'xi' is inside a function call"),
    ("dx/dt = -x / tau + sigma / xi", "4:22", "'xi' is in a denominator"),
    ("dx/dt = -x / tau + sigma * xi * xi_2 * 1 s", "4:22", "'xi_2' is multiplied by a noise"),
    ("dx/dt = -x / tau + where(xi > 0, sigma, sigma) / tau", "4:22", "'xi' is inside a function call"),
    ("dx/dt = -x / tau + sigma * xi", "4:22", "unit mismatch: the noise term of dx/dt is V*s^-1/2, it must be V/s "
                                              "(the unit of x per second); xi has unit s^-1/2, so its factor must be "
                                              "V*s^-1/2, not V; a factor like sqrt(2 / tau) or tau^-0.5 is missing"),
    ("dx/dt = -x / tau + sigma / tau * xi", "4:22", "divide by sqrt(tau), not by tau"),
    ("dx/dt = -x + sigma * sqrt(2 / tau) * xi", "4:11", "the right-hand side without its noise terms is V"),
    ("let n = sigma * sqrt(2 / tau) * xi\n  dx/dt = -x / tau + n", "4:35",
     "'xi' is white noise, usable only directly in the right-hand side of a continuous equation"),
    ("next x = x + xi * 1 mV", "4:16", "'xi' is white noise"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi  method exact", "4:3",
     "method exact cannot integrate dx/dt, which has noise (xi); the methods for stochastic equations are euler, "
     "heun, milstein"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi  method rk4", "4:3", "method rk4 cannot integrate dx/dt"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi  method exp_euler", "4:3", "method exp_euler cannot integrate"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi\n  method midpoint", "4:3",
     "method midpoint (this declaration's default) cannot integrate dx/dt"),
    ("dx/dt = -x / tau + x * sqrt(2 / tau) * xi / (1 mV) * 1 mV  method euler", "4:3",
     "method euler integrates additive noise only, and the factor of xi in dx/dt reads x, a state with a continuous "
     "equation (multiplicative noise, read as Stratonovich as in Brian2); use heun, milstein"),
    ("dx/dt = -x / tau + sigma * sqrt(1 / tau) * (xi_a + xi_b)  method milstein", "4:3",
     "method milstein integrates at most 1 independent noise per group of equations, these have xi_a, xi_b"),
    ("dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi\n  dy/dt = -y / tau + sigma * sqrt(2 / tau) * xi", "5:3",
     "'xi' drives states of shapes [4] and [4, 2]"),
])
def test_noise_mistakes_are_located_errors(tmp_path, equation, where, message):
    with pytest.raises(NspecError) as exc:
        load(tmp_path, NEURON.replace("EQUATION", equation))
    text = str(exc.value)
    assert f"sde.nspec:{where}: error:" in text and message in text, text


def test_a_stochastic_equation_refuses_the_simulate_items_deterministic_method(tmp_path):
    text = NEURON.replace("EQUATION", "dx/dt = -x / tau + sigma * sqrt(2 / tau) * xi").replace(
        "dt = 0.1 ms\n", "dt = 0.1 ms, method = exact\n")
    with pytest.raises(NspecError, match="method exact \\(the simulate item's default\\) cannot integrate dx/dt"):
        load(tmp_path, text)


def test_a_declared_name_shadows_the_noise_symbol(tmp_path):
    text = NEURON.replace("EQUATION", "param xi: f32 = 2\n  dx/dt = -x * xi / tau")
    model = load(tmp_path, text)
    assert not [n for n in model.program.step.nodes if n.op is Op.UNIFORM]


def test_noise_in_a_system_with_ticks_is_refused(tmp_path):
    text = ("system T {\n  in u: f32\n  out y: f32\n  state x: f32 = 0\n"
            "  dx/dt = (u - x) / (10 ms) + xi / sqrt(10 ms)\n  y = x\n  ticks 3\n}\nsimulate T for 2 ms, dt = 1 ms\n")
    with pytest.raises(NspecError, match="random draws are not supported in a system with internal ticks"):
        load(tmp_path, text)


SYNAPSE = """
neuron Src(period = 5 ms) {
  state v: f32 = 0
  dv/dt = 1 / period
  spike when v > 1
  reset { v = 0 }
}
neuron Tgt {
  state ge: nS = 0 nS
  dge/dt = -ge / (5 ms)
}
synapse NoisyTrace(taupre = 20 ms) {
  state w: f32 = 0.5
  state apre: f32 = 0
  dapre/dt = -apre / taupre + 0.1 * sqrt(2 / taupre) * xi
  on_pre { ge += w * 1 nS;  apre += 0.01 }
}
network Net {
  population A: Src[3]
  population B: Tgt[2]
  projection p: A -> B via NoisyTrace { connect all_to_all }
  record ge of B as m
}
simulate Net for 10 ms, dt = 0.1 ms
"""


def test_synapse_equations_take_noise_one_draw_per_synapse(tmp_path):
    model = load(tmp_path, SYNAPSE)
    model.run(steps=100)
    state = model.get_state()
    apre = state["p/apre"][0]
    assert apre.shape == (6,) and len(set(apre.tolist())) == 6  # every synapse diffuses on its own
    assert int(state["p/step_count"][0]) == 100  # the step counter behind the draws counts on
