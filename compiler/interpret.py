"""The NumPy interpreter of the IR: the meaning of every op, and the oracle every backend is tested against.

One rule per ``Op`` (``RULES``) maps a node and its input values to its value.  A rule is called as
``rule(node, xs, bs, ctx)``: ``xs`` are the input arrays, ``bs`` says which of them carry the
runtime's leading batch axis (the batching rule of ``ir.batched``, applied through
``compiler/batching.py``), ``ctx`` holds the argument values, the batch size, the random
generator of init graphs and the compiled LOOP bodies.

A graph is compiled once into a ``Plan``: its nodes in topological order, each with its rule, its
input indices and its static batched flags, so running a step costs one rule call per node.
``evaluate`` runs a graph once.  This module is pure compiler code (no runtime import), so
passes such as ``fold_constants`` and the elaborator's probes evaluate with the oracle's own
rules; ``runtime/reference.py`` runs it over time.

Numerics: arithmetic is done in the node's dtype (inputs are cast to it), every value is checked
against the node's declared dtype and shape, and PROPAGATE accumulates ``spikes[i] * weights[k]``
in the node's dtype in CSR order (presynaptic index ascending, then synapse index), the order a
strict-mode backend must follow to reproduce spike trains exactly.
"""

from __future__ import annotations

import functools

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .batching import (LoopSpec, Until, aligned_shape, batch_size, batched_equation, batched_perm, iterate, sliced,
                       stored_axes, stored_axis, stored_shape)
from .ir import DType, Graph, IRError, Node, Op, batched
from .normal_draws import normal_numpy
from .threefry import uniform_numpy


class EvaluationError(IRError):
    """A node could not be evaluated, or its value disagrees with its declared dtype or shape."""


@dataclass
class Context:
    """What rules may read besides their inputs.

    ``env`` maps an ARG path to its value; ``batch`` is the batch size B (None when nothing is
    batched); ``rng`` draws RANDOM values; ``plans`` caches compiled LOOP bodies across steps;
    ``check_finite`` makes the first node that turns finite inputs into inf or nan an error.
    """

    env: dict[str, np.ndarray]
    batch: int | None = None
    rng: np.random.Generator | None = None
    plans: dict[tuple[int, frozenset], tuple[Graph, "Plan"]] = field(default_factory=dict)
    check_finite: bool = False

    def body_plan(self, body: Graph, unbatched: frozenset) -> "Plan":
        """The compiled plan of a LOOP body for this pattern of batched names (compiled once)."""
        key = (id(body), unbatched)
        if key not in self.plans:
            # The graph is kept in the value so that its id cannot be reused while cached.
            self.plans[key] = (body, Plan(body, unbatched))
        return self.plans[key][1]


Rule = Callable[[Node, list, list, Context], Any]
NUMPY = {d: d.numpy for d in DType}  # looked up once per rule call, so kept as a plain dict


# ---------------------------------------------------------------- batching helpers
def _align(xs, bs, rank: int) -> list:
    """Batched values with size-1 axes after the batch axis up to per-sample ``rank``, so that
    NumPy's right-aligned broadcasting pairs per-sample axes (``batching.aligned_shape``)."""
    return [x.reshape(aligned_shape(x.shape, b, rank)) if b and x.ndim - 1 < rank else x for x, b in zip(xs, bs)]


def _with_batch(x, b: bool, batch: int):
    """A value as [B, ...]: a batched value as is, an unbatched one broadcast over the batch."""
    return x if b else np.broadcast_to(x, (batch,) + x.shape)


# ---------------------------------------------------------------- leaves
def _const(node, xs, bs, ctx):
    return node.attr("value")


def _arg(node, xs, bs, ctx):
    return ctx.env[node.attr("name")]


# ---------------------------------------------------------------- elementwise
def _arith(fn) -> Rule:
    """A binary op computed in the node's dtype."""

    def rule(node, xs, bs, ctx):
        dt = NUMPY[node.dtype]
        a, b = _align([x.astype(dt, copy=False) for x in xs], bs, len(node.shape))
        return fn(a, b)

    return rule


def _divide(fn) -> Rule:
    """DIV or MOD in the node's dtype; an integer divisor of 0 counts as 1 (see ``nonzero_divisor``)."""

    def rule(node, xs, bs, ctx):
        dt = NUMPY[node.dtype]
        a, b = _align([x.astype(dt, copy=False) for x in xs], bs, len(node.shape))
        return fn(a, nonzero_divisor(b))

    return rule


def _compare(fn) -> Rule:
    """A binary op on the operands' own dtypes (comparisons and logic give bool)."""

    def rule(node, xs, bs, ctx):
        a, b = _align(xs, bs, len(node.shape))
        return fn(a, b)

    return rule


def _unary(fn) -> Rule:
    def rule(node, xs, bs, ctx):
        return fn(xs[0])

    return rule


@functools.cache
def _erf():
    from scipy import special  # on first use: loading scipy.special costs a run that never needs it ~0.1 s

    return special.erf


def _sigmoid(x):
    # exp of a non-positive argument never overflows; both branches are exact rewrites of 1/(1+e^-x).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), which cannot overflow.
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _where(node, xs, bs, ctx):
    c, a, b = _align(xs, bs, len(node.shape))
    dt = NUMPY[node.dtype]
    return np.where(c, a.astype(dt, copy=False), b.astype(dt, copy=False))


def _cast(node, xs, bs, ctx):
    return xs[0].astype(NUMPY[node.dtype])


def _spike(node, xs, bs, ctx):
    # Heaviside forward pass; the surrogate attrs only shape gradients.
    return (xs[0] > 0).astype(NUMPY[node.dtype])


# ---------------------------------------------------------------- reductions and normalisations
def _reduce(fn) -> Rule:
    def rule(node, xs, bs, ctx):
        axes = stored_axes(node.attr("axes"), xs[0].ndim - bs[0], bs[0])
        return fn(xs[0], axis=axes, keepdims=bool(node.attr("keepdims", False)))

    return rule


def _argmax(node, xs, bs, ctx):
    x = xs[0]
    return np.argmax(x, axis=stored_axis(node.attr("axis"), x.ndim - bs[0], bs[0]))


def _softmax(node, xs, bs, ctx):
    x = xs[0]
    ax = stored_axis(node.attr("axis"), x.ndim - bs[0], bs[0])
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


def _logsumexp(node, xs, bs, ctx):
    x = xs[0]
    ax = stored_axis(node.attr("axis"), x.ndim - bs[0], bs[0])
    m = np.max(x, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # all -inf (or an inf) must not turn into inf - inf = nan
    return np.squeeze(np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m, axis=ax)


def _layernorm(node, xs, bs, ctx):
    dt = NUMPY[node.dtype]
    x, *affine = _align([v.astype(dt, copy=False) for v in xs], bs, len(node.shape))
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean(np.square(x - mean), axis=-1, keepdims=True)  # biased, as torch.nn.LayerNorm
    y = (x - mean) / np.sqrt(var + dt.type(node.attr("eps")))
    if affine:
        y = y * affine[0]
    if len(affine) > 1:
        y = y + affine[1]
    return y


# ---------------------------------------------------------------- contractions
def _einsum(node, xs, bs, ctx):
    dt = NUMPY[node.dtype]
    return np.einsum(batched_equation(node.attr("equation"), bs), *(x.astype(dt, copy=False) for x in xs),
                     optimize=len(xs) > 1)


# ---------------------------------------------------------------- shape and indexing
def _reshape(node, xs, bs, ctx):
    x = xs[0]
    return x.reshape(stored_shape(node.shape, x.shape, bs[0]))


def _broadcast(node, xs, bs, ctx):
    (x,) = _align(xs, bs, len(node.shape))
    return np.broadcast_to(x, stored_shape(node.shape, x.shape, bs[0]))


def _transpose(node, xs, bs, ctx):
    return np.transpose(xs[0], batched_perm(node.attr("perm"), bs[0]))


def _concat(node, xs, bs, ctx):
    rank = len(node.shape)
    if any(bs):
        batch = batch_size(xs, bs)
        xs = [_with_batch(x, b, batch) for x, b in zip(xs, bs)]
    return np.concatenate(xs, axis=stored_axis(node.attr("axis"), rank, any(bs)))


def _slice(node, xs, bs, ctx):
    return xs[0][sliced(node.attr("starts"), node.attr("stops"), node.attr("steps"), bs[0])]


def in_range(idx, size: int):
    """Indices as positions in [0, size): negative ones count from the end (as ``np.take``), and an
    index out of [-size, size) is clamped to the nearest end.  Every backend's indexing rules do the
    same, so no kernel reads or writes outside its buffer; a CHECK node (or the checks at compile time
    and at the start of a run, ``compiler/bounds.py``) reports such an index as an error."""
    if not idx.size or (idx.min() >= 0 and idx.max() < size):
        return idx  # the usual case, without a copy
    return np.clip(np.where(idx < 0, idx + size, idx), 0, size - 1)


def nonzero_divisor(b):
    """An integer divisor with 0 replaced by 1 (so a division never traps); CHECK reports the zero."""
    return np.where(b == 0, b.dtype.type(1), b) if b.dtype.kind in "iu" else b


def _gather(node, xs, bs, ctx):
    x, idx = xs
    axis = stored_axis(node.attr("axis"), x.ndim - bs[0], False)
    idx = in_range(idx, x.shape[axis + bs[0]])
    if not any(bs):
        return np.take(x, idx, axis=axis)
    if not bs[1]:
        return np.take(x, idx, axis=axis + 1)
    # Per-sample take with batched indices: put the gathered axis next to the batch axis, index
    # both with advanced indices (result [B, *idx, *rest]), then move the index axes into place.
    batch = idx.shape[0]
    xm = np.moveaxis(_with_batch(x, bs[0], batch), axis + 1, 1)
    rows = np.arange(batch).reshape((batch,) + (1,) * (idx.ndim - 1))
    taken = xm[rows, idx]
    k = idx.ndim - 1
    return np.moveaxis(taken, tuple(range(1, 1 + k)), tuple(range(1 + axis, 1 + axis + k)))


def _scatter_add(node, xs, bs, ctx):
    base, idx, values = xs
    axis = stored_axis(node.attr("axis"), len(node.shape), False)
    dt = NUMPY[node.dtype]
    idx = in_range(idx, node.shape[axis])
    if not any(bs):
        out = base.astype(dt, copy=True)
        np.add.at(out, (slice(None),) * axis + (idx,), values.astype(dt, copy=False))
        return out
    # One code path for every batched pattern: everything as [B, ...] with the scattered axis
    # moved next to the batch axis (views of ``out``, so np.add.at writes through).
    batch = batch_size(xs, bs)
    out = np.array(_with_batch(base, bs[0], batch), dtype=dt)
    idx = _with_batch(idx, bs[1], batch)
    values = np.moveaxis(_with_batch(values.astype(dt, copy=False), bs[2], batch), axis + 1, 1)
    rows = np.arange(batch)[:, None]
    np.add.at(np.moveaxis(out, axis + 1, 1), (rows, idx), values)
    return out


def _csr_rows(indptr, rows):
    """The synapse indices of the given CSR rows, row by row, and each row's synapse count."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    offsets = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) + np.repeat(starts - offsets, counts), counts


def _propagate(node, xs, bs, ctx):
    spikes, indptr, indices, weights = xs[:4]
    if bs[1] or bs[2]:
        raise EvaluationError("PROPAGATE needs unbatched connectivity (indptr and indices)")
    dt = NUMPY[node.dtype]
    n_post = int(node.attr("n_post"))
    out_batched = any(bs)  # an accumulator (fifth input) may carry the batch axis alone
    batch = batch_size(xs, bs) if out_batched else 1
    # Treat every value as batched ([1, ...] when nothing is) so that one event-driven path serves.
    s = _with_batch(spikes, bs[0], batch) if out_batched else spikes[None]
    w = weights if bs[3] else weights[None]
    b, i = np.nonzero(s)  # the events: (trial, presynaptic neuron), row-major
    k, counts = _csr_rows(indptr, i)
    trial = np.repeat(b, counts)
    wk = w[trial if bs[3] else 0] if w.ndim == 1 else w[trial if bs[3] else 0, k]
    values = wk.astype(dt, copy=False) * np.repeat(s[b, i].astype(dt), counts)
    out = np.zeros((batch, n_post), dtype=dt)
    if node.attr("accumulate"):  # the events add into the accumulator, in event order
        out[...] = _with_batch(xs[4], bs[4], batch) if out_batched else xs[4][None]
    np.add.at(out, (trial, indices[k]), values)
    return out if out_batched else out[0]


# ---------------------------------------------------------------- time structure
def _keep(done, old, new):
    return np.where(done.reshape(done.shape + (1,) * (old.ndim - done.ndim)), old, new)


NUMPY_UNTIL = Until(_keep, operator.or_, lambda done: bool(np.all(done)))  # the `until` rule on arrays


def _loop(node, xs, bs, ctx):
    loop = LoopSpec.of(node)
    spec = loop.attrs
    n = len(spec.carried)
    is_batched = any(bs)
    batch = batch_size(xs, bs) if is_batched else None

    def lift(v, b):
        # In a batched loop every carried and stacked value is batched (ITEMs are batched).
        return _with_batch(v, b, batch) if is_batched else v

    invariant = dict(zip(spec.invariant, xs[n:]))
    plan = ctx.body_plan(spec.body, loop.unbatched(bs, is_batched))
    per_sample = (batch,) if is_batched else ()

    def body(carry):
        env = dict(invariant)
        env.update(zip(spec.carried, carry))
        vals = plan.run(Context(env, batch, ctx.rng, ctx.plans, ctx.check_finite))
        cond = None
        if loop.until_node is not None:
            cond = lift(vals[loop.until_node], plan.flags[loop.until_node])
            if cond.shape != per_sample:
                raise EvaluationError(f"the LOOP condition {spec.until!r} must be a bool scalar per sample")
        return ([lift(vals[k], plan.flags[k]) for k in loop.next_nodes],
                [lift(vals[k], plan.flags[k]) for k in loop.out_nodes], cond)

    carry, frames = iterate(spec.count, [lift(x, b) for x, b in zip(xs[:n], bs[:n])], body,
                            NUMPY_UNTIL if loop.until_node is not None else None)
    stacked = []
    for j, k in enumerate(loop.out_nodes):
        if frames:
            stacked.append(np.stack([f[j] for f in frames], axis=int(is_batched)))
        else:
            node_k = spec.body.nodes[k]
            stacked.append(np.zeros(per_sample + (0,) + node_k.shape, dtype=node_k.dtype.numpy))
    return tuple(carry) + tuple(stacked)


def _item(node, xs, bs, ctx):
    return xs[0][node.attr("index")]


# ---------------------------------------------------------------- initialisation
def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...], gain) -> np.ndarray:
    """torch.nn.init.orthogonal_: QR of a normal matrix, rows flattened as [shape[0], rest]."""
    rows = shape[0] if shape else 1
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def _random(node, xs, bs, ctx):
    if ctx.rng is None:
        raise EvaluationError("RANDOM needs a random generator (it belongs in init graphs)")
    if any(bs):
        raise EvaluationError("RANDOM takes unbatched arguments (init graphs run per trial)")
    a, b = xs
    dist = node.attr("dist")
    if dist == "uniform":
        return ctx.rng.uniform(a, b, size=node.shape)
    if dist == "normal":
        return ctx.rng.normal(a, b, size=node.shape)
    if dist == "orthogonal":
        return _orthogonal(ctx.rng, node.shape, a)
    raise EvaluationError(f"unknown distribution {dist!r}")


def _uniform(node, xs, bs, ctx):
    """Threefry-2x32 on NumPy uint32 words (``threefry.uniform_numpy``); an unbatched counter is
    sample 0, and an unbatched seed is every sample's."""
    a = node.attrs
    step, seed = np.reshape(xs[0], -1), np.reshape(xs[1], -1)
    if bs[1] and not bs[0]:
        step = np.broadcast_to(step, seed.shape)
    u = uniform_numpy(seed, a.stream, a.streams, step, a.shape)
    return u if bs[0] or bs[1] else u[0]


# ---------------------------------------------------------------- run-time checks
# kind -> the values that fail the check (x, size) -> bool array; every backend has the same table.
CHECK_FAILS = {
    "index": lambda x, size: (x < -size) | (x >= size),
    "divisor": lambda x, size: x == 0,
}


def _check(node, xs, bs, ctx):
    """The status, or (site, its step, the first failing value of x) when it is clear and x fails."""
    status, x = xs
    a = node.attrs
    batch = batch_size(xs, bs) if any(bs) else 1
    s = _with_batch(status, bs[0], batch) if any(bs) else status[None]
    flat = (_with_batch(x, bs[1], batch) if any(bs) else x[None]).reshape(batch, -1)
    fails = CHECK_FAILS[a.kind](flat, a.size)
    if not fails.any():
        return status
    first = np.argmax(fails, axis=1) if flat.shape[1] else np.zeros(batch, np.int64)
    value = flat[np.arange(batch), first] if flat.shape[1] else first
    report = (s[:, 0] == 0) & fails.any(axis=1)
    failed = np.stack([np.full(batch, a.site, np.int64), s[:, 1], value.astype(np.int64)], axis=1)
    out = np.where(report[:, None], failed, s)
    return out if any(bs) else out[0]


RULES: dict[Op, Rule] = {
    Op.CONST: _const,
    Op.ARG: _arg,
    Op.ADD: _arith(np.add),
    Op.SUB: _arith(np.subtract),
    Op.MUL: _arith(np.multiply),
    Op.DIV: _divide(np.true_divide),
    Op.POW: _arith(np.power),
    Op.MOD: _divide(np.mod),
    Op.MAXIMUM: _arith(np.maximum),
    Op.MINIMUM: _arith(np.minimum),
    Op.NEG: _unary(np.negative),
    Op.ABS: _unary(np.abs),
    Op.EXP: _unary(np.exp),
    Op.LOG: _unary(np.log),
    Op.SQRT: _unary(np.sqrt),
    Op.TANH: _unary(np.tanh),
    Op.SIGMOID: _unary(_sigmoid),
    Op.RELU: _unary(lambda x: np.maximum(x, x.dtype.type(0))),
    Op.SILU: _unary(lambda x: x * _sigmoid(x)),
    Op.SOFTPLUS: _unary(_softplus),
    Op.SIN: _unary(np.sin),
    Op.COS: _unary(np.cos),
    Op.ERF: _unary(lambda x: _erf()(x)),
    Op.FLOOR: _unary(np.floor),
    Op.STOP_GRADIENT: _unary(np.positive),  # the identity (a copy): the oracle computes no gradients
    Op.LT: _compare(np.less),
    Op.LE: _compare(np.less_equal),
    Op.GT: _compare(np.greater),
    Op.GE: _compare(np.greater_equal),
    Op.EQ: _compare(np.equal),
    Op.NE: _compare(np.not_equal),
    Op.AND: _compare(np.logical_and),
    Op.OR: _compare(np.logical_or),
    Op.NOT: _unary(np.logical_not),
    Op.WHERE: _where,
    Op.CAST: _cast,
    Op.SPIKE: _spike,
    Op.SUM: _reduce(np.sum),
    Op.MEAN: _reduce(np.mean),
    Op.MAX: _reduce(np.max),
    Op.MIN: _reduce(np.min),
    Op.ARGMAX: _argmax,
    Op.SOFTMAX: _softmax,
    Op.LOGSUMEXP: _logsumexp,
    Op.LAYERNORM: _layernorm,
    Op.EINSUM: _einsum,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.BROADCAST: _broadcast,
    Op.CONCAT: _concat,
    Op.SLICE: _slice,
    Op.GATHER: _gather,
    Op.SCATTER_ADD: _scatter_add,
    Op.PROPAGATE: _propagate,
    Op.LOOP: _loop,
    Op.ITEM: _item,
    Op.RANDOM: _random,
    Op.UNIFORM: _uniform,
    Op.CHECK: _check,
    Op.NORMAL: lambda node, xs, bs, ctx: normal_numpy(_uniform(node, xs, bs, ctx)),
}


# ---------------------------------------------------------------- plans
@dataclass(frozen=True, slots=True)
class _Step:
    index: int
    rule: Rule
    node: Node
    inputs: tuple[int, ...]
    flags: list[bool]
    batched: bool
    dtype: np.dtype | None  # None for LOOP, whose value is a tuple
    rank: int               # the stored value's rank (per-sample rank + batch axis)


def _turns_non_finite(v: np.ndarray, xs: list) -> bool:
    def finite(x):
        return not isinstance(x, np.ndarray) or x.dtype.kind != "f" or bool(np.isfinite(x).all())

    return not finite(v) and all(finite(x) for x in xs)


class Plan:
    """A graph compiled for repeated evaluation: the nodes to run, in order, with their rules and
    static batched flags (``unbatched`` names ARGs that carry no batch axis besides params).
    Constants are converted to their declared dtype once, here, rather than on every run."""

    def __init__(self, graph: Graph, unbatched: frozenset = frozenset(), only: set[int] | None = None):
        self.graph = graph
        self.flags = batched(graph, unbatched)
        self.initial: list = [None] * len(graph.nodes)
        steps = []
        for i, n in enumerate(graph.nodes):
            if only is not None and i not in only:
                continue
            if n.op not in RULES:
                raise EvaluationError(f"{n.span}: %{i}: the reference interpreter has no rule for {n.op.value}")
            if n.op is Op.CONST:
                value = np.asarray(n.attr("value"), NUMPY[n.dtype])
                if value.shape != n.shape:
                    raise EvaluationError(f"{n.span}: %{i} (const): value of shape {value.shape}, declared {n.shape}")
                self.initial[i] = value
                continue
            b = self.flags[i]
            dtype = None if n.op is Op.LOOP else n.dtype.numpy
            steps.append(_Step(i, RULES[n.op], n, n.inputs, [self.flags[j] for j in n.inputs], b, dtype,
                               len(n.shape) + b))
        self.steps = tuple(steps)

    def run(self, ctx: Context, preset: dict[int, Any] | None = None) -> list:
        """Every node's value (None for nodes outside the plan), given the context's arguments."""
        vals = self.initial.copy()
        for k, v in (preset or {}).items():
            vals[k] = v
        step = None
        try:
            # IEEE results (log(0) = -inf, 0/0 = nan) are the semantics, not warnings; ``check_finite``
            # turns the first non-finite value computed from finite inputs into a located error.
            with np.errstate(all="ignore"):
                for step in self.steps:
                    xs = [vals[j] for j in step.inputs]
                    v = step.rule(step.node, xs, step.flags, ctx)
                    if step.dtype is not None:
                        if type(v) is not np.ndarray:
                            v = np.asarray(v)
                        if v.dtype != step.dtype:
                            v = v.astype(step.dtype)
                        if v.ndim != step.rank or v.shape[step.batched:] != step.node.shape:
                            raise EvaluationError(f"value of shape {v.shape} (batched: {step.batched}) does not "
                                                  f"match the declared shape {step.node.shape}")
                        if ctx.check_finite and _turns_non_finite(v, xs):
                            raise EvaluationError("produced a non-finite value (inf or nan) from finite inputs")
                    vals[step.index] = v
        except Exception as exc:
            if step is None:
                raise
            n = step.node
            raise EvaluationError(f"{n.span}: %{step.index} ({n.op.value}): {exc}") from exc
        return vals


def evaluate(graph: Graph, env: dict[str, np.ndarray], batch: int | None = None,
             rng: np.random.Generator | None = None, *, check_finite: bool = False
             ) -> dict[tuple[str, str], np.ndarray]:
    """Evaluate ``graph`` once: ``{(name, kind): value}`` for every result.

    Without ``batch`` no value carries a batch axis; with it, states and inputs in ``env`` carry a
    leading axis of size ``batch`` and parameters do not (the batching rule of ``compiler/ir.py``).
    ``check_finite`` reports the first node that turns finite values into inf or nan.
    """
    args = graph.args()
    missing = sorted(set(args) - set(env))
    if missing:
        raise EvaluationError(f"no value given for {', '.join(missing)}")
    unbatched = frozenset(args) if batch is None else frozenset()
    vals = Plan(graph, unbatched).run(Context(dict(env), batch, rng, check_finite=check_finite))
    return {(r.name, r.kind): vals[r.node] for r in graph.results}


__all__ = ["RULES", "CHECK_FAILS", "in_range", "nonzero_divisor", "Rule", "Context", "Plan", "EvaluationError", "evaluate"]
