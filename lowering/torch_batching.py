"""Batch alignment for the torch rules: a batched value carries a leading batch axis, an unbatched
one does not; these helpers bring operands to a common layout (``compiler/batching.py``'s rules)."""

from __future__ import annotations

import torch

from nspec.compiler.batching import aligned_shape


def align(xs, bs, rank: int, dtype: torch.dtype | None = None) -> list:
    """Give batched values size-1 axes after the batch axis up to ``rank`` per-sample axes
    (``batching.aligned_shape``); cast to ``dtype`` when given."""
    out = []
    for x, b in zip(xs, bs):
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        if b and x.dim() - 1 < rank:
            x = x.reshape(aligned_shape(x.shape, b, rank))
        out.append(x)
    return out


def with_batch(x, b: bool, batch: int):
    """A value as [B, ...]: batched as is, unbatched broadcast (a view) over the batch."""
    return x if b else x.expand((batch,) + tuple(x.shape))


__all__ = ["align", "with_batch"]
