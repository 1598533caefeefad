"""`t`, the model time, inside equations: a hidden step counter (``step_count``, i64) that the
compiler adds only to bodies that read `t`; t = step * dt rounded once to f32.  Checked on every
backend against the known times, in one run and in two chunks that carry the state."""

from __future__ import annotations

import numpy as np
import pytest

import nspec
from nspec.dsl.diagnostics import NspecError
from nspec.runtime.executor import RunRequest

BACKENDS = ["reference", "onnxruntime", "torch", "tvm"]
DT = 0.1e-3

CLOCK = """
system Clock {
  out y: s
  out z: s
  state x: s = 0 s
  next x = x + t
  y = t
  z = x
}
simulate Clock for 10 ms, dt = 0.1 ms
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("time") / "clock.nspec"
    path.write_text(CLOCK)
    return nspec.load(str(path))


def known_times(start: int, steps: int) -> np.ndarray:
    return (np.arange(start, start + steps, dtype=np.float64) * DT).astype(np.float32)


def run(model, backend: str, state: dict, steps: int, batch: int):
    params, _ = model.initial(batch, None)
    return model.executor(backend).run(RunRequest(params, state, {}, steps))


@pytest.mark.parametrize("backend", BACKENDS)
def test_t_is_the_step_times_dt_and_chunks_continue(model, backend):
    batch, steps = 2, 37
    _, state0 = model.initial(batch, None)
    assert state0["step_count"].dtype == np.int64 and np.all(state0["step_count"] == 0)
    whole = run(model, backend, state0, steps, batch)
    np.testing.assert_array_equal(whole.outputs["y"], np.broadcast_to(known_times(0, steps), (batch, steps)))
    np.testing.assert_array_equal(whole.state["step_count"], [steps] * batch)
    first = run(model, backend, state0, 15, batch)
    second = run(model, backend, first.state, steps - 15, batch)
    np.testing.assert_array_equal(second.outputs["y"], whole.outputs["y"][:, 15:])
    np.testing.assert_array_equal(second.state["x"], whole.state["x"])
    np.testing.assert_array_equal(second.state["step_count"], whole.state["step_count"])


def test_step_continues_the_clock(model):
    model.state = None  # start from the initial state
    ys = [float(model.step()["y"].reshape(-1)[0]) for _ in range(4)]
    np.testing.assert_array_equal(np.float32(ys), known_times(0, 4))


def test_bodies_that_do_not_read_t_get_no_clock(tmp_path):
    path = tmp_path / "plain.nspec"
    path.write_text(CLOCK.replace("next x = x + t", "next x = x + dt").replace("y = t", "y = dt"))
    assert "step_count" not in [v.name for v in nspec.load(str(path)).program.states]


def test_t_is_not_known_in_initial_values(tmp_path):
    path = tmp_path / "init.nspec"
    path.write_text(CLOCK.replace("state x: s = 0 s", "state x: s = t"))
    with pytest.raises(NspecError, match="t"):
        nspec.load(str(path))
