"""A two-operand EINSUM as one batched matrix product, for the torch rules and generated code.

``torch.einsum`` permutes its operands into ``[batch, free, contracted]`` and calls ``bmm``; when a
permuted operand is not contiguous, CPU ``bmm`` copies it one batch entry at a time (CTM's
neuron-level models, ``adm,mhd->adh`` with 256 neurons as the batch: 256 small copies per call,
1.4 ms against 60 us for one ``bmm`` of contiguous operands).  Here each operand is arranged once
into a contiguous ``[batch..., free..., contracted...]`` (the left one) or ``[batch..., contracted...,
free...]`` (the right one) tensor, and ``contract`` multiplies the two with one ``bmm``.  Generated
code arranges an operand that is fixed for a run (a weight, a loop invariant) once per run; the
interpreter arranges both at every step: the same calls on the same values, so the same bits.

    c = contraction("adm,mhd->adh")
    contract(c, arrange(x, c.perm_a), arrange(w, c.perm_b))  # == torch.einsum("adm,mhd->adh", x, w)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Contraction:
    """How ``contract`` computes one equation: the operands' permutations and the axis counts."""

    equation: str
    perm_a: tuple[int, ...]    # left operand -> [batch..., free_a..., contracted...]
    perm_b: tuple[int, ...]    # right operand -> [batch..., contracted..., free_b...]
    batch: int                 # letters in both operands and the result
    free_a: int                # letters of the left operand and the result only
    free_b: int
    perm_out: tuple[int, ...]  # [batch..., free_a..., free_b...] -> the result's letter order


def contraction(equation: str) -> Contraction | None:
    """``equation`` ("ab,bc->ac", explicit result, no spaces) as a batched product, or None when it
    is not one: other than two operands, a letter repeated within a term, a letter summed within
    one operand, or nothing summed (an outer or elementwise product: ``torch.einsum`` runs those)."""
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or any(len(set(t)) != len(t) for t in terms + [out]):
        return None
    a, b = terms
    if all(c in out for c in a):
        return None
    if any(c not in out and c not in b for c in a) or any(c not in out and c not in a for c in b):
        return None
    if any(c not in a and c not in b for c in out):
        return None
    batch = [c for c in out if c in a and c in b]
    free_a = [c for c in out if c in a and c not in b]
    free_b = [c for c in out if c in b and c not in a]
    summed = [c for c in a if c not in out]
    order = batch + free_a + free_b
    return Contraction(equation, tuple(a.index(c) for c in batch + free_a + summed),
                       tuple(b.index(c) for c in batch + summed + free_b), len(batch), len(free_a), len(free_b),
                       tuple(order.index(c) for c in out))


def arrange(x: torch.Tensor, perm: tuple[int, ...]) -> torch.Tensor:
    """An operand permuted into the layout ``contract`` reads, contiguous (a copy unless it is so already)."""
    return x.permute(perm).contiguous()


def contract(c: Contraction, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The einsum of operands arranged by ``arrange(_, c.perm_a)`` and ``arrange(_, c.perm_b)``.
    Sizes that differ between the operands (a size-1 axis broadcast) go to ``torch.einsum``."""
    nb, na, nf = c.batch, c.free_a, c.free_b
    batch, free_a, summed = a.shape[:nb], a.shape[nb:nb + na], a.shape[nb + na:]
    free_b = b.shape[b.dim() - nf:]
    if b.shape[:nb] != batch or b.shape[nb:b.dim() - nf] != summed:
        order = "".join(chr(97 + i) for i in range(a.dim() + nf))
        left = order[:a.dim()]
        right = order[:nb] + order[nb + na:a.dim()] + order[a.dim():]
        return torch.einsum(f"{left},{right}->{order[:nb + na]}{order[a.dim():]}", a, b).permute(c.perm_out)
    n, k, rows, cols = math.prod(batch), math.prod(summed), math.prod(free_a), math.prod(free_b)
    out = torch.bmm(a.reshape(n, rows, k), b.reshape(n, k, cols))
    return out.reshape(batch + free_a + free_b).permute(c.perm_out)


__all__ = ["Contraction", "contraction", "arrange", "contract"]
