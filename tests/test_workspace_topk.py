"""Top-k workspaces against a NumPy oracle, on every backend.

``TopKWorkspace`` (``specs/lib/workspace.nspec``) routes the writes of the k highest-scoring
modules into its content, mixed by a softmax over their scores; a workspace with several slots
stores the writes of the best modules one per slot, best first.  Both are computed here by hand in
NumPy (sorting the scores, not the compiler's rank-counting graph) and compared with every backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec

BACKENDS = ["reference", "onnxruntime", "torch", "tvm"]
MODULES, DIM, STEPS = 5, 6, 7

SPEC = f"""
from "std/workspace.nspec" import TopKWorkspace

workspace TwoSlots(dim = {DIM}, modules = {MODULES}) {{
  in write: f32[modules, dim]
  in gates: f32[modules]
  out read: f32[2, dim]
  slots 2
  write by topk(2)
}}

composite Main {{
  in write: f32[{MODULES}, {DIM}]
  in gates: f32[{MODULES}]
  out mixed: f32[{DIM}]
  out slots: f32[2, {DIM}]
  box top: TopKWorkspace(dim = {DIM}, modules = {MODULES}, k = 2)
  box two: TwoSlots
  wire write -> top.write, two.write
  wire gates -> top.gates, two.gates
  wire top.read -> mixed
  wire two.read -> slots
}}

simulate Main for {STEPS} s, dt = 1 s
"""


def topk_softmax_routing(write: np.ndarray, gates: np.ndarray, k: int) -> np.ndarray:
    """sum over the k best modules m of softmax(gates of those k)[m] * write[m]."""
    best = np.argsort(-gates.astype(np.float64))[:k]
    scores = gates[best].astype(np.float64)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return weights @ write[best].astype(np.float64)


def best_rows(write: np.ndarray, gates: np.ndarray, slots: int) -> np.ndarray:
    """The writes of the ``slots`` best-scoring modules, best first."""
    return write[np.argsort(-gates)[:slots]]


def oracle(write: np.ndarray, gates: np.ndarray) -> dict[str, np.ndarray]:
    """The reads over time: the content is state, so step t reads what step t - 1 wrote (0 at first)."""
    mixed, slots = np.zeros((STEPS, DIM)), np.zeros((STEPS, 2, DIM))
    for t in range(1, STEPS):
        mixed[t] = topk_softmax_routing(write[t - 1], gates[t - 1], 2)
        slots[t] = best_rows(write[t - 1], gates[t - 1], 2)
    return {"mixed": mixed, "slots": slots}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("topk") / "topk.nspec"
    path.write_text(SPEC)
    return nspec.load(path)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    # Scores far enough apart that no two modules tie in any step.
    gates = np.stack([rng.permutation(MODULES) + rng.uniform(0, 0.5, MODULES) for _ in range(STEPS)])
    return {"write": rng.normal(size=(STEPS, MODULES, DIM)).astype(np.float32), "gates": gates.astype(np.float32)}


def test_the_oracle_picks_the_two_best():
    write = np.arange(3 * 2, dtype=np.float64).reshape(3, 2)
    gates = np.array([0.0, 2.0, 1.0])
    w1, w2 = np.exp(2.0) / (np.exp(2.0) + np.exp(1.0)), np.exp(1.0) / (np.exp(2.0) + np.exp(1.0))
    np.testing.assert_allclose(topk_softmax_routing(write, gates, 2), w1 * write[1] + w2 * write[2])
    np.testing.assert_array_equal(best_rows(write, gates, 2), write[[1, 2]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_workspace_equals_the_numpy_oracle(model, inputs, backend):
    got = model.run(inputs=inputs, steps=STEPS, backend=backend)
    want = oracle(inputs["write"], inputs["gates"])
    for name in ("mixed", "slots"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=f"{backend}: {name}")
    assert np.abs(got["mixed"][1:]).max() > 0.1  # the writes reach the content (not a run of zeros)
