"""The torch rules of the counter-based draws, ``UNIFORM`` and ``NORMAL`` (called as
``rule(site, xs, frame)`` like every rule of ``torch_rules.RULES``): Threefry over int64 tensors
masked to 32 bits, and the inverse-CDF normal over f64 tensors, one rounded op each, so the bits
equal the reference interpreter's (``compiler/threefry.py``, ``compiler/normal_draws.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from nspec.compiler.normal_draws import Reals, quantile
from nspec.compiler.threefry import MASK, UNIFORM_SCALE, UNIFORM_SHIFT, Words, draw_word


# 32-bit words held in int64 tensors and masked after each step (torch has no uint32 arithmetic).
TORCH_WORDS = Words(add=lambda a, b: (a + b) & MASK, mul=lambda a, b: (a * b) & MASK, xor=lambda a, b: a ^ b,
                    rotl=lambda x, r: ((x << r) & MASK) | (x >> (32 - r)), const=lambda v: v & MASK)


def uniform(s, xs, frame):
    a = s.node.attrs
    # per-sample words as [B, 1], or [1, 1] unbatched (sample 0; an unbatched seed is every sample's)
    step, seed = (x.reshape(-1, 1) for x in xs)
    rows = max(step.shape[0], seed.shape[0])
    size = int(np.prod(a.shape))
    sample = torch.arange(rows, dtype=torch.int64, device=step.device)[:, None]
    c1 = (sample * size + torch.arange(size, dtype=torch.int64, device=step.device)[None, :]) & MASK
    x0 = draw_word(TORCH_WORDS, seed & MASK, step & MASK, step >> 32, c1, a.stream, a.streams)
    u = (x0 >> UNIFORM_SHIFT).to(torch.float32) * UNIFORM_SCALE
    return u.reshape((rows,) + tuple(a.shape)) if s.batched[0] or s.batched[1] else u.reshape(a.shape)


# f64 tensors, one rounded op each (torch runs eager elementwise kernels: nothing is fused); constants
# are f64 tensors too, since arithmetic on two Python numbers would give a default-dtype (f32) tensor
TORCH_REALS = Reals(add=torch.add, sub=torch.sub, mul=torch.mul, div=torch.div, less=torch.lt,
                    where=torch.where, neg=torch.neg, const=lambda v: torch.tensor(v, dtype=torch.float64))


def normal(s, xs, frame):
    return quantile(TORCH_REALS, uniform(s, xs, frame).to(torch.float64)).to(torch.float32)


__all__ = ["TORCH_WORDS", "TORCH_REALS", "uniform", "normal"]
