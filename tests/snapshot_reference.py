"""Snapshot every spec's reference-backend outputs, or compare against a snapshot bit for bit.

A refactoring that must not change behaviour runs this before and after:

    python tests/snapshot_reference.py save /tmp/before
    python tests/snapshot_reference.py compare /tmp/before

Each spec in ``specs/`` with a run target (and every system of ``specs/seeds/`` it declares as its
target) runs its own ``simulate`` duration, capped at ``--steps``, on seeded random inputs,
recording every output, every ``value`` result and the final state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import nspec
from nspec.dsl import NspecError

ROOT = Path(__file__).resolve().parents[1]


def specs() -> list[Path]:
    return sorted(p for p in (ROOT / "specs").rglob("*.nspec") if "errors" not in p.parts and "lib" not in p.parts)


def load(path: Path, **hyper) -> nspec.Model | None:
    """The spec's model, or None for a library-style file with no run target."""
    try:
        return nspec.load(path, **hyper)
    except NspecError as exc:
        if "nothing to run" in str(exc):
            return None
        raise


def duration_steps(model: nspec.Model, cap: int) -> int:
    """The spec's own ``simulate`` duration in steps (30 when it states none), at most ``cap``."""
    return min(model.default_steps or 30, cap)


def seeded_inputs(model: nspec.Model, steps: int) -> dict[str, np.ndarray]:
    """Seeded random inputs for every input port: normal floats, 0/1 integers and booleans."""
    rng = np.random.default_rng(0)
    inputs = {}
    for v in model.program.inputs:
        if v.dtype.is_float:
            inputs[v.name] = rng.normal(size=(steps, *v.shape)).astype(v.dtype.numpy)
        else:
            inputs[v.name] = rng.integers(0, 2, size=(steps, *v.shape)).astype(v.dtype.numpy)
    return inputs


def value_results(model: nspec.Model) -> list[str]:
    """Every ``value`` result of the step graph (spikes, rates, traces), recorded every step."""
    return sorted(r.name for r in model.program.step.results if r.kind == "value")


def run_spec(path: Path, cap: int, backend: str = "reference", **hyper) -> dict[str, np.ndarray] | None:
    """Outputs, monitors, every value result and ``final_state:<name>`` of the spec's run."""
    model = load(path, **hyper)
    if model is None:
        return None
    steps = duration_steps(model, cap)
    out = dict(model.run(inputs=seeded_inputs(model, steps), steps=steps, record=value_results(model), batch=None,
                         backend=backend))
    for name, value in (model.get_state() or {}).items():
        out[f"final_state:{name}"] = np.asarray(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["save", "compare"])
    ap.add_argument("directory")
    ap.add_argument("--steps", type=int, default=2000, help="cap on each spec's steps")
    args = ap.parse_args(argv)
    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    compared = differing = new = 0
    for path in specs():
        name = str(path.relative_to(ROOT / "specs")).replace("/", "__")
        out = run_spec(path, args.steps)
        if out is None:
            continue
        file = folder / f"{name}.npz"
        if args.mode == "save":
            np.savez(file, **{k.replace("/", "|"): np.asarray(v) for k, v in out.items()})
            print(f"saved {path.relative_to(ROOT)} ({len(out)} arrays)")
            continue
        if not file.exists():  # a spec added since the snapshot: nothing to compare it with
            new += 1
            print(f"new     {path.relative_to(ROOT)}")
            continue
        want = {k.replace("|", "/"): v for k, v in np.load(file).items()}
        compared += 1
        same = set(want) == set(out) and all(
            np.asarray(out[k]).dtype == want[k].dtype and np.array_equal(np.asarray(out[k]), want[k], equal_nan=True)
            for k in want)
        if not same:
            differing += 1
            bad = sorted(set(want) ^ set(out)) or [k for k in want if not np.array_equal(np.asarray(out[k]), want[k], equal_nan=True)]
            print(f"DIFFERS {path.relative_to(ROOT)}: {', '.join(bad[:8])}")
        else:
            print(f"same    {path.relative_to(ROOT)}")
    if args.mode == "compare":
        print(f"{compared - differing} of {compared} specs bit-identical" + (f" ({new} new, not compared)" if new else ""))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
