"""The NumPy reference interpreter: the meaning of the IR and the oracle every backend is tested against.

One rule per ``Op`` (``RULES``) maps a node and its input values to its value.  A rule is called as
``rule(node, xs, bs, ctx)``: ``xs`` are the input arrays, ``bs`` says which of them carry the
runtime's leading batch axis (the batching rule of ``compiler/ir.py``), ``ctx`` holds the argument
values, the batch size, the random generator of init graphs and the compiled LOOP bodies.

A graph is compiled once into a ``Plan``: its nodes in topological order, each with its rule, its
input indices and its static batched flags, so running a step costs one rule call per node.
``evaluate`` runs a graph once, ``initialize`` draws parameters and per-trial states from a
program's init graph, and ``ReferenceExecutor`` runs the time loop of the executor protocol.

Numerics: arithmetic is done in the node's dtype (inputs are cast to it), every value is checked
against the node's declared dtype and shape, and PROPAGATE accumulates ``spikes[i] * weights[k]``
in the node's dtype in CSR order (presynaptic index ascending, then synapse index), the order a
strict-mode backend must follow to reproduce spike trains exactly.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nspec.compiler.ir import INIT_ONLY, DType, Graph, IRError, Node, Op, Program, batched
from nspec.runtime.executor import BackendError, RunRequest, RunResult, require_values


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
    """Insert size-1 axes after the batch axis of batched values whose per-sample rank is below
    ``rank``, so that NumPy's right-aligned broadcasting pairs per-sample axes correctly."""
    out = []
    for x, b in zip(xs, bs):
        missing = rank - (x.ndim - b)
        if b and missing > 0:
            x = x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:])
        out.append(x)
    return out


def _axis(axis: int, rank: int, b: bool) -> int:
    """A per-sample axis (possibly negative) as an axis of the stored array."""
    return (axis % rank if rank else 0) + b


def _with_batch(x, b: bool, batch: int):
    """A value as [B, ...]: a batched value as is, an unbatched one broadcast over the batch."""
    return x if b else np.broadcast_to(x, (batch,) + x.shape)


def _batch_of(xs, bs) -> int:
    return next(x.shape[0] for x, b in zip(xs, bs) if b)


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
        rank = xs[0].ndim - int(bs[0])
        axes = tuple(_axis(a, rank, bs[0]) for a in node.attr("axes"))
        return fn(xs[0], axis=axes, keepdims=bool(node.attr("keepdims", False)))

    return rule


def _argmax(node, xs, bs, ctx):
    x = xs[0]
    return np.argmax(x, axis=_axis(node.attr("axis"), x.ndim - bs[0], bs[0]))


def _softmax(node, xs, bs, ctx):
    x = xs[0]
    ax = _axis(node.attr("axis"), x.ndim - bs[0], bs[0])
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


def _logsumexp(node, xs, bs, ctx):
    x = xs[0]
    ax = _axis(node.attr("axis"), x.ndim - bs[0], bs[0])
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
    equation = node.attr("equation").replace(" ", "")
    lhs, out = equation.split("->")
    if any(bs):
        letter = next(c for c in string.ascii_letters if c not in equation)
        lhs = ",".join(letter + s if b else s for s, b in zip(lhs.split(","), bs))
        out = letter + out
    dt = NUMPY[node.dtype]
    return np.einsum(f"{lhs}->{out}", *(x.astype(dt, copy=False) for x in xs), optimize=len(xs) > 1)


# ---------------------------------------------------------------- shape and indexing
def _reshape(node, xs, bs, ctx):
    x = xs[0]
    return x.reshape(x.shape[:1] + node.shape if bs[0] else node.shape)


def _broadcast(node, xs, bs, ctx):
    (x,) = _align(xs, bs, len(node.shape))
    return np.broadcast_to(x, x.shape[:1] + node.shape if bs[0] else node.shape)


def _transpose(node, xs, bs, ctx):
    perm = tuple(node.attr("perm"))
    if bs[0]:
        perm = (0,) + tuple(p + 1 for p in perm)
    return np.transpose(xs[0], perm)


def _concat(node, xs, bs, ctx):
    rank = len(node.shape)
    if any(bs):
        batch = _batch_of(xs, bs)
        xs = [_with_batch(x, b, batch) for x, b in zip(xs, bs)]
    return np.concatenate(xs, axis=_axis(node.attr("axis"), rank, any(bs)))


def _slice(node, xs, bs, ctx):
    index = tuple(slice(a, b, c) for a, b, c in zip(node.attr("starts"), node.attr("stops"), node.attr("steps")))
    return xs[0][(slice(None),) * bs[0] + index]


def _gather(node, xs, bs, ctx):
    x, idx = xs
    axis = _axis(node.attr("axis"), x.ndim - bs[0], False)
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
    axis = _axis(node.attr("axis"), len(node.shape), False)
    dt = NUMPY[node.dtype]
    if not any(bs):
        out = base.astype(dt, copy=True)
        np.add.at(out, (slice(None),) * axis + (idx,), values.astype(dt, copy=False))
        return out
    # One code path for every batched pattern: everything as [B, ...] with the scattered axis
    # moved next to the batch axis (views of ``out``, so np.add.at writes through).
    batch = _batch_of(xs, bs)
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
    batch = _batch_of(xs, bs) if out_batched else 1
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
@dataclass(frozen=True)
class _LoopSpec:
    body: Graph
    count: int
    carried: tuple[str, ...]
    invariant: tuple[str, ...]
    stacked: tuple[str, ...]
    until: str | None

    @classmethod
    def of(cls, node: Node) -> "_LoopSpec":
        body = node.attr("body")
        if not isinstance(body, Graph):
            raise EvaluationError("a LOOP needs a body graph")
        return cls(body, int(node.attr("count")), tuple(node.attr("carried", ())), tuple(node.attr("invariant", ())),
                   tuple(node.attr("stacked", ())), node.attr("until"))

    def result_node(self, name: str, kind: str) -> int:
        r = self.body.result(name, kind)
        if r is None:
            raise EvaluationError(f"the LOOP body has no {kind} result {name!r}")
        return r.node


def _loop(node, xs, bs, ctx):
    spec = _LoopSpec.of(node)
    n = len(spec.carried)
    is_batched = any(bs)
    batch = _batch_of(xs, bs) if is_batched else None

    def lift(v, b):
        # In a batched loop every carried and stacked value is batched (ITEMs are batched).
        return _with_batch(v, b, batch) if is_batched else v

    carry = [lift(x, b) for x, b in zip(xs[:n], bs[:n])]
    invariant = dict(zip(spec.invariant, xs[n:]))
    unbatched = frozenset(name for name, b in zip(spec.invariant, bs[n:]) if not b)
    if not is_batched:
        unbatched |= frozenset(spec.carried)
    plan = ctx.body_plan(spec.body, unbatched)
    next_nodes = [spec.result_node(name, "next") for name in spec.carried]
    out_nodes = [spec.result_node(name, "output") for name in spec.stacked]
    until_node = spec.result_node(spec.until, "value") if spec.until else None

    done = np.zeros((batch,) if is_batched else (), dtype=bool)
    frames: list[list] = []
    for _ in range(spec.count):
        env = dict(invariant)
        env.update(zip(spec.carried, carry))
        vals = plan.run(Context(env, batch, ctx.rng, ctx.plans, ctx.check_finite))
        new = [lift(vals[k], plan.flags[k]) for k in next_nodes]
        outs = [lift(vals[k], plan.flags[k]) for k in out_nodes]
        if until_node is not None:
            # Samples already done keep their carried values and repeat their last outputs.
            keep = _frozen(done)
            new = [np.where(keep(c), c, v) for c, v in zip(carry, new)]
            if frames:
                outs = [np.where(keep(p), p, o) for p, o in zip(frames[-1], outs)]
            cond = lift(vals[until_node], plan.flags[until_node])
            if cond.shape != done.shape:
                raise EvaluationError(f"the LOOP condition {spec.until!r} must be a bool scalar per sample")
            done = done | cond
        carry = new
        frames.append(outs)
        if until_node is not None and np.all(done):
            break
    while frames and len(frames) < spec.count:
        frames.append(frames[-1])  # the loop ended early: every sample repeats its last outputs
    axis = 1 if is_batched else 0
    stacked = []
    for j, k in enumerate(out_nodes):
        if frames:
            stacked.append(np.stack([f[j] for f in frames], axis=axis))
        else:
            shape = ((batch,) if is_batched else ()) + (0,) + spec.body.nodes[k].shape
            stacked.append(np.zeros(shape, dtype=spec.body.nodes[k].dtype.numpy))
    return tuple(carry) + tuple(stacked)


def _frozen(done):
    """A function giving ``done`` reshaped to broadcast against a [B, ...] value."""
    return lambda v: done.reshape(done.shape + (1,) * (v.ndim - done.ndim))


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


RULES: dict[Op, Rule] = {
    Op.CONST: _const,
    Op.ARG: _arg,
    Op.ADD: _arith(np.add),
    Op.SUB: _arith(np.subtract),
    Op.MUL: _arith(np.multiply),
    Op.DIV: _arith(np.true_divide),
    Op.POW: _arith(np.power),
    Op.MOD: _arith(np.mod),
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
    Op.FLOOR: _unary(np.floor),
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


def _as_var(value, var) -> np.ndarray:
    return np.array(np.broadcast_to(value, var.shape), dtype=var.dtype.numpy)


def initialize(program: Program, batch: int, seed: int,
               params: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial parameters ``{name: value}`` and states ``{name: [batch, *shape]}`` from ``program.init``.

    Parameters are drawn once from ``default_rng(seed)``; trial b's states from
    ``default_rng([seed, b])``, so trial b of a batch equals a batch-1 run given that stream.
    RANDOM nodes draw in node order; a node shared by a parameter and a state keeps the
    parameter's value.  Given ``params`` (loaded weights), states are computed from those
    (a learned start state follows its loaded parameter).
    """
    init = program.init

    def roots(group):
        out = {}
        for v in group:
            r = init.result(v.name, "value")
            if r is None:
                raise EvaluationError(f"init: no initial value for {v.name!r}")
            out[v.name] = r.node
        return out

    param_roots, state_roots = roots(program.params), roots(program.states)
    param_nodes = init.reachable(param_roots.values())
    state_nodes = init.reachable(state_roots.values()) - param_nodes
    drawn = param_nodes
    if params is not None:
        # Loaded weights replace every parameter, so only the parameter-graph nodes the states read
        # are needed (drawing a large model's initial weights again costs more than its forward).
        # Random ones keep the full draw: their values depend on every draw before them.
        shared = init.reachable({j for i in state_nodes for j in init.nodes[i].inputs if j in param_nodes}
                                | {r for r in state_roots.values() if r in param_nodes})
        if not any(init.nodes[i].op is Op.RANDOM for i in shared):
            drawn = shared
    pvals = Plan(init, frozenset(init.args()), drawn).run(Context({}, None, np.random.default_rng(seed)))
    loaded = params
    if loaded is None:
        params = {v.name: _as_var(pvals[param_roots[v.name]], v) for v in program.params}
    else:
        params = {v.name: _as_var(np.asarray(loaded[v.name]), v) for v in program.params}
        # States read parameters through ARG nodes only: a constant node a state shares with a
        # parameter's initialiser keeps its own value.
        pvals = {i: pvals[i] for i in drawn if init.nodes[i].op is not Op.ARG}

    state_plan = Plan(init, frozenset(init.args()), state_nodes)
    preset = {i: pvals[i] for i in drawn if loaded is None or i in pvals}
    trials = [state_plan.run(Context(dict(params), None, np.random.default_rng([seed, b])), preset)
              for b in range(batch)]
    states = {}
    for v in program.states:
        values = [_as_var(t[state_roots[v.name]], v) for t in trials]
        states[v.name] = np.stack(values) if values else np.zeros((0,) + v.shape, NUMPY[v.dtype])
    return params, states


# ---------------------------------------------------------------- the executor
class ReferenceExecutor:
    """Runs a discretised program step by step with the reference interpreter.

    Option ``check_finite=True`` stops at the first node (with its source span) that computes inf
    or nan from finite inputs.
    """

    name = "reference"

    def __init__(self, program: Program, **options):
        step = program.step
        derivs = [r.name for r in step.results if r.kind == "deriv"]
        if derivs:
            raise BackendError(f"the reference executor needs a discretised program, but {', '.join(derivs)} "
                               "still have derivatives (run the discretisation pass first)")
        init_only = [f"%{i} ({n.op.value})" for i, n in enumerate(step.nodes) if n.op in INIT_ONLY]
        if init_only:
            raise BackendError(f"the step graph holds initialisation-only nodes: {', '.join(init_only)}")
        self.program = program
        self.check_finite = bool(options.get("check_finite", False))
        self.plan = Plan(step)
        self.next_nodes = {s.name: self._result_node(s.name, "next") for s in program.states}
        self.output_nodes = {o.name: self._result_node(o.name, "output") for o in program.outputs}

    def _result_node(self, name: str, kind: str) -> int:
        r = self.program.step.result(name, kind)
        if r is None:
            raise BackendError(f"the step graph has no {kind} result for {name!r}")
        return r.node

    def _recorded_node(self, name: str) -> int | None:
        """The step-graph node a record name reads, or None for a state (recorded before its update)."""
        if any(s.name == name for s in self.program.states):
            return None
        r = self.program.step.result(name, "output") or self.program.step.result(name, "value")
        if r is None:
            raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        return r.node

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps; see ``runtime/executor.py`` for the array conventions."""
        p = self.program
        require_values(p, request)
        steps = int(request.steps)
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")
        params = {v.name: np.asarray(request.params[v.name], v.dtype.numpy) for v in p.params}
        state = {v.name: np.array(request.state[v.name], v.dtype.numpy) for v in p.states}
        inputs = {v.name: np.asarray(request.inputs[v.name], v.dtype.numpy) for v in p.inputs}
        short = [n for n, x in inputs.items() if x.shape[1] < steps]
        if short:
            raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")

        outputs = {o.name: np.empty((batch, steps) + o.shape, o.dtype.numpy) for o in p.outputs}
        records = {}
        recorded = []
        for name, every in request.record:
            if int(every) < 1:
                raise BackendError(f"cannot record {name!r} every {every} steps: the interval must be at least 1")
            node = self._recorded_node(name)
            shape = state[name].shape if node is None else (batch,) + p.step.nodes[node].shape
            dtype = state[name].dtype if node is None else NUMPY[p.step.nodes[node].dtype]
            records[name] = np.empty((steps // every,) + shape, dtype)
            recorded.append((name, int(every), node))

        plans: dict = {}
        for t in range(steps):
            env = dict(params)
            env.update(state)
            for name, x in inputs.items():
                env[name] = x[:, t]
            vals = self.plan.run(Context(env, batch, None, plans, self.check_finite))
            for name, every, node in recorded:
                if t % every == 0 and t // every < len(records[name]):
                    records[name][t // every] = state[name] if node is None else vals[node]
            for name, node in self.output_nodes.items():
                outputs[name][:, t] = vals[node]
            state = {name: vals[node] if self.plan.flags[node] else np.broadcast_to(vals[node], state[name].shape)
                     for name, node in self.next_nodes.items()}
        return RunResult({k: np.array(v) for k, v in state.items()}, outputs, records)


__all__ = ["RULES", "Context", "Plan", "EvaluationError", "evaluate", "initialize", "ReferenceExecutor"]
