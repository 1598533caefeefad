"""CUBA split over 1, 2 and 4 local Ray workers (``nspec.runtime.partition``) against one process.

    python bench/partition.py [--sizes 4000,64000,256000] [--workers 1,2,4] [--reps 3]
                              [--steps 1000,500,200] [--out bench/results/partition.txt]

The workload is ``specs/cuba.nspec``'s network at N neurons with the in-degree it has at N = 4000
(64 excitatory + 16 inhibitory synapses per neuron, PERFORMANCE.md's "CUBA-scale"), written as
``fixed_in_degree`` so that 256k neurons (20 million synapses) compile in seconds: ``p = 80 / N``
draws an N x N matrix of uniforms (6.6e10 at 256k).  Printed per N and number of workers:
seconds per step of the main loop (median and min-max of ``--reps`` repetitions, compile and actor
start excluded), spikes per exchange, payload bytes exchanged per step (int32 indices, to every
other worker) and the single process's ``Model.run`` on the reference interpreter for comparison.
Every partitioned run's spikes are checked against the single process's.  The machine's cores
and load average are printed: more workers than cores share them (oversubscribed), which the
table says rather than hides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import nspec
from nspec.runtime.partition import run_partitioned, start_ray

ROOT = Path(__file__).resolve().parents[1]


def spec_text(n: int) -> str:
    """cuba.nspec at N neurons, 80 % excitatory, each neuron receiving 64 + 16 synapses."""
    text = (ROOT / "specs" / "cuba.nspec").read_text()
    ne = int(0.8 * n)
    for old, new in (("LIF[4000]", f"LIF[{n}]"), ("P[0:3200]", f"P[0:{ne}]"), ("P[3200:4000]", f"P[{ne}:{n}]"),
                     ("connect p = 0.02;  on_pre { ge", "connect fixed_in_degree 64;  on_pre { ge"),
                     ("connect p = 0.02;  on_pre { gi", "connect fixed_in_degree 16;  on_pre { gi")):
        assert old in text, old
        text = text.replace(old, new)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4000,64000,256000")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--steps", default="1000,500,200", help="steps per run, one per size")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "partition.txt"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    steps_of = dict(zip(sizes, [int(s) for s in args.steps.split(",")]))
    pools = [int(w) for w in args.workers.split(",")]
    cores = os.cpu_count()
    lines = [f"# python bench/partition.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(),
             f"# {cores} cores; load average at start {os.getloadavg()[0]:.2f}; "
             f"workers > cores share them (oversubscribed: marked *)",
             "| N | workers | steps | ms/step median | min-max | spikes/exchange | bytes/step | single-process ms/step |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    start_ray(include_dashboard=False, log_to_driver=False)
    for n in sizes:
        steps = steps_of[n]
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"cuba_partition_{n}.nspec"
        path.write_text(spec_text(n))
        t0 = time.perf_counter()
        model = nspec.load(path)
        compile_s = time.perf_counter() - t0
        single, reference = [], None
        for _ in range(args.reps):
            reference = model.run(steps=steps, nan_check="off")
            single.append(model.last_timing["run_s"] / steps)
        for w in pools:
            per_step, run = [], None
            for _ in range(args.reps):
                stats: dict = {}
                out = run_partitioned(model, w, steps=steps, stats=stats)
                run = stats["run"]
                per_step.append(run.run_s / steps)
                for k in reference:
                    if not np.array_equal(reference[k], out[k]):
                        raise SystemExit(f"N={n}, {w} workers: {k} differs from the single process")
            mark = "*" if w > cores else ""
            row = (f"| {n} | {w}{mark} | {steps} | {1e3 * statistics.median(per_step):.2f} | "
                   f"{1e3 * min(per_step):.2f}-{1e3 * max(per_step):.2f} | {run.spikes / run.exchanges:.1f} | "
                   f"{run.bytes / steps:.0f} | {1e3 * statistics.median(single):.2f} |")
            lines.append(row)
            print(row, flush=True)
        print(f"# N={n}: compile {compile_s:.1f} s, {len(reference['spikes.i'])} spikes in {steps} steps "
              f"({len(reference['spikes.i']) / (n * steps * model.dt):.2f} Hz)", flush=True)
        lines.append(f"# N={n}: compile {compile_s:.1f} s, {len(reference['spikes.i'])} spikes in {steps} steps "
                     f"({len(reference['spikes.i']) / (n * steps * model.dt):.2f} Hz)")
    lines.append(f"# load average at end {os.getloadavg()[0]:.2f}")
    print(lines[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
