"""Every spec in specs/ runs on every backend and equals the reference interpreter.

This is the "every spec" check of the ONNX, TVM and PyTorch lowerings: each spec's run target
is compiled once, driven with seeded random inputs for a short horizon, and every output and
recorded value is compared with the reference (spikes exactly, floats to a float32 tolerance).
"""

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.dsl import NspecError

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(p for p in (ROOT / "specs").rglob("*.nspec") if "errors" not in p.parts and "lib" not in p.parts)
BACKENDS = ["onnxruntime", "torch", "tvm"]
STEPS = 30


def _model(path):
    try:
        return nspec.load(path)
    except NspecError as exc:
        if "nothing to run" in str(exc):
            return None
        raise


def _inputs(model):
    rng = np.random.default_rng(0)
    out = {}
    for v in model.program.inputs:
        if v.dtype.is_float:
            out[v.name] = rng.normal(size=(STEPS, *v.shape)).astype(v.dtype.numpy)
        else:
            out[v.name] = rng.integers(0, 2, size=(STEPS, *v.shape)).astype(v.dtype.numpy)
    return out


@pytest.fixture(scope="module")
def references():
    return {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_backend_equals_reference(path, backend, references):
    model = _model(path)
    if model is None:
        return  # a library-style file with no run target: its systems run through the files that use them
    steps = min(model.default_steps or STEPS, STEPS)
    record = sorted(r.name for r in model.program.step.results if r.kind == "value")
    inputs = _inputs(model)
    if path not in references:
        references[path] = model.run(inputs=inputs, steps=steps, record=record, batch=None)
    expected = references[path]
    got = model.run(inputs=inputs, steps=steps, record=record, backend=backend)
    assert set(got) == set(expected)
    for key, want in expected.items():
        have = got[key]
        assert np.shape(have) == np.shape(want), key
        if key.endswith((".i", ".t", "/spike")) or np.asarray(want).dtype.kind in "biu":
            np.testing.assert_array_equal(have, want, err_msg=key)
        else:
            scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5 * scale, err_msg=key)
