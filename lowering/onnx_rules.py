"""One ONNX lowering rule per IR op (``RULES``); PROPAGATE and LOOP have modules of their own.

A rule is ``rule(e: Emit, node: ir.Node, args: list[Val], batched: bool) -> Val`` (a LOOP
returns a ``LoopValue``).  ``args`` are the lowered inputs, ``batched`` says whether the node's own
value carries the batch axis (``ir.batched``).  The batching rules are ``compiler/batching.py``'s,
as in every backend: per-sample axes become ONNX axes through ``Val.axis`` (``stored_axis``),
batched operands of lower rank than the result are lifted (``Emit.lift``, ``lifted_axes``) so
that numpy broadcasting of per-sample shapes still holds, an einsum gets a batch letter.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from nspec.compiler import ir
from nspec.compiler.batching import batched_equation, batched_perm, stored_axis
from nspec.compiler.ir import DType, Op
from nspec.compiler.normal_draws import Reals, quantile
from nspec.compiler.ops import LoopAttrs
from nspec.compiler.symbolic_dims import Dim, Pattern, has_dim
from nspec.compiler.threefry import MASK, UNIFORM_SCALE, UNIFORM_SHIFT, Words, draw_word
from nspec.lowering.onnx_builder import INT64_MAX, ONNX_DTYPE, Emit, Val, where
from nspec.lowering.onnx_loop import loop
from nspec.lowering.onnx_propagate import propagate


def _val(n: ir.Node, name: str, batched: bool) -> Val:
    return Val(name, n.dtype, n.shape, batched)


def _common(args: list[Val]) -> DType:
    """The dtype numpy would compute a mixed comparison in."""
    kind = np.result_type(*(a.dtype.numpy for a in args))
    return next(d for d in DType if d.numpy == kind)


# ---------------------------------------------------------------- leaves
def _const(e: Emit, n, args, b):
    value = n.attr("value")
    if isinstance(value, Dim):  # a number computed from a size bound by data (``sum(x) / n``)
        scalar = e.scalar(value, n.dtype)
        return _val(n, e.op("Reshape", scalar, e.i64(n.shape)) if n.shape else scalar, False)
    if isinstance(value, Pattern):  # an array sized by the data, of a family built here
        return _val(n, _pattern(e, value, n.dtype, n.shape), False)
    return _val(n, e.const(np.asarray(value, dtype=n.dtype.numpy)), False)


def _pattern(e: Emit, p: Pattern, dtype: DType, shape) -> str:
    """``p``'s member of ``shape`` (``symbolic_dims.Pattern``), computed from the run-time sizes."""
    if p.kind == "full":
        fill = helper.make_tensor("value", ONNX_DTYPE[dtype], [1], [p.value])
        return e.op("ConstantOfShape", e.i64(shape), value=fill)
    if p.kind == "arange":
        size = e.scalar(shape[0], DType.i64)
        return e.op("Cast", e.op("Range", e.scalar(0, DType.i64), size, e.scalar(1, DType.i64)), to=ONNX_DTYPE[dtype])
    ones = e.op("ConstantOfShape", e.i64(shape), value=helper.make_tensor("value", ONNX_DTYPE[DType.i64], [1], [1]))
    triangle = e.op("Trilu", ones, e.const(np.int64(p.k)), upper=int(p.kind == "triu"))
    return e.op("Cast", triangle, to=ONNX_DTYPE[dtype])


def _arg(e: Emit, n, args, b):
    return e.env[n.attr("name")]


# ---------------------------------------------------------------- elementwise
def _binary(op_type: str, compare: bool = False):
    def rule(e: Emit, n, args, b):
        dtype = _common(args) if compare else n.dtype
        x, y = (e.lift(e.cast(a, dtype), len(n.shape)) for a in args)
        return _val(n, e.op(op_type, x, y), b)
    return rule


def _ne(e: Emit, n, args, b):
    return _val(n, e.op("Not", _binary("Equal", compare=True)(e, n, args, b).name), b)


def _nonzero(e: Emit, y: str, dtype: DType) -> str:
    """An integer divisor with 0 replaced by 1, so that no division traps (``interpret.nonzero_divisor``)."""
    return e.op("Where", e.op("Equal", y, e.scalar(0, dtype)), e.scalar(1, dtype), y)


def _div(e: Emit, n, args, b):
    # true division in the node's dtype; integer Div truncates toward zero, as the reference's
    # float quotient cast back to int does.
    if n.dtype.is_float:
        return _binary("Div")(e, n, args, b)
    x, y = (e.lift(e.cast(a, n.dtype), len(n.shape)) for a in args)
    return _val(n, e.op("Div", x, _nonzero(e, y, n.dtype)), b)


def _mod(e: Emit, n, args, b):
    x, y = (e.lift(e.cast(a, n.dtype), len(n.shape)) for a in args)
    if not n.dtype.is_float:  # integer Mod (fmod=0) takes the divisor's sign, as numpy
        return _val(n, e.op("Mod", x, _nonzero(e, y, n.dtype)), b)
    # numpy's float mod: fmod, then add the divisor where the signs differ and the remainder is nonzero.
    r = e.op("Mod", x, y, fmod=1)
    zero = e.scalar(0, n.dtype)
    fix = e.op("And", e.op("Not", e.op("Equal", r, zero)), e.op("Xor", e.op("Less", r, zero), e.op("Less", y, zero)))
    return _val(n, e.op("Where", fix, e.op("Add", r, y), r), b)


def _unary(*op_types: str):
    def rule(e: Emit, n, args, b):
        name = e.cast(args[0], n.dtype).name
        for op_type in op_types:
            name = e.op(op_type, name)
        return _val(n, name, b)
    return rule


def _silu(e: Emit, n, args, b):
    x = e.cast(args[0], n.dtype).name
    return _val(n, e.op("Mul", x, e.op("Sigmoid", x)), b)


def _cast(e: Emit, n, args, b):
    (x,) = args
    return _val(n, e.cast(x, n.dtype).name if x.dtype is not n.dtype else e.op("Identity", x.name), b)


def _spike(e: Emit, n, args, b):
    """heaviside(x) = 1 where x > 0 (so ``spike when v > Vt`` is SPIKE(v - Vt)); the surrogate only shapes gradients."""
    (x,) = args
    fired = e.op("Greater", x.name, e.scalar(0, x.dtype))
    return _val(n, e.op("Cast", fired, to=ONNX_DTYPE[n.dtype]), b)


def _where(e: Emit, n, args, b):
    c, x, y = args
    rank = len(n.shape)
    cond = e.lift(e.cast(c, DType.bool), rank)
    x, y = (e.lift(e.cast(a, n.dtype), rank) for a in (x, y))
    return _val(n, where(e, cond, x, y, n.dtype), b)


# ---------------------------------------------------------------- reductions and normalisations
def _axes(x: Val, n: ir.Node) -> list[int]:
    axes = n.attr("axes")
    if axes is None:
        axes = range(len(x.shape))
    elif isinstance(axes, int):
        axes = (axes,)
    return sorted({x.axis(a) for a in axes})


def _reduce(op_type: str, accumulate: bool):
    def rule(e: Emit, n, args, b):
        x = e.cast(args[0], n.dtype) if accumulate else args[0]
        axes = _axes(x, n)
        if not axes:
            return _val(n, e.op("Identity", x.name), b)
        keep = int(len(n.shape) == len(x.shape))
        out = e.op(op_type, x.name, e.i64(axes), keepdims=keep)
        return _val(n, e.cast(Val(out, x.dtype, n.shape, b), n.dtype).name, b)
    return rule


def _argmax(e: Emit, n, args, b):
    (x,) = args
    keep = int(len(n.shape) == len(x.shape))
    idx = Val(e.op("ArgMax", x.name, axis=x.axis(n.attr("axis", -1)), keepdims=keep), DType.i64, n.shape, b)
    return _val(n, e.cast(idx, n.dtype).name, b)


def _softmax(e: Emit, n, args, b):
    x = e.cast(args[0], n.dtype)
    return _val(n, e.op("Softmax", x.name, axis=x.axis(n.attr("axis", -1))), b)


def _logsumexp(e: Emit, n, args, b):
    """m + log(sum(exp(x - m))) with m the max, or 0 where the max is not finite (as the reference)."""
    x = e.cast(args[0], n.dtype)
    axes = e.i64([x.axis(n.attr("axis", -1))])
    m = e.op("ReduceMax", x.name, axes, keepdims=1)
    finite = e.op("Not", e.op("Or", e.op("IsInf", m), e.op("IsNaN", m)))
    m = e.op("Where", finite, m, e.scalar(0, n.dtype))
    s = e.op("ReduceSum", e.op("Exp", e.op("Sub", x.name, m)), axes, keepdims=1)
    return _val(n, e.op("Squeeze", e.op("Add", e.op("Log", s), m), axes), b)


def _layernorm(e: Emit, n, args, b):
    """(x - mean) / sqrt(var + eps) over the last axis, two-pass like the reference (ORT's fused
    LayerNormalization computes the variance as E[x^2] - E[x]^2, which loses digits)."""
    x = e.cast(args[0], n.dtype)
    last = e.i64([-1])
    c = e.op("Sub", x.name, e.op("ReduceMean", x.name, last, keepdims=1))
    var = e.op("ReduceMean", e.op("Mul", c, c), last, keepdims=1)
    out = e.op("Div", c, e.op("Sqrt", e.op("Add", var, e.scalar(n.attr("eps", 1e-5), n.dtype))))
    rank = len(n.shape)
    if len(args) > 1:
        out = e.op("Mul", out, e.lift(e.cast(args[1], n.dtype), rank))
    if len(args) > 2:
        out = e.op("Add", out, e.lift(e.cast(args[2], n.dtype), rank))
    return _val(n, out, b)


# ---------------------------------------------------------------- contraction
def _einsum(e: Emit, n, args, b):
    """The per-sample equation, with a fresh batch letter on batched operands and the result."""
    equation = batched_equation(n.attr("equation"), [a.batched for a in args], b)
    ops = [e.cast(a, n.dtype).name for a in args]
    return _val(n, e.op("Einsum", *ops, equation=equation), b)


# ---------------------------------------------------------------- shape and indexing
def _reshape_to(e: Emit, x: Val, shape) -> str:
    if not x.batched:
        return e.op("Reshape", x.name, e.i64(shape), allowzero=1)
    if 0 in shape:
        return e.op("Reshape", x.name, e.op("Concat", e.batch(), e.i64(shape), axis=0), allowzero=1)
    # 0 copies the input's batch dimension, which keeps "B" symbolic through shape inference.
    return e.op("Reshape", x.name, e.i64((0, *shape)))


def _reshape(e: Emit, n, args, b):
    return _val(n, _reshape_to(e, args[0], n.shape), b)


def _transpose(e: Emit, n, args, b):
    (x,) = args
    perm = batched_perm([p % len(x.shape) for p in n.attr("perm")], x.batched)
    return _val(n, e.op("Transpose", x.name, perm=list(perm)), b)


def _broadcast(e: Emit, n, args, b):
    (x,) = args
    x = e.cast(x, n.dtype)
    shape = (1, *n.shape) if x.batched else n.shape
    return _val(n, e.op("Expand", e.lift(x, len(n.shape)), e.i64(shape)), b)


def _concat(e: Emit, n, args, b):
    vals = [e.to_batch(e.cast(a, n.dtype)) if b else e.cast(a, n.dtype) for a in args]
    axis = stored_axis(n.attr("axis"), len(n.shape), b)
    return _val(n, e.op("Concat", *(v.name for v in vals), axis=axis), b)


def _slice(e: Emit, n, args, b):
    (x,) = args
    steps = [1 if s is None else int(s) for s in n.attr("steps") or [1] * len(n.attr("starts"))]
    starts = [(0 if st > 0 else INT64_MAX) if s is None else _size(s) for s, st in zip(n.attr("starts"), steps)]
    stops = [(INT64_MAX if st > 0 else -INT64_MAX - 1) if s is None else _size(s) for s, st in zip(n.attr("stops"), steps)]
    axes = [x.axis(a) for a in range(len(starts))]
    return _val(n, e.op("Slice", x.name, e.i64(starts), e.i64(stops), e.i64(axes), e.i64(steps)), b)


def _size(s):
    """An int, or a size bound by data as it is (``Emit.i64`` computes it at run time)."""
    return s if isinstance(s, Dim) else int(s)


def _count(shape):
    """The number of elements of ``shape`` (a ``Dim`` when a size is bound by data)."""
    out = 1
    for d in shape:
        out = d * out if isinstance(d, Dim) else out * int(d)
    return out


def _moveaxis(e: Emit, name: str, rank: int, src: int, dst: int) -> str:
    if src == dst:
        return name
    perm = [a for a in range(rank) if a != src]
    perm.insert(dst, src)
    return e.op("Transpose", name, perm=perm)


def _in_range(e: Emit, idx: Val, size: int) -> Val:
    """int64 indices as positions in [0, size): negative ones from the end, the rest clamped, so
    that no Gather or Scatter leaves its buffer (``interpret.in_range``)."""
    wrapped = e.op("Where", e.op("Less", idx.name, e.scalar(0, DType.i64)),
                   e.op("Add", idx.name, e.scalar(size, DType.i64)), idx.name)
    clamped = e.op("Max", e.op("Min", wrapped, e.scalar(size - 1, DType.i64)), e.scalar(0, DType.i64))
    return Val(clamped, DType.i64, idx.shape, idx.batched)


def _gather(e: Emit, n, args, b):
    """numpy ``take(x, idx, axis)`` per sample."""
    x, idx = args
    axis = stored_axis(n.attr("axis"), len(x.shape), False)
    idx = _in_range(e, e.cast(idx, DType.i64), x.shape[axis])
    if not idx.batched:
        return _val(n, e.op("Gather", x.name, idx.name, axis=x.axis(axis)), b)
    if not x.batched:
        # take puts idx's dims (batch first) at `axis`; move the batch axis to the front.
        out = e.op("Gather", x.name, idx.name, axis=axis)
        return _val(n, _moveaxis(e, out, len(n.shape) + 1, axis, 0), b)
    # both batched: gather whole sub-arrays per sample with GatherND(batch_dims=1) on axis 1.
    pos = idx.name
    data = _moveaxis(e, x.name, x.rank, axis + 1, 1)
    out = e.op("GatherND", data, e.op("Unsqueeze", pos, e.i64([-1])), batch_dims=1)
    k = len(idx.shape)
    if axis:  # [B, *idx, *before, *after] -> [B, *before, *idx, *after]
        perm = [0] + list(range(1 + k, 1 + k + axis)) + list(range(1, 1 + k)) + list(range(1 + k + axis, len(n.shape) + 1))
        out = e.op("Transpose", out, perm=perm)
    return _val(n, out, b)


def _scatter_add(e: Emit, n, args, b):
    """``np.add.at(base, (:,)*axis + (idx,), values)`` per sample: the adjoint of GATHER.

    ScatterElements needs one index per update, so idx (flattened to k entries) is broadcast
    over the other axes of ``values``; updates are applied in row-major order, like add.at.
    """
    base, idx, values = args
    axis = stored_axis(n.attr("axis"), len(base.shape), False)
    k = _count(idx.shape)
    flat = (*base.shape[:axis], k, *base.shape[axis + 1:])
    base, values = e.cast(base, n.dtype), e.cast(values, n.dtype)
    if b:
        base, values = e.to_batch(base), e.to_batch(values)
    upd = _reshape_to(e, values, flat)
    ind = e.op("Reshape", _in_range(e, e.cast(idx, DType.i64), n.shape[axis]).name,
               e.i64((0, k) if idx.batched else (k,)))
    others = [d + idx.batched for d in range(len(flat)) if d != axis]
    if others:
        ind = e.op("Unsqueeze", ind, e.i64(others))
    if b and not idx.batched:
        ind = e.op("Unsqueeze", ind, e.i64([0]))
    ind = e.op("Expand", ind, e.op("Concat", e.batch(), e.i64(flat), axis=0) if b else e.i64(flat))
    return _val(n, e.op("ScatterElements", base.name, ind, upd, axis=axis + b, reduction="add"), b)


# ---------------------------------------------------------------- time structure
def _item(e: Emit, n, args, b):
    (loop,) = args
    return loop.items[n.attr("index")]


# ---------------------------------------------------------------- counter-based draws
def _onnx_words(e: Emit) -> Words:
    """32-bit words in int64 tensors, masked after each add and multiply; BitShift takes only
    unsigned types in ONNX, so a rotation multiplies and divides by powers of two (exact on
    non-negative int64)."""
    c = lambda v: e.const(np.int64(v))  # noqa: E731
    mask = c(MASK)
    return Words(add=lambda a, b: e.op("BitwiseAnd", e.op("Add", a, b), mask),
                 mul=lambda a, b: e.op("BitwiseAnd", e.op("Mul", a, b), mask),
                 xor=lambda a, b: e.op("BitwiseXor", a, b),
                 rotl=lambda x, r: e.op("BitwiseOr", e.op("BitwiseAnd", e.op("Mul", x, c(1 << r)), mask),
                                        e.op("Div", x, c(1 << (32 - r)))),
                 const=lambda v: c(v & MASK))


def _uniform(e: Emit, n, args, b):
    step, seed = args
    a = n.attrs
    w = _onnx_words(e)
    size = int(np.prod(a.shape))
    # per-sample words as [B, 1] (or [1, 1] unbatched); sample s of the batch draws at counter word
    # s * size + element
    rows = [e.op("Unsqueeze", x.name, e.i64([1])) if x.batched else e.op("Reshape", x.name, e.i64([1, 1]))
            for x in (step, seed)]
    batched = step if step.batched else seed
    if b:
        count = e.op("Squeeze", e.op("Shape", batched.name), e.i64([0]))
        sample = e.op("Unsqueeze", e.op("Range", w.const(0), count, w.const(1)), e.i64([1]))
    else:
        sample = e.const(np.zeros((1, 1), np.int64))
    c1 = e.op("BitwiseAnd", e.op("Add", e.op("Mul", sample, w.const(size)),
                                 e.const(np.arange(size, dtype=np.int64)[None, :])), w.const(MASK))
    # the high word is (step - lo) / 2^32, an exact division (a floor, as the other backends' shifts,
    # even for a negative counter, which ``threefry.counter_problem`` refuses before a run)
    lo = e.op("BitwiseAnd", rows[0], w.const(MASK))
    hi = e.op("BitwiseAnd", e.op("Div", e.op("Sub", rows[0], lo), e.const(np.int64(1 << 32))), w.const(MASK))
    x0 = draw_word(w, e.op("BitwiseAnd", rows[1], w.const(MASK)), lo, hi, c1, a.stream, a.streams)
    bits = e.op("Cast", e.op("Div", x0, w.const(1 << UNIFORM_SHIFT)), to=ONNX_DTYPE[DType.f32])
    u = e.op("Mul", bits, e.const(np.float32(UNIFORM_SCALE)))
    shape = e.op("Concat", e.op("Shape", batched.name), e.i64(a.shape), axis=0) if b else e.i64(a.shape)
    return _val(n, e.op("Reshape", u, shape), b)


def _onnx_reals(e: Emit) -> Reals:
    """f64 tensors, one ONNX node per operation."""
    op = lambda name: lambda *xs: e.op(name, *xs)  # noqa: E731
    return Reals(add=op("Add"), sub=op("Sub"), mul=op("Mul"), div=op("Div"), less=op("Less"),
                 where=op("Where"), neg=op("Neg"), const=lambda v: e.const(np.float64(v)))


def _normal(e: Emit, n, args, b):
    u = _uniform(e, n, args, b)
    z = quantile(_onnx_reals(e), e.op("Cast", u.name, to=ONNX_DTYPE[DType.f64]))
    return _val(n, e.op("Cast", z, to=ONNX_DTYPE[DType.f32]), b)


# ---------------------------------------------------------------- run-time checks
CHECK_FAILS_ONNX = {  # kind -> the ONNX ops of interpret.CHECK_FAILS on int64 values
    "index": lambda e, x, size: e.op("Or", e.op("Less", x, e.scalar(-size, DType.i64)),
                                     e.op("GreaterOrEqual", x, e.scalar(size, DType.i64))),
    "divisor": lambda e, x, size: e.op("Equal", x, e.scalar(0, DType.i64)),
}


def _check(e: Emit, n, args, b):
    """The status, or (site, its step, the first failing value) when it is clear and x fails."""
    status, x = args
    a = n.attrs
    count = _count(x.shape)
    if not isinstance(count, Dim) and count == 0:
        return _val(n, e.op("Identity", status.name), b)
    st = e.to_batch(status).name if b else e.op("Reshape", status.name, e.i64([1, 3]))
    x = e.cast(x, DType.i64)
    flat = e.op("Reshape", e.to_batch(x).name if b else x.name, e.i64([0 if b else 1, -1]))
    fails = e.op("Cast", CHECK_FAILS_ONNX[a.kind](e, flat, a.size), to=ONNX_DTYPE[DType.i64])
    value = e.op("GatherElements", flat, e.op("ArgMax", fails, axis=1, keepdims=1), axis=1)
    found = e.op("Greater", e.op("ReduceMax", fails, e.i64([1]), keepdims=1), e.scalar(0, DType.i64))
    column = lambda k: e.op("Slice", st, e.i64([k]), e.i64([k + 1]), e.i64([1]))  # noqa: E731
    report = e.op("And", e.op("Equal", column(0), e.scalar(0, DType.i64)), found)
    site = e.op("Expand", e.const(np.full((1, 1), a.site, np.int64)), e.op("Shape", value))
    out = e.op("Where", report, e.op("Concat", site, column(1), value, axis=1), st)
    return _val(n, out if b else e.op("Reshape", out, e.i64([3])), b)


UNARY_ONNX = {Op.NEG: "Neg", Op.ABS: "Abs", Op.EXP: "Exp", Op.LOG: "Log", Op.SQRT: "Sqrt", Op.TANH: "Tanh",
              Op.SIGMOID: "Sigmoid", Op.RELU: "Relu", Op.SOFTPLUS: "Softplus", Op.SIN: "Sin", Op.COS: "Cos", Op.ERF: "Erf",
              Op.FLOOR: "Floor", Op.STOP_GRADIENT: "Identity", Op.NOT: "Not"}
BINARY_ONNX = {Op.ADD: "Add", Op.SUB: "Sub", Op.MUL: "Mul", Op.POW: "Pow", Op.MAXIMUM: "Max", Op.MINIMUM: "Min",
               Op.AND: "And", Op.OR: "Or"}
COMPARE_ONNX = {Op.LT: "Less", Op.LE: "LessOrEqual", Op.GT: "Greater", Op.GE: "GreaterOrEqual", Op.EQ: "Equal"}


def symbolic_problem(n: ir.Node) -> str | None:
    """Why this lowering cannot give ``n`` a size known only at run time (``symbolic_dims.analyse``'s
    ``supports``); None when it can: every rule above reads sizes through ``Emit.i64``/``scalar``/
    ``zeros`` except these, whose tables are built on the host."""
    if n.op in (Op.UNIFORM, Op.NORMAL):
        return "a random draw's size (its counter table is built for a fixed number of values)"
    if n.op is Op.PROPAGATE:
        return "event-driven propagation (its connectivity is fixed when the spec compiles)"
    if isinstance(n.attrs, LoopAttrs) and isinstance(n.attrs.count, Dim):
        return "the iteration count of an internal loop"
    if n.op is Op.CONST and not isinstance(n.attr("value"), (Dim, Pattern)) and has_dim(n.shape):
        return "a constant array of that size"
    return None


RULES = {
    Op.CONST: _const,
    Op.ARG: _arg,
    **{op: _binary(t) for op, t in BINARY_ONNX.items()},
    **{op: _binary(t, compare=True) for op, t in COMPARE_ONNX.items()},
    Op.NE: _ne,
    Op.DIV: _div,
    Op.MOD: _mod,
    **{op: _unary(t) for op, t in UNARY_ONNX.items()},
    Op.SILU: _silu,
    Op.CAST: _cast,
    Op.SPIKE: _spike,
    Op.WHERE: _where,
    Op.SUM: _reduce("ReduceSum", True),
    Op.MEAN: _reduce("ReduceMean", True),
    Op.MAX: _reduce("ReduceMax", False),
    Op.MIN: _reduce("ReduceMin", False),
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
    Op.PROPAGATE: propagate,
    Op.LOOP: loop,
    Op.ITEM: _item,
    Op.UNIFORM: _uniform,
    Op.CHECK: _check,
    Op.NORMAL: _normal,
}
