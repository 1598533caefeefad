"""Random draws, the built-ins ``uniform``, ``rand``, ``normal`` and ``orthogonal``: initialisers in init
graphs (``Op.RANDOM``, drawn on the host) and, in step equations, counter-based draws (``b.draw``,
``Op.UNIFORM``; ``normal`` by Box-Muller), bit-identical on every backend for uniform draws.
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

def random_draw(b: ExprBuilder, e: A.Call, dist: str, defaults: tuple[float, float]) -> Val:
    if not b.allow_random and (b.draw is None or dist == "orthogonal"):
        b.fail(e.span, f"{e.func.id}() draws random numbers, which is allowed only in initial values "
                       "(param and state declarations)" + (" and in step equations" if dist != "orthogonal" else ""))
    args, _ = call_args(b, e, 0, 2)
    vals = [b.expr(a) for a in args] + [static(d) for d in defaults[len(args):]]
    if dist == "uniform" and vals[0].dim != vals[1].dim:
        b.fail(e.span, f"uniform(lo, hi): the bounds have different units ({describe(vals[0].dim)}, "
                       f"{describe(vals[1].dim)})")
    if dist == "normal" and vals[1].dim != vals[0].dim and args:
        b.fail(e.span, "normal(mean, std): mean and std must have the same unit")
    dim = vals[0].dim if args else DIMENSIONLESS
    for v, a in zip(vals, list(args) + [None, None]):
        if v.shape != ():
            b.fail(a.span if a is not None else e.span, f"{e.func.id}() takes scalar arguments")
    _check_static_bounds(b, e, dist, vals)
    if not b.allow_random:
        return STEP_DRAWS[dist](b, vals[0], vals[1], e.span)
    ins = [b.cast(v, b.float_dtype, e.span) if not v.is_static else replace(v, dtype=b.float_dtype) for v in vals]
    return b.add(Op.RANDOM, ins, b.float_dtype, b.target_shape, dim, e.span, (("dist", dist),))


def _check_static_bounds(b: ExprBuilder, e: A.Call, dist: str, vals: list[Val]) -> None:
    """Bounds known at compile time must describe a distribution in the float type the draw has."""
    if not all(v.is_static and np.asarray(v.static).dtype.kind in "biuf" and np.ndim(v.static) == 0 for v in vals):
        return  # a run-time bound, or a mistake the cast to float reports
    with np.errstate(over="ignore", invalid="ignore"):
        a, c = (float(np.asarray(v.static, dtype=np.float64).astype(b.float_dtype.numpy)) for v in vals)
    if dist == "uniform" and not (math.isfinite(a) and math.isfinite(c) and a <= c):
        b.fail(e.span, f"{e.func.id}(lo, hi) needs finite bounds with lo <= hi in {b.float_dtype.value}, "
                       f"got lo = {vals[0].static!r}, hi = {vals[1].static!r}")
    if dist == "normal" and not (math.isfinite(a) and math.isfinite(c) and c >= 0):
        b.fail(e.span, f"normal(mean, std) needs a finite mean and a finite std >= 0 in {b.float_dtype.value}, "
                       f"got mean = {vals[0].static!r}, std = {vals[1].static!r}")


def step_uniform(b: ExprBuilder, lo: Val, hi: Val, span) -> Val:
    """lo + (hi - lo) * u, u a fresh f32 draw in [0, 1) per element of the target shape."""
    u = b.draw(b.target_shape, span)
    return b.binary("+", lo, b.binary("*", b.binary("-", hi, lo, span), u, span), span)


def step_normal(b: ExprBuilder, mean: Val, std: Val, span) -> Val:
    """Box-Muller from two uniform draws: sqrt(-2 ln(1 - u1)) cos(2 pi u2) (1 - u1 > 0, so finite)."""
    u1, u2 = b.draw(b.target_shape, span), b.draw(b.target_shape, span)
    shape = u1.shape
    log = b.add(Op.LOG, [b.binary("-", static(1.0), u1, span)], DType.f32, shape, DIMENSIONLESS, span)
    r = b.add(Op.SQRT, [b.binary("*", static(-2.0), log, span)], DType.f32, shape, DIMENSIONLESS, span)
    c = b.add(Op.COS, [b.binary("*", static(2 * math.pi), u2, span)], DType.f32, shape, DIMENSIONLESS, span)
    return b.binary("+", mean, b.binary("*", std, b.binary("*", r, c, span), span), span)


STEP_DRAWS = {"uniform": step_uniform, "normal": step_normal}  # random draws inside step equations


def rand(b: ExprBuilder, e: A.Call) -> Val:
    """Brian2's rand(): a uniform draw in [0, 1)."""
    return random_draw(b, e, "uniform", (0.0, 1.0))


def uniform(b: ExprBuilder, e: A.Call) -> Val:
    return random_draw(b, e, "uniform", (0.0, 1.0))


def normal(b: ExprBuilder, e: A.Call) -> Val:
    return random_draw(b, e, "normal", (0.0, 1.0))


def orthogonal(b: ExprBuilder, e: A.Call) -> Val:
    if len(b.target_shape) != 2:
        b.fail(e.span, "orthogonal() initialises a matrix; the declared type must be 2-D")
    return random_draw(b, e, "orthogonal", (1.0, 0.0))
