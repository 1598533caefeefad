"""Lower a Program's step graph, with the whole time loop around it, to one TIR PrimFunc.

The generator is an interpreter over the IR with two rule tables:

* ``EXPR_RULES``: fusible ops (elementwise arithmetic and logic, WHERE, CAST, SPIKE and the index
  remappings BROADCAST, SLICE, RESHAPE, TRANSPOSE, CONCAT) become scalar TIR expressions over the
  node's index.  Fusible nodes of one shape and one *level* (below) share one loop nest, so a
  neuron population's whole state update is one pass over the neuron index.
* ``KERNEL_RULES``: every other op (PROPAGATE, reductions, normalisations, EINSUM, GATHER,
  SCATTER_ADD, LOOP, ITEM) is a templated loop nest that writes a materialised buffer.

Levels order the work of one step: a kernel runs after its inputs (level = 1 + theirs), and a
fusible node joins its inputs' loop unless it reads them at another index or shape (then it
starts the next level and the input is stored to a buffer).  Within a level, kernels run first,
then the loop nests.  PROPAGATE is event-driven: the loop that computes its spikes also writes a
byte mask, and the kernel scans that mask eight neurons at a time (one 64-bit compare) and adds
``spike * weight`` along the CSR rows of the neurons that fired, in the reference's order
(presynaptic index ascending, then synapse index), so strict mode reproduces spike trains.

The function's shape::

    main(params..., states[B,..], inputs[B,T,..], outputs[B,T,..], records[R,B,..], consts..,
         workspaces.., steps, every..)
      for b in parallel(B):            # CUDA: one thread block per trial
        for t in range(steps):         # the whole time loop in compiled code
          record states; levels (kernels, loop nests); outputs, records; copy next states

A state whose next value is computed in a loop nest after every read of the old value is updated
in place; otherwise its next value goes to a buffer copied back at the end of the step.  In fast
mode ``add(x, propagate(...))`` starts at ``x`` and the PROPAGATE kernel adds into it (CUBA's step
is then one vector pass over the neurons plus the event scan).  A recorded spike vector (a value
PROPAGATE reads as a mask) is written as an event list, not a dense [steps, B, N] array.
Intermediate buffers live in per-dtype workspaces ([B * stride], one slice per trial) that the
executor allocates; their layout is found by emitting the function twice (the first emission
only collects the buffers' sizes).

On CUDA every loop nest is a block-strided loop over the flattened shape, each level ends with a
``__syncthreads``, and PROPAGATE adds with ``atomicAdd`` (in strict mode row by row, which keeps
the reference's order for every postsynaptic neuron when a row has no repeated targets).
"""

from __future__ import annotations

import contextlib
import contextvars
import string
from dataclasses import dataclass
from typing import Callable

import numpy as np

from nspec.compiler.ir import (ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, DType, Graph, Node, Op, Program,
                               batched)


class LoweringError(Exception):
    """The program cannot be lowered to TIR (an unsupported pattern); names the node."""


STORAGE = {DType.f32: "float32", DType.f64: "float64", DType.i32: "int32", DType.i64: "int64", DType.bool: "int8"}
LOGICAL = {DType.f32: "float32", DType.f64: "float64", DType.i32: "int32", DType.i64: "int64", DType.bool: "bool"}
ALIGN_BYTES = 64
VECTOR_LANES = 16  # two AVX2 registers of 32-bit lanes per iteration
FUSIBLE = (ELEMENTWISE_BINARY | ELEMENTWISE_UNARY
           | {Op.WHERE, Op.BROADCAST, Op.SLICE, Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT})
# fusible ops that read every input at the node's own index when the shapes agree
POINTWISE = ELEMENTWISE_BINARY | ELEMENTWISE_UNARY | {Op.WHERE}


@dataclass(frozen=True, slots=True)
class Options:
    """How to lower: ``device`` "cpu" or "cuda"; ``records`` names recorded each run; ``threads``
    per CUDA block; ``parallel`` runs trials on CPU threads."""

    device: str = "cpu"
    strict: bool = False
    records: tuple[str, ...] = ()
    threads: int = 256
    parallel: bool = True


@dataclass(frozen=True, slots=True)
class Arg:
    """One buffer argument of the generated function: ``kind`` in {param, state, input, output,
    record, const, workspace}; ``dtype`` its storage dtype; ``shape`` per sample."""

    kind: str
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    """The generated function's arguments: ``args`` (buffers, in order), then ``steps`` and one
    ``every`` per record; ``workspace`` gives each workspace dtype's per-trial size."""

    args: tuple[Arg, ...]
    records: tuple[str, ...]
    workspace: tuple[tuple[str, int], ...]
    consts: tuple[np.ndarray, ...]


# ---------------------------------------------------------------- TIR helpers (imported lazily)
def _tvm():
    from nspec.lowering.tvm_cache import import_tvm_ffi

    import_tvm_ffi()
    import tvm
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    return tvm, tirx, IRBuilder, T


def _imm(value, dtype: str):
    _, tirx, _, _ = _tvm()
    if dtype == "bool":
        return tirx.const(bool(value), "bool")
    if dtype.startswith("float"):
        return tirx.const(float(np.asarray(value, dtype)), dtype)
    return tirx.const(int(value), dtype)


def _dt(x) -> str:
    """The dtype of a TIR expression (or of a Python scalar used as one)."""
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int32"
    return str(x.ty)


def _cast(x, dtype: str):
    _, tirx, _, _ = _tvm()
    if isinstance(x, (int, float)):
        return _imm(x, dtype)
    if _dt(x) == dtype:
        return x
    if dtype == "bool":
        return tirx.NE(x, _imm(0, _dt(x)))
    return tirx.Cast(dtype, x)


def _promote(a, b):
    """NumPy's promotion of two operand dtypes (comparisons run on the operands' own dtypes)."""
    dt = np.result_type(np.dtype(_dt(a)), np.dtype(_dt(b)))
    name = "bool" if dt == np.bool_ else str(dt)
    return _cast(a, name), _cast(b, name)


def _is_float(dtype: str) -> bool:
    return dtype.startswith("float")


# ---------------------------------------------------------------- expression rules (fusible ops)
def _arith(fn):
    def rule(node, xs):
        dt = LOGICAL[node.dtype]
        return fn(dt, *[_cast(x, dt) for x in xs])

    return rule


# Strict CUDA code must not let nvcc/NVRTC contract a*b+c into an FMA (there is no flag to pass
# through TVM 0.27), so its float arithmetic uses the round-to-nearest intrinsics, which are never
# contracted.  Set while a strict CUDA function is emitted.
_STRICT_CUDA = contextvars.ContextVar("nspec_strict_cuda", default=False)
_RN = {("add", "float32"): "__fadd_rn", ("sub", "float32"): "__fsub_rn", ("mul", "float32"): "__fmul_rn",
       ("div", "float32"): "__fdiv_rn", ("add", "float64"): "__dadd_rn", ("sub", "float64"): "__dsub_rn",
       ("mul", "float64"): "__dmul_rn", ("div", "float64"): "__ddiv_rn"}


def _rounded(op: str, fn):
    """``fn(a, b)``, or its never-contracted intrinsic in strict CUDA code."""
    def rule(dt, a, b):
        name = _RN.get((op, dt))
        if name and _STRICT_CUDA.get():
            return _tvm()[1].call_pure_extern(dt, name, a, b)
        return fn(a, b)

    return rule


def _div(dt, a, b):
    _, tirx, _, _ = _tvm()
    return _rounded("div", lambda x, y: x / y)(dt, a, b) if _is_float(dt) else tirx.floordiv(a, b)


def _mod(dt, a, b):
    _, tirx, _, _ = _tvm()
    if not _is_float(dt):
        return tirx.floormod(a, b)
    # np.mod: the remainder takes the divisor's sign
    r = tirx.call_pure_extern(dt, "fmodf" if dt == "float32" else "fmod", a, b)  # no LLVM rule for tirx.fmod
    zero = _imm(0, dt)
    fix = tirx.Or(tirx.And(r < zero, b > zero), tirx.And(r > zero, b < zero))
    return tirx.Select(fix, r + b, r)


def _compare(fn):
    def rule(node, xs):
        a, b = _promote(*xs)
        return fn(a, b)

    return rule


def _unary(fn):
    def rule(node, xs):
        dt = LOGICAL[node.dtype]
        return fn(dt, _cast(xs[0], dt))

    return rule


def _sigmoid(dt, x):
    _, tirx, _, _ = _tvm()
    e = tirx.exp(-tirx.abs(x))
    one = _imm(1, dt)
    return tirx.Select(x >= _imm(0, dt), one / (one + e), e / (one + e))


def _softplus(dt, x):
    _, tirx, _, _ = _tvm()
    return tirx.Max(x, _imm(0, dt)) + tirx.log1p(tirx.exp(-tirx.abs(x)))


def _where(node, xs):
    _, tirx, _, _ = _tvm()
    dt = LOGICAL[node.dtype]
    return tirx.Select(_cast(xs[0], "bool"), _cast(xs[1], dt), _cast(xs[2], dt))


def _spike(node, xs):
    _, tirx, _, _ = _tvm()
    dt = LOGICAL[node.dtype]
    return _cast(xs[0] > _imm(0, _dt(xs[0])), dt)


def _same(node, xs):
    return _cast(xs[0], LOGICAL[node.dtype])


def _t(name):
    """A tirx function looked up by name when the rule runs (tvm is imported lazily)."""
    return lambda dt, *xs: getattr(_tvm()[1], name)(*xs)


EXPR_RULES: dict[Op, Callable] = {
    Op.ADD: _arith(_rounded("add", lambda a, b: a + b)),
    Op.SUB: _arith(_rounded("sub", lambda a, b: a - b)),
    Op.MUL: _arith(_rounded("mul", lambda a, b: a * b)),
    Op.DIV: _arith(_div),
    Op.POW: _arith(_t("pow")),
    Op.MOD: _arith(_mod),
    Op.MAXIMUM: _arith(_t("Max")),
    Op.MINIMUM: _arith(_t("Min")),
    Op.NEG: _unary(lambda dt, x: -x),
    Op.ABS: _unary(_t("abs")),
    Op.EXP: _unary(_t("exp")),
    Op.LOG: _unary(_t("log")),
    Op.SQRT: _unary(_t("sqrt")),
    Op.TANH: _unary(_t("tanh")),
    Op.SIGMOID: _unary(_sigmoid),
    Op.RELU: _unary(lambda dt, x: _tvm()[1].Max(x, _imm(0, dt))),
    Op.SILU: _unary(lambda dt, x: x * _sigmoid(dt, x)),
    Op.SOFTPLUS: _unary(_softplus),
    Op.SIN: _unary(_t("sin")),
    Op.COS: _unary(_t("cos")),
    Op.FLOOR: _unary(lambda dt, x: _tvm()[1].floor(x) if _is_float(dt) else x),
    Op.LT: _compare(lambda a, b: a < b),
    Op.LE: _compare(lambda a, b: a <= b),
    Op.GT: _compare(lambda a, b: a > b),
    Op.GE: _compare(lambda a, b: a >= b),
    Op.EQ: _compare(lambda a, b: _tvm()[1].EQ(a, b)),
    Op.NE: _compare(lambda a, b: _tvm()[1].NE(a, b)),
    Op.AND: lambda node, xs: _tvm()[1].And(_cast(xs[0], "bool"), _cast(xs[1], "bool")),
    Op.OR: lambda node, xs: _tvm()[1].Or(_cast(xs[0], "bool"), _cast(xs[1], "bool")),
    Op.NOT: lambda node, xs: _tvm()[1].Not(_cast(xs[0], "bool")),
    Op.WHERE: _where,
    Op.CAST: _same,
    Op.SPIKE: _spike,
    Op.BROADCAST: _same,
    Op.SLICE: _same,
    Op.RESHAPE: _same,
    Op.TRANSPOSE: _same,
}


# ---------------------------------------------------------------- index maps of fusible ops
def _bcast_index(idx, in_shape, out_shape):
    """NumPy broadcasting: the input's index for output index ``idx`` (axes aligned right)."""
    k = len(out_shape) - len(in_shape)
    return tuple(0 if s == 1 and out_shape[k + d] != 1 else idx[k + d] for d, s in enumerate(in_shape))


def _unflatten(flat, shape):
    _, tirx, _, _ = _tvm()
    out = []
    for d in reversed(shape):
        out.append(tirx.floormod(flat, d) if d != 1 else 0)
        flat = tirx.floordiv(flat, d)
    return tuple(reversed(out))


def _flatten(idx, shape):
    flat = 0
    for i, d in zip(idx, shape):
        flat = flat * d + i
    return flat


def input_index(node: Node, k: int, idx: tuple, in_shape: tuple[int, ...]) -> tuple:
    """The index at which fusible ``node`` reads its ``k``-th input, for output index ``idx``."""
    if node.op is Op.SLICE:
        return tuple(a + i * c for i, a, c in zip(idx, node.attr("starts"), node.attr("steps")))
    if node.op is Op.RESHAPE:
        return _unflatten(_flatten(idx, node.shape), in_shape) if in_shape else ()
    if node.op is Op.TRANSPOSE:
        out = [None] * len(in_shape)
        for d, p in enumerate(node.attr("perm")):
            out[p] = idx[d]
        return tuple(out)
    return _bcast_index(idx, in_shape, node.shape)


def _identity_read(graph: Graph, node: Node, k: int) -> bool:
    """Does ``node`` read input ``k`` at its own index (so both can share one loop body)?"""
    src = graph.nodes[node.inputs[k]]
    if node.op in POINTWISE or node.op in (Op.BROADCAST, Op.RESHAPE):
        return src.shape == node.shape
    if node.op is Op.SLICE:
        return src.shape == node.shape and all(a == 0 and c == 1 for a, c in zip(node.attr("starts"), node.attr("steps")))
    if node.op is Op.TRANSPOSE:
        return tuple(node.attr("perm")) == tuple(range(len(node.shape)))
    return False


# ---------------------------------------------------------------- planning one graph
def _is_inline_leaf(graph: Graph, flags: list[bool], i: int) -> bool:
    """Leaves, and unbatched scalar expressions of them, are recomputed wherever they are used."""
    n = graph.nodes[i]
    if n.op in (Op.ARG, Op.CONST):
        return True
    return n.op in FUSIBLE and not flags[i] and int(np.prod(n.shape)) == 1 and all(
        _is_inline_leaf(graph, flags, j) for j in n.inputs)


def spike_view(graph: Graph, i: int) -> tuple[int, int]:
    """PROPAGATE's spike input seen through 1-D unit-step SLICEs: (base node, offset)."""
    offset = 0
    while True:
        n = graph.nodes[i]
        if n.op is Op.SLICE and len(n.shape) == 1 and n.attr("steps")[0] == 1:
            offset += n.attr("starts")[0]
            i = n.inputs[0]
        else:
            return i, offset


def _deps(graph: Graph, i: int) -> tuple[int, ...]:
    n = graph.nodes[i]
    if n.op is Op.PROPAGATE:
        return (spike_view(graph, n.inputs[0])[0],) + n.inputs[1:]
    return n.inputs


@dataclass(frozen=True, slots=True)
class Plan:
    """How one graph is scheduled: live nodes, levels, which fusible nodes get buffers, the
    nodes PROPAGATE reads as byte masks, and the execution order of kernels and loop nests."""

    live: frozenset[int]
    level: dict
    stored: frozenset[int]
    masks: frozenset[int]
    order: tuple  # ("kernel", node) | ("group", shape, (nodes...))
    flags: tuple[bool, ...]
    accum: dict  # ADD node -> (the PROPAGATE accumulating into it, the other input's position)


def _accumulations(graph: Graph, live: set[int], consumers: dict, inline: set[int]) -> dict[int, tuple[int, int]]:
    """``a = add(x, propagate(...))`` with the PROPAGATE used only there: a -> (propagate, x's
    position).  Fast mode starts ``a`` at ``x`` and lets the kernel add the events into it
    (one pass less per step; the additions round in another order than the reference's)."""
    out = {}
    for p in sorted(live):
        n = graph.nodes[p]
        if n.op is not Op.PROPAGATE or len(consumers[p]) != 1:
            continue
        a = consumers[p][0]
        an = graph.nodes[a]
        if an.op is Op.ADD and an.dtype == n.dtype and an.shape == n.shape and an.inputs.count(p) == 1:
            k = 1 - an.inputs.index(p)
            x = an.inputs[k]
            if graph.nodes[x].shape == an.shape and x not in inline:
                out[a] = (p, k)
    return out


def plan_graph(graph: Graph, roots: list[int], flags: list[bool], accumulate: bool = False) -> Plan:
    """Schedule ``graph`` so that every node in ``roots`` is computed and stored."""
    live: set[int] = set()
    todo = list(roots)
    while todo:
        i = todo.pop()
        if i not in live:
            live.add(i)
            todo.extend(_deps(graph, i))
    inline = {i for i in live if _is_inline_leaf(graph, flags, i)}
    consumers: dict[int, list[int]] = {i: [] for i in live}
    for i in sorted(live):
        for j in _deps(graph, i):
            consumers[j].append(i)
    accum = _accumulations(graph, live, consumers, inline) if accumulate else {}
    fed = {p: a for a, (p, _) in accum.items()}
    level: dict[int, int] = {}

    def after(j):  # the level at which node j's value is complete
        return level[accum[j][0]] if j in accum else level[j]

    def fusible(j):
        return graph.nodes[j].op in FUSIBLE and j not in accum

    for i in sorted(live):
        n = graph.nodes[i]
        if i in inline:
            level[i] = 0
        elif i in fed:
            continue  # placed with the ADD it feeds
        elif i in accum:
            p, k = accum[i]
            x = n.inputs[k]
            level[i] = level[x] if graph.nodes[x].op in FUSIBLE or x in inline else after(x)
            level[p] = 1 + max([level[i]] + [after(j) for j in _deps(graph, p) if j not in inline])
        elif n.op in FUSIBLE:
            lv = 0
            for k, j in enumerate(n.inputs):
                if j in inline:
                    continue
                joins = fusible(j) and _identity_read(graph, n, k)
                lv = max(lv, after(j) + (0 if joins or not fusible(j) else 1))
            level[i] = lv
        else:
            level[i] = 1 + max((after(j) for j in _deps(graph, i) if j not in inline), default=0)
    roots_set = set(roots)
    stored, masks = set(accum), set()
    for i in sorted(live):
        n = graph.nodes[i]
        if n.op is Op.PROPAGATE:
            masks.add(spike_view(graph, n.inputs[0])[0])
        if i in inline or n.op not in FUSIBLE:
            continue
        for c in consumers[i]:
            cn = graph.nodes[c]
            same_loop = cn.op in FUSIBLE and level[c] == level[i] and all(
                _identity_read(graph, cn, k) for k, j in enumerate(cn.inputs) if j == i)
            if not same_loop:
                stored.add(i)
        if i in roots_set:
            stored.add(i)
    order = []
    for lv in sorted(set(level[i] for i in live if i not in inline)):
        order += [("kernel", i) for i in sorted(live) if level[i] == lv and i not in inline
                  and graph.nodes[i].op not in FUSIBLE]
        groups: dict[tuple, list[int]] = {}
        for i in sorted(live):
            if level[i] == lv and i not in inline and graph.nodes[i].op in FUSIBLE:
                groups.setdefault(graph.nodes[i].shape, []).append(i)
        order += [("group", shape, tuple(nodes)) for shape, nodes in groups.items()]
    return Plan(frozenset(live), level, frozenset(stored), frozenset(masks), tuple(order), tuple(flags), accum)


def in_place_ok(graph: Graph, plan: Plan, arg: int, nxt: int, end_readers: set[int]) -> bool:
    """May ``nxt`` (the next value of the state read by ARG ``arg``) be stored over that state
    while the step runs?  Only if every read of the old value happens earlier, or in the same
    loop body at the same index."""
    n = graph.nodes[nxt]
    if nxt not in plan.stored or n.op not in FUSIBLE or arg in end_readers:
        return False
    if any(arg in graph.reachable([r]) for r in end_readers):
        return False  # an output or record reading the old value is copied out after the step
    pos = {}
    for k, item in enumerate(plan.order):
        for i in ((item[1],) if item[0] == "kernel" else item[2]):
            pos[i] = k
    for c in plan.live:
        for k, j in enumerate(_deps(graph, c)):
            if j != arg:
                continue
            if c not in pos:  # an inline scalar expression of the state: read anywhere
                return False
            if pos[c] < pos[nxt]:
                continue
            # a read at the same index in the same vector loop sees the old value (writes go last);
            # a scalar group has no loop, so there the old value must be read before the write
            if (pos[c] == pos[nxt] and graph.nodes[c].op in FUSIBLE and graph.nodes[c].shape != ()
                    and _identity_read(graph, graph.nodes[c], k)):
                continue
            return False
    return True


# ---------------------------------------------------------------- values
class Ref:
    """A stored value: ``buf`` indexed by ``prefix + idx``; bool values are stored as int8."""

    def __init__(self, buf, prefix: tuple, logical: str):
        self.buf, self.prefix, self.logical = buf, tuple(prefix), logical

    def _index(self, idx) -> list:
        full = list(self.prefix) + list(idx)
        return full + [0] * (len(self.buf.shape) - len(full))  # scalars live in 1-element buffers

    def load(self, idx):
        _, tirx, _, _ = _tvm()
        x = tirx.BufferLoad(self.buf, self._index(idx))
        return _cast(x, self.logical) if self.logical == "bool" else x

    def store(self, idx, value):
        _, _, _, T = _tvm()
        value = _cast(value, self.logical)
        if str(self.buf.dtype) != _dt(value):
            value = _cast(value, self.buf.dtype)
        T.buffer_store(self.buf, value, self._index(idx))


class Imm:
    """A constant scalar, readable at any index."""

    def __init__(self, value, logical: str):
        self.value, self.logical = value, logical

    def load(self, idx):
        return _imm(self.value, self.logical)


class Lazy:
    """An inline expression of other values, recomputed at each index it is read."""

    def __init__(self, fn, logical: str):
        self.fn, self.logical = fn, logical

    def load(self, idx):
        return self.fn(idx)


class Bound:
    """A value bound to a local variable inside the current loop body (read at that index only)."""

    def __init__(self, var, logical: str):
        self.var, self.logical = var, logical

    def load(self, idx):
        return self.var


# ---------------------------------------------------------------- the emitter
class Emitter:
    """Emits the PrimFunc for one program.  ``layout`` (from a first emission) sizes workspaces."""

    def __init__(self, program: Program, opts: Options, layout: dict | None = None):
        self.program, self.opts = program, opts
        self.layout = layout
        self.used: dict[str, int] = {}
        self.consts: list[np.ndarray] = []
        self.const_bufs: dict[int, object] = {}
        self.ws: dict[str, object] = {}
        self.vectorizing = False
        self.events: frozenset[str] = frozenset()

    # -- storage
    def scratch(self, shape, dtype: DType | str, pad: int = 0):
        """A per-trial buffer of ``shape`` in the workspace of its storage dtype."""
        _, tirx, _, T = _tvm()
        st = STORAGE[dtype] if isinstance(dtype, DType) else dtype
        size = max(int(np.prod(shape)), 1) + pad
        per = ALIGN_BYTES // np.dtype(st).itemsize
        off = -(-self.used.get(st, 0) // per) * per
        self.used[st] = off + size
        stride = self.layout.get(st, 0) if self.layout else 0
        ws = self.ws[st]
        shape = tuple(shape) if shape else (1,)
        return T.decl_buffer(shape, st, data=ws.data, elem_offset=self.b * stride + off) if self.layout else \
            tirx.decl_buffer(shape, st, "scratch", data=ws.data, elem_offset=self.b * stride + off)

    def scratch_ref(self, node: Node):
        return Ref(self.scratch(node.shape, node.dtype, pad=16 if node.dtype is DType.bool else 0), (),
                   LOGICAL[node.dtype])

    # -- loops
    def foreach(self, shape):
        """Loops over ``shape`` (CPU: one flat loop over the leading axes, one over the last; CUDA:
        block-strided over the flattened shape)."""
        _, tirx, _, T = _tvm()
        stack = contextlib.ExitStack()
        if not shape:
            if self.opts.device == "cuda":
                stack.enter_context(T.If(self.tx == 0))
                stack.enter_context(T.Then())
            return stack, ()
        if self.opts.device == "cuda":
            size = int(np.prod(shape))
            n = self.opts.threads
            it = stack.enter_context(T.serial(0, -(-size // n)))
            flat = it * n + self.tx
            stack.enter_context(T.If(flat < size))
            stack.enter_context(T.Then())
            return stack, _unflatten(flat, shape)
        # the leading axes as one flat loop, the last as its own (see vloop: no short nests)
        row = stack.enter_context(T.serial(0, int(np.prod(shape[:-1]))))
        return stack, _unflatten(row, shape[:-1]) + (stack.enter_context(T.serial(0, shape[-1])),)

    def vectorized(self, shape) -> bool:
        return self.opts.device != "cuda" and bool(shape) and shape[-1] >= VECTOR_LANES

    def vloop(self, shape, fn):
        """Calls ``fn(idx, lane)`` inside loops over ``shape``.  On CPU the last axis is split
        into vector lanes (``lane`` is the lane variable) plus a scalar tail (``lane`` None):
        LLVM alone gives up on loops that touch many buffers."""
        _, _, _, T = _tvm()
        lanes = VECTOR_LANES
        if not self.vectorized(shape):
            stack, idx = self.foreach(shape)
            with stack:
                fn(idx, None)
            return
        # The leading axes run as one flat loop (same iteration order as the nest): LLVM fully
        # unrolls a nest of short constant-trip loops around the vector loop when their product
        # is just small enough (a ReLU over [4, 16, 512] became 512 straight-line vector ops and
        # took 3.6 s to compile, against 0.2 s at [4, 15, 512] or as one loop of 64 rows).
        d, rows = shape[-1], int(np.prod(shape[:-1]))
        with T.serial(0, rows) as row:
            outer = _unflatten(row, shape[:-1])
            with T.serial(0, d // lanes) as io:
                with T.vectorized(0, lanes) as ii:
                    fn(outer + (io * lanes + ii,), ii)
            if d % lanes:
                with T.serial(d - d % lanes, d) as it:
                    fn(outer + (it,), None)

    def single(self):
        """A block run by one thread (CUDA) or simply run (CPU)."""
        _, _, _, T = _tvm()
        stack = contextlib.ExitStack()
        if self.opts.device == "cuda":
            stack.enter_context(T.If(self.tx == 0))
            stack.enter_context(T.Then())
        return stack

    def sync(self):
        _, tirx, _, T = _tvm()
        if self.opts.device == "cuda":
            T.evaluate(tirx.op.tvm_storage_sync("shared"))

    def copy(self, dst, src, shape):
        self.vloop(shape, lambda idx, lane: dst.store(idx, src.load(idx)))

    # -- graphs
    def emit_graph(self, graph: Graph, env: dict, roots: list[int], flags: list[bool], inplace: dict) -> dict:
        """Emit one evaluation of ``graph``: ``env`` maps ARG names to values, ``inplace`` maps
        result nodes to the Ref they may be stored into directly.  Returns node -> value."""
        plan = plan_graph(graph, roots, flags, not self.opts.strict)
        vals: dict[int, object] = {}
        for i in sorted(plan.live):
            n = graph.nodes[i]
            if n.op in LEAF_RULES:
                vals[i] = LEAF_RULES[n.op](self, env, i, n)
        for i in sorted(plan.live):  # inline scalar expressions
            n = graph.nodes[i]
            if i not in vals and _is_inline_leaf(graph, flags, i):
                vals[i] = self.lazy(graph, n, vals)
        for i in sorted(plan.stored):
            vals[i] = inplace.get(i) or self.scratch_ref(graph.nodes[i])
        masks = {}
        for m in plan.masks:
            mn, ref = graph.nodes[m], vals.get(m)
            if mn.op not in FUSIBLE:
                masks[m] = (None, False)  # an argument or a kernel's value: read it directly
            elif mn.dtype is DType.bool and isinstance(ref, Ref) and ref.prefix == () and m not in inplace:
                masks[m] = (ref, True)
            else:
                masks[m] = (Ref(self.scratch(mn.shape, "int8", pad=16), (), "bool"), True)
        self.masks = masks
        for item in plan.order:
            if item[0] == "kernel":
                i = item[1]
                n = graph.nodes[i]
                if n.op not in KERNEL_RULES:
                    raise LoweringError(f"{n.span}: %{i}: no TIR rule for {n.op.value}")
                fed = [a for a, (p, _) in plan.accum.items() if p == i]
                if fed:
                    vals[i] = vals[fed[0]]
                elif i not in vals:
                    vals[i] = self.scratch_ref(n) if n.op not in (Op.LOOP, Op.ITEM) else None
                KERNEL_RULES[n.op](self, graph, i, vals, plan)
                self.sync()
            else:
                self.emit_group(graph, item[1], item[2], vals, plan, masks, inplace)
                self.sync()
        return vals

    def emit_group(self, graph, shape, nodes, vals, plan, masks, inplace):
        """One loop nest computing the fusible ``nodes`` of one shape and level."""
        _, _, _, T = _tvm()
        # Scalar loops let-bind every value.  Vector loops cannot (TVM 0.27 crashes on let-bound
        # vectors), so there a value is inlined into its consumers, read back from the buffer it
        # is stored to, or captured in a per-trial lane buffer when it is used twice; states
        # updated in place are captured and written last, so no expression of the loop body
        # reads a state after its update.
        uses = {i: 0 for i in nodes}
        for i in nodes:
            n = graph.nodes[i]
            for k, j in enumerate(n.inputs):
                if j in uses and _identity_read(graph, n, k):
                    uses[j] += 1
        lane_bufs = {}
        if self.vectorized(shape):
            # workspace slices, not allocations: an allocation here would run every step
            lane_bufs = {i: self.scratch((VECTOR_LANES,), graph.nodes[i].dtype) for i in nodes
                         if i in inplace or (i not in plan.stored and uses[i] > 1
                                             and graph.nodes[i].dtype is not DType.bool)}

        def body(idx, lane):
            local: dict[int, object] = {}
            deferred = []
            for i in nodes:
                n = graph.nodes[i]
                xs = []
                for k, j in enumerate(n.inputs):
                    src = local.get(j) if _identity_read(graph, n, k) else None
                    xs.append(src if src is not None else vals.get(j))
                if i in plan.accum:  # starts at x; the PROPAGATE kernel adds the events
                    value = _cast(xs[plan.accum[i][1]].load(idx), LOGICAL[n.dtype])
                else:
                    value = self.expr(graph, n, xs, idx)
                if lane is None:
                    var = _cast(T.bind(_cast(value, "int8")), "bool") if n.dtype is DType.bool else T.bind(value)
                    if i in plan.stored:
                        vals[i].store(idx, var)
                elif i in lane_bufs:
                    ref = Ref(lane_bufs[i], (), LOGICAL[n.dtype])
                    ref.store((lane,), value)
                    var = ref.load((lane,))
                    if i in plan.stored:
                        deferred.append((vals[i], var))
                elif i in plan.stored:
                    vals[i].store(idx, value)
                    var = vals[i].load(idx)
                else:
                    var = value
                local[i] = Bound(var, LOGICAL[n.dtype])
                mask = masks.get(i, (None,))[0]
                if mask is not None and mask is not vals.get(i):
                    mask.store(idx, _cast(var, "bool"))
            for ref, var in deferred:
                ref.store(idx, var)

        self.vloop(shape, body)

    def expr(self, graph, n: Node, xs: list, idx):
        """The value of fusible node ``n`` at ``idx``, reading its inputs' values ``xs``."""
        if n.op in INDEX_RULES:
            return INDEX_RULES[n.op](graph, n, xs, idx)
        args = [x.load(input_index(n, k, idx, graph.nodes[j].shape)) for k, (x, j) in enumerate(zip(xs, n.inputs))]
        return EXPR_RULES[n.op](n, args)

    def lazy(self, graph, n: Node, vals):
        xs = [vals[j] for j in n.inputs]
        return Lazy(lambda idx: self.expr(graph, n, xs, idx), LOGICAL[n.dtype])

    def const(self, env, i: int, n: Node):
        value = np.asarray(n.attr("value"))
        if value.size == 1:
            return Imm(value.reshape(()).item(), LOGICAL[n.dtype])
        key = id(n)
        if key not in self.const_bufs:
            raise LoweringError(f"{n.span}: %{i}: constant array was not registered")
        return Ref(self.const_bufs[key], (), LOGICAL[n.dtype])


def _concat(graph: Graph, n: Node, xs: list, idx):
    """CONCAT reads the input whose range along the axis holds the index (only that one)."""
    _, tirx, _, _ = _tvm()
    axis = n.attr("axis") % len(n.shape)
    parts, start = [], 0
    for x, j in zip(xs, n.inputs):
        size = graph.nodes[j].shape[axis]
        parts.append((start, size, x))
        start += size
    out = None
    for start, size, x in reversed(parts):
        shifted = tuple(i - start if d == axis else i for d, i in enumerate(idx))
        v = _cast(x.load(shifted), LOGICAL[n.dtype])
        out = v if out is None else tirx.if_then_else(idx[axis] < start + size, v, out)
    return out


INDEX_RULES: dict[Op, Callable] = {Op.CONCAT: _concat}
LEAF_RULES: dict[Op, Callable] = {
    Op.ARG: lambda em, env, i, n: env[n.attr("name")],
    Op.CONST: Emitter.const,
}


# ---------------------------------------------------------------- kernel rules
def _k_propagate(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    base, offset = spike_view(graph, n.inputs[0])
    n_pre = graph.nodes[n.inputs[0]].shape[0]
    mask, fusible = em.masks[base]
    spikes = vals[base]
    indptr, indices, weights = (vals[j] for j in n.inputs[1:])
    out = vals[i]
    dt = LOGICAL[n.dtype]
    n_post = n.attr("n_post", n.shape[0])
    w_rank = len(graph.nodes[n.inputs[3]].shape)
    if not any(p == i for p, _ in plan.accum.values()):
        em.vloop((n_post,), lambda idx, lane: out.store(idx, _imm(0, dt)))
        em.sync()

    def row(pre, strided):
        lo = T.bind(_cast(indptr.load((pre,)), "int32"))
        hi = T.bind(_cast(indptr.load((pre + 1,)), "int32"))
        s = _cast(spikes.load((offset + pre,)), dt)

        def add(k):
            w = _cast(weights.load((k,) if w_rank else ()), dt)
            j = _cast(indices.load((k,)), "int32")
            if em.opts.device == "cuda":
                T.evaluate(T.call_intrin(dt, "tirx.cuda.atomic_add", T.address_of(out.buf[out.prefix + (j,)]), w * s))
            else:
                out.store((j,), out.load((j,)) + w * s)

        if strided:
            nthr = em.opts.threads
            with T.serial(0, tirx.floordiv(hi - lo + nthr - 1, nthr)) as it:
                k = lo + it * nthr + em.tx
                with T.If(k < hi):
                    with T.Then():
                        add(k)
        else:
            with T.serial(lo, hi) as k:
                add(k)

    def fired(pre):
        return mask.load((offset + pre,)) if fusible else _cast(spikes.load((offset + pre,)), "bool")

    if em.opts.device == "cuda":
        if em.opts.strict:
            with T.serial(0, n_pre) as pre:
                with T.If(fired(pre)):
                    with T.Then():
                        row(pre, strided=True)
                        em.sync()
        else:
            stack, (pre,) = em.foreach((n_pre,))
            with stack:
                with T.If(fired(pre)):
                    with T.Then():
                        row(pre, strided=False)
    elif fusible and offset % 8 == 0:
        # eight mask bytes per 64-bit word: a step with few events costs n_pre / 8 compares
        with T.serial(0, -(-n_pre // 8)) as w:
            word = T.reinterpret("int64", mask.buf[tirx.Ramp(offset + w * 8, 1, 8)])
            with T.If(tirx.NE(word, _imm(0, "int64"))):
                with T.Then():
                    with T.serial(0, 8) as lane:
                        pre = w * 8 + lane
                        with T.If(tirx.And(pre < n_pre, fired(pre))):
                            with T.Then():
                                row(pre, strided=False)
    else:
        with T.serial(0, n_pre) as pre:
            with T.If(fired(pre)):
                with T.Then():
                    row(pre, strided=False)


def _reduce_axes(n: Node, in_shape):
    axes = tuple(sorted(a % len(in_shape) for a in n.attr("axes"))) if in_shape else ()
    return axes


def _k_reduce(kind):
    def rule(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
        _, tirx, _, T = _tvm()
        n = graph.nodes[i]
        x = vals[n.inputs[0]]
        in_shape = graph.nodes[n.inputs[0]].shape
        axes = _reduce_axes(n, in_shape)
        keep = bool(n.attr("keepdims", False))
        kept = [d for d in range(len(in_shape)) if d not in axes]
        out = vals[i]
        dt = LOGICAL[n.dtype]
        stack, idx = em.foreach(n.shape)
        with stack:
            pos = {d: idx[d] if keep else idx[k] for k, d in enumerate(kept)}
            first = tuple(0 if d in axes else pos[d] for d in range(len(in_shape)))
            init = _imm(0, dt) if kind in ("sum", "mean") else _cast(x.load(first), dt)
            out.store(idx, init)
            with contextlib.ExitStack() as red:
                rv = {d: red.enter_context(T.serial(0, in_shape[d])) for d in axes}
                full = tuple(rv[d] if d in axes else pos[d] for d in range(len(in_shape)))
                v = _cast(x.load(full), dt)
                acc = out.load(idx)
                out.store(idx, {"sum": acc + v, "mean": acc + v, "max": tirx.Max(acc, v),
                                "min": tirx.Min(acc, v)}[kind])
            if kind == "mean":
                count = int(np.prod([in_shape[d] for d in axes]))
                out.store(idx, out.load(idx) / _imm(count, dt))

    return rule


def _rows(em: Emitter, shape, axis):
    """Loops over every index of ``shape`` except ``axis``; yields (stack, fn(j) -> full index)."""
    outer_shape = tuple(d for k, d in enumerate(shape) if k != axis)
    stack, idx = em.foreach(outer_shape)

    def at(j):
        idx_l = list(idx)
        idx_l.insert(axis, j)
        return tuple(idx_l)

    return stack, at, idx


def _k_argmax(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    x = vals[n.inputs[0]]
    shape = graph.nodes[n.inputs[0]].shape
    axis = n.attr("axis") % len(shape)
    out = vals[i]
    stack, at, idx = _rows(em, shape, axis)
    with stack:
        out.store(idx, _imm(0, LOGICAL[n.dtype]))
        with T.serial(1, shape[axis]) as j:
            best = _cast(out.load(idx), "int32")
            with T.If(x.load(at(j)) > x.load(at(best))):
                with T.Then():
                    out.store(idx, _cast(j, LOGICAL[n.dtype]))


def _k_softmax(log: bool):
    def rule(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
        _, tirx, _, T = _tvm()
        n = graph.nodes[i]
        x = vals[n.inputs[0]]
        shape = graph.nodes[n.inputs[0]].shape
        axis = n.attr("axis") % len(shape)
        dt = LOGICAL[n.dtype]
        outer_shape = tuple(d for k, d in enumerate(shape) if k != axis)
        m = Ref(em.scratch(outer_shape, dt), (), dt)
        s = Ref(em.scratch(outer_shape, dt), (), dt)
        out = vals[i]
        stack, at, idx = _rows(em, shape, axis)
        with stack:
            m.store(idx, x.load(at(0)))
            with T.serial(1, shape[axis]) as j:
                m.store(idx, tirx.Max(m.load(idx), x.load(at(j))))
            if log:
                fin = tirx.isfinite(m.load(idx))
                m.store(idx, tirx.Select(fin, m.load(idx), _imm(0, dt)))
            s.store(idx, _imm(0, dt))
            with T.serial(0, shape[axis]) as j:
                e = tirx.exp(x.load(at(j)) - m.load(idx))
                if not log:
                    out.store(at(j), e)
                s.store(idx, s.load(idx) + e)
            if log:
                out.store(idx, tirx.log(s.load(idx)) + m.load(idx))
            else:
                with T.serial(0, shape[axis]) as j:
                    out.store(at(j), out.load(at(j)) / s.load(idx))

    return rule


def _k_layernorm(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    xs = [vals[j] for j in n.inputs]
    shapes = [graph.nodes[j].shape for j in n.inputs]
    shape = n.shape
    dt = LOGICAL[n.dtype]
    axis = len(shape) - 1
    outer_shape = shape[:-1]
    mean = Ref(em.scratch(outer_shape, dt), (), dt)
    var = Ref(em.scratch(outer_shape, dt), (), dt)
    out = vals[i]
    width = _imm(shape[-1], dt)

    def x_at(k, full):
        return _cast(xs[k].load(_bcast_index(full, shapes[k], shape)), dt)

    stack, at, idx = _rows(em, shape, axis)
    with stack:
        mean.store(idx, _imm(0, dt))
        with T.serial(0, shape[-1]) as j:
            mean.store(idx, mean.load(idx) + x_at(0, at(j)))
        mean.store(idx, mean.load(idx) / width)
        var.store(idx, _imm(0, dt))
        with T.serial(0, shape[-1]) as j:
            d = x_at(0, at(j)) - mean.load(idx)
            var.store(idx, var.load(idx) + d * d)
        var.store(idx, tirx.sqrt(var.load(idx) / width + _imm(n.attr("eps"), dt)))
        with T.serial(0, shape[-1]) as j:
            y = (x_at(0, at(j)) - mean.load(idx)) / var.load(idx)
            if len(xs) > 1:
                y = y * x_at(1, at(j))
            if len(xs) > 2:
                y = y + x_at(2, at(j))
            out.store(at(j), y)


def _k_einsum(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    lhs, rhs = n.attr("equation").replace(" ", "").split("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, j in zip(terms, n.inputs):
        for c, d in zip(term, graph.nodes[j].shape):
            sizes[c] = d
    red = [c for c in dict.fromkeys("".join(terms)) if c not in rhs]
    dt = LOGICAL[n.dtype]
    out = vals[i]
    xs = [vals[j] for j in n.inputs]

    def product(env):
        p = None
        for term, x in zip(terms, xs):
            v = _cast(x.load(tuple(env[c] for c in term)), dt)
            p = v if p is None else p * v
        return p

    if em.opts.device == "cuda" or not rhs:
        stack, idx = em.foreach(n.shape)
        with stack:
            env = dict(zip(rhs, idx))
            out.store(idx, _imm(0, dt))
            with contextlib.ExitStack() as s:
                env.update({c: s.enter_context(T.serial(0, sizes[c])) for c in red})
                out.store(idx, out.load(idx) + product(env))
        return
    work = int(np.prod([sizes[c] for c in sizes]))
    for k, term in enumerate(terms):
        packed = _pack_for_axpy(em, term, rhs[-1], graph.nodes[n.inputs[k]], xs[k], work)
        if packed is not None:
            terms[k], xs[k] = packed
    if _is_float(dt) and all(t.count(rhs[-1]) == 0 or (t[-1] == rhs[-1] and t.count(rhs[-1]) == 1)
                             for t in terms):
        _einsum_tiles(em, rhs, red, sizes, dt, out, product)
        return
    # CPU template where an operand is read along the last output axis with a stride: that axis
    # innermost and reductions outside it, an axpy over the output that LLVM vectorises
    stack, idx = em.foreach(n.shape)
    with stack:
        out.store(idx, _imm(0, dt))
    with contextlib.ExitStack() as s:
        env = {c: s.enter_context(T.serial(0, sizes[c])) for c in rhs[:-1]}
        env.update({c: s.enter_context(T.serial(0, sizes[c])) for c in red})
        env[rhs[-1]] = s.enter_context(T.serial(0, sizes[rhs[-1]]))
        oidx = tuple(env[c] for c in rhs)
        out.store(oidx, out.load(oidx) + product(env))


TILE_ROWS = 6     # output rows of one register tile
TILE_VECTORS = 1  # VECTOR_LANES-wide column vectors of one tile: 6 x 16 floats = 12 AVX2 registers
TILE_DEPTH = 256  # reduction steps per pass over the output, so a tile's operand panels stay in cache


def _einsum_tiles(em: Emitter, rhs: str, red: list[str], sizes: dict, dt: str, out, product):
    """The CPU einsum as register tiles: TILE_ROWS output rows (letter ``rhs[-2]``) by
    TILE_VECTORS x VECTOR_LANES columns (``rhs[-1]``, contiguous in every operand that has it)
    accumulate in a local buffer LLVM keeps in registers while the reduction runs, then are
    stored.  Column blocks run outside row blocks, so an operand's panel of columns stays in
    cache across the rows; a long reduction (its letters flattened, in their loop order) runs
    in passes of TILE_DEPTH steps over the whole output, each pass resuming from the stored
    partial sums.  Remainders: a narrower block of whole vectors, then one column at a time;
    fewer rows.  Each output element still starts at 0 and adds the products in the reduction
    letters' loop order, as the reference does, so strict mode (no FMA) gives the same bits."""
    _, tirx, _, T = _tvm()
    lanes = VECTOR_LANES
    col = rhs[-1]
    row = rhs[-2] if len(rhs) > 1 else None
    n_rows = sizes[row] if row else 1
    n_cols = sizes[col]
    red_shape = tuple(sizes[c] for c in red)
    depth = int(np.prod(red_shape))
    acc = T.decl_buffer((TILE_ROWS, TILE_VECTORS * lanes), dt, scope="local")

    def tile(outer: dict, r0, rows: int, c0, vectors: int, width: int, k0, steps: int, first):
        """One block: ``rows`` rows from ``r0`` by ``vectors`` runs of ``width`` columns from
        ``c0``, reduction steps ``k0`` .. ``k0 + steps``; ``first``: whether k0 is 0."""
        def cells(fn):
            for r in range(rows):
                for v in range(vectors):
                    if width == 1:
                        fn(r, c0 + v, (r, v))
                    else:
                        with T.vectorized(0, width) as lane:
                            fn(r, c0 + v * width + lane, (r, v * width + lane))

        def at(r, c):
            env = dict(outer)
            env[col] = c
            if row:
                env[row] = r0 + r
            return env

        def oidx(r, c):
            return tuple(at(r, c)[ch] for ch in rhs)

        cells(lambda r, c, a: T.buffer_store(
            acc, _imm(0, dt) if first is True else out.load(oidx(r, c)) if first is False
            else tirx.Select(first, _imm(0, dt), out.load(oidx(r, c))), list(a)))
        with T.serial(k0, k0 + steps) as k:
            reduce = dict(zip(red, _unflatten(k, red_shape)))
            cells(lambda r, c, a: T.buffer_store(
                acc, tirx.BufferLoad(acc, list(a)) + product({**at(r, c), **reduce}), list(a)))
        cells(lambda r, c, a: out.store(oidx(r, c), tirx.BufferLoad(acc, list(a))))

    def blocks(k0, steps: int, first):
        stack, idx = em.foreach(tuple(sizes[c] for c in rhs[:-2]))
        with stack:
            outer = dict(zip(rhs[:-2], idx))

            def row_blocks(c0, vectors: int, width: int):
                if n_rows >= TILE_ROWS:
                    with T.serial(0, n_rows // TILE_ROWS) as rb:
                        tile(outer, rb * TILE_ROWS, TILE_ROWS, c0, vectors, width, k0, steps, first)
                if n_rows % TILE_ROWS:
                    tile(outer, n_rows - n_rows % TILE_ROWS, n_rows % TILE_ROWS, c0, vectors, width, k0, steps, first)

            block = TILE_VECTORS * lanes
            if n_cols >= block:
                with T.serial(0, n_cols // block) as cb:
                    row_blocks(cb * block, TILE_VECTORS, lanes)
            if n_cols % block >= lanes:
                row_blocks(n_cols - n_cols % block, n_cols % block // lanes, lanes)
            if n_cols % lanes:
                with T.serial(n_cols - n_cols % lanes, n_cols) as c:
                    row_blocks(c, 1, 1)

    if depth <= TILE_DEPTH:
        blocks(0, depth, True)
        return
    with T.serial(0, depth // TILE_DEPTH) as kp:
        blocks(kp * TILE_DEPTH, TILE_DEPTH, kp == 0)
    if depth % TILE_DEPTH:
        blocks(depth - depth % TILE_DEPTH, depth % TILE_DEPTH, False)


PACK_REUSE = 8  # pack an operand when the contraction reads each of its elements at least this often


def _pack_for_axpy(em: Emitter, term: str, inner: str, node: Node, x, work: int):
    """An einsum operand that the CPU template's inner loop (over output letter ``inner``) would
    read with a stride, copied once into a scratch buffer with ``inner`` as its last axis:
    (new term, Ref), or None when it is already contiguous there or too little reused to pay
    for the copy.  E.g. Q K^T ("htn,hsn->hts"): K[h, s, n] is read along s, N floats apart; the
    copy is one pass over K, the contraction then T passes over contiguous rows.  The loops
    and the summation order are unchanged, so the results are bit-identical."""
    if inner not in term or term[-1] == inner or len(set(term)) != len(term):
        return None
    size = int(np.prod(node.shape))
    if work < PACK_REUSE * size:
        return None
    packed_term = term.replace(inner, "") + inner
    shape = tuple(node.shape[term.index(c)] for c in packed_term)
    ref = Ref(em.scratch(shape, node.dtype), (), LOGICAL[node.dtype])
    stack, idx = em.foreach(shape)
    with stack:
        at = dict(zip(packed_term, idx))
        ref.store(idx, x.load(tuple(at[c] for c in term)))
    return packed_term, ref


def _k_gather(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    x, ind = vals[n.inputs[0]], vals[n.inputs[1]]
    xs = graph.nodes[n.inputs[0]].shape
    ks = graph.nodes[n.inputs[1]].shape
    axis = n.attr("axis") % len(xs)
    out = vals[i]
    stack, idx = em.foreach(n.shape)
    with stack:
        k = _cast(ind.load(idx[axis:axis + len(ks)]), "int32")
        k = tirx.Select(k < 0, k + xs[axis], k)
        out.store(idx, x.load(idx[:axis] + (k,) + idx[axis + len(ks):]))


def _k_scatter_add(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    base, ind, values = (vals[j] for j in n.inputs)
    vs = graph.nodes[n.inputs[2]].shape
    ks = graph.nodes[n.inputs[1]].shape
    axis = n.attr("axis") % len(n.shape)
    out = vals[i]
    dt = LOGICAL[n.dtype]
    em.copy(out, base, n.shape)
    em.sync()
    # serial, in the values' order, as np.add.at
    with em.single():
        with contextlib.ExitStack() as s:
            idx = tuple(s.enter_context(T.serial(0, d)) for d in vs)
            k = _cast(ind.load(idx[axis:axis + len(ks)]), "int32")
            k = tirx.Select(k < 0, k + n.shape[axis], k)
            oidx = idx[:axis] + (k,) + idx[axis + len(ks):]
            out.store(oidx, out.load(oidx) + _cast(values.load(idx), dt))


def _k_item(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    n = graph.nodes[i]
    vals[i] = vals[n.inputs[0]][n.attr("index")]


def _k_loop(em: Emitter, graph: Graph, i: int, vals, plan: Plan):
    """A LOOP node: carried values in buffers, the body emitted inside a serial loop."""
    _, tirx, _, T = _tvm()
    n = graph.nodes[i]
    body: Graph = n.attr("body")
    count = int(n.attr("count"))
    carried = tuple(n.attr("carried", ()))
    invariant = tuple(n.attr("invariant", ()))
    stacked = tuple(n.attr("stacked", ()))
    until = n.attr("until")
    args = body.args()
    carry_refs = []
    for name, j in zip(carried, n.inputs):
        src = graph.nodes[j]
        ref = Ref(em.scratch(src.shape, src.dtype, pad=16 if src.dtype is DType.bool else 0), (), LOGICAL[src.dtype])
        em.copy(ref, vals[j], src.shape)
        carry_refs.append(ref)
    em.sync()
    env = dict(zip(carried, carry_refs))
    env.update({name: vals[j] for name, j in zip(invariant, n.inputs[len(carried):])})
    next_nodes = [body.result(c, "next").node for c in carried]
    out_nodes = [body.result(s, "output").node for s in stacked]
    until_node = body.result(until, "value").node if until else None
    stack_refs = []
    for k in out_nodes:
        bn = body.nodes[k]
        stack_refs.append(Ref(em.scratch((count,) + bn.shape, bn.dtype), (), LOGICAL[bn.dtype]))
    roots = next_nodes + out_nodes + ([until_node] if until_node is not None else [])
    outer = plan.flags
    unbatched = {name for name, j in zip(invariant, n.inputs[len(carried):]) if not outer[j]}
    if not any(outer[j] for j in n.inputs):
        unbatched |= set(carried)
    flags = batched(body, frozenset(unbatched))
    done = Ref(em.scratch((), "int32"), (), "int32") if until else None
    if done is not None:
        with em.single():
            done.store((), _imm(0, "int32"))
        em.sync()
    with T.serial(0, count) as it:
        def run_body():
            bplan = plan_graph(body, roots, flags, not em.opts.strict)
            end_readers = set(out_nodes) | ({until_node} if until_node is not None else set())
            inplace = {}
            for name, k, ref in zip(carried, next_nodes, carry_refs):
                a = args.get(name)
                if a is not None and in_place_ok(body, bplan, a, k, end_readers) and k not in inplace:
                    inplace[k] = ref
            bvals = em.emit_graph(body, env, roots, flags, inplace)
            for k, ref in zip(out_nodes, stack_refs):
                em.copy(Ref(ref.buf, (it,), ref.logical), bvals[k], body.nodes[k].shape)
            if until_node is not None:
                with em.single():
                    with T.If(bvals[until_node].load(())):
                        with T.Then():
                            done.store((), _imm(1, "int32"))
            for name, k, ref in zip(carried, next_nodes, carry_refs):
                if inplace.get(k) is not ref:
                    em.copy(ref, bvals[k], body.nodes[k].shape)
            em.sync()

        if done is None:
            run_body()
        else:
            with T.If(tirx.EQ(done.buf[0], _imm(0, "int32"))):
                with T.Then():
                    run_body()
                with T.Else():
                    for k, ref in zip(out_nodes, stack_refs):
                        em.copy(Ref(ref.buf, (it,), ref.logical), Ref(ref.buf, (it - 1,), ref.logical),
                                body.nodes[k].shape)
            em.sync()
    vals[i] = tuple(carry_refs) + tuple(stack_refs)


KERNEL_RULES: dict[Op, Callable] = {
    Op.PROPAGATE: _k_propagate,
    Op.SUM: _k_reduce("sum"),
    Op.MEAN: _k_reduce("mean"),
    Op.MAX: _k_reduce("max"),
    Op.MIN: _k_reduce("min"),
    Op.ARGMAX: _k_argmax,
    Op.SOFTMAX: _k_softmax(log=False),
    Op.LOGSUMEXP: _k_softmax(log=True),
    Op.LAYERNORM: _k_layernorm,
    Op.EINSUM: _k_einsum,
    Op.GATHER: _k_gather,
    Op.SCATTER_ADD: _k_scatter_add,
    Op.LOOP: _k_loop,
    Op.ITEM: _k_item,
}


# ---------------------------------------------------------------- the whole function
def _sanitize(name: str) -> str:
    return "".join(c if c in string.ascii_letters + string.digits else "_" for c in name)


def _record_node(program: Program, name: str) -> int | None:
    if any(s.name == name for s in program.states):
        return None
    r = program.step.result(name, "output") or program.step.result(name, "value")
    if r is None:
        raise LoweringError(f"cannot record {name!r}: it is neither a state nor a step result")
    return r.node


def _emit(program: Program, opts: Options, layout: dict | None):
    """One emission of the whole function; returns (PrimFunc, Signature, workspace sizes)."""
    _, tirx, IRBuilder, T = _tvm()
    step = program.step
    em = Emitter(program, opts, layout)
    args: list[Arg] = []
    flags = batched(step)
    rec_nodes = {name: _record_node(program, name) for name in opts.records}
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("main")
            B = tirx.Var("B", "int32")
            Tn = tirx.Var("T", "int32")
            bufs = {}

            def arg(kind, name, dtype, shape, lead=()):
                buf = T.arg(f"{kind}_{_sanitize(name)}", T.Buffer(tuple(lead) + tuple(shape), dtype))
                args.append(Arg(kind, name, dtype, tuple(shape)))
                bufs[(kind, name)] = buf
                return buf

            for v in program.params:
                arg("param", v.name, STORAGE[v.dtype], v.shape)
            for v in program.states:
                arg("state", v.name, STORAGE[v.dtype], v.shape, (B,))
            for v in program.inputs:
                arg("input", v.name, STORAGE[v.dtype], v.shape, (B, Tn))
            for v in program.outputs:
                arg("output", v.name, STORAGE[v.dtype], v.shape, (B, Tn))
            em.events = _event_records(program, opts, rec_nodes, flags)
            for name, node in rec_nodes.items():
                var = program.var(name) if node is None else None
                dtype, shape = (var.dtype, var.shape) if node is None else (step.nodes[node].dtype, step.nodes[node].shape)
                if name in em.events:
                    cap = tirx.Var(f"C_{_sanitize(name)}", "int32")
                    arg("events", name, "int32", (), (B, cap))
                    arg("event_values", name, LOGICAL[dtype], (), (B, cap))
                    arg("event_counts", name, "int64", (), (B,))
                else:
                    arg("record", name, LOGICAL[dtype], shape, (tirx.Var(f"R_{_sanitize(name)}", "int32"), B))
            for graph in _graphs(step):
                for n in graph.nodes:
                    if n.op is Op.CONST and np.asarray(n.attr("value")).size != 1:
                        em.const_bufs[id(n)] = arg("const", f"c{len(em.consts)}", STORAGE[n.dtype], n.shape)
                        em.consts.append(np.ascontiguousarray(n.attr("value"), STORAGE[n.dtype]))
            for st in ("float32", "float64", "int32", "int64", "int8"):
                em.ws[st] = arg("workspace", st, st, (tirx.Var(f"W_{st}", "int32"),))
            steps = T.arg("steps", T.int32())
            every = [T.arg(f"every_{_sanitize(name)}", T.int32()) for name in rec_nodes]

            def body(b):
                em.b = b
                with T.serial(0, steps) as t:
                    _emit_step(em, program, bufs, rec_nodes, every, flags, b, t)

            if opts.device == "cuda":
                bx = T.env_thread("blockIdx.x")
                tx = T.env_thread("threadIdx.x")
                with T.launch_thread(bx, B):
                    with T.launch_thread(tx, opts.threads):
                        em.tx = tx
                        body(bx)
            else:
                em.tx = None
                loop = T.parallel if opts.parallel else T.serial
                with loop(0, B) as b:
                    body(b)
    sig = Signature(tuple(args), tuple(rec_nodes), (), tuple(em.consts))
    return ib.get(), sig, dict(em.used)


def const_arrays(program: Program) -> list[np.ndarray]:
    """The constant arrays passed as arguments, in argument order (one-element constants become
    immediates; empty ones are still arguments, so every CONST has a value)."""
    return [np.ascontiguousarray(n.attr("value"), STORAGE[n.dtype]) for g in _graphs(program.step)
            for n in g.nodes if n.op is Op.CONST and np.asarray(n.attr("value")).size != 1]


def _event_records(program: Program, opts: Options, rec_nodes: dict, flags) -> frozenset[str]:
    """Recorded values kept as event lists: on CPU, 1-D values that PROPAGATE already reads as
    byte masks (spike vectors).  A dense record of CUBA's spikes writes 160 MB per simulated
    second; the events of one are ~20,000 pairs.  The executor expands them to the dense array."""
    if opts.device != "cpu":
        return frozenset()
    step = program.step
    roots = [r.node for r in step.results if r.kind in ("next", "output")]
    roots += [n for n in rec_nodes.values() if n is not None]
    plan = plan_graph(step, roots, flags, not opts.strict)
    return frozenset(name for name, node in rec_nodes.items()
                     if node is not None and node in plan.masks and step.nodes[node].op in FUSIBLE
                     and len(step.nodes[node].shape) == 1)


def _record_events(em: Emitter, n: int, value, mask, idx_buf, val_buf, count_buf, slot_t, b):
    """Append (step * n + neuron, value) for every set mask byte, eight bytes per compare."""
    _, tirx, _, T = _tvm()
    cap = idx_buf.shape[1]
    with T.serial(0, -(-n // 8)) as w:
        word = T.reinterpret("int64", mask.buf[tirx.Ramp(w * 8, 1, 8)])
        with T.If(tirx.NE(word, _imm(0, "int64"))):
            with T.Then():
                with T.serial(0, 8) as lane:
                    i = w * 8 + lane
                    with T.If(tirx.And(i < n, mask.load((i,)))):
                        with T.Then():
                            slot = T.bind(_cast(count_buf[b], "int32"))
                            with T.If(slot < cap):
                                with T.Then():
                                    T.buffer_store(idx_buf, slot_t * n + i, [b, slot])
                                    T.buffer_store(val_buf, _cast(value.load((i,)), str(val_buf.dtype)), [b, slot])
                            T.buffer_store(count_buf, count_buf[b] + _imm(1, "int64"), [b])


def _graphs(graph: Graph):
    yield graph
    for n in graph.nodes:
        body = n.attr("body") if n.op is Op.LOOP else None
        if isinstance(body, Graph):
            yield from _graphs(body)


def _emit_step(em: Emitter, program: Program, bufs, rec_nodes, every, flags, b, t):
    _, tirx, _, T = _tvm()
    step = program.step
    env = {}
    for v in program.params:
        env[v.name] = Ref(bufs[("param", v.name)], (), LOGICAL[v.dtype])
    for v in program.states:
        env[v.name] = Ref(bufs[("state", v.name)], (b,), LOGICAL[v.dtype])
    for v in program.inputs:
        env[v.name] = Ref(bufs[("input", v.name)], (b, t), LOGICAL[v.dtype])
    for (name, node), ev in zip(rec_nodes.items(), every):
        if node is None:
            rec = bufs[("record", name)]
            with T.If(tirx.And(tirx.EQ(tirx.floormod(t, ev), 0), tirx.floordiv(t, ev) < rec.shape[0])):
                with T.Then():
                    em.copy(Ref(rec, (tirx.floordiv(t, ev), b), rec.dtype), env[name], program.var(name).shape)
    em.sync()
    next_nodes = {}
    for s in program.states:
        r = step.result(s.name, "next")
        if r is None:
            raise LoweringError(f"state {s.name!r} has no next value (is the program discretised?)")
        next_nodes[s.name] = r.node
    out_nodes = {o.name: step.result(o.name, "output").node for o in program.outputs}
    value_nodes = [n for n in rec_nodes.values() if n is not None]
    roots = list(next_nodes.values()) + list(out_nodes.values()) + value_nodes
    plan = plan_graph(step, roots, flags, not em.opts.strict)
    args = step.args()
    end_readers = set(out_nodes.values()) | set(value_nodes)
    inplace = {}
    for name, k in next_nodes.items():
        a = args.get(name)
        if k in inplace or (a is not None and k == a):
            continue
        if a is None or in_place_ok(step, plan, a, k, end_readers):
            inplace[k] = env[name]
    vals = em.emit_graph(step, env, roots, flags, inplace)
    for name, k in out_nodes.items():
        em.copy(Ref(bufs[("output", name)], (b, t), LOGICAL[step.nodes[k].dtype]), vals[k], step.nodes[k].shape)
    for (name, node), ev in zip(rec_nodes.items(), every):
        if name in em.events:
            with T.If(tirx.EQ(tirx.floormod(t, ev), 0)):
                with T.Then():
                    _record_events(em, step.nodes[node].shape[0], vals[node], em.masks[node][0],
                                   bufs[("events", name)], bufs[("event_values", name)],
                                   bufs[("event_counts", name)], tirx.floordiv(t, ev), b)
        elif node is not None:
            rec = bufs[("record", name)]
            with T.If(tirx.And(tirx.EQ(tirx.floormod(t, ev), 0), tirx.floordiv(t, ev) < rec.shape[0])):
                with T.Then():
                    em.copy(Ref(rec, (tirx.floordiv(t, ev), b), rec.dtype), vals[node], step.nodes[node].shape)
    for name, k in next_nodes.items():
        if k == args.get(name) or inplace.get(k) is env[name]:
            continue
        em.copy(env[name], vals[k], program.var(name).shape)
    em.sync()


def build_primfunc(program: Program, opts: Options):
    """The TIR PrimFunc running ``program`` for ``steps`` steps, and its calling signature."""
    token = _STRICT_CUDA.set(opts.strict and opts.device == "cuda")
    try:
        return _build_primfunc(program, opts)
    finally:
        _STRICT_CUDA.reset(token)


def _build_primfunc(program: Program, opts: Options):
    _, _, used = _emit(program, opts, None)
    per = {st: -(-n // (ALIGN_BYTES // np.dtype(st).itemsize)) * (ALIGN_BYTES // np.dtype(st).itemsize)
           for st, n in used.items()}
    layout = {st: max(per.get(st, 0), 1) for st in ("float32", "float64", "int32", "int64", "int8")}
    func, sig, _ = _emit(program, opts, layout)
    sig = Signature(sig.args, sig.records, tuple(sorted(layout.items())), sig.consts)
    return func, sig


__all__ = ["Options", "Arg", "Signature", "EXPR_RULES", "INDEX_RULES", "LEAF_RULES", "KERNEL_RULES", "FUSIBLE", "LoweringError",
           "plan_graph", "build_primfunc", "spike_view", "const_arrays"]
