"""The scaled-down Neuroformer (``specs/seeds/neuroformer.nspec``) trained on spikes of the spec's own population.

    python bench/neuroformer.py [--train 4096] [--steps 600] [--every 25] [--layers 1] [--seed 0]
                                [--out docs/figures]

Records ``--train`` trials (stimulus directions uniform on the circle) and two test sets (32 trials at
each of the K = 8 and of the K = 16 directions 2 pi k / K) from ``StimulusResponse`` (16 Poisson
neurons tuned to the direction, 200 ms), tokenises 32 spikes a trial, trains the spec's torch module
(``Model.to_torch()``, Adam, lr 3e-3, batch 64) on next-spike cross entropy plus the symmetric InfoNCE
loss, and every ``--every`` steps measures the next-spike accuracy and the retrieval of the right
stimulus among K.  Prints the final numbers next to chance, the unigram and prefix-mode baselines and
the rate oracle (the argmax of the trial's true rates); draws ``<out>/neuroformer.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the task (recording, tokens, training) lives with its tests
import neuroformer_task as task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)

    start = time.time()
    rng = np.random.default_rng(args.seed)
    train = task.record(rng.uniform(0, 2 * np.pi, args.train), seed=args.seed + 1)
    tests = {K: task.record(np.repeat(2 * np.pi * np.arange(K) / K, 32), seed=args.seed + 1 + K) for K in (8, 16)}
    recorded = time.time() - start
    base = task.baselines(train, tests[8])

    def measure(module):
        got = {K: task.evaluate(module, test, K) for K, test in tests.items()}
        return {"next_token": got[8]["next_token"], "retrieval8": got[8]["retrieval"],
                "retrieval16": got[16]["retrieval"]}

    module, history = task.train(train, {"n_layers": args.layers}, steps=args.steps, seed=args.seed,
                                 every=args.every, measure=measure)
    final = history[-1][3] or measure(module)
    print(f"recorded {len(train.neuron)} training trials and {len(tests[8].neuron)} + {len(tests[16].neuron)} test "
          f"trials in {recorded:.1f} s; trained {args.steps} steps in {time.time() - start - recorded:.1f} s")
    print(f"next-spike accuracy: {final['next_token']:.3f}  (chance {base['chance']:.4f}, unigram "
          f"{base['unigram']:.3f}, prefix mode {base['prefix_mode']:.3f}, rate oracle {base['oracle']:.3f})")
    print(f"retrieval among K = 8: {final['retrieval8']:.3f} (chance 0.125); among K = 16: "
          f"{final['retrieval16']:.3f} (chance 0.0625)")
    draw(Path(args.out) / "neuroformer.png", tests[8], history, base, args)


def draw(path: Path, test, history, base, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = ax.ravel()
    step, neuron, trial = test.spikes
    for row, k in enumerate((0, 2, 4, 6)):          # one trial at each of 0, 90, 180, 270 degrees
        mine = trial == 32 * k
        ax[0].scatter(step[mine] + row * 230, neuron[mine], s=6, color=f"C{row}")
        ax[0].text(row * 230 + 100, 16.2, f"stimulus {45 * k} deg", ha="center", fontsize=8)
        if row:
            ax[0].axvline(row * 230 - 15, color="k", lw=0.5)
    ax[0].set(xlabel="time in trial (ms); four trials side by side", ylabel="neuron i (preferred direction 22.5 i deg)",
              title="synthetic data: spikes of the spec's tuned Poisson population", ylim=(-0.5, 17),
              xticks=[v + 230 * r for r in range(4) for v in (0, 100)])
    ax[0].set_xticklabels(["0", "100"] * 4)
    steps = np.arange(1, len(history) + 1)
    smooth = lambda v: np.convolve(v, np.ones(10) / 10, mode="valid")   # noqa: E731
    ax[1].plot(steps[9:], smooth([h[1] for h in history]), label="next-spike cross entropy")
    ax[1].plot(steps[9:], smooth([h[2] for h in history]), label="InfoNCE (batch 64)")
    ax[1].axhline(np.log(16), color="gray", ls=":", label="log 16 (uniform next spike)")
    ax[1].axhline(np.log(64), color="gray", ls="--", label="log 64 (uniform InfoNCE)")
    ax[1].set(xlabel="Adam step", ylabel="training loss (mean of 10 steps)", title="training curves")
    ax[1].legend(fontsize=7)
    curve = [(s + 1, m) for s, _, _, m in history if m is not None]
    s = [c[0] for c in curve]
    ax[2].plot(s, [c[1]["next_token"] for c in curve], "o-", ms=3, label="Neuroformer (spec's torch module)")
    for key, style, name in (("oracle", "--", "oracle: argmax of the true rates"), ("prefix_mode", "-.", "prefix mode"),
                             ("unigram", ":", "unigram"), ("chance", ":", "chance 1/16")):
        ax[2].axhline(base[key], ls=style, color="gray" if key != "oracle" else "k", label=f"{name} {base[key]:.3f}")
    ax[2].set(xlabel="Adam step", ylabel="accuracy", title="next-spike prediction (test tokens)", ylim=(0, 0.35))
    ax[2].legend(fontsize=7, loc="lower right")
    ax[3].plot(s, [c[1]["retrieval8"] for c in curve], "o-", ms=3, label="K = 8 (45 deg apart)")
    ax[3].plot(s, [c[1]["retrieval16"] for c in curve], "s-", ms=3, label="K = 16 (22.5 deg apart)")
    ax[3].axhline(1 / 8, ls=":", color="C0", label="chance 1/8")
    ax[3].axhline(1 / 16, ls=":", color="C1", label="chance 1/16")
    ax[3].set(xlabel="Adam step", ylabel="accuracy", title="stimulus retrieval among K (contrastive)",
              ylim=(0, 1.05))
    ax[3].legend(fontsize=7, loc="center right")
    fig.suptitle(f"Neuroformer, scaled down: {len(history)} steps, {args.layers} layer(s), "
                 f"{args.train} training trials; python bench/neuroformer.py", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
