"""A pointer network learning to sort, and how far it sorts beyond its training lengths (``specs/seeds/pointer_net.nspec``).

    python bench/pointer_net.py [--hidden 32] [--steps 1500] [--batch 128] [--lr 1e-2] [--seeds 3]
                                [--train-lengths 5 6 7 8] [--eval-lengths 3 4 ... 12] [--out docs/figures]

For each seed: ``tests/test_pointer_net.py``'s ``train_sorter`` (Adam on the teacher-forced cross-entropy over
pointer indices, gradient norm clipped at 2, one training length per step in turn, every length's unrolled
torch module run on one shared set of weights), then greedy decoding of 1000 held-out sequences of numbers
U[0, 1) at every evaluation length.  Prints, per length, the fraction sorted exactly and the fraction of
pointers right (mean and range over the seeds) next to chance (1/n! and 1/n); plots the training loss and
both accuracies by length to ``<out>/pointer_net.png``.
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
    ap.add_argument("--steps", type=int, default=1500)
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
    losses, exact, pointwise = [], [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        weights, curve = train_sorter(args.hidden, args.train_lengths, args.steps, args.batch, args.lr, seed)
        scores = [sorted_fraction(weights, args.hidden, n, args.count, seed=1000 + n) for n in args.eval_lengths]
        losses.append(curve)
        exact.append([s[0] for s in scores])
        pointwise.append([s[1] for s in scores])
        print(f"seed {seed}: trained and evaluated in {time.perf_counter() - start:.0f} s, "
              f"last 100 losses {np.mean(curve[-100:]):.4f}")
    losses, exact, pointwise = np.array(losses), np.array(exact), np.array(pointwise)

    print(f"hidden {args.hidden}, {args.steps} steps, batch {args.batch}, lr {args.lr}, "
          f"trained on lengths {args.train_lengths}, {args.seeds} seeds, {args.count} held-out sequences per length")
    print("  n   exactly sorted (mean, min-max)   chance 1/n!    pointers right (mean, min-max)   chance 1/n")
    for k, n in enumerate(args.eval_lengths):
        e, p = exact[:, k], pointwise[:, k]
        mark = "*" if n in args.train_lengths else " "
        print(f"{n:3d}{mark}  {e.mean():.3f} ({e.min():.3f}-{e.max():.3f})              {1 / math.factorial(n):.1e}"
              f"        {p.mean():.3f} ({p.min():.3f}-{p.max():.3f})                {1 / n:.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    # a moving average over whole rounds of the training lengths (one length per step, in turn)
    window = len(args.train_lengths) * max(1, min(10, args.steps // (5 * len(args.train_lengths))))
    kernel = np.ones(window) / window
    for seed, curve in enumerate(losses):
        ax1.plot(np.arange(window - 1, len(curve)), np.convolve(curve, kernel, mode="valid"), lw=1,
                 label=f"seed {seed}")
    ax1.axhline(np.mean([math.log(math.factorial(n)) / n for n in args.train_lengths]), color="grey", ls=":",
                label="uniform pointers")
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel(f"cross-entropy per pointer (moving mean of {window})")
    ax1.set_title(f"teacher-forced training on lengths {args.train_lengths[0]}-{args.train_lengths[-1]}")
    ax1.legend(fontsize=8)

    n = np.array(args.eval_lengths)
    ax2.axvspan(min(args.train_lengths) - 0.5, max(args.train_lengths) + 0.5, color="0.92", label="training lengths")
    for values, name, colour in ((exact, "sequence sorted exactly", "C0"), (pointwise, "pointer right", "C1")):
        ax2.plot(n, values.mean(0), "o-", color=colour, label=f"{name} (mean of {args.seeds} seeds)")
        ax2.fill_between(n, values.min(0), values.max(0), color=colour, alpha=0.2)
    ax2.plot(n, 1 / n, "--", color="C1", lw=1, label="chance, pointer: 1/n")
    ax2.plot(n, [1 / math.factorial(int(k)) for k in n], "--", color="C0", lw=1, label="chance, sequence: 1/n!")
    ax2.set_ylim(0, 1.02)
    ax2.set_xticks(n)
    ax2.set_xlabel("sequence length n (greedy decoding, held out)")
    ax2.set_ylabel("accuracy")
    ax2.set_title("sorting numbers U[0, 1): accuracy by length")
    ax2.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Pointer network (specs/seeds/pointer_net.nspec), {args.hidden} LSTM units, {args.steps} Adam steps")
    fig.tight_layout()
    out = Path(args.out) / "pointer_net.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
