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


def run_spec(path: Path, cap: int) -> dict[str, np.ndarray] | None:
    try:
        model = nspec.load(path)
    except NspecError as exc:
        if "nothing to run" in str(exc):
            return None
        raise
    steps = min(model.default_steps or 30, cap)
    rng = np.random.default_rng(0)
    inputs = {}
    for v in model.program.inputs:
        if v.dtype.is_float:
            inputs[v.name] = rng.normal(size=(steps, *v.shape)).astype(v.dtype.numpy)
        else:
            inputs[v.name] = rng.integers(0, 2, size=(steps, *v.shape)).astype(v.dtype.numpy)
    record = sorted(r.name for r in model.program.step.results if r.kind == "value")
    out = dict(model.run(inputs=inputs, steps=steps, record=record, batch=None))
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
    compared = differing = 0
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
        print(f"{compared - differing} of {compared} specs bit-identical")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
