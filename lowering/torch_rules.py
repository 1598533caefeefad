"""The torch lowering's interpreter: plans, the executor of a plan, and one rule per op.

A graph is compiled once into a ``Plan``: its live nodes in topological order, each a ``Site`` with
the static batched flags of ``ir.batched``.  A rule is called as
``RULES[op](site, xs, frame)``; ``xs`` are the input tensors and ``frame`` holds the ARG values, the
constants (module buffers, so they follow ``.to(device)``), the batch size and the run options.
Batched values carry a leading batch axis, so elementwise operands are aligned per sample, einsum
gets a batch letter, and axes count from the per-sample shape: the rules of
``compiler/batching.py``, which the reference interpreter applies too.

The plans and the rules live together because each needs the other: ``compile_plan`` checks every
op has a rule and ``execute`` dispatches to them, while the LOOP rule compiles and executes its
body's plan.  Runs do not go through this interpreter unless asked to: ``torch_codegen.py`` turns each
plan into generated code that calls the same rules for the ops it does not inline (``Frame.run``
says which executes a LOOP's body).  PROPAGATE's rule is in ``torch_propagate.py``, the random
draws' in ``torch_draws.py``, the batch-alignment helpers in ``torch_batching.py``.  The trainable
module and the executor built on them are in ``to_torch.py``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from nspec.compiler.batching import (LoopSpec, Until, batch_size, batched_equation, batched_perm,
                                     iterate, sliced, stored_axes, stored_axis, stored_shape)
from nspec.compiler.interpret import CHECK_FAILS
from nspec.compiler.ir import DType, Graph, IRError, Node, Op, batched
from nspec.lowering import surrogates
from nspec.lowering.torch_batching import align, with_batch
from nspec.lowering.torch_draws import normal, uniform
from nspec.lowering.torch_einsum import contract, contraction
from nspec.lowering.torch_propagate import propagate
from nspec.runtime.executor import BackendError


TORCH_DTYPES = {DType.f32: torch.float32, DType.f64: torch.float64, DType.i32: torch.int32,
                DType.i64: torch.int64, DType.bool: torch.bool}


# ---------------------------------------------------------------- plans
@dataclass(slots=True)  # not frozen: a frozen dataclass takes ~1.5 us to build, once per step and tick
class Frame:
    """What rules read besides their inputs: ARG values, constants, batch size and run options
    (never changed once built: a LOOP body gets a new one)."""

    args: dict[str, torch.Tensor]
    consts: dict[str, torch.Tensor]
    batch: int | None
    plasticity_grad: bool = False
    propagate: str = "auto"       # "dense" | "event" | "auto" (event-driven when no gradient is needed)
    cache: dict = field(default_factory=dict)  # per-run values of parameters only (by id of their Site),
                                               # and the "parameters" and "constants" tensors by name
    run: Callable | None = None   # how a LOOP runs its body's plan: ``execute`` (this interpreter) when
                                  # None, else the generated code of ``torch_codegen.py``


@dataclass(frozen=True, slots=True)
class Site:
    """One node ready to run: the batched flags of its inputs and of its value, and what its rule
    needs precomputed (rules are looked up by op, so a module holding plans can be pickled)."""

    index: int
    node: Node
    batched: tuple[bool, ...]
    out: bool
    dtype: torch.dtype | None     # None for LOOP, whose value is a tuple
    extra: Any = None             # per op: a CONST's buffer name, a LOOP's ``Loop``, an EINSUM's batched
                                  # equation, whether it is linear and its ``Contraction`` (or None),
                                  # a SPIKE's surrogate (name, args)
    once: bool = False            # computed from parameters and constants only: once per run (in a LOOP
                                  # body, from loop invariants too: once per run of the loop)
    op: str = ""                  # node.op.value, looked up per step (an Enum attribute is slow to read)


@dataclass(frozen=True, slots=True)
class Plan:
    """A graph compiled for repeated runs; ``local`` holds the nodes only plastic updates need."""

    graph: Graph
    flags: tuple[bool, ...]
    sites: tuple[Site, ...]
    local: tuple[Site, ...] = ()
    roots: tuple[int, ...] = ()   # the nodes whose values a run hands back (generated code returns only those)
    generated: Any = field(default=None, compare=False, repr=False)  # torch_codegen's per-plan slot


@dataclass(frozen=True, slots=True)
class Loop:
    """A LOOP node decoded (its attributes and the body nodes it reads) with its compiled body."""

    spec: LoopSpec
    body: Plan


def _parameter_only(graph: Graph, invariant: frozenset[str] = frozenset()) -> set[int]:
    """Nodes whose value depends on parameters and constants only (the same at every step of a run,
    as parameters change between runs, never during one): ELM's decay factors, a reparameterised
    weight, an index buffer's concatenation.  Their values are computed at the run's first step.
    In a LOOP body, ``invariant`` names the loop-invariant ARGs, which count as parameters: what
    depends on them only (CTM's key/value projection of its input) is computed at the first
    iteration of each run of the loop, which keeps its own cache (``_loop``)."""
    fixed: set[int] = set()
    for i, n in enumerate(graph.nodes):
        if n.op is Op.CONST or (n.op is Op.ARG and (n.attr("role") == "param" or n.attr("name") in invariant)):
            fixed.add(i)
        elif n.op not in _PER_STEP and n.inputs and all(j in fixed for j in n.inputs):
            fixed.add(i)
    return fixed


_PER_STEP = {Op.ARG, Op.RANDOM, Op.LOOP, Op.ITEM, Op.PROPAGATE}  # never computed once for a whole run


def node_error(node: Node, index: int, message: str) -> BackendError:
    return BackendError(f"{node.span}: error: %{index} ({node.op.value}): {message}")


def compile_plan(graph: Graph, consts: dict[str, np.ndarray], unbatched=frozenset(), prefix: str = "c",
                 local_results: frozenset[str] = frozenset(), roots=None, invariant: frozenset[str] = frozenset()
                 ) -> Plan:
    """Compile ``graph`` (the nodes that ``roots``, by default every result, depend on); a LOOP
    body's ``invariant`` ARGs count as parameters (``_parameter_only``).

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
    fixed = _parameter_only(graph, invariant)
    for i, n in enumerate(graph.nodes):
        if i not in live:
            continue
        if n.op not in RULES:
            raise node_error(n, i,
                             "the torch backend has no rule for this op (initialisation-only ops run on the host)")
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
            linear = linear_form(equation)
            extra = (equation, linear, None if linear else contraction(equation, tuple(j in fixed for j in n.inputs)))
        elif n.op is Op.SPIKE:
            try:
                extra = surrogates.resolve(n.attr("surrogate"), n.attr("surrogate_args"))
            except (KeyError, ValueError) as exc:
                raise node_error(n, i, str(exc).strip("'\"")) from None
        dtype = None if n.op is Op.LOOP else TORCH_DTYPES[n.dtype]
        once = i in fixed and n.op is not Op.CONST  # a parameter read once: generated code keeps it in a tuple
        site = Site(i, n, tuple(flags[j] for j in n.inputs), flags[i], dtype, extra, once, n.op.value)
        (tail if i in local else sites).append(site)
    return Plan(graph, flags, tuple(sites), tuple(tail), tuple(dict.fromkeys(roots)), CodeSlot())


def _compile_loop(graph: Graph, i: int, flags, consts, prefix: str) -> Loop:
    n = graph.nodes[i]
    try:
        spec = LoopSpec.of(n)
    except IRError as exc:
        raise node_error(n, i, str(exc)) from None
    unbatched = spec.unbatched([flags[j] for j in n.inputs], flags[i])
    return Loop(spec, compile_plan(spec.attrs.body, consts, unbatched, prefix, roots=spec.roots,
                                   invariant=frozenset(spec.attrs.invariant)))


class CodeSlot:
    """Where ``torch_codegen`` keeps a plan's generated code, built when its module is built
    (``torch_codegen.prepare``) or else on its first run; copies and pickles of a plan get an empty
    slot (the code is generated again where it is needed)."""

    __slots__ = ("code",)

    def __init__(self):
        self.code = None

    def __reduce__(self):
        return (CodeSlot, ())


def execute(plan: Plan, frame: Frame) -> list:
    """Interpret ``plan``: every live node's value (None elsewhere); plastic-only nodes run without
    gradients.  The debugging path of ``torch_codegen.execute``, which runs generated code instead."""
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
            raise node_error(s.node, s.index, f"{type(exc).__name__}: {exc}") from exc
        if s.dtype is not None and v.dtype != s.dtype:
            v = v.to(s.dtype)
        vals[s.index] = v
        if s.once:
            frame.cache[id(s)] = v


# ---------------------------------------------------------------- rules: leaves and elementwise
def _const(s, xs, frame):
    return frame.consts[s.extra]


def _arg(s, xs, frame):
    return frame.args[s.node.attr("name")]


def _arith(fn) -> Callable:
    """A binary op computed in the node's dtype (inputs are cast to it, as the reference does)."""

    def rule(s, xs, frame):
        a, b = align(xs, s.batched, len(s.node.shape), s.dtype)
        return fn(a, b)

    return rule


def _divide(fn) -> Callable:
    """DIV or MOD in the node's dtype; an integer divisor of 0 counts as 1 (``interpret.nonzero_divisor``)."""

    def rule(s, xs, frame):
        a, b = align(xs, s.batched, len(s.node.shape), s.dtype)
        if not b.is_floating_point():
            b = torch.where(b == 0, torch.ones_like(b), b)
        return fn(a, b)

    return rule


def _compare(fn) -> Callable:
    """A binary op on the operands' own dtypes (comparisons and logic give bool)."""

    def rule(s, xs, frame):
        a, b = align(xs, s.batched, len(s.node.shape))
        return fn(a, b)

    return rule


def _unary(fn) -> Callable:
    return lambda s, xs, frame: fn(xs[0])


def _where(s, xs, frame):
    c, a, b = align(xs, s.batched, len(s.node.shape))
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
    x, *affine = align(xs, s.batched, len(s.node.shape), s.dtype)
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
def linear_form(equation: str) -> bool:
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
    equation, linear, c = s.extra
    if linear:
        return torch.nn.functional.linear(xs[0], xs[1])
    if c is not None:  # one bmm (``torch_einsum.py``)
        return contract(c, *c.operands(*xs))
    return torch.einsum(equation, *xs)


def _reshape(s, xs, frame):
    x = xs[0]
    return x.reshape(stored_shape(s.node.shape, x.shape, s.batched[0]))


def _broadcast(s, xs, frame):
    (x,) = align(xs, s.batched, len(s.node.shape))
    return x.expand(stored_shape(s.node.shape, x.shape, s.batched[0]))


def _transpose(s, xs, frame):
    return xs[0].permute(batched_perm(s.node.attr("perm"), s.batched[0]))


def _concat(s, xs, frame):
    rank = len(s.node.shape)
    if s.out:
        batch = batch_size(xs, s.batched)
        xs = [with_batch(x, b, batch) for x, b in zip(xs, s.batched)]
    return torch.cat([x.to(s.dtype) for x in xs], dim=stored_axis(s.node.attr("axis"), rank, s.out))


def _slice(s, xs, frame):
    n = s.node
    return xs[0][sliced(n.attr("starts"), n.attr("stops"), n.attr("steps"), s.batched[0])]


def in_range(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Indices as int64, negative ones counted from the end (as ``np.take`` does), clamped into
    [0, size) so that no index leaves the buffer (``interpret.in_range``)."""
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx).clamp(0, size - 1)


def _gather(s, xs, frame):
    x, idx = xs
    axis = stored_axis(s.node.attr("axis"), x.dim() - s.batched[0], False)
    return take(s, x, in_range(idx, x.shape[axis + s.batched[0]]))


def take(s, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """GATHER with its indices already int64 and in range (``in_range``): generated code computes
    them once per run when they are fixed (an index buffer, a constant)."""
    bx, bi = s.batched
    axis = stored_axis(s.node.attr("axis"), x.dim() - bx, False)
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
    idx = in_range(idx, size)
    values = values.to(s.dtype)
    base = base.to(s.dtype)
    if not s.out:
        flat = values.reshape(base.shape[:axis] + (-1,) + base.shape[axis + 1:])
        return base.index_add(axis, idx.reshape(-1), flat)
    # One path for every batched pattern: [B, pre, n, post] with the indices expanded over pre and post.
    batch = batch_size(xs, s.batched)
    pre, post = s.node.shape[:axis], s.node.shape[axis + 1:]
    p, q = int(np.prod(pre)), int(np.prod(post))
    out = with_batch(base, bb, batch).reshape(batch, p, size, q)
    idx = with_batch(idx, bi, batch).reshape(batch, 1, -1, 1)
    k = idx.shape[2]
    vals = with_batch(values, bv, batch).reshape(batch, p, k, q)
    return out.scatter_add(2, idx.expand(batch, p, k, q), vals).reshape((batch,) + s.node.shape)


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
        return with_batch(v, b, batch) if s.out else v

    invariant = dict(zip(spec.invariant, xs[n:]))
    cache: dict = {}  # the body's loop-invariant values, computed at the first iteration of this run

    def body(carry):
        args = dict(invariant)
        args.update(zip(spec.carried, carry))
        vals = (frame.run or execute)(loop.body, Frame(args, frame.consts, batch, frame.plasticity_grad,
                                                        frame.propagate, cache, frame.run))
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


# ---------------------------------------------------------------- rules: run-time checks
def _check(s, xs, frame):
    """The status, or (site, its step, the first failing value) when it is clear and x fails."""
    status, x = xs
    a = s.node.attrs
    batch = batch_size(xs, s.batched) if s.out else 1
    st = with_batch(status, s.batched[0], batch) if s.out else status[None]
    flat = (with_batch(x, s.batched[1], batch) if s.out else x[None]).reshape(batch, -1).long()
    fails = CHECK_FAILS[a.kind](flat, a.size)
    if flat.shape[1]:
        value = flat.gather(1, fails.to(torch.uint8).argmax(dim=1, keepdim=True))[:, 0]
    else:
        value = torch.zeros_like(st[:, 0])
    report = (st[:, 0] == 0) & fails.any(dim=1)
    failed = torch.stack([torch.full_like(st[:, 0], a.site), st[:, 1], value], dim=1)
    out = torch.where(report[:, None], failed, st)
    return out if s.out else out[0]


RULES: dict[Op, Callable] = {
    Op.CONST: _const,
    Op.ARG: _arg,
    Op.ADD: _arith(torch.add),
    Op.SUB: _arith(torch.sub),
    Op.MUL: _arith(torch.mul),
    Op.DIV: _divide(torch.true_divide),
    Op.POW: _arith(torch.pow),
    Op.MOD: _divide(torch.remainder),
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
    Op.STOP_GRADIENT: _unary(torch.Tensor.detach),
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
    Op.PROPAGATE: propagate,
    Op.LOOP: _loop,
    Op.ITEM: _item,
    Op.UNIFORM: uniform,
    Op.CHECK: _check,
    Op.NORMAL: normal,
}
_RULE_OF = {op.value: rule for op, rule in RULES.items()}  # by the op's string: an Enum hashes in Python


__all__ = ["TORCH_DTYPES", "TORCH_UNTIL", "RULES", "Frame", "Site", "Plan", "Loop", "CodeSlot", "compile_plan",
           "execute", "node_error", "linear_form", "in_range", "take"]
