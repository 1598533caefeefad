"""The nspec IR: a typed dataflow graph of one time step.

Grammar of the IR (what ``verify`` checks)::

    Program  := Graph step, Graph init, Var* params, Var* states, Var* inputs, Var* outputs,
                Monitor* monitors, dt, tick structure
    Graph    := Node*  (in topological order: a node's inputs have smaller indices)
                Result* (name, kind, node)         kind in {next, output, deriv, value}
    Node     := (op: Op, inputs: int*, dtype: DType, shape: int*, attrs: (key, value)*, span)

A program's ``step`` graph is the pure function ``step(P, S_t, X_t) -> (S_{t+1}, Y_t)``: its
``ARG`` nodes read a parameter, a state or an input by path (``cortex/L4/v``), and its results
give every state's next value (kind ``next``) and every output port (kind ``output``).  Before
the discretize-odes pass, a continuous state's next value is read (``ITEM``) from an ``INTEGRATE``
node (``ops.IntegrateAttrs``), whose right-hand-side graph has a ``deriv`` result per state.

Shapes are per sample and concrete (hyperparameters are bound before the IR is built).  The
runtime adds one leading batch axis to every value that depends on a state or an input; a
value that depends only on parameters and constants is unbatched.  ``batched(graph)`` computes
that set, so every backend applies the same rule (einsum gets a batch letter, reductions and
reshapes count axes from the end of the per-sample shape).

Time structure is explicit: ``LOOP`` nodes run a body graph a fixed number of times (internal
ticks, recurrent depth with tied weights) or until a condition holds (``attrs.until``, with a
bound), carrying values between iterations.

Loops.  ``LOOP`` has attrs ``body`` (a Graph), ``count`` (iterations, or the bound when
``until`` is set), ``carried`` (names), ``invariant`` (names), ``stacked`` (names) and ``until``
(a name or None).  Its inputs are the initial values of the carried names, then the values of
the invariant names, in that order; the body reads them through ARG nodes with those names
(role ``state`` for carried, ``input`` for invariant; a body never reads the outer graph
directly).  Each iteration the body's ``next`` results give the carried values for the next
iteration, and its ``output`` results named in ``stacked`` are collected.  The LOOP's value is a
tuple read with ``ITEM``: first the final carried values, then each stacked output with a new
leading (per-sample) axis of length ``count``.  With ``until``, the body's bool ``value`` result
of that name is evaluated after each iteration; a sample whose condition holds keeps its
carried values from then on (its stacked outputs repeat the last value), and the loop ends when
every sample's holds or after ``count`` iterations.  The LOOP node's own dtype and shape are
unused (``f32``, ``()``); each ``ITEM`` has the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nspec.dsl.diagnostics import Span, UNKNOWN_SPAN

from .limits import LimitError, check_tensor
from .ops import (DRAWS, ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, INIT_ONLY, REDUCTIONS, Attrs, DType, IRError, LoopAttrs, Op,
                  ResultKind, Role, SignatureError, infer, make_attrs)


@dataclass(frozen=True, slots=True)
class Node:
    """One operation: its inputs (indices of earlier nodes), its result type and its attribute
    record (``ops.SIGNATURES[op].attrs``; (name, value) pairs given here become that record)."""

    op: Op
    inputs: tuple[int, ...]
    dtype: DType
    shape: tuple[int, ...]
    attrs: Attrs = ()
    span: Span = UNKNOWN_SPAN

    def __post_init__(self):
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", make_attrs(self.op, self.attrs, self.dtype, self.shape))

    def attr(self, key: str, default: Any = None) -> Any:
        return getattr(self.attrs, key, default)


@dataclass(frozen=True, slots=True)
class Result:
    name: str         # a path: "P/v" for states, "y" or "box/y" for outputs
    kind: ResultKind  # next | output | deriv | value (a str enum: compares equal to those strings)
    node: int

    def __post_init__(self):
        object.__setattr__(self, "kind", ResultKind(self.kind))


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    results: tuple[Result, ...]

    def result(self, name: str, kind: str | None = None) -> Result | None:
        for r in self.results:
            if r.name == name and (kind is None or r.kind == kind):
                return r
        return None

    def args(self) -> dict[str, int]:
        """Path -> index of its ARG node."""
        return {n.attr("name"): i for i, n in enumerate(self.nodes) if n.op is Op.ARG}

    def reachable(self, roots) -> set[int]:
        """The nodes ``roots`` depend on, the roots included."""
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.nodes[i].inputs)
        return seen


@dataclass(frozen=True, slots=True)
class Var:
    """A named graph argument: a parameter, a state variable, an input or an output port."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    span: Span = UNKNOWN_SPAN
    unit: str = ""              # the SI unit the value is stored in, for reports ("V", "s", "")
    key: str | None = None      # external weight name (a reference state_dict key)
    learnable: bool = True      # params: by gradient; states: False unless declared
    plastic: bool = False       # a synaptic state changed by a local rule
    reparam: tuple = ()         # ("bounded", lo, hi, "sigmoid") | ("positive", "relu") | ("clamp", lo, hi)
    stack: bool = False         # outputs: stacked over internal ticks
    batch_axis: int | None = None  # outputs: the batch axis's place in a one-step result (None: first)
    declared_unit: str = ""     # states: the unit the spec writes its type in ("mV"), for plots; "" if none
    declared_scale: float = 1.0  # that unit in SI units (1e-3 for mV): a stored value / scale reads in it


@dataclass(frozen=True, slots=True)
class Monitor:
    """``record v of E every 1 ms as M``: what the runtime records after each step."""

    name: str                   # the monitor's name (keys "M.v", "M.t", or "M.i"/"M.t")
    kind: str                   # "spikes" | "state"
    variables: tuple[str, ...]  # state paths, or the spike value's path
    indices: tuple[int, ...] | None
    every: int                  # record every this many steps
    span: Span = UNKNOWN_SPAN
    # spikes: the parts of the recorded neurons that projections send from, when they split them
    # into two or more disjoint slices ("exc" 0:3200, "inh" 3200:4000; monitor-local indices), for plots
    groups: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Program:
    """A compiled model: the step graph, how to initialise it, and how to run it."""

    name: str
    step: Graph
    init: Graph                 # results: one "value" per param and state (initial values)
    params: tuple[Var, ...]
    states: tuple[Var, ...]
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    monitors: tuple[Monitor, ...] = ()
    dt: float = 1.0             # seconds per step for spiking models; 1 for data-time models
    seed: int = 0
    duration_steps: int | None = None
    spans: tuple[tuple[str, Span], ...] = ()  # span of every named var, for error messages
    hyper: tuple[tuple[str, Any], ...] = ()
    data_dims: tuple = ()       # compiler/data_dims.py DataDim: hyperparameters bound by the data's shapes

    def var(self, name: str) -> Var | None:
        for group in (self.params, self.states, self.inputs, self.outputs):
            for v in group:
                if v.name == name:
                    return v
        return None


def batched(graph: Graph, unbatched_args: set[str] | frozenset[str] = frozenset()) -> list[bool]:
    """For each node: does its value carry the runtime's leading batch axis?

    An ARG is batched unless it is a parameter (or named in ``unbatched_args``); any other node
    is batched iff one of its inputs is.  LOOP bodies follow the same rule inside.
    """
    out: list[bool] = []
    for n in graph.nodes:
        if n.op is Op.ARG:
            out.append(n.attr("role") != "param" and n.attr("name") not in unbatched_args)
        elif n.op is Op.CONST:
            out.append(False)
        else:
            out.append(any(out[i] for i in n.inputs))
    return out


# ---------------------------------------------------------------- building
class GraphBuilder:
    """Appends nodes in topological order and deduplicates identical pure nodes (CSE)."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.results: list[Result] = []
        self._memo: dict[tuple, int] = {}

    def add(self, op: Op, inputs, dtype: DType | None = None, shape=None, attrs=(), span: Span = UNKNOWN_SPAN) -> int:
        """Append ``op(inputs)`` and return its index.  Its type is inferred from the op's
        signature; a ``dtype``/``shape`` given as well must agree with it (else ``IRError``)."""
        inputs = tuple(int(i) for i in inputs)
        attrs = make_attrs(op, attrs, dtype, shape)
        for requested in (shape, getattr(attrs, "shape", None)):  # before inference computes with the sizes
            if isinstance(requested, tuple) and (too_big := check_tensor(requested)):
                raise LimitError(span, too_big)
        try:
            inferred = infer(op, [self.nodes[i] for i in inputs], attrs)
        except SignatureError as exc:
            raise IRError(f"{op.value} at {span}: {exc}") from None
        if (dtype is not None and dtype is not inferred[0]) or (shape is not None and tuple(shape) != inferred[1]):
            raise IRError(f"{op.value} at {span}: declared {dtype and dtype.value}{list(shape or ())}, "
                          f"its signature gives {inferred[0].value}{list(inferred[1])}")
        dtype, shape = inferred
        if too_big := check_tensor(shape):  # refused before anything of this shape is built
            raise LimitError(span, too_big)
        key = None
        if op in DRAWS:
            pass  # every random draw is its own stream position: never merge two of them
        elif op is not Op.CONST:
            try:
                key = (op, inputs, dtype, shape, attrs)
                hash(key)
            except TypeError:
                key = None
        else:
            value = attrs.value
            if isinstance(value, np.ndarray) and value.size <= 16:
                key = (op, dtype, shape, value.tobytes())
        if key is not None and key in self._memo:
            return self._memo[key]
        self.nodes.append(Node(op, inputs, dtype, shape, attrs, span))
        idx = len(self.nodes) - 1
        if key is not None:
            self._memo[key] = idx
        return idx

    def const(self, value, dtype: DType = DType.f32, span: Span = UNKNOWN_SPAN) -> int:
        arr = np.asarray(value, dtype=dtype.numpy)
        return self.add(Op.CONST, (), dtype, arr.shape, (("value", arr),), span)

    def arg(self, name: str, role: str, dtype: DType, shape, span: Span = UNKNOWN_SPAN) -> int:
        return self.add(Op.ARG, (), attrs=(("name", name), ("role", role), ("dtype", dtype), ("shape", tuple(shape))),
                        span=span)

    def result(self, name: str, kind: str, node: int) -> None:
        self.results.append(Result(name, kind, node))

    def build(self) -> Graph:
        return Graph(tuple(self.nodes), tuple(self.results))


# ---------------------------------------------------------------- verifying and printing
def verify(graph: Graph, where: str = "") -> None:
    """Check the IR's invariants; raise ``IRError`` naming the node that breaks one."""
    for i, n in enumerate(graph.nodes):
        ctx = f"{where}%{i} ({n.op.value}, {n.span})"
        if not isinstance(n.op, Op):
            raise IRError(f"{ctx}: not an Op")
        for j in n.inputs:
            if not 0 <= j < i:
                raise IRError(f"{ctx}: input %{j} is not defined before use")
        if any((not isinstance(s, int)) or s < 0 for s in n.shape):
            raise IRError(f"{ctx}: bad shape {n.shape}")
        if n.op is Op.LOOP:
            if not isinstance(n.attrs.body, Graph):
                raise IRError(f"{ctx}: a LOOP needs a body graph")
            verify(n.attrs.body, f"{ctx}/body: ")
        if n.op is Op.INTEGRATE:
            verify(n.attrs.rhs, f"{ctx}/rhs: ")
        try:
            dtype, shape = infer(n.op, [graph.nodes[j] for j in n.inputs], n.attrs)
        except SignatureError as exc:
            raise IRError(f"{ctx}: {exc}") from None
        if (dtype, shape) != (n.dtype, n.shape):
            raise IRError(f"{ctx}: declared {n.dtype.value}{list(n.shape)}, its signature gives {dtype.value}{list(shape)}")
    for r in graph.results:
        if not 0 <= r.node < len(graph.nodes):
            raise IRError(f"{where}result {r.name}: node %{r.node} does not exist")
    seen = set()
    for r in graph.results:
        if (r.name, r.kind) in seen:
            raise IRError(f"{where}result {r.name} ({r.kind}) is defined twice")
        seen.add((r.name, r.kind))


def verify_program(p: Program) -> None:
    verify(p.step, "step: ")
    verify(p.init, "init: ")
    args = p.step.args()
    declared = {v.name for v in p.params + p.states + p.inputs}
    for name, i in args.items():
        if name not in declared:
            raise IRError(f"step: %{i} reads {name!r}, which is not a declared param, state or input")
    for s in p.states:
        if p.step.result(s.name, "next") is None and p.step.result(s.name, "deriv") is None:
            raise IRError(f"step: state {s.name!r} has no next value")
    for o in p.outputs:
        if p.step.result(o.name, "output") is None:
            raise IRError(f"step: output {o.name!r} is not computed")


def _fmt_attr(v: Any) -> str:
    if isinstance(v, (Role, DType)):
        return repr(v.value)
    if isinstance(v, np.ndarray):
        if v.size <= 8:
            return np.array2string(v.reshape(-1), precision=6, separator=",").replace("\n", "")
        return f"<{v.dtype}{list(v.shape)}>"
    if isinstance(v, Graph):
        return "<graph>"
    if isinstance(v, float):
        return f"{v:.9g}"
    return repr(v)


# attributes the printer leaves out: the body (printed below) and those repeating the node's type
_TYPE_ATTRS = {Op.LOOP: ("body",), Op.INTEGRATE: ("rhs", "spans"), Op.ARG: ("dtype", "shape"),
               Op.RESHAPE: ("shape",), Op.BROADCAST: ("shape",), Op.CAST: ("dtype",), Op.RANDOM: ("dtype", "shape"),
               Op.UNIFORM: ("shape",), Op.NORMAL: ("shape",)}


def print_graph(graph: Graph, indent: str = "") -> str:
    """A stable text form: one line per node, then the results (golden tests use it)."""
    lines = []
    for i, n in enumerate(graph.nodes):
        args = ", ".join(f"%{j}" for j in n.inputs)
        attrs = " ".join(f"{k}={_fmt_attr(v)}" for k, v in n.attrs.explicit() if k not in _TYPE_ATTRS.get(n.op, ()))
        shape = "x".join(str(s) for s in n.shape) or "scalar"
        loc = f"  # {n.span.line}:{n.span.col}" if n.span.line else ""
        lines.append(f"{indent}%{i} = {n.op.value}({args}) {attrs} : {n.dtype.value}[{shape}]{loc}".replace(")  :", ") :"))
        body = n.attr("body", n.attr("rhs"))
        if isinstance(body, Graph):
            lines.append(print_graph(body, indent + "    "))
    for r in graph.results:
        lines.append(f"{indent}{r.kind.value} {r.name} = %{r.node}")
    return "\n".join(lines)


def print_program(p: Program) -> str:
    out = [f"program {p.name} dt={p.dt:.9g}s seed={p.seed}"]
    for title, group in (("param", p.params), ("state", p.states), ("input", p.inputs), ("output", p.outputs)):
        for v in group:
            shape = "x".join(str(s) for s in v.shape) or "scalar"
            extra = f" [{v.unit}]" if v.unit else ""
            extra += f" key={v.key!r}" if v.key else ""
            out.append(f"{title} {v.name}: {v.dtype.value}[{shape}]{extra}")
    for m in p.monitors:
        out.append(f"monitor {m.name}: {m.kind} {', '.join(m.variables)} every {m.every}")
    out.append("init:")
    out.append(print_graph(p.init, "  "))
    out.append("step:")
    out.append(print_graph(p.step, "  "))
    return "\n".join(out)


__all__ = ["DType", "Op", "Role", "ResultKind", "LoopAttrs", "ELEMENTWISE_BINARY", "ELEMENTWISE_UNARY", "REDUCTIONS",
           "INIT_ONLY", "Node", "Result", "Graph", "Var", "Monitor", "Program", "GraphBuilder",
           "IRError", "verify", "verify_program", "print_graph", "print_program", "batched", "replace"]
