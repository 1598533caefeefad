"""The spec's B-spline basis against pykan's (``specs/seeds/skan.nspec``, pool member 0).

    pip download --no-deps pykan==0.2.8 -d /tmp/pykan && unzip -q /tmp/pykan/pykan-0.2.8-py3-none-any.whl -d /tmp/pykan/x
    python bench/skan_pykan.py /tmp/pykan/x/kan/spline.py

pykan is not a dependency of nspec: its package ``kan`` imports sympy, scikit-learn, pandas and yaml,
which pykan does not declare (it declares no dependencies at all, so it would not replace torch).
This loads only its ``kan/spline.py`` by path and compares ``B_batch`` (cubic, 5 intervals on
[-1, 1] extended by 3 each side: the spec's defaults) on 481 points of [-2.4, 2.4] with the SciPy
oracle of tests/skan_oracle.py and with the spec's own columns on the reference interpreter.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from skan_oracle import SPEC, bases  # noqa: E402

import nspec  # noqa: E402


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("pykan_spline", path)
    spline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spline)
    n, k = 8, 3
    step = 2.0 / (n - k)
    grid = torch.tensor(-1.0 + step * np.arange(-k, n + 1))[None, :]  # pykan's extended grid
    x = torch.linspace(-2.4, 2.4, 481, dtype=torch.float64)[:, None]
    theirs = spline.B_batch(x, grid, k=k).numpy()[:, 0]
    oracle = bases(x.numpy(), {})[:, 0, 0]
    model = nspec.load(SPEC, n_in=1, n_out=1, phase="pruned")
    ours = []
    for j in range(n):
        coef = np.zeros((1, 1, 4, n), np.float32)
        coef[0, 0, 0, j] = 1
        model.load_weights({"layers.0.coef": coef, "layers.0.select": np.array([[[1, 0, 0, 0]]], np.float32)})
        ours.append(np.asarray(model.run(inputs={"x": x.numpy().astype(np.float32)})["y"]).reshape(-1))
    print(f"pykan B_batch vs the SciPy oracle: max |diff| {np.abs(theirs - oracle).max():.2e}")
    print(f"pykan B_batch vs the spec (float32, reference): max |diff| {np.abs(theirs - np.stack(ours, 1)).max():.2e}")


if __name__ == "__main__":
    main(sys.argv[1])
