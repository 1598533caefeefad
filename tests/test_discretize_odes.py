"""discretize-odes: elaboration leaves continuous equations as INTEGRATE nodes; the pass turns
each into its scheme's discrete step (compiler/discretize.py's INTEGRATORS)."""

from pathlib import Path

import numpy as np
import pytest

from nspec.compiler.discretize import INTEGRATORS, METHODS
from nspec.compiler.driver import compile_file, emit
from nspec.compiler.ir import GraphBuilder, IRError, Op, print_program, verify, verify_program
from nspec.compiler.ops import IntegrateAttrs
from nspec.compiler.passes.discretize_odes import discretize_odes, has_integrate
from nspec.dsl import NspecError
from nspec.runtime.reference import evaluate

DECAY = """
system Decay {
  in drive: f64
  out x_out: f64
  state x: f64 = 1
  dx/dt = RHS  method METHOD
  x_out = x
}
simulate Decay for 5 ms, dt = 1 ms
"""
DT, TAU = 1e-3, 10e-3
ROOT = Path(__file__).resolve().parents[1]


def compile_text(tmp_path, text, name="m.nspec"):
    path = tmp_path / name
    path.write_text(text)
    return compile_file(path, until="flatten-systems")  # the program discretize-odes receives


def integrates(graph) -> list:
    out = [n for n in graph.nodes if n.op is Op.INTEGRATE]
    for n in graph.nodes:
        if n.op is Op.LOOP:
            out += integrates(n.attrs.body)
    return out


def one_step(program, x0, **inputs):
    step = discretize_odes(program).step
    inputs = {"drive": 0.0, **inputs}
    env = {"x": np.asarray(x0, np.float64), **{k: np.asarray(v, np.float64) for k, v in inputs.items()}}
    return float(evaluate(step, env)[("x", "next")])


def test_methods_are_the_integrators_table():
    assert METHODS == tuple(INTEGRATORS) == ("exact", "exp_euler", "euler", "midpoint", "heun", "rk4", "milstein")
    assert [m for m in METHODS if INTEGRATORS[m].stochastic is not None] == ["euler", "heun", "milstein"]
    for name, integ in INTEGRATORS.items():
        assert integ.name == name
        if integ.kind == "explicit_rk":
            a, b = integ.tableau
            assert len(a) == len(b) - 1 and all(len(row) == i + 1 for i, row in enumerate(a))
            assert sum(b) == pytest.approx(1.0)  # consistency: exact for dx/dt = constant
        else:
            assert integ.tableau is None and integ.probes


@pytest.mark.parametrize("method", METHODS)
def test_elaboration_emits_integrate_and_the_pass_removes_it(tmp_path, method):
    program = compile_text(tmp_path, DECAY.replace("RHS", "-x / (10 ms)").replace("METHOD", method))
    (node,) = integrates(program.step)
    assert isinstance(node.attrs, IntegrateAttrs)
    assert node.attrs.method == method and node.attrs.names == ("x",) and node.attrs.dt == DT
    assert program.step.result("x", "next") is not None
    verify_program(program)
    after = discretize_odes(program)
    assert not integrates(after.step)
    verify_program(after)


@pytest.mark.parametrize("method, want", [
    ("euler", 1 - DT / TAU),
    ("midpoint", 1 - DT / TAU + (DT / TAU) ** 2 / 2),
    ("heun", 1 - DT / TAU + (DT / TAU) ** 2 / 2),
    ("rk4", sum((-DT / TAU) ** k / np.prod(range(1, k + 1)) for k in range(5))),
    ("exp_euler", np.exp(-DT / TAU)),
    ("exact", np.exp(-DT / TAU)),
])
def test_each_scheme_takes_its_step(tmp_path, method, want):
    program = compile_text(tmp_path, DECAY.replace("RHS", "-x / (10 ms)").replace("METHOD", method))
    assert one_step(program, 2.0) == pytest.approx(2.0 * want, rel=1e-12)


@pytest.mark.parametrize("method", ["euler", "rk4", "exact", "exp_euler"])
def test_the_right_hand_side_reads_inputs(tmp_path, method):
    """dx/dt = (drive - x) / tau: ``drive`` is read by the rhs graph (an INTEGRATE input)."""
    program = compile_text(tmp_path, DECAY.replace("RHS", "(drive - x) / (10 ms)").replace("METHOD", method))
    (node,) = integrates(program.step)
    reads = node.attrs.reads + node.attrs.probes
    assert "drive" in node.attrs.reads or any(p.startswith("x@") for p in reads)
    decay = {"euler": 1 - DT / TAU, "rk4": sum((-DT / TAU) ** k / np.prod(range(1, k + 1)) for k in range(5))}
    d = decay.get(method, np.exp(-DT / TAU))
    assert one_step(program, 2.0, drive=0.5) == pytest.approx(0.5 + (2.0 - 0.5) * d, rel=1e-12)


def test_a_constant_derivative_is_folded_not_read(tmp_path):
    program = compile_text(tmp_path, DECAY.replace("RHS", "3 / (1 s)").replace("METHOD", "rk4"))
    (node,) = integrates(program.step)
    assert dict(node.attrs.folded)["x"].value == pytest.approx(3.0)
    assert node.attrs.rhs.result("x", "deriv") is None
    assert one_step(program, 1.0) == pytest.approx(1.0 + 3.0 * DT, rel=1e-12)


def test_exact_carries_the_measured_coefficients(tmp_path):
    program = compile_text(tmp_path, DECAY.replace("RHS", "-x / (10 ms)").replace("  method METHOD", ""))
    (node,) = integrates(program.step)
    assert node.attrs.method == "exact"  # auto: linear with constant coefficients
    np.testing.assert_allclose(node.attrs.coefficients, [[-1 / TAU]])


COUPLED = """
system Coupled {
  out y: f64
  state v: f64 = 1
  state g: f64 = 0
  dv/dt = (g - v) / (10 ms)
  dg/dt = -g / (5 ms)
  y = v
}
simulate Coupled for 3 ms, dt = 1 ms
"""


def test_coupled_linear_equations_are_integrated_exactly(tmp_path):
    program = compile_text(tmp_path, COUPLED)
    (node,) = integrates(program.step)
    assert node.attrs.method == "exact" and node.attrs.names == ("v", "g")
    a = np.array([[-100.0, 100.0], [0.0, -200.0]])
    np.testing.assert_allclose(node.attrs.coefficients, a)
    assert "coefficients=((-100.0, 100.0), (0.0, -200.0))" in print_program(program)
    step = discretize_odes(program).step
    res = evaluate(step, {"v": np.asarray(1.0), "g": np.asarray(0.5)})
    t = DT  # closed form: g = 0.5 e^{-200t}, v = e^{-100t} + 0.5 (e^{-100t} - e^{-200t})
    assert float(res[("g", "next")]) == pytest.approx(0.5 * np.exp(-200 * t), rel=1e-12)
    assert float(res[("v", "next")]) == pytest.approx(np.exp(-100 * t) + 0.5 * (np.exp(-100 * t) - np.exp(-200 * t)),
                                                       rel=1e-12)


def test_auto_falls_back_to_euler_and_exact_needs_linear_equations(tmp_path):
    text = DECAY.replace("RHS", "-x * x / (10 ms)")
    (node,) = integrates(compile_text(tmp_path, text.replace("  method METHOD", "")).step)
    assert node.attrs.method == "euler" and node.attrs.coefficients is None
    with pytest.raises(NspecError) as exc:
        compile_text(tmp_path, text.replace("METHOD", "exact"), "exact.nspec")
    assert "exact.nspec:6:3: error: method exact needs linear equations" in str(exc.value)


REFRACTORY = """
neuron N {
  state v: mV = 0 mV
  state w: mV = 0 mV
  dv/dt = (20 mV - v) / (10 ms)  unless refractory  method METHOD
  dw/dt = (20 mV - w) / (10 ms)  method METHOD
  spike when v > 5 mV
  reset { v = 0 mV }
  refractory 3 ms
}
network Net {
  population P: N[2]
  record v, w of P as tr
}
simulate Net for 10 ms, dt = 1 ms
"""


@pytest.mark.parametrize("method", ["euler", "exact", "exp_euler"])
def test_refractory_states_are_held(tmp_path, method):
    program = compile_text(tmp_path, REFRACTORY.replace("METHOD", method))
    (node,) = integrates(program.step)
    assert node.attrs.held == ("v",)
    hold = program.step.nodes[node.inputs[-1]]  # the hold mask: the last input
    assert hold.dtype.value == "bool" and hold.shape == (2,)
    step = discretize_odes(program).step
    env = {"P/v": np.array([0.001, 0.001]), "P/w": np.array([0.001, 0.001]), "P/refractory_steps": np.array([0.0, 3.0])}
    env = {k: v.astype(np.float32) for k, v in env.items()}
    res = evaluate(step, env)
    v, w = res[("P/v", "next")], res[("P/w", "next")]
    assert v[0] > 0.001 and v[1] == np.float32(0.001)   # the refractory neuron's v is held
    assert w[0] == w[1] == v[0]                            # w is integrated in both


TICKS = """
system Ticked {
  in u: f32
  out y: f32
  state x: f32 = 0
  dx/dt = (u - x) / (10 ms)  method rk4
  y = x
  ticks 3
}
simulate Ticked for 2 ms, dt = 1 ms
"""


def test_integrate_inside_a_loop_body_is_discretised(tmp_path):
    program = compile_text(tmp_path, TICKS)
    assert not [n for n in program.step.nodes if n.op is Op.INTEGRATE]
    assert integrates(program.step) and has_integrate(program.step)
    after = discretize_odes(program)
    assert not has_integrate(after.step)
    verify_program(after)


def test_a_program_without_equations_is_returned_as_is(tmp_path):
    text = "system S {\n  in u: f32\n  out y: f32\n  y = u * 2\n}\nsimulate S for 1 ms, dt = 1 ms\n"
    program = compile_text(tmp_path, text)
    assert discretize_odes(program) is program


def test_emit_after_flatten_shows_integrate_and_ir_the_discrete_step(tmp_path):
    path = tmp_path / "m.nspec"
    path.write_text(DECAY.replace("RHS", "(drive - x) / (10 ms)").replace("METHOD", "heun"))
    before, after = emit(path, "after=flatten-systems"), emit(path, "ir")
    assert "integrate(" in before and "method='heun'" in before and "deriv x = " in before
    assert "integrate(" not in after and "deriv" not in after
    assert print_program(compile_file(path, until="discretize-odes")) == after
    assert print_program(compile_file(path, optimize=False)) == after


def test_the_signature_checks_an_integrate(tmp_path):
    program = compile_text(tmp_path, DECAY.replace("RHS", "(drive - x) / (10 ms)").replace("METHOD", "euler"))
    (node,) = integrates(program.step)
    g = GraphBuilder()
    x = g.arg("x", "state", node.attrs.item_types()[0][0], ())
    with pytest.raises(IRError, match="integrate takes 2 inputs, got 1"):
        g.add(Op.INTEGRATE, [x], attrs=node.attrs)
    d = g.arg("drive", "input", node.attrs.item_types()[0][0], (3,))
    with pytest.raises(IRError, match="'drive' is f64\\[3\\], the right-hand side reads f64\\[\\]"):
        g.add(Op.INTEGRATE, [x, d], attrs=node.attrs)
    d = g.arg("drive2", "input", node.attrs.item_types()[0][0], ())
    i = g.add(Op.INTEGRATE, [x, d], attrs=node.attrs)
    g.result("x", "next", g.add(Op.ITEM, [i], attrs=(("index", 0),)))
    verify(g.build())
    with pytest.raises(IRError, match="ITEM 1 of INTEGRATE with 1 values"):
        g.add(Op.ITEM, [i], attrs=(("index", 1),))


def test_synapse_traces_and_constant_derivatives_become_integrate():
    """specs/examples/plasticity_stdp.nspec: dv/dt = 1 / period (folded) and the STDP traces of a
    synapse (std/synapses.nspec, integrated exactly per synapse)."""
    program = compile_file(ROOT / "specs" / "examples" / "plasticity_stdp.nspec", until="flatten-systems")
    nodes = integrates(program.step)
    by_names = {n.attrs.names: n.attrs for n in nodes}
    assert by_names[("apre", "apost")].method == "exact"
    assert by_names[("v",)].method == "euler" and "v" in dict(by_names[("v",)].folded)
    after = discretize_odes(program)
    assert not integrates(after.step)
    verify_program(after)


def test_a_constant_derivative_under_auto_is_integrated_exactly(tmp_path):
    """dx/dt = 3/s without a method: the linearity probe broadcasts the constant in f64 (it used to
    meet an f32 constant and stop with an internal error)."""
    program = compile_text(tmp_path, DECAY.replace("RHS", "3 / (1 s)").replace("  method METHOD", ""))
    (node,) = integrates(program.step)
    assert node.attrs.method == "exact"
    assert one_step(program, 1.0) == pytest.approx(1.0 + 3.0 * DT, rel=1e-12)
