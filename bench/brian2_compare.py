"""Brian2's classic models (``specs/brian2/``) in Brian2 and in nspec on every backend, side by side.

    python bench/brian2_compare.py [--models coba,cobahh,...] [--backends reference,onnxruntime,tvm,torch]
                                   [--brian2-seeds 3] [--out bench/results/brian2_models.txt]

Each model runs in Brian2 (``bench/brian2_models.py`` in the Brian2 venv, ``$NSPEC_BRIAN2_VENV``,
created by ``bench/cuba.py``'s ``brian2_python`` when missing) with ``--brian2-seeds`` seeds, and
in nspec on each backend in strict mode (TVM and ONNX Runtime without FMA contraction or graph
fusion; torch and the reference as they are), at the same size, dt and duration.  Long runs
(Song's 100 s) use the fast backends; the reference and torch run the first ``short`` seconds.
The table has, per simulator: the duration, mean rate, CV of the interspike intervals, synchrony
(the population Fano factor), the population activity's peak frequency, the weights' bimodality
and histogram (STDP), the OU variance, and whether the spike trains equal the reference
backend's over the time both ran.  Every statistic is ``nspec.runtime.spike_statistics``'s, the
same functions the specs' test blocks call.  Brian2's row is the mean over its seeds with the
standard deviation across seeds, the yardstick for nspec's differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import nspec
from nspec.runtime import spike_statistics as S

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from cuba import brian2_python  # noqa: E402  (bench/ is not a package)

BRIAN2_SCRIPT = ROOT / "bench" / "brian2_models.py"
DT = 1e-4
BACKENDS = ("reference", "onnxruntime", "tvm", "torch")
STRICT = {"onnxruntime": {"strict": True}, "tvm": {"strict": True}}


@dataclass(frozen=True)
class Case:
    """One model: its spec, the Brian2 model of the same name, and what to compare."""

    name: str
    duration: float                            # seconds, in both simulators
    monitor: str                               # nspec spike monitor compared with Brian2's
    n: int                                     # neurons it records
    params: dict = field(default_factory=dict)  # hyperparameters, the same in both
    short: float | None = None                 # seconds on the slow backends, when shorter
    weights: str | None = None                 # nspec monitor key of the weights (rows: each second)
    wmax: float = 0.0
    trace: str | None = None                   # nspec monitor key of the OU trace
    brian2_params: dict = field(default_factory=dict)
    model: str = ""                            # the spec and Brian2 model, when not ``name``

    @property
    def spec(self) -> Path:
        return ROOT / "specs" / "brian2" / f"{self.model or self.name}.nspec"


CASES = {c.name: c for c in (
    Case("coba", 1.0, "spikes", 4000),
    Case("cobahh", 1.0, "spikes", 4000),
    Case("stdp_song", 100.0, "output_spikes", 1, short=10.0, weights="weights.w", wmax=0.01),
    Case("brunel_hakim_1999", 1.0, "spikes", 5000),
    Case("brunel_2000", 1.0, "spikes", 5000, brian2_params={"NE": 4000}),
    # Fig. 8B's parameters: the synchronous irregular regime with a fast (~180 Hz) oscillation
    Case("brunel_2000_fig8b", 1.0, "spikes", 5000, params={"g": 6.0, "nu_ratio": 4.0},
         brian2_params={"NE": 4000}, model="brunel_2000"),
    Case("ou_process", 1.0, "", 1000, trace="ou.x", brian2_params={"sigma": 0.001, "every": 0.0001}),
)}
SLOW = {"reference", "torch"}


# ---------------------------------------------------------------- statistics of one run
def statistics(case: Case, run: dict, duration: float) -> dict:
    """The table's columns for one run: spikes (i, t), weights rows, trace rows."""
    row: dict = {"T": duration}
    if "i" in run:
        s = S.Spikes.from_monitor(run["i"], run["t"], case.n, duration, DT)
        row["rate"] = S.mean_rate(s)
        for name, stat in (("cv", S.cv_isi), ("synchrony", S.synchrony), ("peak", S.peak_frequency)):
            try:
                row[name] = stat(s)
            except S.StatisticError:
                row[name] = float("nan")
    if "w" in run:
        row["bimodality"] = S.bimodality(run["w"], case.wmax)
        row["hist"] = S.weight_histogram(run["w"], case.wmax)
    if "x" in run:
        x = np.asarray(run["x"], dtype=np.float64)
        settled = x[x.shape[0] // 5:]  # after 1/5 of the run (several tau) the start is forgotten
        row["var"] = float(np.var(settled)) * 1e6  # mV^2 (the spec's x is in volts)
    return row


# ---------------------------------------------------------------- Brian2
def brian2_run(case: Case, seed: int, folder: Path, saved: Path | None) -> dict:
    """Brian2's run at ``seed``: read from ``saved`` (``<model>_<seed>.npz`` written earlier by
    bench/brian2_models.py with the same parameters and duration) or run now into ``folder``."""
    out = folder / f"{case.name}_{seed}.npz"
    wall = float("nan")
    if saved is not None and (saved / out.name).exists():
        out = saved / out.name
    else:
        params = [f"--param={k}={v}" for k, v in {**case.params, **case.brian2_params}.items()]
        proc = subprocess.run([str(brian2_python()), str(BRIAN2_SCRIPT), case.model or case.name, "--out", str(out),
                               "--seed", str(seed), "--duration", str(case.duration),
                               "--dir", str(folder / f"build_{case.name}_{seed}"), *params],
                              capture_output=True, text=True, cwd=tempfile.gettempdir())
        if proc.returncode:
            raise RuntimeError(f"Brian2 {case.name} failed:\n{proc.stderr[-3000:]}")
        wall = json.loads(proc.stdout.strip().splitlines()[-1])["wall_s"]
    z = np.load(out)
    if abs(float(z["duration"]) - case.duration) > 1e-9:
        raise RuntimeError(f"{out} ran {float(z['duration'])} s; the comparison needs {case.duration} s")
    run: dict = {"wall_s": wall}
    if "spikes.i" in z:
        run.update(i=z["spikes.i"], t=z["spikes.t"])
    if "w.trace" in z:
        run["w"] = z["w.trace"][-1]  # the weights at the start of the last second, as nspec's monitor
    if "x" in z:
        run["x"] = z["x"]
    return run


# ---------------------------------------------------------------- nspec
def nspec_run(case: Case, backend: str, torch_seconds: float | None) -> tuple[dict, float]:
    duration = case.short if (case.short and backend in SLOW) else case.duration
    if backend == "torch" and torch_seconds:
        duration = min(duration, torch_seconds)
    model = nspec.load(case.spec, **case.params)
    t0 = time.perf_counter()
    out = model.run(duration=duration, backend=backend, **STRICT.get(backend, {}))
    run: dict = {"wall_s": time.perf_counter() - t0}
    if case.monitor:
        run.update(i=out[f"{case.monitor}.i"], t=out[f"{case.monitor}.t"])
    if case.weights:
        run["w"] = out[case.weights][-1]
    if case.trace:
        run["x"] = out[case.trace]
    return run, duration


def same_spikes(a: dict, b: dict, until: float) -> str:
    """Whether two runs' spike trains agree up to ``until`` seconds: 'yes', or where they part
    (for a trace without spikes: its largest difference)."""
    if "i" not in a:
        if "x" not in a:
            return "-"
        steps = min(len(a["x"]), len(b["x"]))
        diff = float(np.max(np.abs(np.asarray(a["x"][:steps], float) - np.asarray(b["x"][:steps], float))))
        return "x identical" if diff == 0 else f"x differs by <= {diff * 1e3:.2g} mV"
    ka, kb = a["t"] < until - DT / 2, b["t"] < until - DT / 2
    ta, ia, tb, ib = a["t"][ka], a["i"][ka], b["t"][kb], b["i"][kb]
    if ta.size == tb.size and np.array_equal(ia, ib) and np.allclose(ta, tb, rtol=0, atol=DT / 10):
        return f"yes ({ta.size} spikes, {until:g} s)"
    m = min(ta.size, tb.size)
    first = next((k for k in range(m) if ia[k] != ib[k] or abs(ta[k] - tb[k]) > DT / 10), m)
    at = min(ta[first] if first < ta.size else np.inf, tb[first] if first < tb.size else np.inf)
    return f"no: from t = {at:.4f} s"


# ---------------------------------------------------------------- the table
COLUMNS = (("T", "T (s)", "{:g}"), ("rate", "rate (Hz)", "{:.2f}"), ("cv", "CV ISI", "{:.3f}"),
           ("synchrony", "synchrony", "{:.2f}"), ("peak", "peak (Hz)", "{:.0f}"),
           ("bimodality", "bimodality", "{:.3f}"), ("var", "var(x) (mV^2)", "{:.4f}"))


def cell(row: dict, key: str, form: str, spread: dict | None) -> str:
    if key not in row:
        return "-"
    value = row[key]
    if isinstance(value, float) and np.isnan(value):
        return "n/a"
    text = form.format(value)
    if spread and key in spread and key != "T":
        text += " +- " + form.format(spread[key])
    return text


def table(results: list[tuple[str, str, dict, dict | None, str]]) -> str:
    header = ["model", "simulator", *(title for _, title, _ in COLUMNS), "spikes = reference (strict)"]
    rows = [header]
    hists = []
    for model, sim, row, spread, same in results:
        rows.append([model, sim, *(cell(row, k, f, spread) for k, _, f in COLUMNS), same])
        if "hist" in row:
            hists.append(f"{model:<18} {sim:<22} " + " ".join(f"{h:.3f}" for h in row["hist"]))
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    if hists:
        lines += ["", "weight histogram (fraction of weights in 10 bins of [0, wmax]):", *hists]
    return "\n".join(lines)


def compare(case: Case, backends: list[str], seeds: int, folder: Path, saved: Path | None, log,
            torch_seconds: float | None = None) -> list:
    out = []
    b2_rows = []
    for seed in range(1, seeds + 1):
        run = brian2_run(case, seed, folder, saved)
        b2_rows.append(statistics(case, run, case.duration))
        log(f"  brian2 seed {seed}: {run['wall_s']:.1f} s (nan: a saved run)")
    keys = [k for k in b2_rows[0] if k not in ("hist",)]
    mean = {k: float(np.mean([r[k] for r in b2_rows])) for k in keys}
    if "hist" in b2_rows[0]:
        mean["hist"] = np.mean([r["hist"] for r in b2_rows], axis=0)
    spread = {k: float(np.std([r[k] for r in b2_rows])) for k in keys} if seeds > 1 else None
    out.append((case.name, f"brian2 ({seeds} seed{'s' if seeds > 1 else ''})", mean, spread, "-"))
    runs = {}
    for backend in backends:
        run, duration = nspec_run(case, backend, torch_seconds)
        runs[backend] = (run, duration)
        log(f"  nspec {backend}: {duration:g} s in {run['wall_s']:.1f} s")
        same = "-"
        if backend != "reference" and "reference" in runs:
            ref, ref_duration = runs["reference"]
            same = same_spikes(ref, run, min(ref_duration, duration))
        out.append((case.name, f"nspec {backend}", statistics(case, run, duration), None, same))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--brian2-seeds", type=int, default=3)
    ap.add_argument("--brian2-results", default=None, metavar="DIR",
                    help="reuse Brian2 runs saved there as <model>_<seed>.npz (same parameters and duration)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (a shared machine: 1)")
    ap.add_argument("--torch-seconds", type=float, default=None,
                    help="cap torch's runs (its per-step loop is the slowest backend)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "brian2_models.txt"))
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(CASES)}")
    backends = [b for b in a.backends.split(",") if b]
    folder = Path(tempfile.mkdtemp(prefix="nspec-brian2-compare-"))
    saved = Path(a.brian2_results) if a.brian2_results else None
    torch.set_num_threads(a.torch_threads)
    results = []
    for name in models:
        case = CASES[name]
        if not case.spec.exists():
            print(f"{name}: {case.spec.relative_to(ROOT)} is missing; skipped", flush=True)
            continue
        print(f"{name}:", flush=True)
        results += compare(case, backends, a.brian2_seeds, folder, saved, lambda m: print(m, flush=True),
                           a.torch_seconds)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(table(results) + "\n")  # after every model: a long run keeps what it has
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
