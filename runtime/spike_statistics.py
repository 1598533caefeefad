"""Statistics of spike trains and synaptic weights, one definition for both sides of a comparison.

Spec tests read them as population functions (``cv(P)``, ``peak_frequency(P)``,
``synchrony(P)``, ``spec_eval.py``) and ``bench/brian2_compare.py`` applies the same functions
to Brian2's recorded spikes, so a statistic means the same thing wherever it is quoted.

* ``mean_rate``: spikes / (neurons x recorded seconds).
* ``cv_isi``: the mean, over the neurons that spiked at least 3 times (two intervals: one
  interval has no spread), of std / mean of the neuron's interspike intervals (population
  standard deviation, ddof = 0).  Poisson trains give 1, a clock gives 0.
* ``peak_frequency``: the frequency of the largest peak of the power spectrum of the population
  activity (spikes per bin of ``dt``, mean removed), DC excluded.  The spectrum is Welch's
  average of Hann-windowed periodograms of ``SEGMENT`` = 100 ms segments overlapping by half
  (the whole record when it is shorter), so the resolution is 10 Hz (1 / record length below
  100 ms).
* ``synchrony``: the Fano factor (variance / mean) of the population spike count per bin of
  ``dt``: 1 for independent Poisson neurons, larger when neurons fire together.
* ``bimodality``: the fraction of weights within 10 % of ``wmax`` from 0 or from ``wmax``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEGMENT = 0.1  # seconds: Welch segment of peak_frequency (10 Hz resolution)
MIN_SPIKES_FOR_CV = 3
EDGE = 0.1  # bimodality: within EDGE * wmax of a bound


class StatisticError(ValueError):
    """A statistic is undefined for these spikes (too few spikes, too short a record)."""


@dataclass(frozen=True, slots=True)
class Spikes:
    """Spike times ``t`` (seconds, multiples of ``dt`` from 0) of neurons ``i`` among ``n``,
    over a record of ``steps`` bins of ``dt`` seconds."""

    i: np.ndarray
    t: np.ndarray
    n: int
    steps: int
    dt: float

    @property
    def duration(self) -> float:
        return self.steps * self.dt

    @staticmethod
    def from_raster(raster: np.ndarray, dt: float) -> "Spikes":
        """From a ``[steps, n]`` record of spikes (bool or 0/1)."""
        raster = np.asarray(raster)
        steps, idx = np.nonzero(raster)
        return Spikes(idx.astype(np.int64), steps * dt, raster.shape[1], raster.shape[0], dt)

    @staticmethod
    def from_monitor(i: np.ndarray, t: np.ndarray, n: int, duration: float, dt: float) -> "Spikes":
        """From a spike monitor's indices and times (seconds), as nspec and Brian2 save them."""
        return Spikes(np.asarray(i, dtype=np.int64), np.asarray(t, dtype=np.float64), int(n),
                      int(round(duration / dt)), float(dt))

    def counts(self) -> np.ndarray:
        """The population spike count per bin of ``dt``."""
        bins = np.clip(np.round(self.t / self.dt).astype(np.int64), 0, max(self.steps - 1, 0))
        return np.bincount(bins, minlength=self.steps).astype(np.float64)


def mean_rate(s: Spikes) -> float:
    """Spikes per neuron per second (Hz)."""
    if s.n == 0 or s.steps == 0:
        raise StatisticError("the record is empty")
    return s.i.size / (s.n * s.duration)


def cv_isi(s: Spikes) -> float:
    """Mean coefficient of variation of the interspike intervals over neurons with >= 3 spikes."""
    order = np.lexsort((s.t, s.i))
    i, t = s.i[order], s.t[order]
    same = i[1:] == i[:-1]
    who, isi = i[1:][same], np.diff(t)[same]
    intervals = np.bincount(who, minlength=s.n)
    used = intervals >= MIN_SPIKES_FOR_CV - 1
    if not used.any():
        raise StatisticError(f"no neuron spiked {MIN_SPIKES_FOR_CV} times, so no interval varies")
    total = np.bincount(who, weights=isi, minlength=s.n)
    mean = np.divide(total, intervals, out=np.zeros(s.n), where=intervals > 0)
    square = np.bincount(who, weights=(isi - mean[who]) ** 2, minlength=s.n)
    std = np.sqrt(np.divide(square, intervals, out=np.zeros(s.n), where=intervals > 0))
    return float(np.mean(std[used] / mean[used]))


def power_spectrum(s: Spikes) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, power) of the population activity: Welch, Hann, 50 % overlap."""
    counts = s.counts()
    length = min(s.steps, max(int(round(SEGMENT / s.dt)), 2))
    if length < 4:
        raise StatisticError(f"the record has {s.steps} steps; a spectrum needs at least 4")
    window = np.hanning(length)
    hop = max(length // 2, 1)
    starts = range(0, s.steps - length + 1, hop)
    power = np.mean([np.abs(np.fft.rfft(window * (counts[a:a + length] - counts[a:a + length].mean()))) ** 2
                     for a in starts], axis=0)
    return np.fft.rfftfreq(length, s.dt), power


def peak_frequency(s: Spikes) -> float:
    """The frequency (Hz) of the largest non-DC peak of ``power_spectrum``."""
    if s.i.size == 0:
        raise StatisticError("the population did not spike")
    freqs, power = power_spectrum(s)
    return float(freqs[1 + int(np.argmax(power[1:]))])


def synchrony(s: Spikes) -> float:
    """Fano factor of the population spike count per bin of ``dt``."""
    counts = s.counts()
    if counts.sum() == 0:
        raise StatisticError("the population did not spike")
    return float(np.var(counts) / np.mean(counts))


def bimodality(w: np.ndarray, wmax: float) -> float:
    """Fraction of the weights ``w`` within ``EDGE * wmax`` of 0 or of ``wmax``."""
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size == 0:
        raise StatisticError("no weights")
    if not wmax > 0:
        raise StatisticError(f"wmax must be positive, got {wmax}")
    return float(np.mean((w <= EDGE * wmax) | (w >= (1 - EDGE) * wmax)))


def weight_histogram(w: np.ndarray, wmax: float, bins: int = 10) -> np.ndarray:
    """Fraction of the weights in each of ``bins`` equal bins of [0, wmax]."""
    w = np.asarray(w, dtype=np.float64).ravel()
    counts, _ = np.histogram(np.clip(w, 0, wmax), bins=bins, range=(0, wmax))
    return counts / max(w.size, 1)


__all__ = ["SEGMENT", "MIN_SPIKES_FOR_CV", "EDGE", "StatisticError", "Spikes", "mean_rate", "cv_isi",
           "power_spectrum", "peak_frequency", "synchrony", "bimodality", "weight_histogram"]
