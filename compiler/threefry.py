"""Threefry-2x32 (20 rounds), the counter-based generator of Random123 and JAX, written once over
a small table of word operations so that every backend computes the same bits.

A draw is a pure function of (key, counter): ``threefry2x32(words, k0, k1, c0, c1) -> (x0, x1)``,
two 32-bit words.  ``Words`` says how a backend adds (mod 2^32), xors and rotates its own values
(NumPy uint32 arrays here; torch and ONNX int64 masked to 32 bits; TIR uint32 expressions) and
how it makes a constant, so the rounds and the key schedule below are the only copy of the
algorithm.  Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011) give the
known answers that ``tests/test_random_streams.py`` checks.

The key and counter of a ``UNIFORM`` draw (``draw_word``, the only copy of the scheme):

* key ``(seed, stream + streams * step_hi)``: ``seed`` is the low word of the run's seed, read at
  run time from the hidden state ``rng_seed``; ``stream`` numbers the draw site among the
  program's ``streams`` sites; ``step_hi`` is the high word of the step counter, so the second
  key word is distinct for every (stream, step_hi) pair while ``streams * step_hi < 2^32``;
* counter ``(step_lo, sample * size + element)``: the low word of the step counter, and the
  element's place in the batch.

A run whose step counter would reach ``counter_limit(streams)`` (``2^32 * floor(2^32 / streams)``
steps, and never past the i64 counter's own range) is refused before it starts
(``counter_problem``).  The first word becomes an f32 in [0, 1) as ``(x0 >> 8) * 2^-24``, exact
in f32, so every backend gives the same float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .ir import Graph, Op
from .ops import STEP_DRAWS

MASK = 0xFFFFFFFF
PARITY = 0x1BD11BDA  # Threefish's key-schedule constant, 32-bit version
ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
ROUNDS = 20
UNIFORM_SHIFT = 8          # keep the top 24 bits: an f32 holds them exactly
UNIFORM_SCALE = 2.0 ** -24
SEED_STATE = "rng_seed"    # the hidden i64 state holding the run's seed, read by every draw site
COUNTER_MAX = 2 ** 63 - 1  # the i64 step counter's own range


@dataclass(frozen=True, slots=True)
class Words:
    """One backend's 32-bit word arithmetic: ``add`` and ``mul`` (mod 2^32), ``xor``, ``rotl(x, r)``
    and ``const(value)`` (a word constant the others accept)."""

    add: Callable[[Any, Any], Any]
    mul: Callable[[Any, Any], Any]
    xor: Callable[[Any, Any], Any]
    rotl: Callable[[Any, int], Any]
    const: Callable[[int], Any]


def threefry2x32(w: Words, k0, k1, c0, c1) -> tuple[Any, Any]:
    """The two words Threefry-2x32-20 gives for key (k0, k1) and counter (c0, c1)."""
    ks = (k0, k1, w.xor(w.xor(k0, k1), w.const(PARITY)))
    x0, x1 = w.add(c0, ks[0]), w.add(c1, ks[1])
    for r in range(ROUNDS):
        x0 = w.add(x0, x1)
        x1 = w.xor(w.rotl(x1, ROTATIONS[r % 8]), x0)
        if r % 4 == 3:  # key injection every four rounds
            i = r // 4 + 1
            x0 = w.add(x0, ks[i % 3])
            x1 = w.add(w.add(x1, ks[(i + 1) % 3]), w.const(i))
    return x0, x1


def draw_word(w: Words, seed, step_lo, step_hi, element, stream: int, streams: int):
    """The first Threefry word of one draw: key (seed, stream + streams * step_hi), counter
    (step_lo, element), all words of ``w``."""
    k1 = w.add(w.const(stream), w.mul(w.const(streams), step_hi))
    x0, _ = threefry2x32(w, seed, k1, step_lo, element)
    return x0


def counter_limit(streams: int) -> int:
    """The first step counter a program with ``streams`` draw sites cannot draw at: past it two
    (stream, step_hi) pairs would share a key."""
    return min((1 << 32) * ((1 << 32) // max(streams, 1)), COUNTER_MAX)


def _rotl_u32(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


NUMPY_WORDS = Words(add=lambda a, b: a + b, mul=lambda a, b: a * b, xor=lambda a, b: a ^ b, rotl=_rotl_u32,
                    const=lambda v: np.uint32(v & MASK))


def uniform_numpy(seed, stream: int, streams: int, step, shape: tuple[int, ...]) -> np.ndarray:
    """The oracle's draws: f32 ``[len(step), *shape]`` for per-sample step counters ``step`` and
    seeds ``seed`` (one per sample, or one for all)."""
    size = int(np.prod(shape))
    step = np.asarray(step, np.int64).reshape(-1, 1)
    words = lambda x: (np.asarray(x, np.int64) & MASK).astype(np.uint32)  # noqa: E731
    with np.errstate(over="ignore"):
        sample = np.arange(len(step), dtype=np.uint64)[:, None]
        element = sample * np.uint64(size) + np.arange(size, dtype=np.uint64)[None, :]
        c1 = (element & np.uint64(MASK)).astype(np.uint32)
        seed = np.broadcast_to(words(seed).reshape(-1, 1), step.shape)
        x0 = draw_word(NUMPY_WORDS, seed, words(step), words(step >> 32), c1, stream, streams)
    u = (x0 >> np.uint32(UNIFORM_SHIFT)).astype(np.float32) * np.float32(UNIFORM_SCALE)
    return u.reshape((len(step),) + tuple(shape))


# ---------------------------------------------------------------- the draw sites of a program
@dataclass(frozen=True, slots=True)
class DrawSites:
    """What a run needs to know about a step graph's draws: the states holding step counters and
    seeds that ``UNIFORM`` and ``NORMAL`` nodes read, how many sites there are, and the first site's node."""

    counters: tuple[str, ...]
    seeds: tuple[str, ...]
    streams: int
    first: int | None


def draw_sites(step: Graph) -> DrawSites:
    """The draw sites of a step graph (draws are refused inside LOOP bodies, so only its top level)."""
    counters: dict[str, None] = {}
    seeds: dict[str, None] = {}
    uniforms = [i for i, n in enumerate(step.nodes) if n.op in STEP_DRAWS]
    for i in uniforms:
        for j, names in zip(step.nodes[i].inputs, (counters, seeds)):
            if step.nodes[j].op is Op.ARG and step.nodes[j].attr("role") == "state":
                names[step.nodes[j].attr("name")] = None
    streams = max((step.nodes[i].attrs.streams for i in uniforms), default=0)
    return DrawSites(tuple(counters), tuple(seeds), streams, uniforms[0] if uniforms else None)


def counter_problem(step: Graph, state: Mapping[str, Any], steps: int) -> str | None:
    """Why a run of ``steps`` steps from ``state`` cannot draw distinct numbers at every step (a
    step counter outside [0, counter_limit)), located at the first draw site; None when it can."""
    sites = draw_sites(step)
    if sites.first is None:
        return None
    limit = counter_limit(sites.streams)
    for name in sites.counters:
        counter = np.asarray(state[name], np.int64)
        if counter.size == 0:
            continue
        lo, hi = int(counter.min()), int(counter.max())
        if lo < 0 or hi + int(steps) > limit:
            where = step.nodes[sites.first].span
            what = "start below 0" if lo < 0 else f"draw at step {hi + int(steps) - 1}"
            return (f"{where}: random draws: a run of {steps} steps from step counter {name} = "
                    f"{lo if lo < 0 else hi} would {what}; with {sites.streams} draw site(s) the step counter "
                    f"must stay below {limit} (the lesser of 2^32 * floor(2^32 / {sites.streams}), past which "
                    f"keys would repeat, and 2^63 - 1, the counter's range)")
    return None


__all__ = ["MASK", "PARITY", "ROTATIONS", "ROUNDS", "UNIFORM_SHIFT", "UNIFORM_SCALE", "SEED_STATE", "COUNTER_MAX",
           "Words", "threefry2x32", "draw_word", "counter_limit", "NUMPY_WORDS", "uniform_numpy", "DrawSites",
           "draw_sites", "counter_problem"]
