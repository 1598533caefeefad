"""The gallery's figures, drawn from the specs, and the manifest that ties each to its spec's text.

    python bench/gallery.py              # redraw the figures whose spec changed (or that are missing)
    python bench/gallery.py --all        # redraw every figure
    python bench/gallery.py --only coba_raster.png,hlop.png
    python bench/gallery.py --record     # record the current specs' hashes without redrawing
                                         # (after running a figure's command by hand)

``FIGURES`` lists every figure of ``docs/figures/``: the specs it is drawn from and the command that
draws it (``nspec run ... --plot`` for the spiking networks, a ``bench/`` script for the seed
models, which train or compare against reference code).  ``docs/figures/manifest.json`` records,
per figure, its command and the SHA-256 of each spec's text when it was drawn.  The docs site's
gallery (``docs/hooks.py``) shows each spec's figures from the manifest, and
``tests/test_docs_site.py`` fails when a spec's text no longer matches its figure's record (the
figure would show another model) or when a gallery spec has no figure.  The hash covers the spec
file itself, not the library files it imports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "docs" / "figures"
MANIFEST = FIGURES_DIR / "manifest.json"


def _raster(stem: str, folder: str = "brian2", extra: str = "") -> tuple[str, tuple[str, ...], str]:
    return (f"{stem}_raster.png", (f"{folder}/{stem}.nspec",),
            f"nspec run specs/{folder}/{stem}.nspec --plot docs/figures/{stem}_raster.png --backend tvm -q{extra}")


# (figure, the specs it is drawn from (under specs/), the command that draws it, from the repository root)
FIGURES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    _raster("coba"), _raster("cobahh"), _raster("brunel_2000"), _raster("brunel_hakim_1999"),
    _raster("stdp_song"),
    ("ou_process.png", ("brian2/ou_process.nspec",),
     "nspec run specs/brian2/ou_process.nspec --plot docs/figures/ou_process.png --backend tvm -q"),
    ("bdh.png", ("seeds/bdh.nspec", "seeds/bdh_parallel.nspec"), "python bench/conformance_figures.py --only bdh"),
    ("ctm.png", ("seeds/ctm.nspec",), "python bench/conformance_figures.py --only ctm"),
    ("elm.png", ("seeds/elm.nspec",), "python bench/conformance_figures.py --only elm"),
    ("hlop.png", ("seeds/hlop.nspec",), "python bench/hlop.py"),
    ("gw_chain.png", ("seeds/gw_chain.nspec",), "python bench/gw_chain.py"),
    ("consciousness_prior.png", ("seeds/consciousness_prior.nspec",), "python bench/consciousness_prior.py"),
    ("pointer_net.png", ("seeds/pointer_net.nspec",), "python bench/pointer_net.py"),
    ("neuroformer.png", ("seeds/neuroformer.nspec",), "python bench/neuroformer.py"),
    ("skan.png", ("seeds/skan.nspec",), "python bench/skan.py"),
    ("recurrent_cells.png", ("seeds/lstm.nspec", "seeds/gru.nspec", "seeds/rnn.nspec"),
     "python bench/seed_figures.py --only recurrent_cells"),
    ("mpsae.png", ("seeds/mpsae.nspec",), "python bench/seed_figures.py --only mpsae"),
    ("sequence_mixers.png", ("seeds/linear_attention.nspec", "seeds/linear_attention_parallel.nspec",
                             "seeds/gla.nspec", "seeds/selective_ssm.nspec", "seeds/softmax_attention.nspec"),
     "python bench/seed_figures.py --only sequence_mixers"),
    ("workspace_routing.png", ("lib/workspace.nspec",), "python bench/seed_figures.py --only workspace_routing"),
    ("hourglass.png", ("seeds/hourglass.nspec",), "python bench/seed_figures.py --only hourglass"),
    ("spikingbrain.png", ("seeds/spikingbrain.nspec",), "python bench/seed_figures.py --only spikingbrain"),
    ("multitask_hebbian.png", ("seeds/multitask_hebbian.nspec",), "python bench/multitask_hebbian.py --seeds 6"),
)

# gallery specs without a figure of their own, and why
NO_FIGURE: dict[str, str] = {
    "seeds/elm_v2.nspec": "the authors released no ELM v2 checkpoint or outputs to draw against; "
                          "tests/test_seeds.py checks it against the NumPy oracle of SEED_MODELS.md",
}


def digest(spec: str) -> str:
    return hashlib.sha256((ROOT / "specs" / spec).read_bytes()).hexdigest()


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.exists() else {}


def stale(manifest: dict) -> list[str]:
    """Figures whose file is missing or whose specs' text differs from the manifest's record."""
    out = []
    for figure, specs, command in FIGURES:
        entry = manifest.get(figure, {})
        if (not (FIGURES_DIR / figure).exists() or entry.get("command") != command
                or entry.get("specs") != {spec: digest(spec) for spec in specs}):
            out.append(figure)
    return out


def record(manifest: dict, figure: str) -> None:
    specs, command = next((s, c) for f, s, c in FIGURES if f == figure)
    manifest[figure] = {"command": command, "specs": {spec: digest(spec) for spec in specs}}


def draw(figure: str) -> float:
    command = next(c for f, _, c in FIGURES if f == figure)
    argv = shlex.split(command)
    argv = [sys.executable] + argv[1:] if argv[0] == "python" else [sys.executable, "-m", "nspec"] + argv[1:] + ["--force"]
    print(f"{figure}: {command}", flush=True)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="redraw every figure")
    ap.add_argument("--only", default=None, help="these figures (comma-separated file names)")
    ap.add_argument("--record", action="store_true", help="record the specs' hashes without redrawing")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    known = [f for f, _, _ in FIGURES]
    wanted = known if args.all else args.only.split(",") if args.only else stale(manifest)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        ap.error(f"no such figure in FIGURES: {', '.join(unknown)}")
    for figure in wanted:
        if not args.record:
            print(f"  {draw(figure):.1f} s", flush=True)
        record(manifest, figure)
        MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n", encoding="utf-8")
    print(f"{len(wanted)} figure(s) {'recorded' if args.record else 'drawn'}; manifest: {MANIFEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
