"""ms per step of a CUBA network on ONNX Runtime, the reference interpreter and eager PyTorch.

The workload is ``specs/cuba.nspec`` (4000 LIF neurons, p = 0.02, dt = 0.1 ms) when the compiler
can build it (``nspec.load``), else an equivalent hand-built Program.  The eager PyTorch anchor is a
hand-written loop over an equivalent network (same sizes, time constants, weights and CSR
statistics; CSR sparse matmul for propagation).  Backends run interleaved (A B C A B C ...), each
from the same initial state, and the table reports medians, ratios to the reference and spike
counts (ONNX runs must reproduce the reference's spikes exactly).  Compile time (session build)
is reported apart.  Default run: well under a minute on 2 cores.

    python bench/onnx_bench.py [--steps 1000] [--reps 3] [--batch 1] [--hand-built] [--plot out.png]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nspec.compiler.ir import DType, GraphBuilder, Op, Program, Var
from nspec.lowering.to_onnx import OnnxExecutor
from nspec.runtime.executor import RunRequest
from nspec.runtime.reference import ReferenceExecutor

N, P_CONNECT, DT = 4000, 0.02, 1e-4
TAUM, TAUE, TAUI, VT, VR, EL = 20e-3, 5e-3, 10e-3, -50e-3, -60e-3, -49e-3
WE, WI, REFRACTORY = 1.62e-3, -9e-3, 5e-3


# ---------------------------------------------------------------- the network
def connectivity(seed: int = 42):
    """Random CSR connectivity (exc rows 0..3199, inh rows 3200..3999), as arrays."""
    rng = np.random.default_rng(seed)
    n_exc = N * 4 // 5
    out = []
    for n_pre in (n_exc, N - n_exc):
        mask = rng.random((n_pre, N)) < P_CONNECT
        out.append((np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64), np.nonzero(mask)[1].astype(np.int64)))
    return out


def coefficients():
    """Exact integration of dv/dt = (ge + gi - (v - El))/taum with exponentially decaying ge, gi."""
    em, ee, ei = np.exp(-DT / TAUM), np.exp(-DT / TAUE), np.exp(-DT / TAUI)
    return {"em": em, "ee": ee, "ei": ei, "ce": TAUE / (TAUE - TAUM) * (ee - em), "ci": TAUI / (TAUI - TAUM) * (ei - em),
            "ref_steps": round(REFRACTORY / DT)}


def hand_built(conn) -> Program:
    """The CUBA step as IR: integrate (unless refractory), threshold, propagate, reset."""
    c = coefficients()
    g = GraphBuilder()
    f32, sh = DType.f32, (N,)
    v, ge, gi, ref = (g.arg(f"P/{k}", "state", f32, sh) for k in ("v", "ge", "gi", "refractory_steps"))
    k = lambda x: g.const(np.float32(x))  # noqa: E731
    add = lambda a, b: g.add(Op.ADD, (a, b), f32, sh)  # noqa: E731
    mul = lambda a, b: g.add(Op.MUL, (a, b), f32, sh)  # noqa: E731
    u = g.add(Op.SUB, (v, k(EL)), f32, sh)
    v_int = add(add(add(mul(u, k(c["em"])), mul(ge, k(c["ce"]))), mul(gi, k(c["ci"]))), k(EL))
    refractory = g.add(Op.GT, (ref, k(0)), DType.bool, sh)
    v1 = g.add(Op.WHERE, (refractory, v, v_int), f32, sh)
    spike = g.add(Op.SPIKE, (g.add(Op.SUB, (v1, k(VT)), f32, sh),), f32, sh)
    fired = g.add(Op.GT, (spike, k(0)), DType.bool, sh)
    n_exc = N * 4 // 5
    post = []
    for (indptr, indices), (lo, hi), w in zip(conn, ((0, n_exc), (n_exc, N)), (WE, WI)):
        part = g.add(Op.SLICE, (spike,), f32, (hi - lo,), (("starts", (lo,)), ("stops", (hi,)), ("steps", (1,))))
        post.append(g.add(Op.PROPAGATE, (part, g.const(indptr, DType.i64), g.const(indices, DType.i64), k(w)), f32, sh,
                          (("n_post", N),)))
    g.result("P/v", "next", g.add(Op.WHERE, (fired, k(VR), v1), f32, sh))
    g.result("P/ge", "next", add(mul(ge, k(c["ee"])), post[0]))
    g.result("P/gi", "next", add(mul(gi, k(c["ei"])), post[1]))
    countdown = g.add(Op.MAXIMUM, (g.add(Op.SUB, (ref, k(1)), f32, sh), k(0)), f32, sh)
    g.result("P/refractory_steps", "next", g.add(Op.WHERE, (fired, k(c["ref_steps"]), countdown), f32, sh))
    g.result("P/spike", "value", spike)
    states = tuple(Var(f"P/{k}", f32, sh) for k in ("v", "ge", "gi", "refractory_steps"))
    return Program("cuba_hand_built", g.build(), GraphBuilder().build(), (), states, (), (), dt=DT)


def initial_state(batch: int, seed: int = 42) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    zeros = np.zeros((batch, N), np.float32)
    return {"P/v": (VR + rng.random((batch, N)) * (VT - VR)).astype(np.float32), "P/ge": zeros, "P/gi": zeros.copy(),
            "P/refractory_steps": zeros.copy()}


def workload(batch: int, hand: bool):
    """(name, program, params, initial state)."""
    if not hand:
        try:
            import nspec

            model = nspec.load("specs/cuba.nspec")
            params, state = model.initial(batch, None)
            return "specs/cuba.nspec", model.program, params, state
        except (ImportError, Exception) as exc:  # the compiler may not build it yet: fall back, and say so
            print(f"(specs/cuba.nspec not available: {type(exc).__name__}: {str(exc)[:120]}; using the hand-built IR)")
    return "hand-built CUBA IR", hand_built(connectivity()), {}, initial_state(batch)


# ---------------------------------------------------------------- eager PyTorch anchor
class TorchCuba:
    """A hand-written eager PyTorch CUBA loop with event-driven propagation.

    Each step gathers the padded synapse rows of the neurons that spiked and ``index_add_``s their
    weights (torch 2.13's CPU CSR matmul took 3-40 ms per product here, which would make a poor anchor).
    """

    def __init__(self, conn):
        import torch

        self.torch = torch
        self.c = coefficients()
        self.tables = []
        n_exc = N * 4 // 5
        for (indptr, indices), offset, w in zip(conn, (0, n_exc), (WE, WI)):
            lens = np.diff(indptr)
            slots = np.arange(lens.max())
            table = np.where(slots[None] < lens[:, None], indptr[:-1, None] + slots[None], len(indices))
            posts = torch.from_numpy(np.concatenate([indices, [N]])[table])  # padding -> dummy neuron N
            self.tables.append((offset, offset + len(indptr) - 1, posts, w))

    def run(self, state: dict, steps: int) -> np.ndarray:
        """Spike trains [steps, B, N]."""
        torch, c = self.torch, self.c
        v, ge, gi, ref = (torch.from_numpy(state[k].copy()) for k in ("P/v", "P/ge", "P/gi", "P/refractory_steps"))
        batch = v.shape[0]
        trains = torch.zeros(steps, batch, N)
        vr, ref_steps = torch.tensor(VR, dtype=torch.float32), torch.tensor(float(c["ref_steps"]))
        with torch.no_grad():
            for t in range(steps):
                refractory = ref > 0
                v = torch.where(refractory, v, (v - EL) * c["em"] + ge * c["ce"] + gi * c["ci"] + EL)
                fired = v > VT
                trains[t] = fired
                post = []
                for lo, hi, posts, w in self.tables:
                    out = torch.zeros(batch * (N + 1))
                    b, i = torch.nonzero(fired[:, lo:hi], as_tuple=True)
                    idx = (posts[i] + b[:, None] * (N + 1)).reshape(-1)
                    out.index_add_(0, idx, torch.full((idx.numel(),), w))
                    post.append(out.view(batch, N + 1)[:, :N])
                ge = ge * c["ee"] + post[0]
                gi = gi * c["ei"] + post[1]
                v = torch.where(fired, vr, v)
                ref = torch.where(fired, ref_steps, torch.clamp(ref - 1, min=0))
        return trains.numpy()


# ---------------------------------------------------------------- measuring
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--hand-built", action="store_true", help="use the hand-built IR even if the spec compiles")
    ap.add_argument("--plot", help="also write a bar chart (PNG) here")
    args = ap.parse_args(argv)

    name, program, params, state = workload(args.batch, args.hand_built)
    spike_name = next(r.name for r in program.step.results if r.kind == "value" and r.name.endswith("spike"))
    request = RunRequest(params, state, {}, args.steps, ((spike_name, 1),))

    runners, compile_s = {}, {}
    onnx_variants = (("onnxruntime (whole run)", {}), ("onnxruntime strict", {"strict": True}),
                     ("onnxruntime per step", {"mode": "step"}))
    for label, options in onnx_variants:
        t0 = time.perf_counter()
        ex = OnnxExecutor(program, **options)
        ex.run(RunRequest(params, state, {}, 1, ((spike_name, 1),)))  # builds the session
        compile_s[label] = time.perf_counter() - t0
        runners[label] = lambda ex=ex: ex.run(request).records[spike_name]
    reference = ReferenceExecutor(program)
    runners["reference (NumPy)"] = lambda: reference.run(request).records[spike_name]
    torch_net = TorchCuba(connectivity())
    runners["eager PyTorch (hand-written)"] = lambda: torch_net.run(state, args.steps)

    times = {k: [] for k in runners}
    trains = {}
    for _ in range(args.reps):  # interleaved: every backend once per round
        for label, run in runners.items():
            t0 = time.perf_counter()
            trains[label] = run()
            times[label].append((time.perf_counter() - t0) / args.steps * 1e3)
    same = {label: bool(np.array_equal(trains[label], trains["reference (NumPy)"])) for label, _ in onnx_variants}

    base = statistics.median(times["reference (NumPy)"])
    print(f"\n{name}: {N} neurons, p = {P_CONNECT}, batch {args.batch}, {args.steps} steps "
          f"({args.steps * DT * 1e3:.0f} ms biological), {args.reps} interleaved rounds")
    print(f"{'backend':30s} {'ms/step':>9s} {'min':>8s} {'vs ref':>7s} {'rate Hz':>8s} {'spikes = ref':>12s} {'compile s':>9s}")
    for label, ts in times.items():
        med = statistics.median(ts)
        rate = trains[label].sum() / (N * args.batch * args.steps * DT)
        ident = {None: "n/a", True: "yes", False: "NO"}[same.get(label)]
        comp = f"{compile_s[label]:.2f}" if label in compile_s else ""
        print(f"{label:30s} {med:9.3f} {min(ts):8.3f} {base / med:6.1f}x {rate:8.2f} {ident:>12s} {comp:>9s}")
    print("(eager PyTorch runs an equivalent hand-written network: compare its rate, not its spikes)")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3))
        ax.barh(list(times), [statistics.median(t) for t in times.values()])
        ax.set_xlabel("ms per step (median)")
        ax.set_title(f"{name}, batch {args.batch}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
