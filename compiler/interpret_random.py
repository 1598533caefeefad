"""The reference interpreter's rules for random draws: RANDOM (initial values from the run's
NumPy generator: uniform, normal, orthogonal as torch.nn.init.orthogonal_) and UNIFORM (the
counter-based Threefry stream that NORMAL also builds on)."""

from __future__ import annotations

import numpy as np

from .threefry import uniform_numpy

def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...], gain) -> np.ndarray:
    """torch.nn.init.orthogonal_: QR of a normal matrix, rows flattened as [shape[0], rest]."""
    rows = shape[0] if shape else 1
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def random_rule(node, xs, bs, ctx):
    from .interpret import EvaluationError  # here: interpret imports this module

    if ctx.rng is None:
        raise EvaluationError("RANDOM needs a random generator (it belongs in init graphs)")
    if any(bs):
        raise EvaluationError("RANDOM takes unbatched arguments (init graphs run per trial)")
    a, b = xs
    dist = node.attr("dist")
    if dist == "uniform":
        return ctx.rng.uniform(a, b, size=node.shape)
    if dist == "normal":
        return ctx.rng.normal(a, b, size=node.shape)
    if dist == "orthogonal":
        return _orthogonal(ctx.rng, node.shape, a)
    raise EvaluationError(f"unknown distribution {dist!r}")


def uniform_rule(node, xs, bs, ctx):
    """Threefry-2x32 on NumPy uint32 words (``threefry.uniform_numpy``); an unbatched counter is
    sample 0, and an unbatched seed is every sample's."""
    a = node.attrs
    step, seed = np.reshape(xs[0], -1), np.reshape(xs[1], -1)
    if bs[1] and not bs[0]:
        step = np.broadcast_to(step, seed.shape)
    u = uniform_numpy(seed, a.stream, a.streams, step, a.shape)
    return u if bs[0] or bs[1] else u[0]
