"""Expressions -> typed IR values, checking dtypes, shapes and units on the way.

Every AST expression elaborates to a ``Val`` (``values.py``): either a compile-time value
(``static``: a number, string, list or array bound from hyperparameters, template parameters and
literals) or a node of the graph being built, always with a dtype, a per-sample shape and a
physical dimension.  Static values fold eagerly, by the oracle's rules (``values.fold``), and
become ``CONST`` nodes only when they meet a graph value.  Calls dispatch through the table of
built-in functions in ``builtins.py``.  A mistake is reported as a located diagnostic and raises
``Abort`` so the caller can skip that statement and keep checking the rest of the spec.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import replace
from typing import Callable

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Collector, Span

from .builtins import BUILTINS
from .ir import DType, GraphBuilder, Op
from .limits import check_tensor
from .units import DIMENSIONLESS, Dim, describe, is_unit, unit
from .values import (Abort, Val, float_overflow, fmt_int, fmt_shape, fmt_type, fold, int_fits, int_overflow,
                     int_range, is_whole_number, norm_axis, outside_int, static)

# Abort, Val, fmt_shape, fmt_type and static are used by every elaborator through this module.
MAX_STEPS = 2**53  # step counts beyond this are not exact in float64 (and no run is that long)
MAX_SIZE = 2**31 - 1  # the largest population or axis: indices are 32-bit in every backend's kernels
NOISE_NAME = re.compile(r"xi(_\w+)?")  # Brian2's white noise symbols: xi, xi_1, xi_input, ...
_TOO_LARGE = f"this number is too large for a float: it would be inf (the largest is about {np.finfo(np.float64).max:.4g})"

__all__ = ["Abort", "ExprBuilder", "MAX_SIZE", "MAX_STEPS", "NOISE_NAME", "Val", "fmt_shape", "fmt_type", "static"]


# ---------------------------------------------------------------- the elaborator
class ExprBuilder:
    """Elaborates expressions into ``graph`` (a GraphBuilder) under a name ``lookup``."""

    def __init__(self, graph: GraphBuilder, diags: Collector, lookup: Callable[[str, Span], Val | None],
                 float_dtype: DType = DType.f32, allow_random: bool = False, target_shape: tuple[int, ...] = (),
                 draw: Callable[..., Val] | None = None):
        self.g = graph
        self.diags = diags
        self.lookup = lookup
        self.float_dtype = float_dtype
        self.allow_random = allow_random
        self.target_shape = target_shape  # the shape random draws take (the declared variable's)
        self.draw = draw  # in step equations: f32 draws of a shape (a UNIFORM node, or NORMAL), else None

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
            with np.errstate(all="ignore"):  # a value past the dtype is reported below
                arr = np.asarray(value, dtype=v.dtype.numpy)
            if arr.shape != tuple(v.shape) and arr.size == int(np.prod(v.shape)):
                arr = arr.reshape(v.shape)
        except (TypeError, ValueError):
            self.fail(span, "this value cannot be used as a tensor")
        except OverflowError:
            if v.dtype in (DType.i32, DType.i64):
                self.fail(span, f"{outside_int(value, v.dtype)} does not fit in {v.dtype.value}: it is outside "
                                f"{int_range(v.dtype)}")
            self.fail(span, f"{value!r} does not fit in {v.dtype.value}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            with np.errstate(all="ignore"):
                wide = np.asarray(value, dtype=np.float64)
            narrowed = np.isfinite(wide) & ~np.isfinite(arr)  # finite values past the dtype's largest
            if narrowed.any():
                self.fail(span, f"{wide[narrowed].flat[0]:g} does not fit in {v.dtype.value} (its largest value is "
                                f"about {np.finfo(arr.dtype).max:.4g}); it would be inf")
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
        if e.is_int and (isinstance(e.value, float) or not int_fits(e.value)):
            as_float = ""
            if isinstance(e.value, int) and e.value.bit_length() < 1024:  # float() of a bigger int raises
                as_float = f"; a float is written with a point or an exponent, like {float(e.value):.6g}".replace("e+", "e")
            self.fail(e.span, f"{fmt_int(e.value)} is outside {int_range()}{as_float}")
        if not math.isfinite(e.value):
            self.fail(e.span, _TOO_LARGE)
        return static(e.value)

    def e_Quantity(self, e: A.Quantity) -> Val:
        if not is_unit(e.unit):
            self.fail(e.span, f"unknown unit {e.unit!r} after the number {e.value:g}",
                      "write the unit (e.g. '20 ms', '-65 mV') or put '*' between a number and a name")
        scale, dim = unit(e.unit)
        if not math.isfinite(e.value):
            self.fail(e.span, _TOO_LARGE)
        if not math.isfinite(e.value * scale):
            self.fail(e.span, f"{e.value:g} {e.unit} is {e.value * scale:g} in SI units ({describe(dim)}): too large "
                              f"for a float (the largest is about {np.finfo(np.float64).max:.4g})")
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
            return BUILTINS[e.id](self, A.Call(e.span, e, (), ()))
        if e.id in BUILTINS:
            self.fail(e.span, f"'{e.id}' is a function; call it: {e.id}(...)")
        if NOISE_NAME.fullmatch(e.id):  # body_odes.py resolves it inside continuous equations
            self.fail(e.span, f"'{e.id}' is white noise, usable only directly in the right-hand side of a continuous "
                              f"equation, as a term of dx/dt = f + g * {e.id} (not in a let, a next or an output)")
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
                if outside := outside_int(_map_static(lambda a: -a, x.static)):  # -(-2^63)
                    self.fail(e.span, f"{outside} is outside {int_range()}")
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
        if v.is_static and _has_string(v.static):
            self.fail(span, f"cannot {what} a {'string' if isinstance(v.static, str) else 'list of strings'}")

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
        if op in ("/", "%") and _integers(a, b) and b.is_static and np.any(np.asarray(b.static) == 0):
            kind = "division" if op == "/" else "remainder"  # (a float divisor of 0 gives inf or nan, as IEEE says)
            self.fail(span, f"integer {kind} by zero: the divisor {_text(e.right) if isinstance(e, A.Binary) else 'here'} is 0")
        is_cmp = op in ("<", "<=", ">", ">=", "==", "!=")
        dtype = DType.bool if is_cmp else self.result_dtype(a, b, span, op)
        if op == "/" and not dtype.is_float:
            dtype = self.float_dtype
        if (op == "^" and b.is_static and not (dtype.is_float or a.is_static) and not isinstance(b.static, str)
                and np.any(np.asarray(b.static) < 0)):
            self.fail(span, f"an integer to a negative power ({_text(e) if isinstance(e, A.Binary) else op}): the "
                            f"result is {dtype.value}, which has no fractions; raise a float, like float(x) ^ -1")
        if a.is_static and b.is_static and not isinstance(a.static, str) and not isinstance(b.static, str):
            value = self.fold_binary(op, a, b, dtype, span, e)
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
        if op == "^" and not dtype.is_float and not b.is_static:
            return self._int_power(a, b, dtype, shape, span)
        return self.add(ir_op, [a, b], dtype, shape, dim, span)

    def _int_power(self, a: Val, b: Val, dtype: DType, shape: tuple[int, ...], span: Span) -> Val:
        """An integer to a run-time integer power, defined on every backend for a negative exponent
        too: 1 / a^|b| rounded toward zero, so 1 for a = 1, +-1 for a = -1 (by the parity of b), else
        0 (0 for a = 0 as well).  Backends raise or differ on a negative integer exponent, so POW only
        sees max(b, 0)."""
        zero, one = replace(static(0), dtype=dtype), replace(static(1), dtype=dtype)
        power = self.add(Op.POW, [a, self.binary_raw(Op.MAXIMUM, b, zero, span)], dtype, shape, DIMENSIONLESS, span)
        odd = self.binary("!=", self.binary("%", b, replace(static(2), dtype=dtype), span), zero, span)
        minus_one = self.select(odd, replace(static(-1), dtype=dtype), one, span)
        reciprocal = self.select(self.binary("==", a, one, span), one,
                                 self.select(self.binary("==", a, replace(static(-1), dtype=dtype), span), minus_one,
                                             zero, span), span)
        return self.select(self.binary("<", b, zero, span), reciprocal, power, span)

    def fold_binary(self, op: str, a: Val, b: Val, dtype: DType, span: Span, e: A.Node | None) -> np.ndarray:
        """``a op b`` of compile-time operands by the oracle's rule, refusing what a run would get wrong
        silently: an integer outside i64, an integer result that wraps around, a float overflowing to inf."""
        for v in (a, b):
            if outside := outside_int(v.static):
                self.fail(span, f"{outside} is outside {int_range()}")
        x, y = np.asarray(a.static), np.asarray(b.static)
        ints = x.dtype.kind in "iu" and y.dtype.kind in "iu"  # folded in int64, whatever the dtype says
        written = _text(e) if isinstance(e, A.Binary) else op
        if op == "^" and ints and np.any(y < 0):
            self.fail(span, f"an integer to a negative power ({written}): integers have no fractions; raise a "
                            "float, like 2.0 ^ -1")
        with np.errstate(all="ignore"):
            value = fold(_IR_BINARY[op], a.static, b.static, dtype=DType.f64 if op == "/" else None)
        in_range = dtype if dtype in (DType.i32, DType.i64) else DType.i64
        if ints and (overflow := int_overflow(op, x, y, in_range)):
            self.fail(span, f"integer overflow: {overflow} is outside {int_range(in_range)}",
                      "a run's integer arithmetic would wrap around silently; for a float, write a number with a "
                      "point, like 2.0")
        if overflow := float_overflow(op, x, y, value):
            self.fail(span, f"float overflow: {overflow} is inf, past the largest "
                            f"{np.asarray(value).dtype} (about {np.finfo(np.asarray(value).dtype).max:.4g})")
        return value

    def binary_raw(self, op: Op, a: Val, c: Val, span: Span) -> Val:
        """A binary IR ``op`` in the operands' common dtype, with ``a``'s unit; the caller has checked
        the units (``maximum``, ``minimum`` of a clip)."""
        dtype = self.result_dtype(a, c, span, op.value)
        shape = self.broadcast(a, c, span, op.value)
        a = self.cast(a, dtype, span) if not a.is_static else replace(a, dtype=dtype)
        c = self.cast(c, dtype, span) if not c.is_static else replace(c, dtype=dtype)
        return self.add(op, [a, c], dtype, shape, a.dim, span)

    def select(self, cond: Val, x: Val, y: Val, span: Span) -> Val:
        """``where(cond, x, y)`` as a WHERE node in the common dtype of ``x`` and ``y``, with ``y``'s
        unit; the caller has checked that ``cond`` is bool and that the units agree."""
        dtype = self.result_dtype(x, y, span, "where")
        x = self.cast(x, dtype, span) if not x.is_static else replace(x, dtype=dtype)
        y = self.cast(y, dtype, span) if not y.is_static else replace(y, dtype=dtype)
        try:
            shape = tuple(np.broadcast_shapes(cond.shape, x.shape, y.shape))
        except ValueError:
            self.fail(span, f"where(): shapes {fmt_shape(cond.shape)}, {fmt_shape(x.shape)}, {fmt_shape(y.shape)} "
                            "do not broadcast")
        return self.add(Op.WHERE, [cond, x, y], dtype, shape, y.dim, span)

    def cast(self, v: Val, dtype: DType, span: Span) -> Val:
        if v.dtype == dtype:
            return v
        if v.is_static:
            if dtype in (DType.i32, DType.i64) and (outside := outside_int(v.static, dtype, floats=True)):
                self.fail(span, f"{outside} does not fit in {dtype.value}: it is outside {int_range(dtype)}")
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
        axis = norm_axis(self, axis, len(shape) + 1, span)
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
        fn = BUILTINS.get(name)
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

    def static_steps(self, value: Val, dt: float, span: Span, what: str) -> int:
        """A compile-time duration as a whole number of steps of ``dt`` (rounded), refused when it
        is not finite, negative or more steps than a run can count exactly (``MAX_STEPS``)."""
        seconds = float(value.static)
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(span, f"{what} must be a finite, non-negative duration, got {seconds:g} s")
        steps = seconds / dt
        if steps > MAX_STEPS:
            count = f"{steps:.3g}" if math.isfinite(steps) else "more than 1e308"
            self.fail(span, f"{what} is {seconds:g} s, {count} steps of dt = {dt:g} s; at most 2**53 steps can be "
                            "counted")
        return int(round(steps))

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
            if int(s) < 0:
                self.fail(e.span, f"{what}: size {int(s)} is negative")
            out.append(int(s))
        if too_big := check_tensor(tuple(out)):  # before anything of this shape is built
            self.fail(e.span, too_big)
        return tuple(out)


def _has_string(value) -> bool:
    """A compile-time value is or holds a string (a hyperparameter's, or a list's item)."""
    if isinstance(value, (list, tuple)):
        return any(map(_has_string, value))
    return isinstance(value, str) or isinstance(value, np.ndarray) and value.dtype.kind in "US"


def _map_static(fn, value):
    if isinstance(value, list):
        return [_map_static(fn, v) for v in value]
    if isinstance(value, np.ndarray):
        return fn(value)
    return fn(value)


def _text(e) -> str:
    """A short source-like rendering of an expression, for messages."""
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Number):
        return str(e.value) if isinstance(e.value, int) else f"{e.value:g}"
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
    if isinstance(e, A.ListExpr):
        return "[...]"
    return "expression"


def _integers(a: Val, b: Val) -> bool:
    """Both operands are integers (a division of them is checked for a zero divisor)."""
    return all(v.dtype in (DType.i64, DType.i32) and not isinstance(v.static, str) for v in (a, b))


_IR_BINARY = {
    "+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "%": Op.MOD, "^": Op.POW,
    "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE, "==": Op.EQ, "!=": Op.NE,
}


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(BUILTINS), n=3)
    return f"did you mean {', '.join(close)}?" if close else "see docs/language.md for the built-in functions"
