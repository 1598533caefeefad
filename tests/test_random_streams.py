"""Random draws inside the time loop: Threefry-2x32-20 (``compiler/threefry.py``) against the
Random123 paper's known answers, and the ``UNIFORM`` op bit-identical on the four backends (a
batched run of 1000 steps, and the same run split in two chunks); the run's seed keying the
draws at run time (``Model.run(seed=)``, ``nspec run --seed``, resumed and chunked runs), and
step counters past 2^32 (the high word in the key) up to the refused limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.compiler import ir
from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.compiler.ops import STEP_DRAWS
from nspec.dsl.diagnostics import NspecError
from nspec.cli import main
from nspec.compiler.threefry import COUNTER_MAX, MASK, NUMPY_WORDS, counter_limit, threefry2x32, uniform_numpy
from nspec.runtime.executor import RunRequest, executor_class
from nspec.runtime.model import CounterError

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
    step, seed, stream = np.array([7, 2 ** 33 + 7]), 1234, 5  # the high word of the counter enters the key
    u = uniform_numpy(seed, stream, 8, step, (2, 3))
    assert u.dtype == np.float32 and u.shape == (2, 2, 3)
    for s in range(2):
        for e in range(6):  # key (seed, stream + streams * step_hi), counter (step_lo, element)
            c = [np.array([v], np.uint32) for v in (seed, stream + 8 * (step[s] >> 32), 7, s * 6 + e)]
            with np.errstate(over="ignore"):
                x0, _ = threefry2x32(NUMPY_WORDS, *c)
            assert u[s].reshape(-1)[e] == np.float32((int(x0[0]) >> 8) / 2 ** 24)


def draw_program() -> Program:
    """A step counter and a seed (i64 states) and three draw sites of different shapes and streams."""
    b = GraphBuilder()
    k = b.arg("k", "state", DType.i64, ())
    seed = b.arg("seed", "state", DType.i64, ())
    outs = []
    for stream, shape in enumerate([(), (5,), (2, 3)]):
        name = f"u{stream}"
        b.result(name, "output", b.add(Op.UNIFORM, (k, seed), DType.f32, shape, (("stream", stream), ("streams", 3))))
        outs.append(Var(name, DType.f32, shape))
    b.result("k", "next", b.add(Op.ADD, (k, b.const(np.int64(1), DType.i64)), DType.i64, ()))
    b.result("seed", "next", seed)
    states = (Var("k", DType.i64, ()), Var("seed", DType.i64, ()))
    p = Program("draws", b.build(), ir.Graph((), ()), (), states, (), tuple(outs), (), dt=1e-4)
    ir.verify_program(p)
    return p


def run(backend: str, p: Program, start: np.ndarray, steps: int, seed: int = 42):
    state = {"k": start, "seed": np.full(len(start), seed, np.int64)}
    return executor_class(backend)(p).run(RunRequest({}, state, {}, steps))


@pytest.fixture(scope="module")
def expected():
    """The oracle's draws for a batch of 3 over 1000 steps, checked against Threefry directly."""
    p = draw_program()
    ref = run("reference", p, np.zeros(3, np.int64), 1000)
    steps = np.arange(1000)
    for name, shape, stream in [("u0", (), 0), ("u1", (5,), 1), ("u2", (2, 3), 2)]:
        direct = np.stack([uniform_numpy(42, stream, 3, np.full(3, t), shape) for t in steps], axis=1)
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
    np.testing.assert_array_equal(first.state["seed"], [42] * 3)
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


# ---------------------------------------------------------------- the language: rand(), uniform(), normal() in steps
POISSON = Path(__file__).resolve().parents[1] / "specs" / "examples" / "poisson.nspec"


@pytest.fixture(scope="module")
def poisson():
    model = nspec.load(str(POISSON))
    return model, model.run(backend="reference")


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_poisson_spike_trains_are_identical_on_every_backend(poisson, backend):
    model, ref = poisson
    got = model.run(backend=backend)
    assert len(ref["spikes.i"]) > 0
    np.testing.assert_array_equal(got["spikes.i"], ref["spikes.i"])
    np.testing.assert_array_equal(got["spikes.t"], ref["spikes.t"])


def test_poisson_trials_of_a_batch_differ_and_trial_zero_is_the_single_run(poisson):
    model, ref = poisson
    got = model.run(backend="reference", batch=2, steps=10000)
    first = got["spikes.trial"] == 0
    np.testing.assert_array_equal(got["spikes.i"][first], ref["spikes.i"])
    assert not np.array_equal(got["spikes.i"][~first], ref["spikes.i"])


DRAWS = """
system Noise {
  out a: f32[4]
  out b: f32[4]
  out z: f32[4] mV
  state x: f32[4] = 0
  next x = uniform(2, 3)
  a = x
  b = rand() + 0 * x
  z = normal(1 mV, 2 mV) + 0 * x * 1 mV
}
simulate Noise for 1 ms, dt = 0.1 ms
"""


def load_text(tmp_path, text: str):
    path = tmp_path / "draws.nspec"
    path.write_text(text)
    return nspec.load(str(path))


def test_each_draw_site_has_its_own_stream_and_values_in_range(tmp_path):
    model = load_text(tmp_path, DRAWS)
    draws = [n for n in model.program.step.nodes if n.op in STEP_DRAWS]
    assert sorted(n.attrs.stream for n in draws) == [0, 1, 2]  # uniform, rand, normal
    assert [n.op for n in draws].count(Op.NORMAL) == 1 and {n.attrs.streams for n in draws} == {3}
    out = model.run(steps=2000)
    a = out["a"][1:]  # a is x before this step's update: 0 at the first step
    assert 2 <= a.min() and a.max() < 3 and 0 <= out["b"].min() and out["b"].max() < 1
    assert not np.array_equal(out["a"][1:] - 2, out["b"][:-1])
    z = out["z"] / 1e-3  # in mV
    assert abs(z.mean() - 1) < 4 * 2 / np.sqrt(z.size) and abs(z.std() - 2) < 0.1


def test_normal_draws_are_bit_identical_across_backends(tmp_path):
    model = load_text(tmp_path, DRAWS)
    ref = model.run(steps=50)
    for backend, options in [("onnxruntime", {}), ("torch", {}), ("tvm", {"strict": True})]:
        got = model.run(steps=50, backend=backend, **options)
        for name in ("a", "b", "z"):
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{backend} {name}")


@pytest.mark.parametrize("body, message", [
    ("state v: f32 = 0\n  dv/dt = rand() / (1 s)", "allowed only in initial values"),
    ("state w: f32[2, 2] = 0\n  next w = orthogonal()", "allowed only in initial values"),
])
def test_draws_where_they_cannot_be(tmp_path, body, message):
    with pytest.raises(NspecError, match=message):
        load_text(tmp_path, f"system Bad {{\n  {body}\n}}\nsimulate Bad for 1 ms, dt = 0.1 ms\n")


def test_draws_are_refused_in_systems_with_ticks(tmp_path):
    text = "system Bad {\n  out y: f32\n  state c: f32 = 0\n  y = rand()\n  next c = c\n  ticks 3\n}\nsimulate Bad for 1 ms, dt = 0.1 ms\n"
    with pytest.raises(NspecError, match="internal ticks"):
        load_text(tmp_path, text)


# ---------------------------------------------------------------- the run's seed, at run time
def test_the_seed_state_keys_the_draws(expected):
    """Another seed in the ``seed`` state gives other draws, the oracle's own on every backend."""
    p, ref = expected
    want = run("reference", p, np.zeros(3, np.int64), 50, seed=43)
    direct = np.stack([uniform_numpy(43, 1, 3, np.full(3, t), (5,)) for t in range(50)], axis=1)
    np.testing.assert_array_equal(want.outputs["u1"], direct)
    assert not np.array_equal(want.outputs["u1"], ref.outputs["u1"][:, :50])
    for backend in BACKENDS[1:]:
        got = run(backend, p, np.zeros(3, np.int64), 50, seed=43)
        for name in want.outputs:
            np.testing.assert_array_equal(got.outputs[name], want.outputs[name], err_msg=f"{backend} {name}")


def test_run_seed_changes_the_step_draws_and_the_default_keeps_the_spec_seed(poisson):
    model, ref = poisson
    assert model.program.seed == 7
    np.testing.assert_array_equal(model.run(seed=7)["spikes.i"], ref["spikes.i"])
    other = model.run(seed=8)
    assert len(other["spikes.i"]) > 0 and not np.array_equal(other["spikes.i"], ref["spikes.i"])
    assert model.get_state()["P/rng_seed"].tolist() == [8]
    seeds = [np.array_equal(model.run(seed=s, steps=2000)["spikes.t"], model.run(seed=s + 1, steps=2000)["spikes.t"])
             for s in (100, 2 ** 40)]
    assert seeds == [False, False]


@pytest.mark.parametrize("backend, options", [("onnxruntime", {}), ("torch", {}), ("tvm", {"strict": True})])
def test_a_run_seed_gives_the_same_spikes_on_every_backend(poisson, backend, options):
    model, _ = poisson
    want = model.run(seed=12345, steps=3000)
    got = model.run(seed=12345, steps=3000, backend=backend, **options)
    np.testing.assert_array_equal(got["spikes.i"], want["spikes.i"])
    np.testing.assert_array_equal(got["spikes.t"], want["spikes.t"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_run_continues_the_streams(backend):
    """``Model.run(resume=True)`` twice equals one run as long as both (batch of 2, seed 5)."""
    model = nspec.load(str(POISSON))
    whole = model.run(seed=5, steps=3000, batch=2, backend="reference")
    first = model.run(seed=5, steps=1000, batch=2, backend=backend)
    second = model.run(steps=2000, batch=2, backend=backend, resume=True)
    assert len(whole["spikes.i"]) > 0
    joined_t = np.concatenate([first["spikes.t"], second["spikes.t"] + 1000 * model.dt])
    np.testing.assert_array_equal(np.concatenate([first["spikes.i"], second["spikes.i"]]), whole["spikes.i"])
    trials = np.concatenate([first["spikes.trial"], second["spikes.trial"]])
    np.testing.assert_array_equal(trials, whole["spikes.trial"])
    np.testing.assert_allclose(joined_t, whole["spikes.t"], rtol=0, atol=1e-12)
    assert model.get_state()["P/step_count"].tolist() == [3000, 3000]


def test_a_progress_run_in_chunks_equals_one_run():
    model = nspec.load(str(POISSON))
    whole = model.run(seed=3, steps=4000)
    chunked = model.run(seed=3, steps=4000, progress=True)  # 50 chunks, state carried between them
    np.testing.assert_array_equal(chunked["spikes.i"], whole["spikes.i"])
    np.testing.assert_array_equal(chunked["spikes.t"], whole["spikes.t"])


@pytest.mark.parametrize("kwargs, message", [
    ({"resume": True}, "has not run yet"),
    ({"resume": True, "seed": 3, "ran": True}, "give seed= to a fresh run"),
    ({"resume": True, "batch": 2, "ran": True}, "batch size 1, this run asks for 2"),
])
def test_resume_is_refused_when_it_cannot_continue(kwargs, message):
    model = nspec.load(str(POISSON))
    if kwargs.pop("ran", False):
        model.run(steps=10)
    with pytest.raises(ValueError, match=message):
        model.run(steps=10, **kwargs)


def test_cli_seed_changes_the_step_draws_and_progress_chunks_continue_them(tmp_path, capsys):
    def spikes(*args):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}.npz"
        assert main(["run", str(POISSON), "--steps", "3000", "-o", str(out), *args]) == 0
        capsys.readouterr()
        with np.load(out) as data:
            return data["spikes.i"], data["spikes.t"]
    default, same, other = spikes("--quiet"), spikes("--quiet", "--seed", "7"), spikes("--quiet", "--seed", "8")
    chunked = spikes("--seed", "8")  # with the progress bar: the run goes in 50 chunks
    assert len(default[0]) > 0
    np.testing.assert_array_equal(same[0], default[0])
    assert not np.array_equal(other[0], default[0])
    for got, want in zip(chunked, other):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- step counters past 2^32
@pytest.mark.parametrize("backend", BACKENDS)
def test_draws_past_two_to_the_32_steps_do_not_repeat(expected, backend):
    """Across the counter's 2^32 boundary every backend draws the oracle's numbers, and step
    2^32 + t draws other numbers than step t (the high word is in the key)."""
    p, ref = expected
    start = np.full(3, 2 ** 32 - 5, np.int64)
    got = run(backend, p, start, 10)
    np.testing.assert_array_equal(got.state["k"], [2 ** 32 + 5] * 3)
    for name, shape, stream in [("u0", (), 0), ("u1", (5,), 1), ("u2", (2, 3), 2)]:
        direct = np.stack([uniform_numpy(42, stream, 3, start + t, shape) for t in range(10)], axis=1)
        np.testing.assert_array_equal(got.outputs[name], direct, err_msg=f"{backend} {name}")
        assert not np.array_equal(got.outputs[name][:, 5:], ref.outputs[name][:, :5])  # steps 2^32 .. 2^32 + 4


def test_the_key_is_distinct_for_every_stream_and_high_word():
    """With S sites the second key word is stream + S * step_hi: every (stream, step_hi) pair draws
    its own numbers at the same low word, up to the limit where S * step_hi would wrap."""
    zero = np.zeros(1, np.int64)
    draws = {(stream, h): uniform_numpy(9, stream, 2, zero + h * 2 ** 32, (64,)).tobytes()
             for stream in range(2) for h in range(3)}
    assert len(set(draws.values())) == len(draws)
    assert counter_limit(1) == COUNTER_MAX and counter_limit(2) == COUNTER_MAX
    assert counter_limit(3) == 2 ** 32 * 1431655765 < COUNTER_MAX
    assert counter_limit(2 ** 31 + 1) == 2 ** 32 and counter_limit(2 ** 32) == 2 ** 32
    assert counter_limit(1000) == 2 ** 32 * (2 ** 32 // 1000)


def test_a_run_past_two_to_the_32_steps_continues_from_a_set_counter():
    """Started 1000 steps before 2^32, a run's last 1000 steps draw other spikes than a run's first
    1000 steps (with the counter's low word alone they would repeat them)."""
    model = nspec.load(str(POISSON))
    model.run(steps=1)
    state = model.get_state()
    state["P/step_count"] = np.array([2 ** 32 - 1000])
    model.set_state(state)
    late = model.run(steps=2000, resume=True)
    assert model.get_state()["P/step_count"].tolist() == [2 ** 32 + 1000]
    early = model.run(steps=1000)
    after = late["spikes.t"] >= 1000 * model.dt - 1e-9
    assert after.sum() > 0 and len(early["spikes.i"]) > 0
    assert not np.array_equal(late["spikes.i"][after], early["spikes.i"])


@pytest.mark.parametrize("counter, steps, message", [
    (COUNTER_MAX - 10, 20, "must stay below 9223372036854775807"),
    (-1, 5, "start below 0"),
])
def test_a_run_past_the_counter_limit_is_refused_before_it_starts(counter, steps, message):
    model = nspec.load(str(POISSON))
    model.run(steps=1)
    state = model.get_state()
    state["P/step_count"] = np.array([counter])
    model.set_state(state)
    with pytest.raises(CounterError, match=message) as info:
        model.run(steps=steps, resume=True)
    assert "poisson.nspec:7:" in str(info.value) and "random draws" in str(info.value)
    with pytest.raises(CounterError, match=message):
        for _ in range(steps):
            model.step()


def test_with_three_sites_the_limit_is_where_the_keys_would_wrap(tmp_path):
    """Three draw sites: stream + 3 * step_hi stays below 2^32 for step_hi < floor(2^32 / 3), so a
    run is refused 5 steps before the counter reaches 2^32 * floor(2^32 / 3)."""
    model = load_text(tmp_path, DRAWS)
    limit = counter_limit(3)
    model.run(steps=1)
    model.set_state({"step_count": np.array([limit - 5])})
    model.run(steps=5, resume=True)  # the last step drawn is limit - 1
    model.set_state({"step_count": np.array([limit - 5])})
    message = f"draw at step {limit}; .* must stay below {limit} .*2\\^32 \\* floor\\(2\\^32 / 3\\)"
    with pytest.raises(CounterError, match=message):
        model.run(steps=6, resume=True)
