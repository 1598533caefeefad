"""Sequence mixers as one family of dynamical systems (specs/seeds/{linear_attention,
linear_attention_parallel,gla,selective_ssm,softmax_attention}.nspec).

Each recurrent spec (one token per data step, the mixer's memory a `state`) is checked against a
NumPy oracle written in another form, in float64, for the same weights loaded by the same keys:

* linear attention: the parallel form (phi(Q) phi(K)^T masked causal) V (/ its row sums);
* GLA: the chunked form of Yang et al. (intra-chunk parallel with cumulative log-gates, inter-chunk
  recurrent), for several chunk sizes, one that does not divide the sequence;
* the selective SSM: the parallel form in log space, h_t = sum_{s<=t} exp(L_t - L_s) Bbar_s x_s with
  L the cumulative sum of Delta A (Mamba-2's segment sums), not the step loop;
* softmax attention (whole sequence in one data step) against NumPy's softmax.

One configuration of each recurrent spec, and the parallel linear attention, are checked the same
way on the compiled backends, and softmax attention on every backend.  Then the framework's point:
linear attention's recurrent spec run step by step equals its parallel spec run on the whole
sequence, and GLA with its gates held open is linear attention.  Gradients of the torch modules
(to_torch()) equal torch autograd of hand-written float64 recurrences (and, for softmax attention,
of a hand-written causal attention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nspec

SEEDS = Path(__file__).resolve().parent.parent / "specs" / "seeds"
BATCH, T = 2, 12

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def softplus(z):
    return np.logaddexp(0.0, z)


def close(got: np.ndarray, want: np.ndarray, tol: float = 2e-5) -> float:
    """Max |got - want| relative to want's largest magnitude (at least 1); asserts it is within tol."""
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want))))
    assert err <= tol, err
    return err


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def tokens(d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).standard_normal((BATCH, T, d)).astype(np.float32)


def run_recurrent(spec: str, weights: dict, x: np.ndarray, backend: str = "reference", **hyper) -> np.ndarray:
    """y [B, T, d] of a one-token-per-step spec, run for the sequence's T steps."""
    model = nspec.load(SEEDS / spec, **hyper)
    model.load_weights(weights)
    return model.run({"x": x}, batch=len(x), backend=backend)["y"]


# ---------------------------------------------------------------- linear attention
LA = dict(d_model=6, n_heads=2, d_key=3, d_value=4)


def la_weights(seed: int, d_model=6, n_heads=2, d_key=3, d_value=4) -> dict[str, np.ndarray]:
    hk, hv = n_heads * d_key, n_heads * d_value
    return random_weights({"q_proj.weight": (hk, d_model), "k_proj.weight": (hk, d_model),
                           "v_proj.weight": (hv, d_model), "o_proj.weight": (d_model, hv)}, seed)


def phi(z, feature_map):
    return np.where(z > 0, z + 1, np.exp(np.minimum(z, 0))) if feature_map == "elu1" else z


def linear_attention_parallel(x, w, feature_map, normalize, n_heads, d_key, d_value, eps=1e-6, **_):
    """(phi(Q) phi(K)^T masked causal) V per head, one sequence x [T, d]."""
    n = len(x)
    x = x.astype(np.float64)
    q = phi(x @ w["q_proj.weight"].T, feature_map).reshape(n, n_heads, d_key)
    k = phi(x @ w["k_proj.weight"].T, feature_map).reshape(n, n_heads, d_key)
    v = (x @ w["v_proj.weight"].T).reshape(n, n_heads, d_value)
    A = np.einsum("thk,shk->hts", q, k) * np.tril(np.ones((n, n)))
    o = np.einsum("hts,shv->thv", A, v)
    if normalize:
        o = o / (A.sum(-1).T[:, :, None] + eps)
    return o.reshape(n, -1) @ w["o_proj.weight"].T.astype(np.float64)


# identity with the normaliser is left out: q.z may cross zero, and the output with it
LA_FORMS = [("elu1", True), ("elu1", False), ("identity", False)]


@pytest.mark.parametrize("feature_map, normalize", LA_FORMS)
def test_linear_attention_recurrence_equals_the_parallel_form(feature_map, normalize):
    w, x = la_weights(1), tokens(LA["d_model"], 1)
    got = run_recurrent("linear_attention.nspec", w, x, feature_map=feature_map, normalize=normalize, **LA)
    want = np.stack([linear_attention_parallel(s, w, feature_map, normalize, **LA) for s in x])
    close(got, want)


@pytest.mark.parametrize("feature_map, normalize", LA_FORMS)
def test_linear_attention_same_mixer_two_forms(feature_map, normalize):
    """The recurrent spec run token by token (T data steps, a state) equals the parallel spec run on
    the whole sequence (one data step, no state), from one weights dict by the same keys."""
    w, x = la_weights(2), tokens(LA["d_model"], 2)
    hyper = dict(feature_map=feature_map, normalize=normalize, **LA)
    stepped = run_recurrent("linear_attention.nspec", w, x, **hyper)
    parallel = nspec.load(SEEDS / "linear_attention_parallel.nspec", **hyper)
    parallel.load_weights(w)
    whole = parallel.run({"x": x[:, None]}, batch=BATCH)["y"]
    assert whole.shape == (BATCH, 1, T, LA["d_model"])
    close(stepped, whole[:, 0], 1e-5)
    want = np.stack([linear_attention_parallel(s, w, feature_map, normalize, **LA) for s in x])
    close(whole[:, 0], want)


# ---------------------------------------------------------------- gated linear attention
def gla_weights(seed: int, gate_rank: int, d_model=6, n_heads=2, d_key=3, d_value=4) -> dict[str, np.ndarray]:
    hk = n_heads * d_key
    gate = ({"gk_proj.0.weight": (gate_rank, d_model), "gk_proj.1.weight": (hk, gate_rank), "gk_proj.1.bias": (hk,)}
            if gate_rank else {"gk_proj.weight": (hk, d_model), "gk_proj.bias": (hk,)})
    return la_weights(seed, d_model, n_heads, d_key, d_value) | random_weights(gate, seed + 50, scale=1.0)


def gla_log_gates(x, w, tau):
    """log alpha_t = log sigmoid(W_alpha x_t + b) / tau, [T, n_heads * d_key]."""
    if "gk_proj.weight" in w:
        g = x @ w["gk_proj.weight"].T + w["gk_proj.bias"]
    else:
        g = (x @ w["gk_proj.0.weight"].T) @ w["gk_proj.1.weight"].T + w["gk_proj.1.bias"]
    return -softplus(-g) / tau


def gla_chunked(x, w, chunk, tau, n_heads, d_key, d_value, **_):
    """Yang et al.'s chunkwise form, one sequence x [T, d]: within a chunk, with b_i the cumulative
    log-gate up to position i (inclusive), o_i = (q_i exp(b_i)) S_0 + sum_{j<=i} (q_i exp(b_i - b_j)).k_j v_j;
    across chunks S <- exp(b_last) S + sum_j (k_j exp(b_last - b_j)) v_j^T."""
    n = len(x)
    x = x.astype(np.float64)
    q = (x @ w["q_proj.weight"].T).reshape(n, n_heads, d_key)
    k = (x @ w["k_proj.weight"].T).reshape(n, n_heads, d_key)
    v = (x @ w["v_proj.weight"].T).reshape(n, n_heads, d_value)
    log_a = gla_log_gates(x, w, tau).reshape(n, n_heads, d_key)
    S = np.zeros((n_heads, d_key, d_value))
    out = np.zeros((n, n_heads, d_value))
    for start in range(0, n, chunk):
        c = slice(start, min(start + chunk, n))
        qc, kc, vc = q[c], k[c], v[c]
        b = np.cumsum(log_a[c], axis=0)                                    # [c, H, dk]
        causal = np.tril(np.ones((len(b), len(b)), dtype=bool))[:, :, None, None]
        decay = np.exp(np.where(causal, b[:, None] - b[None, :], -np.inf))  # [i, j, H, dk]
        intra = np.einsum("ihk,ijhk,jhk,jhv->ihv", qc, decay, kc, vc)
        inter = np.einsum("ihk,hkv->ihv", qc * np.exp(b), S)
        out[c] = intra + inter
        S = np.exp(b[-1])[:, :, None] * S + np.einsum("jhk,jhv->hkv", kc * np.exp(b[-1] - b), vc)
    return out.reshape(n, -1) @ w["o_proj.weight"].T.astype(np.float64)


GLA = dict(d_model=6, n_heads=2, d_key=3, d_value=4)


@pytest.mark.parametrize("gate_rank, tau", [(16, 16.0), (3, 1.0), (0, 1.0)], ids=["paper", "lowrank-tau1", "fullrank"])
def test_gla_recurrence_equals_the_chunked_form_for_every_chunk_size(gate_rank, tau):
    w, x = gla_weights(3, gate_rank), tokens(GLA["d_model"], 3)
    got = run_recurrent("gla.nspec", w, x, gate_rank=gate_rank, tau=tau, **GLA)
    forms = {chunk: np.stack([gla_chunked(s, w, chunk, tau, **GLA) for s in x]) for chunk in (1, 2, 4, 5, T)}
    for chunk, want in forms.items():
        close(got, want)
        np.testing.assert_allclose(want, forms[T], rtol=1e-10, atol=1e-10, err_msg=f"chunk {chunk}")
    # the gates decay: the outputs differ from ungated linear attention's
    ungated = np.stack([linear_attention_parallel(s, w, "identity", False, **GLA) for s in x])
    assert np.max(np.abs(got - ungated)) > 1e-2


def test_gla_with_open_gates_is_linear_attention():
    """tau -> infinity makes alpha = 1 exactly in float32: GLA becomes linear attention with the
    identity feature map and no normaliser, on the recurrent specs of both."""
    w, x = gla_weights(4, 16), tokens(GLA["d_model"], 4)
    gla = run_recurrent("gla.nspec", w, x, tau=1e12, **GLA)
    la = run_recurrent("linear_attention.nspec", {k: v for k, v in w.items() if not k.startswith("gk_proj")}, x,
                       feature_map="identity", normalize=False, **LA)
    close(gla, la, 1e-6)


# ---------------------------------------------------------------- the selective SSM
SSM = dict(d_inner=6, d_state=4, dt_rank=2)


def ssm_weights(seed: int, d_inner=6, d_state=4, dt_rank=2) -> dict[str, np.ndarray]:
    w = random_weights({"x_proj.weight": (dt_rank + 2 * d_state, d_inner), "dt_proj.weight": (d_inner, dt_rank),
                        "dt_proj.bias": (d_inner,), "A_log": (d_inner, d_state), "D": (d_inner,)}, seed)
    w["dt_proj.bias"] -= 1.0     # softplus around 0.3: decays from strong to weak across the states
    return w


def ssm_log_space(x, w, d_state, dt_rank, **_):
    """The parallel form: L_t = sum_{r<=t} Delta_r A (cumulative, log space), and
    h_t = sum_{s<=t} exp(L_t - L_s) Delta_s B_s x_s, y_t = C_t h_t + D x_t; one sequence x [T, d]."""
    x = x.astype(np.float64)
    proj = x @ w["x_proj.weight"].T
    dt, B, C = proj[:, :dt_rank], proj[:, dt_rank:dt_rank + d_state], proj[:, dt_rank + d_state:]
    delta = softplus(dt @ w["dt_proj.weight"].T + w["dt_proj.bias"])          # [T, D]
    A = -np.exp(w["A_log"].astype(np.float64))                                # [D, N]
    L = np.cumsum(delta[:, :, None] * A, axis=0)                              # [T, D, N]
    n = len(x)
    causal = np.tril(np.ones((n, n), dtype=bool))[:, :, None, None]
    decay = np.exp(np.where(causal, L[:, None] - L[None, :], -np.inf))        # [t, s, D, N]
    h = np.einsum("tsdn,sd,sn->tdn", decay, delta * x, B)
    return np.einsum("tdn,tn->td", h, C) + w["D"] * x


def test_selective_ssm_recurrence_equals_the_log_space_parallel_form():
    w, x = ssm_weights(5), tokens(SSM["d_inner"], 5)
    got = run_recurrent("selective_ssm.nspec", w, x, **SSM)
    want = np.stack([ssm_log_space(s, w, **SSM) for s in x])
    close(got, want)
    # selective: Delta, B, C depend on the input, so a token's output depends on its history
    assert np.max(np.abs(want - w["D"] * x)) > 1e-2


def test_selective_ssm_initialisation_is_mambas():
    """A = -(1..N) per channel, D = 1, softplus(dt_proj.bias) in [dt_min, dt_max]."""
    model = nspec.load(SEEDS / "selective_ssm.nspec", d_inner=64, d_state=4)
    params = model.initial(1, None)[0]
    np.testing.assert_allclose(-np.exp(params["A_log"]), -np.broadcast_to(np.arange(1, 5), (64, 4)), rtol=1e-6)
    np.testing.assert_array_equal(params["D_skip"], 1)
    dt = softplus(params["b_dt"].astype(np.float64))
    assert dt.min() >= 0.001 * (1 - 1e-3) and dt.max() <= 0.1 * (1 + 1e-3)
    assert dt.max() / dt.min() > 10           # spread over the range, not one value


# ---------------------------------------------------------------- the compiled backends
# One configuration per recurrent mixer (the normalised elu1 linear attention, GLA as in the paper,
# the SSM) on the compiled backends, against the same other-form oracles: the tests above vary the
# configurations on the reference interpreter, and each TVM compile costs 1-3 s of CPU.
MIXERS = {
    "linear_attention": ("linear_attention.nspec", lambda: la_weights(1), dict(LA, feature_map="elu1", normalize=True),
                         lambda s, w, h: linear_attention_parallel(s, w, **h)),
    "gla": ("gla.nspec", lambda: gla_weights(3, 16), dict(GLA, gate_rank=16, tau=16.0),
            lambda s, w, h: gla_chunked(s, w, 5, **h)),
    "selective_ssm": ("selective_ssm.nspec", lambda: ssm_weights(5), SSM, lambda s, w, h: ssm_log_space(s, w, **h)),
}


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "tvm"])
@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_recurrent_mixer_equals_its_other_form_on_the_compiled_backends(mixer, backend):
    spec, make_weights, hyper, other_form = MIXERS[mixer]
    w = make_weights()
    x = tokens(hyper.get("d_model", hyper.get("d_inner")), 11)
    got = run_recurrent(spec, w, x, backend, **hyper)
    close(got, np.stack([other_form(s, w, hyper) for s in x]))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "tvm"])
def test_parallel_linear_attention_equals_numpy_on_the_compiled_backends(backend):
    """The whole-sequence spec (one data step), normalised elu1, against the same NumPy parallel form."""
    w, x = la_weights(2), tokens(LA["d_model"], 12)
    hyper = dict(LA, feature_map="elu1", normalize=True)
    model = nspec.load(SEEDS / "linear_attention_parallel.nspec", **hyper)
    model.load_weights(w)
    got = model.run({"x": x[:, None]}, batch=BATCH, backend=backend)["y"][:, 0]
    close(got, np.stack([linear_attention_parallel(s, w, **hyper) for s in x]))


# ---------------------------------------------------------------- softmax attention
def softmax_attention(x, w, n_heads, d_key, d_value, **_):
    n = len(x)
    x = x.astype(np.float64)
    q = (x @ w["q_proj.weight"].T).reshape(n, n_heads, d_key)
    k = (x @ w["k_proj.weight"].T).reshape(n, n_heads, d_key)
    v = (x @ w["v_proj.weight"].T).reshape(n, n_heads, d_value)
    scores = np.einsum("thk,shk->hts", q, k) / np.sqrt(d_key)
    scores = np.where(np.tril(np.ones((n, n), dtype=bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hts,shv->thv", p, v).reshape(n, -1) @ w["o_proj.weight"].T.astype(np.float64)


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch", "tvm"])
def test_softmax_attention_equals_numpy(backend):
    w, x = la_weights(6), 2 * tokens(LA["d_model"], 6)      # scores of a few units: peaked softmaxes
    model = nspec.load(SEEDS / "softmax_attention.nspec", **LA)
    model.load_weights(w)
    got = model.run({"x": x[:, None]}, batch=BATCH, backend=backend)["y"][:, 0]
    want = np.stack([softmax_attention(s, w, **LA) for s in x])
    close(got, want)
    # causal: a later token changes no earlier output
    x2 = x.copy()
    x2[:, -1] += 1.0
    moved = model.run({"x": x2[:, None]}, batch=BATCH, backend=backend)["y"][:, 0]
    assert np.max(np.abs(moved[:, :-1] - got[:, :-1])) < 1e-6 and np.max(np.abs(moved[:, -1] - got[:, -1])) > 1e-3


# ---------------------------------------------------------------- gradients of the torch modules
def gla_torch(x, p, tau, n_heads, d_key, d_value, **_):
    """The GLA recurrence written in torch, step by step: x [B, T, d] -> y [B, T, d]."""
    B, n, _ = x.shape
    S = x.new_zeros(B, n_heads, d_key, d_value)
    ys = []
    for t in range(n):
        xt = x[:, t]
        q = (xt @ p["q_proj.weight"].T).view(B, n_heads, d_key)
        k = (xt @ p["k_proj.weight"].T).view(B, n_heads, d_key)
        v = (xt @ p["v_proj.weight"].T).view(B, n_heads, d_value)
        g = (xt @ p["gk_proj.0.weight"].T) @ p["gk_proj.1.weight"].T + p["gk_proj.1.bias"]
        alpha = torch.sigmoid(g).pow(1 / tau).view(B, n_heads, d_key, 1)
        S = alpha * S + k[..., None] * v[:, :, None, :]
        ys.append((q[..., None] * S).sum(2).reshape(B, -1) @ p["o_proj.weight"].T)
    return torch.stack(ys, 1)


def ssm_torch(x, p, d_state, dt_rank, **_):
    """Mamba's S6 recurrence written in torch, step by step: x [B, T, d] -> y [B, T, d]."""
    B, n, d = x.shape
    h = x.new_zeros(B, d, d_state)
    A = -torch.exp(p["A_log"])
    ys = []
    for t in range(n):
        xt = x[:, t]
        dt, Bt, Ct = (xt @ p["x_proj.weight"].T).split([dt_rank, d_state, d_state], dim=-1)
        delta = torch.nn.functional.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
        h = torch.exp(delta[..., None] * A) * h + (delta * xt)[..., None] * Bt[:, None, :]
        ys.append((h * Ct[:, None, :]).sum(-1) + p["D"] * xt)
    return torch.stack(ys, 1)


def linear_attention_torch(x, p, n_heads, d_key, d_value, eps=1e-6, **_):
    """Normalised elu1 linear attention written in torch, step by step: x [B, T, d] -> y [B, T, d]."""
    B, n, _ = x.shape
    S, z = x.new_zeros(B, n_heads, d_key, d_value), x.new_zeros(B, n_heads, d_key)
    ys = []
    for t in range(n):
        xt = x[:, t]
        q = (torch.nn.functional.elu(xt @ p["q_proj.weight"].T) + 1).view(B, n_heads, d_key)
        k = (torch.nn.functional.elu(xt @ p["k_proj.weight"].T) + 1).view(B, n_heads, d_key)
        v = (xt @ p["v_proj.weight"].T).view(B, n_heads, d_value)
        S, z = S + k[..., None] * v[:, :, None, :], z + k
        o = (q[..., None] * S).sum(2) / ((q * z).sum(-1, keepdim=True) + eps)
        ys.append(o.reshape(B, -1) @ p["o_proj.weight"].T)
    return torch.stack(ys, 1)


GRADIENT_CASES = {
    "linear_attention": ("linear_attention.nspec", lambda: la_weights(12), dict(LA, feature_map="elu1", normalize=True),
                         linear_attention_torch),
    "gla": ("gla.nspec", lambda: gla_weights(7, 3), GLA | dict(gate_rank=3, tau=2.0), gla_torch),
    "selective_ssm": ("selective_ssm.nspec", lambda: ssm_weights(8), SSM, ssm_torch),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_torch_module_gradients_equal_a_hand_written_torch_recurrence(case):
    spec, make_weights, hyper, reference = GRADIENT_CASES[case]
    w = make_weights()
    d = hyper.get("d_model", hyper.get("d_inner"))
    x = tokens(d, 9)
    R = np.random.default_rng(10).standard_normal((BATCH, T, d))
    module = nspec.load(SEEDS / spec, **hyper).to_torch()
    assert set(module.state_dict()) == set(w)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in w.items()}, strict=True)
    y = module(x=torch.as_tensor(x))["y"]
    (y * torch.as_tensor(R, dtype=y.dtype)).sum().backward()

    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    y64 = reference(torch.as_tensor(x, dtype=torch.float64), p, **hyper)
    (y64 * torch.as_tensor(R)).sum().backward()
    close(y.detach().numpy(), y64.detach().numpy())
    grads = dict(module.named_parameters())
    for key, value in p.items():
        want = value.grad.numpy()
        assert np.max(np.abs(want)) > 1e-3, key    # every parameter reaches the loss
        close(grads[key].grad.double().numpy(), want, 1e-4)


def test_softmax_attention_torch_gradients_equal_a_hand_written_model():
    """The whole-sequence spec's torch module: gradients of sum(y R) against torch autograd of the
    causal softmax attention written by hand in float64, within 1e-4 of the largest."""
    w, x = la_weights(13), 2 * tokens(LA["d_model"], 13)
    R = np.random.default_rng(14).standard_normal((BATCH, T, LA["d_model"]))
    module = nspec.load(SEEDS / "softmax_attention.nspec", **LA).to_torch()
    assert set(module.state_dict()) == set(w)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in w.items()}, strict=True)
    y = module(x=torch.as_tensor(x))["y"]                       # one data step: x [B, T, d] -> y [B, T, d]
    (y * torch.as_tensor(R, dtype=y.dtype)).sum().backward()

    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    H, dk, dv = LA["n_heads"], LA["d_key"], LA["d_value"]
    x64 = torch.as_tensor(x, dtype=torch.float64)
    q, k, v = ((x64 @ p[f"{n}_proj.weight"].T).view(BATCH, T, H, d).transpose(1, 2)
               for n, d in (("q", dk), ("k", dk), ("v", dv)))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) / dk ** 0.5).masked_fill(~causal, float("-inf"))
    y64 = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(BATCH, T, H * dv) @ p["o_proj.weight"].T
    (y64 * torch.as_tensor(R)).sum().backward()
    close(y.detach().numpy(), y64.detach().numpy())
    grads = dict(module.named_parameters())
    for key, value in p.items():
        want = value.grad.numpy()
        assert np.max(np.abs(want)) > 1e-3, key
        close(grads[key].grad.double().numpy(), want, 1e-4)


# ---------------------------------------------------------------- mistakes are located errors
@pytest.mark.parametrize("spec, param, message", [
    ("linear_attention", "d_key=0", "d_model, n_heads, d_key and d_value must be at least 1"),
    ("linear_attention", "feature_map=relu", "'feature_map' = 'relu' is not one of 'elu1', 'identity'"),
    ("linear_attention_parallel", "n_heads=-2", "d_model, n_heads, d_key and d_value must be at least 1"),
    ("gla", "gate_rank=-1", "gate_rank must be >= 0"),
    ("gla", "tau=0", "tau must be positive"),
    ("selective_ssm", "d_state=0", "d_inner, d_state and dt_rank must be at least 1"),
    ("softmax_attention", "n_heads=0", "d_model, n_heads, d_key and d_value must be at least 1"),
])
def test_bad_hyperparameters_are_located_errors(spec, param, message, tmp_path, capsys):
    from nspec.cli import main

    assert main(["run", str(SEEDS / f"{spec}.nspec"), "--param", param, "--output", str(tmp_path / "o.npz"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}.nspec:" in err and message in err and "^" in err and "Traceback" not in err
