"""The consciousness-prior bottleneck against the same model reading every proposal
(``specs/seeds/consciousness_prior.nspec``, the task and training of ``tests/test_consciousness_prior.py``).

    python bench/consciousness_prior.py [--seeds 4] [--steps 1200] [--out docs/figures]

For each seed, both models (1890 and 1906 trainable weights) are trained by Adam through
``Model.to_torch()`` on the 22 training cue pairs; every 100 steps the bottleneck's selection (the
share of examples whose top-2 indices are exactly the cued pair) and both models' accuracy are
measured on training and held-out pairs (the 6 pairs never seen).  Prints the final numbers per seed
and draws ``<out>/consciousness_prior.png``: the curves (mean over seeds, thin lines per seed), and
the first seed's attention map (mean softmax(s) per cue pair) and selection map (how often each
variable is among the top 2), held-out pairs marked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_consciousness_prior import HELD_OUT, N, PAIRS, TRAIN_PAIRS, evaluate, task_batch, train  # noqa: E402

CHANCE_EXACT, CHANCE_MAJORITY = 1 / len(PAIRS), 0.573


def maps(module) -> tuple[np.ndarray, np.ndarray]:
    """[pair, variable]: the mean attention softmax(s) and how often the variable is selected."""
    attention, selected = np.zeros((len(PAIRS), N)), np.zeros((len(PAIRS), N))
    for row, pair in enumerate(PAIRS):
        x, cue, _ = task_batch(np.random.default_rng(row), [pair], 200)
        with torch.no_grad():
            out = module(x=torch.tensor(x), cue=torch.tensor(cue))
        attention[row], selected[row] = out["attention"].numpy().mean(0), out["index"].numpy().mean(0)
    return attention, selected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--out", default="docs/figures")
    args = ap.parse_args()
    torch.set_num_threads(1)

    curves, first = {}, {}   # curves[(arch, measure, pairs)] = [seed][checkpoint]
    for seed in range(args.seeds):
        for arch in ("bottleneck", "all"):
            logged: dict = {}

            def every(step, module, arch=arch, logged=logged):
                for name, pairs in (("train", TRAIN_PAIRS), ("held-out", HELD_OUT)):
                    for measure, value in evaluate(module, pairs, n=1000).items():
                        logged.setdefault((arch, measure, name), []).append((step, value))

            module = train(arch, seed, steps=args.steps, every=every)
            for key, points in logged.items():
                curves.setdefault(key, []).append(points)
            if seed == 0 and arch == "bottleneck":
                first["maps"] = maps(module)
            final = {name: evaluate(module, pairs) for name, pairs in (("train", TRAIN_PAIRS), ("held-out", HELD_OUT))}
            print(f"seed {seed} {arch:10s} " + "  ".join(
                f"{name}: acc {m['accuracy']:.3f} exact {m['exact']:.3f}" for name, m in final.items()), flush=True)
    draw(curves, first["maps"], Path(args.out) / "consciousness_prior.png")


def draw(curves, maps_, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6), gridspec_kw={"width_ratios": [1, 1, 0.75, 0.75]})
    styles = {"train": "-", "held-out": "--"}
    colours = {"bottleneck": "tab:blue", "all": "tab:red"}

    def plot(ax, key, label, colour):
        runs = np.array([[v for _, v in run] for run in curves[key]])
        steps = [s for s, _ in curves[key][0]]
        for run in runs:
            ax.plot(steps, run, styles[key[2]], color=colour, alpha=0.2, lw=0.8)
        ax.plot(steps, runs.mean(0), styles[key[2]], color=colour, lw=2, label=label)

    ax = axes[0]
    for pairs in ("train", "held-out"):
        plot(ax, ("bottleneck", "exact", pairs), f"{pairs} pairs", "tab:blue")
    ax.axhline(CHANCE_EXACT, color="grey", lw=1, ls=":", label=f"chance 1/C(8,2) = {CHANCE_EXACT:.3f}")
    ax.set(title="selection: top-2 indices = cued pair", xlabel="training step", ylabel="share of examples",
           ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    for arch, name in (("bottleneck", "bottleneck (k = 2)"), ("all", "reads every proposal")):
        for pairs in ("train", "held-out"):
            plot(ax, (arch, "accuracy", pairs), f"{name}, {pairs}", colours[arch])
    ax.axhline(CHANCE_MAJORITY, color="grey", lw=1, ls=":", label=f"majority class {CHANCE_MAJORITY}")
    ax.set(title="accuracy (mean of seeds; thin: each seed)", xlabel="training step", ylim=(0.4, 1.0))
    ax.legend(loc="lower right", fontsize=8)

    labels = [f"{a},{b}" + (" *" if (a, b) in HELD_OUT else "") for a, b in PAIRS]
    for ax, data, title in ((axes[2], maps_[0], "attention softmax(s), seed 0"),
                            (axes[3], maps_[1], "selected (top-2) share, seed 0")):
        im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(len(PAIRS)), labels, fontsize=6)
        ax.set_xticks(range(N))
        ax.set(title=title, xlabel="variable", ylabel="cued pair (* held out)")
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle("Consciousness-prior bottleneck: label = [x_a > 0.5] xor [x_b > 0.5] for the cued pair (a, b) of 8 variables")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
