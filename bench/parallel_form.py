"""BDH over a whole sequence: the recurrent spec through the parallel-form pass, against the
authors' parallel form written as a spec and against the recurrent spec stepped token by token.

Three runners per backend, all on the same reference-keyed weights and tokens (bench/seeds.py's
realistic BDH: n_embd 256, 4 heads, multiplier 32, vocabulary 256, T 256, ``--layers`` 1):

    bdh (pass)        specs/seeds/bdh.nspec, unchanged; Model.run applies compiler/passes/parallel_form.py
    bdh (pass)+S      the same model's run, then Model.get_state(): the final Hebbian states, which a
                      run leaves to be summed when read (runtime/parallel.py), added up
    bdh_parallel      specs/seeds/bdh_parallel.nspec (one data step is the whole sequence)
    bdh (no pass)     specs/seeds/bdh.nspec with parallel_form=False: one data step per token

Each runner first runs once (compiles; reported apart), then all run interleaved for ``--reps``
rounds, each round the stepped run first, then the others, starting one later each round (S A B C,
S B C A, S C A B, ...: whichever runs right after the stepped run is slowed by ~2x on a loaded
machine, so each takes that place as often; rotating all of them, S included, kept the same one
after it every round); the table gives medians and minima, the largest difference of the logits
from the stepped recurrent run's and, for the pass with its states read, of the final states
(beside the largest entry of the Hebbian states S: their sums grow with T).  A runner's time is
its ``Model.run`` alone (bdh_parallel gives no state), but for ``+S``.

``--stepped-once`` runs the stepped form once, as the reference, and times only the other two
(the stepped run slows the run after it, here ~2x for the pass's TVM kernel).

    python bench/parallel_form.py [--backends tvm,torch] [--reps 5] [--T 256] [--layers 1] [--threads 1]
                                  [--stepped-once]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runners(backend: str, cfg: dict, weights: dict, idx):
    import nspec

    def build(spec: str, hyper: dict, parallel: bool):
        t0 = time.perf_counter()
        model = nspec.load(ROOT / "specs" / "seeds" / f"{spec}.nspec", **hyper)
        model.load_weights(weights)

        def run(state: bool = False):
            out = model.run(inputs={"idx": idx}, batch=idx.shape[0], backend=backend, parallel_form=parallel)
            return out, model.get_state() if state else None

        run(True)
        return run, time.perf_counter() - t0

    T = idx.shape[1]
    through, warm = build("bdh", cfg, True)
    stepped, stepped_warm = build("bdh", cfg, False)
    return {"bdh (pass)": (through, warm), "bdh (pass)+S": (lambda: through(True), 0.0),
            "bdh_parallel": build("bdh_parallel", {**cfg, "T": T}, False),
            "bdh (no pass)": (lambda: stepped(True), stepped_warm)}


def main(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    import seed_oracles as oracle

    rng = np.random.default_rng(0)
    cfg = dict(n_layer=args.layers, n_embd=256, dropout=0.0, n_head=4, mlp_internal_dim_multiplier=32, vocab_size=256)
    weights = oracle.bdh_state_dict(cfg, rng, std=0.02)
    idx = rng.integers(0, 256, size=(1, args.T))
    print(f"BDH D256 H4 mult32 L{args.layers} T{args.T}, {args.reps} interleaved rounds, {args.threads} thread(s)")
    print(f"{'backend':10s} {'runner':15s} {'median ms':>10s} {'min ms':>9s} {'warm-up s':>10s} {'|logits diff|':>14s} "
          f"{'|state diff|':>13s} {'max |S|':>8s}")
    stepped = "bdh (no pass)"
    for backend in args.backends.split(","):
        built = runners(backend, cfg, weights, idx)
        timed = [k for k in built if not (args.stepped_once and k == stepped)]
        times = {k: [] for k in timed}
        results = {stepped: built[stepped][0]()} if args.stepped_once else {}
        others = [k for k in timed if k != stepped]
        for r in range(args.reps):
            # the others start one runner later each round: a run right after the stepped one is
            # slowed (~2x here, in the compiled kernel itself), so every runner takes that place as often
            for label in [k for k in timed if k == stepped] + others[r % len(others):] + others[:r % len(others)]:
                t0 = time.perf_counter()
                results[label] = built[label][0]()
                times[label].append(time.perf_counter() - t0)
        want_logits, want_state = results[stepped]
        size = max(float(np.max(np.abs(v))) for k, v in want_state.items() if k.endswith("/S"))
        for label, (_, warm) in built.items():
            logits, state = results[label]
            diff = float(np.max(np.abs(logits["logits"] - want_logits["logits"])))
            sdiff = max(float(np.max(np.abs(state[k] - want_state[k]))) for k in want_state) \
                if label == "bdh (pass)+S" else float("nan")
            took = (f"{statistics.median(times[label]) * 1e3:10.1f} {min(times[label]) * 1e3:9.1f}" if label in times
                    else f"{'(once)':>10s} {'':9s}")
            print(f"{backend:10s} {label:15s} {took} {warm:10.1f} {diff:14.2e} {sdiff:13.2e} {size:8.2f}", flush=True)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="tvm,torch")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stepped-once", action="store_true",
                    help="run the stepped recurrent form once, as the reference, outside the timed rounds")
    return ap.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    main(ARGS)
