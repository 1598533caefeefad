"""Standard normal draws every backend rounds identically: the inverse normal CDF of a 24-bit
uniform draw, written once over a small table of f64 operations (``Reals``), as
``compiler/threefry.py`` writes Threefry once over ``Words``.

``z = Phi^-1((k + 1/2) 2^-24)`` for the uniform draw ``u = k 2^-24`` (``quantile``), by Acklam's
rational approximation (relative error below 1.15e-9): the lower half ``p = u + 2^-25`` directly,
the upper half mirrored (``p = (1 - u) - 2^-25``), both exact, so ``z`` is odd-symmetric and
monotone in ``k`` and ``|z| <= Phi^-1(1 - 2^-25) = 5.42``.  The tail's ``log p`` is range reduction
by selects and multiplications by powers of two (exact), then the atanh series of
``log m = 2 atanh((m - 1) / (m + 1))``; its square root is Newton's iteration from a fixed start
(``newton_sqrt``), because not every backend's sqrt is correctly rounded (PyTorch's vectorised
CPU sqrt, f32 and f64, is not).  Every step is +, -, *, /, a comparison or a select in f64, which
IEEE 754 rounds correctly and no backend's libm touches; the result is rounded once to f32,
within one f32 ulp of the exact quantile.  (f64, not f32: near ``p = P_LOW`` the
central rational's numerator and denominator both nearly cancel, which f32 turns into errors of
1e-4.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# Acklam's inverse normal CDF: a rational function of r = (p - 1/2)^2 in the centre, of
# t = sqrt(-2 log p) in the lower tail p < P_LOW (coefficients highest power first).
CENTRAL_NUM = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
               -3.066479806614716e+01, 2.506628277459239e+00)
CENTRAL_DEN = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
               -1.328068155288572e+01, 1.0)
TAIL_NUM = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
            4.374664141464968e+00, 2.938163982698783e+00)
TAIL_DEN = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00, 1.0)
P_LOW = 0.02425
HALF_ULP = 2.0 ** -25           # (k + 1/2) 2^-24 = k 2^-24 + 2^-25
LOG_STEPS = (16, 8, 4, 2, 1)    # m < 2^-s ? m 2^s : m, in turn, brings p >= 2^-31 into [1/2, 1)
SQRT_HALF = 0.7071067811865476  # m < sqrt(1/2) ? 2m : m, so that |(m - 1) / (m + 1)| <= 0.172
SQRT_START = (1.2, 0.14)        # y0 = 1.2 + 0.14 x, within 35% of sqrt(x) for x = -2 log p in [1.38, 34.7]
SQRT_STEPS = 6                  # Newton's relative error 0.35 -> 0.045 -> 1e-3 -> 5e-7 -> 1e-13 -> f64's rounding
LN2 = 0.6931471805599453
ATANH_SERIES = tuple(1.0 / n for n in (13, 11, 9, 7, 5, 3, 1))  # sum s^2k / (2k + 1), highest first


@dataclass(frozen=True, slots=True)
class Reals:
    """One backend's f64 arithmetic: ``add``, ``sub``, ``mul``, ``div`` (each rounded once, never
    fused), ``less`` (a mask), ``where(mask, x, y)``, ``neg`` and ``const(value)``."""

    add: Callable[[Any, Any], Any]
    sub: Callable[[Any, Any], Any]
    mul: Callable[[Any, Any], Any]
    div: Callable[[Any, Any], Any]
    less: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    neg: Callable[[Any], Any]
    const: Callable[[float], Any]


def horner(r: Reals, coefficients: tuple[float, ...], x):
    """c0 x^n + ... + cn as (((c0 x + c1) x + c2) ...), one rounding per operation."""
    acc = r.mul(x, r.const(coefficients[0]))
    for c in coefficients[1:-1]:
        acc = r.mul(r.add(acc, r.const(c)), x)
    return r.add(acc, r.const(coefficients[-1]))


def newton_sqrt(r: Reals, x):
    """sqrt(x) for x in [1, 36] by Newton's iteration y <- (y + x / y) / 2 from SQRT_START."""
    y = r.add(r.const(SQRT_START[0]), r.mul(x, r.const(SQRT_START[1])))
    for _ in range(SQRT_STEPS):
        y = r.mul(r.add(y, r.div(x, y)), r.const(0.5))
    return y


def portable_log(r: Reals, p):
    """log p for p in [2^-31, 1): p = m 2^e by selects and exact scalings, m in [sqrt(1/2), sqrt(2)),
    then log p = e ln 2 + 2 s (1 + s^2/3 + s^4/5 + ...), s = (m - 1) / (m + 1)."""
    m, e = p, r.const(0.0)
    for step in LOG_STEPS:
        small = r.less(m, r.const(2.0 ** -step))
        m, e = r.where(small, r.mul(m, r.const(2.0 ** step)), m), r.where(small, r.sub(e, r.const(float(step))), e)
    low = r.less(m, r.const(SQRT_HALF))
    m, e = r.where(low, r.mul(m, r.const(2.0)), m), r.where(low, r.sub(e, r.const(1.0)), e)
    s = r.div(r.sub(m, r.const(1.0)), r.add(m, r.const(1.0)))
    series = horner(r, ATANH_SERIES, r.mul(s, s))
    return r.add(r.mul(e, r.const(LN2)), r.mul(r.mul(s, r.const(2.0)), series))


def lower_quantile(r: Reals, p):
    """Acklam's Phi^-1(p) for p in (0, 1/2): the central rational, or the tail's below P_LOW."""
    q = r.sub(p, r.const(0.5))
    q2 = r.mul(q, q)
    central = r.div(r.mul(horner(r, CENTRAL_NUM, q2), q), horner(r, CENTRAL_DEN, q2))
    t = newton_sqrt(r, r.mul(portable_log(r, p), r.const(-2.0)))
    tail = r.div(horner(r, TAIL_NUM, t), horner(r, TAIL_DEN, t))
    return r.where(r.less(p, r.const(P_LOW)), tail, central)


def quantile(r: Reals, u):
    """Phi^-1((k + 1/2) 2^-24) in f64 for the f64 values ``u = k 2^-24`` of uniform draws."""
    lower = r.less(u, r.const(0.5))
    p = r.where(lower, r.add(u, r.const(HALF_ULP)), r.sub(r.sub(r.const(1.0), u), r.const(HALF_ULP)))
    z = lower_quantile(r, p)
    return r.where(lower, z, r.neg(z))


NUMPY_REALS = Reals(add=np.add, sub=np.subtract, mul=np.multiply, div=np.divide, less=np.less,
                    where=np.where, neg=np.negative, const=np.float64)


def normal_numpy(u: np.ndarray) -> np.ndarray:
    """The oracle's normal draws (f32) for uniform draws ``u`` (f32 multiples of 2^-24 in [0, 1))."""
    with np.errstate(all="ignore"):  # the branch a select discards may divide by zero
        return quantile(NUMPY_REALS, np.asarray(u, np.float64)).astype(np.float32)


__all__ = ["CENTRAL_NUM", "CENTRAL_DEN", "TAIL_NUM", "TAIL_DEN", "P_LOW", "HALF_ULP", "LOG_STEPS", "SQRT_HALF", "LN2",
           "ATANH_SERIES", "SQRT_START", "SQRT_STEPS", "Reals", "horner", "newton_sqrt", "portable_log",
           "lower_quantile", "quantile", "NUMPY_REALS",
           "normal_numpy"]
