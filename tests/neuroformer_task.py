"""The Neuroformer seed's task (``specs/seeds/neuroformer.nspec``), shared by tests/test_neuroformer.py and
bench/neuroformer.py: trials recorded from the spec's own tuned Poisson population, their spikes as
(neuron, time-bin) tokens, the model's formulas hand-written in torch (the oracle of the spec's forward),
and training of the spec's torch module on next-spike prediction plus contrastive alignment.

A trial: a stimulus direction theta, s = (cos theta, sin theta), held for ``TRIAL_STEPS`` steps of 1 ms;
the population (``StimulusResponse``) fires; the trial's spikes in time order (neuron index within a
step) are its tokens, ``seq_len`` of them drawn at random without changing their order, each with its
time bin floor(t / (TRIAL_STEPS ms / n_bins)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import nspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "neuroformer.nspec"
TRIAL_STEPS = 200          # 200 ms at dt = 1 ms: about 60 spikes of 16 neurons at the defaults
TEMPERATURE = 0.1          # the contrastive loss's (fixed, not learned)


@dataclass
class Trials:
    """Tokenised trials: neuron and bin [B, seq_len] (int64), stimulus [B, 2], theta [B]."""

    neuron: np.ndarray
    bin: np.ndarray
    stimulus: np.ndarray
    theta: np.ndarray
    rates: np.ndarray      # [B, n_neurons], Hz: each trial's true rates (for the rate oracle)
    spikes: tuple = field(default=((), (), ()))   # every recorded spike: (step, neuron, trial), for a raster


def directions(theta) -> np.ndarray:
    theta = np.asarray(theta, np.float64)
    return np.stack([np.cos(theta), np.sin(theta)], axis=-1).astype(np.float32)


def tuning_rates(theta, n_neurons=16, base=2.0, peak=80.0, kappa=4.0) -> np.ndarray:
    """The spec's Tuning in NumPy (Hz): base + peak exp(kappa (cos(theta - phi_i) - 1))."""
    phi = 2 * np.pi * np.arange(n_neurons) / n_neurons
    return base + peak * np.exp(kappa * (np.cos(np.asarray(theta)[:, None] - phi) - 1))


def record(theta, seed: int, seq_len=32, n_neurons=16, n_bins=8) -> Trials:
    """Run the spec's population on the reference interpreter, one batch row per trial, and tokenise.
    Trials with fewer than ``seq_len`` spikes are dropped (a count of Poisson(59.4): 4 in 10^5 at the defaults)."""
    model = nspec.load(SPEC, target="StimulusResponse", dt="1 ms", n_neurons=n_neurons)
    stimulus = directions(theta)
    out = model.run(inputs={"stimulus": stimulus}, steps=TRIAL_STEPS, batch=len(stimulus), seed=seed)
    step = np.rint(out["spikes.t"] / 1e-3).astype(np.int64)
    trial, index = out["spikes.trial"], out["spikes.i"]
    rng = np.random.default_rng(seed)
    keep, neuron, bins = [], [], []
    for b in range(len(stimulus)):
        mine = np.flatnonzero(trial == b)            # already in time order, then neuron index
        if len(mine) < seq_len:
            continue
        pick = mine[np.sort(rng.choice(len(mine), seq_len, replace=False))]
        keep.append(b)
        neuron.append(index[pick])
        bins.append(np.minimum(step[pick] * n_bins // TRIAL_STEPS, n_bins - 1))
    theta = np.asarray(theta)[keep]
    return Trials(np.array(neuron, np.int64), np.array(bins, np.int64), stimulus[keep], theta,
                  tuning_rates(theta, n_neurons), (step, index, trial))


# ---------------------------------------------------------------- the oracle: the formulas in torch
def torch_forward(sd: dict, neuron, bins, stimulus, h: dict):
    """The spec's Neuroformer written out in torch (float64): (logits, spike_embedding, stimulus_embedding)."""
    import torch
    import torch.nn.functional as F

    p = {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v), dtype=torch.float64)
         for k, v in sd.items()}
    n = torch.as_tensor(neuron)
    x = p["neuron_embedding.weight"][n] + p["bin_embedding.weight"][torch.as_tensor(bins)]
    B, T, D = x.shape
    H, eps = h.get("n_heads", 2), 1e-5
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(h.get("n_layers", 1)):
        b = f"blocks.{i}."
        a = F.layer_norm(x, (D,), p[b + "ln1.weight"], p[b + "ln1.bias"], eps)
        q, k, v = (a @ p[b + f"attn.{w}_proj.weight"].T for w in "qkv")
        q, k, v = (t.reshape(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))   # [B, H, T, dk]
        scores = (q @ k.transpose(-1, -2) / np.sqrt(D // H)).masked_fill(~mask, float("-inf"))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + o @ p[b + "attn.o_proj.weight"].T
        m = F.layer_norm(x, (D,), p[b + "ln2.weight"], p[b + "ln2.bias"], eps)
        x = x + F.relu(m @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"]) @ p[b + "mlp.fc2.weight"].T \
            + p[b + "mlp.fc2.bias"]
    hid = F.layer_norm(x, (D,), p["ln_f.weight"], p["ln_f.bias"], eps)
    logits = hid @ p["head.weight"].T + p["head.bias"]
    zs = hid.mean(1) @ p["spike_proj.weight"].T
    s = torch.as_tensor(np.asarray(stimulus), dtype=torch.float64)
    zt = F.relu(s @ p["stimulus_encoder.fc1.weight"].T + p["stimulus_encoder.fc1.bias"]) \
        @ p["stimulus_encoder.fc2.weight"].T + p["stimulus_encoder.fc2.bias"]
    unit = lambda z: z / torch.sqrt((z * z).sum(-1, keepdim=True) + 1e-12)   # noqa: E731
    return logits, unit(zs), unit(zt)


# ---------------------------------------------------------------- training and evaluation
def losses(out: dict, neuron, temperature=TEMPERATURE):
    """(next-token cross entropy, symmetric InfoNCE) of the module's outputs on one batch."""
    import torch
    import torch.nn.functional as F

    logits = out["logits"][:, :-1]
    nt = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), neuron[:, 1:].reshape(-1))
    sim = out["spike_embedding"] @ out["stimulus_embedding"].T / temperature
    target = torch.arange(len(sim))
    return nt, (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def train(data: Trials, h: dict, steps: int, batch=64, lr=3e-3, seed=0, every=0, measure=None):
    """Adam on the spec's torch module (``Model.to_torch()``), loss = next-token CE + InfoNCE.  Returns
    the module and its history, one (step, next-token loss, InfoNCE loss, metrics) per step, where
    metrics is ``measure(module)`` every ``every`` steps and None otherwise."""
    import torch

    torch.manual_seed(seed)
    module = nspec.load(SPEC, **h).to_torch()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    tensors = {k: torch.as_tensor(getattr(data, k)) for k in ("neuron", "bin", "stimulus")}
    history = []
    for s in range(steps):
        idx = torch.as_tensor(rng.choice(len(data.neuron), batch, replace=False))
        out = module(**{k: v[idx] for k, v in tensors.items()})
        nt, nce = losses(out, tensors["neuron"][idx])
        opt.zero_grad()
        (nt + nce).backward()
        opt.step()
        metrics = measure(module) if measure is not None and every and (s + 1) % every == 0 else None
        history.append((s, nt.item(), nce.item(), metrics))
    return module, history


def evaluate(module, test: Trials, K: int) -> dict:
    """Next-spike accuracy (argmax logits against the next token's neuron) and stimulus retrieval:
    each test trial's spike embedding against the K candidate stimuli theta_k = 2 pi k / K (the test
    trials' stimuli are these), right when its own is the most similar."""
    import torch

    with torch.no_grad():
        out = module(neuron=torch.as_tensor(test.neuron), bin=torch.as_tensor(test.bin),
                     stimulus=torch.as_tensor(test.stimulus))
        candidates = module(neuron=torch.as_tensor(test.neuron[:K]), bin=torch.as_tensor(test.bin[:K]),
                            stimulus=torch.as_tensor(directions(2 * np.pi * np.arange(K) / K)))
    pred = out["logits"][:, :-1].argmax(-1).numpy()
    sim = out["spike_embedding"].numpy() @ candidates["stimulus_embedding"].numpy().T
    label = np.rint(test.theta / (2 * np.pi / K)).astype(int) % K
    return {"next_token": float(np.mean(pred == test.neuron[:, 1:])),
            "retrieval": float(np.mean(sim.argmax(-1) == label))}


def baselines(train_data: Trials, test: Trials, n_neurons=16) -> dict:
    """Chance 1/n_neurons; the unigram baseline (always the training set's most frequent neuron); the
    prefix mode (the neuron seen most often so far in the trial, the lowest index on ties); and the
    rate oracle: the argmax of the trial's true rates.  It knows the stimulus but not the order of the
    spikes, so it is a ceiling in practice, not a bound: spikes of one 1 ms step come in neuron order."""
    counts = np.bincount(train_data.neuron.ravel(), minlength=n_neurons)
    nxt = test.neuron[:, 1:]
    seen = np.cumsum(np.eye(n_neurons, dtype=np.int64)[test.neuron[:, :-1]], axis=1)   # [B, T-1, n] counts so far
    return {"chance": 1 / n_neurons, "unigram": float(np.mean(nxt == counts.argmax())),
            "prefix_mode": float(np.mean(nxt == seen.argmax(-1))),
            "oracle": float(np.mean(nxt == test.rates.argmax(-1)[:, None]))}
