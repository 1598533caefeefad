"""Spec-level tests (runtime/spectest.py): the expression interpreter with units, the runner's
handling of set/input/run/let/expect/expect_error, located failure messages, and end-to-end runs
of small specs checked against an independent NumPy simulation."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
import pytest

from nspec.compiler import ir
from nspec.dsl.diagnostics import SourceMap
from nspec.runtime.spectest import collect, run_file

DT = 1e-4


def write(tmp_path, text: str, name: str = "t.nspec"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------- a fake model, so the runner is tested alone
def _program(inputs=(), outputs=(), monitors=()) -> ir.Program:
    empty = ir.Graph((), ())
    states = (ir.Var("P/v", ir.DType.f32, (10,), unit="V"),)
    return ir.Program("Fake", empty, empty, (), states, tuple(inputs), tuple(outputs), tuple(monitors), dt=DT)


@dataclass
class FakeModel:
    """Neuron i of P (10 neurons) spikes every (i + 1) * 10 steps from step 0 when i < 5, never otherwise;
    output ``y`` is 1.5 everywhere; monitor ``trace`` records ``P/v`` = -60.5 mV for 3 neurons."""

    program: ir.Program
    populations: dict = field(default_factory=lambda: {"P": 10})
    dt: float = DT
    default_steps: int | None = 1000
    calls: list = field(default_factory=list)

    @property
    def monitors(self):
        return self.program.monitors

    def run(self, **kw):
        self.calls.append(kw)
        steps = kw["steps"] or self.default_steps
        spikes = np.zeros((steps, 10), bool)
        for i in range(5):
            spikes[:: (i + 1) * 10, i] = True
        return {"P/spike": spikes, "y": np.full((steps, 4), 1.5, np.float32),
                "trace.v": np.full((steps, 3), -0.0605), "trace.t": np.arange(steps) * DT}


def fake_loader(log: list):
    def load(path, target, hyper):
        log.append((path, target, hyper))
        model = FakeModel(_program(
            inputs=[ir.Var("I", ir.DType.f32, (10,), unit="A")],
            outputs=[ir.Var("y", ir.DType.f32, (4,))],
            monitors=[ir.Monitor("trace", "state", ("P/v",), None, 1)]))
        log.append(model)
        return model
    return load


def outcomes(tmp_path, text: str, log=None):
    path = write(tmp_path, text)
    results, diags = run_file(path, SourceMap(), fake_loader(log if log is not None else []))
    assert diags == []
    return {o.name: o for o in results}


def expected_counts(steps: int) -> np.ndarray:
    # the fake's spikes, counted independently of the fake: ceil(steps / period) per spiking neuron
    return np.array([-(-steps // ((i + 1) * 10)) if i < 5 else 0 for i in range(10)])


def test_population_functions_match_the_spike_pattern(tmp_path):
    counts = expected_counts(1000)
    rate = counts.sum() / (10 * 1000 * DT)
    res = outcomes(tmp_path, f"""
        test "count" {{ expect count(P) == {counts.sum()} }}
        test "mean rate" {{ expect mean_rate(P) in [{rate - 1e-6} Hz, {rate + 1e-6} Hz] }}
        test "rate" {{ expect max(rate(P)) == {counts.max() / 0.1} Hz and min(rate(P)) == 0 Hz }}
        test "slice" {{ expect count(P[0:2]) == {counts[:2].sum()} and count(P[5:10]) == 0 }}
        test "wrong count" {{ expect count(P) == {counts.sum() + 1} }}
    """)
    assert [n for n, o in res.items() if not o.passed] == ["wrong count"]
    assert f"count(P) was {counts.sum()}" in res["wrong count"].message


def test_units_and_ranges(tmp_path):
    res = outcomes(tmp_path, """
        test "near rest" { expect max(abs(trace.v - -60 mV)) < 1 mV, "stays near rest" }
        test "inclusive" { expect -60.5 mV in [-60.5 mV, -60 mV] and 2 ms in [0.002 s, 1 s] }
        test "too far" {
          expect max(abs(trace.v - -60 mV)) < 0.1 mV, "stays near rest"
        }
        test "mixed units" { expect trace.v > 1 ms }
        test "zero takes any unit" { expect min(trace.v) < 0 }
        test "dt and units as names" { expect dt == 0.1 * ms }
    """)
    assert res["near rest"].passed and res["inclusive"].passed
    assert res["zero takes any unit"].passed and res["dt and units as names"].passed
    far = res["too far"]
    assert not far.passed
    # line 1 of the file is the blank line after the opening quotes
    assert far.message.startswith(f'{tmp_path / "t.nspec"}:5:3: test "too far" failed: stays near rest: ')
    assert "max(abs(trace.v - -60 mV)) was 500 uV (expected max(abs(trace.v - -60 mV)) < 0.1 mV)" in far.message
    assert (far.span.line, far.span.col) == (5, 3)
    mixed = res["mixed units"]
    assert not mixed.passed and "units do not match" in mixed.message and "V and s" in mixed.message


def test_shapes_lists_and_functions(tmp_path):
    res = outcomes(tmp_path, """
        test "shape" { expect shape(y) == [1000, 4] }
        test "shape differs" { expect shape(y) == [1000] }
        test "reductions" {
          let m = mean(y)
          expect m == 1.5 and sum(y) == 6000 and std(y) == 0 and len(trace.t) == 1000
          expect allclose(y, y + 1e-9, 1e-6) and not allclose(y, y + 1, 0.5)
          expect max(y, axis = 0) == [1.5, 1.5, 1.5, 1.5]
          expect y[0, 1:3] == [1.5, 1.5] and shape(trace.v[:, 0]) == [1000]
        }
        test "not" { expect not (count(P) > 0) }
        test "or" { expect count(P) < 0 or mean(y) > 2 }
    """)
    assert res["shape"].passed and res["reductions"].passed, res["reductions"].message
    assert "shape(y) was [1000, 4]" in res["shape differs"].message
    assert "count(P) > 0 was true" in res["not"].message
    assert res["or"].message.count(" was ") == 2 and "neither held" in res["or"].message


@pytest.mark.parametrize("expr, fragment", [
    ("nope > 1", "unknown name 'nope'"),
    ("trace.w > 1", "monitor trace has no field 'w'"),
    ("P > 1", "P is a population"),
    ("frobnicate(y) > 1", "unknown function 'frobnicate'"),
    ("count(Q) > 1", "'Q' is not a population"),
    ("mean(y)", "needs a condition"),
    ("y[2000, 0] > 0", "index out of range"),
    ("mean(y) ^ 1 mV > 0", "exponent must be a dimensionless number"),
    ("count(P) in [1]", "'in' needs a range of two values"),
    ("max(y - [1, 2]) > 0", "cannot combine values of shapes [1000, 4] and [2] with '-'"),
])
def test_bad_expressions_fail_with_a_located_message(tmp_path, expr, fragment):
    res = outcomes(tmp_path, f'test "bad" {{\n  expect {expr}\n}}\n')
    assert not res["bad"].passed
    assert fragment in res["bad"].message
    assert res["bad"].span.line == 2


def test_set_input_run_options_reach_the_model(tmp_path):
    log: list = []
    res = outcomes(tmp_path, """
        test "configured" {
          set n = 3
          set tau = 5 ms
          set routing = "none"
          input I = 0.5 nA
          run Net for 20 ms, seed = 7
          expect count(P) > 0
        }
        test "default run" { expect count(P) > 0 }
    """, log)
    assert res["configured"].passed and res["default run"].passed
    path, target, hyper = log[0]
    assert target == "Net" and hyper == {"n": 3, "tau": pytest.approx(0.005), "routing": "none"}
    call = log[1].calls[0]
    assert call["steps"] == 200 and call["seed"] == 7 and call["record"] == ["P/spike"]
    assert call["inputs"]["I"].shape == (200, 10) and call["inputs"]["I"].dtype == np.float32
    np.testing.assert_allclose(call["inputs"]["I"], 0.5e-9)
    assert log[2] == (path, None, {}) and log[3].calls[0]["steps"] is None


def test_input_problems_are_located(tmp_path):
    res = outcomes(tmp_path, """
        test "unknown input" { input J = 1 nA; run for 1 ms }
        test "wrong unit" { input I = 1 mV; run for 1 ms }
        test "unknown option" { run for 1 ms, speed = 2 }
        test "bad duration" { run for 1 mV }
    """)
    assert "the model has no input 'J'" in res["unknown input"].message
    assert "input I is in A" in res["wrong unit"].message
    assert "unknown run option 'speed'" in res["unknown option"].message
    assert "a run lasts a positive time" in res["bad duration"].message


def test_collect_reports_duplicate_names_and_parse_errors(tmp_path):
    sources = SourceMap()
    tests, diags = collect(write(tmp_path, 'test "a" { expect 1 > 0 }\ntest "a" { expect 1 > 0 }\n'), sources)
    assert [t.name for t in tests] == ["a"] and "defined twice" in diags[0].message and diags[0].span.line == 2
    tests, diags = collect(write(tmp_path, 'test "a" { expect 1 > }\n', "bad.nspec"), sources)
    assert tests == [] and diags and diags[0].span.line == 1


def test_expect_error_must_stand_alone(tmp_path):
    res = outcomes(tmp_path, 'test "mixed" {\n  expect_error "x"\n  expect count(P) > 0\n}\n')
    assert not res["mixed"].passed and "expect_error only compiles" in res["mixed"].message
    assert res["mixed"].span.line == 3


# ---------------------------------------------------------------- end to end, with the real compiler
PACER = """
neuron Pacer {
  param tau = 10 ms;  param El = 20 mV;  param Vt = 10 mV;  param Vr = 0 mV
  state v: mV = Vr
  dv/dt = (El - v) / tau
  spike when v > Vt;  reset { v = Vr }
}
hyper n: int = 10
network Net {
  population P: Pacer[n]
  record spikes of P
}
simulate Net for 100 ms, dt = 0.1 ms, seed = 1
"""


def pacer_spikes_per_neuron(steps: int, dt: float = 1e-4) -> int:
    """An independent simulation: exact integration toward El, threshold, reset (Brian2's order)."""
    v, count, decay = 0.0, 0, np.exp(-dt / 0.01)
    for _ in range(steps):
        v = 0.02 + (v - 0.02) * decay
        if v > 0.01:
            count, v = count + 1, 0.0
    return count


def test_end_to_end_counts_match_an_independent_simulation(tmp_path):
    per_neuron = pacer_spikes_per_neuron(1000)
    path = write(tmp_path, PACER + f"""
test "default run" {{
  expect count(P) == {10 * per_neuron}
  expect mean_rate(P) in [{per_neuron / 0.1 - 1e-6} Hz, {per_neuron / 0.1 + 1e-6} Hz]
}}
test "shorter, with a hyperparameter" {{
  set n = 4
  run Net for 50 ms
  expect count(P) == {4 * pacer_spikes_per_neuron(500)}
  expect shape(rate(P)) == [4]
}}
test "fails where it should" {{
  run for 20 ms
  expect count(P) > 1000
}}
""")
    results, diags = run_file(path)
    assert diags == []
    by_name = {o.name: o for o in results}
    assert by_name["default run"].passed, by_name["default run"].message
    assert by_name["shorter, with a hyperparameter"].passed, by_name["shorter, with a hyperparameter"].message
    failed = by_name["fails where it should"]
    assert not failed.passed
    line = path.read_text().splitlines().index("  expect count(P) > 1000") + 1
    assert failed.message == (f'{path}:{line}:3: test "fails where it should" failed: count(P) was '
                              f'{10 * pacer_spikes_per_neuron(200)} (expected count(P) > 1000)')


def test_expect_error_against_the_real_checker(tmp_path):
    from nspec.compiler.elaborate import check_module

    broken = PACER.replace("dv/dt = (El - v) / tau", "dv/dt = (El - v + tau) / tau")
    path = write(tmp_path, broken)
    messages = [d.message for d in check_module(str(path), SourceMap(), {}) if d.severity == "error"]
    assert messages, "the broken spec must have a unit error"
    fragment = messages[0][: max(8, len(messages[0]) // 2)]
    path = write(tmp_path, broken + f'test "caught" {{ expect_error "{fragment}" }}\n'
                 'test "wrong fragment" { expect_error "no such message anywhere" }\n', "broken.nspec")
    res = {o.name: o for o in run_file(path)[0]}
    assert res["caught"].passed, res["caught"].message
    assert "no error contains" in res["wrong fragment"].message

    path = write(tmp_path, PACER + 'test "clean" { expect_error "anything" }\n', "clean.nspec")
    (clean,) = run_file(path)[0]
    assert not clean.passed and "compiled without errors" in clean.message


def test_expect_error_uses_the_tests_hyperparameters(tmp_path):
    from nspec.compiler.elaborate import check_module

    path = write(tmp_path, PACER)
    messages = [d.message for d in check_module(str(path), SourceMap(), {"n": "many"}) if d.severity == "error"]
    assert messages, "a string for an int hyperparameter must be an error"
    path = write(tmp_path, PACER + f'test "bad n" {{ set n = "many"; expect_error "{messages[0][:20]}" }}\n', "h.nspec")
    (outcome,) = run_file(path)[0]
    assert outcome.passed, outcome.message


def test_pytest_plugin_collects_one_item_per_test_block(tmp_path):
    import subprocess
    import sys

    per_neuron = pacer_spikes_per_neuron(1000)
    write(tmp_path, PACER + f'test "passes" {{ expect count(P) == {10 * per_neuron} }}\n'
                            'test "fails" {\n  expect count(P) < 0\n}\n', "specs/m.nspec")
    write(tmp_path, 'test "never collected" { expect 1 > }\n', "specs/errors/broken.nspec")
    write(tmp_path, PACER, "specs/library.nspec")  # no test blocks: not collected
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(tmp_path / "specs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out
    line = (tmp_path / "specs" / "m.nspec").read_text().splitlines().index("  expect count(P) < 0") + 1
    assert f'm.nspec:{line}:3: test "fails" failed: count(P) was {10 * per_neuron} (expected count(P) < 0)' in out
    assert "FAILED specs/m.nspec::fails" in out
    assert "broken" not in out and "Traceback" not in out
