"""Declared types: ``f32[n, d] mV`` -> (dtype, shape, physical dimension), port merge rules and unit
expressions, as systems, neurons, composites and networks declare them."""

from __future__ import annotations

import math

from nspec.dsl import ast as A

from .expressions import ExprBuilder
from .ir import DType
from .limits import check_tensor
from .systems import MERGES
from .units import DIMENSIONLESS, Dim, describe, is_unit, unit

DTYPES = {"f32": DType.f32, "f64": DType.f64, "i32": DType.i32, "i64": DType.i64, "bool": DType.bool,
          "spike": DType.f32, "float": DType.f32, "int": DType.i64}


def check_merge(b: ExprBuilder, port: A.Port, dtype: DType) -> str:
    """A port's merge monoid (default sum); 'or' only on bool or spike ports."""
    merge = port.merge or "sum"
    if merge not in MERGES:
        b.fail(port.span, f"unknown merge '{merge}'; use one of {', '.join(MERGES)}")
    if merge == "or" and dtype is not DType.bool and port.type.dtype != "spike":
        b.fail(port.span, "merge 'or' needs a bool or spike port")
    return merge


def check_batch_axis(b: ExprBuilder, port: A.Port, shape: tuple) -> int | None:
    """``batch_axis n`` on an output port: an integer from 0 to the port's rank (torch's h_n puts the
    batch at 1 of [num_layers, B, H])."""
    n = port.batch_axis
    if n is None:
        return None
    if port.direction == "in":
        b.fail(port.span, "'batch_axis' applies to output ports (an input's batch axis is always its first)")
    if n != int(n) or not 0 <= n <= len(shape):
        b.fail(port.span, f"'batch_axis {n:g}' must be a whole number from 0 to the port's rank {len(shape)} "
                          f"(the port's shape is {list(shape)})")
    return int(n)


def unit_of(b: ExprBuilder, u: A.UnitExpr) -> tuple[float, Dim]:
    if isinstance(u, A.UnitOne):
        if u.value != 1:
            b.fail(u.span, f"a unit expression may use the number 1 only (as in 1/s), not {u.value:g}")
        return 1.0, DIMENSIONLESS
    if isinstance(u, A.UnitAtom):
        if not is_unit(u.name):
            b.fail(u.span, f"unknown unit '{u.name}'")
        scale, dim = unit(u.name)
        try:
            powered = scale ** u.exponent
        except OverflowError:
            powered = math.inf
        if not 0 < powered < math.inf:  # kHz^400, ms^-400: no float holds the scale
            b.fail(u.span, f"the unit {u.name}^{u.exponent:g} is {scale:g}^{u.exponent:g} in SI units, outside the "
                           "range of a float")
        return powered, dim ** u.exponent
    ls, ld = unit_of(b, u.left)
    rs, rd = unit_of(b, u.right)
    return (ls * rs, ld * rd) if u.op == "*" else (ls / rs, ld / rd)


def unit_text(u: A.UnitExpr) -> str:
    """A unit expression as the spec writes it (``mV``, ``nA/ms``, ``m^2``), for plot labels."""
    if isinstance(u, A.UnitOne):
        return f"{u.value:g}"
    if isinstance(u, A.UnitAtom):
        return u.name if u.exponent == 1 else f"{u.name}^{u.exponent:g}"
    return f"{unit_text(u.left)}{u.op}{unit_text(u.right)}"


def resolve_type(b: ExprBuilder, t: A.TensorType | None, default: DType = DType.f32):
    """(dtype, shape, dim) of a declared type; sizes must be positive compile-time integers."""
    if t is None:
        return default, (), DIMENSIONLESS
    dtype = DTYPES.get(t.dtype, default) if t.dtype else default
    if t.dtype in ("str",):
        b.fail(t.span, "'str' is the type of hyperparameters only")
    shape = []
    for s in t.shape or ():
        n = b.static_int(s, "a size")
        if n < 0:
            b.fail(s.span, f"a size must not be negative, got {n}")
        shape.append(n)
    if too_big := check_tensor(tuple(shape)):  # before any value of this type is built
        b.fail(t.span, too_big)
    dim = unit_of(b, t.unit)[1] if t.unit is not None else DIMENSIONLESS
    return dtype, tuple(shape), dim
