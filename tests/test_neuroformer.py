"""The Neuroformer seed (``specs/seeds/neuroformer.nspec``), scaled down: Antoniades et al. 2024,
"Neuroformer: multimodal and multitask generative pretraining for brain data" (arXiv 2311.00136).

There is no reference code here, so the truth is the formulas of the spec's header, written out in
torch (``neuroformer_task.torch_forward``, float64): the forward on the reference interpreter, ONNX
Runtime, torch and TVM equals it within 1e-5, and the spec's torch module has its gradients.  Then the
task: trials recorded from the spec's own tuned Poisson population, trained through ``Model.to_torch()``
on next-spike prediction plus contrastive alignment with the stimulus; the claims and their chance
levels are in the test docstrings.
"""

from __future__ import annotations

import numpy as np
import pytest

import neuroformer_task as task
import nspec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SPEC = task.SPEC
SMALL = dict(n_neurons=7, n_bins=3, seq_len=6, d_model=8, n_heads=2, d_mlp=12, d_stim=2, d_stim_hidden=5,
             d_embed=4)


def random_state_dict(model, rng) -> dict:
    """Every weight random, LayerNorm gains and offsets and biases too (1 and 0 would hide a swap)."""
    return {k: rng.normal(0, 0.8 if v.ndim < 2 else 1 / np.sqrt(v.shape[-1]), v.shape).astype(np.float32)
            + (1.0 if k.endswith("ln1.weight") or k.endswith("ln2.weight") or k == "ln_f.weight" else 0.0)
            for k, v in model.state_dict().items()}


def inputs(h: dict, B: int, rng) -> dict:
    return {"neuron": rng.integers(0, h["n_neurons"], (B, h["seq_len"])),
            "bin": np.sort(rng.integers(0, h["n_bins"], (B, h["seq_len"])), axis=1),
            "stimulus": task.directions(rng.uniform(0, 2 * np.pi, B))}


@pytest.mark.parametrize("h, backend", [
    (SMALL, "reference"), (SMALL, "onnxruntime"), (SMALL, "torch"), (SMALL, "tvm"),
    (dict(SMALL, n_layers=2, seq_len=11), "reference"), (dict(SMALL, n_layers=2, seq_len=11), "onnxruntime"),
    (dict(SMALL, n_layers=2, seq_len=11), "torch"),
], ids=["1-layer-reference", "1-layer-onnxruntime", "1-layer-torch", "1-layer-tvm", "2-layers-reference",
        "2-layers-onnxruntime", "2-layers-torch"])
def test_forward_equals_a_hand_written_torch_model(h, backend):
    """Random weights and tokens: logits and both embeddings within 1e-5 of the torch formulas.  TVM
    runs one layer only: its compile costs 5.6 s of CPU cold (15 s of wall time on the shared 2-core
    machine), and two layers repeat the same ops."""
    rng = np.random.default_rng(h["seq_len"])
    model = nspec.load(SPEC, **h)
    sd = random_state_dict(model, rng)
    model.load_weights(sd)
    x = inputs(h, 3, rng)
    got = model.run(inputs=x, batch=3, backend=backend)
    want = [t.numpy() for t in task.torch_forward(sd, x["neuron"], x["bin"], x["stimulus"], h)]
    for name, w in zip(("logits", "spike_embedding", "stimulus_embedding"), want):
        assert got[name].shape == w.shape, name
        assert np.max(np.abs(got[name] - w)) <= 1e-5 * max(1.0, np.max(np.abs(w))), name
    assert np.max(np.abs(want[0])) > 0.5                                       # the comparison can tell
    assert np.max(np.abs(want[0][:, 0] - want[0][:, -1])) > 1e-2                # positions differ


def test_causal_a_later_token_changes_nothing_before_it():
    """Changing the last token (neuron and bin) leaves every earlier position's logits as they were."""
    rng = np.random.default_rng(0)
    model = nspec.load(SPEC, **SMALL)
    model.load_weights(random_state_dict(model, rng))
    x = inputs(SMALL, 2, rng)
    y = dict(x, neuron=x["neuron"].copy(), bin=x["bin"].copy())
    y["neuron"][:, -1] = (y["neuron"][:, -1] + 1) % SMALL["n_neurons"]
    y["bin"][:, -1] = SMALL["n_bins"] - 1 - y["bin"][:, -1] if SMALL["n_bins"] > 1 else 0
    a, b = (model.run(inputs=v, batch=2)["logits"] for v in (x, y))
    assert np.max(np.abs(a[:, :-1] - b[:, :-1])) < 1e-6
    assert np.max(np.abs(a[:, -1] - b[:, -1])) > 1e-3


def test_gradients_equal_the_hand_written_torch_model():
    """d (sum(logits R) + spike_embedding . stimulus_embedding) / d every weight on the spec's torch
    module equals torch autograd of the formulas (float64) within 1e-4 of the largest."""
    import torch

    h = dict(SMALL, n_layers=2)
    rng = np.random.default_rng(5)
    module = nspec.load(SPEC, **h).to_torch()
    sd = random_state_dict(nspec.load(SPEC, **h), rng)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
    x = inputs(h, 4, rng)
    R = torch.as_tensor(rng.normal(size=(4, h["seq_len"], h["n_neurons"])))

    def objective(logits, zs, zt):
        return (logits.double() * R).sum() + (zs.double() * zt.double()).sum()

    out = module(**{k: torch.as_tensor(v) for k, v in x.items()})
    objective(out["logits"], out["spike_embedding"], out["stimulus_embedding"]).backward()
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in sd.items()}
    objective(*task.torch_forward(leaves, x["neuron"], x["bin"], x["stimulus"], h)).backward()
    for name, p in module.named_parameters():
        want = leaves[name].grad
        assert want.abs().max() > 0, name
        assert float((p.grad.double() - want).abs().max()) <= 1e-4 * float(want.abs().max()), name


def test_training_learns_next_spikes_and_retrieves_the_stimulus():
    """1024 training trials (directions uniform on the circle) and 256 test trials (the K = 8
    directions 2 pi k / 8, 32 each), recorded from the spec's StimulusResponse (16 Poisson neurons,
    200 ms, about 60 spikes a trial), 32 tokens a trial; 120 Adam steps (lr 3e-3, batch 64) on the
    spec's torch module with 1 layer, d_model 32.

    Next-spike accuracy on the test tokens: chance 1/16 = 0.0625; the unigram baseline (the training
    set's most frequent neuron) 0.065; the prefix mode (the neuron seen most often so far in the
    trial) 0.22; the rate oracle (the argmax of the trial's true rates) 0.28.  Measured: 0.244
    (task seeds 1 and 2 of the same recipe: 0.228 and 0.237, prefix mode 0.214 and 0.216); asserted:
    above 0.15, and over twice the unigram's.  At 120 steps the model is level with the prefix mode
    (0.01-0.02 above it), which is not asserted.  Stimulus retrieval among the K = 8 directions by the
    contrastive similarity: chance 1/8; measured 0.996 (seeds 1, 2: 0.988, 0.984); asserted: above 0.6."""
    rng = np.random.default_rng(0)
    train_data = task.record(rng.uniform(0, 2 * np.pi, 1024), seed=1)
    test = task.record(np.repeat(2 * np.pi * np.arange(8) / 8, 32), seed=2)
    assert len(train_data.neuron) >= 1000 and len(test.neuron) >= 250          # few trials dropped
    base = task.baselines(train_data, test)
    assert base["unigram"] < 0.09 and base["oracle"] > 0.25, base
    module, history = task.train(train_data, {}, steps=120, seed=0)
    got = task.evaluate(module, test, K=8)
    assert history[-1][1] < history[0][1] and history[-1][2] < history[0][2]
    assert got["next_token"] > 0.15 and got["next_token"] > 2 * base["unigram"], (got, base)
    assert got["retrieval"] > 0.6, got


@pytest.mark.parametrize("given, neuron, message", [
    (["--param", "n_heads=3"], 0, "d_model must be divisible by n_heads"),
    ([], 16, "index 16 is out of range for an axis of size 16: input 'neuron' holds 16"),
], ids=["heads", "neuron-id"])
def test_mistakes_are_located_errors(given, neuron, message, tmp_path, capsys):
    """A head count that does not divide d_model, and a token naming a neuron the model does not have."""
    from nspec.cli import main

    np.savez(tmp_path / "in.npz", neuron=np.full((1, 32), neuron, np.int64), bin=np.zeros((1, 32), np.int64),
             stimulus=np.zeros((1, 2), np.float32))
    assert main(["run", str(SPEC), *given, "--inputs", str(tmp_path / "in.npz"), "--output",
                 str(tmp_path / "o.npz"), "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and "neuroformer.nspec:" in err and "^" in err, err
