"""Compile-time sequences, the built-ins ``arange``, ``range``, ``reversed``, ``linspace`` and ``logspace``:
lists known while compiling (``for`` loops, sizes, widths), refused before they are built when they
would hold more than ``MAX_COMPILE_TIME_ELEMENTS`` values.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from nspec.dsl import ast as A

from .ir import DType, Op
from .units import DIMENSIONLESS, describe
from .values import Val, call_args, static

if TYPE_CHECKING:
    from .expressions import ExprBuilder

MAX_COMPILE_TIME_ELEMENTS = 2**26  # a compile-time list holds at most this many values (512 MiB of int64)


def check_count(b: ExprBuilder, span, what: str, count: int) -> None:
    """Refuse a compile-time list too long to build, before building it."""
    if count > MAX_COMPILE_TIME_ELEMENTS:
        size = f"{count:,}" if count < 10**21 else f"about 10^{len(str(count)) - 1}"  # not 300 digits of 1e308
        b.fail(span, f"{what} would build a compile-time list of {size} values; at most "
                     f"{MAX_COMPILE_TIME_ELEMENTS:,} (2**26)")


def arange(b: ExprBuilder, e: A.Call) -> Val:
    (n,), _ = call_args(b, e, 1, 1)
    k = b.static_int(n, "arange()'s size")
    check_count(b, n.span, "arange()", k)
    return static(np.arange(k, dtype=np.int64))


def range_list(b: ExprBuilder, e: A.Call) -> Val:
    """Python's range(stop) / range(start, stop[, step]): a compile-time list of ints (``for`` loops)."""
    args, _ = call_args(b, e, 1, 3)
    bounds = [b.static_int(a, f"range()'s {what}") for a, what in
              zip(args, ("stop",) if len(args) == 1 else ("start", "stop", "step"))]
    if len(bounds) == 3 and bounds[2] == 0:
        b.fail(args[2].span, "range()'s step must not be 0")
    start, stop, step = (0, *bounds, 1) if len(bounds) == 1 else (*bounds, 1) if len(bounds) == 2 else bounds
    # len(range(...)) of huge bounds overflows a C ssize_t: count in Python ints, then refuse before building
    check_count(b, e.span, "range()", max(0, (stop - start + step - (1 if step > 0 else -1)) // step))
    return static(np.arange(*bounds, dtype=np.int64))


def reversed_list(b: ExprBuilder, e: A.Call) -> Val:
    """The items of a compile-time list, last first: ``for i in reversed(range(n))``."""
    (items,), _ = call_args(b, e, 1, 1)
    v = b.expr(items)
    if not v.is_static or np.ndim(v.static) != 1:
        b.fail(items.span, "reversed() takes a list known at compile time, like range(n) or [1, 2, 3]")
    return replace(v, static=list(v.static)[::-1] if isinstance(v.static, list) else np.asarray(v.static)[::-1].copy())


def linspace(b: ExprBuilder, e: A.Call) -> Val:
    """``linspace(a, b)`` fills the declared type; ``linspace(a, b, n)`` is a list of n values (float64,
    like numpy's: ``int(linspace(256, 16, 5))`` are the CTM U-Net's widths)."""
    args, _ = call_args(b, e, 2, 3)
    lo, hi = args[:2]
    lv, hv = b.static_value(lo, "linspace()'s start"), b.static_value(hi, "linspace()'s stop")
    if lv.dim != hv.dim:
        b.fail(e.span, f"{e.func.id}(): the bounds have different units")
    if len(args) == 3:
        n = b.static_int(args[2], f"{e.func.id}()'s number of values")
        if n < 0:
            b.fail(args[2].span, f"{e.func.id}() needs a number of values >= 0, got {n}")
        check_count(b, args[2].span, f"{e.func.id}()", n)
        if e.func.id == "logspace" and (float(lv.static) <= 0 or float(hv.static) <= 0):
            b.fail(e.span, "logspace(a, b) needs positive bounds")
        values = (np.linspace(float(lv.static), float(hv.static), n) if e.func.id == "linspace" else
                  np.logspace(math.log10(float(lv.static)), math.log10(float(hv.static)), n))
        return static(values, lv.dim)
    n = int(np.prod(b.target_shape)) if b.target_shape else 1
    if e.func.id == "linspace":
        values = np.linspace(float(lv.static), float(hv.static), n)
    else:
        if float(lv.static) <= 0 or float(hv.static) <= 0:
            b.fail(e.span, "logspace(a, b) needs positive bounds")
        values = np.logspace(math.log10(float(lv.static)), math.log10(float(hv.static)), n)
    return static(values.reshape(b.target_shape).astype(np.float32), lv.dim)
