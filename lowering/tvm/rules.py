"""The TVM backend's rule table: one record per op saying how it lowers.

* ``Elementwise``: fused into loop nests.  The value at output index ``idx`` is ``expr(node,
  inputs)`` of each input read at ``index(node, idx, in_shape)`` (NumPy broadcasting unless the
  op remaps indexes: SLICE, RESHAPE, TRANSPOSE).  ``aligned(node, in_shape)`` says whether that
  read is at the node's own index, so producer and consumer can share one loop body.
* ``Select``: fused too, but the expression reads its inputs itself (CONCAT picks the input
  whose range holds the index); it never shares a loop body with its inputs.
* ``Leaf``: ARG and CONST, values taken from the environment or the constants.
* ``Kernel``: a templated loop nest writing a materialised buffer (``kernels.py``).

The scheduler's facts are derived from this table, never kept beside it: ``FUSIBLE`` (the ops
with an ``Elementwise`` or ``Select`` record), ``input_index`` and ``aligned_read``.  A new
elementwise op is one ``Elementwise`` entry here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from nspec.compiler.ir import Graph, Node, Op
from nspec.compiler.normal_draws import Reals, quantile
from nspec.compiler.threefry import MASK, UNIFORM_SCALE, UNIFORM_SHIFT, Words, draw_word
from nspec.lowering.tvm import einsum_tiles, kernels
from nspec.lowering.tvm.tir import (LOGICAL, STRICT_CUDA, broadcast_index, cast, dtype_of, flatten, imm, is_float,
                                    promote, tvm_modules, unflatten)

_U32 = "uint32"


# ---------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Rule:
    """Base of the rule records; ``fusible``: whether the op is computed inside loop nests."""

    fusible: ClassVar[bool] = False


def _broadcast_read(node: Node, idx: tuple, in_shape: tuple[int, ...]) -> tuple:
    return broadcast_index(idx, in_shape, node.shape)


def _same_shape(node: Node, in_shape: tuple[int, ...]) -> bool:
    return in_shape == node.shape


@dataclass(frozen=True, slots=True)
class Elementwise(Rule):
    """``expr(node, [input k at index(node, idx, in_shape k)])``; ``aligned``: read at ``idx``."""

    expr: Callable[[Node, list], Any]
    index: Callable[[Node, tuple, tuple[int, ...]], tuple] = _broadcast_read
    aligned: Callable[[Node, tuple[int, ...]], bool] = _same_shape
    fusible: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Select(Rule):
    """``expr(graph, node, input values, idx)``: the expression loads its inputs itself."""

    expr: Callable[[Graph, Node, list, tuple], Any]
    fusible: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Leaf(Rule):
    """``value(emitter, env, i, node)``: the value of an ARG or CONST."""

    value: Callable


@dataclass(frozen=True, slots=True)
class Kernel(Rule):
    """``emit(emitter, graph, i, vals, plan)`` writes ``vals[i]``."""

    emit: Callable


# ---------------------------------------------------------------- expressions
def _arith(fn):
    def rule(node, xs):
        dt = LOGICAL[node.dtype]
        return fn(dt, *[cast(x, dt) for x in xs])

    return rule


_RN = {("add", "float32"): "__fadd_rn", ("sub", "float32"): "__fsub_rn", ("mul", "float32"): "__fmul_rn",
       ("div", "float32"): "__fdiv_rn", ("add", "float64"): "__dadd_rn", ("sub", "float64"): "__dsub_rn",
       ("mul", "float64"): "__dmul_rn", ("div", "float64"): "__ddiv_rn"}


def _rounded(op: str, fn):
    """``fn(a, b)``, or its never-contracted intrinsic in strict CUDA code (see ``STRICT_CUDA``)."""
    def rule(dt, a, b):
        name = _RN.get((op, dt))
        if name and STRICT_CUDA.get():
            return tvm_modules().tirx.call_pure_extern(dt, name, a, b)
        return fn(a, b)

    return rule


def _nonzero(dt, b):
    """An integer divisor with 0 replaced by 1, so that no division traps (``interpret.nonzero_divisor``)."""
    return tvm_modules().tirx.Select(tvm_modules().tirx.EQ(b, imm(0, dt)), imm(1, dt), b)


def _div(dt, a, b):
    tirx = tvm_modules().tirx
    if not is_float(dt):
        return tirx.floordiv(a, _nonzero(dt, b))
    if isinstance(b, tirx.FloatImm) and b.value == 0:  # TVM's simplifier refuses x / 0.0; IEEE: x * (+-inf)
        return a * imm(math.copysign(math.inf, b.value), dt)
    return _rounded("div", lambda x, y: x / y)(dt, a, b)


def _mod(dt, a, b):
    tirx = tvm_modules().tirx
    if not is_float(dt):
        return tirx.floormod(a, _nonzero(dt, b))
    # np.mod: the remainder takes the divisor's sign
    r = tirx.call_pure_extern(dt, "fmodf" if dt == "float32" else "fmod", a, b)  # no LLVM rule for tirx.fmod
    zero = imm(0, dt)
    fix = tirx.Or(tirx.And(r < zero, b > zero), tirx.And(r > zero, b < zero))
    return tirx.Select(fix, r + b, r)


def _compare(fn):
    def rule(node, xs):
        a, b = promote(*xs)
        return fn(a, b)

    return rule


def _unary(fn):
    def rule(node, xs):
        dt = LOGICAL[node.dtype]
        return fn(dt, cast(xs[0], dt))

    return rule


def _sigmoid(dt, x):
    tirx = tvm_modules().tirx
    e = tirx.exp(-tirx.abs(x))
    one = imm(1, dt)
    return tirx.Select(x >= imm(0, dt), one / (one + e), e / (one + e))


def _softplus(dt, x):
    tirx = tvm_modules().tirx
    return tirx.Max(x, imm(0, dt)) + tirx.log1p(tirx.exp(-tirx.abs(x)))


def _where(node, xs):
    tirx = tvm_modules().tirx
    dt = LOGICAL[node.dtype]
    return tirx.Select(cast(xs[0], "bool"), cast(xs[1], dt), cast(xs[2], dt))


def _spike(node, xs):
    return cast(xs[0] > imm(0, dtype_of(xs[0])), LOGICAL[node.dtype])


def _same(node, xs):
    return cast(xs[0], LOGICAL[node.dtype])


def _pow(node, xs):
    """TIR's pow is float-only: an integer power goes through float64 and back, exact while the
    result is below 2^53 (ONNX Runtime's integer Pow computes in double too)."""
    dt = LOGICAL[node.dtype]
    tirx = tvm_modules().tirx
    if "float" in dt:
        return tirx.pow(*[cast(x, dt) for x in xs])
    return cast(tirx.round(tirx.pow(*[cast(x, "float64") for x in xs])), dt)


def _t(name):
    """A tirx function looked up by name when the rule runs (tvm is imported lazily)."""
    return lambda dt, *xs: getattr(tvm_modules().tirx, name)(*xs)


def _logic(name):
    return lambda node, xs: getattr(tvm_modules().tirx, name)(*(cast(x, "bool") for x in xs))


# ---------------------------------------------------------------- index remappings
def _slice_read(node: Node, idx, in_shape):
    return tuple(a + i * c for i, a, c in zip(idx, node.attrs.starts, node.attrs.steps))


def _slice_aligned(node: Node, in_shape) -> bool:
    return in_shape == node.shape and all(a == 0 and c == 1 for a, c in zip(node.attrs.starts, node.attrs.steps))


def _reshape_read(node: Node, idx, in_shape):
    return unflatten(flatten(idx, node.shape), in_shape) if in_shape else ()


def _transpose_read(node: Node, idx, in_shape):
    out = [None] * len(in_shape)
    for d, p in enumerate(node.attrs.perm):
        out[p] = idx[d]
    return tuple(out)


def _transpose_aligned(node: Node, in_shape) -> bool:
    return tuple(node.attrs.perm) == tuple(range(len(node.shape)))


def _concat(graph: Graph, n: Node, xs: list, idx):
    """CONCAT reads the input whose range along the axis holds the index (only that one)."""
    tirx = tvm_modules().tirx
    axis = n.attrs.axis % len(n.shape)
    parts, start = [], 0
    for x, j in zip(xs, n.inputs):
        size = graph.nodes[j].shape[axis]
        parts.append((start, size, x))
        start += size
    out = None
    for start, size, x in reversed(parts):
        shifted = tuple(i - start if d == axis else i for d, i in enumerate(idx))
        v = cast(x.load(shifted), LOGICAL[n.dtype])
        out = v if out is None else tirx.if_then_else(idx[axis] < start + size, v, out)
    return out


# ---------------------------------------------------------------- counter-based draws
def _kept(slots):
    """``kept(value)``: store ``value`` to the next slot of the local buffer ``slots`` and read it
    back.  Values used more than once must be stored: TVM's simplifier expands let-bound values,
    so unstored expressions grow exponentially."""
    _, tirx, _, T = tvm_modules()
    used = [0]

    def kept(value):
        k = used[0]
        used[0] += 1
        T.buffer_store(slots, value, [k])
        return tirx.BufferLoad(slots, [k])

    return kept


def _tir_words(slots) -> Words:
    """32-bit words as TIR uint32 expressions: additions wrap, shifts are native; every sum, product
    and xor is kept in its own slot of ``slots`` (the rounds reuse each word twice)."""
    _, tirx, _, _ = tvm_modules()
    u32 = lambda v: imm(v & MASK, _U32)  # noqa: E731
    kept = _kept(slots)
    return Words(add=lambda a, b: kept(a + b), mul=lambda a, b: kept(a * b),
                 xor=lambda a, b: kept(tirx.bitwise_xor(a, b)),
                 rotl=lambda x, r: tirx.bitwise_or(tirx.shift_left(x, u32(r)), tirx.shift_right(x, u32(32 - r))),
                 const=u32)


def _tir_reals(slots) -> Reals:
    """f64 TIR expressions, each kept in its own slot of ``slots``; + - * / never contract (strict
    mode: no FMA on the CPU, the ``__d*_rn`` intrinsics in CUDA code)."""
    _, tirx, _, _ = tvm_modules()
    kept = _kept(slots)
    arith = lambda op, fn: lambda a, b: kept(_rounded(op, fn)("float64", a, b))  # noqa: E731
    return Reals(add=arith("add", lambda a, b: a + b), sub=arith("sub", lambda a, b: a - b),
                 mul=arith("mul", lambda a, b: a * b), div=arith("div", lambda a, b: a / b),
                 less=lambda a, b: a < b,
                 where=lambda c, x, y: kept(tirx.Select(c, x, y)), neg=lambda x: kept(-x),
                 const=lambda v: imm(v, "float64"))


_SLOTS = 128  # more than the sums, products and xors of one draw (77)
_REAL_SLOTS = 128  # more than the f64 values of one normal quantile (115)


def _draw(normal: bool):
    """UNIFORM (or NORMAL) as a kernel: each element of trial ``em.b`` (sample 0 when neither the
    counter nor the seed is batched) draws at counter (step, sample * size + element)."""
    def rule(em, graph: Graph, i: int, vals, plan):
        n = graph.nodes[i]
        a = n.attrs
        T, tirx = tvm_modules().T, tvm_modules().tirx
        out = vals[i]
        step = vals[n.inputs[0]].load(())
        seed = cast(vals[n.inputs[1]].load(()), _U32)  # int64 -> uint32 keeps the low word
        # the counter is non-negative (``threefry.counter_problem``): its words are its low 32 bits
        # and the bits above them
        lo, hi = cast(step, _U32), cast(tirx.shift_right(step, imm(32, "int64")), _U32)
        sample = cast(em.b, _U32) if plan.flags[n.inputs[0]] or plan.flags[n.inputs[1]] else imm(0, _U32)
        stack, idx = em.foreach(n.shape)
        with stack:
            w = _tir_words(T.alloc_buffer((_SLOTS,), _U32, scope="local"))
            c1 = sample * w.const(math.prod(n.shape)) + cast(flatten(idx, n.shape), _U32)
            x0 = draw_word(w, seed, lo, hi, c1, a.stream, a.streams)
            u = cast(tirx.shift_right(x0, w.const(UNIFORM_SHIFT)), "float32") * imm(UNIFORM_SCALE, "float32")
            if normal:
                r = _tir_reals(T.alloc_buffer((_REAL_SLOTS,), "float64", scope="local"))
                u = cast(quantile(r, cast(u, "float64")), "float32")
            out.store(idx, u)

    return rule


# ---------------------------------------------------------------- the table
RULES: dict[Op, Rule] = {
    # -- leaves
    Op.ARG: Leaf(lambda em, env, i, n: env[n.attrs.name]),
    Op.CONST: Leaf(lambda em, env, i, n: em.const(i, n)),
    # -- elementwise arithmetic
    Op.ADD: Elementwise(_arith(_rounded("add", lambda a, b: a + b))),
    Op.SUB: Elementwise(_arith(_rounded("sub", lambda a, b: a - b))),
    Op.MUL: Elementwise(_arith(_rounded("mul", lambda a, b: a * b))),
    Op.DIV: Elementwise(_arith(_div)),
    Op.POW: Elementwise(_pow),
    Op.MOD: Elementwise(_arith(_mod)),
    Op.MAXIMUM: Elementwise(_arith(_t("Max"))),
    Op.MINIMUM: Elementwise(_arith(_t("Min"))),
    Op.NEG: Elementwise(_unary(lambda dt, x: -x)),
    # -- elementwise functions
    Op.ABS: Elementwise(_unary(_t("abs"))),
    Op.EXP: Elementwise(_unary(_t("exp"))),
    Op.LOG: Elementwise(_unary(_t("log"))),
    Op.SQRT: Elementwise(_unary(_t("sqrt"))),
    Op.TANH: Elementwise(_unary(_t("tanh"))),
    Op.SIGMOID: Elementwise(_unary(_sigmoid)),
    Op.RELU: Elementwise(_unary(lambda dt, x: tvm_modules().tirx.Max(x, imm(0, dt)))),
    Op.SILU: Elementwise(_unary(lambda dt, x: x * _sigmoid(dt, x))),
    Op.SOFTPLUS: Elementwise(_unary(_softplus)),
    Op.SIN: Elementwise(_unary(_t("sin"))),
    Op.COS: Elementwise(_unary(_t("cos"))),
    Op.ERF: Elementwise(_unary(_t("erf"))),
    Op.FLOOR: Elementwise(_unary(lambda dt, x: tvm_modules().tirx.floor(x) if is_float(dt) else x)),
    Op.STOP_GRADIENT: Elementwise(_unary(lambda dt, x: x)),  # forward only: the identity
    # -- comparison and logic
    Op.LT: Elementwise(_compare(lambda a, b: a < b)),
    Op.LE: Elementwise(_compare(lambda a, b: a <= b)),
    Op.GT: Elementwise(_compare(lambda a, b: a > b)),
    Op.GE: Elementwise(_compare(lambda a, b: a >= b)),
    Op.EQ: Elementwise(_compare(lambda a, b: tvm_modules().tirx.EQ(a, b))),
    Op.NE: Elementwise(_compare(lambda a, b: tvm_modules().tirx.NE(a, b))),
    Op.AND: Elementwise(_logic("And")),
    Op.OR: Elementwise(_logic("Or")),
    Op.NOT: Elementwise(_logic("Not")),
    Op.WHERE: Elementwise(_where),
    Op.CAST: Elementwise(_same),
    Op.SPIKE: Elementwise(_spike),
    # -- index remappings (the value is the input's, read at another index)
    Op.BROADCAST: Elementwise(_same),
    Op.SLICE: Elementwise(_same, _slice_read, _slice_aligned),
    Op.RESHAPE: Elementwise(_same, _reshape_read),
    Op.TRANSPOSE: Elementwise(_same, _transpose_read, _transpose_aligned),
    Op.CONCAT: Select(_concat),
    # -- kernels
    Op.PROPAGATE: Kernel(kernels.propagate),
    Op.SUM: Kernel(kernels.reduce("sum")),
    Op.MEAN: Kernel(kernels.reduce("mean")),
    Op.MAX: Kernel(kernels.reduce("max")),
    Op.MIN: Kernel(kernels.reduce("min")),
    Op.ARGMAX: Kernel(kernels.argmax),
    Op.SOFTMAX: Kernel(kernels.softmax(log=False)),
    Op.LOGSUMEXP: Kernel(kernels.softmax(log=True)),
    Op.LAYERNORM: Kernel(kernels.layernorm),
    Op.EINSUM: Kernel(einsum_tiles.einsum),
    Op.GATHER: Kernel(kernels.gather),
    Op.SCATTER_ADD: Kernel(kernels.scatter_add),
    Op.LOOP: Kernel(lambda em, graph, i, vals, plan: em.emit_loop(graph, i, vals, plan)),
    Op.ITEM: Kernel(kernels.item),
    Op.UNIFORM: Kernel(_draw(normal=False)),
    Op.NORMAL: Kernel(_draw(normal=True)),
    Op.CHECK: Kernel(kernels.check),
}


# ---------------------------------------------------------------- facts derived from the table
def fusible_ops(rules: Mapping[Op, Rule]) -> frozenset[Op]:
    """The ops a rule table computes inside loop nests."""
    return frozenset(op for op, rule in rules.items() if rule.fusible)


FUSIBLE: frozenset[Op] = fusible_ops(RULES)


def input_index(node: Node, k: int, idx: tuple, in_shape: tuple[int, ...]) -> tuple:
    """The index at which fusible ``node`` reads its ``k``-th input, for output index ``idx``."""
    return RULES[node.op].index(node, idx, in_shape)


def aligned_read(graph: Graph, node: Node, k: int) -> bool:
    """Does ``node`` read input ``k`` at its own index (so both can share one loop body)?"""
    rule = RULES[node.op]
    return isinstance(rule, Elementwise) and rule.aligned(node, graph.nodes[node.inputs[k]].shape)


__all__ = ["Rule", "Elementwise", "Select", "Leaf", "Kernel", "RULES", "fusible_ops", "FUSIBLE", "input_index",
           "aligned_read"]
