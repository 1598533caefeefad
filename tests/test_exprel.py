"""``exprel(x) = (exp(x) - 1) / x`` (1 at 0), Brian2's function for rate equations such as
Hodgkin-Huxley's ``0.32 * (mV^-1) * 4 mV / exprel((13 mV - v + VT) / (4 mV)) / ms``, where the
direct quotient is 0/0 at the singular voltage and loses digits near it.  The oracle is float64
``expm1(x) / x``: every backend is within 1 ulp of it and equal to the reference's bits up to 1 ulp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.dsl import NspecError

X = np.array([0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-4, -1e-4, 1e-3, -1e-3, 0.01, -0.01, 0.5, -0.5, 1.0,
              -1.0, 5.0, -5.0, -20.0, -100.0, 30.0, 80.0, 88.0, 100.0], np.float32)

SPEC = f"""module exprel_test "exprel"
system E {{
  in x: f32[{X.size}]
  out y: f32[{X.size}]
  y = exprel(x)
}}
simulate E for 1 s, dt = 1 s
"""


def exact(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    safe = np.where(x64 == 0, 1.0, x64)
    return np.where(x64 == 0, 1.0, np.expm1(x64) / safe)


def ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    want32 = want.astype(np.float32)
    finite = np.isfinite(want32)
    assert np.array_equal(np.isfinite(got), finite), (got, want32)
    return np.abs(got[finite].astype(np.float64) - want32[finite]) / np.spacing(np.abs(want32[finite]))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> nspec.Model:
    path = tmp_path_factory.mktemp("exprel") / "e.nspec"
    path.write_text(SPEC, encoding="utf-8")
    return nspec.load(path)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "tvm", "torch"])
def test_exprel_is_within_one_ulp_of_float64_on_every_backend(model, backend):
    with np.errstate(over="ignore"):
        y = np.asarray(model.run(inputs={"x": X[None]}, steps=1, backend=backend)["y"], np.float32).ravel()
        assert ulps(y, exact(X)).max() <= 1.0
        assert y[0] == 1.0 and np.isinf(y[-1])


def test_exprel_folds_constants_and_refuses_units(tmp_path):
    path = tmp_path / "c.nspec"
    path.write_text('module c "c"\nsystem S {\n  out y: f32\n  y = exprel(0) + exprel(-1e-9) + exprel(2)\n}\n'
                    'simulate S for 1 s, dt = 1 s\n', encoding="utf-8")
    y = float(np.asarray(nspec.load(path).run(steps=1)["y"]).ravel()[0])
    assert y == pytest.approx(1.0 + (1.0 - 0.5e-9) + np.expm1(2.0) / 2.0, rel=1e-7)
    path.write_text('module c "c"\nsystem S {\n  in v: f32 mV\n  out y: f32\n  y = exprel(v)\n}\n'
                    'simulate S for 1 s, dt = 1 s\n', encoding="utf-8")
    with pytest.raises(NspecError) as err:
        nspec.load(path)
    text = str(err.value)
    assert "exprel() needs a dimensionless argument, got" in text and ":5:" in text
