"""Surrogate gradients in torch: the SPIKE op as an autograd function.

The table of surrogates (names, formulas, default arguments) is ``nspec.compiler.surrogates``;
this module evaluates its derivatives on torch tensors and wraps them in a ``torch.autograd``
Function whose forward pass is the strict Heaviside step.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from nspec.compiler.surrogates import DEFAULT_SURROGATE, SURROGATES, Surrogate, resolve

# The math namespace the table's derivatives are written against, for torch tensors.
TORCH_MATH = SimpleNamespace(abs=torch.abs, sigmoid=torch.sigmoid, relu=torch.relu, ones_like=torch.ones_like)


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
        return grad * SURROGATES[ctx.name].derivative(x, *ctx.args, TORCH_MATH), None, None


def spike(x: torch.Tensor, name: str = DEFAULT_SURROGATE[0], args: tuple = DEFAULT_SURROGATE[1]) -> torch.Tensor:
    """Heaviside of ``x`` (strict: 0 at x = 0) whose gradient is the surrogate ``name(*args)``."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return (x > 0).to(x.dtype)  # no graph to build: skip the autograd.Function
    return _Heaviside.apply(x, name, args)


__all__ = ["SURROGATES", "Surrogate", "DEFAULT_SURROGATE", "resolve", "spike"]
