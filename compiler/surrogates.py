"""Surrogate gradients of the SPIKE op, as data: one table used by elaboration and every backend.

A SPIKE is a Heaviside step forward (``heaviside(x) = 1 where x > 0``); for training, its
derivative is replaced by a smooth pseudo-derivative of x (the op's input, e.g. ``v - v_th``) and
the surrogate's arguments.  The formulas follow the common SNN libraries (SuperSpike for
``fast_sigmoid``, SpikingJelly / snnTorch for ``arctan`` and ``sigmoid``), so a spec trained here
behaves like its hand-written original:

====================  ================================================  ========
name                  derivative                                        defaults
====================  ================================================  ========
fast_sigmoid(slope)   1 / (slope |x| + 1)^2                              25
arctan(alpha)         (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)         2
sigmoid(slope)        slope * s * (1 - s),  s = sigmoid(slope x)         25
straight_through      1                                                  --
triangle(width)       max(0, 1 - |x| / width)                            1
====================  ================================================  ========

Each derivative is written once against a small math namespace ``m`` (``abs``, ``sigmoid``,
``relu``, ``ones_like``), so the torch backend (``lowering/surrogates.py``) and a NumPy check
evaluate the same formula.  Elaboration (``compiler/bodies.py``) checks a spec's
``surrogate name(args)`` against this table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Surrogate:
    """A pseudo-derivative ``derivative(x, *args, m)`` (``m``: the math namespace of ``x``'s array
    library) and the arguments used when a spec gives none (their count is the arity)."""

    derivative: Callable[..., Any]
    defaults: tuple[float, ...]


def _sigmoid(x, slope: float, m):
    s = m.sigmoid(slope * x)
    return slope * s * (1 - s)


# Ordered as the language documents them (the order error messages list them in).
SURROGATES: dict[str, Surrogate] = {
    "fast_sigmoid": Surrogate(lambda x, slope, m: 1 / (slope * m.abs(x) + 1) ** 2, (25.0,)),
    "arctan": Surrogate(lambda x, alpha, m: (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2), (2.0,)),
    "sigmoid": Surrogate(_sigmoid, (25.0,)),
    "straight_through": Surrogate(lambda x, m: m.ones_like(x), ()),
    "triangle": Surrogate(lambda x, width, m: m.relu(1 - m.abs(x) / width), (1.0,)),
}

# A spike without a 'surrogate' clause: SuperSpike's fast sigmoid with slope 25.
DEFAULT_SURROGATE: tuple[str, tuple[float, ...]] = ("fast_sigmoid", (25.0,))


def resolve(name: str | None, args) -> tuple[str, tuple[float, ...]]:
    """The surrogate a SPIKE node names, with its defaults filled in; ``KeyError``/``ValueError``
    name what is wrong (the caller turns them into located errors)."""
    if name is None:
        return DEFAULT_SURROGATE
    if name not in SURROGATES:
        raise KeyError(f"unknown surrogate {name!r}; known: {', '.join(SURROGATES)}")
    args = tuple(float(a) for a in (args or ()))
    defaults = SURROGATES[name].defaults
    if len(args) > len(defaults):
        raise ValueError(f"surrogate {name} takes {len(defaults)} argument(s), got {len(args)}")
    return name, args + defaults[len(args):]


__all__ = ["SURROGATES", "Surrogate", "DEFAULT_SURROGATE", "resolve"]
