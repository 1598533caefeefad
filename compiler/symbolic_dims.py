"""Which sizes of a compiled program follow its data-bound dimensions, found by compiling it again.

A program's shapes are integers: ``hyper c: int = auto(6)`` is bound before elaboration, so the IR
holds 6 wherever ``c`` (or ``2 * c``, or a reshape's ``[c * n]``) sized something.  An export
that is to run at other values of ``c`` must know which of those integers are ``c`` and which are
a 6 that is not (``d_input = 6`` beside ``in_channels = 6``); matching numbers cannot tell them
apart.  ``analyse`` asks the compiler instead: it compiles the spec at other values of the
dimensions (``compile_at``) and lines the programs up node by node.  An integer that does not
change stays an integer; one that changes becomes a ``Dim``, the polynomial in the dimensions
that gives it, fitted on a grid of compiles (each dimension at two values, so products such as
a flattened ``[n * c]`` are exact) and checked at two more points.

What cannot be symbolic is reported per dimension, with the spec location that fixes it:

* the program's structure changes with the value (an unrolled ``for`` over ``range(n)``, a
  connectivity drawn for ``n`` neurons): the programs do not line up;
* a size that is not a polynomial of degree at most one in each dimension (``n // 2``,
  ``n * n``): the checks at the extra points fail;
* a constant array computed as the spec compiles whose shape follows a dimension, unless it is one
  of the families a backend builds at run time (``Pattern``: filled, ``arange``, a triangular
  mask), its family checked at every compile;
* a node whose backend rule cannot take a run-time size (``supports``; the ONNX lowering's
  answer is ``lowering/onnx_symbolic.py``);
* a dimension that sizes no axis of an input, parameter or state exactly, so nothing at run time
  gives its value;
* the spec does not compile at the other values.

Such a dimension keeps its compiled value in the result (``Symbolic.fixed`` says why).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields, is_dataclass, replace
from enum import Enum
from typing import Any, Callable, Mapping

import numpy as np

from nspec.dsl.diagnostics import UNKNOWN_SPAN, NspecError, Span

from .ir import Graph, Node, Program
from .ops import LoopAttrs


# ---------------------------------------------------------------- sizes as polynomials
@dataclass(frozen=True, slots=True)
class Dim:
    """A size computed from data-bound dimensions: ``sum(coefficient * product of names)`` (a fit
    gives at most one of each name per term; the lowering's products of sizes may square one).
    A ``Dim`` is never a constant (``make`` returns an int)."""

    terms: tuple[tuple[tuple[str, ...], int], ...]   # by degree, then names; no zero coefficients

    @staticmethod
    def of(name: str) -> "Dim":
        return Dim(((((name,), 1)),))

    @staticmethod
    def make(terms: Mapping[tuple[str, ...], int]) -> "Dim | int":
        kept = tuple(sorted(((k, int(c)) for k, c in terms.items() if c), key=lambda t: (len(t[0]), t[0])))
        if all(not k for k, _ in kept):
            return sum(c for _, c in kept)
        return Dim(kept)

    @property
    def names(self) -> set[str]:
        return {n for k, _ in self.terms for n in k}

    def at(self, values: Mapping[str, int]) -> int:
        """The size at the given values of the dimensions."""
        return sum(c * int(np.prod([values[n] for n in k], dtype=np.int64)) for k, c in self.terms)

    def __add__(self, other):
        out = dict(self.terms)
        for k, c in _terms(other).items():
            out[k] = out.get(k, 0) + c
        return Dim.make(out)

    __radd__ = __add__

    def __neg__(self):
        return Dim.make({k: -c for k, c in self.terms})

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        out: dict = {}
        for (k1, c1), (k2, c2) in itertools.product(self.terms, _terms(other).items()):
            k = tuple(sorted(k1 + k2))  # a name twice is a square: a product of sizes may hold one
            out[k] = out.get(k, 0) + c1 * c2
        return Dim.make(out)

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        return True  # a size given by data is positive

    def __int__(self):
        raise TypeError(f"the size {self} is bound by data: it has no value until run time")

    __index__ = __int__

    def __str__(self) -> str:
        parts = []
        for k, c in self.terms:
            name = "*".join(k)
            parts.append(str(c) if not k else name if c == 1 else f"{c}*{name}")
        return "+".join(parts).replace("+-", "-")

    __repr__ = __str__


def _terms(x) -> dict:
    return dict(x.terms) if isinstance(x, Dim) else {(): int(x)}


@dataclass(frozen=True, slots=True)
class Pattern:
    """A constant array that the spec computes as it compiles, whose size follows the data, recognised
    as one of the families a backend can build at run time: ``full`` (every entry ``value``),
    ``arange`` (0, 1, ..., size - 1) and ``tril``/``triu`` (ones on and below/above diagonal ``k``,
    zeros elsewhere: a causal mask).  The array must be that family's member at every compile."""

    kind: str
    value: Any = None
    k: int = 0


def pattern_of(arrays: list[np.ndarray]) -> Pattern | None:
    """The family that every one of ``arrays`` (one constant, compiled at several sizes) belongs to."""
    a0 = arrays[0]
    if any(a.dtype != a0.dtype or a.ndim != a0.ndim or a.size == 0 for a in arrays):
        return None
    first = a0.flat[0]
    if all(np.all(a == first) for a in arrays):
        return Pattern("full", first.item())
    if a0.ndim == 1 and all(np.array_equal(a, np.arange(a.shape[0])) for a in arrays):
        return Pattern("arange")
    if a0.ndim == 2:
        for k in (0, -1, 1):
            for kind, triangle in (("tril", np.tril), ("triu", np.triu)):
                if all(np.array_equal(a, triangle(np.ones(a.shape, a.dtype), k)) for a in arrays):
                    return Pattern(kind, k=k)
    return None


def has_dim(value: Any) -> bool:
    """Does ``value`` (a shape, an attribute record, a tuple of them) hold a ``Dim``?  Graphs inside
    (a LOOP's body) are not searched: their nodes are checked one by one."""
    if isinstance(value, Dim):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_dim(v) for v in value)
    if is_dataclass(value) and not isinstance(value, (Graph, type)):
        return any(has_dim(getattr(value, f.name)) for f in fields(value))
    return False


def dims_in(value: Any) -> set[str]:
    """The names of the dimensions that ``value``'s ``Dim``s read."""
    if isinstance(value, Dim):
        return value.names
    if isinstance(value, (tuple, list)):
        return set().union(*(dims_in(v) for v in value)) if value else set()
    if is_dataclass(value) and not isinstance(value, (Graph, type)):
        return set().union(*(dims_in(getattr(value, f.name)) for f in fields(value)))
    return set()


def fit(points: list[dict[str, int]], values: list, names: list[str], lows: dict[str, int]) -> "Dim | int | None":
    """The multilinear polynomial through ``values``: ``points[:2**len(names)]`` are the grid (each
    name at ``lows[name]`` or one more, in ``itertools.product`` order), the rest are checks.
    None when the values are not integers or a check fails."""
    if any(float(v) != int(v) for v in values):
        return None
    vals = [int(v) for v in values]
    k = len(names)
    corners = dict(zip(itertools.product((0, 1), repeat=k), vals))
    shifted: dict = {}
    for subset in itertools.product((0, 1), repeat=k):  # Moebius inversion over the cube
        c = sum((-1) ** (sum(subset) - sum(t)) * corners[t] for t in itertools.product(*[(0, 1) if s else (0,) for s in subset]))
        if c:
            shifted[subset] = c
    poly: Any = 0
    for subset, c in shifted.items():  # c * prod(d_i - low_i) expanded
        term: Any = c
        for name, s in zip(names, subset):
            if s:
                term = term * (Dim.of(name) - lows[name])
        poly = poly + term
    at = lambda p: poly.at(p) if isinstance(poly, Dim) else poly  # noqa: E731
    if any(at(p) != v for p, v in zip(points, vals)):
        return None
    return poly


# ---------------------------------------------------------------- lining programs up
class Mismatch(Exception):
    """The programs differ in more than integers: ``what`` at ``span``."""

    def __init__(self, what: str, span: Span = UNKNOWN_SPAN):
        super().__init__(what)
        self.what, self.span = what, span


class _Zip:
    """Merges values of the same program compiled at ``points``: equal parts stay, integers that
    differ become ``Dim``s (or a ``Mismatch``)."""

    def __init__(self, points, names, lows):
        self.points, self.names, self.lows = points, names, lows

    def __call__(self, vs: list, what: str = "a value") -> Any:
        v0 = vs[0]
        if isinstance(v0, Graph):
            return self.graph(vs)
        if isinstance(v0, Node):
            return self.node(vs)
        if isinstance(v0, np.ndarray):
            return self.array(vs, what)
        if isinstance(v0, (bool, str, float, Enum, Span, type(None))):
            if any(v != v0 for v in vs):
                raise Mismatch(f"{what} is {vs[0]!r} here and {next(v for v in vs if v != v0)!r} at other sizes")
            return v0
        if isinstance(v0, (int, np.integer)):
            return self.integer(vs, what)
        if isinstance(v0, (tuple, list)):
            if any(len(v) != len(v0) for v in vs):
                raise Mismatch(f"{what} has {len(v0)} entries here and other counts at other sizes")
            return type(v0)(self([v[i] for v in vs], what) for i in range(len(v0)))
        if is_dataclass(v0):
            if any(type(v) is not type(v0) for v in vs):
                raise Mismatch(f"{what} changes kind with the sizes")
            return self.record(vs, what)
        if any(v != v0 for v in vs):
            raise Mismatch(f"{what} changes with the sizes")
        return v0

    def record(self, vs, what):
        """A dataclass (a node, an attribute record, a var) field by field."""
        v0 = vs[0]
        changed = {}
        for f in fields(v0):
            part = what if f.name == "attrs" else f"{what}'s {f.name}"  # a node's attributes read as the node's
            merged = self([getattr(v, f.name) for v in vs], part)
            if merged is not getattr(v0, f.name):
                changed[f.name] = merged
        return replace(v0, **changed) if changed else v0

    def integer(self, vs, what):
        if all(v == vs[0] for v in vs):
            return vs[0]
        poly = fit(self.points, vs, self.names, self.lows)
        if poly is None:
            raise Mismatch(f"{what} ({vs[0]} at {_point(self.points[0])}) is not a sum of products of the sizes "
                           "bound by data")
        return poly

    def array(self, vs, what):
        v0 = vs[0]
        if all(v.dtype == v0.dtype and v.shape == v0.shape and np.array_equal(v, v0) for v in vs):
            return v0
        if all(v.shape == v0.shape for v in vs) and v0.size == 1 and v0.dtype.kind in "iuf":  # a number
            poly = fit(self.points, [v.item() for v in vs], self.names, self.lows)
            if isinstance(poly, Dim):
                return poly
        if any(v.shape != v0.shape for v in vs):  # sized by the data: a family built at run time?
            pattern = pattern_of(vs)
            if pattern is not None:
                return pattern
        raise Mismatch(f"{what} is an array computed when the spec compiles (shape {list(v0.shape)} at "
                       f"{_point(self.points[0])}), and its shape or values change with the sizes")

    def node(self, vs: list[Node]) -> Node:
        try:
            if any(v.op is not vs[0].op for v in vs):
                raise Mismatch(f"a '{vs[0].op.value}' node is another op at other sizes")
            return self.record(vs, f"the '{vs[0].op.value}' node")
        except Mismatch as exc:
            if exc.span == UNKNOWN_SPAN:
                exc.span = vs[0].span
            raise

    def graph(self, vs: list[Graph]) -> Graph:
        if any(len(v.nodes) != len(vs[0].nodes) for v in vs):
            first = _first_difference(vs)
            raise Mismatch("the program has another number of operations at other sizes", first)
        nodes = tuple(self.node([v.nodes[i] for v in vs]) for i in range(len(vs[0].nodes)))
        results = self([v.results for v in vs], "the results")
        return Graph(nodes, results)


def _point(values: dict[str, int]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in values.items())


def _first_difference(vs: list[Graph]) -> Span:
    """The span of the first node whose op differs between the graphs (where the structure parts)."""
    for nodes in zip(*(v.nodes for v in vs)):
        if any(n.op is not nodes[0].op or n.inputs != nodes[0].inputs for n in nodes):
            return nodes[0].span
    shortest = min(len(v.nodes) for v in vs)  # one is the other with more nodes: where they start
    return max(vs, key=lambda v: len(v.nodes)).nodes[shortest].span


# ---------------------------------------------------------------- the analysis
@dataclass(frozen=True, slots=True)
class Symbolic:
    """A program whose data-bound sizes are ``Dim``s where they can be, and why the others cannot.

    ``program``: the compiled program with ``Dim``s in its shapes and attributes; ``values``: every
    data-bound dimension's compiled value; ``fixed``: dimension -> why it keeps that value (a
    location and a reason); ``sources``: each symbolic dimension's (var name, axis of its
    per-sample shape) that gives its value at run time; ``dependent_params``: parameters whose
    initial value changes with a symbolic dimension (an export must let them be fed)."""

    program: Program
    values: dict[str, int]
    fixed: dict[str, str]
    sources: dict[str, tuple[str, int]]
    dependent_params: frozenset[str]

    def at(self, value):
        """A size (or shape) at the compiled values."""
        if isinstance(value, tuple):
            return tuple(self.at(v) for v in value)
        return value.at(self.values) if isinstance(value, Dim) else value


OFFSETS = (3, 7, 13)  # how far from the compiled value the grid starts (tried in turn)


def analyse(base: Program, compile_at: Callable[[dict[str, int]], Program],
            supports: Callable[[Node], str | None] = lambda n: None) -> Symbolic:
    """``base`` with its data-bound sizes as ``Dim``s, by compiling at other values (``compile_at``
    takes {dimension: value}).  ``supports(node)`` says why a backend cannot give ``node`` a size
    known only at run time (None: it can)."""
    values = {d.name: d.value for d in base.data_dims}
    fixed: dict[str, str] = {}
    while True:
        free = [n for n in values if n not in fixed]
        if not free:
            return Symbolic(base, values, fixed, {}, frozenset())
        result = _attempt(base, compile_at, supports, values, free, fixed)
        if isinstance(result, Symbolic):
            return result
        fixed.update(result)


def _attempt(base, compile_at, supports, values, free, fixed):
    """A ``Symbolic`` for the ``free`` dimensions, or {dimension: reason} for those that must be fixed."""
    programs, points, lows = None, None, None
    failure = ""
    for offset in OFFSETS:
        lows = {n: values[n] + offset for n in free}
        grid = [dict(zip(free, (lows[n] + s for n, s in zip(free, corner))))
                for corner in itertools.product((0, 1), repeat=len(free))]
        checks = [{n: lows[n] + 2 + i for i, n in enumerate(free)}, {n: lows[n] + 4 + 2 * i for i, n in enumerate(free)}]
        points = grid + checks
        try:
            programs = [compile_at({**{n: values[n] for n in fixed}, **p}) for p in points]
            break
        except NspecError as exc:
            failure = "; ".join(f"{d.span}: {d.message}" for d in exc.diagnostics[:1])
    if programs is None:
        return _not_compiling(compile_at, values, free, fixed, failure)
    zip_ = _Zip(points, free, lows)
    try:
        step = zip_([p.step for p in programs])
        groups = {g: zip_([getattr(p, g) for p in programs], f"the {g}") for g in ("params", "states", "inputs", "outputs")}
    except Mismatch as exc:
        return _blame(zip_, programs, free, lows, exc)
    unsupported = _unsupported(step, supports)
    if unsupported:
        return unsupported
    program = replace(base, step=step, **groups)
    sources = _sources(program, free)
    missing = [n for n in free if n not in sources]
    if missing:
        return {n: f"no input, parameter or state has an axis of exactly '{n}', so nothing gives its value at run time"
                for n in missing}
    return Symbolic(program, values, dict(fixed), sources, _dependent_params(programs))


def _not_compiling(compile_at, values, free, fixed, failure: str) -> dict[str, str]:
    """The dimensions that the spec does not compile at other values of, each tried alone (all of
    ``free`` when each compiles alone and only their combinations fail)."""
    out = {}
    for name in free:
        for offset in OFFSETS:
            try:
                compile_at({**{n: values[n] for n in fixed}, **{n: values[n] for n in free}, name: values[name] + offset})
                break
            except NspecError as exc:
                why = "; ".join(f"{d.span}: {d.message}" for d in exc.diagnostics[:1])
        else:
            out[name] = f"the spec does not compile at other values of '{name}' ({why})"
    return out or {n: f"the spec does not compile at other values of {', '.join(map(repr, free))} ({failure})"
                   for n in free}


def _blame(zip_, programs, free, lows, exc: Mismatch) -> dict[str, str]:
    """Which dimensions the mismatch comes from: those whose own step (one grid edge) shows it."""
    k = len(free)
    blamed = {}
    for i, name in enumerate(free):
        edge = [0, 1 << (k - 1 - i)]  # the low corner and the corner with only `name` raised
        try:
            _Zip([zip_.points[j] for j in edge], [name], {name: lows[name]})([programs[j].step for j in edge])
        except Mismatch as own:
            blamed[name] = f"{own.span}: {own.what}"
    return blamed or {n: f"{exc.span}: {exc.what}" for n in free}


def _unsupported(graph: Graph, supports) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in graph.nodes:
        sized = [n.shape, n.attrs, *(graph.nodes[i].shape for i in n.inputs)]  # its own sizes and its operands'
        if has_dim(sized):
            why = supports(n)
            if why is not None:
                for name in sorted(dims_in(sized)):
                    out.setdefault(name, f"{n.span}: {why}")
        if isinstance(n.attrs, LoopAttrs):
            for name, why in _unsupported(n.attrs.body, supports).items():
                out.setdefault(name, why)
    return out


def _sources(program: Program, free: list[str]) -> dict[str, tuple[str, int]]:
    """For each dimension, the first input, then parameter, then state with an axis of exactly it."""
    out: dict[str, tuple[str, int]] = {}
    for group in (program.inputs, program.params, program.states):
        for v in group:
            for axis, size in enumerate(v.shape):
                if isinstance(size, Dim) and size.terms == Dim.of(size.terms[0][0][0]).terms:
                    out.setdefault(size.terms[0][0][0], (v.name, axis))
    return {n: out[n] for n in free if n in out}


def _dependent_params(programs: list[Program]) -> frozenset[str]:
    """Parameters whose initial value (the init graph's cone of its result) differs between compiles."""
    out = set()
    first = programs[0]
    for v in first.params:
        r0 = first.init.result(v.name, "value")
        for p in programs[1:]:
            r = p.init.result(v.name, "value")
            if r0 is None or r is None or not _same_cone(first.init, r0.node, p.init, r.node, {}):
                out.add(v.name)
                break
    return frozenset(out)


def _same_cone(g1: Graph, i: int, g2: Graph, j: int, memo: dict) -> bool:
    if (i, j) not in memo:
        a, b = g1.nodes[i], g2.nodes[j]
        memo[(i, j)] = (a.op is b.op and a.dtype == b.dtype and a.shape == b.shape and len(a.inputs) == len(b.inputs)
                        and _same_attrs(a, b)
                        and all(_same_cone(g1, x, g2, y, memo) for x, y in zip(a.inputs, b.inputs)))
    return memo[(i, j)]


def _same_attrs(a: Node, b: Node) -> bool:
    try:
        return bool(a.attrs == b.attrs)
    except ValueError:  # arrays compared elementwise
        return False
