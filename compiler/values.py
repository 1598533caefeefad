"""Typed values of expressions, and compile-time folding by the oracle's rules.

A ``Val`` is what every expression elaborates to: a compile-time value (``static``) or a node of
the graph being built, always with a dtype, a per-sample shape and a physical dimension.  This
module is the leaf both ``expressions.py`` (the builder) and ``builtins.py`` (the built-in
functions) stand on.  ``fold`` computes a compile-time value with the reference interpreter's own
rule for the op, so a folded ``sigmoid(2)`` is exactly what the oracle computes for a SIGMOID node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span
from .interpret import RULES as ORACLE_RULES

from .ir import DType, Node, Op
from .units import DIMENSIONLESS, Dim, describe


class Abort(Exception):
    """A diagnostic was recorded; abandon the current statement."""


@dataclass(frozen=True, slots=True)
class Val:
    """A typed value: a graph ``node`` or, when ``node`` is None, a compile-time ``static`` value."""

    dtype: DType
    shape: tuple[int, ...]
    dim: Dim = DIMENSIONLESS
    node: int | None = None
    static: Any = None
    weak: bool = False  # an untyped literal: adopts the other operand's dtype

    @property
    def is_static(self) -> bool:
        return self.node is None


def static(value, dim: Dim = DIMENSIONLESS) -> Val:
    """A compile-time value: Python scalars, strings and (nested) lists."""
    if isinstance(value, bool):
        return Val(DType.bool, (), dim, static=value)
    if isinstance(value, (int, np.integer)):
        return Val(DType.i64, (), dim, static=int(value), weak=True)
    if isinstance(value, (float, np.floating)):
        return Val(DType.f32, (), dim, static=float(value), weak=True)
    if isinstance(value, np.ndarray):
        dt = {np.dtype("bool"): DType.bool}.get(value.dtype, DType.i64 if value.dtype.kind in "iu" else DType.f32)
        return Val(dt, tuple(value.shape), dim, static=value)
    return Val(DType.f32, (), dim, static=value)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def is_whole_number(x) -> bool:
    """A compile-time size or axis: a number (not a bool, a string or a list) with an integer value."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and float(x).is_integer()


def fmt_type(v: Val) -> str:
    unit_part = "" if v.dim.dimensionless else f" {describe(v.dim)}"
    return f"{v.dtype.value}{fmt_shape(v.shape) if v.shape else ''}{unit_part}"


def norm_axis(b, axis: int, rank: int, span: Span) -> int:
    """``axis`` (possibly negative) of a value of ``rank`` as a non-negative axis; ``b`` (an
    ExprBuilder) reports one out of range."""
    if not -rank <= axis < max(rank, 1):
        b.fail(span, f"axis {axis} is out of range for a value of rank {rank}")
    return axis % rank if rank else 0


_DTYPE_OF = {d.numpy: d for d in DType}


def fold(op: Op, *values, dtype: DType | None = None) -> np.ndarray:
    """The value the reference interpreter gives a node ``op`` on the compile-time ``values``.

    The node's dtype is ``dtype``, or NumPy's result type of the values (of the two branches, for a
    WHERE), so arithmetic happens at the operands' own precision as it did before folding moved here.
    """
    xs = [np.asarray(v) for v in values]
    if dtype is None:
        dtype = _DTYPE_OF[np.result_type(*xs[1:] if op is Op.WHERE else xs)]
    node = Node(op, tuple(range(len(xs))), dtype, tuple(np.broadcast_shapes(*(x.shape for x in xs))))
    return np.asarray(ORACLE_RULES[op](node, xs, [False] * len(xs), None))


def call_args(b, e: A.Call, n_min: int, n_max: int, kw: tuple[str, ...] = ()) -> tuple[list, dict]:
    """A call's positional arguments and its keyword arguments by name, checked against what the
    built-in accepts (``b`` is the ExprBuilder that reports a mistake)."""
    name = e.func.id
    if not n_min <= len(e.args) <= n_max:
        want = f"{n_min}" if n_min == n_max else f"{n_min} to {n_max}"
        b.fail(e.span, f"{name}() takes {want} positional argument{'s' if n_max != 1 else ''}, got {len(e.args)}")
    kwargs = {}
    for k in e.kwargs:
        if k.name not in kw:
            allowed = f"; it accepts {', '.join(kw)}" if kw else ""
            b.fail(k.span, f"{name}() has no argument '{k.name}'{allowed}")
        if k.name in kwargs:
            b.fail(k.span, f"argument '{k.name}' given twice")
        kwargs[k.name] = k.value
    return list(e.args), kwargs
