"""Forward-pass time of the seed models (BDH, CTM, ELM) on every backend, against eager PyTorch.

Each workload is one reference forward pass (``idx -> logits``, ``x -> predictions, certainties``,
``X -> Y``) through ``specs/seeds/<model>.nspec`` with reference-keyed weights, timed on the
reference interpreter, ONNX Runtime, TVM (llvm), the torch backend run eagerly and under
``torch.compile``, and an eager PyTorch anchor: the model written directly in PyTorch from the
equations of SEED_MODELS.md (BDH in the authors' parallel form, CTM and ELM as their loops).
BDH runs in both of its specs on every backend, side by side against the one anchor: the
recurrent form ``bdh.nspec`` (one token per data step, a Hebbian state per layer) and the
parallel form ``bdh_parallel.nspec`` (one whole sequence per data step, causal linear attention);
the ``spec`` column names which.
Every runner first runs once (compiles, warms caches; the time is reported apart), then all run
interleaved (A B C ... A B C ...) for ``--reps`` rounds and the table reports medians, the ratio to
the anchor and the largest difference from the anchor's outputs.

Workloads: the conformance bundles' tiny configs (their weights and inputs), and realistic small
sizes: BDH n_embd 256, 4 heads, multiplier 32, T 256 (``--bdh-layers``, default 1: the recurrent
form's cost is linear in depth, and the reference default of 6 takes minutes); CTM with the CIFAR-10 settings of
SEED_MODELS.md (d_model 256, d_input 64, 16 heads, synch 256/512, random-pairing, T 50, M 15,
H 64, synapse_depth 5) on a raw 3 x 32 x 32 image (backbone 'none'); ELM with the released NeuronIO
weights, T 500 of sparse spikes.

``--train`` times training steps instead, on the torch backend only: ``Model.to_torch()``'s module
and the anchor each run forward, loss = the sum of the float outputs' mean squares, and backward
(gradients for every float weight).

Threads: ``--threads`` (default 1) sets torch's intra-op threads, ONNX Runtime's, TVM's and the
BLAS pool's; on a loaded 2-core machine torch's default pool alone slows small per-step ops ~50x.

Default run: the tiny configs in 3 rounds, the realistic sizes in 1 (``--small-reps``), without
torch.compile of the realistic CTM, whose compiled step unrolls 50 internal ticks (about 15 minutes
of compiling on 2 loaded cores; ``--all`` includes it): about 3 minutes on 2 quiet cores, 5 on
loaded ones, more with a cold TVM cache (BDH's parallel form adds about a minute with a cold cache,
mostly compiling; ``--models bdh`` alone takes about 2.5 minutes).  ``--quick``: tiny configs only,
one round.  ``--bdh-forms parallel`` leaves out the recurrent BDH, the slowest workload here.

    python bench/seeds.py [--quick | --all] [--reps 3] [--small-reps 1] [--models bdh,ctm,elm]
                          [--skip tvm,torch.compile] [--bdh-layers 1] [--bdh-forms recurrent,parallel]
                          [--threads 1] [--train]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "conformance"
RUNNERS = ("reference", "onnxruntime", "tvm", "torch", "torch.compile")


@dataclass(frozen=True)
class Workload:
    """One forward pass: the spec and its hyperparameters, reference-keyed weights, batched inputs."""

    label: str
    model: str
    hyper: dict
    weights: dict
    inputs: dict
    anchor: Callable[[dict, dict, dict], dict]  # (weights, hyper, inputs) -> outputs, eager PyTorch
    realistic: bool = False                     # a realistic small size (else a bundle's tiny config)
    slow: tuple[str, ...] = ()                  # runners left out unless --all
    specs: tuple[str, ...] = ()                 # specs/seeds/<spec>.nspec run on every backend (default: model)

    @property
    def spec_names(self) -> tuple[str, ...]:
        return self.specs or (self.model,)


FORMS = {"recurrent": "bdh", "parallel": "bdh_parallel"}  # --bdh-forms -> the BDH specs


# ---------------------------------------------------------------- eager PyTorch anchors
def bdh_torch(sd, cfg, inputs):
    """BDH in the authors' parallel form: causal linear attention over the whole sequence."""
    import torch
    import torch.nn.functional as F

    idx = torch.as_tensor(inputs["idx"])
    D, nh, V = cfg["n_embd"], cfg["n_head"], cfg["vocab_size"]
    N = cfg["mlp_internal_dim_multiplier"] * D // nh
    B, T = idx.shape
    ln = lambda v: F.layer_norm(v, (v.shape[-1],))  # noqa: E731
    freqs = sd["attn.freqs"].view(1, 1, 1, N)
    phases = (torch.arange(T, dtype=torch.float32).view(1, 1, -1, 1) * freqs) % 1 * (2 * math.pi)
    cos, sin = torch.cos(phases), torch.sin(phases)
    mask = torch.tril(torch.ones(T, T), diagonal=-1)
    x = ln(sd["embed.weight"][idx]).unsqueeze(1)
    for _ in range(cfg["n_layer"]):
        xs = F.relu(x @ sd["encoder"])
        q = xs * cos + torch.stack((-xs[..., 1::2], xs[..., ::2]), dim=-1).view(xs.shape) * sin
        a = ((q @ q.mT) * mask) @ x
        ys = F.relu(ln(a) @ sd["encoder_v"])
        y = (xs * ys).transpose(1, 2).reshape(B, 1, T, nh * N) @ sd["decoder"]
        x = ln(x + ln(y))
    return {"logits": x.view(B, T, D) @ sd["lm_head"]}


def ctm_torch(sd, cfg, inputs):
    """CTM as the authors' tick loop (backbone 'none', U-Net synapse, deep NLMs)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(inputs["x"])
    B, heads, d_in, D = x.shape[0], cfg["heads"], cfg["d_input"], cfg["d_model"]
    lin = lambda v, p: F.linear(v, sd[f"{p}.weight"], sd[f"{p}.bias"])  # noqa: E731
    lnp = lambda v, p: F.layer_norm(v, (v.shape[-1],), sd[f"{p}.weight"], sd[f"{p}.bias"])  # noqa: E731
    kv = lnp(lin(x.flatten(2).transpose(1, 2), "kv_proj.0"), "kv_proj.1")
    dense = cfg["neuron_select_type"] != "random-pairing"

    def pairs(z, kind):
        n = cfg[f"n_synch_{kind}"]
        if cfg["neuron_select_type"] == "first-last":
            left = right = z[:, :n] if kind == "out" else z[:, -n:]
        else:
            left, right = z[:, sd[f"{kind}_neuron_indices_left"]], z[:, sd[f"{kind}_neuron_indices_right"]]
        if not dense:
            return left * right
        i, j = torch.triu_indices(n, n)
        return (left.unsqueeze(2) * right.unsqueeze(1))[:, i, j]

    def synapse(u):
        p = "synapses"
        h = [F.silu(lnp(lin(u, f"{p}.first_projection.0"), f"{p}.first_projection.1"))]
        blocks = cfg["synapse_depth"] - 1
        for i in range(blocks):
            h.append(F.silu(lnp(lin(h[-1], f"{p}.down_projections.{i}.1"), f"{p}.down_projections.{i}.2")))
        out = h[-1]
        for i in reversed(range(blocks)):
            up = F.silu(lnp(lin(out, f"{p}.up_projections.{i}.1"), f"{p}.up_projections.{i}.2"))
            out = lnp(up + h[i], f"{p}.skip_lns.{i}")
        return out

    def nlm(A):
        h = A
        for k in (0, 2):
            p = f"trace_processor.0.{k}"
            h = F.glu((torch.einsum("bdm,mhd->bdh", h, sd[f"{p}.w1"]) + sd[f"{p}.b1"]) / sd[f"{p}.T"], dim=-1)
        return h.squeeze(-1)

    r_act = torch.exp(-sd["decay_params_action"].clamp(0, 15))
    r_out = torch.exp(-sd["decay_params_out"].clamp(0, 15))
    A = sd["start_trace"].expand(B, -1, -1)
    z = sd["start_activated_state"].expand(B, -1)
    alpha_out, beta_out = pairs(z, "out"), 1.0
    alpha_act = beta_act = None
    preds, certs = [], []
    for _ in range(cfg["iterations"]):
        pp = pairs(z, "action")
        alpha_act, beta_act = (pp, torch.ones_like(pp)) if alpha_act is None else (r_act * alpha_act + pp, r_act * beta_act + 1)
        q = F.linear(alpha_act / torch.sqrt(beta_act), sd["q_proj.weight"], sd["q_proj.bias"]).unsqueeze(1)
        o, _ = F.multi_head_attention_forward(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), d_in, heads,
                                              sd["attention.in_proj_weight"], sd["attention.in_proj_bias"], None, None,
                                              False, 0.0, sd["attention.out_proj.weight"], sd["attention.out_proj.bias"],
                                              training=False, need_weights=False)
        A = torch.cat((A[:, :, 1:], synapse(torch.cat((o[0], z), dim=-1)).unsqueeze(-1)), dim=-1)
        z = nlm(A)
        alpha_out, beta_out = r_out * alpha_out + pairs(z, "out"), r_out * beta_out + 1
        y = F.linear(alpha_out / torch.sqrt(beta_out), sd["output_projector.0.weight"], sd["output_projector.0.bias"])
        p = F.softmax(y, dim=-1)
        ne = -(p * F.log_softmax(y, dim=-1)).sum(-1) / math.log(y.shape[-1])
        preds.append(y)
        certs.append(torch.stack((ne, 1 - ne), -1))
    return {"predictions": torch.stack(preds, -1), "certainties": torch.stack(certs, -1)}


def elm_torch(sd, cfg, inputs):
    """ELM v1 as the authors' time loop (routing, synaptic traces, branch sums, MLP-driven memory)."""
    import torch
    import torch.nn.functional as F

    X = torch.as_tensor(inputs["X"])
    routing = cfg.get("input_to_synapse_routing")
    if routing is not None:
        X = X[:, :, sd["input_to_synapse_indices"]] * sd["valid_indices_mask"]
    n_b = cfg.get("num_branch") or cfg["num_input"]
    lo, hi, dt, lam = cfg.get("memory_tau_min", 1.0), cfg.get("memory_tau_max", 1000.0), cfg.get("delta_t", 1.0), cfg.get("lambda_value", 5.0)
    act = F.silu if cfg.get("mlp_activation") == "silu" else F.relu
    w_s = F.relu(sd["_proto_w_s"])
    kappa_s = torch.exp(-dt / sd["tau_s"].clamp(min=1e-6))
    kappa_m = torch.exp(-dt / ((hi - lo) * torch.sigmoid(sd["_proto_tau_m"]) + lo).clamp(min=1e-6))
    B, T, _ = X.shape
    s, m = torch.zeros(B, len(kappa_s)), torch.zeros(B, len(kappa_m))
    out = []
    for t in range(T):
        s = kappa_s * s + w_s * X[:, t]
        h = act(F.linear(torch.cat([s.view(B, n_b, -1).sum(-1), kappa_m * m], -1), sd["mlp.network.0.weight"], sd["mlp.network.0.bias"]))
        dm = torch.tanh(F.linear(h, sd["mlp.network.2.weight"], sd["mlp.network.2.bias"]) * 2 / 3) * 1.7159
        m = kappa_m * m + lam * (1 - kappa_m) * dm
        out.append(F.linear(m, sd["w_y.weight"], sd["w_y.bias"]))
    return {"Y": torch.stack(out, dim=-2)}


ANCHORS = {"bdh": bdh_torch, "ctm": ctm_torch, "elm": elm_torch}


# ---------------------------------------------------------------- workloads
def bundle_workload(name: str, bdh_specs: tuple[str, ...] = ()) -> Workload:
    import numpy as np
    from safetensors.numpy import load_file

    meta = json.loads((CONFORMANCE / f"{name}.json").read_text())
    with np.load(CONFORMANCE / f"{name}.inputs.npz") as data:
        inputs = {k: data[k] for k in data.files}
    return Workload(name, meta["model"], meta["config"], load_file(str(CONFORMANCE / f"{name}.weights.safetensors")),
                    inputs, ANCHORS[meta["model"]], specs=bdh_specs if meta["model"] == "bdh" else ())


def small_workloads(models, bdh_layers: int, bdh_specs: tuple[str, ...] = ()) -> list[Workload]:
    """Realistic small sizes with random reference-keyed weights (tests/seed_oracles.py draws them)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    import seed_oracles as oracle

    rng = np.random.default_rng(0)
    out = []
    if "bdh" in models:
        cfg = dict(n_layer=bdh_layers, n_embd=256, dropout=0.0, n_head=4, mlp_internal_dim_multiplier=32, vocab_size=256)
        out.append(Workload(f"bdh D256 L{bdh_layers} T256", "bdh", cfg, oracle.bdh_state_dict(cfg, rng, std=0.02),
                            {"idx": rng.integers(0, 256, size=(1, 256))}, bdh_torch, realistic=True, specs=bdh_specs))
    if "ctm" in models:
        cfg = dict(iterations=50, d_model=256, d_input=64, heads=16, n_synch_out=256, n_synch_action=512,
                   synapse_depth=5, memory_length=15, deep_nlms=True, memory_hidden_dims=64, do_layernorm_nlm=False,
                   backbone_type="none", positional_embedding_type="none", out_dims=10, prediction_reshaper=[-1],
                   dropout=0.0, neuron_select_type="random-pairing", n_random_pairing_self=0)
        x = rng.normal(size=(1, 3, 32 * 32)).astype(np.float32)
        out.append(Workload("ctm cifar10 T50", "ctm", cfg, oracle.ctm_state_dict(cfg, 3, rng), {"x": x}, ctm_torch,
                            realistic=True, slow=("torch.compile",)))
    if "elm" in models:
        released = bundle_workload("elm_neuronio_best")
        X = (rng.random((1, 500, 1278)) < 0.01).astype(np.float32)
        out.append(Workload("elm neuronio T500", "elm", released.hyper, released.weights, {"X": X}, elm_torch, realistic=True))
    return out


# ---------------------------------------------------------------- work and the sgemm yardstick
def _numel(weights: dict, *keys: str) -> int:
    return sum(int(math.prod(weights[k].shape)) for k in keys)


def workload_flops(work: Workload) -> float:
    """Nominal float operations of one forward pass of ``work``: 2 per multiply-add of its matrix
    products (elementwise work, norms, softmax and RoPE are not counted), for batch B:

    BDH (the parallel form's work, for either spec): per layer 2 B nh T (3 D N + T N + T D), i.e.
    x @ encoder, ReLU(LN(a)) @ encoder_v and xy @ decoder (each T x D x nh N), Q K^T (nh x T x T x
    N, all of it: the causal mask is applied afterwards) and scores @ x (nh x T x T x D); plus the
    head 2 B T D V.  CTM: K and V of the S tokens once, 2 B S (C d_in + 2 d_in^2); per tick 2 B
    times (the synapse U-Net's and both NLM layers' weight elements + q_proj's + 2 d_in^2 for the
    query and output projections + the output projector's + 2 S d_in for the attention itself).
    ELM: per step 2 B times the MLP's two and the readout's weight elements."""
    w, cfg = work.weights, work.hyper
    if work.model == "bdh":
        B, T = work.inputs["idx"].shape
        D, nh, V = cfg["n_embd"], cfg["n_head"], cfg["vocab_size"]
        N = cfg["mlp_internal_dim_multiplier"] * D // nh
        return 2.0 * B * (cfg["n_layer"] * nh * T * (3 * D * N + T * N + T * D) + T * D * V)
    if work.model == "ctm":
        B, C = work.inputs["x"].shape[:2]
        S = int(math.prod(work.inputs["x"].shape[2:]))
        d_in = cfg["d_input"]
        tick = (_numel(w, *(k for k in w if k.startswith("synapses.") and k.endswith("weight") and w[k].ndim == 2))
                + _numel(w, *(k for k in w if k.startswith("trace_processor.") and k.endswith(".w1")))
                + _numel(w, "q_proj.weight", "output_projector.0.weight") + 2 * d_in * d_in + 2 * S * d_in)
        return 2.0 * B * (S * (C * d_in + 2 * d_in * d_in) + cfg["iterations"] * tick)
    B, T = work.inputs["X"].shape[:2]
    return 2.0 * B * T * _numel(w, "mlp.network.0.weight", "mlp.network.2.weight", "w_y.weight")


def sgemm_peak(threads: int) -> tuple[float, str]:
    """This CPU's float32 matrix-product speed at ``threads`` threads, GFLOP/s: the best of ten
    1024 x 1024 x 1024 products through torch.mm (MKL or OpenBLAS) and NumPy's BLAS, the faster."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = {}
    for name, mm in (("torch.mm", lambda: torch.mm(a, b)), ("numpy", lambda: a.numpy() @ b.numpy())):
        mm()
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            mm()
            times.append(time.perf_counter() - t0)
        best[name] = 2 * 1024 ** 3 / min(times) / 1e9
    name = max(best, key=best.get)
    return best[name], name


# ---------------------------------------------------------------- measuring
def input_hyper(spec: str, inputs: dict) -> dict:
    """Hyperparameters the reference reads from its input's shape: CTM's lazy layers size
    themselves from x (B, C, S...); BDH's parallel form fixes the sequence length T of idx (B, T)."""
    if spec == "ctm":
        x = inputs["x"]
        return {"in_channels": x.shape[1], "n_tokens": int(math.prod(x.shape[2:]))}
    if spec == "bdh_parallel":
        return {"T": int(inputs["idx"].shape[1])}
    return {}


def spec_runner(work: Workload, spec: str, runner: str, threads: int, train: bool = False):
    """A callable running the forward pass through ``specs/seeds/<spec>.nspec`` on one backend,
    built and warmed up; and its warm-up time (compiling the spec, loading the weights, building
    the backend and the first run).  With ``train``: a training step of ``Model.to_torch()``
    (``train_step``), the torch runner only."""
    import nspec

    t0 = time.perf_counter()
    hyper = {k: v for k, v in work.hyper.items() if v is not None}
    hyper.update(input_hyper(spec, work.inputs))
    model = nspec.load(ROOT / "specs" / "seeds" / f"{spec}.nspec", **hyper)
    model.load_weights(work.weights)
    if train:
        if runner != "torch":
            raise ValueError("--train times the torch backend's module only")
        import torch

        module = model.to_torch()
        inputs = {k: torch.as_tensor(v) for k, v in work.inputs.items()}

        def step():
            module.zero_grad(set_to_none=True)
            return train_step(lambda: {k: v for k, v in module(**inputs).items() if not k.startswith("state/")})

        step()
        return step, time.perf_counter() - t0
    backend, options = {"torch.compile": ("torch", {"compile": True}), "onnxruntime": ("onnxruntime", {"threads": threads})
                        }.get(runner, (runner, {}))
    batch = next(iter(work.inputs.values())).shape[0]

    def run():
        return model.run(inputs=work.inputs, batch=batch, backend=backend, **options)

    run()
    return run, time.perf_counter() - t0


def train_step(forward: Callable[[], dict]) -> dict:
    """One training step's work: the forward pass, loss = the sum of each float output's mean
    square, its backward pass; the outputs as arrays."""
    outputs = forward()
    sum((v.float() ** 2).mean() for v in outputs.values() if v.is_floating_point()).backward()
    return {k: v.detach().numpy() for k, v in outputs.items()}


def anchor_runner(work: Workload, train: bool = False):
    import torch

    weights = {k: torch.as_tensor(v) for k, v in work.weights.items()}
    if train:
        weights = {k: w.clone().requires_grad_(w.is_floating_point()) for k, w in weights.items()}

    def run():
        if train:
            for w in weights.values():
                w.grad = None
            return train_step(lambda: work.anchor(weights, work.hyper, work.inputs))
        with torch.no_grad():
            return {k: v.numpy() for k, v in work.anchor(weights, work.hyper, work.inputs).items()}

    t0 = time.perf_counter()
    run()
    return run, time.perf_counter() - t0


ANCHOR = ("", "eager PyTorch")


def measure(work: Workload, runners, reps: int, threads: int, everything: bool, train: bool = False) -> list[tuple]:
    """Rows (spec, runner, median s, min s, warm-up s, max |diff| vs anchor or an error) for one
    workload: the anchor, then each of the workload's specs on each runner (training steps with
    ``train``)."""
    import numpy as np

    built, warm, errors = {}, {}, {}
    built[ANCHOR], warm[ANCHOR] = anchor_runner(work, train)
    labels = [(spec, r) for spec in work.spec_names for r in runners]
    for label in labels:
        if label[1] in work.slow and not everything:
            errors[label] = "skipped: compiling takes minutes here (--all includes it)"
            continue
        try:
            built[label], warm[label] = spec_runner(work, *label, threads, train)
        except Exception as exc:  # a backend that cannot run this model is a row of the table, not a crash
            errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    times = {k: [] for k in built}
    results = {}
    for _ in range(reps):
        for label, run in built.items():
            t0 = time.perf_counter()
            results[label] = run()
            times[label].append(time.perf_counter() - t0)
    want = results[ANCHOR]
    rows = []
    for label in [ANCHOR, *labels]:
        if label in errors:
            rows.append((*label, None, None, None, errors[label]))
            continue
        diff = max(float(np.max(np.abs(np.asarray(results[label][k]) - want[k]))) for k in want)
        rows.append((*label, statistics.median(times[label]), min(times[label]), warm[label], diff))
    return rows


def main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    runners = [r for r in RUNNERS if r not in args.skip.split(",")]
    bdh_specs = tuple(FORMS[f] for f in args.bdh_forms.split(","))
    works = [bundle_workload(n, bdh_specs) for n in ("bdh_tiny", "ctm_tiny", "elm_tiny") if n.split("_")[0] in models]
    if not args.quick:
        works += small_workloads(models, args.bdh_layers, bdh_specs)
    reps = 1 if args.quick else args.reps
    if args.train:
        runners = ["torch"]
    print(f"seed {'training steps' if args.train else 'forward passes'}: {reps} interleaved round(s) "
          f"(realistic sizes: {args.small_reps}), medians; "
          f"{args.threads} thread(s) per backend")
    peak, peak_by = sgemm_peak(args.threads)
    print(f"sgemm peak of this CPU: {peak:.1f} GFLOP/s ({peak_by}, 1024^3 float32, best of 10, "
          f"{args.threads} thread(s))")
    print(f"{'workload':20s} {'spec':13s} {'runner':15s} {'median ms':>10s} {'min ms':>9s} {'vs eager':>9s} "
          f"{'warm-up s':>9s} {'max |diff|':>10s} {'GFLOP/s':>8s} {'of peak':>7s}")
    for work in works:
        rows = measure(work, runners, args.small_reps if work.realistic else reps, args.threads, args.all, args.train)
        base = rows[0][2]
        flops = workload_flops(work) if work.realistic else None
        for spec, label, med, low, warm, diff in rows:
            if med is None:
                print(f"{work.label:20s} {spec:13s} {label:15s} "
                      f"{diff if diff.startswith('skipped') else 'failed: ' + diff}")
                continue
            rate = f"{flops / med / 1e9:8.2f} {flops / med / 1e9 / peak:7.1%}" if flops else ""
            print(f"{work.label:20s} {spec:13s} {label:15s} {med * 1e3:10.2f} {low * 1e3:9.2f} {base / med:8.2f}x "
                  f"{warm:9.2f} {diff:10.2e} {rate}")
        sys.stdout.flush()
    print("vs eager: the eager PyTorch anchor's median over this runner's (above 1: faster than eager PyTorch); "
          "warm-up: the first run (compile included); max |diff|: against the anchor's outputs; GFLOP/s: the "
          "realistic workload's matrix-product work (workload_flops: 2 per multiply-add) over the median, and "
          "its fraction of the sgemm peak")


def _forms(text: str) -> str:
    unknown = set(text.split(",")) - set(FORMS)
    if unknown or not text:
        raise argparse.ArgumentTypeError(f"unknown BDH form(s) {', '.join(sorted(unknown)) or repr(text)}; "
                                         f"choose from {', '.join(FORMS)}")
    return text


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny configs only, one round")
    mode.add_argument("--all", action="store_true", help="also the runners whose compile takes minutes")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds of the tiny configs (default 3)")
    ap.add_argument("--small-reps", type=int, default=1, help="interleaved rounds of the realistic sizes (default 1)")
    ap.add_argument("--models", default="bdh,ctm,elm", help="comma-separated subset of bdh,ctm,elm")
    ap.add_argument("--skip", default="", help=f"comma-separated runners to leave out: {', '.join(RUNNERS)}")
    ap.add_argument("--bdh-layers", type=int, default=1, help="n_layer of the realistic BDH (default 1)")
    ap.add_argument("--bdh-forms", default="recurrent,parallel", type=_forms,
                    help="comma-separated BDH specs to run: recurrent (bdh.nspec), parallel (bdh_parallel.nspec)")
    ap.add_argument("--threads", type=int, default=1, help="threads per backend (torch, ORT, TVM, BLAS)")
    ap.add_argument("--train", action="store_true", help="time training steps (forward + backward of the mean "
                    "square of the outputs) of the torch backend's module against the anchor's")
    return ap.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse()
    # thread pools read these when their libraries load, so set them before any import below
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    main(ARGS)
