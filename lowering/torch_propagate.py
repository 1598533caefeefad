"""The torch rule of PROPAGATE (spikes through CSR synapses), as ``onnx_propagate.py`` is ONNX's.

``frame.propagate`` picks the form: "event" reads only the rows of neurons that spiked (no
gradient); "dense" multiplies every synapse and sums with ``index_add`` in CSR order, the
reference's summation order, and is differentiable; "auto" takes dense when a gradient or
``torch.compile`` needs it.
"""

from __future__ import annotations

import torch

from nspec.lowering.torch_batching import with_batch
from nspec.runtime.executor import BackendError


def propagate(s, xs, frame):
    """PROPAGATE: each spike adds its row's weights to its targets, event-driven or dense (``frame.propagate``)."""
    spikes, indptr, indices, weights = xs
    bs, bp, bi, bw = s.batched
    if bp or bi:
        raise BackendError(f"{s.node.span}: error: PROPAGATE needs unbatched connectivity (indptr and indices)")
    n_post = int(s.node.attr("n_post"))
    spikes, weights, indptr, indices = spikes.to(s.dtype), weights.to(s.dtype), indptr.long(), indices.long()
    needs_grad = torch.is_grad_enabled() and (spikes.requires_grad or weights.requires_grad)
    mode = frame.propagate
    if mode == "auto":
        mode = "dense" if needs_grad or torch.compiler.is_compiling() else "event"
    if mode == "event":
        return _propagate_events(spikes, indptr, indices, weights, n_post, s.out, bs, bw)
    # Dense: every synapse contributes spikes[pre] * w; index_add sums in CSR order, which keeps
    # the reference's summation order (a non-spiking row adds zeros) and is differentiable.
    rows = frame.cache.get(id(s))  # each synapse's presynaptic row
    if rows is None:
        rows = torch.searchsorted(indptr[1:], torch.arange(indices.shape[0], device=indptr.device), right=True)
        if s.extra:
            frame.cache[id(s)] = rows
    if bw and weights.dim() == 1:
        weights = weights[:, None]  # one weight per trial, shared by its synapses
    contrib = spikes[..., rows] * weights
    lead = contrib.shape[:-1]
    return torch.zeros(lead + (n_post,), dtype=s.dtype, device=contrib.device).index_add(len(lead), indices, contrib)


def _propagate_events(spikes, indptr, indices, weights, n_post, out_batched, bs, bw):
    """Event-driven PROPAGATE: only the rows of neurons that spiked are read (no gradient)."""
    batch = (spikes if bs else weights).shape[0] if out_batched else 1
    s = with_batch(spikes, bs, batch) if out_batched else spikes[None]
    b, i = s.nonzero(as_tuple=True)
    starts = indptr[i]
    counts = indptr[i + 1] - starts
    ends = torch.cumsum(counts, 0)
    position = torch.arange(int(ends[-1]) if ends.shape[0] else 0, device=spikes.device)
    # searchsorted rather than repeat_interleave: the latter always starts a parallel region,
    # which costs milliseconds per step on a busy CPU.
    event = torch.searchsorted(ends, position, right=True)     # the event each synapse belongs to
    k = position - (ends - counts)[event] + starts[event]
    trial = b[event]
    per_synapse = weights.dim() > int(bw)  # else one weight (per trial) shared by every synapse
    if bw:
        wk = weights[trial, k] if per_synapse else weights[trial]
    else:
        wk = weights[k] if per_synapse else weights
    values = wk * s[b, i][event]
    out = torch.zeros(batch * n_post, dtype=values.dtype, device=values.device)
    out = out.index_add(0, trial * n_post + indices[k], values).reshape(batch, n_post)
    return out if out_batched else out[0]


__all__ = ["propagate"]
