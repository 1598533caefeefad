"""Compile-time folding computes what the reference interpreter computes.

A built-in applied to compile-time arguments is folded while the spec is elaborated
(``compiler/builtins.py``); the same call on a graph value becomes an IR node that the oracle
(``runtime/reference.py``) evaluates.  Both go through the oracle's rule for the op
(``compiler/values.py`` ``fold``), so a hyperparameter written ``softplus(1000)`` is 1000, as at run
time, and not the overflow of a naive ``log(1 + exp(x))``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nspec.compiler.builtins import BUILTINS
from nspec.compiler.expressions import ExprBuilder
from nspec.compiler.ir import DType, GraphBuilder, Op
from nspec.compiler.values import fold
from nspec.dsl.diagnostics import Collector
from nspec.dsl.parser import parse
from nspec.runtime.reference import evaluate

UNARY = {"exp": Op.EXP, "log": Op.LOG, "tanh": Op.TANH, "sigmoid": Op.SIGMOID, "sin": Op.SIN, "cos": Op.COS,
         "softplus": Op.SOFTPLUS, "silu": Op.SILU, "relu": Op.RELU, "abs": Op.ABS, "floor": Op.FLOOR, "sqrt": Op.SQRT,
         "erf": Op.ERF, "stop_gradient": Op.STOP_GRADIENT}
POINTS = (-1000.0, -30.5, -1.25, 0.0, 0.75, 40.0, 1000.0)


def static_value(source: str):
    """The folded value of an expression made of literals."""
    module, diags = parse(f"let v = {source}", "<expr>")
    assert module is not None and not diags
    v = ExprBuilder(GraphBuilder(), Collector(), lambda n, s: None).expr(module.items[0].value)
    assert v.is_static, source
    return v.static


def graph_value(op: Op, x: float) -> float:
    """The oracle's value of ``op`` on a float64 graph input (no folding involved)."""
    g = GraphBuilder()
    a = g.arg("x", "input", DType.f64, ())
    g.result("y", "output", g.add(op, [a]))
    return float(evaluate(g.build(), {"x": np.float64(x)})[("y", "output")])


def test_every_folded_function_is_a_builtin():
    assert set(UNARY) <= set(BUILTINS)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_folding_equals_the_oracle_on_a_graph(name):
    for x in POINTS:
        if name in ("log", "sqrt") and x < 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exp(1000) is inf in both, as it should be
            want = graph_value(UNARY[name], x)
            got = static_value(f"{name}({x!r})")
        np.testing.assert_array_equal(np.float64(got), np.float64(want), err_msg=f"{name}({x})")


def test_softplus_and_sigmoid_fold_in_their_stable_forms():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow on the way
        assert static_value("softplus(1000.0)") == 1000.0
        assert static_value("sigmoid(-1000.0)") == 0.0
        assert static_value("silu(-1000.0)") == 0.0


def test_binary_operators_fold_at_the_operands_precision():
    assert static_value("7 / 2") == 3.5
    assert static_value("7 % 3") == 1 and isinstance(static_value("7 % 3"), int)
    assert static_value("maximum(2, 5)") == 5
    np.testing.assert_array_equal(fold(Op.WHERE, [True, False], 1, 2.5), [1.0, 2.5])
