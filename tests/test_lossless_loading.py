"""Weights, inputs and states load losslessly or not at all: every refused cast names the key, the
dtype and the first offending value; exact casts (f16 -> f32, bool -> int, integral floats -> int)
are accepted."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

import nspec
from nspec.runtime.lossless import LossyCastError, convert
from nspec.runtime.model import InputError, WeightsError

SPEC = """
system S {
  in x: f32[3]
  out y: f32[3]
  param route: i64[3] = 0 key "route"
  param gain: f32[3] = 1 key "gain"
  y = x * gain + float(route)
}
simulate S for 2 s, dt = 1 s
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.nspec"
    path.write_text(SPEC)
    return nspec.load(path)


@pytest.mark.parametrize("value, dtype, message", [
    ([np.nan], np.int64, "int64 needs whole numbers, got nan"),
    ([1e30], np.int64, "1e+30 at index [0] is outside int64's range"),
    ([0.0, 2.7], np.int64, "int64 needs whole numbers, got 2.7 at index [1]"),
    ([1 + 2j], np.float32, "complex values cannot become float32"),
    (["1.5"], np.float32, "values of type <U3 cannot become float32"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), np.float32, "values of type datetime64[D]"),
    (np.zeros(1, dtype=[("a", "f4")]), np.float32, "cannot become float32"),
    ([1e300], np.float32, "1e+300 at index [0] does not fit in float32"),
    (np.array([2**63], dtype=np.uint64), np.int64, "is outside int64's range"),
    ([2], np.bool_, "only 0 and 1 become bool, got 2"),
])
def test_lossy_casts_are_refused(value, dtype, message):
    with pytest.raises(LossyCastError, match="^w: .*" + message.replace("[", r"\[").replace("(", r"\(")
                       .replace("+", r"\+").replace("]", r"\]").replace(")", r"\)")):
        convert(np.asarray(value), dtype, "w")


@pytest.mark.parametrize("value, dtype, want", [
    (np.float16([1.5, -2.0]), np.float32, [1.5, -2.0]),
    (np.array([True, False]), np.int64, [1, 0]),
    (np.array([3.0, -4.0]), np.int64, [3, -4]),
    (np.array([1 + 0j]), np.float32, [1.0]),
    (np.array([0.1]), np.float32, [np.float32(0.1)]),  # rounding to the nearest float is not a loss
    (np.array([5], dtype=np.uint64), np.int64, [5]),
])
def test_exact_casts_are_accepted(value, dtype, want):
    out = convert(value, dtype, "w")
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, np.asarray(want, dtype))


def test_a_nan_into_an_integer_parameter_is_refused_by_name(model):
    with pytest.raises(WeightsError, match=r"weight 'route' \(i64\): int64 needs whole numbers, got nan"):
        model.load_weights({"route": np.array([0.0, np.nan, 1.0]), "gain": np.ones(3, np.float32)})
    model.load_weights({"route": np.array([0.0, 2.0, 1.0]), "gain": np.ones(3, np.float32)})  # exact: accepted
    np.testing.assert_array_equal(model.run({"x": np.zeros(3, np.float32)}, steps=1)["y"], [0, 2, 1])


def test_an_input_that_overflows_float32_is_refused(model):
    with pytest.raises(InputError, match=r"input 'x' \(f32\): 1e\+300 at index \[1\] does not fit in float32"):
        model.run({"x": np.array([0.0, 1e300, 0.0])}, steps=1)


def test_a_state_set_lossily_is_refused(tmp_path):
    path = tmp_path / "s.nspec"
    path.write_text("system C {\n  out y: i64\n  state n: i64 = 0\n  y = n\n  next n = n + 1\n}\n"
                    "simulate C for 2 s, dt = 1 s\n")
    m = nspec.load(path)
    with pytest.raises(ValueError, match="state 'n': int64 needs whole numbers, got 2.5"):
        m.set_state({"n": np.array([2.5])})


def test_an_npz_holding_a_name_twice_is_refused(model, tmp_path):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for value in (np.zeros(3), np.ones(3)):
            with z.open("gain.npy", "w") as f:
                np.lib.format.write_array(f, value.astype(np.float32))
    with pytest.raises(WeightsError, match="holds gain more than once"):
        model.load_weights(path, strict=False)


def test_a_string_array_in_an_npz_is_a_clean_error(model, tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, gain=np.array(["a", "b", "c"]), route=np.zeros(3, np.int64))
    with pytest.raises(WeightsError, match=r"weight 'gain' \(f32\): values of type <U1 cannot become float32"):
        model.load_weights(path)


def test_a_torch_file_with_an_int_key_is_a_clean_error(model, tmp_path):
    path = tmp_path / "w.pt"
    torch.save({0: torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="weight names are strings, got the key 0"):
        model.load_weights(path)
