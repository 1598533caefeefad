"""Figures of a run: a spike raster with the population rate under it, or state traces.

``figure(model, results, kind, duration)`` builds a matplotlib figure from the results of
``Model.run`` (or the ``.npz`` that ``Model.stream`` wrote); ``nspec run --plot`` saves it.

* The raster scales with the number of spikes: markers shrink and fade as spikes pile up
  (``marker_style``), so 100k spikes read as a texture instead of a black slab, and they are
  rasterized in vector files so a PDF or SVG stays small.  Several spike monitors are stacked,
  one colour each, with the population's name in the legend; within one monitor, the parts that
  projections send from (CUBA's excitatory 0:3200 and inhibitory 3200:4000) get a colour each.  The time axis runs to the end of
  the run, not to the last spike (a network that falls silent shows its silence).
* Under the raster, each monitor's population rate in Hz: its spikes per neuron per second,
  smoothed by a Gaussian window stated on the axis (Brian2's ``smooth_rate(window='gaussian')``).
* Traces are drawn in the unit the spec declares the state in (``state v: mV`` reads in mV, not
  in the volts it is stored in); a state declared without a unit is drawn in the named unit of
  its dimension closest to its values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nspec.compiler import units as U

MAX_TRACES = 10  # traces per panel: more overlap into an unreadable band


@dataclass(frozen=True)
class Train:
    """One spike monitor's spikes: times (s), neuron indices, and how many neurons it watches."""

    name: str
    t: np.ndarray
    i: np.ndarray
    size: int
    first: int = 0    # the index of its first neuron in the monitor (a group of one, see ``groups``)


def marker_style(count: int) -> tuple[float, float]:
    """(marker size in points, alpha) for a raster of ``count`` spikes: 3 pt opaque up to a
    thousand spikes, then smaller and fainter (1 pt at 100k, 0.5 pt and 0.3 alpha from 1M)."""
    scale = max(count, 1) / 1000
    size = float(np.clip(3.0 * scale ** -0.24, 0.5, 3.0))
    alpha = float(np.clip(scale ** -0.25 * 1.5, 0.3, 1.0))
    return size, alpha


def smoothing_window(duration: float, dt: float) -> float:
    """The rate panel's Gaussian width (s): a 200th of the run (5 ms of a 1 s run), at least 2 dt."""
    return max(duration / 200, 2 * dt)


def spike_trains(model, results) -> list[Train]:
    """Every spike monitor's spikes (the first trial's, in a batched run)."""
    trains = []
    for m in model.monitors:
        if m.kind != "spikes" or f"{m.name}.t" not in results:
            continue
        t, i = np.asarray(results[f"{m.name}.t"]), np.asarray(results[f"{m.name}.i"])
        if f"{m.name}.trial" in results:
            first = np.asarray(results[f"{m.name}.trial"]) == 0
            t, i = t[first], i[first]
        population = m.variables[0].rpartition("/")[0]
        size = len(m.indices) if m.indices is not None else model.populations.get(population, 0)
        trains.append(Train(m.name, t, i, int(size) or (int(i.max()) + 1 if i.size else 1)))
    return trains


def groups(train: Train, parts: tuple[tuple[str, int, int], ...]) -> list[Train]:
    """The monitor's spikes split into the parts its population's projections send from
    (``Monitor.groups``: CUBA's "exc" 0:3200 and "inh" 3200:4000), each its own colour and rate;
    neurons outside every part form a group of their own.  Without parts: the train itself."""
    if not parts:
        return [train]
    bounds = [(name, a, z) for name, a, z in parts]
    edges = [0] + [x for _, a, z in parts for x in (a, z)] + [train.size]
    gaps = [(a, z) for a, z in zip(edges[::2], edges[1::2]) if z > a]
    bounds += [("other", a, z) for a, z in gaps]
    out = []
    for name, a, z in sorted(bounds, key=lambda g: g[1]):
        keep = (train.i >= a) & (train.i < z)
        out.append(Train(f"{train.name} {name}", train.t[keep], train.i[keep] - a, z - a, a))
    return out


def population_rate(train: Train, duration: float, dt: float, window: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, rate in Hz): spikes per neuron per second, smoothed by a Gaussian of width ``window``."""
    width = max(dt, window / 5)  # five bins per window resolve it; finer bins only cost time
    bins = max(int(np.ceil(duration / width - 1e-9)), 1)
    counts, edges = np.histogram(train.t, bins=bins, range=(0.0, bins * width))
    rate = counts / (train.size * width)
    sigma = window / width
    half = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    # normalised by the kernel's weight inside the run, so the edges are not pulled towards zero
    weight = np.convolve(np.ones_like(rate), kernel, mode="same")
    return (edges[:-1] + edges[1:]) / 2, np.convolve(rate, kernel, mode="same") / weight


def _colours(n: int) -> list:
    import matplotlib

    return ["black"] if n == 1 else [matplotlib.colormaps["tab10"](k % 10) for k in range(n)]


def raster(model, results, duration: float):
    """The raster of every spike monitor, stacked, and each one's population rate under it."""
    import matplotlib.pyplot as plt

    parts = {m.name: m.groups for m in model.monitors}
    monitors = spike_trains(model, results)
    trains = [g for train in monitors for g in groups(train, parts.get(train.name, ()))]
    fig, (ax, rate_ax) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5), height_ratios=(3, 1))
    size, alpha = marker_style(sum(len(tr.t) for tr in trains))
    window = smoothing_window(duration, model.dt)
    offset = 0
    for train, colour in zip(trains, _colours(len(trains))):
        ax.plot(train.t, train.i + offset, linestyle="none", marker="o", markeredgewidth=0, markersize=size,
                alpha=alpha, color=colour, label=f"{train.name} ({train.size})", rasterized=True)
        centres, rate = population_rate(train, duration, model.dt, window)
        rate_ax.plot(centres, rate, color=colour, linewidth=1.0, label=train.name)
        if offset and not train.first:  # a line between monitors, not between the groups of one
            ax.axhline(offset - 0.5, color="0.7", linewidth=0.5)
        offset += train.size
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.5, offset - 0.5)
    ax.set_ylabel("neuron index" + (" (stacked)" if len(monitors) > 1 else ""))
    if len(trains) > 1:
        ax.legend(loc="upper right", markerscale=max(6 / size, 1), fontsize="small", framealpha=0.8)
    title = f"{model.program.name}: {', '.join(tr.name for tr in monitors)}"
    ax.set_title(title + (" (trial 0)" if any(f"{m.name}.trial" in results for m in model.monitors) else ""))
    rate_ax.set_ylim(bottom=0)
    rate_ax.set_ylabel("rate (Hz)")
    rate_ax.set_xlabel(f"time (s); rate smoothed by a Gaussian of {window * 1e3:.3g} ms")
    return fig


def display_unit(var, values: np.ndarray) -> tuple[str, float]:
    """(unit, its size in SI units) to draw a state in: the spec's declared unit, else the named unit
    of its dimension that is the largest not above the values' typical magnitude."""
    if var is None:
        return "", 1.0
    if var.declared_unit:
        return var.declared_unit, var.declared_scale
    if not var.unit:
        return "", 1.0
    dim = U.dim_of_base_unit(var.unit)
    named = sorted((U.unit(n)[0], n) for n in U.UNIT_NAMES if n != "minute" and U.unit(n)[1] == dim)
    finite = np.abs(values[np.isfinite(values)])
    typical = float(np.median(finite[finite > 0])) if np.any(finite > 0) else 0.0
    fitting = [(n, s) for s, n in named if s <= typical * (1 + 1e-9)]
    if fitting:
        return fitting[-1]
    return next(((n, s) for s, n in named if s == 1.0), (var.unit, 1.0))


def traces(model, results, duration: float):
    """One panel per variable of every state monitor, in the declared unit, the first few neurons."""
    import matplotlib.pyplot as plt

    panels = [(m, var) for m in model.monitors if m.kind == "state" for var in m.variables]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, figsize=(9, 1.2 + 2.2 * len(panels)))
    for ax, (m, var) in zip(axes[:, 0], panels):
        name = var.rsplit("/", 1)[-1]
        t = np.asarray(results[f"{m.name}.t"])
        data = np.asarray(results[f"{m.name}.{name}"], dtype=np.float64).reshape(len(t), -1)[:, :MAX_TRACES]
        unit, scale = display_unit(model.program.var(var), data)
        lines = ax.plot(t, data / scale, linewidth=0.9)
        first = m.indices[0] if m.indices else 0
        if 1 < len(lines) <= 5:
            ax.legend(lines, [f"{first + k}" for k in range(len(lines))], title="neuron", fontsize="small",
                      loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
        ax.set_ylabel(f"{name} ({unit})" if unit else name)
        ax.set_title(f"{m.name}: {var}", fontsize="medium", loc="left")
    axes[0, 0].set_xlim(0, duration)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(model.program.name)
    return fig


def figure(model, results, kind: str, duration: float):
    """The ``raster`` or ``traces`` figure of a run of ``duration`` seconds."""
    return raster(model, results, duration) if kind == "raster" else traces(model, results, duration)


def save(path, model, results, kind: str, duration: float, dpi: int = 120) -> None:
    """Draw and write the figure (PNG, PDF or SVG by the path's suffix) with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(model, results, kind, duration)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


__all__ = ["Train", "marker_style", "smoothing_window", "spike_trains", "population_rate", "raster", "traces",
           "display_unit", "figure", "save"]
