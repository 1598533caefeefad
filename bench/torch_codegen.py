"""The torch backend's generated code against its interpreter, side by side in one process.

Workloads are ``bench/seeds.py``'s (the conformance bundles' tiny BDH, CTM and ELM forward passes
and, with ``--realistic``, its realistic sizes) run through ``Model.run(backend="torch")``, and
``bench/train_bench.py``'s training steps (forward + backward through ``to_torch()``, eager).
Each runner is built and warmed in both modes, then the two modes alternate (interpreter,
generated, interpreter, ...) ``--reps`` times, so a loaded machine slows both alike; the table
gives each mode's median, the ratio generated / interpreted and the largest difference between
the two modes' outputs (forward) or losses (training).

    python bench/torch_codegen.py [--reps 10] [--realistic] [--train] [--models bdh,ctm,elm] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _alternate(run, reps: int):
    """Medians (interpreted, generated) of ``run()``'s seconds, and each mode's last result."""
    from nspec.lowering import torch_codegen as cg

    times = {True: [], False: []}
    last = {}
    for _ in range(reps):
        for interpret in (True, False):
            cg.INTERPRET = interpret
            try:
                start = time.perf_counter()
                last[interpret] = run()
                times[interpret].append(time.perf_counter() - start)
            finally:
                cg.INTERPRET = False
    return statistics.median(times[True]), statistics.median(times[False]), last


def forward_rows(models, realistic: bool, reps: int, threads: int):
    import numpy as np

    import seeds

    works = [seeds.bundle_workload(f"{m}_tiny", ("bdh",)) for m in models]
    if realistic:
        works += seeds.small_workloads(models, 1, ("bdh",))
    for work in works:
        spec = work.spec_names[0]
        run, _ = seeds.spec_runner(work, spec, "torch", threads)
        old, new, last = _alternate(lambda: dict(run()), reps)
        diff = max(float(np.max(np.abs(np.asarray(last[True][k], float) - np.asarray(last[False][k], float))))
                   for k in last[True])
        yield f"forward {work.label} ({spec})", old, new, diff


def train_rows(models, reps: int):
    import train_bench

    for w in train_bench.workloads(models, batch=4, steps=100):
        runner = train_bench.Runner(w, compiled=False, device="cpu")
        runner()
        old, new, last = _alternate(lambda: runner()[:2], reps)
        yield f"train {w.label}", old, new, abs(last[True][1] - last[False][1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--realistic", action="store_true", help="add seeds.py's realistic sizes")
    parser.add_argument("--train", action="store_true", help="add train_bench.py's training steps")
    parser.add_argument("--models", default="bdh,ctm,elm")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    print(f"{'workload':48s} {'interpreted s':>13s} {'generated s':>12s} {'new/old':>8s} {'max diff':>9s}", flush=True)
    rows = forward_rows(models, args.realistic, args.reps, args.threads)
    if args.train:
        rows = (*rows, *train_rows(models, args.reps))
    for label, old, new, diff in rows:
        print(f"{label:48s} {old:13.4f} {new:12.4f} {new / old:8.3f} {diff:9.2g}", flush=True)


if __name__ == "__main__":
    main()
