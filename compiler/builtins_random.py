"""Random draws, the built-ins ``uniform``, ``rand``, ``normal`` and ``orthogonal``: initialisers in init
graphs (``Op.RANDOM``, drawn on the host) and, in step equations, counter-based draws (``b.draw``,
``Op.UNIFORM``), bit-identical on every backend.

Normal draws in step equations (``standard_normal``, which white noise also calls) are
``NORMAL`` nodes: the inverse CDF of a 24-bit uniform draw, ``z = Phi^-1((k + 1/2) 2^-24)``, built
only from operations IEEE 754 rounds correctly (``compiler/normal_draws.py``), so they have the
same bits on every backend (TVM in strict mode, where LLVM may not contract a*b+c into an FMA).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .ir import Op
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
    """mean + std * z, z a fresh standard normal draw per element of the target shape."""
    return b.binary("+", mean, b.binary("*", std, standard_normal(b, b.target_shape, span), span), span)


def standard_normal(b: ExprBuilder, shape: tuple[int, ...], span: Span) -> Val:
    """Dimensionless f32 standard normal draws of ``shape``, fresh at every step, with the same bits
    on every backend: a ``NORMAL`` node, the inverse CDF of a 24-bit uniform draw
    (``compiler/normal_draws.py``); |z| <= 5.42."""
    return b.draw(shape, span, Op.NORMAL)


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
