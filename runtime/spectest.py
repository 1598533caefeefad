"""Spec-level tests: collect the ``test "name" { ... }`` blocks of a spec and run them.

A test body is declarative about its setup and sequential about its checks:

* ``set h = v`` binds a hyperparameter for this test's compile, ``input I = v`` drives a model
  input with a constant; both apply to every ``run`` of the test, wherever they are written.
* ``run [Target] [for d] [, seed = s]`` compiles the spec and runs it for a time (``200 ms``) or
  a number of steps (``4``, for data-time models), recording the spikes of every population; a
  test with checks but no ``run`` gets the file's default run first.
* ``let x = e`` names a value; ``expect e [, "msg"]`` checks a condition over the latest run.
* ``expect_error "fragment"``: the spec (with the test's ``set`` values) must fail to compile
  with a diagnostic containing the fragment.

Expressions are evaluated by ``spec_eval.py``'s small interpreter over the AST with physical
units (``Q``: an SI magnitude and a ``Dim``) and a table of functions; nothing from the spec is
executed as Python.  A failure is a located message:
``path:line:col: test "name" failed: mean_rate(P) was 1.3 Hz (expected mean_rate(P) in [2 Hz, 12 Hz])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nspec.compiler import units as U
from nspec.compiler.driver import parse_file
from nspec.compiler.elaborate import check_module
from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Diagnostic, NspecError, SourceMap, Span, error
from nspec.runtime import model as runtime_model
from nspec.runtime.executor import BackendError
from nspec.runtime.model import InputError
from nspec.runtime.spec_eval import (DIMLESS, FUNCTIONS, POPULATION_FUNCTIONS, TIME, Evaluator, Q, RunData, SpecFailure,
                                     as_bool, as_q, dim_of_text, explain, fmt, spike_key, to_python)


@dataclass(frozen=True, slots=True)
class SpecTest:
    """One ``test`` block of a spec file."""

    __test__ = False  # not a pytest test class

    path: str
    name: str
    body: tuple[A.Stmt, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """The result of one spec test; ``message`` is the located failure ('' when it passed)."""

    __test__ = False

    name: str
    passed: bool
    message: str
    span: Span


def collect(path: str | Path, sources: SourceMap) -> tuple[list[SpecTest], list[Diagnostic]]:
    """The test blocks of one spec file, or the diagnostics that keep it from parsing."""
    module, diags = parse_file(path, sources)
    if module is None:
        return [], diags
    tests: list[SpecTest] = []
    seen: dict[str, Span] = {}
    for item in module.items:
        if not isinstance(item, A.Test):
            continue
        if item.name in seen:
            diags.append(error(item.span, f'test "{item.name}" is defined twice', f"first defined at {seen[item.name]}"))
            continue
        seen[item.name] = item.span
        tests.append(SpecTest(str(path), item.name, item.body, item.span))
    return tests, diags


# ---------------------------------------------------------------- running a test
Loader = Callable[[str, "str | None", dict], Any]


def load_model(path: str, target: str | None, hyper: dict):
    """The default loader: compile the spec with ``nspec.runtime.model.load``."""
    return runtime_model.load(path, target=target, **hyper)


@dataclass
class _Runner:
    test: SpecTest
    sources: SourceMap
    loader: Loader
    hyper: dict = field(default_factory=dict)
    inputs: dict[str, tuple[A.InputStmt, Q]] = field(default_factory=dict)

    def fail(self, span: Span, message: str):
        raise SpecFailure(span, message)

    def run(self) -> None:
        constants = Evaluator(self.sources)
        for stmt in self.test.body:
            if isinstance(stmt, A.SetStmt):
                self.hyper[stmt.name] = to_python(constants.eval(stmt.value))
            elif isinstance(stmt, A.InputStmt):
                self.inputs[stmt.name] = (stmt, as_q(constants.eval(stmt.value), stmt.value.span))
        expect_errors = [s for s in self.test.body if isinstance(s, A.ExpectError)]
        if expect_errors:
            other = next((s for s in self.test.body if not isinstance(s, (A.ExpectError, A.SetStmt))), None)
            if other is not None:
                self.fail(other.span, "a test with expect_error only compiles the spec; "
                                      "put run, input and expect statements in another test")
            for stmt in expect_errors:
                self.expect_error(stmt)
            return
        body = list(self.test.body)
        if not any(isinstance(s, A.Run) for s in body):
            body.insert(0, A.Run(self.test.span, None, None, ()))
        evaluator = Evaluator(self.sources)
        for stmt in body:
            if isinstance(stmt, A.Run):
                evaluator = Evaluator(self.sources, self.execute(stmt), evaluator.scope)
            elif isinstance(stmt, A.Let):
                evaluator.scope[stmt.name] = evaluator.eval(stmt.value)
            elif isinstance(stmt, A.Expect):
                self.expect(stmt, evaluator)

    def compile(self, span: Span, target: str | None):
        try:
            return self.loader(self.test.path, target, dict(self.hyper))
        except NspecError as exc:
            self.fail(span, "the spec does not compile:\n" + exc.render())

    def execute(self, stmt: A.Run) -> RunData:
        constants = Evaluator(self.sources)
        target = None
        if stmt.target is not None:
            if stmt.target.args or stmt.target.kwargs:
                self.fail(stmt.target.span, "run takes a declared name; bind hyperparameters with 'set'")
            target = stmt.target.name
        seed = None
        for opt in stmt.options:
            if opt.name != "seed":
                self.fail(opt.span, f"unknown run option {opt.name!r}; a run takes 'seed'")
            seed = constants.integer(opt.value)
        model = self.compile(stmt.span, target)
        steps = None
        if stmt.duration is not None:
            steps = self.steps(stmt.duration, constants, model.dt)
        record = [spike_key(pop) for pop in model.populations]
        try:
            results = model.run(inputs=self.input_arrays(model, steps), steps=steps, record=record, seed=seed)
        except NspecError as exc:
            self.fail(stmt.span, "the run failed:\n" + exc.render())
        except (InputError, BackendError) as exc:
            self.fail(stmt.span, f"the run failed: {exc}")
        return RunData.from_model(model, results)

    def steps(self, expr: A.Expr, constants: Evaluator, dt: float) -> int:
        """A run's length: a time (``200 ms``, in steps of ``dt``) or a step count (``4``)."""
        d = as_q(constants.eval(expr), expr.span)
        if np.ndim(d.mag) == 0 and d.dim == TIME and float(d.mag) > 0:
            return max(int(round(float(d.mag) / dt)), 1)
        if np.ndim(d.mag) == 0 and d.dim == DIMLESS and float(d.mag) >= 1 and float(d.mag) == int(d.mag):
            return int(d.mag)
        self.fail(expr.span, f"a run lasts a positive time or a number of steps ('run for 200 ms', "
                             f"'run for 4'); got {fmt(d)}")

    def input_arrays(self, model, steps: int | None) -> dict[str, np.ndarray] | None:
        """Each ``input`` as an array ``[T, *shape]`` holding its constant value."""
        if not self.inputs:
            return None
        steps = steps if steps is not None else model.default_steps
        arrays = {}
        declared = {v.name: v for v in model.program.inputs}
        for name, (stmt, value) in self.inputs.items():
            var = declared.get(name)
            if var is None:
                self.fail(stmt.span, f"the model has no input {name!r}; its inputs: {', '.join(declared) or 'none'}")
            if steps is None:
                self.fail(stmt.span, "an input needs a run duration: 'run for 100 ms'")
            expected = dim_of_text(var.unit)
            if expected is not None and value.dim is not None and expected != value.dim and np.any(value.mag):
                self.fail(stmt.value.span, f"input {name} is in {U.describe(expected)}, got {fmt(value)}")
            try:
                arrays[name] = np.broadcast_to(np.asarray(value.mag, dtype=var.dtype.numpy), (steps, *var.shape)).copy()
            except ValueError:
                self.fail(stmt.value.span, f"input {name} has shape {list(var.shape)}; "
                                           f"got a value of shape {list(np.shape(value.mag))}")
        return arrays

    def expect(self, stmt: A.Expect, evaluator: Evaluator) -> None:
        value = as_bool(evaluator.eval(stmt.condition), stmt.condition.span, "expect")
        if bool(np.all(value.mag)):
            return
        detail = explain(stmt.condition, evaluator)
        self.fail(stmt.span, f"{stmt.message}: {detail}" if stmt.message else detail)

    def expect_error(self, stmt: A.ExpectError) -> None:
        diags = [d for d in check_module(self.test.path, SourceMap(), dict(self.hyper)) if d.severity == "error"]
        if not diags:
            # the declarations check; the run target may still fail to elaborate with these values
            try:
                self.loader(self.test.path, None, dict(self.hyper))
            except NspecError as exc:
                diags = [d for d in exc.diagnostics if d.severity == "error"]
        if not diags:
            self.fail(stmt.span, f'the spec compiled without errors; expected an error containing "{stmt.fragment}"')
        if not any(stmt.fragment in d.message or any(stmt.fragment in n for n in d.notes) for d in diags):
            shown = "\n".join(d.render(self.sources) for d in diags[:3])
            self.fail(stmt.span, f'no error contains "{stmt.fragment}"; the errors were:\n{shown}')


def run_test(test: SpecTest, sources: SourceMap | None = None, loader: Loader | None = None) -> TestOutcome:
    """Run one spec test.  A failure (a false expect, a spec that does not compile, a bad
    expression) is a located message; any other exception is a bug and propagates."""
    sources = sources if sources is not None else SourceMap()
    try:
        _Runner(test, sources, loader or load_model).run()
    except SpecFailure as f:
        return TestOutcome(test.name, False, f'{f.span}: test "{test.name}" failed: {f.message}', f.span)
    return TestOutcome(test.name, True, "", test.span)


def run_file(path: str | Path, sources: SourceMap | None = None,
             loader: Loader | None = None) -> tuple[list[TestOutcome], list[Diagnostic]]:
    """Every test of one spec file, in order (or the diagnostics that keep it from parsing)."""
    sources = sources if sources is not None else SourceMap()
    tests, diags = collect(path, sources)
    return [run_test(t, sources, loader) for t in tests], diags


__all__ = ["SpecTest", "TestOutcome", "SpecFailure", "Q", "RunData", "Evaluator", "FUNCTIONS",
           "POPULATION_FUNCTIONS", "collect", "run_test", "run_file", "explain", "fmt", "load_model"]
