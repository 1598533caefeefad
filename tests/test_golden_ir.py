"""Golden IR: each ``tests/golden/NAME.nspec`` compiles to exactly the text in ``NAME.ir-opt`` beside it.

The expected files are what ``nspec compile NAME.nspec --emit ir-opt`` prints (in the manner of MLIR's
FileCheck tests, but whole-text: any change to the optimised IR of these small specs shows as a diff).
After an intended change to the compiler, regenerate them all and review the diff:

    python tests/test_golden_ir.py --regenerate && git diff tests/golden
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

from nspec.compiler.driver import emit

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(GOLDEN.glob("*.nspec"))


def expected_path(spec: Path) -> Path:
    return spec.with_suffix(".ir-opt")


def actual(spec: Path) -> str:
    return emit(spec, "ir-opt") + "\n"


def test_every_golden_spec_has_its_expected_text():
    assert CASES, "no golden specs found"
    missing = [s.name for s in CASES if not expected_path(s).exists()]
    assert not missing, f"no expected text for {missing}; run: python tests/test_golden_ir.py --regenerate"


@pytest.mark.parametrize("spec", CASES, ids=lambda p: p.stem)
def test_golden_ir(spec):
    want = expected_path(spec).read_text(encoding="utf-8")
    got = actual(spec)
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"{expected_path(spec).name} (expected)", f"{spec.name} --emit ir-opt"))
        pytest.fail(f"the optimised IR of {spec.name} changed:\n{diff}\n"
                    "if intended: python tests/test_golden_ir.py --regenerate")


def regenerate() -> None:
    for spec in CASES:
        expected_path(spec).write_text(actual(spec), encoding="utf-8")
        print(f"wrote {expected_path(spec)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_golden_ir.py --regenerate")
    regenerate()
