"""S-KAN's three training phases on symbolic toys and its basis selection (``specs/seeds/skan.nspec``).

    python bench/skan.py [--seeds 5] [--out docs/figures]

1. Fits: f(x) = exp(-x^2) and f(x, y) = sin(pi x) + y^2 on [-1, 1] (1024 training points, 1000 held
   out), a depth-1 S-KAN with the default pool (8 functions per basis), phases of 300, 300, 50 Adam
   steps (lr 0.03, batch 256).  Prints the held-out RMSE after each phase next to the baseline
   (predicting the mean: the target's std) and the basis chosen per edge.
2. Selection: y = T_5(tanh x_0) + [RBF_1 + RBF_3](x_1) + Fourier_5(x_2) (6 functions per basis on
   [-2, 2]) for ``--seeds`` data/training seeds; the choice per edge after pruning, with the full
   phase trained as the spec's ``swapped`` output asks (every candidate standing in for its edge
   alone) and, for comparison, as a plain softmax mixture of the candidates (mse on y).  Also the
   least-squares RMSE of each term by each basis alone (how distinct the terms are).

Draws the fits, the selection weights per phase and edge, and the loss curves to ``<out>/skan.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from skan_oracle import PHASES, POOL, bases, predict, selection, train_phases  # noqa: E402

SELECT_H = dict(n_in=3, n_out=1, n_basis=6, lo=-2.0, hi=2.0)
TERMS = ("T_5(tanh x0)", "RBF_1 + RBF_3 (x1)", "Fourier_5(x2)")


def selection_data(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (1024, 3)).astype(np.float32)
    b = bases(x, SELECT_H)
    terms = np.stack([b[:, 0, 1, 5], b[:, 1, 2, 1] + b[:, 1, 2, 3], b[:, 2, 3, 5]], axis=1)
    return x, terms


def distinctness() -> np.ndarray:
    """[term, basis]: least-squares RMSE of each term by each basis's 6 functions alone / the term's std."""
    x, terms = selection_data(0)
    b = bases(x, SELECT_H)
    out = np.zeros((3, len(POOL)))
    for i in range(3):
        for s in range(len(POOL)):
            c, *_ = np.linalg.lstsq(b[:, i, s], terms[:, i], rcond=None)
            out[i, s] = np.sqrt(np.mean((b[:, i, s] @ c - terms[:, i]) ** 2)) / terms[:, i].std()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="docs/figures")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)

    fits = {}
    for name, n_in, f in [("exp(-x^2)", 1, lambda v: np.exp(-v[:, 0] ** 2)),
                          ("sin(pi x) + y^2", 2, lambda v: np.sin(np.pi * v[:, 0]) + v[:, 1] ** 2)]:
        h = dict(n_in=n_in, n_out=1)
        rng = np.random.default_rng(0)
        x, x_test = (rng.uniform(-1, 1, (n, n_in)).astype(np.float32) for n in (1024, 1000))
        t0 = time.time()
        res = train_phases({"x": x, "target": f(x)[:, None].astype(np.float32)}, h)
        rmse = {ph: float(np.sqrt(np.mean((predict(res[ph][0], x_test, h, ph)[:, 0] - f(x_test)) ** 2)))
                for ph in PHASES}
        choice = [POOL[s] for s in np.argmax(res["pruned"][0]["layers.0.select"][0], -1)]
        print(f"{name}: baseline (std) {f(x_test).std():.4f}; held-out RMSE " +
              ", ".join(f"{ph} {v:.4f}" for ph, v in rmse.items()) + f"; chosen {choice} ({time.time() - t0:.0f} s)")
        fits[name] = (h, res, f, rmse)

    table = distinctness()
    print("least-squares RMSE / std of each term by each basis alone (" + ", ".join(POOL) + "):")
    for term, row in zip(TERMS, table):
        print(f"  {term:20s} " + " ".join(f"{v:.3f}" for v in row))

    picks, first = {"swapped": [], "mixture": []}, None
    for seed in range(args.seeds):
        x, terms = selection_data(seed)
        data = {"x": x, "target": terms.sum(1, keepdims=True).astype(np.float32)}
        for mode in picks:
            res = train_phases(data, SELECT_H, seed=seed, full_loss=mode)
            chosen = [int(s) for s in np.argmax(res["pruned"][0]["layers.0.select"][0], -1)]
            picks[mode].append(chosen)
            if seed == 0 and mode == "swapped":
                first = res
        print(f"seed {seed}: chosen swapped {picks['swapped'][-1]}, plain mixture {picks['mixture'][-1]}", flush=True)
    for mode, rows in picks.items():
        right = np.array(rows) == [1, 2, 3]
        print(f"{mode:8s} full phase: per edge right {right.mean(0)} (chance 0.25); all three right "
              f"{right.all(1).sum()}/{len(rows)} (chance 1/64)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    grid = np.linspace(-1, 1, 201, dtype=np.float32)[:, None]
    h, res, f, rmse = fits["exp(-x^2)"]
    ax[0, 0].plot(grid[:, 0], f(grid), "k", lw=3, alpha=0.3, label="exp(-x^2)")
    for ph in PHASES:
        ax[0, 0].plot(grid[:, 0], predict(res[ph][0], grid, h, ph)[:, 0], label=f"{ph}: RMSE {rmse[ph]:.4f}")
    ax[0, 0].set_title("exp(-x^2): the fit after each phase\n(held-out RMSE; baseline 0.20)")
    ax[0, 0].legend(fontsize=8)
    h, res, f, rmse = fits["sin(pi x) + y^2"]
    for i, (label, col) in enumerate([("sin(pi x)", 0), ("y^2", 1)]):
        g = np.zeros((201, 2), np.float32)
        g[:, col] = grid[:, 0]
        base = predict(res["pruned"][0], np.zeros((1, 2), np.float32), h, "pruned")[0, 0]
        edge = predict(res["pruned"][0], g, h, "pruned")[:, 0] - base
        want = f(g) - f(np.zeros((1, 2)))[0]
        ax[0, 1].plot(grid[:, 0], want, "k", lw=3, alpha=0.3)
        ax[0, 1].plot(grid[:, 0], edge, label=f"edge {label} (pruned)")
    ax[0, 1].set_title(f"sin(pi x) + y^2: pruned edges (grey: truth)\n"
                       f"held-out RMSE {rmse['pruned']:.4f}, baseline 0.76")
    ax[0, 1].legend(fontsize=8)
    for ph in PHASES:
        ax[0, 2].semilogy(res[ph][1], label=ph)
    ax[0, 2].set_title("sin(pi x) + y^2: training loss per phase\n(full: mse of swapped; others: mse of y)")
    ax[0, 2].set_xlabel("Adam step")
    ax[0, 2].legend(fontsize=8)
    for e in range(3):
        a = np.stack([selection(first[ph][0]["layers.0.select"], dict(SELECT_H, phase=ph))[0, e] for ph in PHASES])
        width = 0.25
        for p, ph in enumerate(PHASES):
            ax[1, e].bar(np.arange(4) + (p - 1) * width, a[p], width, label=ph)
        ax[1, e].set_xticks(range(4), POOL)
        ax[1, e].set_ylim(0, 1.05)
        ax[1, e].axhline(0.25, color="grey", ls=":", lw=1)
        ax[1, e].set_title(f"selection softmax per phase, edge {TERMS[e]}\n(dotted: 1/4, the even start)")
        ax[1, e].legend(fontsize=8)
    fig.suptitle("S-KAN (specs/seeds/skan.nspec): three-phase training and basis selection (seed 0)")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "skan.png", dpi=90)
    print(f"wrote {out / 'skan.png'}")


if __name__ == "__main__":
    main()
