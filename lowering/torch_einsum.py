"""A two-operand EINSUM as one batched matrix product, for the torch rules and generated code.

``torch.einsum`` permutes its operands into ``[batch, free, contracted]`` and calls ``bmm``, which
copies an operand whose matrices are neither row- nor column-major one batch entry at a time (CTM's
neuron-level models, ``adm,mhd->adh`` with the 256 neurons as the batch: 256 small copies per call,
1.4 ms against 60 us for one ``bmm`` of a contiguous weight).  Here the left operand is permuted to
``[batch..., free..., contracted...]`` and the right one to ``[batch..., contracted..., free...]``;
an operand fixed for a run (a weight, a loop invariant: ``Contraction.fixed``) is also made
contiguous (``arrange``), which generated code does once per run, and ``contract`` copies a
per-step operand only when ``bmm`` would copy it piecewise.  The interpreter arranges and permutes
the same operands at every step: the same calls on the same values, so the same bits.

    c = contraction("adm,mhd->adh", (False, True))
    contract(c, x.permute(c.perm_a), arrange(w, c.perm_b))  # == torch.einsum("adm,mhd->adh", x, w)
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
    fixed: tuple[bool, bool]   # whether each operand is fixed for a run (then ``arrange``d)

    def operands(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both operands as ``contract`` takes them (what the interpreter does at every step)."""
        return tuple(arrange(x, p) if f else x.permute(p) for x, p, f in zip((a, b), (self.perm_a, self.perm_b),
                                                                              self.fixed))


def contraction(equation: str, fixed: tuple[bool, bool] = (False, False)) -> Contraction | None:
    """``equation`` ("ab,bc->ac", explicit result, no spaces) as a batched product of operands
    ``fixed`` or not for a run, or None when it
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
                       tuple(order.index(c) for c in out), tuple(fixed))


def arrange(x: torch.Tensor, perm: tuple[int, ...]) -> torch.Tensor:
    """A fixed operand permuted into the layout ``contract`` reads, contiguous (a copy unless it is so already)."""
    return x.permute(perm).contiguous()


def _matrices(x: torch.Tensor, n: int, rows: int, cols: int) -> torch.Tensor:
    """``x`` as ``n`` matrices ``rows`` x ``cols`` that ``bmm`` reads in place: row- or column-major
    (a size-1 axis has any stride), else a contiguous copy."""
    m = x.reshape(n, rows, cols)
    if m.stride(2) == 1 or m.stride(1) == 1 or rows == 1 or cols == 1:
        return m
    return m.contiguous()


def contract(c: Contraction, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The einsum of operands permuted by ``c.perm_a`` and ``c.perm_b`` (``Contraction.operands``).
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
    out = torch.bmm(_matrices(a, n, rows, k), _matrices(b, n, k, cols))
    return out.reshape(batch + free_a + free_b).permute(c.perm_out)


__all__ = ["Contraction", "contraction", "arrange", "contract"]
