"""PROPAGATE: synaptic propagation from CSR connectivity, in a dense or an event-driven form.

``post[j] = sum of w[k] over the synapses k (row i of the CSR) of every presynaptic i that
spiked``.  Two lowerings:

* dense: the ``[n_pre, n_post]`` weight matrix is built once (on the host when indptr, indices
  and weights are constants, else in the graph by a ScatterElements, hoisted out of the time
  loop because it depends only on parameters), then ``post = spikes @ W`` (one MatMul).
* sparse (event-driven): the CSR is padded once to ``[n_pre, L]`` tables (L = the longest row;
  padding slots point at a dummy post neuron ``n_post`` with weight 0).  Each step,
  ``NonZero(spikes)`` lists the neurons that spiked, ``Gather`` takes their rows, and
  ``ScatterElements(reduction="add")`` accumulates the weights into ``post``.  Updates are
  applied in row-major order (spiking neuron ascending, then synapse order), which is the order
  of the reference's ``np.add.at`` over the active synapses, so sums round identically.

Choice (``Options.propagate == "auto"``): dense when the weights are unbatched (not a plastic
state) and the connectivity is dense enough that one MatMul beats gather/scatter whatever the
firing rate, ``nnz / (n_pre * n_post) >= DENSE_MIN_DENSITY``; otherwise sparse.  Strict mode
always uses the sparse form, whose summation order is the reference's.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from nspec.compiler.ir import DType
from nspec.dsl.diagnostics import NspecError, error
from nspec.lowering.onnx_builder import INT64_MAX, ONNX_DTYPE, Emit, Val

DENSE_MIN_DENSITY = 0.1


def choose(options, density: float, weights_batched: bool) -> str:
    """"dense" or "sparse" for one PROPAGATE (see the module docstring)."""
    mode = getattr(options, "propagate", "auto")
    if weights_batched or getattr(options, "strict", False):
        return "sparse"
    if mode != "auto":
        return mode
    return "dense" if density >= DENSE_MIN_DENSITY else "sparse"


def propagate(e: Emit, n, args, b):
    spikes, indptr, indices, weights = args
    host = [e.builder.values.get(a.name) for a in (indptr, indices, weights)]  # constants, known now
    if indptr.batched or indices.batched:
        raise NspecError([error(n.span, "the onnxruntime backend needs connectivity (indptr, indices) that does not "
                                        "change during a run")])
    n_pre, n_post, nnz = spikes.shape[0], int(n.attr("n_post")), indices.shape[0]
    density = nnz / max(n_pre * n_post, 1)
    if choose(e.options, density, weights.batched) == "dense":
        return _dense(e, n, spikes, indptr, indices, weights, host, b)
    return _sparse(e, n, spikes, indptr, indices, weights, host, b)


def _rows(s: Emit, indptr: Val, host_indptr, nnz: int) -> str:
    """The row (presynaptic neuron) of every synapse, int64 [nnz]."""
    if host_indptr is not None:
        return s.const(np.repeat(np.arange(len(host_indptr) - 1), np.diff(host_indptr)).astype(np.int64))
    # mark each row start, then count: rows = cumsum(marks) - 1 over synapse slots (empty rows add twice).
    ptr = s.cast(indptr, DType.i64).name
    starts = s.op("Slice", ptr, s.i64([1]), s.i64([-1]), s.i64([0]))
    marks = s.op("ScatterElements", s.const(np.zeros(nnz + 1, np.int64)), starts,
                 s.op("Expand", s.const(np.int64(1)), s.op("Shape", starts)), axis=0, reduction="add")
    ends = s.op("CumSum", marks, s.const(np.int64(0)))
    return s.op("Slice", ends, s.i64([0]), s.i64([nnz]), s.i64([0]))


def _dense(e: Emit, n, spikes, indptr, indices, weights, host, b):
    s = e.static()
    n_pre, n_post, nnz = spikes.shape[0], int(n.attr("n_post")), indices.shape[0]
    if all(h is not None for h in host):
        w = np.zeros((n_pre, n_post), dtype=n.dtype.numpy)
        rows = np.repeat(np.arange(n_pre), np.diff(host[0]))
        np.add.at(w, (rows, host[1].astype(np.int64)), host[2].astype(n.dtype.numpy))
        matrix = s.const(w)
    else:
        rows = _rows(s, indptr, host[0], nnz)
        flat = s.op("Add", s.op("Mul", rows, s.const(np.int64(n_post))), s.cast(indices, DType.i64).name)
        zeros = s.const(np.zeros(n_pre * n_post, dtype=n.dtype.numpy))
        per_synapse = s.op("Expand", s.cast(weights, n.dtype).name, s.i64([nnz]))  # a shared weight too
        w = s.op("ScatterElements", zeros, flat, per_synapse, axis=0, reduction="add")
        matrix = s.op("Reshape", w, s.i64([n_pre, n_post]))
    return Val(e.op("MatMul", e.cast(spikes, n.dtype).name, matrix), n.dtype, n.shape, b)


def _padded(s: Emit, indptr: Val, host_indptr, nnz: int):
    """Synapse numbers per row, int64 [n_pre, L], padded with ``nnz`` (an extra zero synapse).

    Returns the table's name and its value when the CSR is a constant (else None).
    """
    if host_indptr is not None:
        ptr = host_indptr.astype(np.int64)
        lens = np.diff(ptr)
        slots = np.arange(int(lens.max(initial=0)))
        table = np.where(slots[None, :] < lens[:, None], ptr[:-1, None] + slots[None, :], nnz).astype(np.int64)
        return s.const(table), table
    ptr = s.cast(indptr, DType.i64).name
    starts = s.op("Slice", ptr, s.i64([0]), s.i64([-1]), s.i64([0]))
    lens = s.op("Sub", s.op("Slice", ptr, s.i64([1]), s.i64([INT64_MAX]), s.i64([0])), starts)
    longest = s.op("ReduceMax", lens, keepdims=0)
    slots = s.op("Unsqueeze", s.op("Range", s.const(np.int64(0)), longest, s.const(np.int64(1))), s.i64([0]))
    table = s.op("Add", s.op("Unsqueeze", starts, s.i64([1])), slots)
    inside = s.op("Less", slots, s.op("Unsqueeze", lens, s.i64([1])))
    return s.op("Where", inside, table, s.const(np.int64(nnz))), None


def _padded_values(s: Emit, table: tuple, values: Val, host, pad, dtype) -> str:
    """``append(values, pad)[table]``: a per-slot table (folded on the host when both are constants)."""
    name, host_table = table
    if host_table is not None and host is not None:
        return s.const(np.concatenate([host.astype(dtype), np.asarray([pad], dtype)])[host_table])
    ext = s.op("Concat", values.name, s.const(np.asarray([pad], dtype)), axis=0)
    return s.op("Gather", ext, name)


def _sparse(e: Emit, n, spikes, indptr, indices, weights, host, b):
    s = e.static()
    n_post, nnz = int(n.attr("n_post")), indices.shape[0]
    shared = weights.shape == ()  # one weight for every synapse (per sample when batched)
    table = _padded(s, indptr, host[0], nnz)
    # the post neuron of every slot; padding goes to a dummy neuron n_post, dropped at the end.
    post_table = _padded_values(s, table, s.cast(indices, DType.i64), host[1], n_post, np.int64)
    if b and not spikes.batched:
        spikes = e.to_batch(spikes)
    spikes = e.cast(spikes, n.dtype)
    weights = e.cast(weights, n.dtype)
    if spikes.batched:  # events (sample, neuron), row-major; sample s writes to post slots s * (n_post + 1) + j
        events = e.op("NonZero", spikes.name)
        trial = e.op("Gather", events, e.const(np.int64(0)), axis=0)
        sample = e.op("Unsqueeze", trial, e.i64([1]))
        rows = e.op("Gather", events, e.const(np.int64(1)), axis=0)
        value = e.op("GatherND", spikes.name, e.op("Transpose", events, perm=[1, 0]))
        offset = e.op("Mul", sample, e.const(np.int64(n_post + 1)))
        post = e.op("Add", e.op("Gather", post_table, rows), offset)
        zeros = e.op("ConstantOfShape", e.op("Mul", e.batch(), e.i64([n_post + 1])),
                     value=helper.make_tensor("value", ONNX_DTYPE[n.dtype], [1], [0]))
    else:
        rows = e.op("Squeeze", e.op("NonZero", spikes.name), e.i64([0]))
        value = e.op("Gather", spikes.name, rows)
        post = e.op("Gather", post_table, rows)
        zeros = e.const(np.zeros(n_post + 1, n.dtype.numpy))
    value = e.op("Unsqueeze", value, e.i64([1]))  # [events, 1]
    # the weight of every slot of every event, [events, L] (or one per event when shared)
    if shared:
        # batched weights imply batched spikes (they were broadcast above), so `trial` exists
        w = e.op("Unsqueeze", e.op("Gather", weights.name, trial), e.i64([1])) if weights.batched else weights.name
    elif weights.batched:
        flat = e.op("Reshape", e.op("Concat", weights.name, e.zeros(n.dtype, (1,), True), axis=1), e.i64([-1]))
        w = e.op("Gather", flat, e.op("Add", e.op("Gather", table[0], rows),
                                      e.op("Mul", sample, e.const(np.int64(nnz + 1)))))
    else:
        w = e.op("Gather", _padded_values(s, table, weights, host[2], 0, n.dtype.numpy), rows)
    # w[k] * spikes[i] as the reference computes it (graded spikes scale their weights)
    contrib = e.op("Expand", e.op("Mul", w, value), e.op("Shape", post))
    out = e.op("ScatterElements", zeros, e.op("Reshape", post, e.i64([-1])), e.op("Reshape", contrib, e.i64([-1])),
               axis=0, reduction="add")
    if spikes.batched:
        out = e.op("Reshape", out, e.i64([-1, n_post + 1]))
    return Val(e.op("Slice", out, e.i64([0]), e.i64([n_post]), e.i64([spikes.batched])), n.dtype, n.shape, b)
