"""SpikingBrain's neuron and spike coding (``specs/seeds/spikingbrain.nspec``) against the equations.

The oracle below is written from SEED_MODELS.md section 6 (not from the authors' code): the
adaptive threshold V_th = clamp(mean|x| / k, 1e-5, 1e4) per token, s_INT = round(x / V_th) with
torch.round's ties to even, and the Int2Spike codings with their place values.  Each property runs
through the compiled spec on every backend (reference, onnxruntime, torch, tvm), one compiled model
per target and backend reused across the examples.  Out-of-range integers saturate: a code carries
clip(n, lo, hi).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "spikingbrain.nspec"
BACKENDS = ("reference", "onnxruntime", "torch", "tvm")
D, K, MAX_COUNT, OUT = 8, 3.0, 24, 4
T_BITS = 5  # ceil(log2(24 + 1))
# code -> (its inclusive range, its place values MSB first)
CODES = {
    "binary": ((0, MAX_COUNT), np.ones(MAX_COUNT)),
    "ternary": ((-MAX_COUNT, MAX_COUNT), np.ones(MAX_COUNT)),
    "bitwise": ((0, 2**T_BITS - 1), 2.0 ** np.arange(T_BITS - 1, -1, -1)),
    "twos": ((-(2**T_BITS), 2**T_BITS - 1), np.concatenate([[-(2.0**T_BITS)], 2.0 ** np.arange(T_BITS - 1, -1, -1)])),
    "signmag": ((-(2**T_BITS - 1), 2**T_BITS - 1), 2.0 ** np.arange(T_BITS - 1, -1, -1)),
}
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@lru_cache(maxsize=None)
def model(target: str) -> nspec.Model:
    return nspec.load(SPEC, target=target)


def run(target: str, backend: str, **inputs) -> dict[str, np.ndarray]:
    """One data step on a batch: each input [B, *port] -> each output [B, *port]."""
    arrays = {k: np.asarray(v, np.float32)[:, None] for k, v in inputs.items()}  # [B, 1 step, *port]
    batch = next(iter(arrays.values())).shape[0]
    out = model(target).run(inputs=arrays, steps=1, batch=batch, backend=backend)
    return {k: v[:, 0] for k, v in out.items()}


def integers(lo: int, hi: int, rows: int = 3):
    return hnp.arrays(np.int64, (rows, D), elements=st.integers(lo, hi))


# ---------------------------------------------------------------- the oracle, from the equations
def threshold_and_count(x: np.ndarray, k: float = K) -> tuple[np.ndarray, np.ndarray]:
    """(V_th [B], s_INT [B, D]) in float32: V_th = clamp(mean(|x|) / k, 1e-5, 1e4) over the feature axis,
    s_INT = round(x / V_th) with ties to even (NumPy's and torch's round)."""
    x = np.asarray(x, np.float32)
    v = np.clip(np.mean(np.abs(x), axis=-1, dtype=np.float32) / np.float32(k), np.float32(1e-5), np.float32(1e4))
    return v, np.round(x / v[:, None])


def encode(code: str, n: np.ndarray) -> np.ndarray:
    """The spike train [B, T, D] of clip(n) in ``code``: written bit by bit, independently of the spec."""
    (lo, hi), place = CODES[code]
    c = np.clip(n, lo, hi).astype(np.int64)
    T = len(place)
    if code == "binary":
        return (np.arange(T)[None, :, None] < c[:, None, :]).astype(np.float32)
    if code == "ternary":
        return np.sign(c)[:, None, :] * (np.arange(T)[None, :, None] < np.abs(c)[:, None, :])
    if code == "bitwise":
        return (c[:, None, :] >> np.arange(T - 1, -1, -1)[None, :, None]) & 1
    if code == "twos":  # the low T bits of the two's-complement integer
        return ((c & (2**T - 1))[:, None, :] >> np.arange(T - 1, -1, -1)[None, :, None]) & 1
    return np.sign(c)[:, None, :] * ((np.abs(c)[:, None, :] >> np.arange(T - 1, -1, -1)[None, :, None]) & 1)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", list(CODES))
def test_every_code_round_trips_the_integers_in_its_range(code, backend):
    """decode(encode(n)) == n for integer vectors in the code's range, and the train is the oracle's."""
    (lo, hi), place = CODES[code]

    @PROPERTY
    @given(integers(lo, hi))
    def check(n):
        got = run("Int2Spike", backend, n=n)
        np.testing.assert_array_equal(got[f"{code}_decoded"], n)
        np.testing.assert_array_equal(got[code], encode(code, n))
        assert set(np.unique(got[code])) <= ({0.0, 1.0} if code in ("binary", "bitwise", "twos") else {-1.0, 0.0, 1.0})

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_integers_saturate(backend):
    """A code with T steps carries clip(n, lo, hi): beyond its range it decodes the nearest end."""
    @PROPERTY
    @given(integers(-200, 200))
    def check(n):
        got = run("Int2Spike", backend, n=n)
        for code, ((lo, hi), _) in CODES.items():
            np.testing.assert_array_equal(got[f"{code}_decoded"], np.clip(n, lo, hi), err_msg=code)
            np.testing.assert_array_equal(got[code], encode(code, n), err_msg=code)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_if_expansion_counts_equal_the_integer_counts(backend):
    """The IF neuron (soft reset, no leak), given n at its first virtual step, fires sum_t s_t = n over
    max_count steps for |n| <= max_count; beyond, one spike of sign(n) per step, n - count left in its
    potential.  Its train is the ternary code's."""
    @PROPERTY
    @given(integers(-40, 40))
    def check(n):
        got = model("IFExpansion").run(inputs={"n": n.astype(np.float32)}, steps=MAX_COUNT, batch=len(n),
                                       backend=backend)
        count = np.clip(n, -MAX_COUNT, MAX_COUNT)
        np.testing.assert_array_equal(got["fired"].sum(axis=1), count)
        np.testing.assert_array_equal(got["potential"][:, -1], n - count)
        np.testing.assert_array_equal(got["fired"], encode("ternary", n))

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_layer_on_spike_coded_inputs_equals_the_integer_matmul(backend):
    """sum_t place_t (W @ s_t) == W @ s_INT exactly, for integer (W8) weights and every code in range."""
    m = model("CodedLinear")
    assert set(m.state_dict()) == {"linear.weight"}  # the box's path before the key
    W = np.random.default_rng(0).integers(-128, 128, (OUT, D))
    m.load_weights({"linear.weight": W.astype(np.float32)})

    @PROPERTY
    @given(integers(0, MAX_COUNT), integers(-MAX_COUNT, MAX_COUNT))
    def check(unsigned, signed):
        for n, codes in ((unsigned, CODES), (signed, ("ternary", "twos", "signmag"))):
            got = run("CodedLinear", backend, n=n)
            want = n @ W.T  # int64
            np.testing.assert_array_equal(got["y_int"], want)
            for code in codes:
                np.testing.assert_array_equal(got[f"y_{code}"], want, err_msg=code)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_and_count_equal_the_oracle(backend):
    """V_th and s_INT against the NumPy oracle, clamp included; x_hat = s_INT V_th.  A compiled
    backend may sum |x| in another order than NumPy's pairwise sum (torch and TVM add the D terms one
    by one): two orders of D positive float32 terms differ by at most 2 (D - 1) units of roundoff
    (2^-24) of the sum, and the division by k rounds once more, so V_th agrees within
    (2 (D - 1) + 2) 2^-24 relative (measured: 2 ulps, 2.2e-7, at x = 823.9221 everywhere).  That
    moves x / V_th by at most k D 1e-6 < 1e-4, so a count can differ by one only where x / V_th is
    within 1e-4 of a half."""
    @PROPERTY
    @given(hnp.arrays(np.float32, (4, D), elements=st.floats(-1e3, 1e3, width=32)))
    def check(x):
        got = run("AdaptiveSpikes", backend, x=x)
        v, s = threshold_and_count(x)
        np.testing.assert_allclose(got["v_th"], v, rtol=(2 * (D - 1) + 2) * 2.0**-24, atol=0)
        y = x / v[:, None]
        near_half = np.abs(np.abs(y - np.floor(y)) - 0.5) < 1e-4
        exact = got["s_int"] == s
        assert np.all(exact | (near_half & (np.abs(got["s_int"] - s) == 1)))
        if backend == "reference":
            assert np.all(exact)
        np.testing.assert_allclose(got["x_hat"], got["s_int"] * got["v_th"][:, None], rtol=1e-6)

    check()


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_clamps_at_both_ends(backend):
    """All-zero tokens take V_th = 1e-5 (counts 0); huge tokens V_th = 1e4 (counts x / 1e4, beyond k D)."""
    x = np.stack([np.zeros(D), np.full(D, 1e-7), np.full(D, 2e5), np.linspace(-1e6, 1e6, D)]).astype(np.float32)
    got = run("AdaptiveSpikes", backend, x=x)
    v, s = threshold_and_count(x)
    np.testing.assert_array_equal(v, np.float32([1e-5, 1e-5, 1e4, 1e4]))
    np.testing.assert_array_equal(got["v_th"], v)
    np.testing.assert_array_equal(got["s_int"], s)
    np.testing.assert_array_equal(got["s_int"][2], np.full(D, 20.0))
    assert np.max(np.abs(got["s_int"][3])) > K * D


def test_ties_round_half_to_even_as_torch_round():
    import torch

    y = np.float32([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e6 + 0.5, -(2.0**22) - 0.5]])
    got = run("RoundSTE", "reference", y=y)["n"]
    np.testing.assert_array_equal(got, torch.round(torch.as_tensor(y)).numpy())
    np.testing.assert_array_equal(got, [[0, 2, 2, 0, -2, -2, 1e6, -(2.0**22)]])


def test_straight_through_gradient_is_the_identity_on_torch():
    """to_torch(): forward torch.round(y), backward d sum(n * R) / dy = R exactly; through the
    threshold, ds_INT/dx is the gradient of x / V_th(x) (the round is transparent)."""
    import torch

    rng = np.random.default_rng(1)
    module = model("RoundSTE").to_torch()
    y = torch.tensor(rng.normal(0, 5, (3, 1, D)), dtype=torch.float32, requires_grad=True)  # one data step
    n = module(y=y)["n"]
    assert torch.equal(n, torch.round(y.detach()))
    R = torch.tensor(rng.normal(size=(3, 1, D)), dtype=torch.float32)
    (n * R).sum().backward()
    assert torch.equal(y.grad, R)

    spikes = model("AdaptiveSpikes").to_torch()
    x = torch.tensor(rng.normal(0, 2, (3, 1, D)), dtype=torch.float32, requires_grad=True)
    (spikes(x=x)["s_int"] * R).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    v = torch.clamp(x2.abs().mean(dim=-1, keepdim=True) / K, 1e-5, 1e4)
    (x2 / v * R).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_bit_counts_follow_max_count():
    """T = ceil(log2(max_count + 1)) bits (one more for two's complement); ranges follow."""
    for max_count, bits in ((1, 1), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (255, 8), (256, 9), (4095, 12), (4096, 13)):
        m = nspec.load(SPEC, target="Int2Spike", max_count=max_count)
        shapes = {v.name: tuple(v.shape) for v in m.program.outputs}
        assert shapes["bitwise"] == (bits, D) and shapes["twos"] == (bits + 1, D), max_count
        assert int(np.ceil(np.log2(max_count + 1))) == bits


@pytest.mark.parametrize("setting, message", [
    ({"max_count": 0}, "max_count (the largest spike count the codes carry) must be at least 1"),
    ({"max_count": 2**23}, "max_count must stay below 2^23"),
    ({"k": 0.0}, "k (dynamic_sfr) must be positive"),
])
def test_bad_hyperparameters_are_located_errors(setting, message):
    from nspec.dsl.diagnostics import NspecError

    with pytest.raises(NspecError) as err:
        nspec.load(SPEC, **setting)
    text = err.value.render() if hasattr(err.value, "render") else str(err.value)
    assert message in text and "spikingbrain.nspec:" in text
