"""bench/seed_figures.py draws every figure of docs/seeds.md it owns (``--quick``: tiny runs), each a PNG."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "seed_figures.py"


def test_every_figure_is_drawn_in_quick_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("seed_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])
    drawn = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert drawn == sorted(module.FIGURES)
    for name in drawn:
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, (name, len(png))
