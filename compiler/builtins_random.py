"""Random draws, the built-ins ``uniform``, ``rand``, ``normal`` and ``orthogonal``: initialisers in init
graphs (``Op.RANDOM``, drawn on the host) and, in step equations, counter-based draws (``b.draw``,
``Op.UNIFORM``; ``normal`` by Box-Muller), bit-identical on every backend for uniform draws.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

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
    if not b.allow_random:
        return STEP_DRAWS[dist](b, vals[0], vals[1], e.span)
    ins = [b.cast(v, b.float_dtype, e.span) if not v.is_static else replace(v, dtype=b.float_dtype) for v in vals]
    return b.add(Op.RANDOM, ins, b.float_dtype, b.target_shape, dim, e.span, (("dist", dist),))


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


def standard_normal(b: ExprBuilder, shape: tuple[int, ...], span) -> Val:
    """N(0, 1) f32 draws of ``shape``, fresh every step (temporary: Box-Muller, until the inverse-CDF normal lands)."""
    return step_normal(type(b)(b.g, b.diags, b.lookup, b.float_dtype, b.allow_random, tuple(shape), b.draw),
                       static(0.0), static(1.0), span)


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
