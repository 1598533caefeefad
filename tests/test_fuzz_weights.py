"""Fuzzing weights and input files: random dtypes, shapes and values, and corrupted ``.npz``,
``.pt`` and ``.safetensors`` bytes.  Whatever the file, loading it either succeeds losslessly (every
loaded value equals the one given, exactly) or fails with ``WeightsError``/``InputError`` (the
command line: exit 1, never a traceback); it never crashes and never casts lossily."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nspec
from nspec.cli import main
from nspec.runtime.model import InputError, WeightsError

SPEC = """
system S {
  in x: f32[3]
  in k: i64[2]
  out y: f32[3]
  param route: i64[3] = 0 key "route"
  param gain: f32[3] = 1 key "gain"
  param mask: bool[2] = false key "mask"
  y = x * gain + float(route) + float(k[0])
}
simulate S for 2 s, dt = 1 s
"""
DECLARED = {"route": (np.int64, (3,)), "gain": (np.float32, (3,)), "mask": (np.bool_, (2,))}
PORTS = {"x": (np.float32, (3,)), "k": (np.int64, (2,))}
FUZZ = settings(deadline=None, derandomize=True, database=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "bool", "complex64", "complex128", "U3", "S3", "datetime64[s]", "timedelta64[ms]", "V4",
          [("a", "f4"), ("b", "i4")]]
SPECIAL = [0, 1, -1, 0.5, 2.7, -0.0, np.nan, np.inf, -np.inf, 1e30, -1e300, 2**53 + 1, 2**63 - 1, -2**63, 2**64 - 1,
           65504, 65520, 1e-45, True, False]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "m.nspec"
    path.write_text(SPEC)
    return nspec.load(path)


def _array(draw, dtype, shape) -> np.ndarray:
    values = draw(st.lists(st.sampled_from(SPECIAL), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(all="ignore"):
        try:
            return np.array(values, dtype=object).astype(dtype).reshape(shape)
        except (ValueError, TypeError, OverflowError):
            return np.zeros(shape, dtype=dtype)


@st.composite
def tensors(draw, declared: dict) -> dict[str, np.ndarray]:
    """A mapping of name -> array: the declared names (and sometimes others), random dtypes, shapes, values."""
    names = list(declared) + draw(st.lists(st.sampled_from(["other", "gain.weight", "", "x"]), max_size=1))
    out = {}
    for name in names:
        if draw(st.booleans()) and name in declared:
            shape = declared[name][1]
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        out[name] = _array(draw, np.dtype(draw(st.sampled_from(DTYPES))), shape)
    return out


def _exact(loaded: np.ndarray, given: np.ndarray) -> bool:
    """Loaded values equal the given ones exactly (NaN where NaN was given; -0.0 is 0)."""
    given = np.asarray(given)
    if given.dtype.kind in "fc":
        return bool(np.all((loaded == given) | (np.isnan(given) & np.isnan(loaded))))
    return bool(np.all(loaded.astype(given.dtype) == given)) and bool(np.all(loaded == given))


@FUZZ
@given(tensors(DECLARED))
def test_weights_load_exactly_or_not_at_all(model, tensors):
    before = model.state_dict()
    try:
        model.load_weights(tensors)
    except WeightsError as exc:
        assert str(exc).startswith("weights do not fit the model") or "weight names" in str(exc), exc
        assert all(np.array_equal(model.state_dict()[k], v) for k, v in before.items())  # nothing half loaded
        return
    for name, (dtype, shape) in DECLARED.items():
        loaded = model.state_dict()[name]
        assert loaded.dtype == dtype and loaded.shape == shape
        given = np.asarray(tensors[name])
        assert _exact(loaded, np.broadcast_to(given, shape) if given.size == 1 else given), (name, given, loaded)


@FUZZ
@given(tensors(PORTS))
def test_inputs_load_exactly_or_not_at_all(model, tensors):
    try:
        out = model.run(inputs=tensors, steps=1, nan_check="off")
    except InputError:
        return
    x, k = np.asarray(tensors["x"]), np.asarray(tensors["k"])
    assert x.shape[-1:] == (3,) and k.shape[-1:] == (2,)
    assert out["y"].dtype == np.float32
    # accepted only if every value is exactly a float32 and an int64: nothing was rounded, wrapped or cut
    with np.errstate(all="ignore"):
        assert _exact(x.astype(np.float32), x) and _exact(k.astype(np.int64), k), (x, k)


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    """Flipped bytes, a cut, an inserted run or a duplicated block."""
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(len(data)):]
    elif kind == 2:
        at = rng.randrange(len(data) + 1)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    else:
        at, n = rng.randrange(len(data)), rng.randrange(1, 256)
        data[at:at] = data[at:at + n]
    return bytes(data)


def _files(tensors: dict) -> dict[str, bytes]:
    npz = io.BytesIO()
    np.savez(npz, **tensors)
    pt = io.BytesIO()
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, pt)
    from safetensors.numpy import save

    return {".npz": npz.getvalue(), ".pt": pt.getvalue(), ".safetensors": save(tensors)}


GOOD = {"route": np.array([0, 1, 2]), "gain": np.array([1, 2, 3], np.float32), "mask": np.array([True, False])}


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".safetensors"])
def test_corrupt_weight_files_are_clean_errors(model, tmp_path, suffix):
    rng = random.Random(20261203)
    original = _files(GOOD)[suffix]
    path = tmp_path / f"w{suffix}"
    loaded = refused = 0
    for _ in range(150):
        path.write_bytes(_corrupt(original, rng))
        try:
            model.load_weights(path)
        except WeightsError:
            refused += 1
            continue
        loaded += 1  # a flip in padding or an unused field: what loaded must still be exact
        for name, (dtype, shape) in DECLARED.items():
            value = model.state_dict()[name]
            assert value.dtype == dtype and value.shape == shape
    assert refused > 50, (loaded, refused)
    model.load_weights(GOOD)


def test_corrupt_input_files_on_the_command_line_are_clean_errors(tmp_path):
    spec = tmp_path / "m.nspec"
    spec.write_text(SPEC)
    rng = random.Random(7)
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((1, 2, 3), np.float32), k=np.ones((1, 2, 2), np.int64))
    paths = []
    for n in range(6):
        p = tmp_path / f"in{n}.npz"
        p.write_bytes(_corrupt(buf.getvalue(), rng))
        paths.append(p)
    weights = tmp_path / "w.npz"
    weights.write_bytes(_corrupt(_files(GOOD)[".npz"], rng))
    for p in paths:
        code = main(["run", str(spec), "--inputs", str(p), "--quiet"])
        assert code in (0, 1)
    proc = subprocess.run([sys.executable, "-m", "nspec", "run", str(spec), "--inputs", str(paths[0]), "--weights",
                           str(weights), "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr and "internal" not in proc.stderr, proc.stderr
