"""Threefry-2x32 (20 rounds), the counter-based generator of Random123 and JAX, written once over
a small table of word operations so that every backend computes the same bits.

A draw is a pure function of (key, counter): ``threefry2x32(words, k0, k1, c0, c1) -> (x0, x1)``,
two 32-bit words.  ``Words`` says how a backend adds (mod 2^32), xors and rotates its own values
(NumPy uint32 arrays here; torch and ONNX int64 masked to 32 bits; TIR uint32 expressions) and
how it makes a constant, so the rounds and the key schedule below are the only copy of the
algorithm.  Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011) give the
known answers that ``tests/test_random_streams.py`` checks.

``UNIFORM`` draws use the key (seed, stream) and the counter (step, sample * size + element); the
first word becomes an f32 in [0, 1) as ``(x0 >> 8) * 2^-24``, exact in f32, so every backend
gives the same float.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MASK = 0xFFFFFFFF
PARITY = 0x1BD11BDA  # Threefish's key-schedule constant, 32-bit version
ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
ROUNDS = 20
UNIFORM_SHIFT = 8          # keep the top 24 bits: an f32 holds them exactly
UNIFORM_SCALE = 2.0 ** -24


@dataclass(frozen=True, slots=True)
class Words:
    """One backend's 32-bit word arithmetic: ``add`` (mod 2^32), ``xor``, ``rotl(x, r)`` and
    ``const(value)`` (a word constant the other three accept)."""

    add: Callable[[Any, Any], Any]
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


def _rotl_u32(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


NUMPY_WORDS = Words(add=lambda a, b: a + b, xor=lambda a, b: a ^ b, rotl=_rotl_u32,
                    const=lambda v: np.uint32(v & MASK))


def uniform_numpy(seed: int, stream: int, step: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The oracle's draws: f32 ``[len(step), *shape]`` for per-sample step counters ``step``."""
    size = int(np.prod(shape))
    with np.errstate(over="ignore"):
        c0 = (np.asarray(step, np.int64) & MASK).astype(np.uint32)[:, None]
        sample = np.arange(len(c0), dtype=np.uint64)[:, None]
        c1 = ((sample * np.uint64(size) + np.arange(size, dtype=np.uint64)[None, :]) & np.uint64(MASK)).astype(np.uint32)
        x0, _ = threefry2x32(NUMPY_WORDS, np.uint32(seed & MASK), np.uint32(stream & MASK), c0, c1)
    u = (x0 >> np.uint32(UNIFORM_SHIFT)).astype(np.float32) * np.float32(UNIFORM_SCALE)
    return u.reshape((len(c0),) + tuple(shape))


__all__ = ["MASK", "PARITY", "ROTATIONS", "ROUNDS", "UNIFORM_SHIFT", "UNIFORM_SCALE", "Words", "threefry2x32",
           "NUMPY_WORDS", "uniform_numpy"]
