"""The seed models against their authors' reference outputs, as figures for the docs.

    python bench/conformance_figures.py [--only bdh,ctm,elm] [--backends reference,onnxruntime,torch,tvm]

For each bundle of ``tests/conformance/`` (the authors' code's config, ``state_dict``, inputs and
outputs: BDH ``bdh_tiny``, CTM ``ctm_tiny``, ELM ``elm_neuronio_best``), runs ``nspec run`` with
the reference's constructor arguments as ``--param`` and its ``state_dict`` as ``--weights`` on each
backend, and draws ``docs/figures/<model>.png``: nspec's outputs against the reference's (every
value, on the reference interpreter), and the largest |difference| per backend on a log axis with
the bundle's tolerance.  BDH's figure adds ``specs/seeds/bdh_parallel.nspec`` on the same bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nspec.cli import main as nspec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"bdh": "bdh_tiny", "ctm": "ctm_tiny", "elm": "elm_neuronio_best"}
EXTRA_SPECS = {"bdh": ["bdh_parallel"]}
# bdh_parallel reads one whole sequence per data step: its length is a hyperparameter, and the npz's
# leading axis is the batch (no --batch)
WHOLE_SEQUENCE = {"bdh_parallel": "T"}
SHORT = {"reference": "ref", "onnxruntime": "ort"}


def run(spec: str, meta: dict, bundle: str, backend: str, folder: Path) -> dict[str, np.ndarray]:
    """``nspec run`` of ``specs/seeds/<spec>.nspec`` on the bundle; its outputs."""
    args = ["run", str(ROOT / "specs" / "seeds" / f"{spec}.nspec")]
    for key, value in meta["config"].items():
        if value is not None:
            args += ["--param", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    out = folder / f"{spec}_{backend}.npz"
    conformance = ROOT / "tests" / "conformance"
    with np.load(conformance / f"{bundle}.inputs.npz") as data:
        shape = next(iter(data.values())).shape
    args += ["--weights", str(conformance / f"{bundle}.weights.safetensors"),
             "--inputs", str(conformance / f"{bundle}.inputs.npz"), "--output", str(out),
             "--backend", backend, "-q", "--force"]
    if spec in WHOLE_SEQUENCE:
        args += ["--param", f"{WHOLE_SEQUENCE[spec]}={shape[1]}"]
    else:
        args += ["--batch", str(shape[0])]
    with contextlib.redirect_stdout(io.StringIO()):
        code = nspec(args)
    if code:
        raise SystemExit(f"nspec {' '.join(args)} exited {code}")
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def figure(model: str, backends: list[str], folder: Path) -> Path:
    bundle = BUNDLES[model]
    conformance = ROOT / "tests" / "conformance"
    meta = json.loads((conformance / f"{bundle}.json").read_text())
    with np.load(conformance / f"{bundle}.outputs.npz") as data:
        want = {k: data[k] for k in meta["outputs"]}
    rows = []  # (label, max |diff| over every output)
    first = None
    for spec in [model] + EXTRA_SPECS.get(model, []):
        for backend in backends:
            got = run(spec, meta, bundle, backend, folder)
            err = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
            name = spec if spec == model else spec.removeprefix(f"{model}_")  # "parallel" under BDH's bars
            rows.append((f"{name}\n{SHORT.get(backend, backend)}", err))
            print(f"{model}: {spec} on {backend}: max |diff| {err:.2g}", flush=True)
            if first is None:
                first = got
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=(1, 1.2))
    for k in want:
        count = sum(v.size for v in want.values())
        ax.plot(want[k].ravel(), first[k].ravel(), "o", markersize=5 if count < 500 else 1.5, alpha=0.7, label=k)
    lo = min(float(v.min()) for v in want.values())
    hi = max(float(v.max()) for v in want.values())
    ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=0.8, zorder=0)
    ax.set_xlabel("the authors' code (reference bundle)")
    ax.set_ylabel(f"nspec ({model}.nspec, reference interpreter)")
    ax.set_title(f"{model.upper()}: every output value of {bundle}")
    if len(want) > 1:
        ax.legend(markerscale=4, fontsize="small")
    errs = [max(e, 1e-12) for _, e in rows]
    bars.bar(range(len(rows)), errs, color=["C0" if "parallel" not in label else "C1" for label, _ in rows])
    bars.set_yscale("log")
    bars.set_ylim(1e-9, 1e-3)
    for k, (_, e) in enumerate(rows):  # the value on each bar; an exact match has no bar to show
        bars.text(k, max(e, 1.3e-9), f"{e:.1e}" if e else "0 (exact)", ha="center", va="bottom", fontsize="x-small")
    bars.axhline(meta["tolerance"], color="C3", linestyle="--", linewidth=1, label=f"tolerance {meta['tolerance']:g}")
    bars.set_xticks(range(len(rows)), [label for label, _ in rows], fontsize="x-small")
    bars.set_ylabel("max |nspec - reference| over the outputs")
    bars.set_title("per spec and backend (float32; ref = reference interpreter, ort = ONNX Runtime)",
                   fontsize="small")
    bars.legend(fontsize="small")
    fig.tight_layout()
    path = ROOT / "docs" / "figures" / f"{model}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(BUNDLES), help="models, comma-separated (bdh, ctm, elm)")
    ap.add_argument("--backends", default="reference,onnxruntime,torch,tvm")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.only.split(","):
            print("wrote", figure(model, args.backends.split(","), Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
