"""Surrogate gradients of the SPIKE op: a Heaviside step forward, a smooth pseudo-derivative backward.

Each entry of ``SURROGATES`` gives d spike / dx as a function of x (the SPIKE op's input, e.g.
``v - v_th``) and the surrogate's arguments, with the arguments used when a spec gives none.  The
formulas follow the common SNN libraries (SuperSpike for ``fast_sigmoid``, SpikingJelly / snnTorch
for ``arctan`` and ``sigmoid``), so a spec trained here behaves like its hand-written original:

====================  ================================================  ========
name                  derivative                                        defaults
====================  ================================================  ========
fast_sigmoid(slope)   1 / (slope |x| + 1)^2                              25
arctan(alpha)         (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)         2
sigmoid(slope)        slope * s * (1 - s),  s = sigmoid(slope x)         25
triangle(width)       max(0, 1 - |x| / width)                            1
straight_through      1                                                  --
====================  ================================================  ========
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True, slots=True)
class Surrogate:
    """A pseudo-derivative ``derivative(x, *args)`` and the arguments used when none are given."""

    derivative: Callable[..., torch.Tensor]
    defaults: tuple[float, ...]


def _sigmoid_derivative(x: torch.Tensor, slope: float) -> torch.Tensor:
    s = torch.sigmoid(slope * x)
    return slope * s * (1 - s)


SURROGATES: dict[str, Surrogate] = {
    "fast_sigmoid": Surrogate(lambda x, slope: 1 / (slope * x.abs() + 1) ** 2, (25.0,)),
    "arctan": Surrogate(lambda x, alpha: (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2), (2.0,)),
    "sigmoid": Surrogate(_sigmoid_derivative, (25.0,)),
    "triangle": Surrogate(lambda x, width: (1 - x.abs() / width).clamp(min=0), (1.0,)),
    "straight_through": Surrogate(lambda x: torch.ones_like(x), ()),
}

DEFAULT_SURROGATE = ("fast_sigmoid", (25.0,))


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


class _Heaviside(torch.autograd.Function):
    """heaviside(x) = 1 where x > 0 else 0; backward multiplies by the named surrogate."""

    @staticmethod
    def forward(x: torch.Tensor, name: str, args: tuple) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, name, args = inputs
        ctx.save_for_backward(x)
        ctx.name, ctx.args = name, args

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.name].derivative(x, *ctx.args), None, None


def spike(x: torch.Tensor, name: str = DEFAULT_SURROGATE[0], args: tuple = DEFAULT_SURROGATE[1]) -> torch.Tensor:
    """Heaviside of ``x`` (strict: 0 at x = 0) whose gradient is the surrogate ``name(*args)``."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return (x > 0).to(x.dtype)  # no graph to build: skip the autograd.Function
    return _Heaviside.apply(x, name, args)


__all__ = ["SURROGATES", "Surrogate", "DEFAULT_SURROGATE", "resolve", "spike"]
