"""The workspace constructs of ``specs/lib/workspace.nspec`` against NumPy and torch by hand.

Gated, softmax, top-k (k = 1, 2 and every module), hard (``write by argmax``) and attention-read
workspaces share one composite driven by random writes, scores and queries, some steps with tied
scores.  Every backend's run equals a NumPy oracle written from the definitions (a stable sort for
top-k, so a tie goes to the lowest index); ``Model.to_torch()``'s gradients, with respect to the
inputs and the attention workspace's parameters, equal torch autograd of a hand-written torch
version; the hard workspace passes the gates the softmax's gradient (straight-through).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nspec
from nspec.compiler.driver import check_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

BACKENDS = ["reference", "onnxruntime", "torch", "tvm"]
M, D, SLOTS, KEY, STEPS = 4, 3, 2, 2, 6
TOPK = {"top1": 1, "top2": 2, "top_all": M}

SPEC = f"""
from "std/workspace.nspec" import GatedWorkspace, SoftmaxWorkspace, TopKWorkspace, HardWorkspace, AttentionWorkspace

composite Main {{
  in write: f32[{M}, {D}]
  in gates: f32[{M}]
  in query: f32[{M}, {D}]
  out gated: f32[{D}]
  out soft: f32[{D}]
  out top1: f32[{D}]
  out top2: f32[{D}]
  out top_all: f32[{D}]
  out hard: f32[{D}]
  out attention: f32[{M}, {D}]
  box g: GatedWorkspace(dim = {D}, modules = {M})
  box s: SoftmaxWorkspace(dim = {D}, modules = {M})
  box t1: TopKWorkspace(dim = {D}, modules = {M}, k = 1)
  box t2: TopKWorkspace(dim = {D}, modules = {M}, k = 2)
  box ta: TopKWorkspace(dim = {D}, modules = {M}, k = {M})
  box h: HardWorkspace(dim = {D}, modules = {M})
  box att: AttentionWorkspace(dim = {D}, modules = {M}, slots = {SLOTS}, key_dim = {KEY})
  wire write -> g.write, s.write, t1.write, t2.write, ta.write, h.write, att.write
  wire gates -> g.gates, s.gates, t1.gates, t2.gates, ta.gates, h.gates
  wire query -> att.query
  wire g.read -> gated
  wire s.read -> soft
  wire t1.read -> top1
  wire t2.read -> top2
  wire ta.read -> top_all
  wire h.read -> hard
  wire att.read -> attention
}}

simulate Main for {STEPS} s, dt = 1 s
"""


# ---------------------------------------------------------------- the NumPy oracle
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def topk_weights(gates: np.ndarray, k: int) -> np.ndarray:
    """softmax over the k best scores (a stable sort: a tie goes to the lowest index), 0 elsewhere."""
    best = np.argsort(-gates, kind="stable")[:k]
    weights = np.zeros_like(gates)
    weights[best] = softmax(gates[best])
    return weights


def write_weights(gates: np.ndarray) -> dict[str, np.ndarray]:
    weights = {"gated": gates, "soft": softmax(gates), "hard": np.eye(M)[np.argmax(gates)]}
    return weights | {name: topk_weights(gates, k) for name, k in TOPK.items()}


def attention_read(query, content, p) -> np.ndarray:
    q, k, v = query @ p["w_q"].T, content @ p["w_k"].T, content @ p["w_v"].T
    return softmax(q @ k.T / np.sqrt(KEY)) @ v


def oracle(write, gates, query, p) -> dict[str, np.ndarray]:
    """Every output over time: step t reads what step t - 1 wrote (0 at first)."""
    write, gates, query = (np.asarray(a, np.float64) for a in (write, gates, query))
    out = {name: np.zeros((STEPS, D)) for name in ("gated", "soft", "hard", *TOPK)}
    out["attention"] = np.zeros((STEPS, M, D))
    slots = np.zeros((SLOTS, D))
    for t in range(STEPS):
        out["attention"][t] = attention_read(query[t], slots, p)
        slots = softmax(p["slot_query"] @ write[t].T / np.sqrt(D)) @ write[t]
        if t + 1 < STEPS:
            for name, w in write_weights(gates[t]).items():
                out[name][t + 1] = w @ write[t]
    return out


def test_the_oracle_breaks_ties_by_the_lowest_index():
    gates = np.array([0.5, 0.9, 0.9, 0.9])
    np.testing.assert_allclose(topk_weights(gates, 2), [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(topk_weights(gates, 1), [0, 1, 0, 0])
    np.testing.assert_allclose(write_weights(gates)["hard"], [0, 1, 0, 0])


# ---------------------------------------------------------------- every backend
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ws") / "constructs.nspec"
    path.write_text(SPEC)
    return nspec.load(path)


def attention_params(model) -> dict[str, np.ndarray]:
    return {k.removeprefix("att/"): np.asarray(v, np.float64) for k, v in model.state_dict().items()}


def random_inputs(seed: int, ties: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    gates = rng.normal(size=(STEPS, M))
    if ties:
        gates[0] = [0.5, 0.5, 0.5, 0.2]     # three tie for first: top-2 keeps modules 0 and 1
        gates[1] = [0.3, 0.3, 0.3, 0.3]     # all tie: top-1 and hard pick module 0
        gates[2] = [0.1, 0.9, 0.9, 0.9]     # top-2 keeps modules 1 and 2
    return {"write": rng.normal(size=(STEPS, M, D)).astype(np.float32), "gates": gates.astype(np.float32),
            "query": rng.normal(size=(STEPS, M, D)).astype(np.float32)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_workspace_equals_the_numpy_oracle(model, backend):
    inputs = random_inputs(3, ties=True)
    got = model.run(inputs=inputs, steps=STEPS, backend=backend)
    want = oracle(inputs["write"], inputs["gates"], inputs["query"], attention_params(model))
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{backend}: {name}")
        assert np.abs(value[1:]).max() > 0.1, name  # the writes reach the reads (not a run of zeros)
    # the hard write is exactly the winner's row: one_hot + (soft - stop_gradient(soft)) adds 0
    np.testing.assert_array_equal(got["hard"][2], inputs["write"][1, 0])


def test_topk_and_argmax_winners_under_ties(model):
    """The tied steps by hand: which rows reach the content."""
    inputs = random_inputs(3, ties=True)
    got = model.run(inputs=inputs, steps=STEPS)
    w = inputs["write"].astype(np.float64)
    np.testing.assert_allclose(got["top2"][1], (w[0, 0] + w[0, 1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got["top1"][2], w[1, 0], rtol=1e-6)
    np.testing.assert_allclose(got["hard"][2], w[1, 0], rtol=1e-6)
    np.testing.assert_allclose(got["top2"][3], (w[2, 1] + w[2, 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got["top_all"][2], w[1].mean(axis=0), rtol=1e-6)


# ---------------------------------------------------------------- gradients on torch
def torch_run(write, gates, query, p) -> dict[str, torch.Tensor]:
    """The same workspaces written directly in torch; inputs [B, T, ...], outputs [B, T, ...]."""
    B = write.shape[0]
    reads = {name: [torch.zeros(B, D)] for name in ("gated", "soft", "hard", *TOPK)}
    attention, slots = [], torch.zeros(B, SLOTS, D)
    for t in range(STEPS):
        w, g, q = write[:, t], gates[:, t], query[:, t]
        k, v = slots @ p["w_k"].T, slots @ p["w_v"].T
        attention.append(torch.softmax((q @ p["w_q"].T) @ k.transpose(1, 2) / KEY ** 0.5, dim=-1) @ v)
        slots = torch.softmax(p["slot_query"] @ w.transpose(1, 2) / D ** 0.5, dim=-1) @ w
        soft = torch.softmax(g, dim=-1)
        weights = {"gated": g, "soft": soft,
                   "hard": torch.nn.functional.one_hot(g.argmax(-1), M).to(g.dtype) + soft - soft.detach()}
        for name, kk in TOPK.items():
            winners = torch.argsort(-g, dim=-1, stable=True)[:, :kk]  # a tie goes to the lowest index
            best = torch.zeros_like(g, dtype=torch.bool).scatter(1, winners, True)
            weights[name] = torch.softmax(g.masked_fill(~best, float("-inf")), dim=-1)
        if t + 1 < STEPS:
            for name, wt in weights.items():
                reads[name].append(torch.einsum("bm,bmd->bd", wt, w))
    return {name: torch.stack(r, dim=1) for name, r in reads.items()} | {"attention": torch.stack(attention, dim=1)}


def test_to_torch_gradients_equal_a_hand_written_torch_version(model):
    module = model.to_torch()
    params = dict(module.named_parameters())
    assert set(params) == {"att.slot_query", "att.w_q", "att.w_k", "att.w_v"}
    rng = np.random.default_rng(5)
    raw = {k: np.stack([v, random_inputs(6, ties=False)[k]]) for k, v in random_inputs(4, ties=False).items()}
    inputs = {k: torch.tensor(v, requires_grad=True) for k, v in raw.items()}
    mine = {k: torch.tensor(v, requires_grad=True) for k, v in raw.items()}
    mine_p = {k.removeprefix("att."): p.detach().clone().requires_grad_(True) for k, p in params.items()}

    got, want = module(**inputs), torch_run(mine["write"], mine["gates"], mine["query"], mine_p)
    coef = {k: torch.tensor(rng.normal(size=tuple(v.shape)), dtype=torch.float32) for k, v in want.items()}
    for name in want:
        torch.testing.assert_close(got[name], want[name].detach(), rtol=1e-5, atol=1e-5, msg=name)
    sum((got[k] * coef[k]).sum() for k in want).backward()
    sum((want[k] * coef[k]).sum() for k in want).backward()
    for name in inputs:
        assert inputs[name].grad.abs().max() > 0, name
        torch.testing.assert_close(inputs[name].grad, mine[name].grad, rtol=1e-4, atol=1e-5, msg=name)
    for key, p in params.items():
        assert p.grad.abs().max() > 0, key
        torch.testing.assert_close(p.grad, mine_p[key.removeprefix("att.")].grad, rtol=1e-4, atol=1e-5, msg=key)


def test_hard_routing_passes_the_softmax_gradient_to_the_gates(model):
    """Straight-through: the hard read's gradient with respect to the gates is the soft read's."""
    module = model.to_torch()
    raw = random_inputs(8, ties=False)
    grads = {}
    for name in ("hard", "soft"):
        inputs = {k: torch.tensor(v[None], requires_grad=True) for k, v in raw.items()}
        coef = torch.tensor(np.random.default_rng(9).normal(size=(1, STEPS, D)), dtype=torch.float32)
        (module(**inputs)[name] * coef).sum().backward()
        grads[name] = inputs["gates"].grad
    assert grads["hard"][0, :-1].abs().min() > 0  # every step but the last (never read) gets a gradient
    torch.testing.assert_close(grads["hard"], grads["soft"], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("k", [0, M + 1])
def test_topk_outside_one_to_modules_is_a_located_error(tmp_path, k):
    path = tmp_path / "bad.nspec"
    path.write_text(SPEC.replace("k = 2)", f"k = {k})"))
    diags, _ = check_files([path])
    first = diags[0]
    assert f"topk: k = {k} must be in 1..{M}" in first.message
    library = Path(first.span.path)  # located at the k of TopKWorkspace's 'write by topk(k)'
    assert library.name == "workspace.nspec"
    assert library.read_text().splitlines()[first.span.line - 1][first.span.col - 1:].startswith("k)")


def test_an_attention_query_taken_from_the_read_is_an_instantaneous_cycle(tmp_path):
    """read is immediate in query: a module that turns its read into its query in the same step closes
    a loop without state, named port by port at the wire that closes it."""
    path = tmp_path / "echo.nspec"
    path.write_text("""from "std/workspace.nspec" import AttentionWorkspace
system Echo {
  in seen: f32[3, 4]
  out query: f32[3, 4]
  query = seen
}
composite Main {
  in write: f32[3, 4]
  out r: f32[3, 4]
  box att: AttentionWorkspace(dim = 4, modules = 3, slots = 2, key_dim = 2)
  box e: Echo
  wire write -> att.write
  wire e.query -> att.query
  wire att.read -> e.seen, r
}
""")
    diags, _ = check_files([path])
    assert len(diags) == 1 and (diags[0].span.line, diags[0].span.col) == (13, 3)
    assert "instantaneous cycle in Main: att.query -> att.read -> e.seen -> e.query -> att.query" in diags[0].message
