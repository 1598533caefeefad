"""The Hourglass MLP seed (``specs/seeds/hourglass.nspec``): Chen, Lee, Liao and Shiu 2025, "Rethinking
the shape convention of an MLP" (arXiv 2510.01796), and the conventional residual MLP it is compared with.

There is no reference code (SEED_MODELS.md section 8), so the truth is the formulas of that section:

* hourglass: z_0 = W_in x, z_{i+1} = z_i + W_up act(W_down LN(z_i)), y = W_out z_L, W_in frozen;
* conventional: x_{i+1} = x_i + W_2 act(W_1 LN(x_i)), y = W_out x_L;

written twice here, as a float64 NumPy oracle (the forward on every backend) and as a hand-written
float64 torch model (the gradients of the spec's torch module).  Then: W_in is drawn from the run's
seed, is a buffer rather than a parameter, stays out of the optimiser and leaves training bit for bit
as it was drawn; the shape conventions are located errors; and a small classification task trains
both architectures at the same trainable parameter count for the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seeds" / "hourglass.nspec"
TOLERANCE = 1e-5

# Small configurations (TVM compiles cost seconds): both shape conventions, two blocks each.
HOURGLASS = dict(arch="hourglass", d_x=6, d_z=12, d_h=3, n_blocks=2, n_out=4)
CONVENTIONAL = dict(arch="conventional", d_x=6, d_h=10, n_blocks=2, n_out=4)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ---------------------------------------------------------------- the oracle, from SEED_MODELS.md section 8
def width(h: dict) -> int:
    """The residual stream's width: d_z after the hourglass's lift, d_x in the conventional MLP."""
    return h["d_z"] if h["arch"] == "hourglass" else h["d_x"]


def act(v, activation):
    return np.maximum(v, 0) if activation == "relu" else v / (1 + np.exp(-v))


def layernorm(v, g, b, eps=1e-5):
    mu = v.mean(-1, keepdims=True)
    var = ((v - mu) ** 2).mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + eps) * g + b


def forward(sd: dict, x, h: dict, activation="relu"):
    """y [B, n_out] in float64 from the state dict ``sd`` (the spec's weight keys)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    z = np.asarray(x, np.float64)
    if h["arch"] == "hourglass":
        z = z @ sd["W_in"].T
    for i in range(h["n_blocks"]):
        p = f"blocks.{i}."
        u = layernorm(z, sd[p + "norm.weight"], sd[p + "norm.bias"]) @ sd[p + "fc1.weight"].T + sd[p + "fc1.bias"]
        z = z + act(u, activation) @ sd[p + "fc2.weight"].T + sd[p + "fc2.bias"]
    return z @ sd["head.weight"].T + sd["head.bias"]


def random_state_dict(h: dict, rng) -> dict:
    """Every weight random, the LayerNorm's gains and offsets too (1 and 0 at init would hide a swap)."""
    w, d_h = width(h), h["d_h"]
    sd = {"W_in": rng.normal(0, 1 / np.sqrt(h["d_x"]), (h["d_z"], h["d_x"]))} if h["arch"] == "hourglass" else {}
    for i in range(h["n_blocks"]):
        p = f"blocks.{i}."
        sd.update({p + "norm.weight": rng.uniform(0.5, 1.5, w), p + "norm.bias": rng.normal(0, 0.3, w),
                   p + "fc1.weight": rng.normal(0, 1 / np.sqrt(w), (d_h, w)), p + "fc1.bias": rng.normal(0, 0.3, d_h),
                   p + "fc2.weight": rng.normal(0, 1 / np.sqrt(d_h), (w, d_h)), p + "fc2.bias": rng.normal(0, 0.3, w)})
    sd.update({"head.weight": rng.normal(0, 1 / np.sqrt(w), (h["n_out"], w)),
               "head.bias": rng.normal(0, 0.3, h["n_out"])})
    return {k: v.astype(np.float32) for k, v in sd.items()}


# ---------------------------------------------------------------- helpers
def params(h: dict) -> list[str]:
    return [a for k, v in h.items() for a in ("--param", f"{k}={json.dumps(v)}")]


def nspec_run(tmp_path, h, sd, x, backend) -> np.ndarray:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / f"out_{backend}.npz"
    assert main(["run", str(SPEC)] + params(h) + ["--weights", str(tmp_path / "w.safetensors"), "--inputs",
                 str(tmp_path / "in.npz"), "--output", str(out), "--backend", backend, "-q"]) == 0
    with np.load(out) as data:
        return data["y"]


# ---------------------------------------------------------------- forward on every backend
@pytest.mark.parametrize("h, backend", [
    (HOURGLASS, "reference"), (HOURGLASS, "onnxruntime"), (HOURGLASS, "torch"), (HOURGLASS, "tvm"),
    (CONVENTIONAL, "reference"), (CONVENTIONAL, "onnxruntime"), (CONVENTIONAL, "torch"), (CONVENTIONAL, "tvm"),
], ids=lambda v: v["arch"] if isinstance(v, dict) else v)
def test_forward_equals_the_oracle(h, backend, tmp_path):
    """Random weights (the lift included) through ``nspec run --weights``: y within 1e-5 of the oracle."""
    rng = np.random.default_rng(3)
    sd = random_state_dict(h, rng)
    x = rng.normal(size=(5, h["d_x"])).astype(np.float32)
    got = nspec_run(tmp_path, h, sd, x, backend)
    want = forward(sd, x, h)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOLERANCE * max(1.0, np.max(np.abs(want)))
    assert np.max(np.abs(want)) > 0.5  # the outputs are not all near zero: the comparison can tell


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch", "tvm"])
@pytest.mark.parametrize("h", [dict(HOURGLASS, n_blocks=0), dict(HOURGLASS, n_blocks=3),
                               dict(CONVENTIONAL, n_blocks=1)],
                         ids=["hourglass-0-blocks", "hourglass-3-blocks", "conventional-1-block"])
def test_other_depths_and_silu(h, backend, tmp_path):
    """The block count (0: the readout of the lift alone) and the silu activation, on every backend."""
    h = dict(h, activation="silu")
    rng = np.random.default_rng(h["n_blocks"])
    sd = random_state_dict(h, rng)
    x = rng.normal(size=(4, h["d_x"])).astype(np.float32)
    got = nspec_run(tmp_path, h, sd, x, backend)
    assert np.max(np.abs(got - forward(sd, x, h, "silu"))) <= TOLERANCE * 10
    if h["n_blocks"]:
        assert np.max(np.abs(got - forward(sd, x, h, "relu"))) > 1e-3  # silu is not relu here


# ---------------------------------------------------------------- gradients and the frozen lift
def torch_model(sd: dict, h: dict):
    """The formulas as a hand-written float64 torch model: (forward function, trainable leaves)."""
    import torch

    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k != "W_in") for k, v in sd.items()}

    def run(x):
        z = torch.as_tensor(x, dtype=torch.float64)
        if h["arch"] == "hourglass":
            z = z @ leaves["W_in"].T
        for i in range(h["n_blocks"]):
            p = f"blocks.{i}."
            u = torch.nn.functional.layer_norm(z, z.shape[-1:], leaves[p + "norm.weight"], leaves[p + "norm.bias"],
                                               1e-5)
            z = z + torch.relu(u @ leaves[p + "fc1.weight"].T + leaves[p + "fc1.bias"]) @ leaves[p + "fc2.weight"].T \
                + leaves[p + "fc2.bias"]
        return z @ leaves["head.weight"].T + leaves["head.bias"]

    return run, leaves


@pytest.mark.parametrize("h", [HOURGLASS, CONVENTIONAL], ids=lambda h: h["arch"])
def test_gradients_equal_a_hand_written_torch_model(h):
    """d sum(y * R) / d every weight on the spec's torch module equals torch autograd of the formulas
    (float64) within 1e-4 of the largest; W_in is a buffer of the module and gets no gradient."""
    import torch

    import nspec

    rng = np.random.default_rng(7)
    sd = random_state_dict(h, rng)
    x = rng.normal(size=(6, h["d_x"])).astype(np.float32)
    R = torch.as_tensor(rng.normal(size=(6, h["n_out"])))
    module = nspec.load(SPEC, **h).to_torch()
    module.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
    trainable = dict(module.named_parameters())
    assert set(trainable) == set(sd) - {"W_in"}
    assert ("W_in" in dict(module.named_buffers())) == (h["arch"] == "hourglass")
    (module(x=torch.as_tensor(x))["y"].double() * R).sum().backward()

    run, leaves = torch_model(sd, h)
    (run(x) * R).sum().backward()
    for name, p in trainable.items():
        want = leaves[name].grad
        assert want.abs().max() > 0, name  # every weight is reached by the loss
        assert float((p.grad.double() - want).abs().max()) <= 1e-4 * float(want.abs().max()), name
    if h["arch"] == "hourglass":
        assert leaves["W_in"].grad is None


def test_the_lift_is_seeded_frozen_and_untouched_by_training(tmp_path):
    """W_in is N(0, 1/d_x) drawn from the run's seed (the same seed draws the same bits, another seed
    other ones); ``nspec.runtime.train`` leaves it bit-identical while every trained weight moves, and
    its optimiser (saved in the checkpoint) holds exactly the trainable parameters, not W_in."""
    import torch

    import nspec
    from nspec.runtime.train import train

    h = dict(HOURGLASS, d_x=16, d_z=64, d_h=8)
    model = nspec.load(SPEC, **h)
    drawn = model.initial(1, 5)[0]["W_in"]
    assert np.array_equal(drawn, model.initial(1, 5)[0]["W_in"])
    assert not np.array_equal(drawn, model.initial(1, 6)[0]["W_in"])
    assert abs(float(drawn.std()) * np.sqrt(16) - 1) < 0.1 and abs(float(drawn.mean())) < 0.05

    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(64, 16)).astype(np.float32), "label": rng.integers(0, 4, 64)}
    before = {k: v.copy() for k, v in model.initial(1, 5)[0].items()}
    hist = train(SPEC, data, "cross_entropy:y:label", hyper=h, steps=20, batch_size=32, lr=1e-2, seed=5,
                 checkpoint_dir=tmp_path / "ckpt", progress=False)
    after = {k: v.detach().numpy() for k, v in hist.module.param_values().items()}
    assert np.array_equal(after["W_in"], before["W_in"])           # bit for bit
    assert all(not np.array_equal(after[k], before[k]) for k in before if k != "W_in")
    assert hist.losses[-1] < hist.losses[0]

    opt = torch.load(tmp_path / "ckpt" / "optimizer.pt", weights_only=True)
    held = sum(s["exp_avg"].numel() for s in opt["state"].values())
    trainable = sum(p.numel() for p in hist.module.parameters())
    assert len(opt["param_groups"][0]["params"]) == len(list(hist.module.parameters())) == 6 * 2 + 2
    assert held == trainable == sum(v.size for k, v in before.items() if k != "W_in")


# ---------------------------------------------------------------- located errors
@pytest.mark.parametrize("h, message", [
    (dict(HOURGLASS, d_h=12), "an hourglass block is wide-narrow-wide: d_h must be below d_z"),
    (dict(CONVENTIONAL, d_h=6), "a conventional block is narrow-wide-narrow: d_h must be above d_x"),
    (dict(HOURGLASS, n_blocks=-1), "n_blocks must be non-negative"),
    (dict(HOURGLASS, arch="bottleneck"), "'arch' = 'bottleneck' is not one of 'hourglass', 'conventional'"),
])
def test_shape_conventions_are_located_errors(h, message, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, h["d_x"]), np.float32))
    assert main(["run", str(SPEC)] + params(h) + ["--inputs", str(tmp_path / "in.npz"), "--output",
                 str(tmp_path / "o.npz"), "-q"]) == 1
    err = capsys.readouterr().err
    assert message in err and "hourglass.nspec:" in err and "error:" in err and "^" in err, err


# ---------------------------------------------------------------- a small task
def mixture_task(seed: int, n_train=2000, n_test=1000, d_x=64, latent=6, modes=3, classes=10):
    """10 classes, each a mixture of 3 prototypes in a 6-d latent space (N(0, 1) centres, noise 0.35),
    mapped into 64-d by a fixed random isometry (scaled by sqrt(64 / 6)) plus N(0, 0.3^2) noise per input.
    Thirty centres in 6-d are not linearly separable by class, so a linear classifier stays near 50%."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, modes, latent))
    embed = np.linalg.qr(rng.normal(size=(d_x, latent)))[0].T * np.sqrt(d_x / latent)

    def draw(n):
        c, m = rng.integers(0, classes, n), rng.integers(0, modes, n)
        x = (centres[c, m] + 0.35 * rng.normal(size=(n, latent))) @ embed + 0.3 * rng.normal(size=(n, d_x))
        return x.astype(np.float32), c

    return draw(n_train), draw(n_test)


def test_both_shapes_learn_a_mixture_task_at_the_same_parameter_count():
    """Hourglass (d_z 192, d_h 24, 2 blocks: 21,562 trainable weights, plus the frozen 192 x 64 lift)
    against conventional (d_x 64, d_h 80, 2 blocks: 21,674), both trained by ``nspec.runtime.train``
    for 150 Adam steps (lr 3e-3, batch 128) on 2000 samples of ``mixture_task``, tested on 1000 more.

    Measured held-out accuracy over task seeds 0, 1, 2 (chance 0.10; a linear softmax classifier
    trained 300 full-batch steps: 0.49, 0.46, 0.50): hourglass 0.924, 0.857, 0.915; conventional
    0.931, 0.869, 0.936 (at 300 steps: 0.917/0.928, 0.877/0.895, 0.915/0.928).  At this scale the
    conventional MLP is ahead by 0.7-2.1 points.  What is asserted (seed 0): both reach 0.80, and the
    hourglass is within 0.05 of the conventional MLP.  What is not reproduced: the paper's claim, a
    better accuracy-parameter Pareto front at larger budgets (MNIST, ImageNet-32, deeper and wider
    d_z), which needs sweeps far beyond a unit test."""
    from nspec.runtime.train import predict, train

    (x, label), (x_test, label_test) = mixture_task(0)
    accuracy, trainable = {}, {}
    for h in (dict(arch="hourglass", d_z=192, d_h=24, n_blocks=2), dict(arch="conventional", d_h=80, n_blocks=2)):
        hist = train(SPEC, {"x": x, "label": label}, "cross_entropy:y:label", hyper=h, steps=150, batch_size=128,
                     lr=3e-3, seed=0, progress=False)
        logits = predict(hist.module, {"x": x_test})["y"][:, -1]
        accuracy[h["arch"]] = float(np.mean(logits.argmax(-1) == label_test))
        trainable[h["arch"]] = sum(p.numel() for p in hist.module.parameters())
    assert trainable == {"hourglass": 21562, "conventional": 21674}
    assert min(accuracy.values()) >= 0.80, accuracy
    assert accuracy["hourglass"] >= accuracy["conventional"] - 0.05, accuracy
