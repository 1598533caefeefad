"""Random draws inside the time loop: Threefry-2x32-20 (``compiler/threefry.py``) against the
Random123 paper's known answers, and the ``UNIFORM`` op bit-identical on the four backends (a
batched run of 1000 steps, and the same run split in two chunks)."""

from __future__ import annotations

import numpy as np
import pytest

from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.compiler.threefry import MASK, NUMPY_WORDS, threefry2x32, uniform_numpy
from nspec.runtime.executor import RunRequest, executor_class

BACKENDS = ["reference", "onnxruntime", "torch", "tvm"]

# Salmon et al. (SC 2011), Random123's kat_vectors: threefry2x32_20 (counter, key) -> result
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_threefry_known_answers(counter, key, expected):
    words = [np.array([v], np.uint32) for v in (*key, *counter)]
    with np.errstate(over="ignore"):
        x0, x1 = threefry2x32(NUMPY_WORDS, *words)
    assert (int(x0[0]), int(x1[0])) == expected


def test_uniform_is_the_top_24_bits_of_the_first_word():
    step, seed, stream = np.array([7, 2 ** 33 + 7]), 1234, 5  # the counter enters modulo 2^32
    u = uniform_numpy(seed, stream, step, (2, 3))
    assert u.dtype == np.float32 and u.shape == (2, 2, 3)
    for s in range(2):
        for e in range(6):
            c = [np.array([v], np.uint32) for v in (seed, stream, 7, s * 6 + e)]
            with np.errstate(over="ignore"):
                x0, _ = threefry2x32(NUMPY_WORDS, *c)
            assert u[s].reshape(-1)[e] == np.float32((int(x0[0]) >> 8) / 2 ** 24)


def draw_program(seed: int = 42) -> Program:
    """A step counter (i64 state) and three draw sites of different shapes and streams."""
    b = GraphBuilder()
    k = b.arg("k", "state", DType.i64, ())
    outs = []
    for stream, shape in enumerate([(), (5,), (2, 3)]):
        name = f"u{stream}"
        b.result(name, "output", b.add(Op.UNIFORM, (k,), DType.f32, shape, (("seed", seed), ("stream", stream))))
        outs.append(Var(name, DType.f32, shape))
    b.result("k", "next", b.add(Op.ADD, (k, b.const(np.int64(1), DType.i64)), DType.i64, ()))
    p = Program("draws", b.build(), ir.Graph((), ()), (), (Var("k", DType.i64, ()),), (), tuple(outs), (), dt=1e-4)
    ir.verify_program(p)
    return p


def run(backend: str, p: Program, start: np.ndarray, steps: int):
    return executor_class(backend)(p).run(RunRequest({}, {"k": start}, {}, steps))


@pytest.fixture(scope="module")
def expected():
    """The oracle's draws for a batch of 3 over 1000 steps, checked against Threefry directly."""
    p = draw_program()
    ref = run("reference", p, np.zeros(3, np.int64), 1000)
    steps = np.arange(1000)
    for name, shape, stream in [("u0", (), 0), ("u1", (5,), 1), ("u2", (2, 3), 2)]:
        direct = np.stack([uniform_numpy(42, stream, np.full(3, t), shape) for t in steps], axis=1)
        np.testing.assert_array_equal(ref.outputs[name], direct)
    return p, ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_draws_are_bit_identical_on_every_backend(expected, backend):
    p, ref = expected
    got = run(backend, p, np.zeros(3, np.int64), 1000)
    for name in ref.outputs:
        np.testing.assert_array_equal(got.outputs[name], ref.outputs[name], err_msg=f"{backend} {name}")
    np.testing.assert_array_equal(got.state["k"], [1000] * 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_chunks_equal_one_run(expected, backend):
    p, ref = expected
    first = run(backend, p, np.zeros(3, np.int64), 400)
    second = run(backend, p, first.state["k"], 600)
    for name in ref.outputs:
        joined = np.concatenate([first.outputs[name], second.outputs[name]], axis=1)
        np.testing.assert_array_equal(joined, ref.outputs[name], err_msg=f"{backend} {name}")


def test_draws_are_uniform_and_independent(expected):
    _, ref = expected
    u = ref.outputs["u1"]
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(float(u.mean()) - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    assert not np.array_equal(u[0], u[1])  # batch samples have their own streams
    assert not np.array_equal(ref.outputs["u1"][:, :, 0], ref.outputs["u2"][:, :, 0, 0])  # so do draw sites


def test_batch_sample_zero_equals_an_unbatched_run(expected):
    p, ref = expected
    one = run("reference", p, np.zeros(1, np.int64), 1000)
    for name in ref.outputs:
        np.testing.assert_array_equal(one.outputs[name][0], ref.outputs[name][0])
