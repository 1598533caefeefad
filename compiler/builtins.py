"""The built-in functions of the expression language, as one table: ``BUILTINS[name](b, call)``.

Each entry elaborates a call (``A.Call``) with an ``ExprBuilder`` ``b``: it checks the arguments'
count, dtypes, shapes and units, folds compile-time arguments (by the oracle's rules,
``values.fold``) and otherwise adds IR nodes through ``b``.  ``expressions.py`` dispatches calls
here; this module never needs the builder's class, only its methods.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from nspec.dsl import ast as A

from .ir import DType, Op
from .units import DIMENSIONLESS, describe
from .builtins_lists import arange, check_count, linspace, range_list, reversed_list
from .builtins_random import binomial, normal, orthogonal, rand, uniform
from .values import Val, call_args, fmt_shape, fmt_type, fold, int_range, is_whole_number, norm_axis, static

if TYPE_CHECKING:
    from nspec.dsl.diagnostics import Span

    from .expressions import ExprBuilder

Builtin = Callable[["ExprBuilder", A.Call], Val]


def _dimensionless_math(op: Op) -> Builtin:
    """exp(), sigmoid(), ...: a dimensionless float in, a dimensionless float out (folded in float64)."""
    def fn(b: ExprBuilder, e: A.Call) -> Val:
        name = e.func.id
        (arg,), _ = call_args(b, e, 1, 1)
        x = b.expr(arg)
        b.require_numeric(x, e.span, f"apply {name} to")
        if not x.dim.dimensionless:
            b.fail(arg.span, f"{name}() needs a dimensionless argument, got {describe(x.dim)}",
                   "divide by a quantity of the same unit first, e.g. exp(-t / tau)")
        if x.is_static and not isinstance(x.static, list):
            value = fold(op, np.asarray(x.static, dtype=np.float64))
            return static(value.item() if value.ndim == 0 else value.astype(np.float32))
        x = b.as_float(x, e.span)
        return b.add(op, [x], x.dtype, x.shape, DIMENSIONLESS, e.span)
    return fn


def _unit_preserving(op: Op) -> Builtin:
    """relu(), abs(), floor(): any numeric value in, the same dtype and unit out."""
    def fn(b: ExprBuilder, e: A.Call) -> Val:
        (arg,), _ = call_args(b, e, 1, 1)
        x = b.expr(arg)
        b.require_numeric(x, e.span, f"apply {e.func.id} to")
        if x.is_static and not isinstance(x.static, list):
            value = fold(op, np.asarray(x.static))
            return static(value.item() if value.ndim == 0 else value, x.dim)
        return b.add(op, [x], x.dtype, x.shape, x.dim, e.span)
    return fn


def _sqrt(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = call_args(b, e, 1, 1)
    x = b.expr(arg)
    b.require_numeric(x, e.span, "take the square root of")
    if x.is_static and not isinstance(x.static, list):
        value = fold(Op.SQRT, np.asarray(x.static, dtype=np.float64))
        return static(value.item() if value.ndim == 0 else value.astype(np.float32), x.dim ** 0.5)
    x = b.as_float(x, e.span)
    return b.add(Op.SQRT, [x], x.dtype, x.shape, x.dim ** 0.5, e.span)


def _convert(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = call_args(b, e, 1, 1)
    x = b.expr(arg)
    target = {"float": b.float_dtype, "int": DType.i64, "bool": DType.bool}[e.func.id]
    if target is DType.i64 and x.is_static and np.asarray(x.static).dtype.kind == "f":
        values = np.asarray(x.static, dtype=np.float64).ravel()
        outside = values[~(np.abs(values) < 2.0 ** 63)]  # inf and nan too
        if outside.size:
            b.fail(arg.span, f"int() of {outside[0]:g}: the result is outside {int_range()}")
    if x.is_static and not isinstance(x.static, list):
        if np.ndim(x.static) == 0:
            conv = {"float": float, "int": int, "bool": bool}[e.func.id]
            return replace(static(conv(x.static), x.dim), weak=False)
        return static(np.asarray(x.static).astype(target.numpy), x.dim)
    return b.cast(x, target, e.span)


def _exprel(b: ExprBuilder, e: A.Call) -> Val:
    """exprel(x) = (exp(x) - 1) / x, 1 at 0 (Brian2's, for rate functions like HH's), in float64
    rounded once: Kahan's form (u - 1) / log(u) with u = exp(x) near 0, where the direct quotient
    cancels, and the direct quotient elsewhere."""
    (arg,), _ = call_args(b, e, 1, 1)
    x = b.expr(arg)
    b.require_numeric(x, e.span, "apply exprel to")
    if not x.dim.dimensionless:
        b.fail(arg.span, f"exprel() needs a dimensionless argument, got {describe(x.dim)}",
               "divide by a quantity of the same unit first, e.g. exprel(-(v - vt) / (4 mV))")
    if x.is_static and not isinstance(x.static, list):
        v = np.asarray(x.static, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(v == 0, 1.0, np.expm1(v) / np.where(v == 0, 1.0, v))
        return static(value.item() if value.ndim == 0 else value.astype(np.float32))
    x32 = b.as_float(x, e.span)
    x = b.cast(x32, DType.f64, e.span)  # in float64, rounded once at the end: within 1 ulp
    u = b.add(Op.EXP, [x], x.dtype, x.shape, DIMENSIONLESS, e.span)
    um1 = b.binary("-", u, static(1.0), e.span)
    # near 0 (|x| < 1/2), where u - 1 cancels: Kahan's quotient, 1 where u rounds to 1
    near = b.binary("<", b.add(Op.ABS, [x], x.dtype, x.shape, DIMENSIONLESS, e.span), static(0.5), e.span)
    one = b.binary("==", um1, static(0.0), e.span)
    log_u = b.add(Op.LOG, [b.select(one, static(2.0), u, e.span)], x.dtype, x.shape, DIMENSIONLESS, e.span)
    kahan = b.select(one, static(1.0), b.binary("/", um1, log_u, e.span), e.span)
    # elsewhere the direct quotient is exact to rounding (and inf where exp overflows)
    direct = b.binary("/", um1, b.select(near, static(1.0), x, e.span), e.span)
    return b.cast(b.select(near, kahan, direct, e.span), x32.dtype, e.span)


def _heaviside(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = call_args(b, e, 1, 1)
    x = b.as_float(b.expr(arg), e.span)
    return b.add(Op.SPIKE, [x], x.dtype, x.shape, DIMENSIONLESS, e.span,
                 (("surrogate", "straight_through"), ("surrogate_args", ())))


def _where(b: ExprBuilder, e: A.Call) -> Val:
    (c, x, y), _ = call_args(b, e, 3, 3)
    cv, xv, yv = b.expr(c), b.expr(x), b.expr(y)
    if cv.dtype is not DType.bool:
        b.fail(c.span, f"where() needs a bool condition, got {fmt_type(cv)}")
    if xv.dim != yv.dim:
        b.fail(e.span, f"unit mismatch in where(): {describe(xv.dim)} and {describe(yv.dim)}")
    dtype = b.result_dtype(xv, yv, e.span, "where")
    if cv.is_static and np.ndim(cv.static) == 0:
        return xv if cv.static else yv
    try:
        shape = tuple(np.broadcast_shapes(cv.shape, xv.shape, yv.shape))
    except ValueError:
        b.fail(e.span, f"where(): shapes {fmt_shape(cv.shape)}, {fmt_shape(xv.shape)}, {fmt_shape(yv.shape)} do not broadcast")
    if cv.is_static and xv.is_static and yv.is_static:
        return static(fold(Op.WHERE, cv.static, xv.static, yv.static), xv.dim)
    xv, yv = (b.cast(v, dtype, e.span) if not v.is_static else replace(v, dtype=dtype) for v in (xv, yv))
    return b.add(Op.WHERE, [cv, xv, yv], dtype, shape, xv.dim, e.span)


def _maxmin(b: ExprBuilder, e: A.Call) -> Val:
    (x, y), _ = call_args(b, e, 2, 2)
    xv, yv = b.expr(x), b.expr(y)
    b.same_dim(xv, yv, e.span, e.func.id)
    dtype = b.result_dtype(xv, yv, e.span, e.func.id)
    shape = b.broadcast(xv, yv, e.span, e.func.id)
    if xv.is_static and yv.is_static:
        value = fold(Op.MAXIMUM if e.func.id == "maximum" else Op.MINIMUM, xv.static, yv.static)
        return static(value.item() if np.ndim(value) == 0 else value, xv.dim)
    xv, yv = (b.cast(v, dtype, e.span) if not v.is_static else replace(v, dtype=dtype) for v in (xv, yv))
    return b.add(Op.MAXIMUM if e.func.id == "maximum" else Op.MINIMUM, [xv, yv], dtype, shape, xv.dim, e.span)


def _clip(b: ExprBuilder, e: A.Call) -> Val:
    (x, lo, hi), _ = call_args(b, e, 3, 3)
    xv, lov, hiv = b.expr(x), b.expr(lo), b.expr(hi)
    for v, part in ((lov, lo), (hiv, hi)):
        if v.dim != xv.dim:
            b.fail(part.span, f"unit mismatch in clip(): the value is {describe(xv.dim)}, the bound {describe(v.dim)}")
    low = b.binary_raw(Op.MAXIMUM, xv, lov, e.span)
    return b.binary_raw(Op.MINIMUM, low, hiv, e.span)



def _axes(b: ExprBuilder, e: A.Expr | None, rank: int, default) -> tuple[int, ...]:
    if e is None:
        return default
    v = b.static_value(e, "an axis")
    vals = v.static if isinstance(v.static, list) else [v.static]
    out = []
    for a in vals:
        if not is_whole_number(a):
            b.fail(e.span, f"an axis must be an integer, got {a!r}")
        out.append(norm_axis(b, int(a), rank, e.span))
    return tuple(sorted(set(out)))


def _reduce(b: ExprBuilder, e: A.Call) -> Val:
    name = e.func.id
    if name in ("max", "min") and len(e.args) == 2:
        b.fail(e.span, f"{name}() reduces one tensor; for the elementwise {name}imum of two values use "
                       f"{name}imum(a, b)")
    (arg,), kw = call_args(b, e, 1, 1, ("axis", "keepdims"))
    x = b.expr(arg)
    b.require_numeric(x, e.span, f"take the {name} of")
    if x.shape == ():
        return x
    axes = _axes(b, kw.get("axis"), len(x.shape), tuple(range(len(x.shape))))
    keep = bool(b.static_value(kw["keepdims"], "keepdims").static) if "keepdims" in kw else False
    shape = tuple((1 if i in axes else s) for i, s in enumerate(x.shape) if keep or i not in axes)
    op = {"sum": Op.SUM, "mean": Op.MEAN, "max": Op.MAX, "min": Op.MIN}[name]
    dtype = b.float_dtype if name == "mean" and not x.dtype.is_float else x.dtype
    x = b.cast(x, dtype, e.span)
    return b.add(op, [x], dtype, shape, x.dim, e.span, (("axes", axes), ("keepdims", keep)))


def _argmax(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = call_args(b, e, 1, 1, ("axis",))
    x = b.expr(arg)
    (axis,) = _axes(b, kw.get("axis"), len(x.shape), (len(x.shape) - 1,))
    shape = x.shape[:axis] + x.shape[axis + 1:]
    return b.add(Op.ARGMAX, [x], DType.i64, shape, DIMENSIONLESS, e.span, (("axis", axis),))


def _softmax(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = call_args(b, e, 1, 1, ("axis",))
    x = b.as_float(b.expr(arg), e.span)
    if not x.dim.dimensionless:
        b.fail(arg.span, f"{e.func.id}() needs a dimensionless argument, got {describe(x.dim)}")
    if not x.shape:
        b.fail(arg.span, f"{e.func.id}() needs a tensor, got a scalar")
    (axis,) = _axes(b, kw.get("axis"), len(x.shape), (len(x.shape) - 1,))
    if e.func.id == "softmax":
        return b.add(Op.SOFTMAX, [x], x.dtype, x.shape, DIMENSIONLESS, e.span, (("axis", axis),))
    return b.add(Op.LOGSUMEXP, [x], x.dtype, x.shape[:axis] + x.shape[axis + 1:], DIMENSIONLESS, e.span,
                 (("axis", axis),))


def _layernorm(b: ExprBuilder, e: A.Call) -> Val:
    args, kw = call_args(b, e, 1, 3, ("eps",))
    x = b.as_float(b.expr(args[0]), e.span)
    if not x.shape:
        b.fail(args[0].span, "layernorm() needs a tensor, got a scalar")
    eps = float(b.static_value(kw["eps"], "eps").static) if "eps" in kw else 1e-5
    extra = []
    for a in args[1:]:
        w = b.as_float(b.expr(a), a.span)
        if w.shape != x.shape[-1:]:
            b.fail(a.span, f"layernorm weight/bias must have shape {fmt_shape(x.shape[-1:])}, got {fmt_shape(w.shape)}")
        extra.append(w)
    dim = extra[0].dim if extra else DIMENSIONLESS
    return b.add(Op.LAYERNORM, [x, *extra], x.dtype, x.shape, dim, e.span, (("eps", eps),))


def _glu(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = call_args(b, e, 1, 1, ("axis",))
    x = b.as_float(b.expr(arg), e.span)
    (axis,) = _axes(b, kw.get("axis"), len(x.shape), (len(x.shape) - 1,))
    n = x.shape[axis]
    if n % 2:
        b.fail(arg.span, f"glu() halves axis {axis}, whose size {n} is odd")
    half = n // 2

    def part(lo: int) -> Val:
        starts = tuple(lo if i == axis else 0 for i in range(len(x.shape)))
        stops = tuple(lo + half if i == axis else s for i, s in enumerate(x.shape))
        shape = tuple(half if i == axis else s for i, s in enumerate(x.shape))
        return b.add(Op.SLICE, [x], x.dtype, shape, x.dim, e.span,
                     (("starts", starts), ("stops", stops), ("steps", (1,) * len(x.shape))))

    a, g = part(0), part(half)
    gate = b.add(Op.SIGMOID, [g], x.dtype, g.shape, DIMENSIONLESS, e.span)
    return b.add(Op.MUL, [a, gate], x.dtype, a.shape, x.dim, e.span)


def _linear(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = call_args(b, e, 2, 3)
    x = b.as_float(b.expr(args[0]), e.span)
    w = b.as_float(b.expr(args[1]), e.span)
    if len(w.shape) != 2:
        b.fail(args[1].span, f"linear() weight must be a matrix [out, in], got {fmt_shape(w.shape)}")
    if not x.shape or x.shape[-1] != w.shape[1]:
        b.fail(e.span, f"linear(): input size {x.shape[-1] if x.shape else 'scalar'} does not match weight "
                       f"{fmt_shape(w.shape)} (layout [out, in])")
    letters = "abcdefgh"[: len(x.shape) - 1]
    y = b.add(Op.EINSUM, [x, w], x.dtype, x.shape[:-1] + (w.shape[0],), x.dim * w.dim, e.span,
              (("equation", f"{letters}i,oi->{letters}o"),))
    if len(args) == 3:
        bias = b.as_float(b.expr(args[2]), e.span)
        if bias.shape != (w.shape[0],):
            b.fail(args[2].span, f"linear() bias must have shape [{w.shape[0]}], got {fmt_shape(bias.shape)}")
        y = b.binary("+", y, bias, e.span)
    return y


def _projected_linear(b: ExprBuilder, e: A.Call) -> Val:
    """``projected_linear(x, W, H)``: ``x W^T`` forward; backward, ``W``'s gradient is ``delta (x - x H^T H)^T``
    (the presynaptic activity projected off the row space of ``H``, HLOP's gradient projection) and
    ``x``'s is ``delta W``, as for ``linear``; ``H`` gets none.  Built from the straight-through idiom
    ``x W^T - stop_gradient(x H^T H) (W - stop_gradient(W))^T``, whose second term is exactly zero forward."""
    (xa, wa, ha), _ = call_args(b, e, 3, 3)
    x = b.as_float(b.expr(xa), e.span)
    w = b.as_float(b.expr(wa), e.span)
    h = b.as_float(b.expr(ha), e.span)
    if len(w.shape) != 2:
        b.fail(wa.span, f"projected_linear() weight must be a matrix [out, in], got {fmt_shape(w.shape)}")
    if not x.shape or x.shape[-1] != w.shape[1]:
        b.fail(e.span, f"projected_linear(): input size {x.shape[-1] if x.shape else 'scalar'} does not match "
                       f"weight {fmt_shape(w.shape)} (layout [out, in])")
    if len(h.shape) != 2 or h.shape[1] != w.shape[1]:
        b.fail(ha.span, f"projected_linear() subspace must be a matrix [k, {w.shape[1]}] (one basis vector of the "
                        f"input per row), got {fmt_shape(h.shape)}")
    if not h.dim.dimensionless:
        b.fail(ha.span, f"projected_linear() subspace must be dimensionless (orthonormal rows), got {describe(h.dim)}")
    lead = "abcdefgh"[: len(x.shape) - 1]

    def einsum(equation: str, u: Val, v: Val, shape, dim) -> Val:
        return b.add(Op.EINSUM, [u, v], x.dtype, shape, dim, e.span, (("equation", equation),))

    y = einsum(f"{lead}i,oi->{lead}o", x, w, x.shape[:-1] + (w.shape[0],), x.dim * w.dim)
    coeff = einsum(f"{lead}i,ki->{lead}k", x, h, x.shape[:-1] + (h.shape[0],), x.dim)
    inside = einsum(f"{lead}k,ki->{lead}i", coeff, h, x.shape, x.dim)          # x H^T H
    inside = b.add(Op.STOP_GRADIENT, [inside], x.dtype, x.shape, x.dim, e.span)
    zero = b.binary("-", w, b.add(Op.STOP_GRADIENT, [w], w.dtype, w.shape, w.dim, e.span), e.span)
    return b.binary("-", y, einsum(f"{lead}i,oi->{lead}o", inside, zero, y.shape, y.dim), e.span)


_EINSUM_RE = re.compile(r"^\s*([a-zA-Z]*(\s*,\s*[a-zA-Z]*)*)\s*->\s*([a-zA-Z]*)\s*$")


def _einsum(b: ExprBuilder, e: A.Call) -> Val:
    if not e.args:
        b.fail(e.span, "einsum() needs an equation string and operands")
    eq_v = b.expr(e.args[0])
    if not (eq_v.is_static and isinstance(eq_v.static, str)):
        b.fail(e.args[0].span, "einsum()'s first argument must be an equation string like \"ij,jk->ik\"")
    eq = eq_v.static.replace(" ", "")
    m = _EINSUM_RE.match(eq)
    if not m:
        b.fail(e.args[0].span, f"malformed einsum equation {eq!r}: write inputs and the output, e.g. \"ij,jk->ik\"")
    ins, out = eq.split("->")
    specs = ins.split(",")
    ops = [b.as_float(b.expr(a), a.span) for a in e.args[1:]]
    if len(specs) != len(ops):
        b.fail(e.span, f"einsum equation {eq!r} names {len(specs)} operand(s), {len(ops)} given")
    sizes: dict[str, int] = {}
    for spec, v, a in zip(specs, ops, e.args[1:]):
        if len(spec) != len(v.shape):
            b.fail(a.span, f"einsum operand '{spec}' has rank {len(spec)} in {eq!r}, but the value has shape "
                           f"{fmt_shape(v.shape)}")
        for letter, size in zip(spec, v.shape):
            if sizes.setdefault(letter, size) != size:
                b.fail(a.span, f"einsum index '{letter}' has size {sizes[letter]} and {size} in {eq!r}")
    for letter in out:
        if letter not in sizes:
            b.fail(e.args[0].span, f"einsum output index '{letter}' appears in no operand")
    dim = DIMENSIONLESS
    for v in ops:
        dim = dim * v.dim
    dtype = ops[0].dtype
    return b.add(Op.EINSUM, ops, dtype, tuple(sizes[c] for c in out), dim, e.span, (("equation", eq),))


def _outer(b: ExprBuilder, e: A.Call) -> Val:
    (x, y), _ = call_args(b, e, 2, 2)
    xv, yv = b.as_float(b.expr(x), e.span), b.as_float(b.expr(y), e.span)
    lx, ly = "abcd"[: len(xv.shape)], "efgh"[: len(yv.shape)]
    if len(xv.shape) == 2 and len(yv.shape) == 1:
        eq = "hn,d->hnd"
    elif len(xv.shape) == 2 and len(yv.shape) == 2 and xv.shape[0] == yv.shape[0]:
        eq = "hn,hd->hnd"  # per-head outer product over a shared leading axis
    else:
        eq = f"{lx},{ly}->{lx}{ly}"
    ins = eq.split("->")[0].split(",")
    sizes = {}
    for spec, v in zip(ins, (xv, yv)):
        sizes.update(zip(spec, v.shape))
    out = eq.split("->")[1]
    return b.add(Op.EINSUM, [xv, yv], xv.dtype, tuple(sizes[c] for c in out), xv.dim * yv.dim, e.span,
                 (("equation", eq),))


def _reshape(b: ExprBuilder, e: A.Call) -> Val:
    (x, s), _ = call_args(b, e, 2, 2)
    xv = b.expr(x)
    shape = list(b.static_shape(s, "reshape()'s shape"))
    size = int(np.prod(xv.shape))
    if shape.count(-1) == 1:
        rest = int(np.prod([d for d in shape if d != -1]))
        if rest == 0 or size % rest:
            b.fail(s.span, f"cannot reshape {fmt_shape(xv.shape)} to {fmt_shape(shape)}")
        shape[shape.index(-1)] = size // rest
    if any(d < 0 for d in shape) or int(np.prod(shape)) != size:
        b.fail(s.span, f"cannot reshape {fmt_shape(xv.shape)} ({size} elements) to {fmt_shape(shape)} "
                       f"({int(np.prod(shape))} elements)")
    return b.add(Op.RESHAPE, [xv], xv.dtype, tuple(shape), xv.dim, e.span)


def _transpose(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = call_args(b, e, 1, 2)
    xv = b.expr(args[0])
    perm = b.static_shape(args[1], "transpose()'s permutation") if len(args) == 2 else tuple(reversed(range(len(xv.shape))))
    if sorted(perm) != list(range(len(xv.shape))):
        b.fail(e.span, f"transpose(): {list(perm)} is not a permutation of the {len(xv.shape)} axes")
    return b.add(Op.TRANSPOSE, [xv], xv.dtype, tuple(xv.shape[p] for p in perm), xv.dim, e.span, (("perm", tuple(perm)),))


def _broadcast(b: ExprBuilder, e: A.Call) -> Val:
    (x, s), _ = call_args(b, e, 2, 2)
    xv = b.expr(x)
    shape = b.static_shape(s, "broadcast()'s shape")
    try:
        if tuple(np.broadcast_shapes(xv.shape, shape)) != shape:
            raise ValueError
    except ValueError:
        b.fail(e.span, f"cannot broadcast {fmt_shape(xv.shape)} to {fmt_shape(shape)}")
    return b.add(Op.BROADCAST, [xv], xv.dtype, shape, xv.dim, e.span)


def _concat(b: ExprBuilder, e: A.Call) -> Val:
    (items,), kw = call_args(b, e, 1, 1, ("axis",))
    if not isinstance(items, A.ListExpr) or not items.items:
        b.fail(items.span, f"{e.func.id}() takes a non-empty list: {e.func.id}([a, b], axis = 0)")
    vals = [b.expr(i) for i in items.items]
    axis = b.static_int(kw["axis"], "axis") if "axis" in kw else 0
    if e.func.id == "stack":
        return b.stack(vals, axis, e.span)
    rank = len(vals[0].shape)
    if rank == 0:
        b.fail(e.span, "concat() joins tensors; use stack() for scalars")
    axis = norm_axis(b, axis, rank, e.span)
    dtype = vals[0].dtype
    for v, node in zip(vals, items.items):
        if len(v.shape) != rank or any(s != t for i, (s, t) in enumerate(zip(v.shape, vals[0].shape)) if i != axis):
            b.fail(node.span, f"concat(): shape {fmt_shape(v.shape)} does not match {fmt_shape(vals[0].shape)} "
                              f"outside axis {axis}")
        if v.dim != vals[0].dim:
            b.fail(node.span, "concat(): all parts must have the same unit")
        dtype = b.result_dtype(Val(dtype, ()), v, e.span, "concat")
    shape = list(vals[0].shape)
    shape[axis] = sum(v.shape[axis] for v in vals)
    vals = [b.cast(v, dtype, e.span) if not v.is_static else replace(v, dtype=dtype) for v in vals]
    return b.add(Op.CONCAT, vals, dtype, tuple(shape), vals[0].dim, e.span, (("axis", axis),))


def _gather(b: ExprBuilder, e: A.Call) -> Val:
    (x, idx), kw = call_args(b, e, 2, 2, ("axis",))
    xv, iv = b.expr(x), b.expr(idx)
    if iv.dtype not in (DType.i64, DType.i32):
        b.fail(idx.span, f"gather() indices must be i64, got {fmt_type(iv)}")
    axis = norm_axis(b, b.static_int(kw["axis"], "axis") if "axis" in kw else 0, len(xv.shape), e.span)
    shape = xv.shape[:axis] + iv.shape + xv.shape[axis + 1:]
    return b.add(Op.GATHER, [xv, iv], xv.dtype, shape, xv.dim, e.span, (("axis", axis),))


def _scatter_add(b: ExprBuilder, e: A.Call) -> Val:
    (base, idx, vals), kw = call_args(b, e, 3, 3, ("axis",))
    bv, iv, vv = b.expr(base), b.expr(idx), b.expr(vals)
    if iv.dtype not in (DType.i64, DType.i32) or len(iv.shape) != 1:
        b.fail(idx.span, f"scatter_add() indices must be a 1-D i64 tensor, got {fmt_type(iv)}")
    axis = norm_axis(b, b.static_int(kw["axis"], "axis") if "axis" in kw else 0, len(bv.shape), e.span)
    want = bv.shape[:axis] + iv.shape + bv.shape[axis + 1:]
    if vv.shape != want:
        b.fail(vals.span, f"scatter_add() values must have shape {fmt_shape(want)}, got {fmt_shape(vv.shape)}")
    if vv.dim != bv.dim:
        b.fail(vals.span, "scatter_add(): values and base have different units")
    vv = b.cast(vv, bv.dtype, e.span)
    return b.add(Op.SCATTER_ADD, [bv, iv, vv], bv.dtype, bv.shape, bv.dim, e.span, (("axis", axis),))


def _segment_sum(b: ExprBuilder, e: A.Call) -> Val:
    (x, n), _ = call_args(b, e, 2, 2)
    xv = b.expr(x)
    k = b.static_int(n, "the number of segments")
    if not xv.shape or k <= 0 or xv.shape[-1] % k:
        b.fail(e.span, f"segment_sum(): the last axis ({xv.shape[-1] if xv.shape else 'scalar'}) must split into "
                       f"{k} equal segments")
    grouped = xv.shape[:-1] + (k, xv.shape[-1] // k)
    r = b.add(Op.RESHAPE, [xv], xv.dtype, grouped, xv.dim, e.span)
    return b.add(Op.SUM, [r], xv.dtype, grouped[:-1], xv.dim, e.span, (("axes", (len(grouped) - 1,)), ("keepdims", False)))


def _index(b: ExprBuilder, e: A.Call) -> Val:
    """index(): the index of each element along the first axis of the equation's target (Brian2's
    ``i``): in a neuron's equations the neuron's index in its population, in a synapse's the
    synapse's index in its projection.  A compile-time i64 vector."""
    call_args(b, e, 0, 0)
    if not b.target_shape:
        b.fail(e.span, "index() numbers the neurons of a population (or the synapses of a projection); a "
                       "system's equation has no such axis")
    return static(np.arange(b.target_shape[0], dtype=np.int64))


def _one_hot(b: ExprBuilder, e: A.Call) -> Val:
    (i, n), _ = call_args(b, e, 2, 2)
    iv = b.expr(i)
    k = b.static_int(n, "one_hot()'s size")
    if k <= 0:
        b.fail(n.span, f"one_hot() needs a positive number of classes, got {k}")
    check_count(b, n.span, "one_hot()", k)  # its compile-time range of k classes, before it is built
    if iv.dtype not in (DType.i64, DType.i32):
        b.fail(i.span, f"one_hot() needs i64 indices, got {fmt_type(iv)}")
    rng = static(np.arange(k, dtype=np.int64))
    if iv.is_static:
        iv2 = replace(iv, shape=iv.shape + (1,), static=np.asarray(iv.static)[..., None])
    else:
        iv2 = b.add(Op.RESHAPE, [iv], iv.dtype, iv.shape + (1,), DIMENSIONLESS, e.span)
    eq = b.add(Op.EQ, [iv2, rng], DType.bool, iv.shape + (k,), DIMENSIONLESS, e.span)
    return b.cast(eq, b.float_dtype, e.span)


def _zeros(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = call_args(b, e, 0, 1)
    shape = b.static_shape(args[0], f"{e.func.id}()'s shape") if args else b.target_shape
    fill = 0.0 if e.func.id == "zeros" else 1.0
    return static(np.full(shape, fill, dtype=np.float32))


def _rope(b: ExprBuilder, e: A.Call) -> Val:
    """BDH's rotary phase: v*cos(phi) + rot(v)*sin(phi), phi = 2*pi*((pos*freqs) mod 1)."""
    args, kw = call_args(b, e, 2, 3, ("theta",))
    x = b.as_float(b.expr(args[0]), e.span)
    pos = b.as_float(b.expr(args[1]), e.span)
    if not x.shape or x.shape[-1] % 2:
        b.fail(args[0].span, "rope() needs a last axis of even size")
    n = x.shape[-1]
    if len(args) == 3:
        freqs = b.as_float(b.expr(args[2]), e.span)
    else:
        theta = float(b.static_value(kw["theta"], "theta").static) if "theta" in kw else 65536.0
        idx = np.arange(n)
        freqs = static((theta ** (-(2 * (idx // 2)) / n) / (2 * math.pi)).astype(np.float32))
    if freqs.shape not in ((n,), ()):
        if math.prod(freqs.shape) != n:
            b.fail(args[2].span, f"rope() needs one frequency per element of the last axis ({n}); "
                                 f"freqs is {fmt_shape(freqs.shape)}")
        freqs = b.add(Op.RESHAPE, [freqs], freqs.dtype, (n,), DIMENSIONLESS, e.span)
    t = b.binary("*", pos, freqs, e.span)
    frac = b.binary("%", t, static(1.0), e.span)
    phase = b.binary("*", frac, static(2 * math.pi), e.span)
    cos = b.add(Op.COS, [phase], x.dtype, phase.shape, DIMENSIONLESS, e.span)
    sin = b.add(Op.SIN, [phase], x.dtype, phase.shape, DIMENSIONLESS, e.span)
    # rot(v) = interleave(-v[1::2], v[0::2])
    pairs = x.shape[:-1] + (n // 2, 2)
    xp = b.add(Op.RESHAPE, [x], x.dtype, pairs, x.dim, e.span)
    rank = len(pairs)

    def col(c: int) -> Val:
        starts = tuple(c if i == rank - 1 else 0 for i in range(rank))
        stops = tuple(c + 1 if i == rank - 1 else s for i, s in enumerate(pairs))
        return b.add(Op.SLICE, [xp], x.dtype, pairs[:-1] + (1,), x.dim, e.span,
                     (("starts", starts), ("stops", stops), ("steps", (1,) * rank)))

    even, odd = col(0), col(1)
    neg_odd = b.add(Op.NEG, [odd], x.dtype, odd.shape, x.dim, e.span)
    rot = b.add(Op.CONCAT, [neg_odd, even], x.dtype, pairs, x.dim, e.span, (("axis", rank - 1),))
    rot = b.add(Op.RESHAPE, [rot], x.dtype, x.shape, x.dim, e.span)
    return b.binary("+", b.binary("*", x, cos, e.span), b.binary("*", rot, sin, e.span), e.span)


def _topk_mask(b: ExprBuilder, e: A.Call) -> Val:
    """1 where x is among the k largest along the last axis (ties go to the lowest index)."""
    (x, k), _ = call_args(b, e, 2, 2)
    xv = b.as_float(b.expr(x), e.span)
    kk = b.static_int(k, "topk_mask()'s k")
    n = xv.shape[-1] if xv.shape else 0
    if not 0 < kk <= n:
        b.fail(k.span, f"topk_mask(): k = {kk} must be in 1..{n}")
    return topk_mask(b, xv, kk, e.span)


def topk_mask(b: ExprBuilder, x: Val, k: int, span: Span) -> Val:
    """1 where ``x`` (float, last axis of n) is among the k largest, else 0; exactly k ones.

    Entry i's rank is the number of entries that beat it: j beats i when x[j] > x[i], or when
    x[j] == x[i] and j < i (ties go to the lowest index, as argmax and a stable sort do).  The k
    entries of rank < k win."""
    n = x.shape[-1]
    a = b.add(Op.RESHAPE, [x], x.dtype, x.shape + (1,), x.dim, span)            # x[i] down the rows
    c = b.add(Op.RESHAPE, [x], x.dtype, x.shape[:-1] + (1, n), x.dim, span)     # x[j] along the columns
    pairs = x.shape + (n,)
    greater = b.cast(b.add(Op.GT, [c, a], DType.bool, pairs, DIMENSIONLESS, span), x.dtype, span)
    equal = b.cast(b.add(Op.EQ, [c, a], DType.bool, pairs, DIMENSIONLESS, span), x.dtype, span)
    earlier = static(np.tril(np.ones((n, n), dtype=x.dtype.numpy), -1))         # [i, j] = 1 where j < i
    beats = b.binary("+", greater, b.binary("*", equal, earlier, span), span)
    rank = b.add(Op.SUM, [beats], x.dtype, x.shape, DIMENSIONLESS, span,
                 (("axes", (len(x.shape),)), ("keepdims", False)))
    return b.cast(b.binary("<", rank, static(float(k)), span), x.dtype, span)


def _entropy(b: ExprBuilder, e: A.Call) -> Val:
    (p,), kw = call_args(b, e, 1, 1, ("axis",))
    pv = b.as_float(b.expr(p), e.span)
    (axis,) = _axes(b, kw.get("axis"), len(pv.shape), (len(pv.shape) - 1,))
    logp = b.add(Op.LOG, [b.binary_raw(Op.MAXIMUM, pv, static(1e-30), e.span)], pv.dtype, pv.shape, DIMENSIONLESS, e.span)
    prod = b.binary("*", pv, logp, e.span)
    s = b.add(Op.SUM, [prod], pv.dtype, pv.shape[:axis] + pv.shape[axis + 1:], DIMENSIONLESS, e.span,
              (("axes", (axis,)), ("keepdims", False)))
    return b.add(Op.NEG, [s], pv.dtype, s.shape, DIMENSIONLESS, e.span)


BUILTINS: dict[str, Builtin] = {
    # elementwise math: dimensionless in, dimensionless float out
    "exp": _dimensionless_math(Op.EXP), "log": _dimensionless_math(Op.LOG), "tanh": _dimensionless_math(Op.TANH),
    "sigmoid": _dimensionless_math(Op.SIGMOID), "sin": _dimensionless_math(Op.SIN),
    "cos": _dimensionless_math(Op.COS), "softplus": _dimensionless_math(Op.SOFTPLUS),
    "erf": _dimensionless_math(Op.ERF), "exprel": _exprel,
    "silu": _dimensionless_math(Op.SILU),
    # elementwise, keeping the unit
    "relu": _unit_preserving(Op.RELU), "abs": _unit_preserving(Op.ABS), "floor": _unit_preserving(Op.FLOOR),
    "stop_gradient": _unit_preserving(Op.STOP_GRADIENT),
    "sqrt": _sqrt, "maximum": _maxmin, "minimum": _maxmin, "clip": _clip, "where": _where,
    # conversions and spikes
    "float": _convert, "int": _convert, "bool": _convert, "heaviside": _heaviside,
    # reductions and normalisations over axes
    "sum": _reduce, "mean": _reduce, "max": _reduce, "min": _reduce, "argmax": _argmax,
    "softmax": _softmax, "logsumexp": _softmax, "layernorm": _layernorm, "entropy": _entropy,
    "topk_mask": _topk_mask,
    # layers and contractions
    "glu": _glu, "linear": _linear, "projected_linear": _projected_linear, "einsum": _einsum, "outer": _outer, "rope": _rope,
    # shapes and indexing
    "reshape": _reshape, "transpose": _transpose, "broadcast": _broadcast, "concat": _concat, "stack": _concat,
    "gather": _gather, "scatter_add": _scatter_add, "segment_sum": _segment_sum, "one_hot": _one_hot,
    "index": _index,
    # compile-time sequences and constants
    "arange": arange, "range": range_list, "reversed": reversed_list, "zeros": _zeros, "ones": _zeros,
    "linspace": linspace, "logspace": linspace,
    # random draws: initialisers, and counter-based draws in step equations
    "uniform": uniform, "rand": rand, "normal": normal, "orthogonal": orthogonal, "binomial": binomial,
}
