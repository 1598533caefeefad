"""Figures of the seed models on ``docs/seeds.md``, each run through nspec (``nspec.load``, ``Model.run``,
``Model.to_torch()``) from the specs in ``specs/seeds/`` and ``specs/lib/workspace.nspec``.

    python bench/seed_figures.py [--only NAME ...] [--quick] [--out docs/figures]

NAME is one of recurrent_cells, mpsae, sequence_mixers, workspace_routing, hourglass, spikingbrain
(the multitasking Hebbian network's figure is ``bench/multitask_hebbian.py``'s).  Each writes
``<out>/<NAME>.png`` and prints the numbers it plots.  ``--quick`` shrinks every run (fewer backends,
steps and samples) to check that the script works; the committed figures are drawn without it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import nspec

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "specs" / "seeds"
CONFORMANCE = ROOT / "tests" / "conformance"


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=110)
    print(f"wrote {out / f'{name}.png'}")


# ---------------------------------------------------------------- recurrent cells
def recurrent_cells(out: Path, quick: bool) -> None:
    """The conformance bundles (torch.nn.LSTM / GRU / RNN outputs) against nspec's, per backend."""
    plt = pyplot()
    backends = ["reference"] if quick else ["reference", "onnxruntime", "torch"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    diffs = {}
    for model, colour in zip(("lstm", "gru", "rnn"), ("C0", "C1", "C2")):
        meta = json.loads((CONFORMANCE / f"{model}_tiny.json").read_text())
        spec = nspec.load(SEEDS / f"{model}.nspec", **meta["config"])
        spec.load_weights(str(CONFORMANCE / f"{model}_tiny.weights.safetensors"))
        with np.load(CONFORMANCE / f"{model}_tiny.inputs.npz") as i, \
                np.load(CONFORMANCE / f"{model}_tiny.outputs.npz") as o:
            x, want = i["input"], {k: o[k] for k in o.files}
        for backend in backends:
            got = spec.run({"input": x}, batch=len(x), backend=backend)
            diffs[model, backend] = max(float(np.max(np.abs(got[k] - v))) for k, v in want.items())
            if backend == "reference":
                a.scatter(want["output"].ravel(), got["output"].ravel(), s=12, color=colour,
                          label=f"{model} ({want['output'].size} values)")
        print(model, {bk: f"{d:.2g}" for (m, bk), d in diffs.items() if m == model})
    a.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--", label="y = x")
    a.set_xlabel("torch 2.13 output (bundle), dimensionless")
    a.set_ylabel("nspec output (reference interpreter)")
    a.set_title("output, every batch, step and unit")
    a.legend(fontsize=8)
    floor = 1e-9
    width = 0.8 / len(backends)
    for j, backend in enumerate(backends):
        values = [max(diffs[m, backend], floor) for m in ("lstm", "gru", "rnn")]
        bars = b.bar(np.arange(3) + (j - (len(backends) - 1) / 2) * width, values, width, label=backend)
        for bar, m in zip(bars, ("lstm", "gru", "rnn")):
            if diffs[m, backend] == 0:
                b.annotate("0", (bar.get_x() + bar.get_width() / 2, floor), ha="center", va="bottom", fontsize=8)
    b.axhline(1e-5, color="red", lw=0.8, ls="--", label="bundle tolerance 1e-5")
    b.set_yscale("log")
    b.set_ylim(floor / 2, 1e-4)
    b.set_xticks(range(3), ["LSTM", "GRU", "RNN"])
    b.set_ylabel("max |nspec - torch| over output, h_n (, c_n)")
    b.set_title("largest difference per backend")
    b.legend(fontsize=8)
    fig.suptitle("Recurrent cells: specs/seeds/{lstm,gru,rnn}.nspec on tests/conformance/*_tiny "
                 "(2 layers, 4 inputs, 5 hidden, batch 2, 6 steps)")
    fig.tight_layout()
    save(fig, out, "recurrent_cells")


# ---------------------------------------------------------------- MP-SAE
def mpsae(out: Path, quick: bool) -> None:
    """Relative reconstruction error over training: MP-SAE (to_torch) against a ReLU SAE of the same size,
    on tests/test_mpsae.py's k-sparse data; and the trained MP-SAE's error against its number of steps k."""
    plt = pyplot()
    d, c, k, n = 12, 24, 3, 256
    steps = 30 if quick else 300
    rng = np.random.default_rng(0)
    A = rng.normal(size=(c, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    s = np.zeros((n, c))
    for row in s:
        row[rng.choice(c, k, replace=False)] = rng.uniform(0.5, 1.5, k) * rng.choice([-1, 1], k)
    x = torch.as_tensor(s @ A, dtype=torch.float32)

    def rel_error(x_hat):
        return float(((x - x_hat) ** 2).sum() / (x ** 2).sum())

    torch.manual_seed(0)
    mp = nspec.load(SEEDS / "mpsae.nspec", input_shape=d, nb_concepts=c, k=k).to_torch()
    opt = torch.optim.Adam(mp.parameters(), lr=1e-2)
    mp_curve = []
    for _ in range(steps + 1):
        opt.zero_grad()
        x_hat = mp(x=x)["x_hat"]
        mp_curve.append(rel_error(x_hat.detach()))
        ((x_hat - x) ** 2).mean().backward()
        opt.step()

    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(d, c), torch.nn.Linear(c, d)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-2)
    relu_curve = []
    for _ in range(steps + 1):
        opt.zero_grad()
        codes = torch.relu(enc(x))
        x_hat = dec(codes)
        relu_curve.append(rel_error(x_hat.detach()))
        (((x_hat - x) ** 2).mean() + 0.1 * codes.abs().sum(dim=1).mean()).backward()
        opt.step()
    active = float((torch.relu(enc(x)) > 0).float().sum(dim=1).mean())

    # the trained dictionary, read with k = 1 .. 8 matching-pursuit steps (the same weights by key)
    state = {key: v.detach().numpy() for key, v in mp.state_dict().items()}
    ks = list(range(1, 5 if quick else 9))
    by_k = []
    for kk in ks:
        model = nspec.load(SEEDS / "mpsae.nspec", input_shape=d, nb_concepts=c, k=kk)
        model.load_weights(state)
        x_hat = model.run({"x": x.numpy()[:, None]}, batch=n)["x_hat"][:, 0]
        by_k.append(rel_error(torch.as_tensor(x_hat)))
    print(f"after {steps} steps: MP-SAE {mp_curve[-1]:.3f}, ReLU SAE {relu_curve[-1]:.3f} "
          f"({active:.1f} active codes); error by k: " + ", ".join(f"{kk}: {e:.3f}" for kk, e in zip(ks, by_k)))

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(mp_curve, label=f"MP-SAE, k = {k} (nspec to_torch)")
    a.plot(relu_curve, label=f"ReLU SAE + L1 0.1 ({active:.1f} active codes at the end)")
    a.axhline(1.0, color="grey", lw=0.8, ls=":", label="all-zero reconstruction")
    a.set_xlabel("Adam step (full batch, lr 1e-2)")
    a.set_ylabel("relative error |x - x_hat|^2 / |x|^2")
    a.set_yscale("log")
    a.set_title("training, both with 24 atoms")
    a.legend(fontsize=8)
    b.plot(ks, by_k, marker="o")
    b.axvline(k, color="grey", lw=0.8, ls="--", label=f"k trained with ({k})")
    b.set_xlabel("matching-pursuit steps k at evaluation")
    b.set_ylabel("relative error |x - x_hat|^2 / |x|^2")
    b.set_yscale("log")
    b.set_title("trained MP-SAE read with other k (Model.run)")
    b.legend(fontsize=8)
    fig.suptitle(f"MP-SAE (specs/seeds/mpsae.nspec): x = s A, 3-sparse s over 24 unit atoms in 12-d, {n} samples")
    fig.tight_layout()
    save(fig, out, "mpsae")


# ---------------------------------------------------------------- sequence mixers
def mixing_matrix(spec: str, T: int, d: int, seed: int) -> np.ndarray:
    """||d y_t / d x_s||_F for one random sequence, through the spec's torch module (its own random init)."""
    torch.manual_seed(seed)
    module = nspec.load(SEEDS / f"{spec}.nspec").to_torch()
    x = torch.randn(1, T, d)
    J = torch.autograd.functional.jacobian(lambda z: module(x=z)["y"], x)   # [1, T, d, 1, T, d]
    return J[0, :, :, 0].pow(2).sum(dim=(1, 3)).sqrt().numpy()


def sequence_mixers(out: Path, quick: bool) -> None:
    plt = pyplot()
    T, d = (6 if quick else 12), 8
    names = {"linear_attention": "linear attention (elu+1, normalised)", "gla": "GLA (tau 16)",
             "selective_ssm": "selective SSM (Mamba S6)", "softmax_attention": "softmax attention (causal)"}
    fig = plt.figure(figsize=(14, 8.6), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.1])
    axes = [fig.add_subplot(grid[r, c]) for r, c in ((0, 0), (0, 1), (1, 0), (1, 1))]
    cmap = pyplot().get_cmap("viridis").with_extremes(bad="white")
    for a, (spec, title) in zip(axes, names.items()):
        m = mixing_matrix(spec, T, d, seed=0)
        upper = float(np.max(m[np.triu_indices(T, 1)]))
        print(f"{spec}: largest |dy_t/dx_s| above the diagonal (s > t) {upper:.1g}")
        shown = np.where(m > 0, np.log10(np.maximum(m / m.max(), 1e-4)), np.nan)
        image = a.imshow(shown, cmap=cmap, vmin=-4, vmax=0)
        a.set_title(f"{title}\nwhite: exactly 0 (s > t, causal)" if upper == 0 else title, fontsize=10)
        a.set_xlabel("input position s (token index)")
        a.set_ylabel("output position t (token index)")
        a.set_xticks(range(0, T, 2))
        a.set_yticks(range(0, T, 2))
    fig.colorbar(image, ax=axes, shrink=0.6, label="log10 ||dy_t/dx_s||_F / its max (floor -4)")

    rng = np.random.default_rng(1)
    stepped_model = nspec.load(SEEDS / "linear_attention.nspec")
    weights = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32)
               for k, v in nspec.load(SEEDS / "linear_attention.nspec").to_torch().state_dict().items()}
    stepped_model.load_weights(weights)
    parallel_model = nspec.load(SEEDS / "linear_attention_parallel.nspec")
    parallel_model.load_weights(weights)
    x = rng.standard_normal((2, T, d)).astype(np.float32)
    stepped = stepped_model.run({"x": x}, batch=2)["y"]
    whole = parallel_model.run({"x": x[:, None]}, batch=2)["y"][:, 0]
    diff = float(np.max(np.abs(stepped - whole)))
    print(f"linear attention, recurrent (T steps) vs parallel (one step): max |diff| {diff:.2g}")
    a = fig.add_subplot(grid[:, 2])
    a.scatter(whole.ravel(), stepped.ravel(), s=6)
    lim = float(np.max(np.abs(whole))) * 1.05
    a.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    a.set_xlabel("parallel spec y (one data step)")
    a.set_ylabel("recurrent spec y (one token per step)")
    a.set_title(f"linear attention, two forms: max |diff| {diff:.1g}", fontsize=10)
    a.set_aspect("equal")
    fig.suptitle(f"Sequence mixers (specs/seeds/*.nspec, d_model {d}, {T} tokens, random init): token mixing\n"
                 "|dy_t/dx_s| by autograd through Model.to_torch(); right: linear attention's two specs by Model.run")
    save(fig, out, "sequence_mixers")


# ---------------------------------------------------------------- workspace routing
MODULES, WS_SLOTS = 4, 2
WORKSPACES = f"""
from "std/workspace.nspec" import GatedWorkspace, SoftmaxWorkspace, TopKWorkspace, AttentionWorkspace

# Module m writes e_m (scaled by its salience for the attention workspace), so a read is the
# competition's weights themselves.
composite Probe {{
  in write: f32[{MODULES}, {MODULES}]
  in salient: f32[{MODULES}, {MODULES}]
  in gates: f32[{MODULES}]
  in query: f32[{MODULES}, {MODULES}]
  out gated: f32[{MODULES}]
  out soft: f32[{MODULES}]
  out top2: f32[{MODULES}]
  out attention: f32[{MODULES}, {MODULES}]
  box g: GatedWorkspace(dim = {MODULES}, modules = {MODULES})
  box s: SoftmaxWorkspace(dim = {MODULES}, modules = {MODULES})
  box t2: TopKWorkspace(dim = {MODULES}, modules = {MODULES}, k = 2)
  box att: AttentionWorkspace(dim = {MODULES}, modules = {MODULES}, slots = {WS_SLOTS}, key_dim = 2)
  wire write -> g.write, s.write, t2.write
  wire salient -> att.write
  wire gates -> g.gates, s.gates, t2.gates
  wire query -> att.query
  wire g.read -> gated
  wire s.read -> soft
  wire t2.read -> top2
  wire att.read -> attention
}}

simulate Probe for 1 s, dt = 1 s
"""


def workspace_routing(out: Path, quick: bool) -> None:
    """The competition weights per step and module of specs/lib/workspace.nspec's gated, softmax, top-2
    and attention workspaces (the constructs specs/examples/workspace_routing.nspec composes)."""
    import tempfile

    plt = pyplot()
    T = 8 if quick else 24
    t = np.arange(T + 1)[:, None]
    phase = 2 * np.pi * np.arange(MODULES)[None] / MODULES
    gates = (1.5 * (1 + np.sin(2 * np.pi * t / 12 + phase))).astype(np.float32)      # scores rotate
    salience = (0.5 + 6 * (1 + np.cos(2 * np.pi * t / 16 + phase)) / 2).astype(np.float32)
    eye = np.eye(MODULES, dtype=np.float32)
    inputs = {"write": np.tile(eye, (T + 1, 1, 1)), "salient": salience[:, :, None] * eye,
              "gates": gates, "query": np.tile(eye, (T + 1, 1, 1))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workspace_probe.nspec"
        path.write_text(WORKSPACES)
        model = nspec.load(path)
        got = model.run(inputs=inputs, steps=T + 1, seed=0, record=["att/content"])
    # step t's competition is read at step t + 1 (the content is state); the attention content is
    # recorded as it enters a step: step t + 1 holds step t's write, w_jm * salience_m in column m
    weights = {"gated": got["gated"][1:], "softmax": got["soft"][1:], "top-2": got["top2"][1:]}
    content = got["att/content"][1:]
    for j in range(WS_SLOTS):
        weights[f"attention, slot {j}"] = content[:, j] / salience[:T]
    soft = np.exp(gates[:T]) / np.exp(gates[:T]).sum(1, keepdims=True)
    print(f"softmax weights against NumPy: max |diff| {np.max(np.abs(weights['softmax'] - soft)):.1g}; "
          f"top-2 writers per step: {sorted(set((weights['top-2'] > 0).sum(1).tolist()))}; "
          f"attention slot weights sum to 1 within {np.max(np.abs(weights['attention, slot 0'].sum(1) - 1)):.1g}")

    fig, axes = plt.subplots(1, 6, figsize=(17, 4.6), layout="constrained",
                             gridspec_kw={"width_ratios": [1.1, 1, 1, 1, 1, 1]})
    a = axes[0]
    for m in range(MODULES):
        a.plot(gates[:T, m], range(T), label=f"module {m}")
    a.invert_yaxis()
    a.set_xlabel("score (gate), dimensionless")
    a.set_ylabel("step (1 s each)")
    a.set_title("scores given", fontsize=10)
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    for a, (name, w) in zip(axes[1:], weights.items()):
        image = a.imshow(w, cmap="viridis", vmin=0, vmax=1 if name != "gated" else 3, aspect="auto")
        a.set_title(name + (" (the scores themselves)" if name == "gated" else ""), fontsize=10)
        a.set_xlabel("module")
        a.set_xticks(range(MODULES))
        a.set_ylabel("step (1 s each)")
        fig.colorbar(image, ax=a, shrink=0.8, label="write weight" if name != "gated" else "write weight (0 to 3)")
    fig.suptitle("Workspace competition (specs/lib/workspace.nspec through Model.run): the weight of each "
                 "module's write per step.\nModule m writes e_m, so a read is the weights; the attention "
                 "slots compete on salience (0.5-6.5) with learned slot queries (seed 0)")
    save(fig, out, "workspace_routing")


# ---------------------------------------------------------------- hourglass MLP
def mixture_task(seed: int, n_train=2000, n_test=1000, d_x=64, latent=6, modes=3, classes=10):
    """tests/test_hourglass.py's task: 10 classes, each a mixture of 3 centres in a 6-d latent space
    (noise 0.35), mapped into 64-d by a fixed random isometry scaled by sqrt(64 / 6), plus N(0, 0.3^2)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, modes, latent))
    embed = np.linalg.qr(rng.normal(size=(d_x, latent)))[0].T * np.sqrt(d_x / latent)

    def draw(n):
        c, m = rng.integers(0, classes, n), rng.integers(0, modes, n)
        x = (centres[c, m] + 0.35 * rng.normal(size=(n, latent))) @ embed + 0.3 * rng.normal(size=(n, d_x))
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(c)

    return draw(n_train), draw(n_test)


def train_mlp(hyper: dict, task, steps: int, every: int = 10) -> tuple[int, list[int], list[float]]:
    """Adam (lr 3e-3, batch 128) on the cross-entropy through Model.to_torch(); trainable weights, and the
    held-out accuracy every ``every`` steps."""
    (x, label), (x_test, label_test) = task
    torch.manual_seed(0)
    module = nspec.load(SEEDS / "hourglass.nspec", **hyper).to_torch()
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    order = np.random.default_rng(0)
    at, accuracy = [], []
    batch = []
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                accuracy.append(float((module(x=x_test)["y"].argmax(-1) == label_test).float().mean()))
            at.append(step)
        if step == steps:
            break
        if len(batch) < 128:
            batch = order.permutation(len(x))
        idx, batch = batch[:128], batch[128:]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x=x[idx])["y"], label[idx]).backward()
        opt.step()
    return sum(p.numel() for p in module.parameters()), at, accuracy


def hourglass(out: Path, quick: bool) -> None:
    plt = pyplot()
    task = mixture_task(0, n_train=500 if quick else 2000, n_test=300 if quick else 1000)
    steps = 30 if quick else 300
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.3))
    pair = {"hourglass": dict(arch="hourglass", d_z=192, d_h=24, n_blocks=2),
            "conventional": dict(arch="conventional", d_h=80, n_blocks=2)}
    for name, hyper in pair.items():
        n, at, accuracy = train_mlp(hyper, task, steps)
        print(f"{name} ({n} trainable): held-out accuracy {accuracy[-1]:.3f} after {steps} steps")
        a.plot(at, accuracy, label=f"{name} ({n:,} trainable weights)")
    a.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance 0.10")
    a.set_xlabel("Adam step (batch 128, lr 3e-3)")
    a.set_ylabel("held-out accuracy (1000 samples)")
    a.set_ylim(0, 1)
    a.set_title("same parameter count, over training")
    a.legend(fontsize=8)
    sweep = {"hourglass": [dict(arch="hourglass", d_z=192, d_h=h, n_blocks=2) for h in (6, 24, 96)],
             "conventional": [dict(arch="conventional", d_h=h, n_blocks=2) for h in (72, 160, 320)]}
    sweep_steps = 30 if quick else 150
    for name, hypers in sweep.items():
        points = [train_mlp(h, task, sweep_steps, every=sweep_steps) for h in (hypers[:1] if quick else hypers)]
        print(name, "sweep:", [(n, round(acc[-1], 3)) for n, _, acc in points])
        b.plot([n for n, _, _ in points], [acc[-1] for _, _, acc in points], marker="o", label=name)
        for (n, _, acc), h in zip(points, hypers):
            b.annotate(f"d_h {h['d_h']}", (n, acc[-1]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    b.set_xscale("log")
    b.margins(y=0.15)
    b.set_xlabel("trainable weights (hourglass: plus the frozen 192 x 64 lift)")
    b.set_ylabel(f"held-out accuracy after {sweep_steps} steps")
    b.set_title("over a width sweep (d_z 192 for the hourglass)")
    b.legend(fontsize=8)
    fig.suptitle("Hourglass MLP vs conventional residual MLP (specs/seeds/hourglass.nspec through Model.to_torch()),\n"
                 "tests/test_hourglass.py's 10-class mixture task in 64-d, task seed 0")
    fig.tight_layout()
    save(fig, out, "hourglass")


# ---------------------------------------------------------------- SpikingBrain
def spikingbrain(out: Path, quick: bool) -> None:
    """Int2Spike's binary, ternary and bitwise codes of eight integer counts as rasters, their decoded values,
    and the IF expansion's spike count against the integer count."""
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    spec = SEEDS / "spikingbrain.nspec"
    n = np.array([0, 3, 7, 12, 24, 30, -5, -13], np.float32)            # D = 8 features, max_count 24
    codes = nspec.load(spec, target="Int2Spike").run(inputs={"n": n[None, None]}, steps=1, batch=1)
    codes = {k: v[0, 0] for k, v in codes.items()}
    counts = np.arange(-40, 41, 4 if quick else 1).astype(np.float32)
    expansion = nspec.load(spec, target="IFExpansion").run(
        inputs={"n": np.repeat(counts[:, None], 8, axis=1)}, steps=24, batch=len(counts))
    fired = expansion["fired"][:, :, 0]                                    # [count, step], feature 0
    for name in ("binary", "ternary", "bitwise", "signmag"):
        print(f"{name:8s} decodes {codes[name + '_decoded'].astype(int).tolist()}")
    print(f"IF expansion over 24 steps: spike count == clip(n, -24, 24) for every n in -40..40: "
          f"{bool(np.all(fired.sum(1) == np.clip(counts, -24, 24)))}")

    colours = ListedColormap(["tab:red", "white", "black"])
    fig = plt.figure(figsize=(16, 5.8), layout="constrained")
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 0.9, 0.9, 1.3])
    bits = [16, 8, 4, 2, 1]
    for j, (name, title) in enumerate([("binary", "binary {0, 1}: n spikes of +1"),
                                       ("ternary", "ternary {-1, 0, 1}: |n| spikes of sign(n)"),
                                       ("bitwise", "bitwise {0, 1}: step t has place 2^(4-t)"),
                                       ("signmag", "sign-magnitude {-1, 0, 1}")]):
        a = fig.add_subplot(grid[0, j])
        train = codes[name]
        a.imshow(train, cmap=colours, vmin=-1.5, vmax=1.5, aspect="auto", interpolation="nearest")
        a.set_xticks(range(8), [str(int(v)) for v in n])
        a.set_xticks(np.arange(-0.5, 8), minor=True)
        a.set_yticks(np.arange(-0.5, len(train)), minor=True)
        a.grid(which="minor", color="lightgrey", lw=0.5)
        a.tick_params(which="minor", length=0)
        a.set_xlabel("integer count n of each feature")
        if len(train) == len(bits):
            a.set_yticks(range(len(bits)), [f"{t} ({p})" for t, p in enumerate(bits)])
            a.set_ylabel("spike step t  (place value)")
        else:
            a.set_ylabel("spike step t")
        decoded = codes[name + "_decoded"].astype(int)
        a.set_title(f"{title}\ndecoded: {' '.join(map(str, decoded))}", fontsize=9)
    a = fig.add_subplot(grid[0, 4])
    a.plot(counts, fired.sum(1), "o", ms=3, label="IF expansion: spikes fired in 24 steps (signed)")
    a.plot(counts, np.clip(counts, -24, 24), color="grey", lw=0.8, label="clip(n, -24, 24)")
    a.plot(counts, counts, color="grey", lw=0.8, ls=":", label="n")
    a.set_xlabel("integer count n given at the first step")
    a.set_ylabel("net spike count (spikes)")
    a.set_title("IF neuron, soft reset, no leak (IFExpansion)", fontsize=9)
    a.legend(fontsize=8, loc="lower right")
    fig.suptitle("SpikingBrain spike coding (specs/seeds/spikingbrain.nspec: Int2Spike and IFExpansion through "
                 "Model.run; max_count 24, B = 5 bits)\nblack: +1 spike, red: -1 spike; out of range (30, and "
                 "negatives in the unsigned codes) a code saturates to the nearest end of its range")
    save(fig, out, "spikingbrain")


FIGURES = {"recurrent_cells": recurrent_cells, "mpsae": mpsae, "sequence_mixers": sequence_mixers,
           "workspace_routing": workspace_routing, "hourglass": hourglass,
           "spikingbrain": spikingbrain}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FIGURES), help="draw these figures only")
    ap.add_argument("--quick", action="store_true", help="tiny runs, to check the script")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.only or sorted(FIGURES):
        start = time.time()
        FIGURES[name](Path(args.out), args.quick)
        print(f"{name}: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
