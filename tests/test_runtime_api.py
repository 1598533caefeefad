"""The embedded API: load, run, step, state, weights, inputs, and their errors."""

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import nspec
from nspec.dsl import NspecError
from nspec.runtime.model import InputError, WeightsError

SPEC = """
hyper n: int = 3
system Leaky(n) {
  in u: f32[n]
  out y: f32[n]
  param a: f32[n] = 0.5 key "leak.weight"
  param b: f32[n] = 1
  state x: f32[n] = 0
  y = b * x
  next x = a * x + u
}
system Main {
  in u: f32[n]
  out y: f32[n]
  param a: f32[n] = 0.5 key "leak.weight"
  param b: f32[n] = 1
  state x: f32[n] = 0
  y = b * x
  next x = a * x + u
}
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "leaky.nspec"
    p.write_text(SPEC)
    return p


def reference(a, b, u):
    x, ys = np.zeros(u.shape[-1]), []
    for t in range(u.shape[0]):
        ys.append(b * x)
        x = a * x + u[t]
    return np.array(ys)


def test_run_matches_a_numpy_loop(path):
    m = nspec.load(path)
    u = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_allclose(m.run(inputs={"u": u})["y"], reference(0.5, 1.0, u), rtol=1e-6)


def test_hyperparameters_change_sizes(path):
    m = nspec.load(path, n=5)
    assert m.program.var("x").shape == (5,)
    with pytest.raises(NspecError, match="unknown hyperparameter 'm'"):
        nspec.load(path, m=5)


def test_an_unknown_hyperparameter_names_the_key_and_the_known_ones(path, tmp_path):
    with pytest.raises(NspecError) as info:
        nspec.load(path, n=4, nn=5)
    (d,) = info.value.diagnostics
    # located in the call itself, under the unknown keyword
    call = f"nspec.load({str(path)!r}, n=4, nn=5)"
    assert (d.span.path, d.span.line, d.span.col) == ("<nspec.load>", 1, call.index("nn=") + 1)
    assert d.message == f"unknown hyperparameter 'nn' for {path}; did you mean 'n'?"
    assert d.notes == (f"hyperparameters of {path}: n",)
    assert str(info.value).splitlines()[1:3] == ["    " + call, "    " + " " * call.index("nn=") + "^~"]
    # an imported file's hyperparameter is named by its module (a dict, as a qualified name is no keyword)
    (tmp_path / "sizes.nspec").write_text('module sizes "a size"\nhyper k: int = 2\n')
    root = tmp_path / "root.nspec"
    root.write_text('import "sizes.nspec"\n' + SPEC.replace("hyper n: int = 3", "hyper n: int = k"))
    assert nspec.load(root, **{"sizes.k": 6}).program.var("x").shape == (6,)
    with pytest.raises(NspecError, match=r"unknown hyperparameter 'size.k' .*did you mean 'sizes.k'\?"):
        nspec.load(root, **{"size.k": 6})


def test_batch_and_time_axes(path):
    m = nspec.load(path)
    u = np.ones((2, 4, 3), np.float32)
    out = m.run(inputs={"u": u}, batch=2)
    assert out["y"].shape == (2, 4, 3)
    timeless = m.run(inputs={"u": np.ones(3, np.float32)}, steps=4)
    assert timeless["y"].shape == (4, 3)
    with pytest.raises(InputError, match="input 'u' has shape"):
        m.run(inputs={"u": np.ones((4, 2))})
    with pytest.raises(InputError, match=r"missing input\(s\) u \(f32\[3\]\): give each as an array by name"):
        m.run()
    with pytest.raises(InputError, match="unknown input"):
        m.run(inputs={"u": np.ones(3), "v": np.ones(3)})


def test_step_and_state(path):
    m = nspec.load(path)
    m.step({"u": np.ones(3, np.float32)})
    m.step({"u": np.ones(3, np.float32)})
    np.testing.assert_allclose(m.get_state()["x"], [[1.5, 1.5, 1.5]])
    m.set_state({"x": np.zeros((1, 3))})
    assert m.step({"u": np.ones(3, np.float32)})["y"].tolist() == [0, 0, 0]
    with pytest.raises(KeyError):
        m.set_state({"nope": np.zeros(3)})


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "pt", "dict"])
def test_load_weights_by_declared_keys(path, tmp_path, fmt):
    m = nspec.load(path)
    weights = {"leak.weight": np.full(3, 0.25, np.float32), "b": np.full(3, 2.0, np.float32)}
    source = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(weights, str(source))
    elif fmt == "npz":
        np.savez(source, **weights)
    elif fmt == "pt":
        torch.save({k: torch.as_tensor(v) for k, v in weights.items()}, source)
    else:
        source = weights
    m.load_weights(source)
    u = np.ones((5, 3), np.float32)
    np.testing.assert_allclose(m.run(inputs={"u": u})["y"], reference(0.25, 2.0, u), rtol=1e-6)


def test_weight_errors_are_specific(path, tmp_path):
    m = nspec.load(path)
    with pytest.raises(WeightsError, match="unknown key"):
        m.load_weights({"leak.weight": np.zeros(3), "b": np.zeros(3), "extra": np.zeros(1)})
    with pytest.raises(WeightsError, match="missing key"):
        m.load_weights({"leak.weight": np.zeros(3)})
    with pytest.raises(WeightsError, match=r"'b' has shape \[4\]"):
        m.load_weights({"leak.weight": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(WeightsError, match="no such weights file"):
        m.load_weights(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read weights"):
        m.load_weights(bad)


def test_bad_spec_raises_located_diagnostics(tmp_path):
    p = tmp_path / "bad.nspec"
    p.write_text("system S {\n  out y: f32\n  y = 1 ms + 1 mV\n}\n")
    with pytest.raises(NspecError) as info:
        nspec.load(p)
    text = str(info.value)
    assert f"{p}:3:7: error: unit mismatch" in text
    assert "^" in text


def test_progress_run_in_chunks_equals_one_run(tmp_path):
    p = tmp_path / "osc.nspec"
    p.write_text("""
system Osc {
  out y: f32[2]
  state x: f32[2] = [1, 0]
  y = x
  next x = [0.999 * x[0] - 0.05 * x[1], 0.05 * x[0] + 0.999 * x[1]]
}
""")
    m = nspec.load(p)
    whole = m.run(steps=2500)["y"]
    chunked = m.run(steps=2500, progress=True)["y"]
    np.testing.assert_array_equal(whole, chunked)


def test_initial_states_with_loaded_weights_skip_no_draw_they_need(tmp_path):
    """With loaded weights the parameters' initial draws are skipped unless a state reads them; the
    states are the ones the full draw gives: a learned start state follows its (loaded) parameter,
    a random state keeps its own stream, a state built on a parameter's constant keeps that constant."""
    from nspec.runtime.reference import initialize

    p = tmp_path / "init.nspec"
    p.write_text("""
system S {
  in x: f32[3]
  out y: f32[3]
  param W: f32[3, 3] = normal(0, 1)
  param start: f32[3] = uniform(-1, 1)
  param scale: f32[3] = 2.5
  state v: f32[3] = start
  state u: f32[3] = normal(0, 1)
  state w: f32[3] = 2.5 * ones([3])
  y = x @ W + v + u + w * scale
  next v = v
  next u = u
  next w = w
}
""")
    program = nspec.load(p).program
    drawn, full_states = initialize(program, 3, 11)
    loaded = {k: v + 1 for k, v in drawn.items()}
    params, states = initialize(program, 3, 11, loaded)
    assert all(np.array_equal(params[k], loaded[k]) for k in loaded)
    np.testing.assert_array_equal(states["v"], np.broadcast_to(loaded["start"], (3, 3)))
    np.testing.assert_array_equal(states["u"], full_states["u"])
    np.testing.assert_array_equal(states["w"], full_states["w"])


MONITORED = """
from "std/neurons.nspec" import LIF

network Net {
  population P: LIF(I0 = 0.3 nA)[4]
  record spikes of P as raster
  record v of P every 1 ms as trace
  record v of P as fine
}

simulate Net for 50 ms, dt = 0.1 ms
"""


@pytest.fixture
def monitored(tmp_path):
    p = tmp_path / "monitored.nspec"
    p.write_text(MONITORED)
    return nspec.load(p)


@pytest.mark.parametrize("duration", ["20ms", "20 ms", " 0.02 s ", "20000 us", "2e-2s", 0.02])
def test_duration_takes_what_the_cli_takes(monitored, duration):
    from nspec.cli import duration as cli_duration

    out = monitored.run(duration=duration)
    assert out["fine.v"].shape == (200, 4)  # 20 ms at dt = 0.1 ms
    np.testing.assert_array_equal(out["fine.v"], monitored.run(steps=200)["fine.v"])
    if isinstance(duration, str):
        assert cli_duration(duration) == pytest.approx(0.02)


@pytest.mark.parametrize("duration, message", [
    ("5", "a duration is a time such as 1s or 200ms, got '5'"),
    ("soon", "a duration is a time such as 1s or 200ms, got 'soon'"),
    ("5 mV", "a duration needs a unit of time (s, ms, us), not 'mV'"),
    ("1 parsec", "a duration needs a unit of time (s, ms, us), not 'parsec'"),
    ("0 s", "the duration must be a positive, finite time, got '0 s'"),
    ("1e400 ms", "the duration must be a positive, finite time, got '1e400 ms'"),
    (-0.1, "the duration must be a positive, finite time, got -0.1"),
    (float("nan"), "the duration must be a positive, finite time, got nan"),
    (True, "a duration is a time such as '200 ms' or a number of seconds, got True"),
    ([20], "a duration is a time such as '200 ms' or a number of seconds, got [20]"),
])
def test_a_bad_duration_is_a_clear_error(monitored, duration, message):
    with pytest.raises(ValueError) as info:
        monitored.run(duration=duration)
    assert str(info.value) == message


def test_a_batch_axis_is_read_only_when_asked_for(path):
    """run's docstring and docs/language.md ("The batch axis"): with batch=None an input is
    [time, *port] or [*port]; [1, T, D] is refused with the shapes it may have, and is read with batch=1."""
    m = nspec.load(path)
    u = np.arange(12, dtype=np.float32).reshape(4, 3)
    with pytest.raises(InputError) as info:
        m.run(inputs={"u": u[None]})
    assert str(info.value) == ("input 'u' has shape [1, 4, 3]: without a batch give [time, 3] or [3]; "
                               "pass batch=1 for [batch, time, 3]")
    with pytest.raises(InputError, match=r"shape \[2, 4, 3\]: without a batch .* pass batch=2 for"):
        m.run(inputs={"u": np.stack([u, u])})
    single = m.run(inputs={"u": u})["y"]
    batched = m.run(inputs={"u": u[None]}, batch=1)["y"]
    assert single.shape == (4, 3) and batched.shape == (1, 4, 3)
    np.testing.assert_array_equal(batched[0], single)
    with pytest.raises(InputError) as info:
        m.run(inputs={"u": np.ones((2, 1, 4, 3), np.float32)}, batch=2)
    assert str(info.value) == ("input 'u' has shape [2, 1, 4, 3]: with batch=2 give [batch, time, 3] or "
                               "[batch, 3]")


def test_monitor_shapes_carry_a_batch_axis_only_when_asked_for(monitored):
    """docs/language.md, Monitors: a state monitor is [samples, neurons] without a batch and
    [samples, B, neurons] with one; a spike monitor gains name.trial."""
    plain = monitored.run(steps=200)
    assert plain["fine.v"].shape == (200, 4) and plain["fine.t"].shape == (200,)
    assert plain["trace.v"].shape == (20, 4) and plain["trace.t"].shape == (20,)
    assert plain["raster.i"].ndim == 1 and plain["raster.i"].shape == plain["raster.t"].shape
    assert plain["raster.i"].size > 0 and "raster.trial" not in plain
    for b in (1, 2):
        out = monitored.run(steps=200, batch=b)
        assert out["fine.v"].shape == (200, b, 4) and out["trace.v"].shape == (20, b, 4)
        assert out["raster.trial"].shape == out["raster.i"].shape == out["raster.t"].shape
        np.testing.assert_array_equal(out["fine.v"][:, 0], plain["fine.v"])  # trial 0 is the single run
