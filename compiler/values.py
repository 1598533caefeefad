"""Typed values of expressions, and compile-time folding by the oracle's rules.

A ``Val`` is what every expression elaborates to: a compile-time value (``static``) or a node of
the graph being built, always with a dtype, a per-sample shape and a physical dimension.  This
module is the leaf both ``expressions.py`` (the builder) and ``builtins.py`` (the built-in
functions) stand on.  ``fold`` computes a compile-time value with the reference interpreter's own
rule for the op, so a folded ``sigmoid(2)`` is exactly what the oracle computes for a SIGMOID node.
"""

from __future__ import annotations

import math
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

# ---------------------------------------------------------------- compile-time ranges
# An iN holds -2^bits .. 2^bits - 1.  The run's integer arithmetic wraps around silently, so a
# compile-time integer (a literal, a parameter, a folded result) outside its dtype is refused.
INT_BITS = {DType.i64: 63, DType.i32: 31}
_FOLDED = {"+": np.add, "-": np.subtract, "*": np.multiply, "^": np.power}  # the ops that can overflow


def int_fits(n: int, dtype: DType = DType.i64) -> bool:
    return -2 ** INT_BITS[dtype] <= n < 2 ** INT_BITS[dtype]


def int_range(dtype: DType = DType.i64) -> str:
    """``dtype``'s range in words, for messages."""
    bits = INT_BITS[dtype]
    return f"the range of {dtype.value}, -2^{bits} to 2^{bits} - 1 ({-2 ** bits} to {2 ** bits - 1})"


def fmt_int(n: int | float) -> str:
    """An integer for a message, "the integer 123", or its size when its digits are too many to read."""
    if isinstance(n, float):  # a literal of hundreds of digits (dsl/transform.py reads it as inf)
        return "an integer of hundreds of digits"
    if n.bit_length() <= 200:
        return f"the integer {n}"
    return f"an integer of about {int(n.bit_length() * math.log10(2)) + 1} digits"


def outside_int(value, dtype: DType = DType.i64, floats: bool = False) -> str | None:
    """The first integer (with ``floats``, number) of a compile-time value (a scalar, a nested list or an
    array) that is outside ``dtype``'s range, as a message's subject, or None."""
    if isinstance(value, (list, tuple)):
        return next((n for n in (outside_int(v, dtype, floats) for v in value) if n is not None), None)
    if isinstance(value, np.ndarray):  # an int64 array fits i64; others are checked item by item
        checked = value.dtype == object or (value.dtype.kind in "iu" and dtype is not DType.i64) or \
            (value.dtype.kind == "f" and floats)
        return outside_int(value.tolist(), dtype, floats) if checked else None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and not int_fits(int(value), dtype):
        return fmt_int(int(value))
    bound = 2.0 ** INT_BITS[dtype]
    if floats and isinstance(value, (float, np.floating)) and not -bound <= value < bound:  # nan too
        return f"the number {value:g}"
    return None


def int_overflow(op: str, a, b, dtype: DType) -> str | None:
    """``x op y = z`` for the first element of the compile-time integers ``a op b`` whose exact value is
    outside ``dtype``'s range, or None when every element fits (``a`` and ``b`` fit in int64)."""
    if op not in _FOLDED:
        return None
    x, y = np.atleast_1d(np.asarray(a, dtype=np.int64)), np.atleast_1d(np.asarray(b, dtype=np.int64))
    with np.errstate(all="ignore"):  # a float64 estimate picks the elements to compute exactly
        estimate = _FOLDED[op](x.astype(np.float64), y.astype(np.float64))
    x, y, estimate = np.broadcast_arrays(x, y, estimate)
    for at in zip(*np.nonzero(~(np.abs(estimate) < 2.0 ** (INT_BITS[dtype] - 1)))):
        p, q, rough = int(x[at]), int(y[at]), float(estimate[at])
        if op == "^" and not abs(rough) < 2.0 ** 70:  # too big to compute exactly, and far outside
            value = f"about {rough:.3g}" if math.isfinite(rough) else "more than 1e308"
        else:
            exact = {"+": p + q, "-": p - q, "*": p * q}[op] if op != "^" else p ** q
            if int_fits(exact, dtype):
                continue
            value = str(exact)  # at most 2^128 (a product) or 2^70 (a power)
        return f"{p} {op} {q} = {value}"
    return None


def float_overflow(op: str, a, b, value) -> str | None:
    """``x op y`` for the first element of the folded ``value`` that overflowed to inf from finite
    operands (``0.0 ^ -1`` is a division by zero, as IEEE says, not an overflow), or None."""
    if op not in _FOLDED:
        return None
    v = np.asarray(value)
    if v.dtype.kind != "f" or np.isfinite(v).all():
        return None
    x, y, v = np.broadcast_arrays(np.asarray(a, dtype=v.dtype), np.asarray(b, dtype=v.dtype), v)
    bad = np.flatnonzero(np.isinf(v) & np.isfinite(x) & np.isfinite(y) & ((x != 0) if op == "^" else True))
    return f"{x.flat[bad[0]]:g} {op} {y.flat[bad[0]]:g}" if bad.size else None


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
