"""Normal draws in step equations (``builtins_random.standard_normal``, the ``NORMAL`` op): the
inverse CDF of a 24-bit uniform by Acklam's rational approximation, built from +, -, *, / and
selects only (``compiler/normal_draws.py``).

* bits: the same draws, compared as raw bits, on reference, onnxruntime, torch and TVM (strict
  mode, which compiles without FMA so that LLVM cannot contract a*b+c), over 2 * 10^5 draws of
  ``normal()`` that reach past |z| = 4; and the NumPy and PyTorch arithmetic tables over a dense
  grid of 24-bit inputs that holds both tails entirely;
* distribution: mean, variance, skewness and excess kurtosis of 10^6 draws within five standard
  errors of N(0, 1)'s, and the Kolmogorov-Smirnov statistic against N(0, 1) (computed with
  ``math.erf``) below the 0.1% critical value 1.949 / sqrt(n);
* tails and accuracy: |z| reaches Phi^-1(2^-25) = 5.42, and every value of the grid is within one
  f32 ulp of the exact quantile (``statistics.NormalDist().inv_cdf``), monotone and symmetric.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

import nspec
from nspec.compiler.normal_draws import NUMPY_REALS, normal_numpy, quantile
from nspec.compiler.ops import Op
from nspec.lowering.torch_draws import TORCH_REALS

BACKENDS = [("onnxruntime", {}), ("torch", {}), ("tvm", {"strict": True})]
HALF = 2 ** 14  # each tail's grid: k < HALF and k >= 2^24 - HALF, every value


@pytest.fixture(scope="module")
def on_grid():
    """24-bit uniform indices k (both tails entirely, an even spread over the middle) and the
    oracle's normal draws for u = k 2^-24."""
    middle = np.linspace(HALF, 2 ** 24 - HALF - 1, 2 * HALF).astype(np.int64)
    k = np.unique(np.concatenate([np.arange(HALF), middle, 2 ** 24 - 1 - middle, np.arange(2 ** 24 - HALF, 2 ** 24)]))
    return k, normal_numpy((k * 2.0 ** -24).astype(np.float32))


def test_numpy_and_torch_arithmetic_give_the_same_bits_on_the_grid(on_grid):
    k, want = on_grid
    u = k * 2.0 ** -24
    with np.errstate(all="ignore"):
        exact64 = quantile(NUMPY_REALS, u)
    got64 = quantile(TORCH_REALS, torch.tensor(u, dtype=torch.float64)).numpy()
    np.testing.assert_array_equal(got64.view(np.uint64), exact64.view(np.uint64))  # every f64 step alike
    np.testing.assert_array_equal(got64.astype(np.float32).view(np.uint32), want.view(np.uint32))


def test_the_quantile_is_within_one_ulp_of_the_exact_one(on_grid):
    k, z = on_grid
    exact = np.array([statistics.NormalDist().inv_cdf((i + 0.5) / 2 ** 24) for i in k])
    rounded = exact.astype(np.float32)
    ulps = np.abs(z.view(np.int32).astype(np.int64) - rounded.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, f"{ulps.max()} ulps at z = {exact[ulps.argmax()]}"
    assert np.max(np.abs(z - exact)) < 2.5e-7
    assert np.all(np.diff(z) >= 0)  # monotone, as an inverse CDF
    assert np.array_equal(z, -z[::-1])  # the grid is symmetric: k <-> 2^24 - 1 - k


def test_the_tails_reach_the_quantile_of_the_smallest_probability(on_grid):
    k, z = on_grid
    assert k[0] == 0 and k[-1] == 2 ** 24 - 1
    deepest = statistics.NormalDist().inv_cdf(2.0 ** -25)  # -5.4199...
    assert z[0] == np.float32(deepest) and z[-1] == -np.float32(deepest)
    assert np.all(np.abs(z) <= abs(np.float32(deepest)))


# ---------------------------------------------------------------- through the language: normal() in a step
NOISE = """
system Noise {
  out z: f32[SIZE]
  state x: f32[SIZE] = 0
  next x = x
  z = normal() + 0 * x
}
simulate Noise for 1 ms, dt = 0.1 ms, seed = 11
"""


def load(tmp_path, n: int):
    path = tmp_path / "noise.nspec"
    path.write_text(NOISE.replace("SIZE", str(n)))
    return nspec.load(str(path))


def test_normal_is_one_draw_site_per_call(tmp_path):
    ops = [n.op for n in load(tmp_path, 4).program.step.nodes]
    assert ops.count(Op.NORMAL) == 1 and Op.UNIFORM not in ops


@pytest.mark.parametrize("backend, options", BACKENDS)
def test_normal_draws_have_the_same_bits_on_every_backend(tmp_path, backend, options):
    model = load(tmp_path, 1000)
    want = model.run(steps=100, batch=2)["z"]
    got = model.run(steps=100, batch=2, backend=backend, **options)["z"]
    assert want.size == 200000 and np.abs(want).max() > 4  # the tails' own branch, far out
    diff = np.flatnonzero(got.view(np.uint32).reshape(-1) != want.view(np.uint32).reshape(-1))
    assert diff.size == 0, f"{backend}: {diff.size} of {want.size} draws differ"


def test_a_million_normal_draws_are_standard_normal(tmp_path):
    model = load(tmp_path, 10000)
    z = model.run(steps=100)["z"].astype(np.float64).reshape(-1)
    n = z.size
    assert n == 10 ** 6
    mean, var = z.mean(), z.var()
    skew = np.mean((z - mean) ** 3) / var ** 1.5
    kurt = np.mean((z - mean) ** 4) / var ** 2 - 3
    # five standard errors of each statistic for n normal draws
    assert abs(mean) < 5 / math.sqrt(n)
    assert abs(var - 1) < 5 * math.sqrt(2 / n)
    assert abs(skew) < 5 * math.sqrt(6 / n)
    assert abs(kurt) < 5 * math.sqrt(24 / n)
    s = np.sort(z)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(s / math.sqrt(2)))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.949 / math.sqrt(n), f"KS statistic {ks:.3g}"  # the 0.1% critical value


def test_normal_with_mean_and_std_scales_the_standard_draw(tmp_path):
    path = tmp_path / "scaled.nspec"
    path.write_text(NOISE.replace("SIZE", "50").replace("z = normal() + 0 * x", "z = normal(2, 3) + 0 * x"))
    scaled = nspec.load(str(path)).run(steps=20)["z"]
    standard = load(tmp_path, 50).run(steps=20)["z"]
    np.testing.assert_array_equal(scaled, np.float32(2) + np.float32(3) * standard)
