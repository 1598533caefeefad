"""A run that ends with NaN or Inf says where: the state, the first step and the spec line."""

from __future__ import annotations

import numpy as np
import pytest

import nspec
from nspec.cli import main
from nspec.runtime.model import NonFiniteError

DIVERGES = """
neuron Grow {
  state v: f32 = 1
  dv/dt = v / (1 ms)   method euler
}
network Net {
  population P: Grow[3]
}
simulate Net for 200 ms, dt = 0.1 ms
"""
# Euler: v_n = 1.1**n; the right-hand side on the spec's line 4, v / (1 ms) = 1000 v, is the first
# value to pass float32's largest (3.4e38): at the first n with 1000 * 1.1**n > 3.4e38, n = 859.
FIRST_STEP = int(np.floor(np.log(np.finfo(np.float32).max / 1000) / np.log(1.1))) + 1


@pytest.fixture
def diverging(tmp_path):
    path = tmp_path / "grow.nspec"
    path.write_text(DIVERGES)
    return path


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch"])
def test_a_diverging_run_names_the_state_the_step_and_the_line(diverging, backend):
    model = nspec.load(diverging)
    with pytest.raises(NonFiniteError) as info:
        model.run(backend=backend)
    message = str(info.value)
    assert "state 'P/v' (3 of 3 values)" in message
    assert f"step {FIRST_STEP} " in message and "grow.nspec:4:11" in message  # the rhs v / (1 ms)


def test_warn_and_off_keep_the_results(diverging):
    model = nspec.load(diverging)
    with pytest.warns(RuntimeWarning, match="NaN or Inf in state .P/v."):
        model.run(nan_check="warn")
    model.run(nan_check="off")
    assert not np.all(np.isfinite(model.state["P/v"]))
    with pytest.raises(ValueError, match="nan_check is 'error', 'warn' or 'off'"):
        model.run(nan_check="maybe")


def test_the_cli_stops_with_exit_1_and_writes_nothing(diverging, tmp_path, capsys):
    out = tmp_path / "out.npz"
    assert main(["run", str(diverging), "--output", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the run produced NaN or Inf in state 'P/v'") and "internal" not in err
    assert not out.exists()
    assert main(["run", str(diverging), "--output", str(out), "--quiet", "--nan-check", "warn"]) == 0
    assert "warning: the run produced NaN or Inf" in capsys.readouterr().err
    assert out.exists()


def test_a_finite_run_is_not_replayed(tmp_path, monkeypatch):
    path = tmp_path / "ok.nspec"
    path.write_text(DIVERGES.replace("200 ms", "10 ms"))
    model = nspec.load(path)
    original = type(model).executor
    calls = []

    def counting(self, backend, **options):
        calls.append(options)
        return original(self, backend, **options)

    monkeypatch.setattr(type(model), "executor", counting)
    model.run()
    assert calls == [{}]  # the run itself, no replay with check_finite


# v starts at 1e-30: 1000 v passes float32's largest in the second chunk of 1000 steps
LATE = DIVERGES.replace("state v: f32 = 1", "state v: f32 = 1e-30").replace("200 ms", "5 s")
LATE_STEP = int(np.floor(np.log(float(np.finfo(np.float32).max) / 1000 / 1e-30) / np.log(1.1))) + 1


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch", "tvm"])
def test_the_check_runs_per_chunk_and_stops_the_run_early(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "late.nspec"
    path.write_text(LATE)
    model = nspec.load(path)
    ran = []
    ex = model.executor(backend)
    original = ex.run
    monkeypatch.setattr(ex, "run", lambda request: ran.append(request.steps) or original(request))
    with pytest.raises(NonFiniteError) as info:
        model.run(backend=backend, steps=50_000)
    assert 1000 < LATE_STEP < 2000
    message = str(info.value)
    assert f"step {LATE_STEP} " in message and "late.nspec:4:11" in message and "by step 2000" in message
    assert sum(ran) == 2000  # two chunks of the 50,000 steps, then it stopped


def test_warn_mode_warns_once_and_finishes_the_run(tmp_path):
    path = tmp_path / "late.nspec"
    path.write_text(LATE)
    model = nspec.load(path)
    with pytest.warns(RuntimeWarning) as caught:
        model.run(steps=4000, nan_check="warn")
    assert len([w for w in caught if "NaN or Inf" in str(w.message)]) == 1
    assert model.last_timing["steps"] == 4000
