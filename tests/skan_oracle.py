"""The S-KAN layer of ``specs/seeds/skan.nspec`` written independently in float64 NumPy/SciPy, and the
three-phase training used by tests/test_skan.py and bench/skan.py.

The bases are built from library definitions, not from the spec's recurrences: the B-splines by
``scipy.interpolate.BSpline.design_matrix`` on the extended uniform knot vector, the Chebyshev
polynomials by ``numpy.polynomial.chebyshev.chebvander``; the RBF and Fourier bases are one line each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seeds" / "skan.nspec"
POOL = ("bspline", "chebyshev", "rbf", "fourier")
DEFAULTS = dict(n_in=2, n_hidden=4, n_out=1, depth=1, n_basis=8, spline_order=3, lo=-1.0, hi=1.0, tau=0.3,
                phase="full", select_per="edge")


def bases(v, h: dict) -> np.ndarray:
    """[N, w_in] -> [N, w_in, 4, n_basis]: the pool's functions at every input."""
    from numpy.polynomial.chebyshev import chebvander
    from scipy.interpolate import BSpline

    h = {**DEFAULTS, **h}
    v = np.asarray(v, np.float64)
    n, k, lo, hi = h["n_basis"], h["spline_order"], h["lo"], h["hi"]
    grid = n - k
    step = (hi - lo) / grid
    # the grid extended by k intervals each side carries the n functions; k more knots each side make
    # [lo - k step, hi + k step] SciPy's base interval, so columns k .. k + n - 1 are the n functions
    # there, partial sums near the ends included (as Cox-de Boor gives them); outside it they are 0
    knots = lo + step * np.arange(-2 * k, grid + 2 * k + 1)
    flat = v.reshape(-1)
    inside = (flat >= lo - k * step) & (flat < hi + k * step)
    spline = np.zeros((flat.size, n))
    if inside.any():
        spline[inside] = BSpline.design_matrix(flat[inside], knots, k).toarray()[:, k:k + n]
    cheb = chebvander(np.tanh(flat), n - 1)
    centres = np.linspace(lo, hi, n)
    rbf = np.exp(-((flat[:, None] - centres) / (centres[1] - centres[0])) ** 2)
    j = np.arange(n)
    k_of = (j + 1) // 2  # 1, cos w v, sin w v, cos 2 w v, sin 2 w v, ...
    wv = 2 * np.pi / (hi - lo) * k_of * flat[:, None]
    fourier = np.where(j % 2 == 1, np.cos(wv), np.sin(wv)) + (j == 0)
    return np.stack([spline, cheb, rbf, fourier], axis=1).reshape(*v.shape, len(POOL), n)


def selection(logits, h: dict) -> np.ndarray:
    """alpha [w_out, w_in or 1, 4] from a layer's logits, as the phase defines it."""
    h = {**DEFAULTS, **h}
    z = np.asarray(logits, np.float64)
    if z.ndim == 2:  # one selection per output node, shared by its incoming edges
        z = z[:, None, :]
    if h["phase"] == "pruned":
        return np.eye(len(POOL))[z.argmax(-1)]
    z = z / (h["tau"] if h["phase"] == "selective" else 1.0)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(sd: dict, x, h: dict) -> np.ndarray:
    """y [N, n_out] in float64: u_o = sum_i sum_s alpha_ois sum_k c_oisk B_sk(v_i), layer after layer."""
    h = {**DEFAULTS, **h}
    v = np.asarray(x, np.float64)
    for layer in range(h["depth"]):
        coef = np.asarray(sd[f"layers.{layer}.coef"], np.float64)
        alpha = selection(sd[f"layers.{layer}.select"], h)
        phi = np.einsum("nisk,oisk->nois", bases(v, h), coef)
        v = np.einsum("ois,nois->no", np.broadcast_to(alpha, phi.shape[1:]), phi)
    return v


def random_state_dict(h: dict, rng) -> dict:
    """Random coefficients and logits (not the init's zeros, which would hide a wrong selection axis)."""
    h = {**DEFAULTS, **h}
    sd = {}
    for layer in range(h["depth"]):
        w_in = h["n_in"] if layer == 0 else h["n_hidden"]
        w_out = h["n_out"] if layer == h["depth"] - 1 else h["n_hidden"]
        sd[f"layers.{layer}.coef"] = rng.normal(0, 0.5, (w_out, w_in, len(POOL), h["n_basis"]))
        shape = (w_out, w_in, len(POOL)) if h["select_per"] == "edge" else (w_out, len(POOL))
        sd[f"layers.{layer}.select"] = rng.normal(0, 1.0, shape)
    return {k: v.astype(np.float32) for k, v in sd.items()}


# ---------------------------------------------------------------- three-phase training
PHASES = ("full", "selective", "pruned")


def train_phases(data: dict, h: dict, steps=(300, 300, 50), lr=0.03, batch_size=256, seed=0,
                 full_loss: str = "swapped") -> dict:
    """Train ``skan.nspec`` on ``data`` ({"x": [N, n_in], "target": [N, n_out]}) phase after phase: each
    phase is the spec compiled with ``phase`` set, started from the weights the previous phase ended
    with (a fresh Adam each phase).  The full phase's loss is ``mse:swapped:target`` (every candidate of
    the last layer standing in for its edge alone, the target broadcast to match), the others'
    ``mse:y:target`` (``full_loss="mixture"``: the full phase's too, the plain DARTS-style mixture, for
    comparison).  Returns {phase: (weights, losses)}."""
    import nspec
    from nspec.runtime.train import train

    h = {**DEFAULTS, **h}
    w_last = h["n_in"] if h["depth"] == 1 else h["n_hidden"]
    target = np.asarray(data["target"], np.float32)
    swapped = {"x": data["x"], "target": np.ascontiguousarray(
        np.broadcast_to(target[:, :, None, None], (len(target), h["n_out"], w_last, len(POOL))))}
    weights, out = None, {}
    for phase, n in zip(PHASES, steps):
        model = nspec.load(SPEC, **{**h, "phase": phase})
        if weights is not None:
            model.load_weights(weights)
        # the full phase fits every last-layer candidate standing in for its edge alone (and the
        # mixture inside it); the later phases fit y
        loss, arrays = ("mse:swapped:target", swapped) if phase == "full" and full_loss == "swapped" \
            else ("mse:y:target", data)
        hist = train(model, arrays, loss, steps=n, batch_size=batch_size, lr=lr, seed=seed, progress=False)
        weights = {k: np.array(v) for k, v in model.state_dict().items()}
        out[phase] = (weights, hist.losses)
    return out


def predict(weights: dict, x, h: dict, phase: str) -> np.ndarray:
    """The spec's y on the reference interpreter for ``weights`` in ``phase``: [N, n_out]."""
    import nspec

    model = nspec.load(SPEC, **{**h, "phase": phase})
    model.load_weights(weights)
    return np.asarray(model.run(inputs={"x": np.asarray(x, np.float32)})["y"]).reshape(len(x), -1)
