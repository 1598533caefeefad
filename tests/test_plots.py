"""The figures of ``nspec run --plot`` (runtime/plots.py), checked by what they show, not by pixels:
axis limits, panels, marker sizes, colours, labels and the rate the rate panel draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nspec.runtime import plots  # noqa: E402
from nspec.runtime.model import load  # noqa: E402

# Fast: spikes every few ms.  Once: spikes at the first step, then decays below threshold for good.
SPEC = """\
neuron Fast {
  param tau = 10 ms;  param El = 20 mV;  param Vt = 10 mV;  param Vr = 0 mV
  state v: mV = Vr
  state u = -60 mV
  dv/dt = (El - v) / tau
  spike when v > Vt;  reset { v = Vr }
}
neuron Once {
  param tau = 10 ms
  state v: mV = 20 mV
  dv/dt = -v / tau
  spike when v > 10 mV;  reset { v = -50 mV }
}
network Net {
  population A: Fast[6]
  population B: Once[4]
  record spikes of A as fast
  record spikes of B as once
  record v, u of A[0:3] as trace
}
simulate Net for 50 ms, dt = 0.1 ms, seed = 1
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "net.nspec"
    path.write_text(SPEC, encoding="utf-8")
    model = load(path)
    return model, model.run(progress=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_raster_runs_to_the_end_of_the_run_not_to_the_last_spike(run):
    model, results = run
    assert results["once.t"].max() < 0.001  # B fires at the start only
    fig = plots.figure(model, results, "raster", 0.05)
    raster, rate = fig.axes
    assert raster.get_xlim() == pytest.approx((0, 0.05)) and rate.get_xlim() == pytest.approx((0, 0.05))
    assert raster.get_ylim() == pytest.approx((-0.5, 9.5))  # 6 + 4 neurons stacked


def test_several_spike_monitors_are_stacked_in_their_own_colours(run):
    model, results = run
    fig = plots.figure(model, results, "raster", 0.05)
    raster = fig.axes[0]
    dots = [line for line in raster.lines if line.get_linestyle() == "None"]
    assert [line.get_label() for line in dots] == ["fast (6)", "once (4)"]
    assert dots[0].get_color() != dots[1].get_color()
    assert set(np.asarray(dots[1].get_ydata())) <= {6, 7, 8, 9}  # B sits above A's six rows
    assert [t.get_text() for t in raster.get_legend().get_texts()] == ["fast (6)", "once (4)"]


def test_one_spike_monitor_draws_black_without_a_legend(tmp_path):
    path = tmp_path / "one.nspec"
    path.write_text(SPEC.replace("  record spikes of B as once\n", ""), encoding="utf-8")
    model = load(path)
    fig = plots.figure(model, model.run(progress=False), "raster", 0.05)
    assert fig.axes[0].get_legend() is None
    assert matplotlib.colors.to_hex(fig.axes[0].lines[0].get_color()) == "#000000"


def test_markers_shrink_and_fade_as_spikes_pile_up(run):
    assert plots.marker_style(100) == (3.0, 1.0)
    sizes = [plots.marker_style(n) for n in (1_000, 10_000, 100_000, 1_000_000, 10**8)]
    assert [s for s, _ in sizes] == sorted((s for s, _ in sizes), reverse=True)
    assert sizes[2][0] == pytest.approx(1.0, abs=0.1) and 0.3 < sizes[2][1] < 1.0
    assert sizes[-1] == (0.5, 0.3)  # the floor: a marker never vanishes
    model, results = run
    count = len(results["fast.t"]) + len(results["once.t"])
    dot = plots.figure(model, results, "raster", 0.05).axes[0].lines[0]
    assert (dot.get_markersize(), dot.get_alpha()) == plots.marker_style(count)


def test_the_rate_panel_draws_spikes_per_neuron_per_second():
    # 10 neurons, each firing every 10 ms for 1 s, neuron k at k ms: 100 Hz everywhere, the edges included
    t = (np.arange(100)[None, :] * 0.01 + np.arange(10)[:, None] * 0.001 + 0.0005).ravel()
    train = plots.Train("p", t, np.repeat(np.arange(10), 100), 10)
    window = plots.smoothing_window(1.0, 1e-4)
    assert window == pytest.approx(0.005)
    centres, rate = plots.population_rate(train, 1.0, 1e-4, window)
    assert centres[0] > 0 and centres[-1] < 1.0
    assert rate.mean() == pytest.approx(100, rel=0.02)
    assert np.all(np.abs(rate - 100) < 5)  # one spike per ms, smoothed over 5 ms
    silent = plots.population_rate(plots.Train("q", np.array([0.0001]), np.array([0]), 4), 1.0, 1e-4, window)[1]
    assert silent[-1] == 0 and silent.max() > 0


def test_the_rate_panel_states_its_unit_and_window(run):
    model, results = run
    rate = plots.figure(model, results, "raster", 0.05).axes[1]
    assert rate.get_ylabel() == "rate (Hz)"
    assert "Gaussian of 0.25 ms" in rate.get_xlabel()  # 50 ms / 200
    assert [line.get_label() for line in rate.lines] == ["fast", "once"]
    assert rate.get_ylim()[0] == 0


def test_traces_are_drawn_in_the_declared_unit(run):
    model, results = run
    fig = plots.figure(model, results, "traces", 0.05)
    v_ax, u_ax = fig.axes[:2]
    assert v_ax.get_ylabel() == "v (mV)"
    assert len(v_ax.lines) == 3  # A[0:3]
    assert np.asarray(v_ax.lines[0].get_ydata()) == pytest.approx(results["trace.v"][:, 0] * 1e3)
    assert 5 < np.max(v_ax.lines[0].get_ydata()) <= 20  # mV, not V
    assert v_ax.get_xlim() == pytest.approx((0, 0.05))
    # `state u = -60 mV` declares no unit: the named unit nearest its values
    assert u_ax.get_ylabel() == "u (mV)"
    assert np.asarray(u_ax.lines[0].get_ydata()) == pytest.approx(-60, rel=1e-5)


def test_a_batched_raster_shows_the_first_trial(run):
    model, _ = run
    results = model.run(progress=False, batch=3)
    trains = plots.spike_trains(model, results)
    first = results["fast.trial"] == 0
    assert len(trains[0].t) == int(first.sum()) < len(results["fast.t"])
    assert "(trial 0)" in plots.figure(model, results, "raster", 0.05).axes[0].get_title()


def test_figures_save_as_png_and_svg(run, tmp_path):
    model, results = run
    plots.save(tmp_path / "r.png", model, results, "raster", 0.05)
    plots.save(tmp_path / "t.svg", model, results, "traces", 0.05)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()[:500]


GROUPED = """\
neuron Fast {
  param tau = 10 ms;  param El = 20 mV;  param Vt = 10 mV;  param Vr = 0 mV
  state v: mV = Vr
  dv/dt = (El - v) / tau
  spike when v > Vt;  reset { v = Vr }
}
network Net {
  population P: Fast[10]
  projection exc: P[0:6] -> P  { connect p = 0.5;  on_pre { v += 0.1 mV } }
  projection inh: P[6:10] -> P { connect p = 0.5;  on_pre { v += -0.1 mV } }
  projection all: P -> P       { connect one_to_one;  on_pre { v += 0 mV } }
  record spikes of P
}
simulate Net for 20 ms, dt = 0.1 ms, seed = 1
"""


def test_one_monitor_colours_the_parts_its_projections_send_from(tmp_path):
    path = tmp_path / "grouped.nspec"
    path.write_text(GROUPED, encoding="utf-8")
    model = load(path)
    assert model.monitors[0].groups == (("exc", 0, 6), ("inh", 6, 10))  # "all" tells no parts apart
    results = model.run(progress=False)
    raster = plots.figure(model, results, "raster", 0.02).axes[0]
    dots = [line for line in raster.lines if line.get_linestyle() == "None"]
    assert [line.get_label() for line in dots] == ["spikes exc (6)", "spikes inh (4)"]
    assert dots[0].get_color() != dots[1].get_color()
    assert set(np.asarray(dots[0].get_ydata())) <= set(range(6))
    assert set(np.asarray(dots[1].get_ydata())) <= set(range(6, 10))  # the neurons keep their indices
    assert len(dots[0].get_xdata()) + len(dots[1].get_xdata()) == len(results["spikes.t"])
    assert not [line for line in raster.lines if line.get_linestyle() != "None"]  # no line inside one monitor


def test_parts_of_a_monitor():
    from nspec.compiler.networks import source_groups

    assert source_groups([("a", (0, 3)), ("b", (3, 5))], 0, 5) == (("a", 0, 3), ("b", 3, 5))
    assert source_groups([("a", (0, 3)), ("b", (0, 3)), ("c", (3, 5))], 0, 5) == (("a+b", 0, 3), ("c", 3, 5))
    assert source_groups([("a", (0, 3)), ("b", (2, 5))], 0, 5) == ()        # overlapping
    assert source_groups([("a", (0, 3))], 0, 5) == ()                        # one part
    assert source_groups([("a", (0, 3)), ("b", (3, 5))], 0, 4) == ()         # b leaves the recorded neurons
    assert source_groups([("a", (2, 3)), ("b", (3, 5))], 2, 5) == (("a", 0, 1), ("b", 1, 3))  # monitor-local
    train = plots.Train("s", np.array([0.1, 0.2, 0.3]), np.array([0, 4, 7]), 8)
    split = plots.groups(train, (("a", 0, 3), ("b", 5, 8)))  # 3:5 is sent from by neither
    assert [(g.name, g.size, g.first, list(g.i)) for g in split] == [
        ("s a", 3, 0, [0]), ("s other", 2, 3, [1]), ("s b", 3, 5, [2])]
