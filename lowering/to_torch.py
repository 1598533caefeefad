"""Lowering to PyTorch: an interpreter over the IR with one rule per op, a trainable module, an executor.

A graph is compiled once into a ``Plan``: its live nodes in topological order, each a ``Site`` with
the static batched flags of ``ir.batched``.  A rule is called as
``RULES[op](site, xs, frame)``; ``xs`` are the input tensors and ``frame`` holds the ARG values, the
constants (module buffers, so they follow ``.to(device)``), the batch size and the run options.
Batched values carry a leading batch axis, so elementwise operands are aligned per sample, einsum
gets a batch letter, and axes count from the per-sample shape: the rules of
``compiler/batching.py``, which the reference interpreter applies too.

``to_module(program)`` gives a ``ProgramModule``: parameters registered under their external names
(``Var.key``, else the path with ``/`` -> ``.``) in nested submodules, frozen ones as buffers; the
time loop runs in ``forward`` with the state handled functionally, so backpropagation through time,
optimisers over ``module.parameters()`` and ``torch.compile`` work.  ``TorchExecutor`` runs the
executor protocol of ``runtime/executor.py`` on CPU or CUDA.

Parameters are stored raw: the elaborator already follows a reparameterised parameter's ARG with the
reparameterisation's ops (``compiler/bodies.py``), so ``Var.reparam`` is only a description here and
gradients reach the raw value through those ops.  States marked ``plastic`` are updated without
gradients unless ``plasticity_grad=True``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nspec.compiler.batching import (LoopSpec, Until, aligned_shape, batch_size, batched_equation, batched_perm,
                                     iterate, sliced, stored_axes, stored_axis, stored_shape)
from nspec.compiler.ir import INIT_ONLY, DType, Graph, IRError, Node, Op, Program, Var, batched, verify_program
from nspec.lowering import surrogates
from nspec.lowering.surrogates import SURROGATES
from nspec.runtime.executor import BackendError, RunRequest, RunResult, require_values

TORCH_DTYPES = {DType.f32: torch.float32, DType.f64: torch.float64, DType.i32: torch.int32,
                DType.i64: torch.int64, DType.bool: torch.bool}


# ---------------------------------------------------------------- plans
@dataclass(frozen=True, slots=True)
class Frame:
    """What rules read besides their inputs: ARG values, constants, batch size and run options."""

    args: dict[str, torch.Tensor]
    consts: dict[str, torch.Tensor]
    batch: int | None
    plasticity_grad: bool = False
    propagate: str = "auto"       # "dense" | "event" | "auto" (event-driven when no gradient is needed)
    cache: dict = field(default_factory=dict)  # per-run values of parameters only (by id of their Site),
                                               # and the "parameters" and "constants" tensors by name


@dataclass(frozen=True, slots=True)
class Site:
    """One node ready to run: the batched flags of its inputs and of its value, and what its rule
    needs precomputed (rules are looked up by op, so a module holding plans can be pickled)."""

    index: int
    node: Node
    batched: tuple[bool, ...]
    out: bool
    dtype: torch.dtype | None     # None for LOOP, whose value is a tuple
    extra: Any = None             # per op: a CONST's buffer name, a LOOP's ``Loop``, the batched einsum
                                  # equation, a SPIKE's surrogate (name, args)
    once: bool = False            # computed from parameters and constants only: once per run
    op: str = ""                  # node.op.value, looked up per step (an Enum attribute is slow to read)


@dataclass(frozen=True, slots=True)
class Plan:
    """A graph compiled for repeated runs; ``local`` holds the nodes only plastic updates need."""

    graph: Graph
    flags: tuple[bool, ...]
    sites: tuple[Site, ...]
    local: tuple[Site, ...] = ()


@dataclass(frozen=True, slots=True)
class Loop:
    """A LOOP node decoded (its attributes and the body nodes it reads) with its compiled body."""

    spec: LoopSpec
    body: Plan


def _parameter_only(graph: Graph) -> set[int]:
    """Nodes whose value depends on parameters and constants only (the same at every step of a run,
    as parameters change between runs, never during one): ELM's decay factors, a reparameterised
    weight, an index buffer's concatenation.  Their values are computed at the run's first step."""
    fixed: set[int] = set()
    for i, n in enumerate(graph.nodes):
        if n.op is Op.CONST or (n.op is Op.ARG and n.attr("role") == "param"):
            fixed.add(i)
        elif n.op not in _PER_STEP and n.inputs and all(j in fixed for j in n.inputs):
            fixed.add(i)
    return fixed


_PER_STEP = {Op.ARG, Op.RANDOM, Op.LOOP, Op.ITEM, Op.PROPAGATE}  # never computed once for a whole run


def _fail(node: Node, index: int, message: str) -> BackendError:
    return BackendError(f"{node.span}: error: %{index} ({node.op.value}): {message}")


def compile_plan(graph: Graph, consts: dict[str, np.ndarray], unbatched=frozenset(), prefix: str = "c",
                 local_results: frozenset[str] = frozenset(), roots=None) -> Plan:
    """Compile ``graph`` (the nodes that ``roots``, by default every result, depend on).

    Constants are added to ``consts`` under unique names (the caller makes them buffers).  Nodes
    that only the ``next`` results named in ``local_results`` need go to ``Plan.local``.
    """
    flags = tuple(batched(graph, unbatched))
    if roots is None:
        roots = [r.node for r in graph.results]
    live = graph.reachable(roots)
    local_roots = [r.node for r in graph.results if r.kind == "next" and r.name in local_results]
    other_roots = [r.node for r in graph.results if not (r.kind == "next" and r.name in local_results)]
    local = graph.reachable(local_roots) - graph.reachable(other_roots) if local_roots else set()
    sites, tail = [], []
    fixed = _parameter_only(graph)
    for i, n in enumerate(graph.nodes):
        if i not in live:
            continue
        if n.op not in RULES:
            raise _fail(n, i, "the torch backend has no rule for this op (initialisation-only ops run on the host)")
        extra = None
        if n.op is Op.CONST:
            extra = f"{prefix}{i}"
            consts[extra] = np.asarray(n.attr("value"), dtype=n.dtype.numpy)
        elif n.op is Op.LOOP:
            extra = _compile_loop(graph, i, flags, consts, f"{prefix}{i}_")
        elif n.op is Op.PROPAGATE:
            indptr = graph.nodes[n.inputs[1]]
            # Connectivity read from a constant or a parameter is fixed for a whole run.
            extra = indptr.op is Op.CONST or (indptr.op is Op.ARG and indptr.attr("role") == "param")
        elif n.op is Op.EINSUM:
            equation = batched_equation(n.attr("equation"), tuple(flags[j] for j in n.inputs))
            extra = (equation, _linear_form(equation))
        elif n.op is Op.SPIKE:
            try:
                extra = surrogates.resolve(n.attr("surrogate"), n.attr("surrogate_args"))
            except (KeyError, ValueError) as exc:
                raise _fail(n, i, str(exc).strip("'\"")) from None
        dtype = None if n.op is Op.LOOP else TORCH_DTYPES[n.dtype]
        once = i in fixed and n.op not in (Op.ARG, Op.CONST)
        site = Site(i, n, tuple(flags[j] for j in n.inputs), flags[i], dtype, extra, once, n.op.value)
        (tail if i in local else sites).append(site)
    return Plan(graph, flags, tuple(sites), tuple(tail))


def _compile_loop(graph: Graph, i: int, flags, consts, prefix: str) -> Loop:
    n = graph.nodes[i]
    try:
        spec = LoopSpec.of(n)
    except IRError as exc:
        raise _fail(n, i, str(exc)) from None
    unbatched = spec.unbatched([flags[j] for j in n.inputs], flags[i])
    return Loop(spec, compile_plan(spec.attrs.body, consts, unbatched, prefix, roots=spec.roots))


def execute(plan: Plan, frame: Frame) -> list:
    """Every live node's value (None elsewhere); plastic-only nodes run without gradients."""
    vals: list = [None] * len(plan.flags)
    _run_sites(plan.sites, vals, frame)
    if plan.local:
        with torch.set_grad_enabled(frame.plasticity_grad and torch.is_grad_enabled()):
            _run_sites(plan.local, vals, frame)
    return vals


def _run_sites(sites, vals, frame):
    for s in sites:
        if s.once and id(s) in frame.cache:
            vals[s.index] = frame.cache[id(s)]
            continue
        try:
            v = _RULE_OF[s.op](s, [vals[j] for j in s.node.inputs], frame)
        except BackendError:
            raise
        except Exception as exc:  # a runtime failure names the node and the spec line it came from
            raise _fail(s.node, s.index, f"{type(exc).__name__}: {exc}") from exc
        if s.dtype is not None and v.dtype != s.dtype:
            v = v.to(s.dtype)
        vals[s.index] = v
        if s.once:
            frame.cache[id(s)] = v


# ---------------------------------------------------------------- batching helpers
def _align(xs, bs, rank: int, dtype: torch.dtype | None = None) -> list:
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


def _with_batch(x, b: bool, batch: int):
    """A value as [B, ...]: batched as is, unbatched broadcast (a view) over the batch."""
    return x if b else x.expand((batch,) + tuple(x.shape))


# ---------------------------------------------------------------- rules: leaves and elementwise
def _const(s, xs, frame):
    return frame.consts[s.extra]


def _arg(s, xs, frame):
    return frame.args[s.node.attr("name")]


def _arith(fn) -> Callable:
    """A binary op computed in the node's dtype (inputs are cast to it, as the reference does)."""

    def rule(s, xs, frame):
        a, b = _align(xs, s.batched, len(s.node.shape), s.dtype)
        return fn(a, b)

    return rule


def _compare(fn) -> Callable:
    """A binary op on the operands' own dtypes (comparisons and logic give bool)."""

    def rule(s, xs, frame):
        a, b = _align(xs, s.batched, len(s.node.shape))
        return fn(a, b)

    return rule


def _unary(fn) -> Callable:
    return lambda s, xs, frame: fn(xs[0])


def _where(s, xs, frame):
    c, a, b = _align(xs, s.batched, len(s.node.shape))
    return torch.where(c.bool(), a.to(s.dtype), b.to(s.dtype))


def _cast(s, xs, frame):
    return xs[0].to(s.dtype)


def _spike(s, xs, frame):
    name, args = s.extra
    return surrogates.spike(xs[0].to(s.dtype), name, args)


# ---------------------------------------------------------------- rules: reductions, normalisation
def _reduce(fn) -> Callable:
    def rule(s, xs, frame):
        x, b = xs[0], s.batched[0]
        dims = stored_axes(s.node.attr("axes"), x.dim() - b, b)
        if not dims:
            return x
        if fn is torch.mean and not x.dtype.is_floating_point:
            x = x.to(s.dtype)
        return fn(x, dim=dims, keepdim=bool(s.node.attr("keepdims", False)))

    return rule


def _along(fn) -> Callable:
    """An op over one per-sample axis (``attrs.axis``)."""

    def rule(s, xs, frame):
        x, b = xs[0], s.batched[0]
        return fn(x, stored_axis(s.node.attr("axis"), x.dim() - b, b))

    return rule


def _layernorm(s, xs, frame):
    x, *affine = _align(xs, s.batched, len(s.node.shape), s.dtype)
    eps = float(s.node.attr("eps"))
    if all(a.shape == x.shape[-1:] for a in affine):  # per-feature, unbatched: torch's fused kernel
        return F.layer_norm(x, x.shape[-1:], *affine, eps=eps)
    y = F.layer_norm(x, x.shape[-1:], eps=eps)
    if affine:
        y = y * affine[0]
    if len(affine) > 1:
        y = y + affine[1]
    return y


# ---------------------------------------------------------------- rules: contractions, shapes, indexing
def _linear_form(equation: str) -> bool:
    """Whether ``equation`` is ``...i,oi->...o`` (x W^T over x's last axis): F.linear, which skips
    einsum's parsing and path search, a large share of a small per-step product's time."""
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or len(terms[1]) != 2:
        return False
    (x, (o, i)) = terms
    prefix = x[:-1]
    return (x[-1:] == i and o != i and out == prefix + o and len(set(x + o)) == len(x) + 1)


def _einsum(s, xs, frame):
    xs = [x if x.dtype == s.dtype else x.to(s.dtype) for x in xs]
    equation, linear = s.extra
    if linear:
        return torch.nn.functional.linear(xs[0], xs[1])
    return torch.einsum(equation, *xs)


def _reshape(s, xs, frame):
    x = xs[0]
    return x.reshape(stored_shape(s.node.shape, x.shape, s.batched[0]))


def _broadcast(s, xs, frame):
    (x,) = _align(xs, s.batched, len(s.node.shape))
    return x.expand(stored_shape(s.node.shape, x.shape, s.batched[0]))


def _transpose(s, xs, frame):
    return xs[0].permute(batched_perm(s.node.attr("perm"), s.batched[0]))


def _concat(s, xs, frame):
    rank = len(s.node.shape)
    if s.out:
        batch = batch_size(xs, s.batched)
        xs = [_with_batch(x, b, batch) for x, b in zip(xs, s.batched)]
    return torch.cat([x.to(s.dtype) for x in xs], dim=stored_axis(s.node.attr("axis"), rank, s.out))


def _slice(s, xs, frame):
    n = s.node
    return xs[0][sliced(n.attr("starts"), n.attr("stops"), n.attr("steps"), s.batched[0])]


def _index(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Indices as int64, negative ones counted from the end (as ``np.take`` does)."""
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx)


def _gather(s, xs, frame):
    x, idx = xs
    bx, bi = s.batched
    axis = stored_axis(s.node.attr("axis"), x.dim() - bx, False)
    idx = _index(idx, x.shape[axis + bx])
    if not bx:
        # One table for every sample (an embedding): take all indices at once; batched indices
        # bring their batch axis, which moves to the front.
        out = torch.index_select(x, axis, idx.reshape(-1)).reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])
        return out.movedim(axis, 0) if bi else out
    if not bi:
        out = torch.index_select(x, axis + 1, idx.reshape(-1))
        return out.reshape(x.shape[:axis + 1] + idx.shape + x.shape[axis + 2:])
    # Both batched: per-sample take through torch.gather on x viewed as [B, pre, n, post].
    batch = idx.shape[0]
    pre, size, post = x.shape[1:axis + 1], x.shape[axis + 1], x.shape[axis + 2:]
    p, q, k = pre.numel(), post.numel(), idx[0].numel()
    taken = torch.gather(x.reshape(batch, p, size, q), 2, idx.reshape(batch, 1, k, 1).expand(batch, p, k, q))
    return taken.reshape((batch,) + pre + idx.shape[1:] + post)


def _scatter_add(s, xs, frame):
    base, idx, values = xs
    bb, bi, bv = s.batched
    axis = stored_axis(s.node.attr("axis"), len(s.node.shape), False)
    size = s.node.shape[axis]
    idx = _index(idx, size)
    values = values.to(s.dtype)
    base = base.to(s.dtype)
    if not s.out:
        flat = values.reshape(base.shape[:axis] + (-1,) + base.shape[axis + 1:])
        return base.index_add(axis, idx.reshape(-1), flat)
    # One path for every batched pattern: [B, pre, n, post] with the indices expanded over pre and post.
    batch = batch_size(xs, s.batched)
    pre, post = s.node.shape[:axis], s.node.shape[axis + 1:]
    p, q = int(np.prod(pre)), int(np.prod(post))
    out = _with_batch(base, bb, batch).reshape(batch, p, size, q)
    idx = _with_batch(idx, bi, batch).reshape(batch, 1, -1, 1)
    k = idx.shape[2]
    vals = _with_batch(values, bv, batch).reshape(batch, p, k, q)
    return out.scatter_add(2, idx.expand(batch, p, k, q), vals).reshape((batch,) + s.node.shape)


def _propagate(s, xs, frame):
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
    s = _with_batch(spikes, bs, batch) if out_batched else spikes[None]
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


# ---------------------------------------------------------------- rules: time structure
def _keep(done, old, new):
    return torch.where(done.reshape(done.shape + (1,) * (old.dim() - done.dim())), old, new)


TORCH_UNTIL = Until(_keep, operator.or_, lambda done: bool(done.all()))  # the `until` rule on tensors


def _loop(s, xs, frame):
    loop: Loop = s.extra
    spec = loop.spec.attrs
    n = len(spec.carried)
    batch = batch_size(xs, s.batched) if s.out else None
    flags = loop.body.flags
    nodes = loop.spec

    def lift(v, b):
        # In a batched loop every carried and stacked value is batched (ITEMs are batched).
        return _with_batch(v, b, batch) if s.out else v

    invariant = dict(zip(spec.invariant, xs[n:]))

    def body(carry):
        args = dict(invariant)
        args.update(zip(spec.carried, carry))
        vals = execute(loop.body, replace(frame, args=args, batch=batch))
        cond = None if nodes.until_node is None else lift(vals[nodes.until_node], flags[nodes.until_node]).bool()
        return ([lift(vals[k], flags[k]) for k in nodes.next_nodes], [lift(vals[k], flags[k]) for k in nodes.out_nodes],
                cond)

    carry, frames = iterate(spec.count, [lift(x, b) for x, b in zip(xs[:n], s.batched[:n])], body,
                            TORCH_UNTIL if nodes.until_node is not None else None)
    stacked = []
    for j, k in enumerate(nodes.out_nodes):
        if frames:
            stacked.append(torch.stack([f[j] for f in frames], dim=1 if s.out else 0))
        else:
            node = loop.body.graph.nodes[k]
            shape = ((batch,) if s.out else ()) + (0,) + node.shape
            stacked.append(torch.zeros(shape, dtype=TORCH_DTYPES[node.dtype], device=xs[0].device if xs else None))
    return tuple(carry) + tuple(stacked)


def _item(s, xs, frame):
    return xs[0][s.node.attr("index")]


RULES: dict[Op, Callable] = {
    Op.CONST: _const,
    Op.ARG: _arg,
    Op.ADD: _arith(torch.add),
    Op.SUB: _arith(torch.sub),
    Op.MUL: _arith(torch.mul),
    Op.DIV: _arith(torch.true_divide),
    Op.POW: _arith(torch.pow),
    Op.MOD: _arith(torch.remainder),
    Op.MAXIMUM: _arith(torch.maximum),
    Op.MINIMUM: _arith(torch.minimum),
    Op.NEG: _unary(torch.neg),
    Op.ABS: _unary(torch.abs),
    Op.EXP: _unary(torch.exp),
    Op.LOG: _unary(torch.log),
    Op.SQRT: _unary(torch.sqrt),
    Op.TANH: _unary(torch.tanh),
    Op.SIGMOID: _unary(torch.sigmoid),
    Op.RELU: _unary(torch.relu),
    Op.SILU: _unary(F.silu),
    Op.SOFTPLUS: _unary(F.softplus),
    Op.SIN: _unary(torch.sin),
    Op.COS: _unary(torch.cos),
    Op.ERF: _unary(torch.erf),
    Op.FLOOR: _unary(torch.floor),
    Op.LT: _compare(torch.lt),
    Op.LE: _compare(torch.le),
    Op.GT: _compare(torch.gt),
    Op.GE: _compare(torch.ge),
    Op.EQ: _compare(torch.eq),
    Op.NE: _compare(torch.ne),
    Op.AND: _compare(torch.logical_and),
    Op.OR: _compare(torch.logical_or),
    Op.NOT: _unary(torch.logical_not),
    Op.WHERE: _where,
    Op.CAST: _cast,
    Op.SPIKE: _spike,
    Op.SUM: _reduce(torch.sum),
    Op.MEAN: _reduce(torch.mean),
    Op.MAX: _reduce(torch.amax),
    Op.MIN: _reduce(torch.amin),
    Op.ARGMAX: _along(lambda x, ax: torch.argmax(x, dim=ax)),
    Op.SOFTMAX: _along(lambda x, ax: torch.softmax(x, dim=ax)),
    Op.LOGSUMEXP: _along(lambda x, ax: torch.logsumexp(x, dim=ax)),
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
}
_RULE_OF = {op.value: rule for op, rule in RULES.items()}  # by the op's string: an Enum hashes in Python


def evaluate(graph: Graph, env: dict[str, Any], batch: int | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """Evaluate ``graph`` once with torch: ``{(name, kind): tensor}`` for every result.

    The counterpart of ``reference.evaluate``: without ``batch`` nothing is batched; with it,
    states and inputs in ``env`` carry a leading batch axis and parameters do not.
    """
    args = graph.args()
    unbatched = frozenset(args) if batch is None else frozenset()
    consts: dict[str, np.ndarray] = {}
    plan = compile_plan(graph, consts, unbatched)
    frame = Frame({k: torch.as_tensor(v) for k, v in env.items()},
                  {k: torch.from_numpy(np.array(v)) for k, v in consts.items()}, batch)
    vals = execute(plan, frame)
    return {(r.name, r.kind): vals[r.node] for r in graph.results}


# ---------------------------------------------------------------- parameters
def external_name(var: Var) -> str:
    """The state_dict key of a parameter: its ``key``, else its path with ``/`` -> ``.``."""
    return var.key or var.name.replace("/", ".")


def _register(root: nn.Module, var: Var, value: torch.Tensor) -> tuple[nn.Module, str]:
    """Register ``value`` under ``external_name(var)`` with submodules for the dotted prefix."""
    key = external_name(var)
    *path, leaf = key.split(".")
    if not all(path) or not leaf:
        raise BackendError(f"{var.span}: error: parameter {var.name!r} has an invalid weight name {key!r}")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            if hasattr(module, part):
                raise BackendError(f"{var.span}: error: weight name {key!r} of {var.name!r} clashes with "
                                   f"another weight or a torch.nn.Module attribute ({part!r}); give it a `key`")
            child = nn.Module()
            module.add_module(part, child)
        module = child
    if hasattr(module, leaf):
        raise BackendError(f"{var.span}: error: weight name {key!r} of {var.name!r} is used twice or clashes "
                           "with a torch.nn.Module attribute; give it a distinct `key`")
    if var.learnable and var.dtype.is_float:
        module.register_parameter(leaf, nn.Parameter(value))
    else:
        module.register_buffer(leaf, value)  # frozen weights and index tensors: saved, never trained
    return module, leaf


# ---------------------------------------------------------------- the module
@dataclass(frozen=True, slots=True)
class _Lowered:
    """What a ProgramModule keeps besides tensors (a plain object, so nn.Module leaves it alone)."""

    program: Program
    step: Plan
    weights: tuple[tuple[Var, nn.Module, str], ...]
    init_plans: dict[str, tuple[Plan, int]]   # states with a RANDOM-free initial value, run in torch
    init_cache: dict[int, dict[str, np.ndarray]]
    next_nodes: dict[str, int]
    output_nodes: dict[str, int]
    result_nodes: dict[str, int]              # outputs and `value` results, by name
    plastic: frozenset[str]
    seed: int
    options: dict[str, Any]


class ProgramModule(nn.Module):
    """A compiled nspec program as a torch module (build it with ``to_module``).

    ``forward(steps=None, state=None, return_state=None, batch=None, **inputs)`` takes every input as
    [B, T, *shape] and returns ``{output: [B, T, *shape]}`` (plus ``"state/<path>"``: the final
    state, when ``return_state``).  The initial state is ``initial_state(B)`` unless ``state`` gives
    some or all of it as [B, *shape].
    """

    def __init__(self, program: Program, params: dict[str, Any], *, seed: int | None = None,
                 plasticity_grad: bool = False, return_state: bool = False, propagate: str = "auto"):
        super().__init__()
        verify_program(program)
        step = program.step
        derivs = [r.name for r in step.results if r.kind == "deriv"]
        if derivs:
            raise BackendError(f"the torch backend needs a discretised program, but {', '.join(derivs)} "
                               "still have derivatives (run the discretisation pass first)")
        init_only = [f"%{i} ({n.op.value})" for i, n in enumerate(step.nodes) if n.op in INIT_ONLY]
        if init_only:
            raise BackendError(f"the step graph holds initialisation-only nodes: {', '.join(init_only)}")
        if propagate not in ("auto", "dense", "event"):
            raise BackendError(f"propagate must be 'auto', 'dense' or 'event', not {propagate!r}")
        missing = [v.name for v in program.params if v.name not in params]
        if missing:
            raise BackendError(f"no value given for parameters {', '.join(missing)}")
        weights = []
        for v in program.params:
            value = torch.as_tensor(np.array(np.broadcast_to(params[v.name], v.shape), dtype=v.dtype.numpy))
            weights.append((v, *_register(self, v, value)))

        consts: dict[str, np.ndarray] = {}
        plastic = frozenset(s.name for s in program.states if s.plastic)
        step_plan = compile_plan(step, consts, local_results=plastic)
        next_nodes = {s.name: step.result(s.name, "next").node for s in program.states}
        output_nodes = {o.name: step.result(o.name, "output").node for o in program.outputs}
        # Results a run can return or record by name; an output wins over a value of the same name.
        result_nodes = {r.name: r.node for r in step.results if r.kind == "value"}
        result_nodes.update({r.name: r.node for r in step.results if r.kind == "output"})
        init_plans = self._init_plans(program, consts)
        holder = nn.Module()
        for name, value in consts.items():
            holder.register_buffer(name, torch.from_numpy(np.array(value)), persistent=False)
        self._nspec_consts = holder
        self._nspec = _Lowered(program, step_plan, tuple(weights), init_plans, {}, next_nodes, output_nodes,
                               result_nodes, plastic, program.seed if seed is None else int(seed),
                               {"plasticity_grad": plasticity_grad, "return_state": return_state,
                                "propagate": propagate})

    @staticmethod
    def _init_plans(program: Program, consts) -> dict[str, tuple[Plan, int]]:
        """Plans for states whose initial value is computed from constants and parameters only.

        Those are evaluated in torch from the current (raw) parameters, so a learned start state
        gets gradients and follows ``load_state_dict``; states with random draws come from the
        reference ``initialize`` instead (per trial, with the module's seed).
        """
        init = program.init
        params = {v.name for v in program.params}
        plans = {}
        for v in program.states:
            r = init.result(v.name, "value")
            if r is None:
                continue
            cone = init.reachable([r.node])
            nodes = [init.nodes[i] for i in cone]
            if any(n.op not in RULES or (n.op is Op.ARG and n.attr("name") not in params) for n in nodes):
                continue
            plan = compile_plan(init, consts, frozenset(init.args()), f"i{len(plans)}_", roots=[r.node])
            plans[v.name] = (plan, r.node)
        return plans

    # -- values
    def weight_of(self, name: str) -> torch.Tensor:
        """The stored (raw) tensor of the parameter with path ``name``."""
        for v, module, leaf in self._nspec.weights:
            if v.name == name:
                return getattr(module, leaf)
        raise KeyError(name)

    def param_values(self) -> dict[str, torch.Tensor]:
        """Every parameter's stored (raw) tensor, by path: what the step graph's ARGs read."""
        return {v.name: getattr(module, leaf) for v, module, leaf in self._nspec.weights}

    def _device(self) -> torch.device:
        for t in self._nspec_consts.buffers():
            return t.device
        for _, module, leaf in self._nspec.weights:
            return getattr(module, leaf).device
        return torch.device("cpu")

    def _frame(self, args, batch) -> Frame:
        o = self._nspec.options
        return Frame(args, dict(self._nspec_consts.named_buffers()), batch, o["plasticity_grad"], o["propagate"])

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Every state's initial value as [batch, *shape]."""
        low = self._nspec
        raw = self.param_values()
        out = self._random_initial_state(batch)
        for v in low.program.states:
            if v.name in low.init_plans:
                plan, node = low.init_plans[v.name]
                value = execute(plan, self._frame(raw, None))[node].to(TORCH_DTYPES[v.dtype])
                out[v.name] = value.expand(v.shape).expand((batch,) + v.shape)
        return out

    @torch.compiler.disable
    def _random_initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        low = self._nspec
        wanted = [v for v in low.program.states if v.name not in low.init_plans]
        if not wanted:
            return {}
        if batch not in low.init_cache:
            from nspec.runtime.reference import initialize  # the host draws every backend's random init
            low.init_cache[batch] = initialize(low.program, batch, low.seed)[1]
        device = self._device()
        return {v.name: torch.as_tensor(low.init_cache[batch][v.name], device=device) for v in wanted}

    # -- running
    def step(self, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], cache: dict | None = None):
        """One step: ``state`` and ``inputs`` as [B, *shape] -> ``(next_state, results)``.

        ``results`` holds every output and ``value`` result of the step graph as [B, *shape].
        ``cache`` (a dict kept across the steps of one run) saves work that depends on parameters
        only.  For long runs under ``torch.compile``, compile this function rather than the
        module, whose time loop would be unrolled (``simulate(..., step=torch.compile(m.step))``).
        """
        low = self._nspec
        batch = next((x.shape[0] for x in list(state.values()) + list(inputs.values())), 1)
        cache = {} if cache is None else cache
        if "parameters" not in cache:  # module lookups are slow next to a small step: once per run
            cache["parameters"] = self.param_values()
            cache["constants"] = dict(self._nspec_consts.named_buffers())
        args = dict(cache["parameters"])
        args.update(state)
        args.update(inputs)
        o = low.options
        frame = Frame(args, cache["constants"], batch, o["plasticity_grad"], o["propagate"], cache)
        vals = execute(low.step, frame)
        flags = low.step.flags
        results = {name: _batched(vals[node], flags[node], batch) for name, node in low.result_nodes.items()}
        new = {}
        for name, node in low.next_nodes.items():
            v = _batched(vals[node], flags[node], batch)
            new[name] = v.detach() if name in low.plastic and not o["plasticity_grad"] else v
        return new, results

    def simulate(self, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], steps: int,
                 record: tuple[tuple[str, int], ...] = (), step: Callable | None = None):
        """Run ``steps`` steps from ``state`` ([B, *shape]) with ``inputs`` ([B, T, *shape]).

        Returns ``(outputs, state, records)``: outputs [B, steps, *shape], the final state, and for
        each ``(name, every)`` the recorded values [steps // every, B, *shape] (a state before its
        update at that step, a step result that step's value).  ``step`` replaces ``self.step``
        (e.g. a compiled one, which then gets no cache: its inputs must keep their structure).
        """
        low = self._nspec
        program = low.program
        batch = next((x.shape[0] for x in list(state.values()) + list(inputs.values())), 1)
        states = {s.name for s in program.states}
        for name, _ in record:
            if name not in states and name not in low.result_nodes:
                raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        cache = {} if step is None else None
        step = self.step if step is None else step
        outputs: dict[str, list] = {name: [] for name in low.output_nodes}
        records: dict[str, list] = {name: [] for name, _ in record}
        for t in range(steps):
            new, results = step(state, {name: x[:, t] for name, x in inputs.items()}, cache)
            for name, every in record:
                if t % every == 0 and t // every < steps // every:
                    records[name].append(state[name] if name in states else results[name])
            for name in outputs:
                outputs[name].append(results[name])
            state = new
        out = {name: _stack(vs, 1, (batch, 0) + program.var(name).shape) for name, vs in outputs.items()}
        recs = {}
        for name, _ in record:
            shape = state[name].shape if name in states else (batch,) + program.step.nodes[low.result_nodes[name]].shape
            recs[name] = _stack(records[name], 0, (0,) + tuple(shape))
        return out, state, recs

    def forward(self, steps: int | None = None, state: dict[str, Any] | None = None,
                return_state: bool | None = None, batch: int | None = None, **inputs):
        """Run the program over its inputs ([B, T, *shape] each); see the class docstring."""
        program = self._nspec.program
        unknown = sorted(set(inputs) - {v.name for v in program.inputs})
        missing = [v.name for v in program.inputs if v.name not in inputs]
        if unknown or missing:
            raise BackendError(f"inputs: unknown {unknown}, missing {missing}")
        device = self._device()
        xs = {v.name: torch.as_tensor(inputs[v.name], device=device).to(TORCH_DTYPES[v.dtype]) for v in program.inputs}
        given = {k: torch.as_tensor(v, device=device) for k, v in (state or {}).items()}
        strays = sorted(set(given) - {s.name for s in program.states})
        if strays:
            raise BackendError(f"state: unknown {strays}; the states are {[s.name for s in program.states]}")
        leading = [x.shape[0] for x in list(xs.values()) + list(given.values())]
        if batch is None:
            batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"inputs and state disagree on the batch size: {sorted(set(leading + [batch]))}")
        if steps is None:
            lengths = [x.shape[1] for x in xs.values()]
            steps = min(lengths) if lengths else program.duration_steps
            if steps is None:
                raise BackendError(f"{program.name} has no inputs: give the number of steps")
        short = [n for n, x in xs.items() if x.shape[1] < steps]
        if short:
            raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")
        init = self.initial_state(batch) if set(given) != {s.name for s in program.states} else {}
        start = {s.name: given[s.name].to(TORCH_DTYPES[s.dtype]) if s.name in given else init[s.name]
                 for s in program.states}
        outputs, final, _ = self.simulate(start, xs, int(steps))
        if self._nspec.options["return_state"] if return_state is None else return_state:
            outputs.update({f"state/{k}": v for k, v in final.items()})
        return outputs


def _batched(v: torch.Tensor, b: bool, batch: int) -> torch.Tensor:
    return v if b else v.expand((batch,) + tuple(v.shape))


def _stack(vs: list, dim: int, empty_shape) -> torch.Tensor:
    return torch.stack(vs, dim=dim) if vs else torch.zeros(empty_shape)


def to_module(program: Program, params: dict[str, Any] | None = None, *, seed: int | None = None,
              plasticity_grad: bool = False, return_state: bool = False, propagate: str = "auto") -> ProgramModule:
    """A trainable torch module for ``program``.

    ``params`` (by path) default to the reference ``initialize`` with ``seed`` (default: the
    program's), so every backend starts from the same values.  ``plasticity_grad`` lets gradients
    flow through local plasticity updates; ``propagate`` picks PROPAGATE's algorithm ("auto": event-
    driven when no gradient is needed, dense otherwise).
    """
    if params is None:
        from nspec.runtime.reference import initialize
        params = initialize(program, 1, program.seed if seed is None else int(seed))[0]
    return ProgramModule(program, params, seed=seed, plasticity_grad=plasticity_grad,
                         return_state=return_state, propagate=propagate)


# ---------------------------------------------------------------- the executor
class TorchExecutor:
    """The executor protocol on torch: ``device`` "cpu" or "cuda", ``compile=True`` for torch.compile."""

    name = "torch"

    def __init__(self, program: Program, device: str = "cpu", compile: bool = False, propagate: str = "auto",
                 **options):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("the torch backend was asked for CUDA, but torch sees no CUDA device")
        zeros = {v.name: np.zeros(v.shape, v.dtype.numpy) for v in program.params}
        self.program = program
        self.module = ProgramModule(program, zeros, propagate=propagate).to(device).eval()
        # Compile one step, not the run: a compiled time loop would be unrolled over every step.
        self._step = torch.compile(self.module.step) if compile else None
        self.options = options

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps; see ``runtime/executor.py`` for the array conventions."""
        p = self.program
        require_values(p, request)
        steps = int(request.steps)
        device = self.module._device()
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        if leading and any(n != leading[0] for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")

        def tensor(value, var):
            return torch.as_tensor(np.asarray(value, var.dtype.numpy), device=device)

        with torch.no_grad():
            for v, module, leaf in self.module._nspec.weights:
                getattr(module, leaf).copy_(tensor(request.params[v.name], v).expand(v.shape))
            state = {v.name: tensor(request.state[v.name], v) for v in p.states}
            inputs = {v.name: tensor(request.inputs[v.name], v) for v in p.inputs}
            short = [n for n, x in inputs.items() if x.shape[1] < steps]
            if short:
                raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")
            outputs, state, records = self.module.simulate(state, inputs, steps, tuple(request.record), self._step)
        return RunResult({k: _numpy(v) for k, v in state.items()}, {k: _numpy(v) for k, v in outputs.items()},
                         {k: _numpy(v) for k, v in records.items()})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


__all__ = ["RULES", "SURROGATES", "Frame", "Site", "Plan", "compile_plan", "execute", "evaluate", "external_name", "ProgramModule", "to_module", "TorchExecutor"]
