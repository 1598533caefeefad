"""Expressions -> typed IR values, checking dtypes, shapes and units on the way.

Every AST expression elaborates to a ``Val``: either a compile-time value (``static``: a number,
string, list or array bound from hyperparameters, template parameters and literals) or a node of
the graph being built, always with a dtype, a per-sample shape and a physical dimension.  Static
values fold eagerly and become ``CONST`` nodes only when they meet a graph value.  A mistake is
reported as a located diagnostic and raises ``Abort`` so the caller can skip that statement and
keep checking the rest of the spec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Collector, Span

from .ir import DType, GraphBuilder, Op
from .units import DIMENSIONLESS, Dim, describe, is_unit, unit


class Abort(Exception):
    """A diagnostic was recorded; abandon the current statement."""


@dataclass(frozen=True, slots=True)
class Val:
    dtype: DType
    shape: tuple[int, ...]
    dim: Dim = DIMENSIONLESS
    node: int | None = None
    static: Any = None
    weak: bool = False  # an untyped literal: adopts the other operand's dtype

    @property
    def is_static(self) -> bool:
        return self.node is None


def static(value, dim: Dim = DIMENSIONLESS) -> Val:
    """A compile-time value: Python scalars, strings and (nested) lists."""
    if isinstance(value, bool):
        return Val(DType.bool, (), dim, static=value)
    if isinstance(value, (int, np.integer)):
        return Val(DType.i64, (), dim, static=int(value), weak=True)
    if isinstance(value, (float, np.floating)):
        return Val(DType.f32, (), dim, static=float(value), weak=True)
    if isinstance(value, np.ndarray):
        dt = {np.dtype("bool"): DType.bool}.get(value.dtype, DType.i64 if value.dtype.kind in "iu" else DType.f32)
        return Val(dt, tuple(value.shape), dim, static=value)
    return Val(DType.f32, (), dim, static=value)


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def is_whole_number(x) -> bool:
    """A compile-time size or axis: a number (not a bool, a string or a list) with an integer value."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and float(x).is_integer()


def fmt_type(v: Val) -> str:
    unit_part = "" if v.dim.dimensionless else f" {describe(v.dim)}"
    return f"{v.dtype.value}{fmt_shape(v.shape) if v.shape else ''}{unit_part}"


# ---------------------------------------------------------------- the elaborator
class ExprBuilder:
    """Elaborates expressions into ``graph`` (a GraphBuilder) under a name ``lookup``."""

    def __init__(self, graph: GraphBuilder, diags: Collector, lookup: Callable[[str, Span], Val | None],
                 float_dtype: DType = DType.f32, allow_random: bool = False, target_shape: tuple[int, ...] = ()):
        self.g = graph
        self.diags = diags
        self.lookup = lookup
        self.float_dtype = float_dtype
        self.allow_random = allow_random
        self.target_shape = target_shape  # the shape random draws take (the declared variable's)

    # ------------------------------------------------------------ errors and nodes
    def fail(self, span: Span, message: str, *notes: str):
        self.diags.error(span, message, *notes)
        raise Abort

    def node(self, v: Val, span: Span) -> int:
        """The graph node of a value, materialising a static one as a constant."""
        if v.node is not None:
            return v.node
        value = v.static
        if isinstance(value, str):
            self.fail(span, f"the string {value!r} cannot be used as a number here")
        try:
            arr = np.asarray(value, dtype=v.dtype.numpy)
            if arr.shape != tuple(v.shape) and arr.size == int(np.prod(v.shape)):
                arr = arr.reshape(v.shape)
        except (TypeError, ValueError):
            self.fail(span, "this value cannot be used as a tensor")
        return self.g.const(arr, v.dtype, span)

    def add(self, op: Op, inputs: list[Val], dtype: DType, shape, dim: Dim, span: Span, attrs=()) -> Val:
        nodes = [self.node(i, span) for i in inputs]
        return Val(dtype, tuple(shape), dim, self.g.add(op, nodes, dtype, shape, attrs, span))

    # ------------------------------------------------------------ entry
    def expr(self, e: A.Expr) -> Val:
        method = getattr(self, "e_" + type(e).__name__, None)
        if method is None:
            self.fail(e.span, f"{type(e).__name__.lower()} is not an expression")
        return method(e)

    def e_Number(self, e: A.Number) -> Val:
        return static(int(e.value) if e.is_int and math.isfinite(e.value) else e.value)

    def e_Quantity(self, e: A.Quantity) -> Val:
        if not is_unit(e.unit):
            self.fail(e.span, f"unknown unit {e.unit!r} after the number {e.value:g}",
                      "write the unit (e.g. '20 ms', '-65 mV') or put '*' between a number and a name")
        scale, dim = unit(e.unit)
        return static(e.value * scale, dim)

    def e_String(self, e: A.String) -> Val:
        return Val(DType.f32, (), DIMENSIONLESS, static=e.value)

    def e_Bool(self, e: A.Bool) -> Val:
        return static(e.value)

    def e_Name(self, e: A.Name) -> Val:
        v = self.lookup(e.id, e.span)
        if v is not None:
            return v
        if is_unit(e.id):
            scale, dim = unit(e.id)
            return static(scale, dim)
        if e.id in ("zeros", "ones", "orthogonal"):
            return FUNCTIONS[e.id](self, A.Call(e.span, e, (), ()))
        if e.id in FUNCTIONS:
            self.fail(e.span, f"'{e.id}' is a function; call it: {e.id}(...)")
        self.fail(e.span, f"unknown name '{e.id}'")

    def e_ListExpr(self, e: A.ListExpr) -> Val:
        items = [self.expr(i) for i in e.items]
        if all(i.is_static for i in items):
            dims = {i.dim for i in items}
            if len(dims) > 1:
                self.fail(e.span, "list items have different units: " + ", ".join(sorted(describe(d) for d in dims)))
            values = [i.static for i in items]
            try:
                shape = np.asarray(values, dtype=object if any(isinstance(v, str) for v in values) else None).shape
            except ValueError:
                self.fail(e.span, "a nested list must be rectangular, like [[1, 2], [3, 4]]")
            return Val(DType.f32, tuple(shape) if shape else (len(items),), items[0].dim if items else DIMENSIONLESS,
                       static=values)
        return self.stack(items, 0, e.span)

    def e_Attribute(self, e: A.Attribute) -> Val:
        if isinstance(e.value, A.Name):
            v = self.lookup(f"{e.value.id}.{e.name}", e.span)
            if v is not None:
                return v
        self.fail(e.span, f"unknown name '{_text(e)}'")

    def e_Unary(self, e: A.Unary) -> Val:
        x = self.expr(e.operand)
        if e.op == "+":
            return x
        if e.op == "-":
            self.require_numeric(x, e.span, "negate")
            if x.is_static:
                return replace(x, static=_map_static(lambda a: -a, x.static))
            return self.add(Op.NEG, [x], x.dtype, x.shape, x.dim, e.span)
        # not
        if x.dtype is not DType.bool:
            self.fail(e.span, f"'not' needs a bool, got {fmt_type(x)}")
        if x.is_static:
            return static(not x.static)
        return self.add(Op.NOT, [x], DType.bool, x.shape, DIMENSIONLESS, e.span)

    def e_Binary(self, e: A.Binary) -> Val:
        left, right = self.expr(e.left), self.expr(e.right)
        return self.binary(e.op, left, right, e.span, e)

    def e_Compare(self, e: A.Compare) -> Val:
        vals = [self.expr(o) for o in e.operands]
        result = None
        for op, a, b, node in zip(e.ops, vals, vals[1:], e.operands[1:]):
            if op == "in":
                part = self.in_range(a, b, e.span)
            else:
                part = self.binary(op, a, b, e.span, e)
            result = part if result is None else self.binary("and", result, part, e.span, e)
        return result

    def in_range(self, x: Val, rng: Val, span: Span) -> Val:
        if not (rng.is_static and isinstance(rng.static, list) and len(rng.static) == 2):
            self.fail(span, "'in' needs a range written [lo, hi]")
        lo = Val(DType.f32, (), rng.dim, static=rng.static[0], weak=True)
        hi = Val(DType.f32, (), rng.dim, static=rng.static[1], weak=True)
        return self.binary("and", self.binary(">=", x, lo, span), self.binary("<=", x, hi, span), span)

    # ------------------------------------------------------------ binary operators
    def require_numeric(self, v: Val, span: Span, what: str) -> None:
        if v.dtype is DType.bool:
            self.fail(span, f"cannot {what} a bool value; convert it first with float(...)")
        if v.is_static and isinstance(v.static, str):
            self.fail(span, f"cannot {what} a string")

    def result_dtype(self, a: Val, b: Val, span: Span, op: str) -> DType:
        if a.weak and not b.weak:
            return b.dtype if not (b.dtype in (DType.i64, DType.i32) and a.dtype.is_float) else self.float_dtype
        if b.weak and not a.weak:
            return a.dtype if not (a.dtype in (DType.i64, DType.i32) and b.dtype.is_float) else self.float_dtype
        if a.dtype == b.dtype:
            return a.dtype
        if a.dtype.is_float and b.dtype.is_float:
            return DType.f64
        if a.dtype.is_float or b.dtype.is_float:
            return a.dtype if a.dtype.is_float else b.dtype
        return DType.i64

    def broadcast(self, a: Val, b: Val, span: Span, op: str) -> tuple[int, ...]:
        try:
            return tuple(np.broadcast_shapes(a.shape, b.shape))
        except ValueError:
            self.fail(span, f"shape mismatch in '{op}': {fmt_shape(a.shape)} and {fmt_shape(b.shape)} do not broadcast")

    def same_dim(self, a: Val, b: Val, span: Span, op: str, e: A.Node | None = None) -> None:
        if a.dim != b.dim:
            lhs = _text(e.left) if isinstance(e, A.Binary) else "left side"
            rhs = _text(e.right) if isinstance(e, A.Binary) else "right side"
            verb = {"+": "add", "-": "subtract"}.get(op, f"compare ({op})")
            self.fail(span, f"unit mismatch: cannot {verb} {describe(a.dim)} ({lhs}) and {describe(b.dim)} ({rhs})")

    def binary(self, op: str, a: Val, b: Val, span: Span, e: A.Node | None = None) -> Val:
        if op in ("and", "or"):
            for v in (a, b):
                if v.dtype is not DType.bool:
                    self.fail(span, f"'{op}' needs bool operands, got {fmt_type(v)}")
            if a.is_static and b.is_static:
                return static((a.static and b.static) if op == "and" else (a.static or b.static))
            shape = self.broadcast(a, b, span, op)
            return self.add(Op.AND if op == "and" else Op.OR, [a, b], DType.bool, shape, DIMENSIONLESS, span)
        if op == "@":
            return self.matmul(a, b, span)
        if op in ("==", "!=") and a.is_static and b.is_static and (isinstance(a.static, str) or isinstance(b.static, str)):
            return static((a.static == b.static) == (op == "=="))
        for v in (a, b):
            self.require_numeric(v, span, {"+": "add", "-": "subtract", "*": "multiply", "/": "divide",
                                           "^": "raise", "%": "take the remainder of"}.get(op, "compare"))
        if op in ("+", "-", "<", "<=", ">", ">=", "==", "!="):
            self.same_dim(a, b, span, op, e)
            dim = a.dim
        elif op == "*":
            dim = a.dim * b.dim
        elif op == "/":
            dim = a.dim / b.dim
        elif op == "%":
            self.same_dim(a, b, span, op, e)
            dim = a.dim
        elif op == "^":
            if not b.dim.dimensionless:
                self.fail(span, f"an exponent must be dimensionless, got {describe(b.dim)}")
            if a.dim.dimensionless:
                dim = DIMENSIONLESS
            elif b.is_static and np.ndim(b.static) == 0:
                dim = a.dim ** float(b.static)
            else:
                self.fail(span, f"raising a {describe(a.dim)} quantity to a non-constant power has no unit")
        else:
            self.fail(span, f"unknown operator {op!r}")
        shape = self.broadcast(a, b, span, op)
        is_cmp = op in ("<", "<=", ">", ">=", "==", "!=")
        dtype = DType.bool if is_cmp else self.result_dtype(a, b, span, op)
        if op == "/" and not dtype.is_float:
            dtype = self.float_dtype
        if a.is_static and b.is_static and not isinstance(a.static, str) and not isinstance(b.static, str):
            with np.errstate(all="ignore"):
                value = _STATIC_BINARY[op](np.asarray(a.static), np.asarray(b.static))
            value = value.item() if np.ndim(value) == 0 else value
            if isinstance(value, float) and not dtype.is_float:
                value = int(value) if float(value).is_integer() else value
            out = static(value, dim)
            return replace(out, weak=a.weak and b.weak and not is_cmp, dtype=out.dtype if is_cmp else
                           (dtype if not (a.weak and b.weak) else out.dtype))
        ir_op = _IR_BINARY[op]
        if not is_cmp and dtype != a.dtype and not a.is_static:
            a = self.cast(a, dtype, span)
        if not is_cmp and dtype != b.dtype and not b.is_static:
            b = self.cast(b, dtype, span)
        if is_cmp:
            common = self.result_dtype(a, b, span, op)
            a = self.cast(a, common, span) if not a.is_static and a.dtype != common else replace(a, dtype=common) if a.is_static else a
            b = self.cast(b, common, span) if not b.is_static and b.dtype != common else replace(b, dtype=common) if b.is_static else b
        else:
            a = replace(a, dtype=dtype) if a.is_static else a
            b = replace(b, dtype=dtype) if b.is_static else b
        return self.add(ir_op, [a, b], dtype, shape, dim, span)

    def cast(self, v: Val, dtype: DType, span: Span) -> Val:
        if v.dtype == dtype:
            return v
        if v.is_static:
            return replace(v, dtype=dtype, weak=False)
        return self.add(Op.CAST, [v], dtype, v.shape, v.dim, span)

    def as_float(self, v: Val, span: Span) -> Val:
        return v if v.dtype.is_float else self.cast(v, self.float_dtype, span)

    def matmul(self, a: Val, b: Val, span: Span) -> Val:
        for v in (a, b):
            self.require_numeric(v, span, "multiply")
        ra, rb = len(a.shape), len(b.shape)
        if ra == 0 or rb == 0:
            self.fail(span, "'@' needs vectors or matrices; use '*' for scalars")
        if a.shape[-1] != b.shape[0 if rb == 1 else -2]:
            self.fail(span, f"matrix product: inner sizes differ ({fmt_shape(a.shape)} @ {fmt_shape(b.shape)}; "
                            f"{a.shape[-1]} != {b.shape[0 if rb == 1 else -2]})")
        letters = "abcdefghij"
        if ra > 2 or rb > 2:
            self.fail(span, "'@' is defined for vectors and matrices; use einsum for higher ranks")
        la = "ik"[2 - ra:] if ra == 2 else "k"
        lb = "kj"[: rb] if rb == 2 else "k"
        out = (la.replace("k", "") + lb.replace("k", ""))
        eq = f"{la},{lb}->{out}"
        shape = tuple(a.shape[:-1]) + (tuple(b.shape[1:]) if rb == 2 else ())
        dtype = self.result_dtype(a, b, span, "@")
        del letters
        return self.add(Op.EINSUM, [self.as_float(a, span), self.as_float(b, span)], dtype, shape, a.dim * b.dim,
                        span, (("equation", eq),))

    def stack(self, items: list[Val], axis: int, span: Span) -> Val:
        shapes = {i.shape for i in items}
        if len(shapes) != 1:
            self.fail(span, "stacked values must have the same shape, got " + ", ".join(fmt_shape(s) for s in shapes))
        dims = {i.dim for i in items}
        if len(dims) != 1:
            self.fail(span, "stacked values must have the same unit")
        shape = items[0].shape
        axis = _norm_axis(self, axis, len(shape) + 1, span)
        new_shape = shape[:axis] + (1,) + shape[axis:]
        dtype = items[0].dtype
        for it in items[1:]:
            dtype = self.result_dtype(Val(dtype, ()), it, span, "stack")
        parts = [self.add(Op.RESHAPE, [self.cast(i, dtype, span)], dtype, new_shape, i.dim, span) for i in items]
        out_shape = shape[:axis] + (len(items),) + shape[axis:]
        return self.add(Op.CONCAT, parts, dtype, out_shape, items[0].dim, span, (("axis", axis),))

    # ------------------------------------------------------------ indexing
    def e_Index(self, e: A.Index) -> Val:
        x = self.expr(e.value)
        if x.is_static and isinstance(x.static, list):
            x = static(np.asarray(x.static), x.dim)
        subs = list(e.subscripts)
        if len(subs) > len(x.shape):
            self.fail(e.span, f"too many indices: {len(subs)} for a value of shape {fmt_shape(x.shape)}")
        starts, stops, steps, drop, gathers = [], [], [], [], []
        for axis, s in enumerate(subs):
            size = x.shape[axis]
            if isinstance(s, A.Slice):
                parts = []
                for p, default in ((s.start, None), (s.stop, None), (s.step, None)):
                    parts.append(None if p is None else self.static_int(p, "a slice bound"))
                sl = slice(*parts)
                if parts[2] is not None and parts[2] <= 0:
                    self.fail(s.span, "a slice step must be positive")
                for bound in parts[:2]:
                    if bound is not None and not -size <= bound <= size:
                        self.fail(s.span, f"slice bound {bound} is out of range for an axis of size {size}")
                a, b, c = sl.indices(size)
                starts.append(a), stops.append(max(b, a)), steps.append(c)
                continue
            idx = self.expr(s)
            if idx.is_static and np.ndim(idx.static) == 0:
                if not isinstance(idx.static, (int, np.integer)) or isinstance(idx.static, bool):
                    self.fail(s.span, f"an index must be an integer, got {idx.static!r}")
                i = int(idx.static)
                if not -size <= i < size:
                    self.fail(s.span, f"index {i} is out of range for an axis of size {size}")
                i %= size
                starts.append(i), stops.append(i + 1), steps.append(1), drop.append(axis)
                continue
            if idx.dtype not in (DType.i64, DType.i32):
                self.fail(s.span, f"an index tensor must be i64, got {fmt_type(idx)}")
            starts.append(0), stops.append(size), steps.append(1)
            gathers.append((axis, idx))
        for axis in range(len(subs), len(x.shape)):
            starts.append(0), stops.append(x.shape[axis]), steps.append(1)
        shape = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))
        if shape != x.shape:
            if x.is_static:
                arr = np.asarray(x.static)[tuple(slice(a, b, c) for a, b, c in zip(starts, stops, steps))]
                x = replace(x, shape=shape, static=arr)
            else:
                x = self.add(Op.SLICE, [x], x.dtype, shape, x.dim, e.span,
                             (("starts", tuple(starts)), ("stops", tuple(stops)), ("steps", tuple(steps))))
        if len(gathers) > 1:
            self.fail(e.span, "only one index tensor per indexing expression is supported; index in two steps")
        for axis, idx in gathers:
            out_shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
            x = self.add(Op.GATHER, [x, idx], x.dtype, out_shape, x.dim, e.span, (("axis", axis),))
            if idx.shape != ():
                drop = [d + len(idx.shape) - 1 if d > axis else d for d in drop]
        if drop:
            new_shape = tuple(s for i, s in enumerate(x.shape) if i not in drop)
            if x.is_static:
                x = replace(x, shape=new_shape, static=np.asarray(x.static).reshape(new_shape))
                if new_shape == ():
                    x = static(x.static.item(), x.dim)
            else:
                x = self.add(Op.RESHAPE, [x], x.dtype, new_shape, x.dim, e.span)
        return x

    # ------------------------------------------------------------ calls
    def e_Call(self, e: A.Call) -> Val:
        if not isinstance(e.func, A.Name):
            self.fail(e.span, "only named functions can be called")
        name = e.func.id
        fn = FUNCTIONS.get(name)
        if fn is None:
            v = self.lookup(name, e.func.span)
            if v is not None:
                self.fail(e.func.span, f"'{name}' is a value, not a function")
            self.fail(e.func.span, f"unknown function '{name}'", _suggest(name))
        return fn(self, e)

    # ------------------------------------------------------------ helpers for builtins
    def static_int(self, e: A.Expr, what: str) -> int:
        v = self.expr(e)
        if not v.is_static or isinstance(v.static, (str, list, bool)) or np.ndim(v.static) != 0:
            self.fail(e.span, f"{what} must be an integer known at compile time")
        if not float(v.static).is_integer():
            self.fail(e.span, f"{what} must be an integer, got {v.static:g}")
        if not v.dim.dimensionless:
            self.fail(e.span, f"{what} must be dimensionless, got {describe(v.dim)}")
        return int(v.static)

    def static_value(self, e: A.Expr, what: str):
        v = self.expr(e)
        if not v.is_static:
            self.fail(e.span, f"{what} must be known at compile time")
        return v

    def static_shape(self, e: A.Expr, what: str) -> tuple[int, ...]:
        v = self.expr(e)
        if not v.is_static or not isinstance(v.static, (list, tuple)):
            self.fail(e.span, f"{what} must be a list of sizes known at compile time, like [2, 3]")
        out = []
        for s in v.static:
            if not is_whole_number(s):
                self.fail(e.span, f"{what}: size {s!r} is not an integer")
            out.append(int(s))
        return tuple(out)


def _map_static(fn, value):
    if isinstance(value, list):
        return [_map_static(fn, v) for v in value]
    if isinstance(value, np.ndarray):
        return fn(value)
    return fn(value)


def _norm_axis(b: ExprBuilder, axis: int, rank: int, span: Span) -> int:
    if not -rank <= axis < max(rank, 1):
        b.fail(span, f"axis {axis} is out of range for a value of rank {rank}")
    return axis % rank if rank else 0


def _text(e) -> str:
    """A short source-like rendering of an expression, for messages."""
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Number):
        return f"{e.value:g}"
    if isinstance(e, A.Quantity):
        return f"{e.value:g} {e.unit}"
    if isinstance(e, A.Binary):
        return f"{_text(e.left)} {e.op} {_text(e.right)}"
    if isinstance(e, A.Unary):
        return f"{e.op}{_text(e.operand)}" if e.op != "not" else f"not {_text(e.operand)}"
    if isinstance(e, A.Call) and isinstance(e.func, A.Name):
        return f"{e.func.id}(...)"
    if isinstance(e, A.Attribute):
        return f"{_text(e.value)}.{e.name}"
    if isinstance(e, A.Index):
        return f"{_text(e.value)}[...]"
    return "expression"


_STATIC_BINARY = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "%": np.mod, "^": np.power,
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal,
}
_IR_BINARY = {
    "+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "%": Op.MOD, "^": Op.POW,
    "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE, "==": Op.EQ, "!=": Op.NE,
}


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(FUNCTIONS), n=3)
    return f"did you mean {', '.join(close)}?" if close else "see docs/language.md for the built-in functions"


# ---------------------------------------------------------------- built-in functions
FUNCTIONS: dict[str, Callable[[ExprBuilder, A.Call], Val]] = {}


def builtin(*names: str):
    def register(fn):
        for n in names:
            FUNCTIONS[n] = fn
        return fn
    return register


def _args(b: ExprBuilder, e: A.Call, n_min: int, n_max: int, kw: tuple[str, ...] = ()) -> tuple[list[A.Expr], dict[str, A.Expr]]:
    name = e.func.id
    if not n_min <= len(e.args) <= n_max:
        want = f"{n_min}" if n_min == n_max else f"{n_min} to {n_max}"
        b.fail(e.span, f"{name}() takes {want} positional argument{'s' if n_max != 1 else ''}, got {len(e.args)}")
    kwargs = {}
    for k in e.kwargs:
        if k.name not in kw:
            allowed = f"; it accepts {', '.join(kw)}" if kw else ""
            b.fail(k.span, f"{name}() has no argument '{k.name}'{allowed}")
        if k.name in kwargs:
            b.fail(k.span, f"argument '{k.name}' given twice")
        kwargs[k.name] = k.value
    return list(e.args), kwargs


_UNARY = {
    "exp": Op.EXP, "log": Op.LOG, "tanh": Op.TANH, "sigmoid": Op.SIGMOID, "sin": Op.SIN, "cos": Op.COS,
    "softplus": Op.SOFTPLUS, "silu": Op.SILU,
}
_NP_UNARY = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
             "sin": np.sin, "cos": np.cos, "softplus": lambda x: np.log1p(np.exp(x)), "silu": lambda x: x / (1 + np.exp(-x))}


def _unary_dimensionless(name: str):
    def fn(b: ExprBuilder, e: A.Call) -> Val:
        (arg,), _ = _args(b, e, 1, 1)
        x = b.expr(arg)
        b.require_numeric(x, e.span, f"apply {name} to")
        if not x.dim.dimensionless:
            b.fail(arg.span, f"{name}() needs a dimensionless argument, got {describe(x.dim)}",
                   "divide by a quantity of the same unit first, e.g. exp(-t / tau)")
        if x.is_static and not isinstance(x.static, list):
            value = _NP_UNARY[name](np.asarray(x.static, dtype=np.float64))
            return static(value.item() if value.ndim == 0 else value.astype(np.float32))
        x = b.as_float(x, e.span)
        return b.add(_UNARY[name], [x], x.dtype, x.shape, DIMENSIONLESS, e.span)
    return fn


for _n in _UNARY:
    builtin(_n)(_unary_dimensionless(_n))


@builtin("relu", "abs", "floor")
def _unit_preserving(b: ExprBuilder, e: A.Call) -> Val:
    name = e.func.id
    (arg,), _ = _args(b, e, 1, 1)
    x = b.expr(arg)
    b.require_numeric(x, e.span, f"apply {name} to")
    if x.is_static and not isinstance(x.static, list):
        value = {"relu": lambda v: np.maximum(v, 0), "abs": np.abs, "floor": np.floor}[name](np.asarray(x.static))
        return static(value.item() if value.ndim == 0 else value, x.dim)
    op = {"relu": Op.RELU, "abs": Op.ABS, "floor": Op.FLOOR}[name]
    return b.add(op, [x], x.dtype, x.shape, x.dim, e.span)


@builtin("sqrt")
def _sqrt(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = _args(b, e, 1, 1)
    x = b.expr(arg)
    b.require_numeric(x, e.span, "take the square root of")
    if x.is_static and not isinstance(x.static, list):
        value = np.sqrt(np.asarray(x.static, dtype=np.float64))
        return static(value.item() if value.ndim == 0 else value.astype(np.float32), x.dim ** 0.5)
    x = b.as_float(x, e.span)
    return b.add(Op.SQRT, [x], x.dtype, x.shape, x.dim ** 0.5, e.span)


@builtin("float", "int", "bool")
def _convert(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = _args(b, e, 1, 1)
    x = b.expr(arg)
    target = {"float": b.float_dtype, "int": DType.i64, "bool": DType.bool}[e.func.id]
    if x.is_static and not isinstance(x.static, list):
        if np.ndim(x.static) == 0:
            conv = {"float": float, "int": int, "bool": bool}[e.func.id]
            return replace(static(conv(x.static), x.dim), weak=False)
        return static(np.asarray(x.static).astype(target.numpy), x.dim)
    return b.cast(x, target, e.span)


@builtin("heaviside")
def _heaviside(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), _ = _args(b, e, 1, 1)
    x = b.as_float(b.expr(arg), e.span)
    return b.add(Op.SPIKE, [x], x.dtype, x.shape, DIMENSIONLESS, e.span,
                 (("surrogate", "straight_through"), ("surrogate_args", ())))


@builtin("where")
def _where(b: ExprBuilder, e: A.Call) -> Val:
    (c, x, y), _ = _args(b, e, 3, 3)
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
        return static(np.where(np.asarray(cv.static), np.asarray(xv.static), np.asarray(yv.static)), xv.dim)
    xv, yv = (b.cast(v, dtype, e.span) if not v.is_static else replace(v, dtype=dtype) for v in (xv, yv))
    return b.add(Op.WHERE, [cv, xv, yv], dtype, shape, xv.dim, e.span)


@builtin("maximum", "minimum")
def _maxmin(b: ExprBuilder, e: A.Call) -> Val:
    (x, y), _ = _args(b, e, 2, 2)
    xv, yv = b.expr(x), b.expr(y)
    b.same_dim(xv, yv, e.span, e.func.id)
    dtype = b.result_dtype(xv, yv, e.span, e.func.id)
    shape = b.broadcast(xv, yv, e.span, e.func.id)
    if xv.is_static and yv.is_static:
        value = (np.maximum if e.func.id == "maximum" else np.minimum)(np.asarray(xv.static), np.asarray(yv.static))
        return static(value.item() if np.ndim(value) == 0 else value, xv.dim)
    xv, yv = (b.cast(v, dtype, e.span) if not v.is_static else replace(v, dtype=dtype) for v in (xv, yv))
    return b.add(Op.MAXIMUM if e.func.id == "maximum" else Op.MINIMUM, [xv, yv], dtype, shape, xv.dim, e.span)


@builtin("clip")
def _clip(b: ExprBuilder, e: A.Call) -> Val:
    (x, lo, hi), _ = _args(b, e, 3, 3)
    xv, lov, hiv = b.expr(x), b.expr(lo), b.expr(hi)
    for v, part in ((lov, lo), (hiv, hi)):
        if v.dim != xv.dim:
            b.fail(part.span, f"unit mismatch in clip(): the value is {describe(xv.dim)}, the bound {describe(v.dim)}")
    low = b.binary_raw(Op.MAXIMUM, xv, lov, e.span)
    return b.binary_raw(Op.MINIMUM, low, hiv, e.span)


def _binary_raw(self: ExprBuilder, op: Op, a: Val, c: Val, span: Span) -> Val:
    dtype = self.result_dtype(a, c, span, op.value)
    shape = self.broadcast(a, c, span, op.value)
    a = self.cast(a, dtype, span) if not a.is_static else replace(a, dtype=dtype)
    c = self.cast(c, dtype, span) if not c.is_static else replace(c, dtype=dtype)
    return self.add(op, [a, c], dtype, shape, a.dim, span)


ExprBuilder.binary_raw = _binary_raw


def _axes(b: ExprBuilder, e: A.Expr | None, rank: int, default) -> tuple[int, ...]:
    if e is None:
        return default
    v = b.static_value(e, "an axis")
    vals = v.static if isinstance(v.static, list) else [v.static]
    out = []
    for a in vals:
        if not is_whole_number(a):
            b.fail(e.span, f"an axis must be an integer, got {a!r}")
        out.append(_norm_axis(b, int(a), rank, e.span))
    return tuple(sorted(set(out)))


@builtin("sum", "mean", "max", "min")
def _reduce(b: ExprBuilder, e: A.Call) -> Val:
    name = e.func.id
    if name in ("max", "min") and len(e.args) == 2:
        b.fail(e.span, f"{name}() reduces one tensor; for the elementwise {name}imum of two values use "
                       f"{name}imum(a, b)")
    (arg,), kw = _args(b, e, 1, 1, ("axis", "keepdims"))
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


@builtin("argmax")
def _argmax(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = _args(b, e, 1, 1, ("axis",))
    x = b.expr(arg)
    (axis,) = _axes(b, kw.get("axis"), len(x.shape), (len(x.shape) - 1,))
    shape = x.shape[:axis] + x.shape[axis + 1:]
    return b.add(Op.ARGMAX, [x], DType.i64, shape, DIMENSIONLESS, e.span, (("axis", axis),))


@builtin("softmax", "logsumexp")
def _softmax(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = _args(b, e, 1, 1, ("axis",))
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


@builtin("layernorm")
def _layernorm(b: ExprBuilder, e: A.Call) -> Val:
    args, kw = _args(b, e, 1, 3, ("eps",))
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


@builtin("glu")
def _glu(b: ExprBuilder, e: A.Call) -> Val:
    (arg,), kw = _args(b, e, 1, 1, ("axis",))
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


@builtin("linear")
def _linear(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = _args(b, e, 2, 3)
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


_EINSUM_RE = re.compile(r"^\s*([a-zA-Z]*(\s*,\s*[a-zA-Z]*)*)\s*->\s*([a-zA-Z]*)\s*$")


@builtin("einsum")
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


@builtin("outer")
def _outer(b: ExprBuilder, e: A.Call) -> Val:
    (x, y), _ = _args(b, e, 2, 2)
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


@builtin("reshape")
def _reshape(b: ExprBuilder, e: A.Call) -> Val:
    (x, s), _ = _args(b, e, 2, 2)
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


@builtin("transpose")
def _transpose(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = _args(b, e, 1, 2)
    xv = b.expr(args[0])
    perm = b.static_shape(args[1], "transpose()'s permutation") if len(args) == 2 else tuple(reversed(range(len(xv.shape))))
    if sorted(perm) != list(range(len(xv.shape))):
        b.fail(e.span, f"transpose(): {list(perm)} is not a permutation of the {len(xv.shape)} axes")
    return b.add(Op.TRANSPOSE, [xv], xv.dtype, tuple(xv.shape[p] for p in perm), xv.dim, e.span, (("perm", tuple(perm)),))


@builtin("broadcast")
def _broadcast(b: ExprBuilder, e: A.Call) -> Val:
    (x, s), _ = _args(b, e, 2, 2)
    xv = b.expr(x)
    shape = b.static_shape(s, "broadcast()'s shape")
    try:
        if tuple(np.broadcast_shapes(xv.shape, shape)) != shape:
            raise ValueError
    except ValueError:
        b.fail(e.span, f"cannot broadcast {fmt_shape(xv.shape)} to {fmt_shape(shape)}")
    return b.add(Op.BROADCAST, [xv], xv.dtype, shape, xv.dim, e.span)


@builtin("concat", "stack")
def _concat(b: ExprBuilder, e: A.Call) -> Val:
    (items,), kw = _args(b, e, 1, 1, ("axis",))
    if not isinstance(items, A.ListExpr) or not items.items:
        b.fail(items.span, f"{e.func.id}() takes a non-empty list: {e.func.id}([a, b], axis = 0)")
    vals = [b.expr(i) for i in items.items]
    axis = b.static_int(kw["axis"], "axis") if "axis" in kw else 0
    if e.func.id == "stack":
        return b.stack(vals, axis, e.span)
    rank = len(vals[0].shape)
    if rank == 0:
        b.fail(e.span, "concat() joins tensors; use stack() for scalars")
    axis = _norm_axis(b, axis, rank, e.span)
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


@builtin("gather")
def _gather(b: ExprBuilder, e: A.Call) -> Val:
    (x, idx), kw = _args(b, e, 2, 2, ("axis",))
    xv, iv = b.expr(x), b.expr(idx)
    if iv.dtype not in (DType.i64, DType.i32):
        b.fail(idx.span, f"gather() indices must be i64, got {fmt_type(iv)}")
    axis = _norm_axis(b, b.static_int(kw["axis"], "axis") if "axis" in kw else 0, len(xv.shape), e.span)
    shape = xv.shape[:axis] + iv.shape + xv.shape[axis + 1:]
    return b.add(Op.GATHER, [xv, iv], xv.dtype, shape, xv.dim, e.span, (("axis", axis),))


@builtin("scatter_add")
def _scatter_add(b: ExprBuilder, e: A.Call) -> Val:
    (base, idx, vals), kw = _args(b, e, 3, 3, ("axis",))
    bv, iv, vv = b.expr(base), b.expr(idx), b.expr(vals)
    if iv.dtype not in (DType.i64, DType.i32) or len(iv.shape) != 1:
        b.fail(idx.span, f"scatter_add() indices must be a 1-D i64 tensor, got {fmt_type(iv)}")
    axis = _norm_axis(b, b.static_int(kw["axis"], "axis") if "axis" in kw else 0, len(bv.shape), e.span)
    want = bv.shape[:axis] + iv.shape + bv.shape[axis + 1:]
    if vv.shape != want:
        b.fail(vals.span, f"scatter_add() values must have shape {fmt_shape(want)}, got {fmt_shape(vv.shape)}")
    if vv.dim != bv.dim:
        b.fail(vals.span, "scatter_add(): values and base have different units")
    vv = b.cast(vv, bv.dtype, e.span)
    return b.add(Op.SCATTER_ADD, [bv, iv, vv], bv.dtype, bv.shape, bv.dim, e.span, (("axis", axis),))


@builtin("segment_sum")
def _segment_sum(b: ExprBuilder, e: A.Call) -> Val:
    (x, n), _ = _args(b, e, 2, 2)
    xv = b.expr(x)
    k = b.static_int(n, "the number of segments")
    if not xv.shape or k <= 0 or xv.shape[-1] % k:
        b.fail(e.span, f"segment_sum(): the last axis ({xv.shape[-1] if xv.shape else 'scalar'}) must split into "
                       f"{k} equal segments")
    grouped = xv.shape[:-1] + (k, xv.shape[-1] // k)
    r = b.add(Op.RESHAPE, [xv], xv.dtype, grouped, xv.dim, e.span)
    return b.add(Op.SUM, [r], xv.dtype, grouped[:-1], xv.dim, e.span, (("axes", (len(grouped) - 1,)), ("keepdims", False)))


@builtin("one_hot")
def _one_hot(b: ExprBuilder, e: A.Call) -> Val:
    (i, n), _ = _args(b, e, 2, 2)
    iv = b.expr(i)
    k = b.static_int(n, "one_hot()'s size")
    if iv.dtype not in (DType.i64, DType.i32):
        b.fail(i.span, f"one_hot() needs i64 indices, got {fmt_type(iv)}")
    rng = static(np.arange(k, dtype=np.int64))
    if iv.is_static:
        iv2 = replace(iv, shape=iv.shape + (1,), static=np.asarray(iv.static)[..., None])
    else:
        iv2 = b.add(Op.RESHAPE, [iv], iv.dtype, iv.shape + (1,), DIMENSIONLESS, e.span)
    eq = b.add(Op.EQ, [iv2, rng], DType.bool, iv.shape + (k,), DIMENSIONLESS, e.span)
    return b.cast(eq, b.float_dtype, e.span)


@builtin("arange")
def _arange(b: ExprBuilder, e: A.Call) -> Val:
    (n,), _ = _args(b, e, 1, 1)
    k = b.static_int(n, "arange()'s size")
    return static(np.arange(k, dtype=np.int64))


@builtin("range")
def _range(b: ExprBuilder, e: A.Call) -> Val:
    """Python's range(stop) / range(start, stop[, step]): a compile-time list of ints (``for`` loops)."""
    args, _ = _args(b, e, 1, 3)
    bounds = [b.static_int(a, f"range()'s {what}") for a, what in
              zip(args, ("stop",) if len(args) == 1 else ("start", "stop", "step"))]
    if len(bounds) == 3 and bounds[2] == 0:
        b.fail(args[2].span, "range()'s step must not be 0")
    return static(np.arange(*bounds, dtype=np.int64))


@builtin("reversed")
def _reversed(b: ExprBuilder, e: A.Call) -> Val:
    """The items of a compile-time list, last first: ``for i in reversed(range(n))``."""
    (items,), _ = _args(b, e, 1, 1)
    v = b.expr(items)
    if not v.is_static or np.ndim(v.static) != 1:
        b.fail(items.span, "reversed() takes a list known at compile time, like range(n) or [1, 2, 3]")
    return replace(v, static=list(v.static)[::-1] if isinstance(v.static, list) else np.asarray(v.static)[::-1].copy())


@builtin("zeros", "ones")
def _zeros(b: ExprBuilder, e: A.Call) -> Val:
    args, _ = _args(b, e, 0, 1)
    shape = b.static_shape(args[0], f"{e.func.id}()'s shape") if args else b.target_shape
    fill = 0.0 if e.func.id == "zeros" else 1.0
    return static(np.full(shape, fill, dtype=np.float32))


@builtin("rope")
def _rope(b: ExprBuilder, e: A.Call) -> Val:
    """BDH's rotary phase: v*cos(phi) + rot(v)*sin(phi), phi = 2*pi*((pos*freqs) mod 1)."""
    args, kw = _args(b, e, 2, 3, ("theta",))
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


@builtin("topk_mask")
def _topk_mask(b: ExprBuilder, e: A.Call) -> Val:
    """1 where x is among the k largest along the last axis (ties resolved by rank counting)."""
    (x, k), _ = _args(b, e, 2, 2)
    xv = b.as_float(b.expr(x), e.span)
    kk = b.static_int(k, "topk_mask()'s k")
    n = xv.shape[-1] if xv.shape else 0
    if not 0 < kk <= n:
        b.fail(k.span, f"topk_mask(): k = {kk} must be in 1..{n}")
    a = b.add(Op.RESHAPE, [xv], xv.dtype, xv.shape + (1,), xv.dim, e.span)
    c = b.add(Op.RESHAPE, [xv], xv.dtype, xv.shape[:-1] + (1, n), xv.dim, e.span)
    greater = b.add(Op.GT, [c, a], DType.bool, xv.shape + (n,), DIMENSIONLESS, e.span)
    rank = b.add(Op.SUM, [b.cast(greater, xv.dtype, e.span)], xv.dtype, xv.shape, DIMENSIONLESS, e.span,
                 (("axes", (len(xv.shape),)), ("keepdims", False)))
    return b.cast(b.binary("<", rank, static(float(kk)), e.span), xv.dtype, e.span)


@builtin("entropy")
def _entropy(b: ExprBuilder, e: A.Call) -> Val:
    (p,), kw = _args(b, e, 1, 1, ("axis",))
    pv = b.as_float(b.expr(p), e.span)
    (axis,) = _axes(b, kw.get("axis"), len(pv.shape), (len(pv.shape) - 1,))
    logp = b.add(Op.LOG, [b.binary_raw(Op.MAXIMUM, pv, static(1e-30), e.span)], pv.dtype, pv.shape, DIMENSIONLESS, e.span)
    prod = b.binary("*", pv, logp, e.span)
    s = b.add(Op.SUM, [prod], pv.dtype, pv.shape[:axis] + pv.shape[axis + 1:], DIMENSIONLESS, e.span,
              (("axes", (axis,)), ("keepdims", False)))
    return b.add(Op.NEG, [s], pv.dtype, s.shape, DIMENSIONLESS, e.span)


# ---------------------------------------------------------------- initialisers (init graphs only)
def _random(b: ExprBuilder, e: A.Call, dist: str, defaults: tuple[float, float]) -> Val:
    if not b.allow_random:
        b.fail(e.span, f"{e.func.id}() draws random numbers, which is allowed only in initial values "
                       "(param and state declarations)")
    args, _ = _args(b, e, 0, 2)
    vals = [b.expr(a) for a in args] + [static(d) for d in defaults[len(args):]]
    if dist == "uniform" and vals[0].dim != vals[1].dim:
        b.fail(e.span, f"uniform(lo, hi): the bounds have different units ({describe(vals[0].dim)}, "
                       f"{describe(vals[1].dim)})")
    if dist == "normal" and vals[1].dim != vals[0].dim and args:
        b.fail(e.span, "normal(mean, std): mean and std must have the same unit")
    dim = vals[0].dim if args else DIMENSIONLESS
    for v, a in zip(vals, list(args) + [None, None]):
        if v.shape != ():
            b.fail(a.span if a is not None else e.span, f"{e.func.id}() takes scalar arguments")
    ins = [b.cast(v, b.float_dtype, e.span) if not v.is_static else replace(v, dtype=b.float_dtype) for v in vals]
    return b.add(Op.RANDOM, ins, b.float_dtype, b.target_shape, dim, e.span, (("dist", dist),))


@builtin("uniform")
def _uniform(b: ExprBuilder, e: A.Call) -> Val:
    return _random(b, e, "uniform", (0.0, 1.0))


@builtin("normal")
def _normal(b: ExprBuilder, e: A.Call) -> Val:
    return _random(b, e, "normal", (0.0, 1.0))


@builtin("orthogonal")
def _orthogonal(b: ExprBuilder, e: A.Call) -> Val:
    if len(b.target_shape) != 2:
        b.fail(e.span, "orthogonal() initialises a matrix; the declared type must be 2-D")
    return _random(b, e, "orthogonal", (1.0, 0.0))


@builtin("linspace", "logspace")
def _linspace(b: ExprBuilder, e: A.Call) -> Val:
    """``linspace(a, b)`` fills the declared type; ``linspace(a, b, n)`` is a list of n values (float64,
    like numpy's: ``int(linspace(256, 16, 5))`` are the CTM U-Net's widths)."""
    args, _ = _args(b, e, 2, 3)
    lo, hi = args[:2]
    lv, hv = b.static_value(lo, "linspace()'s start"), b.static_value(hi, "linspace()'s stop")
    if lv.dim != hv.dim:
        b.fail(e.span, f"{e.func.id}(): the bounds have different units")
    if len(args) == 3:
        n = b.static_int(args[2], f"{e.func.id}()'s number of values")
        if n < 0:
            b.fail(args[2].span, f"{e.func.id}() needs a number of values >= 0, got {n}")
        if e.func.id == "logspace" and (float(lv.static) <= 0 or float(hv.static) <= 0):
            b.fail(e.span, "logspace(a, b) needs positive bounds")
        values = (np.linspace(float(lv.static), float(hv.static), n) if e.func.id == "linspace" else
                  np.logspace(math.log10(float(lv.static)), math.log10(float(hv.static)), n))
        return static(values, lv.dim)
    n = int(np.prod(b.target_shape)) if b.target_shape else 1
    if e.func.id == "linspace":
        values = np.linspace(float(lv.static), float(hv.static), n)
    else:
        if float(lv.static) <= 0 or float(hv.static) <= 0:
            b.fail(e.span, "logspace(a, b) needs positive bounds")
        values = np.logspace(math.log10(float(lv.static)), math.log10(float(hv.static)), n)
    return static(values.reshape(b.target_shape).astype(np.float32), lv.dim)
