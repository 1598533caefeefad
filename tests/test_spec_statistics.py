"""The spike-train and weight statistics (runtime/spike_statistics.py) on hand-made spike trains
whose answers are known, and their use in spec tests (cv, peak_frequency, synchrony, bimodality).

They are the oracle of the Brian2 comparison (bench/brian2_compare.py), so each is checked against
a value computed by hand or by an independent routine (scipy's Welch spectrum)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy import signal

from nspec.compiler import ir
from nspec.dsl.diagnostics import SourceMap
from nspec.runtime import spike_statistics as S
from nspec.runtime.spectest import run_file

DT = 1e-4


def trains(spike_lists: list[list[int]], steps: int) -> S.Spikes:
    """Neuron k spikes at the steps ``spike_lists[k]``."""
    i = np.concatenate([np.full(len(s), k) for k, s in enumerate(spike_lists)]).astype(int)
    t = np.concatenate([np.asarray(s, float) for s in spike_lists]) * DT
    return S.Spikes.from_monitor(i, t, len(spike_lists), steps * DT, DT)


def raster_of(s: S.Spikes) -> np.ndarray:
    r = np.zeros((s.steps, s.n), bool)
    r[np.round(s.t / s.dt).astype(int), s.i] = True
    return r


# ---------------------------------------------------------------- rates and CVs
def test_mean_rate_counts_spikes_per_neuron_second():
    s = trains([[0, 10, 20], [5], []], steps=1000)  # 4 spikes, 3 neurons, 0.1 s
    assert S.mean_rate(s) == pytest.approx(4 / 3 / 0.1)


def test_cv_of_hand_made_intervals():
    # neuron 0: intervals 10, 30 (mean 20, std 10: CV 0.5); neuron 1: a clock (CV 0);
    # neuron 2: two spikes, one interval: left out; neuron 3: silent
    s = trains([[0, 10, 40], [0, 20, 40, 60], [3, 90], []], steps=100)
    assert S.cv_isi(s) == pytest.approx(0.25)


def test_cv_ignores_the_order_spikes_are_listed_in():
    s = trains([[0, 10, 40], [0, 20, 40, 60]], steps=100)
    perm = np.random.default_rng(0).permutation(s.i.size)
    shuffled = S.Spikes(s.i[perm], s.t[perm], s.n, s.steps, s.dt)
    assert S.cv_isi(shuffled) == pytest.approx(S.cv_isi(s)) == pytest.approx(0.25)


def test_cv_of_poisson_trains_is_one():
    rng = np.random.default_rng(1)
    raster = rng.random((100_000, 20)) < 0.01           # Bernoulli(0.01) per 0.1 ms: 100 Hz
    s = S.Spikes.from_raster(raster, DT)
    # geometric intervals with p = 0.01: CV = sqrt(1 - p) = 0.995; ~1000 intervals per neuron
    assert S.cv_isi(s) == pytest.approx(np.sqrt(0.99), abs=0.03)


def test_cv_without_three_spikes_is_an_error():
    with pytest.raises(S.StatisticError, match="no neuron spiked 3 times"):
        S.cv_isi(trains([[1, 5], [7]], steps=10))


def test_raster_and_monitor_give_the_same_statistics():
    rng = np.random.default_rng(2)
    raster = rng.random((5000, 30)) < 0.003
    a = S.Spikes.from_raster(raster, DT)
    b = S.Spikes.from_monitor(a.i[::-1], a.t[::-1], 30, 5000 * DT, DT)
    for stat in (S.mean_rate, S.cv_isi, S.synchrony, S.peak_frequency):
        assert stat(a) == pytest.approx(stat(b)), stat.__name__
    np.testing.assert_array_equal(raster_of(b), raster)


# ---------------------------------------------------------------- the population spectrum
def modulated(freq: float, steps: int, n: int = 200, depth: float = 0.8, seed: int = 3) -> S.Spikes:
    """n neurons, each spiking per step with probability 0.002 (1 + depth sin(2 pi freq t))."""
    t = np.arange(steps) * DT
    p = 0.002 * (1 + depth * np.sin(2 * np.pi * freq * t))
    raster = np.random.default_rng(seed).random((steps, n)) < p[:, None]
    return S.Spikes.from_raster(raster, DT)


@pytest.mark.parametrize("freq", [40.0, 180.0, 300.0])
def test_peak_frequency_finds_the_modulation(freq):
    assert S.peak_frequency(modulated(freq, 10_000)) == freq


def test_peak_frequency_has_a_10_hz_resolution():
    # 125 Hz lies between the bins 120 and 130 Hz of a 100 ms segment
    assert S.peak_frequency(modulated(125.0, 10_000)) in (120.0, 130.0)


def test_a_short_record_uses_one_segment():
    # 50 ms: one segment of 500 steps, a 20 Hz resolution
    freqs, _ = S.power_spectrum(modulated(200.0, 500))
    assert freqs[1] == pytest.approx(20.0)
    assert S.peak_frequency(modulated(200.0, 500)) == 200.0


def test_the_spectrum_is_welchs():
    s = modulated(180.0, 10_000)
    counts = np.bincount(np.round(s.t / DT).astype(int), minlength=s.steps).astype(float)
    f, want = signal.welch(counts, fs=1 / DT, window=np.hanning(1000), nperseg=1000, noverlap=500,
                           detrend="constant", scaling="spectrum")
    freqs, have = S.power_spectrum(s)
    np.testing.assert_allclose(freqs, f)
    inner = slice(1, -1)  # scipy doubles the one-sided bins between DC and Nyquist
    ratio = have[inner] / want[inner]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_a_silent_population_has_no_peak():
    with pytest.raises(S.StatisticError, match="did not spike"):
        S.peak_frequency(trains([[], []], steps=1000))


# ---------------------------------------------------------------- synchrony
def test_independent_neurons_have_a_fano_factor_of_one():
    raster = np.random.default_rng(4).random((20_000, 500)) < 0.002
    # the population count is binomial(500, 0.002): variance / mean = 1 - 0.002; ~20 000 bins
    assert S.synchrony(S.Spikes.from_raster(raster, DT)) == pytest.approx(0.998, abs=0.03)


def test_neurons_firing_together_have_a_fano_factor_of_n():
    fire = np.random.default_rng(5).random(20_000) < 0.002
    raster = np.repeat(fire[:, None], 50, axis=1)
    # counts are 50 x Bernoulli(q): variance / mean = 50 (1 - q) with q the empirical fraction
    q = fire.mean()
    assert S.synchrony(S.Spikes.from_raster(raster, DT)) == pytest.approx(50 * (1 - q))


# ---------------------------------------------------------------- weights
def test_bimodality_counts_weights_near_either_bound():
    w = np.array([0.0, 0.0009, 0.0011, 0.005, 0.0089, 0.0091, 0.01])
    # within 10 % of wmax = 0.01 of a bound: 0, 0.0009, 0.0091, 0.01
    assert S.bimodality(w, 0.01) == pytest.approx(4 / 7)


def test_weight_histogram_sums_to_one():
    w = np.linspace(0, 1, 101)
    h = S.weight_histogram(w, 1.0, bins=10)
    assert h.sum() == pytest.approx(1.0) and h[0] == pytest.approx(10 / 101) and h[-1] == pytest.approx(11 / 101)


# ---------------------------------------------------------------- in spec tests
@dataclass
class ClockModel:
    """P: 4 neurons; neuron k spikes every 10 (k + 1) steps, and all of them together every 60
    steps from step 0.  Monitor ``syn`` holds weights ``syn.w`` (wmax 1)."""

    program: ir.Program
    populations: dict = field(default_factory=lambda: {"P": 4, "Q": 2})
    dt: float = DT
    default_steps: int | None = 1000
    monitors: tuple = ()

    def run(self, **kw):
        steps = kw["steps"] or self.default_steps
        spikes = np.zeros((steps, 4), bool)
        for k in range(4):
            spikes[:: 10 * (k + 1), k] = True
        spikes[::60] = True
        w = np.array([[0.0, 0.05, 0.5, 0.95, 1.0]])
        return {"P/spike": spikes, "Q/spike": np.zeros((steps, 2), bool), "syn.w": w}


def spec_outcomes(tmp_path, text: str):
    path = tmp_path / "t.nspec"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    empty = ir.Graph((), ())
    program = ir.Program("Fake", empty, empty, (), (), (), (), (), dt=DT)
    results, diags = run_file(path, SourceMap(), lambda p, target, hyper: ClockModel(program))
    assert diags == []
    return {o.name: o for o in results}


def test_statistics_in_spec_tests(tmp_path):
    steps = 1000
    raster = np.zeros((steps, 4), bool)
    for k in range(4):
        raster[:: 10 * (k + 1), k] = True
    raster[::60] = True
    s = S.Spikes.from_raster(raster, DT)
    cv, peak, sync = S.cv_isi(s), S.peak_frequency(s), S.synchrony(s)
    res = spec_outcomes(tmp_path, f"""
        test "cv" {{ expect cv(P) in [{cv - 1e-9}, {cv + 1e-9}] }}
        test "peak" {{ expect peak_frequency(P) == {peak} Hz }}
        test "synchrony" {{ expect synchrony(P) in [{sync - 1e-9}, {sync + 1e-9}] }}
        test "slice" {{ expect cv(P[0:3]) < 1e-9 and cv(P[3:4]) > 0 }}
        test "bimodality" {{ expect bimodality(syn.w[-1], 1) == 0.8 and bimodality(syn.w, wmax = 1) == 0.8 }}
        test "silent" {{ expect cv(Q) > 0 }}
        test "no spikes" {{ expect peak_frequency(Q) > 0 Hz }}
        test "unitless peak" {{ expect peak_frequency(P) > 100 }}
        test "bad wmax" {{ expect bimodality(syn.w, 0) > 0 }}
    """)
    assert cv > 0 and peak > 0 and sync > 1  # the values themselves are tested above; here: the wiring
    for name in ("cv", "peak", "synchrony", "slice", "bimodality"):
        assert res[name].passed, res[name].message
    assert "cv(): no neuron spiked 3 times" in res["silent"].message
    assert "peak_frequency(): the population did not spike" in res["no spikes"].message
    assert "units do not match" in res["unitless peak"].message
    assert "bimodality(): wmax must be positive" in res["bad wmax"].message
