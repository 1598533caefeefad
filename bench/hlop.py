"""HLOP against plain sequential training on permuted synthetic digits (``specs/seeds/hlop.nspec``).

    python bench/hlop.py [--tasks 5] [--train 320] [--test 200] [--steps 80] [--rows 10] [--seed 0]
                         [--out docs/figures/hlop.png]

Runs the protocol of ``tests/hlop_protocol.py`` twice (the spec's spiking MLP trained by
``nspec.runtime.train``, the subspaces learned by the spec's ``Lateral`` system): with HLOP (gradient
projection onto the complement of the old tasks' subspaces, ``--rows`` new rows per task and layer)
and without (H = 0).  Prints both accuracy matrices (task x after-task), the mean accuracy over the
old tasks after the last one, the backward transfer and ||H H^T - I||_F after each task; draws the two
matrices and ||H H^T - I||_F after every Hebbian mini-batch to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hlop_protocol import permuted_digits, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "hlop.png")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    tasks = permuted_digits(args.tasks, args.train, args.test, seed=args.seed)
    results = {name: run(tasks, hlop=name == "HLOP", rows_in=args.rows, rows_h=args.rows, steps=args.steps,
                         seed=args.seed) for name in ("sequential", "HLOP")}
    np.set_printoptions(precision=3, suppress=True)
    for name, r in results.items():
        print(f"{name}: accuracy on task i (rows) after task j (columns); chance 0.10")
        print(r.acc)
        print(f"  old-task accuracy after the last task {r.old_tasks_accuracy():.3f}, "
              f"backward transfer {r.backward_transfer():.3f}")
    print("HLOP ||H H^T - I||_F after each task (input, hidden):",
          [(round(a, 4), round(b, 4)) for a, b in results["HLOP"].orth])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw=dict(width_ratios=[1, 1, 1.3]), layout="constrained")
    n = args.tasks
    for ax, (name, r) in zip(axes, results.items()):
        im = ax.imshow(r.acc, vmin=0, vmax=1, cmap="viridis")
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{r.acc[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if r.acc[i, j] < 0.6 else "black")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("after training task")
        ax.set_ylabel("accuracy on task")
        ax.set_title(f"{name}: old tasks {r.old_tasks_accuracy():.2f}, BWT {r.backward_transfer():+.2f}")
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="test accuracy (chance 0.10)")
    trace = np.array(results["HLOP"].trace)
    per_task = len(trace) // max(1, n - 1)
    ax = axes[2]
    ax.plot(trace[:, 0], label="H over the input (64-d)")
    ax.plot(trace[:, 1], label="H over the hidden rates (64-d)")
    for t in range(1, n - 1):
        ax.axvline(t * per_task, color="0.8", lw=0.8)
    ax.set_xlabel("Hebbian mini-batch (a grey line: the next task's rows start)")
    ax.set_ylabel(r"$\|HH^\top - I\|_F$ over the learned rows")
    ax.set_title("orthonormality of the subspaces")
    ax.set_yscale("log")
    ax.legend()
    fig.suptitle(f"HLOP vs sequential training: {n} permuted synthetic-digit tasks, spiking MLP 64-64-10, T = 4")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
