"""Integration schemes for continuous equations, written as data (Brian2's lesson).

Explicit Runge-Kutta schemes are Butcher tableaus in ``TABLEAUS``; ``explicit_rk`` turns one into
graph nodes given the right-hand side as a function of the state values.  ``exp_euler`` and
``exact`` need the equations' linear structure, which the caller measures (``linear_system``)
by probing the right-hand side numerically: exact integration is then the matrix exponential
of the constant coefficient matrix, computed once at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.linalg import expm

# name -> (a: lower-triangular stage coefficients, b: weights).  x_new = x + dt * sum_i b_i k_i,
# k_i = f(x + dt * sum_j a_ij k_j).
TABLEAUS: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((), (1.0,)),
    "midpoint": (((0.5,),), (0.0, 1.0)),
    "heun": (((1.0,),), (0.5, 0.5)),
    "rk4": (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}
METHODS = ("exact", "exp_euler", *TABLEAUS)


def explicit_rk(method: str, xs: dict, f: Callable[[dict], dict], axpy: Callable, dt: float) -> dict:
    """New values of the states ``xs`` after one step of the explicit scheme ``method``.

    ``f(values) -> derivatives`` evaluates the right-hand sides with the given state values;
    ``axpy(x, [(coef, k), ...])`` builds ``x + sum coef * k`` as graph nodes.
    """
    a, b = TABLEAUS[method]
    ks: list[dict] = []
    for i in range(len(b)):
        if i == 0:
            stage = xs
        else:
            stage = {name: axpy(x, [(dt * a[i - 1][j], ks[j][name]) for j in range(i) if a[i - 1][j]])
                     for name, x in xs.items()}
        ks.append(f(stage))
    return {name: axpy(x, [(dt * b[i], ks[i][name]) for i in range(len(b)) if b[i]]) for name, x in xs.items()}


@dataclass(frozen=True)
class Propagator:
    """x_new = phi @ x + gamma @ b, where dx/dt = A x + b(t) and b is held constant over a step."""

    phi: np.ndarray
    gamma: np.ndarray


def propagator(a: np.ndarray, dt: float) -> Propagator:
    """Exact one-step propagator of dx/dt = A x + b (A constant), via the augmented exponential."""
    k = a.shape[0]
    aug = np.zeros((2 * k, 2 * k))
    aug[:k, :k] = a * dt
    aug[:k, k:] = np.eye(k) * dt
    e = expm(aug)
    return Propagator(e[:k, :k], e[:k, k:])
