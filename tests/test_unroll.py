"""``for`` loops, families of names and interpolated weight keys (compiler/unroll.py).

The oracle of each test is independent of the unroller: a spec written out by hand, or NumPy.
The error cases live in the corpus (``specs/errors/for_*``, ``family_*``, ``weight_key_*``).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

import nspec


def load(tmp_path, text: str, name: str = "s.nspec", **hyper):
    path = tmp_path / name
    path.write_text(text)
    return nspec.load(path, **hyper)


def keys(model) -> dict[str, tuple]:
    return {p.key: tuple(p.shape) for p in model.program.params}


LOOPED = """
hyper depth: int = 4
let widths = int(linspace(10, 4, depth))
system Chain {
  in x: f32[10]
  out y: f32[widths[depth - 1]]
  let h[0] = x
  for i in range(depth - 1) {
    param W[i]: f32[widths[i + 1], widths[i]] = normal(0, 0.3) key "layers.{i}.weight"
    param b[i]: f32[widths[i + 1]] = normal(0, 0.3) key "layers.{i}.bias"
    let h[i + 1] = tanh(linear(h[i], W[i], b[i]))
  }
  y = h[depth - 1]
}
"""

WRITTEN_OUT = """
system Chain {
  in x: f32[10]
  out y: f32[4]
  param W0: f32[8, 10] = normal(0, 0.3) key "layers.0.weight"
  param b0: f32[8] = normal(0, 0.3) key "layers.0.bias"
  param W1: f32[6, 8] = normal(0, 0.3) key "layers.1.weight"
  param b1: f32[6] = normal(0, 0.3) key "layers.1.bias"
  param W2: f32[4, 6] = normal(0, 0.3) key "layers.2.weight"
  param b2: f32[4] = normal(0, 0.3) key "layers.2.bias"
  y = tanh(linear(tanh(linear(tanh(linear(x, W0, b0)), W1, b1)), W2, b2))
}
"""


def test_a_loop_is_the_spec_written_out_by_hand(tmp_path):
    looped, written = load(tmp_path, LOOPED, "a.nspec"), load(tmp_path, WRITTEN_OUT, "b.nspec")
    assert keys(looped) == keys(written)
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in keys(written).items()}
    looped.load_weights(weights)
    written.load_weights(weights)
    x = rng.normal(size=(3, 10)).astype(np.float32)
    for backend in ("reference", "onnxruntime", "torch"):
        got = looped.run({"x": x}, steps=1, batch=3, backend=backend)["y"]
        want = written.run({"x": x}, steps=1, batch=3, backend="reference")["y"]
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=backend)


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_a_chain_of_any_widths_is_the_numpy_chain(tmp_path_factory, widths, seed):
    """widths as a hyperparameter list: one Linear per consecutive pair, checked against NumPy."""
    text = f"""
hyper widths = {widths}
system Chain {{
  in x: f32[widths[0]]
  out y: f32[widths[{len(widths) - 1}]]
  let h[0] = x
  for i in range({len(widths) - 1}) {{
    param W[i]: f32[widths[i + 1], widths[i]] = 0 key "net.{{2 * i}}.weight"
    let h[i + 1] = relu(linear(h[i], W[i], zeros([widths[i + 1]]))) - 0.5
  }}
  y = h[{len(widths) - 1}]
}}
"""
    model = load(tmp_path_factory.mktemp("chain"), text)
    rng = np.random.default_rng(seed)
    weights = {f"net.{2 * i}.weight": rng.normal(size=(widths[i + 1], widths[i])).astype(np.float32)
               for i in range(len(widths) - 1)}
    assert keys(model) == {k: v.shape for k, v in weights.items()}
    model.load_weights(weights)
    x = rng.normal(size=widths[0]).astype(np.float32)
    want = x.astype(np.float64)
    for i in range(len(widths) - 1):
        want = np.maximum(weights[f"net.{2 * i}.weight"] @ want, 0) - 0.5
    np.testing.assert_allclose(model.run({"x": x}, steps=1)["y"], want, atol=1e-5)


def test_loop_lists_nesting_conditions_and_key_braces(tmp_path):
    """range(start, stop, step), reversed(...), a list literal of strings, a nested loop whose member
    index combines both variables, an `if` on the loop variable, and literal braces in a key."""
    model = load(tmp_path, """
system S {
  in x: f32
  out y: f32
  for i in range(1, 6, 2) {
    param a[i]: f32 = i key "a.{i}"
  }
  for i in reversed(range(2)) {
    for j in range(3) {
      param g[3 * i + j]: f32 = 10 * i + j key "grid.{i}.{j}"
    }
  }
  for name in ["left", "right"] {
    if name == "left" {
      param side[0]: f32 = -1 key "{name}.w"
    } else {
      param side[1]: f32 = 1 key "{name}.w"
    }
  }
  param braces: f32 = 7 key "{{literal}}.{2 + 3}"
  y = x * (a[1] + a[3] + a[5]) + g[5] + side[0] + side[1] + braces
}
""")
    assert keys(model) == {"a.1": (), "a.3": (), "a.5": (), **{f"grid.{i}.{j}": () for i in (1, 0) for j in range(3)},
                           "left.w": (), "right.w": (), "{literal}.5": ()}
    order = [p.key for p in model.program.params if p.key.startswith("grid")]
    assert order == ["grid.1.0", "grid.1.1", "grid.1.2", "grid.0.0", "grid.0.1", "grid.0.2"]  # reversed runs 1 first
    # y = 2 * (1 + 3 + 5) + g[5] (i = 1, j = 2: 12) - 1 + 1 + 7
    np.testing.assert_allclose(model.run({"x": np.float32(2)}, steps=1)["y"], 2 * 9 + 12 + 7)


def test_members_read_in_any_order_and_through_indexing(tmp_path):
    """A member may be used before its declaration line (lets are equations), and h[k][j] indexes into
    member k."""
    model = load(tmp_path, """
system S {
  in x: f32[3]
  out y: f32
  y = h[1][2] + h[0][0]
  let h[1] = h[0] * 10
  let h[0] = x + 1
}
""")
    out = model.run({"x": np.array([1, 2, 3], np.float32)}, steps=1)["y"]
    np.testing.assert_allclose(out, 40 + 2)


def test_linspace_with_a_count_is_numpys(tmp_path):
    model = load(tmp_path, """
hyper depth: int = 5
let widths = int(linspace(256, 16, depth))
system S {
  in x: f32
  out y: f32[depth]
  y = x * float(widths)
}
""")
    np.testing.assert_array_equal(model.run({"x": np.float32(1)}, steps=1)["y"],
                                  np.linspace(256, 16, 5).astype(int).astype(np.float32))


def test_a_hyperparameter_changes_how_many_members_exist(tmp_path):
    path = tmp_path / "looped.nspec"
    path.write_text(LOOPED)
    for depth in (1, 2, 6):
        model = nspec.load(path, depth=depth)
        assert sorted(keys(model)) == sorted(f"layers.{i}.{w}" for i in range(depth - 1) for w in ("weight", "bias"))
