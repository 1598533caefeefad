"""Monitors of long runs stream to the output file chunk by chunk: the file equals the in-memory
result, and memory stays bounded however much is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nspec
from nspec.cli import main
from nspec.runtime import streaming
from nspec.runtime.model import LimitExceeded

MONITORED = """
neuron N {
  param taum = 10 ms
  state v: mV = uniform(0, 1) * 20 mV
  dv/dt = (25 mV - v) / taum
  spike when v > 20 mV;  reset { v = 0 mV }
}
network Net {
  population P: N[50]
  record spikes of P
  record v of P[0:5] every 0.2 ms
  record v of P[3:9] every 0.3 ms as trace
}
simulate Net for 10 ms, dt = 0.1 ms
"""


@pytest.fixture
def monitored(tmp_path):
    path = tmp_path / "net.nspec"
    path.write_text(MONITORED)
    return path


def _assert_same(file_arrays, memory: dict) -> None:
    assert sorted(file_arrays.files) == sorted(memory)
    for k, v in memory.items():
        got = file_arrays[k]
        assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k


@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("chunk", [7, 1000])  # chunks that cut across the monitors' intervals, and one chunk
def test_streamed_file_equals_the_in_memory_result(monitored, tmp_path, monkeypatch, batch, chunk):
    monkeypatch.setattr(streaming, "MAX_CHUNK_STEPS", chunk)
    model = nspec.load(monitored)
    memory = model.run(batch=batch, steps=100)
    assert memory["spikes.i"].size > 0  # the comparison covers spikes
    out = tmp_path / "out.npz"
    shapes = model.stream(out, batch=batch, steps=100)
    assert shapes == {k: v.shape for k, v in memory.items()}
    with np.load(out, allow_pickle=False) as data:
        _assert_same(data, memory)
    assert [p.name for p in tmp_path.iterdir()] == ["net.nspec", "out.npz"]  # no scratch left behind


def test_the_cli_output_equals_the_in_memory_run(monitored, tmp_path):
    out = tmp_path / "out.npz"
    assert main(["run", str(monitored), "-o", str(out), "--quiet", "--steps", "2500"]) == 0
    memory = nspec.load(monitored).run(steps=2500)
    with np.load(out, allow_pickle=False) as data:
        _assert_same(data, memory)
    assert main(["run", str(monitored), "-o", str(out), "--quiet"]) == 1  # never overwritten without --force


def test_a_failed_run_leaves_no_file(monitored, tmp_path):
    out = tmp_path / "out.npz"
    model = nspec.load(monitored)
    with pytest.raises(ValueError):
        model.stream(out, nan_check="maybe")
    assert list(tmp_path.iterdir()) == [monitored]


def test_writer_appends_along_any_axis(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(2, n, 3)).astype(np.float32) for n in (4, 0, 5)]
    w = streaming.NpzStreamWriter(tmp_path / "x.npz")
    for p in parts:
        w.append({"a": (p, 1), "b": (p[0], 0)})
    assert w.close() == {"a": (2, 9, 3), "b": (9, 3)}
    with np.load(tmp_path / "x.npz") as data:
        np.testing.assert_array_equal(data["a"], np.concatenate(parts, axis=1))
        np.testing.assert_array_equal(data["b"], np.concatenate([p[0] for p in parts]))
    w = streaming.NpzStreamWriter(tmp_path / "y.npz")
    w.append({"a": (parts[0], 1)})
    with pytest.raises(ValueError, match="chunk of 'a'"):
        w.append({"a": (parts[0].astype(np.float64), 1)})
    w.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


WIDE = """
system Wide {
  out y: f32
  state x: f32[20000] = 0
  next x = x + 1
  y = 1
}
simulate Wide for 2500 s, dt = 1 s
"""

# A run recording 2500 steps of 20000 f32 (200 MB) under a 100 MB limit, in a child process: its peak
# resident memory, and whether it ran in memory or streamed.
CHILD = """
import json, resource, sys
import numpy as np
import nspec
from nspec.runtime import streaming
from nspec.runtime.model import LimitExceeded
streaming.CHUNK_BYTES = 8 << 20
model = nspec.load(sys.argv[1], max_memory="100MB")
steps = int(sys.argv[3])
try:
    if sys.argv[2] == "stream":
        shapes = model.stream(sys.argv[4], steps=steps, record=["x"])
        outcome = list(shapes["x"])
    else:
        outcome = list(model.run(steps=steps, record=["x"])["x"].shape)
except LimitExceeded as exc:
    outcome = str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"outcome": outcome, "peak": peak}))
"""


def _child(*argv) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_over_the_memory_limit_streams_in_bounded_memory(tmp_path):
    spec = tmp_path / "wide.nspec"
    spec.write_text(textwrap.dedent(WIDE))
    out = tmp_path / "wide.npz"
    refused = _child(spec, "memory", 2500)
    assert "recording 2,500 steps (78.1 KiB per step) needs an estimated 191 MiB" in refused["outcome"]
    baseline = _child(spec, "stream", 10, tmp_path / "small.npz")
    streamed = _child(spec, "stream", 2500, out)
    assert streamed["outcome"] == [2500, 20000]
    # 191 MiB went to the file; the process grew by far less (8 MiB chunks, a 16 MiB copy buffer)
    assert streamed["peak"] - baseline["peak"] < 64 << 20, (streamed["peak"], baseline["peak"])
    with np.load(out) as data:
        x = data["x"]
    assert x.shape == (2500, 20000) and x[:, 0].tolist() == list(range(2500)) and np.all(x[-1] == 2499)
    with pytest.raises(LimitExceeded):
        nspec.load(spec, max_memory="100MB").run(steps=2500, record=["x"])


SCALAR_OUT = """module scalar_out "a scalar output of timeless inputs"
system S {
  in x: f32[3]
  out t: f32
  t = sum(x, axis = 0)
}
simulate S for 3 s, dt = 1 s
"""


@pytest.mark.parametrize("batch", [None, 2])
def test_one_step_of_timeless_inputs_streams_a_scalar_output(tmp_path, batch):
    """One step of inputs without a time axis returns the outputs without one; streamed, a scalar
    output per trial was an IndexError (the writer followed a time axis that had been dropped)."""
    path = tmp_path / "s.nspec"
    path.write_text(SCALAR_OUT, encoding="utf-8")
    model = nspec.load(path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) if batch else np.arange(3, dtype=np.float32)
    want = model.run(inputs={"x": x}, steps=1, batch=batch)["t"]
    np.testing.assert_array_equal(want, [3.0, 12.0] if batch else 3.0)
    shapes = model.stream(tmp_path / "o.npz", inputs={"x": x}, steps=1, batch=batch)
    assert shapes["t"] == np.shape(want)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["t"], want)
