"""Random draws, the built-ins ``uniform``, ``rand``, ``normal``, ``orthogonal`` and ``binomial``:
initialisers in init graphs (``Op.RANDOM``, drawn on the host) and, in step equations, counter-based
draws (``b.draw``, ``Op.UNIFORM``; ``binomial`` by inverse transform against a CDF folded at compile
time), bit-identical on every backend.

Normal draws in step equations (``standard_normal``, which white noise also calls) are
``NORMAL`` nodes: the inverse CDF of a 24-bit uniform draw, ``z = Phi^-1((k + 1/2) 2^-24)``, built
only from operations IEEE 754 rounds correctly (``compiler/normal_draws.py``), so they have the
same bits on every backend (TVM in strict mode, where LLVM may not contract a*b+c into an FMA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

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


# ---------------------------------------------------------------- binomial draws in step equations
BINOMIAL_TAIL = 1e-12  # the probability mass beyond the unrolled bound K that the draw lumps onto K
BINOMIAL_MAX_K = 256  # a larger bound switches to the normal approximation (n p above about 155)
BINOMIAL_MAX_N = 2**24  # counts are f32: whole numbers are exact up to 2**24
FINE = 2.0**-24  # u = u1 + u2 * 2**-24: a uniform draw in [0, 1) on a grid of 2**-48, exact in f64


@dataclass(frozen=True, slots=True)
class BinomialPlan:
    """How ``binomial(n, p)`` is drawn, decided at compile time in float64.

    Exact (``cdf`` non-empty): X = #{k : u >= cdf[k]} for one uniform u, the inverse transform of
    Binomial(n, q), q = min(p, 1 - p), truncated at K = len(cdf): X = K takes the mass P(X >= K) <
    ``BINOMIAL_TAIL`` (so the draws of X > K it stands for are rarer still); n - X when ``flip``.
    Otherwise the normal approximation: clip(floor(mean + std z + 1/2), 0, n) with z a standard
    normal draw (Brian2's choice for n p > 5 and n (1 - p) > 5).
    """

    n: int
    flip: bool
    cdf: tuple[float, ...]
    mean: float
    std: float


def binomial_plan(n: int, p: float) -> BinomialPlan:
    """The plan of a draw from Binomial(n, p): the CDF P(X <= k) by the pmf recursion
    pmf(k + 1) = pmf(k) (n - k) / (k + 1) q / (1 - q) from pmf(0) = (1 - q)^n, up to the first K
    whose tail P(X >= K) = 1 - P(X <= K - 1) is below ``BINOMIAL_TAIL`` (or K = n)."""
    q = min(p, 1.0 - p)
    mean, std = n * p, math.sqrt(n * p * (1.0 - p))
    if n == 0 or q == 0.0:
        return BinomialPlan(n, p > 0.5, (), 0.0, 0.0)
    pmf = math.exp(n * math.log1p(-q))
    cdf: list[float] = []
    total = 0.0
    for k in range(min(n, BINOMIAL_MAX_K + 1)):
        total += pmf
        cdf.append(total)
        if 1.0 - total < BINOMIAL_TAIL:
            return BinomialPlan(n, p > 0.5, tuple(cdf), mean, std)
        pmf *= (n - k) / (k + 1) * q / (1.0 - q)
    if n <= BINOMIAL_MAX_K:  # every threshold below n is unrolled: X never exceeds n
        return BinomialPlan(n, p > 0.5, tuple(cdf), mean, std)
    return BinomialPlan(n, False, (), mean, std)


def binomial_exact(b: ExprBuilder, plan: BinomialPlan, shape: tuple[int, ...], span) -> Val:
    """Inverse transform: compares of one f64 uniform with the folded CDF, summed over the thresholds."""
    u1, u2 = (b.cast(b.draw(shape, span), DType.f64, span) for _ in range(2))
    u = b.add(Op.ADD, [u1, b.add(Op.MUL, [u2, Val(DType.f64, (), static=FINE)], DType.f64, shape, DIMENSIONLESS,
                                 span)], DType.f64, shape, DIMENSIONLESS, span)
    column = b.add(Op.RESHAPE, [u], DType.f64, shape + (1,), DIMENSIONLESS, span)
    cdf = Val(DType.f64, (len(plan.cdf),), static=np.asarray(plan.cdf, np.float64))
    above = b.add(Op.GE, [column, cdf], DType.bool, shape + (len(plan.cdf),), DIMENSIONLESS, span)
    count = b.add(Op.SUM, [b.cast(above, DType.f32, span)], DType.f32, shape, DIMENSIONLESS, span,
                  (("axes", (len(shape),)), ("keepdims", False)))
    return b.binary("-", static(float(plan.n)), count, span) if plan.flip else count


def binomial_normal(b: ExprBuilder, plan: BinomialPlan, shape: tuple[int, ...], span) -> Val:
    """The normal approximation, rounded to the nearest count in [0, n]."""
    z = standard_normal(b, shape, span)
    x = b.binary("+", b.binary("*", static(plan.std), z, span), static(plan.mean + 0.5), span)
    rounded = b.add(Op.FLOOR, [x], DType.f32, shape, DIMENSIONLESS, span)
    low = b.binary_raw(Op.MAXIMUM, rounded, static(0.0), span)
    return b.binary_raw(Op.MINIMUM, low, static(float(plan.n)), span)


def binomial(b: ExprBuilder, e: A.Call) -> Val:
    """binomial(n, p): the number of successes of n trials of probability p, a fresh f32 count per
    element and step; n and p are compile-time constants (``BinomialPlan``)."""
    if b.draw is None:
        b.fail(e.span, "binomial() draws a count in step equations (next, spike conditions, resets, events); "
                       "it cannot initialise a value")
    (n_arg, p_arg), _ = call_args(b, e, 2, 2)
    n = b.expr(n_arg)
    if not n.is_static or isinstance(n.static, (str, list, bool)) or np.ndim(n.static) != 0 \
            or not float(n.static).is_integer() or not n.dim.dimensionless:
        b.fail(n_arg.span, "binomial(n, p): n must be a whole number known at compile time (a template parameter, "
                           "a hyperparameter or a literal)")
    if not 0 <= int(n.static) <= BINOMIAL_MAX_N:
        b.fail(n_arg.span, f"binomial(n, p): n must be in 0..{BINOMIAL_MAX_N} (2**24, the largest count f32 "
                           f"holds exactly), got {int(n.static)}")
    p = b.expr(p_arg)
    if not p.is_static or isinstance(p.static, (str, list, bool)) or np.ndim(p.static) != 0:
        b.fail(p_arg.span, "binomial(n, p): p must be one number known at compile time, like rate * dt")
    if not p.dim.dimensionless:
        b.fail(p_arg.span, f"binomial(n, p): p must be dimensionless, got {describe(p.dim)} (write rate * dt)")
    if not 0.0 <= float(p.static) <= 1.0:
        b.fail(p_arg.span, f"binomial(n, p): p must be in [0, 1], got {float(p.static):g}")
    plan = binomial_plan(int(n.static), float(p.static))
    shape = tuple(b.target_shape)
    if not plan.cdf and plan.std == 0.0:  # p = 0 or 1, or n = 0: the count is certain
        return b.add(Op.BROADCAST, [static(float(plan.n if plan.flip else 0))], DType.f32, shape, DIMENSIONLESS,
                     e.span) if shape else static(float(plan.n if plan.flip else 0))
    return (binomial_exact if plan.cdf else binomial_normal)(b, plan, shape, e.span)
