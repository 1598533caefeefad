"""The values and expressions of spec tests: quantities with units, a run's recorded data, and
the interpreter that evaluates ``let``, ``set``, ``input`` and ``expect`` expressions.

Expressions are evaluated over the AST with physical units (``Q``: an SI magnitude and a
``Dim``) and a table of functions; nothing from the spec is executed as Python.  A value that
cannot be computed raises ``SpecFailure`` at its span; ``explain`` says why a condition is
false.  ``spectest.py`` runs the test blocks with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from nspec.compiler import units as U
from nspec.dsl import ast as A
from nspec.dsl.diagnostics import SourceMap, Span
from nspec.runtime import spike_statistics as S

DIMLESS = U.DIMENSIONLESS
TIME = U.unit("s")[1]
FREQUENCY = U.unit("Hz")[1]


class SpecFailure(Exception):
    """A test failed at ``span``; raised inside the runner, turned into a ``TestOutcome``."""

    def __init__(self, span: Span, message: str):
        super().__init__(message)
        self.span = span
        self.message = message


# ---------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class Q:
    """A quantity: an SI magnitude (scalar or array) and its dimension; ``dim=None`` when the
    run does not say which unit an array is in (then units are not checked)."""

    mag: Any
    dim: U.Dim | None = DIMLESS

    @property
    def is_bool(self) -> bool:
        return np.asarray(self.mag).dtype == np.bool_


Value = Any  # Q | str | tuple[Value, ...]


def dim_of_text(text: str) -> U.Dim | None:
    """The dimension of a program variable's unit text (``"V"``, ``"V/s"``, ``""``); None if unreadable."""
    if not text:
        return DIMLESS
    m = re.fullmatch(r"(\w+)(?:([*/])(\w+))?", text)
    if m is None or not U.is_unit(m[1]) or (m[3] and not U.is_unit(m[3])):
        return None
    dim = U.unit(m[1])[1]
    if m[3]:
        dim = dim * U.unit(m[3])[1] if m[2] == "*" else dim / U.unit(m[3])[1]
    return dim


def spike_key(population: str) -> str:
    """The recorded name of a population's spikes (``P/spike``; ``spike`` for a top-level neuron)."""
    return f"{population}/spike" if population else "spike"


@dataclass
class RunData:
    """What one ``run`` produced, with what the evaluator needs to read it."""

    results: dict[str, np.ndarray]
    units: dict[str, U.Dim | None]       # result key -> dimension
    populations: dict[str, int]          # population -> size
    monitors: dict[str, tuple[str, ...]]  # monitor -> its fields ("i", "t" or variables and "t")
    dt: float

    @staticmethod
    def from_model(model, results: dict[str, np.ndarray]) -> "RunData":
        program = model.program
        dims: dict[str, U.Dim | None] = {v.name: dim_of_text(v.unit) for v in program.outputs}
        monitors: dict[str, tuple[str, ...]] = {}
        for m in model.monitors:
            if m.kind == "spikes":
                dims.update({f"{m.name}.i": DIMLESS, f"{m.name}.t": TIME})
                monitors[m.name] = ("i", "t")
                continue
            names = []
            for path in m.variables:
                var = program.var(path)
                name = path.rsplit("/", 1)[-1]
                dims[f"{m.name}.{name}"] = dim_of_text(var.unit) if var is not None else None
                names.append(name)
            dims[f"{m.name}.t"] = TIME
            monitors[m.name] = (*names, "t")
        for pop in model.populations:
            dims[spike_key(pop)] = DIMLESS
        return RunData(results, {k: dims.get(k) for k in results}, dict(model.populations), monitors, model.dt)


# ---------------------------------------------------------------- formatting
def _unit_for(dim: U.Dim, magnitude: float) -> tuple[float, str]:
    """The unit to print a value in: the largest named unit of that dimension not above it."""
    if dim.dimensionless:
        return 1.0, ""
    named = sorted((U.unit(n)[0], n) for n in U.UNIT_NAMES if n != "minute" and U.unit(n)[1] == dim)
    if not named:
        return 1.0, U.describe(dim)
    fitting = [(s, n) for s, n in named if s <= magnitude * (1 + 1e-12)]
    if magnitude == 0 or not fitting:
        return next(((s, n) for s, n in named if s == 1.0), named[0])
    return fitting[-1]


def fmt(value: Value) -> str:
    """A value as a test failure shows it: ``-60 mV``, ``[10, 4]``, ``true``."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    mag = np.asarray(value.mag)
    if mag.dtype == np.bool_:
        if mag.ndim == 0:
            return "true" if mag else "false"
        return f"{int(np.count_nonzero(~mag))} of {mag.size} elements false"
    if mag.size == 0:
        return f"an empty array of shape {list(mag.shape)}"
    finite = mag[np.isfinite(mag)] if mag.dtype.kind == "f" else mag
    biggest = float(np.max(np.abs(finite))) if finite.size else 0.0
    scale, name = _unit_for(value.dim, biggest) if value.dim is not None else (1.0, "")
    suffix = f" {name}" if name else ""
    shown = mag / scale if scale != 1.0 else mag
    if mag.ndim == 0:
        return f"{float(shown):.6g}{suffix}" if mag.dtype.kind == "f" else f"{shown}{suffix}"
    if mag.size <= 8:
        return "[" + ", ".join(f"{float(x):.6g}" for x in shown.ravel()) + "]" + suffix
    lo, hi = float(np.min(shown)), float(np.max(shown))
    return f"an array of shape {list(mag.shape)} in [{lo:.6g}, {hi:.6g}]{suffix}"


# ---------------------------------------------------------------- the expression interpreter
def _same_dim(a: Q, b: Q, span: Span, what: str) -> U.Dim | None:
    """The common dimension of two operands; an exact dimensionless zero takes the other's unit."""
    if a.dim is None or b.dim is None:
        return a.dim if b.dim is None else b.dim
    if a.dim == b.dim:
        return a.dim
    if a.dim.dimensionless and not np.any(a.mag):
        return b.dim
    if b.dim.dimensionless and not np.any(b.mag):
        return a.dim
    raise SpecFailure(span, f"units do not match: cannot {what} {U.describe(a.dim)} and {U.describe(b.dim)}")


def _arith(op: str, a: Q, b: Q, span: Span) -> Q:
    try:
        return _arith_unchecked(op, a, b, span)
    except ValueError as exc:  # numpy: shapes that do not broadcast (or matmul dimensions)
        raise SpecFailure(span, f"cannot combine values of shapes {list(np.shape(a.mag))} and "
                                f"{list(np.shape(b.mag))} with {op!r}") from exc


def _arith_unchecked(op: str, a: Q, b: Q, span: Span) -> Q:
    with np.errstate(all="ignore"):
        if op in ("+", "-", "%"):
            dim = _same_dim(a, b, span, {"+": "add", "-": "subtract", "%": "take the remainder of"}[op])
            mag = {"+": np.add, "-": np.subtract, "%": np.mod}[op](a.mag, b.mag)
            return Q(mag, dim)
        if op in ("*", "@"):
            dim = None if a.dim is None or b.dim is None else a.dim * b.dim
            return Q(np.multiply(a.mag, b.mag) if op == "*" else np.matmul(a.mag, b.mag), dim)
        if op == "/":
            dim = None if a.dim is None or b.dim is None else a.dim / b.dim
            return Q(np.true_divide(a.mag, b.mag), dim)
        if op == "^":
            if (b.dim is not None and not b.dim.dimensionless) or np.ndim(b.mag) != 0:
                raise SpecFailure(span, "an exponent must be a dimensionless number")
            dim = None if a.dim is None else a.dim ** float(b.mag)
            return Q(np.power(np.asarray(a.mag, dtype=float), b.mag), dim)
    raise SpecFailure(span, f"operator {op!r} is not supported in tests")


_COMPARE: dict[str, Callable] = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                                  "==": np.equal, "!=": np.not_equal}


def compare(op: str, a: Value, b: Value, span: Span) -> Q:
    if op == "in":
        if not (isinstance(b, tuple) and len(b) == 2):
            raise SpecFailure(span, "'in' needs a range of two values: x in [lo, hi]")
        lo, hi = (as_q(v, span) for v in b)
        x = as_q(a, span)
        _same_dim(x, lo, span, "compare")
        _same_dim(x, hi, span, "compare")
        return Q(np.logical_and(np.greater_equal(x.mag, lo.mag), np.less_equal(x.mag, hi.mag)))
    if isinstance(a, str) or isinstance(b, str):
        if op not in ("==", "!="):
            raise SpecFailure(span, f"cannot compare strings with {op!r}")
        return Q((a == b) == (op == "=="))
    if op in ("==", "!=") and (isinstance(a, tuple) or isinstance(b, tuple)):
        # a list compares as a whole (shape(y) == [10, 4]), never by broadcasting
        x, y = as_q(a, span), as_q(b, span)
        _same_dim(x, y, span, "compare")
        equal = np.shape(x.mag) == np.shape(y.mag) and bool(np.all(np.equal(x.mag, y.mag)))
        return Q(equal == (op == "=="))
    x, y = as_q(a, span), as_q(b, span)
    _same_dim(x, y, span, "compare")
    try:
        return Q(_COMPARE[op](x.mag, y.mag))
    except ValueError as exc:
        raise SpecFailure(span, f"cannot compare values of shapes {list(np.shape(x.mag))} and "
                                f"{list(np.shape(y.mag))}") from exc


def as_q(value: Value, span: Span) -> Q:
    """A value as one quantity; a list becomes an array (its items must share a unit)."""
    if isinstance(value, Q):
        return value
    if isinstance(value, tuple):
        items = [as_q(v, span) for v in value]
        dim, all_zero = DIMLESS, True
        for q in items:
            dim = _same_dim(Q(0 if all_zero else 1, dim), q, span, "combine in one list")
            all_zero = all_zero and not np.any(q.mag)
        try:
            return Q(np.array([q.mag for q in items]), dim)
        except ValueError as exc:
            raise SpecFailure(span, "the items of a list must have the same shape") from exc
    raise SpecFailure(span, f"expected a number or an array, got the string {fmt(value)}")


def as_bool(value: Value, span: Span, what: str) -> Q:
    if isinstance(value, Q) and value.is_bool:
        return value
    raise SpecFailure(span, f"{what} needs a condition (true or false), got {fmt(value)}")


def _reduce(fn: Callable) -> Callable:
    def reduction(args, kwargs, span):
        _arity(args, 1, span, fn.__name__)
        x = as_q(args[0], span)
        axis = kwargs.pop("axis", None)
        _no_kwargs(kwargs, span)
        if np.size(x.mag) == 0:
            raise SpecFailure(span, f"{fn.__name__} of an empty array")
        axis_value = None if axis is None else int(as_q(axis, span).mag)
        return Q(fn(np.asarray(x.mag), axis=axis_value), x.dim)
    return reduction


def _arity(args, n: int, span: Span, name: str) -> None:
    if len(args) != n:
        raise SpecFailure(span, f"{name}() takes {n} argument{'s' if n != 1 else ''}, got {len(args)}")


def _no_kwargs(kwargs: dict, span: Span) -> None:
    if kwargs:
        raise SpecFailure(span, f"unexpected keyword argument {next(iter(kwargs))!r}")


def _abs(args, kwargs, span):
    _arity(args, 1, span, "abs")
    _no_kwargs(kwargs, span)
    x = as_q(args[0], span)
    return Q(np.abs(x.mag), x.dim)


def _shape(args, kwargs, span):
    _arity(args, 1, span, "shape")
    _no_kwargs(kwargs, span)
    if isinstance(args[0], tuple):
        return (Q(len(args[0])),)
    return tuple(Q(int(s)) for s in np.shape(as_q(args[0], span).mag))


def _len(args, kwargs, span):
    _arity(args, 1, span, "len")
    _no_kwargs(kwargs, span)
    if isinstance(args[0], tuple):
        return Q(len(args[0]))
    shape = np.shape(as_q(args[0], span).mag)
    if not shape:
        raise SpecFailure(span, "len() of a scalar")
    return Q(shape[0])


def _allclose(args, kwargs, span):
    if "tol" in kwargs:
        args = [*args, kwargs.pop("tol")]
    _arity(args, 3, span, "allclose")
    _no_kwargs(kwargs, span)
    a, b, tol = (as_q(v, span) for v in args)
    _same_dim(a, b, span, "compare")
    _same_dim(a, tol, span, "compare")
    try:
        diff = np.abs(np.subtract(a.mag, b.mag, dtype=float))
    except ValueError as exc:
        raise SpecFailure(span, f"allclose() of shapes {list(np.shape(a.mag))} and {list(np.shape(b.mag))}") from exc
    return Q(bool(np.all(diff <= tol.mag)))


def _bimodality(args, kwargs, span):
    if "wmax" in kwargs:
        args = [*args, kwargs.pop("wmax")]
    _arity(args, 2, span, "bimodality")
    _no_kwargs(kwargs, span)
    w, wmax = (as_q(v, span) for v in args)
    _same_dim(w, wmax, span, "compare")
    if np.ndim(wmax.mag) != 0:
        raise SpecFailure(span, f"bimodality(w, wmax): wmax must be one value, got {fmt(wmax)}")
    try:
        return Q(S.bimodality(w.mag, float(wmax.mag)))
    except S.StatisticError as exc:
        raise SpecFailure(span, f"bimodality(): {exc}") from exc


def _filled(value: float) -> Callable:
    def fill(args, kwargs, span):
        _arity(args, 1, span, "ones" if value else "zeros")
        _no_kwargs(kwargs, span)
        shape = as_q(args[0], span)
        if shape.dim != DIMLESS or np.asarray(shape.mag).dtype.kind not in "iu":
            raise SpecFailure(span, f"expected a shape such as [6, 7], got {fmt(args[0])}")
        return Q(np.full(np.atleast_1d(shape.mag), value, dtype=float))
    return fill


# value functions: evaluated arguments -> value
FUNCTIONS: dict[str, Callable] = {
    "mean": _reduce(np.mean), "max": _reduce(np.max), "min": _reduce(np.min), "sum": _reduce(np.sum),
    "std": _reduce(np.std), "abs": _abs, "shape": _shape, "len": _len, "allclose": _allclose,
    "zeros": _filled(0.0), "ones": _filled(1.0), "bimodality": _bimodality,
}


def _population_count(spikes: np.ndarray) -> np.ndarray:
    """Spikes per neuron over the run: ``spikes`` is ``[T, n]`` (bool or 0/1 floats)."""
    return np.count_nonzero(spikes, axis=0)


# population functions: (spikes [T, n], seconds recorded) -> value; the argument names a population
POPULATION_FUNCTIONS: dict[str, Callable[[np.ndarray, float], Value]] = {
    "count": lambda spikes, seconds: Q(int(_population_count(spikes).sum())),
    "rate": lambda spikes, seconds: Q(_population_count(spikes) / seconds, FREQUENCY),
    "mean_rate": lambda spikes, seconds: Q(float(_population_count(spikes).sum()) / (spikes.shape[-1] * seconds),
                                           FREQUENCY),
    # spike_statistics.py defines these once for spec tests and the Brian2 comparison
    "cv": lambda spikes, seconds: Q(S.cv_isi(_trains(spikes, seconds))),
    "peak_frequency": lambda spikes, seconds: Q(S.peak_frequency(_trains(spikes, seconds)), FREQUENCY),
    "synchrony": lambda spikes, seconds: Q(S.synchrony(_trains(spikes, seconds))),
}


def _trains(spikes: np.ndarray, seconds: float) -> S.Spikes:
    return S.Spikes.from_raster(spikes, seconds / spikes.shape[0])


class Evaluator:
    """Evaluates test expressions over a run's results; names: test lets > results > dt > units."""

    def __init__(self, sources: SourceMap, run: RunData | None = None, scope: dict[str, Value] | None = None):
        self.sources = sources
        self.run = run
        self.scope = scope if scope is not None else {}

    def text(self, expr: A.Node) -> str:
        """The source text of ``expr`` (for messages)."""
        s = expr.span
        lines = [self.sources.line(Span(s.path, n, 1)) or "" for n in range(s.line, max(s.end_line, s.line) + 1)]
        if not lines or s.end_line < s.line:
            return type(expr).__name__
        if len(lines) == 1:
            return lines[0][s.col - 1:s.end_col - 1]
        parts = [lines[0][s.col - 1:], *lines[1:-1], lines[-1][:s.end_col - 1]]
        return " ".join(p.strip() for p in parts)

    def eval(self, e: A.Expr) -> Value:
        if isinstance(e, A.Number):  # an exact int, or a float (inf past the float range)
            if e.value in (float("inf"), float("-inf")):
                raise SpecFailure(e.span, "this number is too large for a float: it would be inf")
            return Q(e.value)
        if isinstance(e, A.Quantity):
            if not U.is_unit(e.unit):
                raise SpecFailure(e.span, f"unknown unit {e.unit!r}")
            scale, dim = U.unit(e.unit)
            return Q(e.value * scale, dim)
        if isinstance(e, A.Bool):
            return Q(bool(e.value))
        if isinstance(e, A.String):
            return e.value
        if isinstance(e, A.ListExpr):
            return tuple(self.eval(x) for x in e.items)
        if isinstance(e, A.Name):
            return self.name(e.id, e.span)
        if isinstance(e, A.Attribute):
            return self.dotted(e)
        if isinstance(e, A.Unary):
            x = self.eval(e.operand)
            if e.op == "not":
                return Q(np.logical_not(as_bool(x, e.span, "'not'").mag))
            q = as_q(x, e.span)
            return Q(-q.mag if e.op == "-" else q.mag, q.dim)
        if isinstance(e, A.Binary):
            if e.op in ("and", "or"):
                a = as_bool(self.eval(e.left), e.left.span, f"'{e.op}'")
                b = as_bool(self.eval(e.right), e.right.span, f"'{e.op}'")
                return Q((np.logical_and if e.op == "and" else np.logical_or)(a.mag, b.mag))
            return _arith(e.op, as_q(self.eval(e.left), e.left.span), as_q(self.eval(e.right), e.right.span), e.span)
        if isinstance(e, A.Compare):
            values = [self.eval(x) for x in e.operands]
            result = Q(True)
            for op, a, b in zip(e.ops, values, values[1:]):
                result = Q(np.logical_and(result.mag, compare(op, a, b, e.span).mag))
            return result
        if isinstance(e, A.Call):
            return self.call(e)
        if isinstance(e, A.Index):
            return self.index(e)
        raise SpecFailure(e.span, f"{type(e).__name__.lower()} expressions are not supported in tests")

    def name(self, name: str, span: Span) -> Value:
        if name in self.scope:
            return self.scope[name]
        run = self.run
        if run is not None:
            if name in run.results:
                return Q(run.results[name], run.units.get(name))
            if name == "dt":
                return Q(run.dt, TIME)
        if U.is_unit(name):
            scale, dim = U.unit(name)
            return Q(scale, dim)
        if run is not None and name in run.populations:
            raise SpecFailure(span, f"{name} is a population: use count({name}), rate({name}) or mean_rate({name})")
        if run is not None and name in run.monitors:
            fields = ", ".join(f"{name}.{f}" for f in run.monitors[name])
            raise SpecFailure(span, f"{name} is a monitor: use its fields {fields}")
        if run is None:
            raise SpecFailure(span, f"unknown name {name!r} (no run has produced results yet)")
        known = sorted(k for k in run.results if "/" not in k)
        raise SpecFailure(span, f"unknown name {name!r}; the run produced: {', '.join(known) or 'nothing'}")

    def dotted(self, e: A.Attribute) -> Value:
        parts = []
        cur: A.Expr = e
        while isinstance(cur, A.Attribute):
            parts.append(cur.name)
            cur = cur.value
        if not isinstance(cur, A.Name):
            raise SpecFailure(e.span, f"cannot read a field of {self.text(cur)}")
        parts.append(cur.id)
        parts.reverse()
        run = self.run
        for key in (".".join(parts), "/".join(parts)):  # a monitor field, or an output path
            if run is not None and key in run.results:
                return Q(run.results[key], run.units.get(key))
        if run is not None and parts[0] in run.monitors:
            fields = ", ".join(run.monitors[parts[0]])
            raise SpecFailure(e.span, f"monitor {parts[0]} has no field {'.'.join(parts[1:])!r}; it has {fields}")
        raise SpecFailure(e.span, f"unknown name {'.'.join(parts)!r}")

    def index(self, e: A.Index) -> Value:
        x = as_q(self.eval(e.value), e.value.span)
        key = tuple(self.subscript(s) for s in e.subscripts)
        try:
            return Q(np.asarray(x.mag)[key], x.dim)
        except IndexError as exc:
            raise SpecFailure(e.span, f"index out of range for shape {list(np.shape(x.mag))}") from exc

    def subscript(self, s: A.Expr):
        if isinstance(s, A.Slice):
            return slice(*(None if p is None else self.integer(p) for p in (s.start, s.stop, s.step)))
        return self.integer(s)

    def integer(self, e: A.Expr) -> int:
        q = as_q(self.eval(e), e.span)
        if np.ndim(q.mag) != 0 or (q.dim is not None and not q.dim.dimensionless) or float(q.mag) != int(q.mag):
            raise SpecFailure(e.span, f"expected an integer, got {fmt(q)}")
        return int(q.mag)

    def call(self, e: A.Call) -> Value:
        if not isinstance(e.func, A.Name):
            raise SpecFailure(e.span, "only named functions can be called in tests")
        name = e.func.id
        if name in POPULATION_FUNCTIONS:
            if len(e.args) != 1 or e.kwargs:
                raise SpecFailure(e.span, f"{name}() takes one population, as in {name}(P)")
            spikes = self.population_spikes(e.args[0])
            seconds = spikes.shape[0] * self.run.dt
            if seconds <= 0:
                raise SpecFailure(e.span, f"{name}(): the run recorded no time steps")
            try:
                return POPULATION_FUNCTIONS[name](spikes, seconds)
            except S.StatisticError as exc:
                raise SpecFailure(e.span, f"{name}(): {exc}") from exc
        if name not in FUNCTIONS:
            known = ", ".join(sorted([*FUNCTIONS, *POPULATION_FUNCTIONS]))
            raise SpecFailure(e.func.span, f"unknown function {name!r} in a test; available: {known}")
        args = [self.eval(a) for a in e.args]
        kwargs = {k.name: self.eval(k.value) for k in e.kwargs}
        return FUNCTIONS[name](args, kwargs, e.span)

    def population_spikes(self, arg: A.Expr) -> np.ndarray:
        """The ``[T, n]`` spike record of ``P`` or of a slice ``P[a:b]`` of it."""
        target, subscripts = (arg.value, arg.subscripts) if isinstance(arg, A.Index) else (arg, ())
        if not isinstance(target, A.Name):
            raise SpecFailure(arg.span, "expected a population name, as in count(P) or count(P[0:100])")
        run = self.run
        if run is None or target.id not in run.populations:
            known = ", ".join(run.populations) if run is not None else ""
            raise SpecFailure(arg.span, f"{target.id!r} is not a population" + (f"; populations: {known}" if known else ""))
        spikes = run.results.get(spike_key(target.id))
        if spikes is None:
            raise SpecFailure(arg.span, f"the run did not record the spikes of {target.id}")
        spikes = np.asarray(spikes)
        if len(subscripts) > 1:
            raise SpecFailure(arg.span, "a population takes one index range, as in P[0:100]")
        if subscripts:
            s = self.subscript(subscripts[0])
            spikes = spikes[:, s] if isinstance(s, slice) else spikes[:, s:s + 1]
        return spikes


def to_python(value: Value):
    """A test value as a hyperparameter: SI floats, ints, bools, strings, lists."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return [to_python(v) for v in value]
    mag = np.asarray(value.mag)
    return mag.item() if mag.ndim == 0 else mag.tolist()


# ---------------------------------------------------------------- explaining a failure
def _literal(e: A.Expr) -> bool:
    return isinstance(e, (A.Number, A.Quantity, A.String, A.Bool)) or (
        isinstance(e, A.ListExpr) and all(_literal(x) for x in e.items)) or (
        isinstance(e, A.Unary) and _literal(e.operand))


def explain(e: A.Expr, ev: Evaluator) -> str:
    """Why a condition is false, in terms of the values it read."""
    if isinstance(e, A.Compare):
        for op, a, b in zip(e.ops, e.operands, e.operands[1:]):
            held = compare(op, ev.eval(a), ev.eval(b), e.span)
            if bool(np.all(held.mag)):
                continue
            shown = [f"{ev.text(x)} was {fmt(ev.eval(x))}" for x in (a, b) if not _literal(x)]
            if not shown:
                return f"{ev.text(e)} is false"
            detail = f"; {fmt(held)}" if np.ndim(held.mag) else ""
            return f"{' and '.join(shown)}{detail} (expected {ev.text(a)} {op} {ev.text(b)})"
    if isinstance(e, A.Binary) and e.op == "and":
        left = ev.eval(e.left)
        return explain(e.left if not bool(np.all(left.mag)) else e.right, ev)
    if isinstance(e, A.Binary) and e.op == "or":
        return f"neither held: {explain(e.left, ev)}; {explain(e.right, ev)}"
    if isinstance(e, A.Unary) and e.op == "not":
        return f"{ev.text(e.operand)} was true"
    return f"{ev.text(e)} was {fmt(ev.eval(e))}"


__all__ = ["DIMLESS", "TIME", "FREQUENCY", "SpecFailure", "Q", "Value", "RunData", "Evaluator", "FUNCTIONS",
           "POPULATION_FUNCTIONS", "spike_key", "fmt", "as_q", "as_bool", "compare", "dim_of_text", "to_python",
           "explain"]
