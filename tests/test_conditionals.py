"""`if` blocks: compile-time choices between declarations, driven by hyperparameters."""

import numpy as np
import pytest

import nspec
from nspec.dsl import NspecError

SPEC = """
hyper deep: bool = true
hyper mode: str = "double" one_of ["double", "same", "zero"]
system S(n = 2) {
  in x: f32[n]
  out y: f32[n]
  if deep and n > 1 {
    param W: f32[n, n] = 0.5 key "deep.weight"
    y = x @ W
  } else if mode == "double" {
    y = 2 * x
  } else if mode == "zero" {
    y = 0 * x
  } else {
    y = x
  }
}
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "if.nspec"
    p.write_text(SPEC)
    return p


@pytest.mark.parametrize("deep, mode, expected, keys", [
    (True, "same", [1.0, 1.0], ["deep.weight"]),
    (False, "double", [2.0, 2.0], []),
    (False, "zero", [0.0, 0.0], []),
    (False, "same", [1.0, 1.0], []),
])
def test_branch_follows_hyperparameters(path, deep, mode, expected, keys):
    m = nspec.load(path, deep=deep, mode=mode)
    assert [v.key for v in m.program.params] == keys
    np.testing.assert_allclose(m.run(inputs={"x": np.ones((1, 2))})["y"][0], expected)


def test_condition_must_be_known_at_compile_time(tmp_path):
    p = tmp_path / "bad.nspec"
    p.write_text("system S {\n  in x: f32\n  out y: f32\n  if x > 0 { y = x } else { y = -x }\n}\n")
    with pytest.raises(NspecError, match="4:6: error: an .if. condition must be a bool known at compile time; .x. is a run-time value"):
        nspec.load(p)


def test_else_may_start_the_line_after_the_closing_brace(tmp_path):
    """'}' newline 'else' (and 'else if') continue the 'if' just before, like '} else {'."""
    p = tmp_path / "chain.nspec"
    p.write_text("hyper mode: int = 0\n"
                 "system S {\n  in x: f32\n  out y: f32\n"
                 "  if mode == 0 {\n    y = x\n  }\n"
                 "  else if mode == 1 {\n    y = 2 * x\n  }\n"
                 "  # a comment between the branches\n"
                 "  else {\n    y = 3 * x\n  }\n}\n")
    for mode, factor in ((0, 1), (1, 2), (2, 3)):
        out = nspec.load(p, mode=mode).run({"x": np.float32(1.5)}, steps=1)["y"]
        assert float(out) == 1.5 * factor
