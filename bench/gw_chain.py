"""Global-workspace chaining against an LSTM baseline on held-out additions (``specs/seeds/gw_chain.nspec``).

    python bench/gw_chain.py [--seeds 0 1 2 3 4] [--steps 120] [--baseline-steps 300] [--out docs/figures]

Both models are trained through ``Model.to_torch()`` by full-batch Adam (lr 2e-2) on 80 of the 100
pairs (a, b) of one-hot digits, the other 20 held out (every digit still seen as a and as b), as in
``tests/test_gw_chain.py``: the workspace on -log answer[a + b] plus 0.3 per step still running, the
baseline (an LSTM with fewer parameters) on the cross-entropy of its logits.  Prints, per seed
of the initial weights, the held-out accuracies and the share of held-out examples whose winning gates are Input ->
Increment x b -> Output; plots the held-out accuracy over training (seed 0 solid, others faint) and
seed 0's gates on six held-out examples to ``<out>/gw_chain.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import nspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "gw_chain.nspec"
DIGITS, CLASSES, STEPS, PONDER, LR = 10, 19, 12, 0.3, 2e-2
MODULES = ["Input", "Increment", "Output"]


def split() -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([(a, b) for a in range(DIGITS) for b in range(DIGITS)])
    held = np.zeros(len(pairs), bool)
    held[np.random.default_rng(0).choice(len(pairs), 20, replace=False)] = True
    return pairs[~held], pairs[held]


def tasks(pairs: np.ndarray) -> torch.Tensor:
    x = np.zeros((len(pairs), 2 * DIGITS), np.float32)
    x[np.arange(len(pairs)), pairs[:, 0]] = 1
    x[np.arange(len(pairs)), DIGITS + pairs[:, 1]] = 1
    return torch.tensor(np.repeat(x[:, None], STEPS, axis=1))


def loss_of(key: str, out: dict, y: torch.Tensor) -> torch.Tensor:
    if key == "logits":
        return torch.nn.functional.cross_entropy(out["logits"][:, -1], y)
    nll = -torch.log(out["answer"][:, -1].gather(1, y[:, None]) + 1e-6).mean()
    return nll + PONDER * out["running"].sum(1).mean()


def seeded(target: str, seed: int):
    """The model with its initial weights drawn from nspec seed ``seed`` (training has no other randomness)."""
    model = nspec.load(SPEC, target=target)
    model.load_weights(model.initial(1, seed)[0])
    return model


def train(target: str, key: str, steps: int, seed: int, train_pairs, test_pairs):
    """The trained module and its held-out accuracy every 10 steps."""
    module = seeded(target, seed).to_torch()
    x, y = tasks(train_pairs), torch.tensor(train_pairs.sum(1))
    x_test, y_test = tasks(test_pairs), torch.tensor(test_pairs.sum(1))
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    curve = []
    for step in range(steps):
        loss = loss_of(key, module(task=x, steps=STEPS), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            with torch.no_grad():
                curve.append((module(task=x_test, steps=STEPS)[key][:, -1].argmax(1) == y_test).float().mean().item())
    return module, np.array(curve)


def sequence_right(gates: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    winners = gates.argmax(-1)
    return np.array([list(w[:b + 2]) == [0] + [1] * b + [2] for w, (_, b) in zip(winners, pairs)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--baseline-steps", type=int, default=300)
    ap.add_argument("--out", default="docs/figures")
    args = ap.parse_args()
    torch.set_num_threads(1)

    train_pairs, test_pairs = split()
    curves, first = {"workspace": [], "baseline": []}, None
    print(f"held-out pairs: {len(test_pairs)}, chance 1/{CLASSES} = {1 / CLASSES:.3f}")
    print("seed  workspace acc  gate sequence right  baseline acc (train acc)")
    for seed in args.seeds:
        ws, ws_curve = train("Chain", "answer", args.steps, seed, train_pairs, test_pairs)
        base, base_curve = train("Baseline", "logits", args.baseline_steps, seed, train_pairs, test_pairs)
        with torch.no_grad():
            out = ws(task=tasks(test_pairs), steps=STEPS)
            base_train = (base(task=tasks(train_pairs), steps=STEPS)["logits"][:, -1].argmax(1).numpy()
                          == train_pairs.sum(1)).mean()
        gates = out["gates"].numpy()
        print(f"{seed:4d}  {ws_curve[-1]:13.2f}  {sequence_right(gates, test_pairs).mean():19.2f}  "
              f"{base_curve[-1]:12.2f} ({base_train:.2f})")
        curves["workspace"].append(ws_curve)
        curves["baseline"].append(base_curve)
        if first is None:
            first = gates
    print(f"parameters: workspace {sum(p.numel() for p in ws.parameters())}, "
          f"baseline {sum(p.numel() for p in base.parameters())}")
    plot(curves, first, test_pairs, Path(args.out) / "gw_chain.png")


def plot(curves: dict, gates: np.ndarray, pairs: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = sorted(range(len(pairs)), key=lambda n: pairs[n][1])[::3][:6]
    fig = plt.figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 3, 1)
    for name, color in (("workspace", "C0"), ("baseline", "C3")):
        for n, curve in enumerate(curves[name]):
            steps = 10 * np.arange(1, len(curve) + 1)
            ax.plot(steps, curve, color=color, alpha=1 if n == 0 else 0.3,
                    label=f"{name} ({len(curves[name])} seeds)" if n == 0 else None)
    ax.axhline(1 / CLASSES, color="gray", ls=":", label="chance 1/19")
    ax.set(xlabel="Adam step", ylabel="held-out accuracy", ylim=(0, 1.05), title="a + b on 20 held-out pairs")
    ax.legend(loc="center right", fontsize=8)
    grid = fig.add_gridspec(2, 6, left=0.42, right=0.98, hspace=0.5, wspace=0.15)
    for k, n in enumerate(shown):
        a, b = pairs[n]
        sub = fig.add_subplot(grid[k // 3, 2 * (k % 3):2 * (k % 3) + 2])
        sub.imshow(gates[n].T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        sub.axvline(b + 1.5, color="w", ls="--", lw=1)   # halted: later steps are masked
        sub.set_title(f"{a} + {b} = {a + b}", fontsize=9)
        sub.set_yticks(range(3), MODULES if k % 3 == 0 else [], fontsize=8)
        sub.set_xticks(range(0, STEPS, 2))
        sub.tick_params(labelsize=7)
        if k // 3 == 1:
            sub.set_xlabel("internal step", fontsize=8)
    fig.text(0.70, 0.96, "workspace gates on held-out examples (dashed: halted)", ha="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
