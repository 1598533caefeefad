"""The standard sources (specs/lib/sources.nspec), stochastic synapses and ``binomial(n, p)``.

* ``binomial``: the compile-time plan against SciPy's exact CDF and tail (the unrolled bound K
  leaves less than 1e-12 beyond it), the distribution of 10^6 draws (mean, variance, a chi-square
  test of the pmf), the normal approximation's moments, and the located errors.
* ``PoissonGroup`` rates from a template parameter, a per-neuron list and an input array;
  ``PoissonInput`` counts; ``SpikeGeneratorGroup`` against a hand-made event list (exact step
  times); ``StochasticDeltaV``'s delivered fraction against p.
* Every source on onnxruntime, torch and tvm equals the reference: spikes and exact binomial
  counts bit for bit.

Statistical checks use bounds of at least four standard errors (or a chi-square quantile at
1 - 1e-6), so a correct implementation fails one with a probability below 1e-4; the seeds are
fixed, so each test is deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import nspec
from nspec.compiler.builtins_random import BINOMIAL_MAX_K, BINOMIAL_TAIL, binomial_plan
from nspec.dsl import NspecError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "specs" / "examples"
BACKENDS = ["onnxruntime", "torch", "tvm"]

COUNTS = """module counts "binomial draws"
hyper n: int = 20
hyper p: float = 0.3
system Counts {
  out k: f32[1000]
  state draws: f32[1000] = 0
  next draws = binomial(n, p)
  k = draws
}
simulate Counts for 10 s, dt = 1 s
"""


def load_text(tmp_path: Path, text: str, target: str | None = None, **hyper) -> nspec.Model:
    path = tmp_path / "spec.nspec"
    path.write_text(text, encoding="utf-8")
    return nspec.load(path, target, **hyper)


def draws(tmp_path: Path, n: int, p: float, count: int) -> np.ndarray:
    """``count`` x 1000 binomial draws on the reference backend (the first step's output is the
    initial 0, so it is left out)."""
    model = load_text(tmp_path, COUNTS, n=n, p=p)
    return model.run(steps=count + 1)["k"][1:].ravel()


# ---------------------------------------------------------------- binomial: the plan
@pytest.mark.parametrize("n,p", [(1, 0.5), (20, 0.3), (10, 0.9), (1000, 0.002), (100000, 0.001), (200, 0.5),
                                 (5000, 0.02)])
def test_the_folded_cdf_is_the_exact_cdf_and_the_tail_beyond_k_is_below_1e_12(n, p):
    plan = binomial_plan(n, p)
    q = min(p, 1 - p)
    k = len(plan.cdf)
    assert 0 < k <= BINOMIAL_MAX_K
    assert plan.flip == (p > 0.5)
    np.testing.assert_allclose(plan.cdf, stats.binom.cdf(np.arange(k), n, q), rtol=0, atol=1e-13)
    if k < n:
        # the draw is K with probability P(X >= K) = 1 - cdf[K - 1]: below 1e-12, so is the mass of X > K
        assert stats.binom.sf(k - 1, n, q) < BINOMIAL_TAIL
        assert stats.binom.sf(k - 2, n, q) > 0.5 * BINOMIAL_TAIL  # and K is the first such bound


def test_a_large_n_p_takes_the_normal_approximation():
    plan = binomial_plan(100000, 0.01)
    assert plan.cdf == ()
    assert plan.mean == pytest.approx(1000) and plan.std == pytest.approx(math.sqrt(990))


# ---------------------------------------------------------------- binomial: the distribution
def chi_square(counts: np.ndarray, pmf: np.ndarray, total: int) -> tuple[float, int]:
    """Pearson's statistic over the bins, the tails merged until each bin expects at least 5."""
    expected = total * pmf
    lo, hi = 0, len(pmf) - 1
    while expected[: lo + 1].sum() < 5:
        lo += 1
    while expected[hi:].sum() < 5:
        hi -= 1
    obs = np.concatenate([[counts[: lo + 1].sum()], counts[lo + 1: hi], [counts[hi:].sum()]])
    exp = np.concatenate([[expected[: lo + 1].sum()], expected[lo + 1: hi], [expected[hi:].sum()]])
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


@pytest.mark.parametrize("n,p", [(20, 0.3), (1000, 0.002), (10, 0.9), (200, 0.5)])
def test_a_million_draws_have_the_binomial_mean_variance_and_pmf(tmp_path, n, p):
    k = draws(tmp_path, n, p, 1000)
    total = k.size
    assert total == 10**6
    assert np.all(k == np.round(k)) and k.min() >= 0 and k.max() <= n
    mean, var = n * p, n * p * (1 - p)
    mu4 = var * (1 + 3 * (n - 2) * p * (1 - p))  # the fourth central moment of Binomial(n, p)
    assert abs(k.mean() - mean) < 5 * math.sqrt(var / total)
    assert abs(k.var() - var) < 5 * math.sqrt((mu4 - var**2) / total)
    counts = np.bincount(k.astype(np.int64), minlength=n + 1)
    stat, dof = chi_square(counts, stats.binom.pmf(np.arange(n + 1), n, p), total)
    assert stat < stats.chi2.ppf(1 - 1e-6, dof), (stat, dof)


def test_the_draws_are_independent_across_elements_and_steps(tmp_path):
    k = draws(tmp_path, 20, 0.3, 200).reshape(200, 1000)
    # correlations of neighbouring elements and of consecutive steps: |r| < 5 / sqrt(samples)
    assert abs(np.corrcoef(k[:, :-1].ravel(), k[:, 1:].ravel())[0, 1]) < 5 / math.sqrt(k.size)
    assert abs(np.corrcoef(k[:-1].ravel(), k[1:].ravel())[0, 1]) < 5 / math.sqrt(k.size)


def test_the_normal_approximation_has_the_binomial_mean_and_variance(tmp_path):
    n, p = 100000, 0.01
    k = draws(tmp_path, n, p, 100)
    mean, var = n * p, n * p * (1 - p)
    assert np.all(k == np.round(k)) and k.min() >= 0
    assert abs(k.mean() - mean) < 5 * math.sqrt(var / k.size)
    assert abs(k.var() - var) < 5 * var * math.sqrt(2 / k.size)


@pytest.mark.parametrize("n,p,value", [(0, 0.5, 0), (30, 0.0, 0), (30, 1.0, 30)])
def test_a_certain_count_is_a_constant(tmp_path, n, p, value):
    assert np.all(draws(tmp_path, n, p, 3) == value)


# ---------------------------------------------------------------- binomial: errors
BAD = """module bad "x"
system S {
  in x: f32
  state c: f32[4] = 0
  next c = STATEMENT
}
simulate S for 2 s, dt = 1 s
"""


@pytest.mark.parametrize("call,message", [
    ("binomial(x, 0.5)", "n must be a whole number known at compile time"),
    ("binomial(2.5, 0.5)", "n must be a whole number known at compile time"),
    ("binomial(10, x)", "p must be one number known at compile time"),
    ("binomial(10, 1.5)", "p must be in [0, 1], got 1.5"),
    ("binomial(10, -0.1)", "p must be in [0, 1], got -0.1"),
    ("binomial(-1, 0.5)", "n must be in 0..16777216"),
    ("binomial(20000000, 0.5)", "n must be in 0..16777216"),
    ("binomial(10, 5 Hz)", "p must be dimensionless"),
    ("binomial(10)", "binomial() takes 2 positional arguments"),
])
def test_binomial_mistakes_are_located_errors(tmp_path, call, message):
    with pytest.raises(NspecError) as err:
        load_text(tmp_path, BAD.replace("STATEMENT", call))
    text = str(err.value)
    assert message in text
    assert "spec.nspec:5:" in text  # the line of the call


def test_binomial_cannot_initialise_a_value(tmp_path):
    with pytest.raises(NspecError, match=r"spec.nspec:4:.*binomial\(\) draws a count in step equations"):
        load_text(tmp_path, BAD.replace("state c: f32[4] = 0", "state c: f32[4] = binomial(4, 0.5)")
                  .replace("STATEMENT", "c"))


def test_an_increment_outside_events_is_checked_like_on_pre(tmp_path):
    spec = """module bad "x"
from "std/neurons.nspec" import LIF
network N {
  population E: LIF[2]
  projection x: E -> E { connect one_to_one;  v += 1 nA * binomial(10, 0.1) }
}
simulate N for 1 ms, dt = 0.1 ms
"""
    with pytest.raises(NspecError, match=r"spec.nspec:5:.*unit mismatch: 'v' of E is V, the increment is A"):
        load_text(tmp_path, spec)


# ---------------------------------------------------------------- the sources
def test_poisson_group_rates_from_a_parameter_a_list_and_an_input():
    model = nspec.load(EXAMPLES / "sources_poisson.nspec", "Rates", dt=1e-3)
    steps = 2000
    drive = np.where(np.arange(20) < 10, 50.0, 0.0).astype(np.float32)
    out = model.run(inputs={"drive": drive}, steps=steps, record=["Const/spike", "Each/spike", "Driven/spike"])
    seconds = steps * 1e-3
    for key, rate, n in (("Const/spike", 20.0, 100),):
        p = rate * 1e-3
        got = out[key].sum() / (n * seconds)
        assert abs(got - rate) < 5 * math.sqrt(p * (1 - p) / (n * steps)) / 1e-3
    each = out["Each/spike"].sum(axis=0) / seconds
    for got, rate in zip(each, (10.0, 80.0)):
        p = rate * 1e-3
        assert abs(got - rate) < 5 * math.sqrt(p * (1 - p) / steps) / 1e-3
    driven = out["Driven/spike"].sum(axis=0)
    assert np.all(driven[10:] == 0)
    assert abs(driven[:10].mean() / seconds - 50.0) < 5 * math.sqrt(0.05 * 0.95 / (10 * steps)) / 1e-3


def test_poisson_input_counts_have_binomial_mean_and_variance():
    model = nspec.load(EXAMPLES / "sources_poisson_input.nspec", dt=1e-3)
    model.run(steps=1000)
    counts = np.asarray(model.get_state()["T/v"]).ravel() / 1e-3  # w = 1 mV per event
    mean, var = 1000 * 1000 * 0.01, 1000 * 1000 * 0.01 * 0.99
    assert abs(counts.mean() - mean) < 5 * math.sqrt(var / counts.size)
    # one draw per target neuron: the spread across neurons is the binomial one, not zero
    assert abs(counts.std() ** 2 - var) < 5 * var * math.sqrt(2 / counts.size)


def test_spike_replay_fires_the_hand_made_events_in_their_steps():
    model = nspec.load(EXAMPLES / "sources_replay.nspec", "Replay")
    dt = 1e-4
    # (neuron, time): step k for a time in [k dt, (k + 1) dt); two events of neuron 1 in step 4 give one
    # spike; exact multiples of dt, a time just below a boundary, a negative time, an index outside 0..2
    events = [(0, 0.0), (2, 3 * dt), (1, 4.2 * dt), (1, 4.9 * dt), (0, 7 * dt - 1e-9), (2, -dt)]
    indices = np.array([i for i, _ in events], np.int64)
    times = np.array([t for _, t in events], np.float64)
    want_steps = {(0, 0), (2, 3), (1, 4), (0, 7)}
    inputs = {"indices": np.tile(indices, (3, 1)), "times": np.tile(times, (3, 1))}
    reference = model.run(inputs=inputs, steps=10)
    got = {(int(i), int(round(t / dt))) for i, t in zip(reference["replay.i"], reference["replay.t"])}
    assert got == want_steps
    assert len(reference["replay.i"]) == len(want_steps)
    outside = {"indices": np.full((3, 6), 3, np.int64), "times": np.full((3, 6), 2 * dt)}
    assert model.run(inputs=outside, steps=10)["replay.i"].size == 0
    for backend in BACKENDS:
        out = model.run(inputs=inputs, steps=10, backend=backend)
        np.testing.assert_array_equal(out["replay.i"], reference["replay.i"], err_msg=backend)
        np.testing.assert_array_equal(out["replay.t"], reference["replay.t"], err_msg=backend)


def test_stochastic_synapses_deliver_a_fraction_p_of_spikes_independently():
    model = nspec.load(EXAMPLES / "sources_stochastic.nspec", dt=1e-3)
    steps, p = 1000, 0.3
    model.run(steps=steps)
    delivered = np.asarray(model.get_state()["T/v"]).ravel() / 1e-3  # w = 1 mV per delivered spike
    trials = steps * 10  # ten presynaptic neurons spike every step, all to all
    # the fraction over 50 targets x 10000 trials: p within five binomial standard errors
    assert abs(delivered.sum() / (trials * delivered.size) - p) < 5 * math.sqrt(p * (1 - p) / (trials * delivered.size))
    # each synapse draws its own number: the spread across targets is binomial, not zero
    var = trials * p * (1 - p)
    assert abs(delivered.var() - var) < 5 * var * math.sqrt(2 / delivered.size)


# ---------------------------------------------------------------- every backend equals the reference
@pytest.fixture(scope="module")
def library_runs():
    """lib_sources' Bench (all four sources driving LIF neurons) and exact binomial counts."""
    bench = nspec.load(EXAMPLES / "lib_sources.nspec")
    counts = nspec.load(EXAMPLES / "lib_sources.nspec", "Counts", n=40, p=0.05)
    return {"bench": (bench, 600, bench.run(steps=600)), "counts": (counts, 20, counts.run(steps=20))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_source_gives_the_reference_spikes_on_every_backend(library_runs, backend):
    for name, (model, steps, reference) in library_runs.items():
        got = model.run(steps=steps, backend=backend)
        assert set(got) == set(reference), name
        for key, want in reference.items():
            np.testing.assert_array_equal(got[key], want, err_msg=f"{name}: {key} on {backend}")
    bench = library_runs["bench"][2]
    assert all(bench[f"{m}.i"].size > 0 for m in ("inputs", "reliable", "unreliable", "driven", "replayed", "target"))


def test_an_event_list_wired_without_the_neuron_axis_is_a_located_error(tmp_path):
    spec = """module bad "x"
from "std/sources.nspec" import SpikeGeneratorGroup
network N {
  in times: f64[5] s
  population G: SpikeGeneratorGroup(E = 5)[3]
  wire times -> G.times
}
simulate N for 1 ms, dt = 0.1 ms
"""
    with pytest.raises(NspecError, match=r"spec.nspec:6:.*shape mismatch on wire times -> G.times: "
                                         r"\[5\] into \[3, 5\]"):
        load_text(tmp_path, spec)


def test_index_numbers_neurons_and_is_refused_in_a_system(tmp_path):
    spec = """module idx "x"
neuron Numbered {
  state k: f32 = 0
  next k = float(index())
}
network N {
  population P: Numbered[4]
}
simulate N for 2 ms, dt = 1 ms
"""
    model = load_text(tmp_path, spec)
    model.run(steps=2)
    np.testing.assert_array_equal(model.get_state()["P/k"].ravel(), [0, 1, 2, 3])
    with pytest.raises(NspecError, match=r"spec.nspec:5:.*index\(\) numbers the neurons of a population"):
        scalar = BAD.replace("state c: f32[4] = 0", "state c: f32 = 0")
        load_text(tmp_path, scalar.replace("STATEMENT", "float(index())"))
