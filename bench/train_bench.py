"""Training-step time (forward + backward) of spec models on the torch backend: eager vs torch.compile.

Workloads (all through ``nspec.load(...).to_torch()``, batch ``--batch``):

* ``lif-dense``: ``specs/train/lif_layer.nspec`` DenseRecurrent, 4000 LIF units (CUBA's size), a
  learnable 100 x 4000 input matrix and a dense 4000 x 4000 recurrent matrix (spikes return through
  a delay box), 100 steps, fast-sigmoid surrogate; loss: (mean rate - 0.05)^2.
* ``lif-sparse``: SparseRecurrent, CUBA's layout: 4000 LIF (std library, exp-Euler, refractory),
  2% random recurrent connectivity (about 320,000 synapses) through PROPAGATE with a learnable
  synaptic weight, 100 steps of 0.1 ms; loss: (mean rate - 20 Hz)^2 over the recorded spikes.
* ``bdh``: n_layer 2, n_embd 32, n_head 2, multiplier 8, vocab 256, 64 bytes per sequence;
  loss: next-byte cross-entropy against random targets.
* ``ctm``: 5 ticks, d_model 16, d_input 8, 2 heads, synch 8/8, memory 4, 8 input channels, one
  token (8-bit parity as in tests/test_training.py); loss: cross-entropy on the last tick.
* ``elm``: 6 inputs, 4 memories, hidden 8, 100 steps; loss: mean squared error.

Variants: ``eager`` runs ``module.step`` per time step; ``compile`` runs ``torch.compile(module.step)``
(one compiled step with its compiled backward; the time loop stays in Python, as ``to_torch``
recommends, since compiling the module would unroll every step).  Each variant is warmed once (the
first call's time, compilation included, is reported apart), then all run interleaved (workload by
workload: eager, compile, eager, compile, ...) for ``--reps`` rounds; the table shows medians, the
speedup and the largest relative difference between the two variants' losses and gradients.

Threads: ``--threads`` (default 1) sets torch's intra-op threads; on a loaded 2-core machine the
default pool makes these small per-step ops tens of times slower.  Not run by the test suite.

    python bench/train_bench.py [--reps 5] [--batch 4] [--steps 100] [--workloads lif-dense,bdh] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("lif-dense", "lif-sparse", "bdh", "ctm", "elm")


@dataclass(frozen=True)
class Workload:
    """A spec, its hyperparameters and entry, one batch of inputs, and the loss of one run."""

    label: str
    spec: str
    hyper: dict
    entry: str | None
    inputs: dict
    steps: int
    record: tuple[tuple[str, int], ...]
    loss: Callable[[dict, dict], torch.Tensor]   # (outputs, records) -> scalar
    init: dict = None                            # initial state values replacing the spec's


def workloads(names, batch: int, steps: int, seed: int = 0) -> list[Workload]:
    rng = np.random.default_rng(seed)
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    out = []
    if "lif-dense" in names:
        x = t((rng.random((batch, steps, 100)) < 0.05).astype(np.float32))
        out.append(Workload("lif-dense 4000", "specs/train/lif_layer.nspec", {}, "DenseRecurrent", {"x": x}, steps,
                            (), lambda o, r: (o["spikes"].mean() - 0.05) ** 2))
    if "lif-sparse" in names:
        # as CUBA, membrane potentials start uniform between reset and threshold, so spikes (and
        # gradients) flow from the first steps instead of after the 28 ms the drive needs from rest
        v0 = t(rng.uniform(-65e-3, -50e-3, size=(batch, 4000)).astype(np.float32))
        out.append(Workload("lif-sparse 4000 p=0.02", "specs/train/lif_layer.nspec", {}, "SparseRecurrent", {},
                            steps, (("P/spike", 1),), lambda o, r: (r["P/spike"].mean() / 1e-4 - 20.0) ** 2,
                            {"P/v": v0}))
    if "bdh" in names:
        idx = t(rng.integers(0, 256, size=(batch, 64)))
        target = t(rng.integers(0, 256, size=(batch, 64)))
        hyper = {"n_layer": 2, "n_embd": 32, "n_head": 2, "mlp_internal_dim_multiplier": 8, "vocab_size": 256}
        out.append(Workload("bdh L2 D32 T64", "specs/seeds/bdh.nspec", hyper, None, {"idx": idx}, 64, (),
                            lambda o, r: F.cross_entropy(o["logits"].reshape(-1, 256), target.to(o["logits"].device).reshape(-1))))
    if "ctm" in names:
        bits = rng.integers(0, 2, size=(batch, 8))
        x = t((2 * bits - 1).astype(np.float32)[:, None, :, None])
        parity = t(bits.sum(1) % 2)
        hyper = {"iterations": 5, "d_model": 16, "d_input": 8, "heads": 2, "n_synch_out": 8, "n_synch_action": 8,
                 "out_dims": 2, "in_channels": 8, "n_tokens": 1}
        out.append(Workload("ctm parity 5 ticks", "specs/seeds/ctm.nspec", hyper, None, {"x": x}, 1, (),
                            lambda o, r: F.cross_entropy(o["predictions"][:, -1, :, -1], parity.to(o["predictions"].device))))
    if "elm" in names:
        X = t(rng.random((batch, steps, 6)).astype(np.float32))
        Y = t(rng.normal(size=(batch, steps, 2)).astype(np.float32))
        hyper = {"num_input": 6, "num_memory": 4, "mlp_hidden_size": 8, "memory_tau_max": 20.0}
        out.append(Workload(f"elm tiny T{steps}", "specs/seeds/elm.nspec", hyper, None, {"X": X}, steps, (),
                            lambda o, r: F.mse_loss(o["Y"], Y.to(o["Y"].device))))
    return out


class Runner:
    """One training step (forward over the run, loss, backward) of one workload in one variant."""

    def __init__(self, w: Workload, compiled: bool, device: str):
        from nspec.runtime.model import load

        self.w = w
        self.module = load(ROOT / w.spec, target=w.entry, **w.hyper).to_torch().to(device)
        self.inputs = {k: v.to(device) for k, v in w.inputs.items()}
        self.init = {k: v.to(device) for k, v in (w.init or {}).items()}
        self.batch = next(iter(list(w.inputs.values()) + list(self.init.values()))).shape[0]
        self.step = torch.compile(self.module.step) if compiled else None
        self.device = device

    def __call__(self) -> tuple[float, float, dict]:
        """Seconds for one forward + backward; the loss; the gradients by name."""
        self.module.zero_grad(set_to_none=True)
        self._sync()
        start = time.perf_counter()
        state = {**self.module.initial_state(self.batch), **self.init}
        outputs, _, records = self.module.simulate(state, self.inputs, self.w.steps, self.w.record, self.step)
        loss = self.w.loss(outputs, records)
        loss.backward()
        self._sync()
        seconds = time.perf_counter() - start
        grads = {k: p.grad.detach().clone() for k, p in self.module.named_parameters() if p.grad is not None}
        return seconds, float(loss.detach()), grads

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="time steps of the LIF and ELM runs")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = set(args.workloads.split(","))
    unknown = names - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}")

    rows = []
    for w in workloads(names, args.batch, args.steps):
        # Every module's step is the same function to dynamo, guarded per module: without a reset
        # the workloads would share its recompile budget and later ones silently run eagerly.
        torch._dynamo.reset()
        runners = {"eager": Runner(w, False, args.device), "compile": Runner(w, True, args.device)}
        first, results = {}, {}
        for name, run in runners.items():  # the first call compiles (and warms the allocator)
            first[name], _, _ = run()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.reps):  # interleaved, so load on the machine hits both alike
            for name, run in runners.items():
                seconds, loss, grads = run()
                times[name].append(seconds)
                results[name] = (loss, grads)
        (l_e, g_e), (l_c, g_c) = results["eager"], results["compile"]
        # relative: the sparse layer's weight is in amperes, its gradient ~1e12
        diff = max([abs(l_e - l_c) / max(abs(l_e), 1e-30)]
                   + [float((g_e[k] - g_c[k]).abs().max() / g_e[k].abs().max().clamp_min(1e-30)) for k in g_e])
        eager, comp = statistics.median(times["eager"]), statistics.median(times["compile"])
        rows.append((w.label, eager * 1e3, comp * 1e3, eager / comp, first["compile"] - comp, diff))
        print(f"done {w.label}: eager {eager * 1e3:.1f} ms, compile {comp * 1e3:.1f} ms, "
              f"compile time {first['compile'] - comp:.1f} s, rel diff {diff:.2e}", flush=True)

    device = args.device if args.device != "cpu" else f"cpu ({args.threads} thread{'s' * (args.threads != 1)})"
    print(f"\ntraining step (forward + backward), batch {args.batch}, median of {args.reps}, {device}, "
          f"torch {torch.__version__}")
    header = f"{'workload':<24} {'eager ms':>10} {'compile ms':>11} {'speedup':>8} {'compile s':>10} {'rel diff':>9}"
    print(header)
    print("-" * len(header))
    for label, eager, comp, speedup, compile_s, diff in rows:
        print(f"{label:<24} {eager:>10.1f} {comp:>11.1f} {speedup:>7.2f}x {compile_s:>10.1f} {diff:>9.2e}")


if __name__ == "__main__":
    main()
