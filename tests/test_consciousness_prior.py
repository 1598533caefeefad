"""The consciousness-prior bottleneck (``specs/seeds/consciousness_prior.nspec``): Bengio 2017, "The
consciousness prior" (arXiv 1709.08568), with the Tensor Brain's index and representation layers
(Tresp et al., arXiv 2109.13392).

No reference code, so the truth is the spec's header equations, written here as a float64 NumPy
oracle (the forward on every backend) and as a hand-written torch model (the straight-through
gradient of ``Model.to_torch()``).  Then the claim, on a toy task where a cue names the two
variables of eight that decide the label: the top-k bottleneck learns to pick the cued variables,
also for cue pairs never seen in training, and the model with it generalises to those pairs where
the same model reading every proposal does not.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import nspec

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seeds" / "consciousness_prior.nspec"
N, K = 8, 2

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------- the oracle, from the spec's header
def forward(sd: dict, x, cue, arch: str) -> dict[str, np.ndarray]:
    """y, index and attention in float64 from the state dict ``sd`` (the spec's parameter names)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x, cue = np.asarray(x, np.float64), np.asarray(cue, np.float64)
    h = np.maximum(x[:, :, None] * sd["enc_w1"] + sd["enc_b1"], 0)
    v = np.einsum("bnh,nvh->bnv", h, sd["enc_w2"]) + sd["enc_b2"]              # [B, n, d_v]
    if arch == "bottleneck":
        match = sd["w_q"].T @ sd["index_keys"].T / np.sqrt(sd["w_q"].shape[0])    # [cued j, proposal i]
        scores = np.where(cue[:, :, None] > 0.5, match, -1e4).max(axis=1)        # [B, n]
        soft = np.exp(scores - scores.max(-1, keepdims=True))
        soft /= soft.sum(-1, keepdims=True)
        index = np.zeros_like(scores)
        np.put_along_axis(index, np.argsort(-scores, axis=-1, kind="stable")[:, :K], 1, axis=-1)
        state = np.einsum("bn,bnv->bv", index, v)
    else:
        state = np.concatenate([v.reshape(len(x), -1), cue], axis=-1)
        index, soft = np.ones_like(cue), np.full_like(cue, 1 / N)
    y = np.maximum(state @ sd["head_w1"].T + sd["head_b1"], 0) @ sd["head_w2"].T + sd["head_b2"]
    return {"y": y, "index": index, "attention": soft}


def random_cues(rng, n: int) -> np.ndarray:
    """Two-hot cues on random pairs, some rows with one or three cued variables."""
    cue = np.zeros((n, N), np.float32)
    for row in cue:
        row[rng.choice(N, size=rng.choice([1, 2, 2, 3]), replace=False)] = 1
    return cue


@pytest.mark.parametrize("arch", ["bottleneck", "all"])
@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch", "tvm"])
def test_forward_equals_the_oracle(arch, backend):
    """Random N(0, 1) weights, cues on one to three variables: every output within 1e-5 of the oracle."""
    model = nspec.load(SPEC, arch=arch)
    rng = np.random.default_rng(2)
    sd = {k: rng.normal(size=np.shape(v)).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_weights(sd)
    x = rng.normal(size=(6, N)).astype(np.float32)
    cue = random_cues(rng, 6)
    got = model.run(inputs={"x": x[:, None], "cue": cue[:, None]}, steps=1, batch=6, backend=backend)
    want = forward(sd, x, cue, arch)
    for name, value in want.items():
        np.testing.assert_allclose(got[name][:, 0], value, rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.abs(want["y"]).max() > 0.5
    if arch == "bottleneck":  # the winners are not always the cued ones under random weights
        assert (want["index"].sum(-1) == K).all() and not (want["index"] == cue).all()


def test_straight_through_gradient_equals_a_hand_written_torch_model():
    """Forward the state is the k winners' sum; backward the scores get softmax(s)'s gradient: the
    gradients of sum(y * R) for every weight equal a hand-written torch model's."""
    model = nspec.load(SPEC)
    module = model.to_torch()
    rng = np.random.default_rng(4)
    x, cue = torch.tensor(rng.normal(size=(5, N)), dtype=torch.float32), torch.tensor(random_cues(rng, 5))
    R = torch.tensor(rng.normal(size=(5, 2)), dtype=torch.float32)
    (module(x=x, cue=cue)["y"] * R).sum().backward()

    p = {k: v.detach().clone().requires_grad_(True) for k, v in module.state_dict().items()}
    h = torch.relu(x[:, :, None] * p["enc_w1"] + p["enc_b1"])
    v = torch.einsum("bnh,nvh->bnv", h, p["enc_w2"]) + p["enc_b2"]
    match = p["w_q"].T @ p["index_keys"].T / 8 ** 0.5
    scores = torch.where(cue[:, :, None] > 0.5, match, torch.tensor(-1e4)).amax(dim=1)
    soft = torch.softmax(scores, dim=-1)
    mask = torch.zeros_like(scores).scatter(1, torch.argsort(-scores, dim=-1, stable=True)[:, :K], 1.0)
    state = torch.einsum("bn,bnv->bv", mask + soft - soft.detach(), v)
    y = torch.relu(state @ p["head_w1"].T + p["head_b1"]) @ p["head_w2"].T + p["head_b2"]
    (y * R).sum().backward()
    for name, param in module.named_parameters():
        assert p[name].grad.abs().max() > 0, name  # the scores' parameters too: the gradient goes through
        torch.testing.assert_close(param.grad, p[name].grad, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------- the task
PAIRS = list(itertools.combinations(range(N), 2))
HELD_OUT = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 4), (3, 7)]   # 6 of 28; every variable keeps 5+ partners
TRAIN_PAIRS = [p for p in PAIRS if p not in HELD_OUT]
THRESHOLD = 0.5


def task_batch(rng, pairs, n: int):
    """x ~ N(0, 1)^8, a two-hot cue on a pair (a, b) drawn from ``pairs``, and the label
    [x_a > 0.5] xor [x_b > 0.5].  The threshold gives each cued variable a first-order link to the
    label (P(label | x_a > 0.5) = 0.69 against 0.31), a signal the selection can learn from; the
    label is still an interaction of the two.  Majority-class chance: 1 - 2 * 0.309 * 0.691 = 0.573."""
    pair = np.asarray(pairs)[rng.integers(0, len(pairs), n)]
    x = rng.normal(size=(n, N)).astype(np.float32)
    cue = np.zeros((n, N), np.float32)
    cue[np.arange(n)[:, None], pair] = 1
    a, b = x[np.arange(n), pair[:, 0]], x[np.arange(n), pair[:, 1]]
    return x, cue, ((a > THRESHOLD) ^ (b > THRESHOLD)).astype(np.int64)


def train(arch: str, seed: int, steps: int = 1200, lr: float = 1e-2, batch: int = 128, every=None):
    """Adam on cross-entropy over fresh batches of the training pairs; returns the torch module.
    ``every(step, module)``, if given, is called before the first step and after every 100th."""
    torch.manual_seed(seed)
    module = nspec.load(SPEC, arch=arch).to_torch()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        if every is not None and step % 100 == 0:
            every(step, module)
        x, cue, label = task_batch(rng, TRAIN_PAIRS, batch)
        loss = torch.nn.functional.cross_entropy(module(x=torch.tensor(x), cue=torch.tensor(cue))["y"],
                                                 torch.tensor(label))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if every is not None:
        every(steps, module)
    return module


def evaluate(module, pairs, n: int = 3000, seed: int = 1000) -> dict[str, float]:
    """Accuracy; the share of examples whose k selected indices are exactly the cued pair; the
    share of selected slots holding a cued variable."""
    x, cue, label = task_batch(np.random.default_rng(seed), pairs, n)
    with torch.no_grad():
        out = module(x=torch.tensor(x), cue=torch.tensor(cue))
    index = out["index"].numpy()
    return {"accuracy": float(np.mean(out["y"].numpy().argmax(-1) == label)),
            "exact": float(np.mean((index == cue).all(-1))),
            "per_slot": float((index * cue).sum() / index.sum())}


@pytest.fixture(scope="module")
def trained():
    return {arch: train(arch, seed=0) for arch in ("bottleneck", "all")}


def test_the_two_models_have_the_same_parameter_count(trained):
    counts = {arch: sum(p.numel() for p in m.parameters()) for arch, m in trained.items()}
    assert counts == {"bottleneck": 1890, "all": 1906}


def test_the_bottleneck_picks_the_cued_variables_also_for_unseen_pairs(trained):
    """Chance for the exact pair: 1 / C(8, 2) = 0.036; for one slot: k / N = 0.25.

    Measured (seeds 0, 1, 2, 3; 1200 Adam steps, lr 1e-2, batch 128; ``bench/consciousness_prior.py``):
    exact pair on the training pairs 1.0 at every seed; on the held-out pairs 0.837, 0.837, 1.0,
    0.837 (five of the six unseen pairs, or all six, picked every time; at seed 0 the pair (0, 1)
    selects 0 and 5).  Asserted (seed 0): 0.95 on the training pairs, 0.8 held out, and 0.9 of the
    selected slots hold a cued variable."""
    seen, unseen = evaluate(trained["bottleneck"], TRAIN_PAIRS), evaluate(trained["bottleneck"], HELD_OUT)
    assert seen["exact"] >= 0.95, seen
    assert unseen["exact"] >= 0.8 and unseen["per_slot"] >= 0.9, unseen


def test_the_bottleneck_generalises_to_unseen_pairs_and_reading_everything_does_not(trained):
    """Held-out accuracy (majority chance 0.573), measured at seeds 0, 1, 2, 3: bottleneck 0.847,
    0.916, 0.898, 0.857; reading every proposal and the cue 0.543, 0.557, 0.607, 0.496, though it
    fits the training pairs (0.815, 0.812, 0.817, 0.786; the bottleneck 0.980-0.987).  Asserted (seed 0):
    the bottleneck reaches 0.8 held out and beats the baseline by 0.2; the baseline reaches 0.75 on
    the training pairs (its held-out failure is not underfitting)."""
    held = {arch: evaluate(m, HELD_OUT)["accuracy"] for arch, m in trained.items()}
    assert held["bottleneck"] >= 0.8, held
    assert held["bottleneck"] >= held["all"] + 0.2, held
    assert evaluate(trained["all"], TRAIN_PAIRS)["accuracy"] >= 0.75
