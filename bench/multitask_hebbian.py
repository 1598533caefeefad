"""The multitasking Hebbian network's magnetisations against the dilution d (``specs/seeds/multitask_hebbian.nspec``).

    python bench/multitask_hebbian.py [--N 1000] [--K 3] [--seeds 8] [--steps 10] [--schedule synchronous]
                                      [--dynamics zero_noise] [--out docs/figures]

For each d in 0, 0.05, ..., 0.9 and each seed: patterns and examples drawn by the spec, a start from
pattern 1 with 20 % of its bits flipped, ``--steps`` steps of the chosen dynamics (the reference
interpreter), and the final |m_mu| sorted from largest to smallest.  Prints their means over the seeds
next to the hierarchical cascade (1 - d) d^k (pattern 1 on its support, pattern 2 on pattern 1's zeros,
...) and the mean number of patterns with |m| > 3 / sqrt(N); plots both to
``<out>/multitask_hebbian.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import nspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "multitask_hebbian.nspec"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=1000)
    ap.add_argument("--K", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--schedule", default="synchronous", choices=["synchronous", "sequential"])
    ap.add_argument("--dynamics", default="zero_noise", choices=["zero_noise", "glauber"])
    ap.add_argument("--beta", type=float, default=20.0)
    ap.add_argument("--out", default="docs/figures")
    args = ap.parse_args()

    bar = 3 / np.sqrt(args.N)
    ds = np.round(np.arange(0, 0.91, 0.05), 2)
    means, spreads, counts = [], [], []
    print(f"N = {args.N}, K = {args.K}, {args.seeds} seeds, {args.steps} {args.schedule} {args.dynamics} steps; "
          f"retrieved: |m| > 3 / sqrt(N) = {bar:.3f}")
    print("   d   mean sorted |m_mu|          cascade (1-d) d^k        retrieved")
    for d in ds:
        model = nspec.load(SPEC, N=args.N, K=args.K, d=float(d), schedule=args.schedule, dynamics=args.dynamics,
                           beta=args.beta)
        ms = np.array([np.sort(np.abs(model.run(steps=args.steps, seed=s)["m"][-1]))[::-1]
                       for s in range(args.seeds)])
        means.append(ms.mean(axis=0))
        spreads.append(ms.std(axis=0))
        counts.append(float(np.mean(np.sum(ms > bar, axis=1))))
        cascade = [(1 - d) * d**k for k in range(args.K)]
        print(f"{d:5.2f}  {np.array2string(means[-1], precision=3):26s} "
              f"{np.array2string(np.array(cascade), precision=3):26s} {counts[-1]:.2f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, spreads = np.array(means), np.array(spreads)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in range(args.K):
        line = a.errorbar(ds, means[:, k], yerr=spreads[:, k], marker="o", ms=3, capsize=2,
                          label=f"{k + 1}{'st' if k == 0 else 'nd' if k == 1 else 'rd' if k == 2 else 'th'} largest |m|")
        a.plot(ds, (1 - ds) * ds**k, "--", color=line[0].get_color(), lw=1)
    a.axhline(1 / np.sqrt(args.N), color="grey", lw=0.8, ls=":", label="random, 1/sqrt(N)")
    a.set_xlabel("dilution d")
    a.set_ylabel("|Mattis magnetisation|")
    a.set_title("magnetisations (dashed: cascade (1-d) d^k)")
    a.legend(fontsize=8)
    b.plot(ds, counts, marker="o")
    b.set_xlabel("dilution d")
    b.set_ylabel(f"patterns with |m| > {bar:.3f}")
    b.set_ylim(0, args.K + 0.3)
    b.set_title("patterns retrieved at once")
    fig.suptitle(f"multitasking Hebbian network: N = {args.N}, K = {args.K}, {args.schedule} {args.dynamics}, "
                 f"{args.seeds} seeds")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "multitask_hebbian.png", dpi=110)
    print(f"wrote {out / 'multitask_hebbian.png'}")


if __name__ == "__main__":
    main()
