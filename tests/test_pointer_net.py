"""The Pointer Network seed (``specs/seeds/pointer_net.nspec``): Vinyals, Fortunato and Jaitly, NeurIPS
2015, SEED_MODELS.md section 9.  There is no official code, so the truth is the paper's equations written
as a small hand-written torch model (an ``nn.LSTM`` encoder, an ``nn.LSTMCell`` decoder, bias-free
``nn.Linear`` attention, float64), whose ``state_dict`` keys are the spec's weight keys:

    e_j = LSTM(x_j, e_{j-1});  d_i = LSTMCell(z_i, d_{i-1}), d_0 = e_n, z_1 = decoder_start, z_{i+1} = x_{C_i};
    u_ij = v^T tanh(W1 e_j + W2 d_i), -1e9 where j is among C_1..C_{i-1};  p(C_i | C_<i, x) = softmax_j u_ij.

Checked: the logits under teacher forcing and under greedy decoding on every backend; the gradients of
the spec's torch module; that the mask of chosen positions makes every greedy decode a permutation; and
that a tiny network trained to sort 5-8 numbers sorts held-out sequences of 5, and of 10 (beyond the
training lengths), far above chance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seeds" / "pointer_net.nspec"
TOLERANCE = 1e-5
MASKED = -1e9

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------- the oracle, from SEED_MODELS.md section 9
def reference_model(sd: dict, input_size: int, hidden_size: int, mask: bool = True):
    """The hand-written torch PointerNet in float64 with the weights ``sd``: ``run(x, target=None)`` gives
    the logits [B, n, n], teacher-forced by ``target`` [B, n] or, without it, fed its own argmax; chosen
    positions masked unless ``mask`` is false."""
    import torch
    from torch import nn

    class PointerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.LSTM(input_size, hidden_size, batch_first=True)
            self.decoder = nn.LSTMCell(input_size, hidden_size)
            self.attention = nn.ModuleDict({"W1": nn.Linear(hidden_size, hidden_size, bias=False),
                                            "W2": nn.Linear(hidden_size, hidden_size, bias=False),
                                            "v": nn.Linear(hidden_size, 1, bias=False)})
            self.decoder_start = nn.Parameter(torch.zeros(input_size))

        def forward(self, x, target=None):
            batch, n, _ = x.shape
            e, (h, c) = self.encoder(x)
            h, c = h[0], c[0]
            keys = self.attention["W1"](e)
            z = self.decoder_start.expand(batch, -1)
            chosen = torch.zeros(batch, n, dtype=torch.bool)
            rows = []
            for i in range(n):
                h, c = self.decoder(z, (h, c))
                u = self.attention["v"](torch.tanh(keys + self.attention["W2"](h)[:, None])).squeeze(-1)
                u = u.masked_fill(chosen, MASKED) if mask else u
                rows.append(u)
                pick = target[:, i] if target is not None else u.argmax(-1)
                chosen = chosen | nn.functional.one_hot(pick, n).bool()
                z = x[torch.arange(batch), pick]
            return torch.stack(rows, 1)

    model = PointerNet().double()
    model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float64) for k, v in sd.items()}, strict=True)

    def run(x, target=None):
        x = torch.as_tensor(np.asarray(x, np.float64))
        return model(x, None if target is None else torch.as_tensor(target))

    return run, model


def random_state_dict(input_size: int, hidden_size: int, rng) -> dict:
    """Every weight U(-1, 1): larger than the paper's U(-0.08, 0.08) init, so the logits spread."""
    H = hidden_size
    shapes = {"encoder.weight_ih_l0": (4 * H, input_size), "encoder.weight_hh_l0": (4 * H, H),
              "encoder.bias_ih_l0": (4 * H,), "encoder.bias_hh_l0": (4 * H,),
              "decoder.weight_ih": (4 * H, input_size), "decoder.weight_hh": (4 * H, H),
              "decoder.bias_ih": (4 * H,), "decoder.bias_hh": (4 * H,),
              "attention.W1.weight": (H, H), "attention.W2.weight": (H, H), "attention.v.weight": (1, H),
              "decoder_start": (input_size,)}
    return {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}


def sorting_task(rng, batch: int, n: int):
    """``batch`` sequences of n numbers U[0, 1) as x [batch, n, 1], and the pointers that sort each."""
    x = rng.random((batch, n, 1)).astype(np.float32)
    return x, np.argsort(x[..., 0], axis=-1)


# ---------------------------------------------------------------- forward on every backend
def nspec_run(tmp_path, hyper: dict, sd: dict, x, target, backend) -> dict:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "in.npz", x=x, target=target)
    out = tmp_path / f"out_{backend}.npz"
    params = [a for k, v in hyper.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    assert main(["run", str(SPEC)] + params + ["--weights", str(tmp_path / "w.safetensors"), "--inputs",
                 str(tmp_path / "in.npz"), "--output", str(out), "--backend", backend, "-q"]) == 0
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


# TVM compiles the unrolled graph (n encoder and n decoder steps) in seconds: only at 3 steps of 4 units.
SMALL = dict(input_size=1, hidden_size=6)
TINY = dict(input_size=1, hidden_size=4)


@pytest.mark.parametrize("hyper, n, decode, backend", [
    (SMALL, 6, "teacher", "reference"), (SMALL, 6, "teacher", "onnxruntime"), (SMALL, 6, "teacher", "torch"),
    (SMALL, 6, "greedy", "reference"), (SMALL, 6, "greedy", "onnxruntime"), (SMALL, 6, "greedy", "torch"),
    (dict(SMALL, input_size=3), 5, "teacher", "onnxruntime"),
    (dict(SMALL, mask_chosen=False), 6, "greedy", "onnxruntime"),
    (TINY, 3, "teacher", "tvm"), (TINY, 3, "greedy", "tvm"),
], ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items() if k != "hidden_size") if isinstance(v, dict) else str(v))
def test_forward_equals_a_hand_written_torch_pointer_net(hyper, n, decode, backend, tmp_path):
    """Random weights through ``nspec run --weights``: the logits over positions (teacher-forced by a
    random permutation, or fed their own argmax) within 1e-5 of the hand-written model's, masked entries
    exactly -1e9, and the pointers their argmax; ``mask_chosen=false`` against the oracle without its mask."""
    rng = np.random.default_rng(n)
    sd = random_state_dict(hyper["input_size"], hyper["hidden_size"], rng)
    mask = hyper.get("mask_chosen", True)
    x = rng.normal(size=(3, n, hyper["input_size"])).astype(np.float32)
    target = np.stack([rng.permutation(n) for _ in range(3)])
    got = nspec_run(tmp_path, dict(hyper, decode=decode), sd, x, target, backend)
    run, _ = reference_model(sd, hyper["input_size"], hyper["hidden_size"], mask)
    want = run(x, target if decode == "teacher" else None).detach().numpy()
    assert got["logits"].shape == want.shape == (3, n, n)
    assert np.any(want < MASKED / 2) == mask
    live = want > MASKED / 2
    assert np.array_equal(got["logits"] > MASKED / 2, live)
    assert np.all(got["logits"][~live] == np.float32(MASKED))
    assert np.max(np.abs(got["logits"][live] - want[live])) <= TOLERANCE * max(1.0, np.max(np.abs(want[live])))
    assert np.ptp(want[live]) > 0.2  # the scores differ across positions: the comparison can tell
    assert np.array_equal(got["pointers"], want.argmax(-1))


def test_gradients_equal_the_hand_written_model():
    """d (teacher-forced cross-entropy) / d every weight on the spec's torch module equals torch autograd of
    the hand-written model (float64) within 1e-4 of the largest, and every weight is reached."""
    import torch

    import nspec

    rng = np.random.default_rng(11)
    sd = random_state_dict(2, 5, rng)
    x = rng.normal(size=(4, 6, 2)).astype(np.float32)
    target = np.stack([rng.permutation(6) for _ in range(4)])
    module = nspec.load(SPEC, **dict(input_size=2, hidden_size=5)).to_torch()
    module.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
    logits = module(x=torch.as_tensor(x), target=torch.as_tensor(target))["logits"]
    torch.nn.functional.cross_entropy(logits.double().reshape(-1, 6), torch.as_tensor(target).reshape(-1)).backward()

    run, model = reference_model(sd, 2, 5)
    torch.nn.functional.cross_entropy(run(x, target).reshape(-1, 6), torch.as_tensor(target).reshape(-1)).backward()
    want = dict(model.named_parameters())
    for name, p in module.named_parameters():
        g = want[name].grad
        assert g.abs().max() > 0, name
        assert float((p.grad.double() - g).abs().max()) <= 1e-4 * float(g.abs().max()), name


def test_the_mask_makes_every_greedy_decode_a_permutation():
    """With random weights, the unmasked scores (``mask_chosen=false``) point at the same position again
    and again; with the mask, each of the n greedy pointers is a distinct position."""
    import torch

    import nspec

    rng = np.random.default_rng(5)
    sd = {k: torch.as_tensor(v) for k, v in random_state_dict(1, 8, rng).items()}
    x, _ = sorting_task(rng, 64, 7)
    inputs = dict(x=torch.as_tensor(x), target=torch.zeros(64, 7, dtype=torch.int64))
    pointers = {}
    for mask in (True, False):
        module = nspec.load(SPEC, hidden_size=8, decode="greedy", mask_chosen=mask).to_torch()
        module.load_state_dict(sd, strict=True)
        pointers[mask] = module(**inputs)["pointers"].numpy()
    assert all(sorted(p) == list(range(7)) for p in pointers[True])
    assert np.mean([len(set(p)) < 7 for p in pointers[False]]) > 0.5


# ---------------------------------------------------------------- learning to sort
def train_sorter(hidden_size: int, lengths, steps: int, batch: int, lr: float, seed: int, mask: bool = True):
    """Adam on the teacher-forced cross-entropy over pointer indices, gradient norm clipped at 2 (the
    paper's clip), one length of ``lengths`` per step in turn.  The spec's graph is unrolled for one n,
    so each length is its own torch module; ``torch.func.functional_call`` runs them all on one shared
    set of weights; ``mask`` sets the spec's ``mask_chosen``.  Returns (the weights, the loss per step)."""
    import torch
    from torch.func import functional_call

    import nspec

    torch.manual_seed(seed)
    modules = {n: nspec.load(SPEC, hidden_size=hidden_size, n=n, mask_chosen=mask).to_torch() for n in lengths}
    weights = {k: torch.nn.Parameter(v.detach().clone()) for k, v in modules[lengths[0]].named_parameters()}
    opt = torch.optim.Adam(weights.values(), lr=lr)
    rng, losses = np.random.default_rng(seed), []
    for step in range(steps):
        n = lengths[step % len(lengths)]
        x, target = (torch.as_tensor(a) for a in sorting_task(rng, batch, n))
        logits = functional_call(modules[n], weights, (), dict(x=x, target=target))["logits"]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights.values(), 2.0)
        opt.step()
        losses.append(loss.item())
    return weights, losses


def sorted_fraction(weights: dict, hidden_size: int, n: int, count: int, seed: int,
                    mask: bool = True) -> tuple[float, float]:
    """Greedy decoding of ``count`` held-out sequences of length n: (the fraction sorted exactly, the
    fraction of pointers right)."""
    import torch
    from torch.func import functional_call

    import nspec

    module = nspec.load(SPEC, hidden_size=hidden_size, n=n, decode="greedy", mask_chosen=mask).to_torch()
    x, target = sorting_task(np.random.default_rng(seed), count, n)
    with torch.no_grad():
        pointers = functional_call(module, weights, (), dict(x=torch.as_tensor(x),
                                                             target=torch.as_tensor(target)))["pointers"].numpy()
    return float(np.mean((pointers == target).all(-1))), float(np.mean(pointers == target))


def test_a_tiny_pointer_net_learns_to_sort_and_sorts_longer_sequences():
    """16 units, trained 200 Adam steps (lr 1e-2, batch 64) on sequences of 5-8 numbers U[0, 1), decoded
    greedily on 500 held-out sequences of length 5 and of length 10 (never trained on).

    Chance, a uniformly random permutation, sorts a sequence exactly with probability 1/n!: 1/120 = 0.0083
    at n = 5 and 1/3628800 = 2.8e-7 at n = 10; pointer by pointer, a random permutation is right 1/n of
    the time (0.2 and 0.1).  Measured over training seeds 0, 1, 2: n = 5 sorted exactly 0.910, 0.952, 0.950;
    n = 10 sorted exactly 0.642, 0.732, 0.720, pointers right 0.918, 0.939, 0.936.  Asserted (seed 0): n = 5
    at least 0.5 (60 x chance), n = 10 at least 0.2 (chance 2.8e-7), its pointers at least 0.8 (chance 0.1).
    bench/pointer_net.py trains longer, and without the mask."""
    weights, losses = train_sorter(16, [5, 6, 7, 8], steps=200, batch=64, lr=1e-2, seed=0)
    # the first loss is that of uniform pointers over the positions left: ln(5!) / 5 = 0.957 at n = 5
    assert abs(losses[0] - math.log(120) / 5) < 0.01
    assert np.mean(losses[-20:]) < 0.2 * losses[0]
    exact5, _ = sorted_fraction(weights, 16, 5, 500, seed=1)
    exact10, pointwise10 = sorted_fraction(weights, 16, 10, 500, seed=2)
    assert exact5 >= 0.5, exact5               # 60 x chance (1/120)
    assert exact10 >= 0.2, exact10             # chance 2.8e-7
    assert pointwise10 >= 0.8, pointwise10     # chance 0.1
