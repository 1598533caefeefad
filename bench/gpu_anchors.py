"""On a CUDA machine: nspec against eager PyTorch on the same GPU (part of ``bench/gpu_check.sh``).

    python bench/gpu_anchors.py [--cuba-sizes 4000,100000,1000000] [--reps 3] [--skip-seeds] [--skip-cuba]

Two tables, each row measured in this one process, runners interleaved (A B A B ...), medians:

* **CUBA at N neurons** (in-degree ~80 as in ``bench/cuba.py``'s size sweep, 1 s of model time at
  0.1 ms): nspec's TVM CUDA time loop (``TvmExecutor(target="cuda")``, one compiled call for the
  whole run) against a hand-written eager PyTorch CUBA on the GPU (the same exact-integration
  update; synaptic input as a cuSPARSE CSR matrix-vector product of the spike vector each step,
  the way one writes it in PyTorch without a host round trip per step).  The anchor draws its own
  random connectivity with the same in-degree, so its rate is close to, not equal to, nspec's.
  The roofline column is the least DRAM traffic a step needs (read and write v, ge, gi and the
  refractory counter, read the spike-driven synapse rows) over the GPU's measured copy bandwidth
  (a device-to-device copy timed here), as a fraction of the measured step time.
* **BDH, CTM, ELM forward passes** at ``bench/seeds.py``'s realistic sizes: the eager PyTorch
  anchors of ``bench/seeds.py`` run on the GPU, against nspec's torch backend on the GPU and nspec's
  TVM backend with target cuda.  A runner that fails is a row with its error, not a crash.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from onnx_bench import DT, EL, VR, VT, WE, WI, coefficients  # noqa: E402  CUBA's constants and exact propagator


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy of 1 GiB (read + write counted)."""
    a = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    best = min(timed(lambda: b.copy_(a)) for _ in range(5))
    return 2 * a.numel() * 4 / best


class TorchCudaCuba:
    """Eager PyTorch CUBA on the GPU: exact integration, threshold, reset, refractory, CSR synapses."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        p = 80.0 / n
        counts = rng.binomial(n, p, size=n)  # out-degree of each presynaptic neuron
        pre = np.repeat(np.arange(n), counts)
        post = rng.integers(0, n, size=counts.sum())
        w = np.where(pre < int(0.8 * n), WE, WI).astype(np.float32)
        order = np.argsort(post * np.int64(n) + pre)  # rows = postsynaptic neurons: the product is W @ spikes
        rows = np.concatenate([[0], np.cumsum(np.bincount(post, minlength=n))])
        self.W = torch.sparse_csr_tensor(torch.as_tensor(rows), torch.as_tensor(pre[order]), torch.as_tensor(w[order]),
                                         (n, n), device="cuda")
        self.n, self.synapses = n, int(counts.sum())
        self.c = coefficients()
        self.exc = torch.arange(n, device="cuda") < int(0.8 * n)
        self.v0 = torch.as_tensor(VR + rng.random(n) * (VT - VR), dtype=torch.float32, device="cuda")

    def run(self, steps: int) -> int:
        c = self.c
        v, ge, gi = self.v0.clone(), torch.zeros_like(self.v0), torch.zeros_like(self.v0)
        ref = torch.zeros_like(self.v0)
        count = torch.zeros((), device="cuda")
        with torch.no_grad():
            for _ in range(steps):
                v = torch.where(ref > 0, v, (v - EL) * c["em"] + ge * c["ce"] + gi * c["ci"] + EL)
                fired = v > VT
                s = fired.float()
                count += s.sum()
                inp = (self.W @ s.unsqueeze(1)).squeeze(1)
                ge = ge * c["ee"] + torch.where(self.exc, inp, 0.0)
                gi = gi * c["ei"] + torch.where(self.exc, 0.0, inp)
                v = torch.where(fired, VR, v)
                ref = torch.where(fired, float(c["ref_steps"]), (ref - 1).clamp(min=0))
        return int(count.item())


def cuba_table(sizes, reps: int, bandwidth: float) -> None:
    import cuba
    from nspec.lowering.tvm.executor import TvmExecutor

    print(f"\nCUBA, 1 s (10,000 steps), in-degree ~80; GPU copy bandwidth {bandwidth / 1e12:.2f} TB/s", flush=True)
    print(f"{'N':>9} {'runner':26} {'median s':>9} {'min s':>8} {'rate Hz':>8} {'us/step':>8} {'roofline':>9}  notes")
    for n in sizes:
        t0 = time.perf_counter()
        try:
            program = cuba.load_program(n)
            ex = TvmExecutor(program, target="cuda", progress=False)
            nspec_run = lambda: cuba.nspec_run(ex, program, 1, every=None)  # noqa: E731
            nspec_run()
            build_s = time.perf_counter() - t0
        except Exception as exc:  # a size that fails to build is a row, not the end of the table
            print(f"{n:>9} {'nspec tvm-cuda':26} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            continue
        anchor = TorchCudaCuba(n)
        anchor.run(10)
        nspec_times, anchor_times, counts = [], [], []
        for _ in range(reps):
            nspec_times.append(nspec_run()["kernel_s"])
            sync()
            t = time.perf_counter()
            counts.append(anchor.run(10000))
            anchor_times.append(time.perf_counter() - t)
        rate_run = cuba.nspec_run(ex, program, 1, every=10)
        anchor_rate = counts[-1] / n / 1.0
        # least traffic per step: 4 state arrays read and written, plus each spike's synapse row
        spikes_per_step = rate_run["rate_hz"] * n * DT
        bytes_step = 4 * n * 4 * 2 + spikes_per_step * 80 * 8
        for name, ts, rate, note in (("nspec tvm-cuda (1 call)", nspec_times, rate_run["rate_hz"],
                                      f"build {build_s:.1f} s"),
                                     ("eager PyTorch cuSPARSE", anchor_times, anchor_rate,
                                      f"{anchor.synapses / n:.1f} syn/neuron")):
            med = statistics.median(ts)
            floor = bytes_step / bandwidth * 10000
            print(f"{n:>9} {name:26} {med:9.4f} {min(ts):8.4f} {rate:8.2f} {med / 1e4 * 1e6:8.2f} {floor / med:9.3f}  "
                  f"{note}", flush=True)
        print(f"{n:>9} {'ratio nspec / eager':26} {statistics.median(nspec_times) / statistics.median(anchor_times):9.3f}")


def seeds_table(reps: int) -> None:
    import seeds

    print("\nseed forward passes on the GPU (bench/seeds.py's realistic sizes), medians of interleaved rounds",
          flush=True)
    print(f"{'workload':20} {'runner':22} {'median ms':>10} {'min ms':>9} {'vs eager':>9} {'warm-up s':>10} "
          f"{'max |diff|':>10}")
    for work in seeds.small_workloads(("bdh", "ctm", "elm"), 1, ("bdh_parallel",)):
        sd = {k: torch.as_tensor(v).cuda() for k, v in work.weights.items()}

        def anchor():
            with torch.no_grad(), torch.device("cuda"):
                return {k: v.cpu().numpy() for k, v in work.anchor(sd, work.hyper, work.inputs).items()}

        runners, warm, errors = {"eager PyTorch (GPU)": anchor}, {}, {}
        t0 = time.perf_counter()
        anchor()
        warm["eager PyTorch (GPU)"] = time.perf_counter() - t0
        spec = work.spec_names[0]
        for label, backend, options in (("nspec torch (cuda)", "torch", {"device": "cuda"}),
                                        ("nspec tvm (cuda)", "tvm", {"target": "cuda"})):
            try:
                import nspec

                t0 = time.perf_counter()
                hyper = {k: v for k, v in work.hyper.items() if v is not None}
                hyper.update(seeds.input_hyper(spec, work.inputs))
                model = nspec.load(ROOT / "specs" / "seeds" / f"{spec}.nspec", **hyper)
                model.load_weights(work.weights)
                batch = next(iter(work.inputs.values())).shape[0]
                run = (lambda m=model, b=backend, o=options, B=batch:
                       m.run(inputs=work.inputs, batch=B, backend=b, **o))
                run()
                runners[label], warm[label] = run, time.perf_counter() - t0
            except Exception as exc:
                errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:110]}"
        times = {k: [] for k in runners}
        results = {}
        for _ in range(reps):
            for label, run in runners.items():
                sync()
                t0 = time.perf_counter()
                results[label] = run()
                sync()
                times[label].append(time.perf_counter() - t0)
        want = results["eager PyTorch (GPU)"]
        base = statistics.median(times["eager PyTorch (GPU)"])
        for label in times:
            med = statistics.median(times[label])
            diff = max(float(np.max(np.abs(np.asarray(results[label][k]) - want[k]))) for k in want)
            print(f"{work.label:20} {label:22} {med * 1e3:10.2f} {min(times[label]) * 1e3:9.2f} {base / med:8.2f}x "
                  f"{warm[label]:10.2f} {diff:10.2e}", flush=True)
        for label, err in errors.items():
            print(f"{work.label:20} {label:22} failed: {err}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuba-sizes", default="4000,100000,1000000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-seeds", action="store_true")
    ap.add_argument("--skip-cuba", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_anchors.py needs a CUDA GPU (torch sees none)")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    if not a.skip_cuba:
        cuba_table([int(s) for s in a.cuba_sizes.split(",")], a.reps, copy_bandwidth())
    if not a.skip_seeds:
        seeds_table(a.reps)


if __name__ == "__main__":
    main()
