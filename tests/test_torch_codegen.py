"""The torch backend's generated code (``lowering/torch_codegen.py``) against its interpreter.

Each plan runs as the Python that torch.fx generates for it; ``torch_rules.execute`` interprets
the same plans op by op and stays behind ``NSPEC_TORCH_INTERPRET=1``.  Both must give the same
bits on whole specs (spikes, plastic weights, random draws, loops), the same gradients, the same
located errors; and the generated source must read as one statement per node.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import nspec
from nspec.compiler.ir import DType, GraphBuilder, Op
from nspec.dsl.diagnostics import Span
from nspec.lowering import torch_codegen as cg
from nspec.lowering import torch_rules as tr
from nspec.runtime.executor import BackendError
from snapshot_reference import ROOT, run_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F32 = DType.f32
BDH_TINY = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16)
# cuba: PROPAGATE and SPIKE; ctm: LOOP (its internal ticks) and GATHER; elm: parameter-only decay
# factors (the once-per-run prologue); bdh: RANDOM-free layer norm and einsums; lstm: gates;
# plasticity_stdp: plastic weights updated without gradients (the `local` part); random_draws:
# UNIFORM and NORMAL draws of the time loop.
SPECS = {"cuba.nspec": {}, "seeds/ctm.nspec": {}, "seeds/elm.nspec": {}, "seeds/bdh.nspec": BDH_TINY,
         "seeds/lstm.nspec": {}, "examples/plasticity_stdp.nspec": {}, "examples/random_draws.nspec": {}}
STEPS = 20


def _forbid(monkeypatch, module, name):
    def refuse(*_):
        raise AssertionError(f"{module.__name__}.{name} ran in the other mode")

    monkeypatch.setattr(module, name, refuse)


def _run(path, mode, monkeypatch, **hyper):
    """The snapshot run of ``path`` on torch, with only ``mode``'s executor allowed to run a plan."""
    with monkeypatch.context() as m:
        m.setattr(cg, "INTERPRET", mode == "interpreted")
        if mode == "interpreted":
            _forbid(m, cg, "run")
        else:
            _forbid(m, tr, "execute")
        return run_spec(path, STEPS, backend="torch", **hyper)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_generated_code_gives_the_interpreters_bits(spec, monkeypatch):
    """Every output, recorded value and final state is bit-equal (``array_equal``, NaNs equal).
    A run that records only constants would prove nothing: some compared float array must vary
    (a spec whose every array were constant would fail here, not pass vacuously)."""
    path = ROOT / "specs" / spec
    generated = _run(path, "generated", monkeypatch, **SPECS[spec])
    interpreted = _run(path, "interpreted", monkeypatch, **SPECS[spec])
    assert generated.keys() == interpreted.keys()
    differ = [k for k in generated if not np.array_equal(generated[k], interpreted[k], equal_nan=True)]
    assert not differ, differ
    assert any(np.asarray(v).dtype.kind == "f" and np.asarray(v).size and np.ptp(v) > 0 for v in generated.values())


@pytest.mark.parametrize("spec", ["seeds/lstm.nspec", "seeds/elm.nspec"])
def test_gradients_through_to_torch_are_equal(spec):
    """Model.to_torch(): loss = sum(output * c) for fixed random c; every parameter's gradient
    is equal within 1e-6 relative (the same ops in the same order: in practice bit-equal), and
    nonzero (a zero gradient in both modes would prove nothing)."""
    model = nspec.load(ROOT / "specs" / spec)
    grads = {}
    for mode in (False, True):
        module = model.to_torch()
        rng = np.random.default_rng(3)
        inputs = {v.name: torch.as_tensor(rng.normal(size=(2, 6) + v.shape).astype(np.float32))
                  for v in model.program.inputs}
        try:
            cg.INTERPRET = mode
            out = module(**inputs)
        finally:
            cg.INTERPRET = False
        loss = sum((y * torch.as_tensor(np.random.default_rng(4).normal(size=y.shape), dtype=y.dtype)).sum()
                   for y in out.values() if y.dtype.is_floating_point)
        loss.backward()
        grads[mode] = {k: p.grad.clone() for k, p in module.named_parameters()}
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for k in grads[False]:
        torch.testing.assert_close(grads[False][k], grads[True][k], rtol=1e-6, atol=1e-7)
    assert any(g.abs().max() > 0 for g in grads[False].values())


def _failing_graph():
    """y = exp(t) + i with i one element too long; kappa = p * q with q one element too long
    (parameters only: the once-per-run prologue)."""
    b = GraphBuilder()
    t = b.arg("t", "input", F32, (2,))
    i = b.arg("i", "input", F32, (2,))
    p = b.arg("p", "param", F32, (2,))
    q = b.arg("q", "param", F32, (2,))
    e = b.add(Op.EXP, [t], F32, (2,), (), Span("model.nspec", 8, 2))
    b.result("y", "output", b.add(Op.ADD, [e, i], F32, (2,), (), Span("model.nspec", 9, 4)))
    kappa = b.add(Op.MUL, [p, q], F32, (2,), (), Span("model.nspec", 12, 6))
    b.result("z", "output", b.add(Op.MUL, [kappa, t], F32, (2,), (), Span("model.nspec", 13, 3)))
    return b.build()


@pytest.mark.parametrize("interpret", [False, True])
@pytest.mark.parametrize("bad, where", [("i", r"model.nspec:9:4: error: %5 \(add\): RuntimeError: .*size"),
                                        ("q", r"model.nspec:12:6: error: %6 \(mul\): RuntimeError: .*size")])
def test_a_runtime_failure_names_its_node_and_spec_line(interpret, bad, where):
    """The failing line of generated code maps back to its node: the ADD (not the EXP on the line
    before it), or the parameter-only MUL of the prologue; the interpreter says the same."""
    graph = _failing_graph()
    env = {"t": np.zeros((1, 2), np.float32), "i": np.zeros((1, 2), np.float32),
           "p": np.ones(2, np.float32), "q": np.ones(2, np.float32)}
    env[bad] = np.zeros(env[bad].shape[:-1] + (3,), np.float32)
    plan = tr.compile_plan(graph, {}, frozenset({"p", "q"}))
    frame = tr.Frame({k: torch.as_tensor(v) for k, v in env.items()}, {}, 1)
    with pytest.raises(BackendError, match=where):
        cg.execute(plan, frame, interpret=interpret)
    assert torch.is_grad_enabled()


def test_a_failure_in_the_plastic_part_restores_the_grad_mode():
    """The plastic-only nodes run with gradients off; a failure among them must not leave them off."""
    b = GraphBuilder()
    w = b.arg("w", "state", F32, (2,))
    x = b.arg("x", "input", F32, (2,))
    b.result("w", "next", b.add(Op.ADD, [w, x], F32, (2,), (), Span("model.nspec", 5, 1)))
    b.result("y", "output", b.add(Op.MUL, [w, w], F32, (2,)))
    plan = tr.compile_plan(b.build(), {}, local_results=frozenset({"w"}))
    assert [s.node.op for s in plan.local if s.node.op is not Op.ARG] == [Op.ADD]
    frame = tr.Frame({"w": torch.zeros(1, 2), "x": torch.zeros(1, 3)}, {}, 1)
    with pytest.raises(BackendError, match=r"model.nspec:5:1: error: %2 \(add\)"):
        cg.execute(plan, frame)
    assert torch.is_grad_enabled()
    frame = tr.Frame({"w": torch.zeros(1, 2, requires_grad=True), "x": torch.ones(1, 2)}, {}, 1)
    vals = cg.execute(plan, frame)
    assert vals[plan.graph.result("w", "next").node].grad_fn is None  # updated without gradients
    assert vals[plan.graph.result("y").node].grad_fn is not None


LEAKY = """
module test.leaky "a leaky integrator with a parameter-only decay"
system Leaky {
  in x: f32[3]
  out y: f32[3]
  param tau: f32[3] = 5 bounded(1, 20) via sigmoid
  state v: f32[3] = 0
  let kappa = exp(-1 / tau)
  y = kappa * v + x
  next v = kappa * v + x
}
"""


def test_generated_source_is_one_statement_per_node(tmp_path):
    """The leaky integrator's code, printed for reading (``pytest -s``): its prologue computes the
    decay from tau once; its step reads kappa from the prologue and is plain torch arithmetic, one
    assignment per node, with no rule called.  Every assignment maps back to a node of the plan."""
    path = tmp_path / "leaky.nspec"
    path.write_text(LEAKY)
    module = nspec.load(path).to_torch()
    plan = module._nspec.step
    module(x=torch.ones(1, 4, 3))
    text = cg.source(plan)
    print(text)
    once, step = text.split("def forward")[1:]
    assert "torch.exp(" in once and "torch.sigmoid(" in once and "exp" not in step.replace("torch.exp", "")
    assert "rule_" not in text and "once_" in step
    assert re.search(r"\n    mul_\d+ = once_\d+ \* arg_\d+", step)
    code = plan.generated.code
    assigned = [line for line in text.split("\n") if re.match(r"    \w+ = ", line)]
    assert len(code.lines) == len(assigned) and {s.index for s in code.lines.values()} <= {
        s.index for s in plan.sites + plan.local}


def test_plans_survive_pickling_without_their_code(tmp_path):
    """A module holding plans pickles (its generated code is rebuilt where it is loaded)."""
    import pickle

    path = tmp_path / "leaky.nspec"
    path.write_text(LEAKY)
    module = nspec.load(path).to_torch()
    x = torch.randn(2, 5, 3)
    before = module(x=x)["y"]
    again = pickle.loads(pickle.dumps(module))
    assert again._nspec.step.generated.code is None
    torch.testing.assert_close(again(x=x)["y"], before, rtol=0, atol=0)


def test_a_hostile_name_stays_a_dictionary_key():
    """Spec-derived strings enter generated code as repr'd constants: an ARG named like code
    reads its value by that exact name (were it pasted as text, the generated line would call
    ``__import__`` and add a second key's value, or fail to compile)."""
    name = "x'] + __import__('os').getpid() + args['y"
    b = GraphBuilder()
    x = b.arg(name, "input", F32, (2,))
    b.result("z", "output", b.add(Op.NEG, [x], F32, (2,)))
    plan = tr.compile_plan(b.build(), {})
    value = torch.tensor([[1.0, 2.0]])
    out = cg.execute(plan, tr.Frame({name: value, "x": torch.zeros(1, 2), "y": torch.zeros(1, 2)}, {}, 1))
    torch.testing.assert_close(out[plan.graph.result("z").node], -value, rtol=0, atol=0)
    assert repr(name) in cg.source(plan)


def test_a_built_module_has_the_code_of_every_plan_before_its_first_run(monkeypatch):
    # torch.compile traced `plan.generated.code or generate(plan)`: each LOOP body generated on its
    # first run was a failed guard and a recompilation (dynamo gives up after 8; ELM has nested loops)
    monkeypatch.setattr(cg, "INTERPRET", False)
    module = nspec.load(ROOT / "specs" / "seeds" / "ctm.nspec").to_torch()

    def plans(plan):
        yield plan
        for s in plan.sites + plan.local:
            if isinstance(s.extra, tr.Loop):
                yield from plans(s.extra.body)

    every = list(plans(module._nspec.step))
    assert len(every) > 1  # CTM's ticks are a LOOP
    assert all(p.generated.code is not None for p in every)


@pytest.mark.parametrize("equation", ["adm,mhd->adh", "ahtn,ahsn->ahts", "ahtn,hnd->atd", "bi,ij->bj", "i,i->"])
def test_a_contraction_is_one_bmm_with_torch_einsums_values_and_gradients(equation):
    """``torch_einsum``: a two-operand EINSUM that sums runs as one bmm, each operand permuted (the
    second one fixed: arranged contiguous, as generated code does once per run); values and
    gradients as torch.einsum's within rounding, and a size-1 axis still broadcasts."""
    from nspec.lowering.torch_einsum import contract, contraction

    terms = equation.split("->")[0].split(",")
    sizes = {c: 2 + k for k, c in enumerate(sorted(set("".join(terms))))}
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn([sizes[c] for c in t], generator=gen, requires_grad=True) for t in terms)
    c = contraction(equation, (False, True))
    got = contract(c, *c.operands(a, b))
    want = torch.einsum(equation, a, b)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    weights = torch.randn(want.shape, generator=gen)
    grads = [torch.autograd.grad((y * weights).sum(), (a, b)) for y in (got, want)]
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    one = torch.randn(1, 2, 3, generator=gen)
    other = torch.randn(4, 3, 5, generator=gen)
    c = contraction("bij,bjk->bik")
    torch.testing.assert_close(contract(c, *c.operands(one, other)), torch.einsum("bij,bjk->bik", one, other))
    assert contraction("ij,jk->i") is None and contraction("ab,ab->ab") is None and contraction("ii,i->i") is None


def test_a_loop_bodys_invariant_work_runs_once_per_run_of_the_loop():
    """CTM's ticks: the key/value projection of the input reads loop invariants only, so it is part
    of the body's ``once`` function (run at the first tick of each run of the loop), not of every
    tick; the bits are the interpreter's (``test_generated_code_gives_the_interpreters_bits``)."""
    module = nspec.load(ROOT / "specs" / "seeds" / "ctm.nspec").to_torch()
    (loop,) = [s.extra for s in module._nspec.step.sites if isinstance(s.extra, tr.Loop)]
    hoisted = {s.op for s in loop.body.sites if s.once}
    assert {"einsum", "layernorm"} <= hoisted
    once = cg.source(loop.body).split("def forward")[1]
    assert "layernorm" in once
