"""A pointer network learning to sort, and how far beyond its training lengths (``specs/seeds/pointer_net.nspec``).

    python bench/pointer_net.py [--hidden 32] [--steps 600] [--batch 128] [--lr 1e-2] [--seeds 3]
                                [--train-lengths 5 6 7 8] [--eval-lengths 3 4 ... 12] [--out docs/figures]

For each seed: ``tests/test_pointer_net.py``'s ``train_sorter`` (Adam on the teacher-forced cross-entropy over
pointer indices, gradient norm clipped at 2, one training length per step in turn, every length's unrolled
torch module run on one shared set of weights), then greedy decoding of 1000 held-out sequences of numbers
U[0, 1) at every evaluation length.  Prints, per length, the fraction sorted exactly and the fraction of
pointers right (mean and range over the seeds) next to chance (1/n! and 1/n), for the spec as it is and
with ``mask_chosen=false`` (the ablation: no mask of chosen positions); plots the training losses and the
accuracies by length to ``<out>/pointer_net.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the trainer and the task live with the tests that check them

from test_pointer_net import sorted_fraction, train_sorter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-lengths", type=int, nargs="+", default=[5, 6, 7, 8])
    ap.add_argument("--eval-lengths", type=int, nargs="+", default=list(range(3, 13)))
    ap.add_argument("--count", type=int, default=1000, help="held-out sequences per length")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # small tensors: one thread is faster than torch's pool on a shared machine
    runs = {}  # mask_chosen -> (losses [seeds, steps], exact [seeds, lengths], pointers right [seeds, lengths])
    for mask in (True, False):
        losses, exact, pointwise = [], [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            weights, curve = train_sorter(args.hidden, args.train_lengths, args.steps, args.batch, args.lr, seed, mask)
            scores = [sorted_fraction(weights, args.hidden, n, args.count, 1000 + n, mask) for n in args.eval_lengths]
            losses.append(curve)
            exact.append([e for e, _ in scores])
            pointwise.append([p for _, p in scores])
            print(f"mask_chosen={str(mask).lower()} seed {seed}: {time.perf_counter() - start:.0f} s, "
                  f"mean of the last 100 losses {np.mean(curve[-100:]):.4f}", flush=True)
        runs[mask] = tuple(np.array(a) for a in (losses, exact, pointwise))

    print(f"hidden {args.hidden}, {args.steps} steps, batch {args.batch}, lr {args.lr}, trained on lengths "
          f"{args.train_lengths} (*), {args.seeds} seeds, {args.count} held-out sequences per length; "
          "mean (min-max) over the seeds")
    print("  n  chance 1/n!  sorted exactly, masked  unmasked              "
          "chance 1/n  pointers right, masked  unmasked")
    for k, n in enumerate(args.eval_lengths):
        cells = [f"{a[:, k].mean():.3f} ({a[:, k].min():.3f}-{a[:, k].max():.3f})"
                 for a in (runs[True][1], runs[False][1], runs[True][2], runs[False][2])]
        print(f"{n:3d}{'*' if n in args.train_lengths else ' '} {1 / math.factorial(n):.1e}      "
              f"{cells[0]:24s}{cells[1]:24s}{1 / n:.3f}       {cells[2]:24s}{cells[3]}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    # a moving average over whole rounds of the training lengths (one length per step, in turn)
    window = len(args.train_lengths) * max(1, min(10, args.steps // (5 * len(args.train_lengths))))
    kernel = np.ones(window) / window
    styles = {True: ("C0", "-", "chosen positions masked"), False: ("C3", "--", "no mask (ablation)")}
    for mask, (colour, line, name) in styles.items():
        for seed, curve in enumerate(runs[mask][0]):
            ax1.plot(np.arange(window - 1, len(curve)), np.convolve(curve, kernel, mode="valid"), line, color=colour,
                     lw=1, alpha=0.8, label=name if seed == 0 else None)
    ax1.axhline(np.mean([math.log(math.factorial(n)) / n for n in args.train_lengths]), color="C0", ls=":", lw=1,
                label="uniform pointers, masked: ln(n!)/n")
    ax1.axhline(np.mean([math.log(n) for n in args.train_lengths]), color="C3", ls=":", lw=1,
                label="uniform pointers, no mask: ln n")
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel(f"cross-entropy per pointer (moving mean of {window})")
    ax1.set_title(f"teacher-forced training on lengths {min(args.train_lengths)}-{max(args.train_lengths)}, "
                  f"{args.seeds} seeds")
    ax1.legend(fontsize=8)

    n = np.array(args.eval_lengths)
    ax2.axvspan(min(args.train_lengths) - 0.5, max(args.train_lengths) + 0.5, color="0.92", label="training lengths")
    for mask, (colour, line, name) in styles.items():
        for values, what, marker in ((runs[mask][1], "sequence sorted exactly", "o"),
                                     (runs[mask][2], "pointer right", "s")):
            ax2.plot(n, values.mean(0), marker + line, color=colour, ms=4, label=f"{what}, {name}")
            ax2.fill_between(n, values.min(0), values.max(0), color=colour, alpha=0.15)
    ax2.plot(n, 1 / n, ":", color="k", lw=1, label="chance, pointer: 1/n")
    ax2.plot(n, [1 / math.factorial(int(k)) for k in n], "-.", color="k", lw=1, label="chance, sequence: 1/n!")
    ax2.set_ylim(0, 1.02)
    ax2.set_xticks(n)
    ax2.set_xlabel("sequence length n (greedy decoding, held out)")
    ax2.set_ylabel("accuracy (mean, band: min-max over seeds)")
    ax2.set_title("sorting numbers U[0, 1): accuracy by length")
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"Pointer network (specs/seeds/pointer_net.nspec): {args.hidden} LSTM units, {args.steps} Adam "
                 f"steps of batch {args.batch}")
    fig.tight_layout()
    out = Path(args.out) / "pointer_net.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
