"""The continual-learning protocol of HLOP (``specs/seeds/hlop.nspec``) at a small size, shared by
``tests/test_hlop.py`` and ``bench/hlop.py``.

Benchmark: permuted synthetic digits.  Ten classes of 8 x 8 "digits", each a fixed drawing of three
strokes (blurred line segments); a sample is its class's drawing shifted by up to one pixel, with
pixel noise, clipped to [0, 1].  Task 0 shows the pixels as drawn, task j > 0 under a fixed random
permutation of the 64 pixels, with the same ten labels and one shared readout (domain-incremental,
as permuted MNIST): chance is 1/10 on every task.

Protocol, per task j in order: train the classifier (SGD on the cross-entropy of the last step's
logits, ``time_steps = T``) with the current subspaces H; test every task; then (HLOP only, not after
the last task) learn the task's subspaces with the spec's ``Lateral`` system: new rows (orthonormal,
orthogonal to the old rows) are plastic, the old rows frozen, ``epochs`` passes over the task's
training inputs (x for ``H_in``, the hidden rates r_T for ``H_hidden``) in mini-batches of ``m``.
Sequential training is the same loop with H = 0 throughout (projection off, no Hebbian phase).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import nspec
from nspec.runtime.train import predict, train

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "hlop.nspec"
CLASSES = 10


# ---------------------------------------------------------------- the benchmark
def _drawings(rng, side: int) -> np.ndarray:
    """Ten [side, side] drawings in [0, 1], three blurred strokes each."""
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    out = np.zeros((CLASSES, side, side))
    for c in range(CLASSES):
        for _ in range(3):
            a, b = rng.uniform(0.5, side - 1.5, 2), rng.uniform(0.5, side - 1.5, 2)
            for s in np.linspace(0, 1, 4 * side):
                py, px = a + s * (b - a)
                out[c] = np.maximum(out[c], np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * 0.6 ** 2)))
    return out


def permuted_digits(n_tasks: int, n_train: int, n_test: int, seed: int = 0, side: int = 8, noise: float = 0.05):
    """``n_tasks`` tasks, each ``(x_train [n_train, side^2], y_train, x_test, y_test)``, float32 / int64."""
    rng = np.random.default_rng(seed)
    drawings = _drawings(rng, side)
    perms = [np.arange(side * side)] + [rng.permutation(side * side) for _ in range(n_tasks - 1)]

    def draw(n):
        y = rng.integers(0, CLASSES, n)
        shifts = rng.integers(-1, 2, (n, 2))
        x = np.stack([np.roll(drawings[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
        x = np.clip(x + noise * rng.normal(size=x.shape), 0, 1).reshape(n, -1)
        return x.astype(np.float32), y

    tasks = []
    for p in perms:
        (xa, ya), (xb, yb) = draw(n_train), draw(n_test)
        tasks.append((xa[:, p], ya, xb[:, p], yb))
    return tasks


# ---------------------------------------------------------------- the protocol
def orthonormality_error(H: np.ndarray) -> float:
    """||H H^T - I||_F over the nonzero rows of H (0 for no rows)."""
    rows = H[np.abs(H).sum(axis=1) > 0].astype(np.float64)
    return float(np.linalg.norm(rows @ rows.T - np.eye(len(rows)))) if len(rows) else 0.0


def grow(H: np.ndarray, used: int, new: int, rng) -> np.ndarray:
    """H with rows used..used+new set to an orthonormal basis orthogonal to rows 0..used-1."""
    old = H[:used].astype(np.float64)
    R = rng.normal(size=(H.shape[1], new))
    if used:
        R -= old.T @ np.linalg.lstsq(old.T, R, rcond=None)[0]   # off the old rows' span
    Q = np.linalg.qr(R)[0]
    out = H.copy()
    out[used:used + new] = Q.T
    return out


@dataclass
class Result:
    """``acc[i, j]``: accuracy on task i after training task j; ``orth``: ||H H^T - I||_F of (H_in,
    H_hidden) after each task's Hebbian phase; ``trace``: the same after every Hebbian mini-batch."""

    acc: np.ndarray
    orth: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    H: dict = field(default_factory=dict)

    def old_tasks_accuracy(self) -> float:
        """Mean accuracy over tasks 0..n-2 after the last task."""
        return float(self.acc[:-1, -1].mean())

    def backward_transfer(self) -> float:
        """BWT: mean over tasks 0..n-2 of (accuracy after the last task - accuracy right after its own)."""
        n = self.acc.shape[0]
        return float(np.mean([self.acc[i, -1] - self.acc[i, i] for i in range(n - 1)]))


def accuracy(module, x, y, T: int) -> float:
    return float(np.mean(predict(module, {"x": x}, time_steps=T)["logits"][:, -1].argmax(-1) == y))


def run(tasks, hlop: bool, rows_in: int = 10, rows_h: int = 10, steps: int = 80, lr: float = 1.0,
        batch_size: int = 32, hebbian_epochs: int = 8, seed: int = 0, **hyper) -> Result:
    """The protocol over ``tasks`` (``permuted_digits``); ``hlop=False`` is plain sequential training."""
    n = len(tasks)
    hyper = dict(dict(T=4, m=32, k_in=rows_in * (n - 1), k_h=rows_h * (n - 1)), **hyper)
    model = nspec.load(SPEC, **hyper)
    lateral = nspec.load(SPEC, target="Lateral", **hyper)
    T, m = hyper["T"], hyper["m"]
    model.params = model.initial(1, seed)[0]
    lateral.params = lateral.initial(1, seed)[0]
    rng = np.random.default_rng(seed)
    result = Result(np.zeros((n, n)))
    for j, (x, y, _, _) in enumerate(tasks):
        hist = train(model, {"x": x, "label": y}, "cross_entropy:logits:label", optimizer="sgd", lr=lr,
                     steps=steps, batch_size=batch_size, time_steps=T, seed=seed + j, progress=False)
        for i, (_, _, xt, yt) in enumerate(tasks):
            result.acc[i, j] = accuracy(hist.module, xt, yt, T)
        if not hlop or j == n - 1:
            continue
        rates = predict(hist.module, {"x": x}, time_steps=T)["rate"][:, -1]
        for layer, data, rows, key in (("lat_in", x, rows_in, "hidden/H"), ("lat_hidden", rates, rows_h, "readout/H")):
            lateral.params[f"{layer}/H0"] = grow(model.params[key], j * rows, rows, rng).astype(np.float32)
            plastic = np.zeros(hyper[f"k_{'in' if layer == 'lat_in' else 'h'}"], np.float32)
            plastic[j * rows:(j + 1) * rows] = 1
            lateral.params[f"{layer}/plastic"] = plastic
        batches = [rng.permutation(len(x))[: (len(x) // m) * m].reshape(-1, m) for _ in range(hebbian_epochs)]
        order = np.concatenate(batches)
        out = lateral.run(inputs={"x_in": x[order], "x_hidden": rates[order]}, steps=len(order))
        model.params["hidden/H"] = out["H_in"][-1]
        model.params["readout/H"] = out["H_hidden"][-1]
        result.trace += [(orthonormality_error(a), orthonormality_error(b)) for a, b in zip(out["H_in"], out["H_hidden"])]
        result.orth.append(result.trace[-1])
    result.H = {"in": model.params["hidden/H"], "hidden": model.params["readout/H"]}
    return result
