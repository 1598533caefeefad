"""Independent NumPy re-implementations of the seed models' reference forward passes.

Written from the equations of ``shared/design/SEED_MODELS.md`` (and the authors' module layouts
named there), not from ``specs/seeds``: each oracle takes a reference ``state_dict`` (keys exactly
as the authors' PyTorch modules name them) and the reference forward's inputs, and returns the
reference outputs.  Arithmetic is float64, except where the reference's own float32 rounding is
part of the model (BDH's RoPE phases), so an oracle is a tighter truth than the float32 reference.

Each model also has ``*_state_dict(config, rng)``: random weights with the reference's keys,
shapes and dtypes, drawn wider than the authors' initialisers (so that every term matters: decays
away from their zero init, negative raw weights under ReLU reparameterisations, clamps exercised).

The three sequence forms differ on purpose from the specs' recurrent forms: BDH is computed in its
parallel (causal linear attention) form over the whole sequence; CTM and ELM loop like the
reference code, with the batch axis explicit.
"""

from __future__ import annotations

import math

import numpy as np

F64 = np.float64


# ---------------------------------------------------------------- shared pieces
def layernorm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last axis (biased variance, eps inside the square root, as torch)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight + bias
    return y


def linear(x, weight, bias=None):
    """torch.nn.Linear: x @ W^T + b with W [out, in]."""
    y = x @ weight.T
    return y if bias is None else y + bias


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


def relu(x):
    return np.maximum(x, 0.0)


def glu(x):
    """torch.nn.GLU over the last axis: first half * sigmoid(second half)."""
    h = x.shape[-1] // 2
    return x[..., :h] * sigmoid(x[..., h:])


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _f64(sd):
    return {k: (v.astype(F64) if np.issubdtype(v.dtype, np.floating) else v) for k, v in sd.items()}


# ---------------------------------------------------------------- BDH (SEED_MODELS.md 1.1, 1.3)
def bdh_sizes(cfg):
    D, nh = cfg["n_embd"], cfg["n_head"]
    return D, nh, cfg["mlp_internal_dim_multiplier"] * D // nh, cfg["vocab_size"]


def bdh_freqs(N):
    """freqs[i] = theta^(-(2 floor(i/2))/N) / 2 pi, theta = 2^16, computed in float32 as the reference."""
    q = np.floor(np.arange(N, dtype=np.float32) / 2) * 2
    return (np.float32(1.0) / (np.float32(2.0 ** 16) ** (q / np.float32(N))) / np.float32(2 * math.pi)).astype(np.float32)


def bdh_state_dict(cfg, rng, std=0.1):
    """Random BDH weights by the reference keys (std above the authors' 0.02, so layers interact)."""
    D, nh, N, V = bdh_sizes(cfg)
    f = lambda *s: (rng.normal(0, std, size=s)).astype(np.float32)  # noqa: E731
    return {"embed.weight": f(V, D), "encoder": f(nh, D, N), "encoder_v": f(nh, D, N), "decoder": f(nh * N, D),
            "lm_head": f(D, V), "attn.freqs": bdh_freqs(N).reshape(1, 1, 1, N)}


def bdh_forward(sd, cfg, idx):
    """logits (B, T, V) of idx (B, T), in the parallel form: a = (Q Q^T masked strictly below the diagonal) x."""
    D, nh, N, V = bdh_sizes(cfg)
    freqs = sd["attn.freqs"].reshape(N).astype(np.float32)
    w = _f64(sd)
    B, T = idx.shape
    # RoPE phases in float32, as the reference (t * freqs, then mod 1, then times 2 pi)
    phases = (np.arange(T, dtype=np.float32)[:, None] * freqs[None, :]) % np.float32(1.0)
    phases = (phases * np.float32(2 * math.pi)).astype(F64)
    cos, sin = np.cos(phases), np.sin(phases)
    mask = np.tril(np.ones((T, T)), k=-1)
    x = layernorm(w["embed.weight"][idx])[:, None]                        # B,1,T,D
    for _ in range(cfg["n_layer"]):
        xs = relu(x @ w["encoder"])                                       # B,nh,T,N
        rot = np.stack((-xs[..., 1::2], xs[..., ::2]), axis=-1).reshape(xs.shape)
        q = xs * cos + rot * sin
        a = ((q @ np.swapaxes(q, -1, -2)) * mask) @ x                    # B,nh,T,D
        ys = relu(layernorm(a) @ w["encoder_v"])
        xy = np.transpose(xs * ys, (0, 2, 1, 3)).reshape(B, 1, T, nh * N)  # head-major concat
        x = layernorm(x + layernorm(xy @ w["decoder"]))
    return (x.reshape(B, T, D) @ w["lm_head"]).astype(np.float32)


# ---------------------------------------------------------------- CTM (SEED_MODELS.md 2.1, 2.3)
CTM_DEFAULTS = {"deep_nlms": True, "do_layernorm_nlm": False, "prediction_reshaper": [-1], "dropout": 0.0,
                "neuron_select_type": "random-pairing", "n_random_pairing_self": 0,
                "backbone_type": "none", "positional_embedding_type": "none"}


def ctm_synch_size(cfg, n):
    return n if cfg["neuron_select_type"] == "random-pairing" else n * (n + 1) // 2


def ctm_widths(cfg):
    """U-Net widths: linspace(d_model, 16, synapse_depth), each truncated to int."""
    return [int(w) for w in np.linspace(cfg["d_model"], 16, cfg["synapse_depth"])]


def _ctm_indices(cfg, kind, rng):
    D, n = cfg["d_model"], cfg[f"n_synch_{kind}"]
    mode = cfg["neuron_select_type"]
    if mode == "first-last":
        left = np.arange(n) if kind == "out" else np.arange(D - n, D)
        return left, left.copy()
    left = rng.integers(0, D, size=n)
    if mode == "random":
        return left, rng.integers(0, D, size=n)
    k = cfg["n_random_pairing_self"]
    return left, np.concatenate([left[:k], rng.integers(0, D, size=n - k)])


def ctm_state_dict(cfg, in_channels, rng):
    """Random CTM weights by the reference keys, for backbone 'none' with in_channels input features."""
    cfg = {**CTM_DEFAULTS, **cfg}
    D, d_in, M, H = cfg["d_model"], cfg["d_input"], cfg["memory_length"], cfg["memory_hidden_dims"]
    P_act, P_out = ctm_synch_size(cfg, cfg["n_synch_action"]), ctm_synch_size(cfg, cfg["n_synch_out"])
    u = lambda fan, *s: rng.uniform(-1, 1, size=s).astype(np.float32) / np.float32(math.sqrt(fan))  # noqa: E731
    ln = lambda n: (1 + 0.3 * rng.normal(size=n)).astype(np.float32)  # noqa: E731
    sd = {
        "start_activated_state": u(D, D), "start_trace": u(1, D, M),
        # decays across [-1, 17]: both clamp ends are exercised, r spans 1 .. e^-15
        "decay_params_action": rng.uniform(-1, 17, size=P_act).astype(np.float32) * (rng.random(P_act) < 0.7),
        "decay_params_out": rng.uniform(-1, 17, size=P_out).astype(np.float32) * (rng.random(P_out) < 0.7),
        "kv_proj.0.weight": u(in_channels, d_in, in_channels), "kv_proj.0.bias": u(in_channels, d_in),
        "kv_proj.1.weight": ln(d_in), "kv_proj.1.bias": u(4, d_in),
        "q_proj.weight": u(P_act, d_in, P_act), "q_proj.bias": u(P_act, d_in),
        "attention.in_proj_weight": u(d_in / 3, 3 * d_in, d_in), "attention.in_proj_bias": u(d_in, 3 * d_in),
        "attention.out_proj.weight": u(d_in, d_in, d_in), "attention.out_proj.bias": u(d_in, d_in),
        "output_projector.0.weight": u(P_out / 4, cfg["out_dims"], P_out), "output_projector.0.bias": u(4, cfg["out_dims"]),
    }
    for kind in ("action", "out"):
        left, right = _ctm_indices(cfg, kind, rng)
        sd[f"{kind}_neuron_indices_left"], sd[f"{kind}_neuron_indices_right"] = left.astype(np.int64), right.astype(np.int64)
    if cfg["synapse_depth"] == 1:
        sd.update({"synapses.1.weight": u(d_in + D, 2 * D, d_in + D), "synapses.1.bias": u(d_in + D, 2 * D),
                   "synapses.3.weight": ln(D), "synapses.3.bias": u(4, D)})
    else:
        w = ctm_widths(cfg)
        sd.update({"synapses.first_projection.0.weight": u(d_in + D, w[0], d_in + D),
                   "synapses.first_projection.0.bias": u(d_in + D, w[0]),
                   "synapses.first_projection.1.weight": ln(w[0]), "synapses.first_projection.1.bias": u(4, w[0])})
        for i in range(len(w) - 1):
            p = "synapses"
            sd.update({f"{p}.down_projections.{i}.1.weight": u(w[i], w[i + 1], w[i]),
                       f"{p}.down_projections.{i}.1.bias": u(w[i], w[i + 1]),
                       f"{p}.down_projections.{i}.2.weight": ln(w[i + 1]), f"{p}.down_projections.{i}.2.bias": u(4, w[i + 1]),
                       f"{p}.up_projections.{i}.1.weight": u(w[i + 1], w[i], w[i + 1]),
                       f"{p}.up_projections.{i}.1.bias": u(w[i + 1], w[i]),
                       f"{p}.up_projections.{i}.2.weight": ln(w[i]), f"{p}.up_projections.{i}.2.bias": u(4, w[i]),
                       f"{p}.skip_lns.{i}.weight": ln(w[i]), f"{p}.skip_lns.{i}.bias": u(4, w[i])})
    layers = [(M, 2 * H), (H, 2)] if cfg["deep_nlms"] else [(M, 2)]
    for k, (i, o) in zip((0, 2), layers):
        p = f"trace_processor.0.{k}"
        sd.update({f"{p}.w1": u(i + o, i, o, D), f"{p}.b1": u(4, 1, D, o),
                   f"{p}.T": np.array([rng.uniform(0.5, 2.0)], dtype=np.float32)})
        if cfg["do_layernorm_nlm"]:
            sd.update({f"{p}.layernorm.weight": ln(i), f"{p}.layernorm.bias": u(4, i)})
    return sd


def _ctm_pairs(cfg, w, z, kind):
    """pp(z): paired products (random-pairing) or the upper triangle of the outer product."""
    n = cfg[f"n_synch_{kind}"]
    mode = cfg["neuron_select_type"]
    if mode == "random-pairing":
        return z[:, w[f"{kind}_neuron_indices_left"]] * z[:, w[f"{kind}_neuron_indices_right"]]
    if mode == "first-last":
        left = right = z[:, :n] if kind == "out" else z[:, -n:]
    else:
        left, right = z[:, w[f"{kind}_neuron_indices_left"]], z[:, w[f"{kind}_neuron_indices_right"]]
    i, j = np.triu_indices(n)
    return (left[:, :, None] * right[:, None, :])[:, i, j]


def _ctm_synapse(cfg, w, u):
    if cfg["synapse_depth"] == 1:
        return layernorm(glu(linear(u, w["synapses.1.weight"], w["synapses.1.bias"])),
                         w["synapses.3.weight"], w["synapses.3.bias"])
    p = "synapses"
    h = [silu(layernorm(linear(u, w[f"{p}.first_projection.0.weight"], w[f"{p}.first_projection.0.bias"]),
                        w[f"{p}.first_projection.1.weight"], w[f"{p}.first_projection.1.bias"]))]
    blocks = cfg["synapse_depth"] - 1
    for i in range(blocks):
        d = f"{p}.down_projections.{i}"
        h.append(silu(layernorm(linear(h[-1], w[f"{d}.1.weight"], w[f"{d}.1.bias"]), w[f"{d}.2.weight"], w[f"{d}.2.bias"])))
    out = h[-1]
    for i in reversed(range(blocks)):
        q = f"{p}.up_projections.{i}"
        up = silu(layernorm(linear(out, w[f"{q}.1.weight"], w[f"{q}.1.bias"]), w[f"{q}.2.weight"], w[f"{q}.2.bias"]))
        out = layernorm(up + h[i], w[f"{p}.skip_lns.{i}.weight"], w[f"{p}.skip_lns.{i}.bias"])
    return out


def _ctm_nlm(cfg, w, A):
    """Per-neuron private MLPs over the history A (B, D, M): SuperLinear -> GLU (-> SuperLinear -> GLU)."""
    h = A
    for k in ((0, 2) if cfg["deep_nlms"] else (0,)):
        p = f"trace_processor.0.{k}"
        if cfg["do_layernorm_nlm"]:
            h = layernorm(h, w[f"{p}.layernorm.weight"], w[f"{p}.layernorm.bias"])
        h = glu((np.einsum("bdm,mhd->bdh", h, w[f"{p}.w1"]) + w[f"{p}.b1"]) / w[f"{p}.T"][0])
    return h[..., 0]


def ctm_forward(sd, cfg, x):
    """predictions (B, out_dims, T) and certainties (B, 2, T) of x (B, C, S...) with backbone 'none'."""
    cfg = {**CTM_DEFAULTS, **cfg}
    w = _f64(sd)
    B, heads, d_in = x.shape[0], cfg["heads"], cfg["d_input"]
    hd = d_in // heads
    tokens = x.astype(F64).reshape(B, x.shape[1], -1).transpose(0, 2, 1)          # B,S,C
    kv = layernorm(linear(tokens, w["kv_proj.0.weight"], w["kv_proj.0.bias"]), w["kv_proj.1.weight"], w["kv_proj.1.bias"])
    Wq, Wk, Wv = np.split(w["attention.in_proj_weight"], 3)
    bq, bk, bv = np.split(w["attention.in_proj_bias"], 3)
    S = kv.shape[1]
    k_heads = linear(kv, Wk, bk).reshape(B, S, heads, hd)
    v_heads = linear(kv, Wv, bv).reshape(B, S, heads, hd)
    r_act = np.exp(-np.clip(w["decay_params_action"], 0, 15))
    r_out = np.exp(-np.clip(w["decay_params_out"], 0, 15))
    A = np.broadcast_to(w["start_trace"], (B,) + w["start_trace"].shape).copy()
    z = np.broadcast_to(w["start_activated_state"], (B, cfg["d_model"])).copy()
    alpha_out, beta_out = _ctm_pairs(cfg, w, z, "out"), 1.0
    alpha_act = beta_act = None
    preds, certs = [], []
    for _ in range(cfg["iterations"]):
        pp = _ctm_pairs(cfg, w, z, "action")
        if alpha_act is None:
            alpha_act, beta_act = pp, np.ones_like(pp)
        else:
            alpha_act, beta_act = r_act * alpha_act + pp, r_act * beta_act + 1
        q = linear(linear(alpha_act / np.sqrt(beta_act), w["q_proj.weight"], w["q_proj.bias"]), Wq, bq).reshape(B, heads, hd)
        att = softmax(np.einsum("bhc,bshc->bhs", q, k_heads) / math.sqrt(hd))
        o = linear(np.einsum("bhs,bshc->bhc", att, v_heads).reshape(B, d_in),
                   w["attention.out_proj.weight"], w["attention.out_proj.bias"])
        a = _ctm_synapse(cfg, w, np.concatenate([o, z], axis=-1))
        A = np.concatenate([A[:, :, 1:], a[:, :, None]], axis=-1)
        z = _ctm_nlm(cfg, w, A)
        alpha_out, beta_out = r_out * alpha_out + _ctm_pairs(cfg, w, z, "out"), r_out * beta_out + 1
        y = linear(alpha_out / np.sqrt(beta_out), w["output_projector.0.weight"], w["output_projector.0.bias"])
        p = softmax(y.reshape([B] + list(cfg["prediction_reshaper"])))
        ne = -(p * np.log(p)).sum(-1) / math.log(p.shape[-1])
        ne = ne.reshape(B, -1).mean(-1)
        preds.append(y)
        certs.append(np.stack([ne, 1 - ne], axis=-1))
    return np.stack(preds, -1).astype(np.float32), np.stack(certs, -1).astype(np.float32)


# ---------------------------------------------------------------- ELM (SEED_MODELS.md 3.1, 3.3)
ELM_DEFAULTS = {"num_memory": 100, "lambda_value": 5.0, "mlp_num_layers": 1, "mlp_hidden_size": None,
                "mlp_activation": "relu", "tau_s_value": 5.0, "tau_b_value": 5.0, "memory_tau_min": 1.0,
                "memory_tau_max": 1000.0, "learn_memory_tau": False, "w_s_value": 0.5, "num_branch": None,
                "num_synapse_per_branch": 1, "input_to_synapse_routing": None, "delta_t": 1.0}


def elm_sizes(cfg):
    cfg = {**ELM_DEFAULTS, **cfg}
    n_b = cfg["num_branch"] or cfg["num_input"]
    return cfg, n_b, n_b * cfg["num_synapse_per_branch"], cfg["mlp_hidden_size"] or 2 * cfg["num_memory"]


def elm_routing(cfg, rng):
    """(indices, mask) of the reference's routing: random inputs, or NeuronIO's interlaced windows."""
    cfg, n_b, n_syn, _ = elm_sizes(cfg)
    n_in, mode = cfg["num_input"], cfg["input_to_synapse_routing"]
    if mode == "random_routing":
        idx = rng.integers(0, n_in, size=n_syn)
        return idx.astype(np.int64), np.ones(n_syn, dtype=np.int64)
    if mode == "neuronio_routing":
        # interlace excitatory (first half) and inhibitory (second half) inputs
        interlocked = (np.arange(n_in) % 2) * (n_in // 2) + np.arange(n_in) // 2
        stride = math.ceil(n_in / n_b)
        windows = np.arange(n_b)[:, None] * stride + np.arange(cfg["num_synapse_per_branch"])[None, :]
        valid = (windows < n_in).reshape(-1)
        return interlocked[np.minimum(windows, n_in - 1).reshape(-1)].astype(np.int64), valid
    return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)


def elm_state_dict(cfg, rng, version=1):
    """Random ELM (v1 or v2) weights by the reference keys."""
    cfg, n_b, n_syn, hidden = elm_sizes(cfg)
    d_m = cfg["num_memory"]
    u = lambda fan, *s: (rng.uniform(-1, 1, size=s) / math.sqrt(fan)).astype(np.float32)  # noqa: E731
    idx, mask = elm_routing(cfg, rng)
    sd = {"_proto_w_s": rng.uniform(-0.3, 1.0, size=n_syn).astype(np.float32),    # some negative: ReLU matters
          "_proto_tau_m": rng.normal(0, 2, size=d_m).astype(np.float32),
          "input_to_synapse_indices": idx, "valid_indices_mask": mask,
          "w_y.weight": u(d_m, cfg["num_output"], d_m), "w_y.bias": u(d_m, cfg["num_output"])}
    if version == 1:
        sd["tau_s"] = rng.uniform(0.5, 20, size=n_syn).astype(np.float32)
    else:
        sd["tau_b"] = rng.uniform(0.5, 20, size=n_b).astype(np.float32)
    sizes = [n_b + d_m] + [hidden] * cfg["mlp_num_layers"] + [d_m]
    for k in range(len(sizes) - 1):
        sd[f"mlp.network.{2 * k}.weight"] = u(sizes[k], sizes[k + 1], sizes[k])
        sd[f"mlp.network.{2 * k}.bias"] = u(sizes[k], sizes[k + 1])
    return sd


def elm_forward(sd, cfg, X, version=1):
    """Y (B, T, num_output) of X (B, T, num_input) for the ELM neuron, v1 or v2."""
    cfg, n_b, n_syn, _ = elm_sizes(cfg)
    w = _f64(sd)
    dt, lam = cfg["delta_t"], cfg["lambda_value"]
    lo, hi = cfg["memory_tau_min"], cfg["memory_tau_max"]
    if version == 2:
        hi = max(lo + 3e-6, hi)
    act = silu if cfg["mlp_activation"] == "silu" else relu
    X = X.astype(F64)
    if cfg["input_to_synapse_routing"] is not None:
        X = X[:, :, sd["input_to_synapse_indices"]] * w["valid_indices_mask"].astype(F64)
    w_s = relu(w["_proto_w_s"])
    tau_m = (hi - lo) * sigmoid(w["_proto_tau_m"]) + lo
    kappa_m = np.exp(-dt / np.maximum(tau_m, 1e-6))
    linears = sorted(int(k.split(".")[2]) for k in sd if k.startswith("mlp.network.") and k.endswith(".weight"))

    def mlp(h):
        for n, k in enumerate(linears):
            h = linear(h, w[f"mlp.network.{k}.weight"], w[f"mlp.network.{k}.bias"])
            h = act(h) if n < len(linears) - 1 else h
        return 1.7159 * np.tanh(h * 2 / 3)

    B, T, _ = X.shape
    m = np.zeros((B, cfg["num_memory"]))
    out = []
    if version == 1:
        kappa_s = np.exp(-dt / np.maximum(w["tau_s"], 1e-6))
        s = np.zeros((B, n_syn))
        for t in range(T):
            s = kappa_s * s + w_s * X[:, t]
            dm = mlp(np.concatenate([s.reshape(B, n_b, -1).sum(-1), kappa_m * m], axis=-1))
            m = kappa_m * m + lam * (1 - kappa_m) * dm
            out.append(linear(m, w["w_y.weight"], w["w_y.bias"]))
    else:
        kappa_b = np.exp(-dt / np.maximum(w["tau_b"], 1e-6))
        kappa_l = np.exp(-dt * lam / np.maximum(tau_m, 1e-6))
        b = np.zeros((B, n_b))
        for t in range(T):
            b = kappa_b * b + (w_s * X[:, t]).reshape(B, n_b, -1).sum(-1)
            dm = mlp(np.concatenate([b, kappa_m * m], axis=-1))
            m = kappa_m * m + (1 - kappa_l) * dm
            out.append(linear(m, w["w_y.weight"], w["w_y.bias"]))
    return np.stack(out, axis=1).astype(np.float32)
