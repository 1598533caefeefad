"""Building blocks of the ONNX lowering: lowered values, scopes (graph bodies) and naming.

A ``Val`` is what a lowering rule returns for one IR node: the ONNX value's name, the IR dtype
and per-sample shape, and whether the value carries the runtime's leading batch axis (the
rule of ``ir.batched``).  A ``Scope`` collects the nodes of one ONNX graph (the model's main
graph, the time loop's body, a LOOP body); a ``Builder`` owns what all scopes of one model
share: unique names, the initializers (always in the main graph, where every subgraph can see
them) and the batch-size tensor.  ``Emit`` is the handle a rule writes through: it names every
ONNX node after the IR node it lowers (``add_12@cuba.nspec:10:3``) and copies the IR span into
the node's doc string, so an ORT error or a NaN hunt points back at the spec line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from nspec.compiler import ir
from nspec.compiler.batching import lifted_axes, stored_axis
from nspec.compiler.symbolic_dims import Dim
from nspec.dsl.diagnostics import UNKNOWN_SPAN

ONNX_DTYPE = {ir.DType.f32: TensorProto.FLOAT, ir.DType.f64: TensorProto.DOUBLE, ir.DType.i32: TensorProto.INT32,
              ir.DType.i64: TensorProto.INT64, ir.DType.bool: TensorProto.BOOL}
INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class Val:
    """A lowered IR value: ``name`` holds ``[B, *shape]`` if ``batched`` else ``shape``."""

    name: str
    dtype: ir.DType
    shape: tuple[int, ...]
    batched: bool

    @property
    def rank(self) -> int:
        """The ONNX rank (per-sample rank, plus one for the batch axis)."""
        return len(self.shape) + self.batched

    def axis(self, a: int) -> int:
        """The ONNX axis of per-sample axis ``a`` (negative counts from the end of the sample)."""
        return stored_axis(a, len(self.shape), self.batched)


@dataclass(frozen=True, slots=True)
class LoopValue:
    """The value of a LOOP: its ITEMs, in order."""

    items: tuple[Val, ...]


def dim_names(shape) -> list:
    """A shape for an ONNX declaration: each size bound by data (a ``Dim``) as its name (a ``dim_param``)."""
    return [str(d) if isinstance(d, Dim) else d for d in shape]


def value_info(name: str, dtype: ir.DType, shape, batched: bool, extra=()):
    """A typed ONNX value declaration; symbolic dims are strings ("B", "T", "in_channels")."""
    dims = (["B"] if batched else []) + list(extra) + dim_names(shape)
    return helper.make_tensor_value_info(name, ONNX_DTYPE[dtype], dims)


class Builder:
    """Shared state of one model under construction."""

    def __init__(self):
        self.used: set[str] = set()
        self.initializers: list = []
        self.values: dict[str, np.ndarray] = {}  # initializer name -> value, for rules that fold constants
        self._consts: dict[tuple, str] = {}
        self.batch_dim: str | None = None  # a 1-D int64 tensor [B], computed in the main graph
        self.main: Scope | None = None     # the main graph, where sizes bound by data are computed
        # data-bound dimension -> (graph input, ONNX axis) whose size gives it at run time
        self.dim_sources: dict[str, tuple[str, int]] = {}
        self._sizes: dict[Dim, str] = {}

    def size(self, d: Dim) -> str:
        """The 1-D int64 tensor ``[d]``, computed once in the main graph from the graph inputs' shapes."""
        if d not in self._sizes:
            missing = sorted(n for n in d.names if n not in self.dim_sources)
            if missing or self.main is None:
                raise ir.IRError(f"the size {d} is bound by data, but no graph input gives {', '.join(missing)}")
            e = Emit(self.main, f"size[{d}]", UNKNOWN_SPAN)
            total = None
            for names, c in d.terms:
                term = e.i64([c]) if c != 1 or not names else None
                for n in names:
                    value, axis = self.dim_sources[n]
                    axis_size = e.op("Shape", value, start=axis, end=axis + 1)
                    term = axis_size if term is None else e.op("Mul", term, axis_size)
                total = term if total is None else e.op("Add", total, term)
            self._sizes[d] = total
        return self._sizes[d]

    def fresh(self, base: str) -> str:
        """A name no other value or node of the model uses."""
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}.{k}", k + 1
        self.used.add(name)
        return name

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        """An initializer holding ``value``; small identical constants are shared."""
        value = np.array(value, order="C")  # not ascontiguousarray, which turns a scalar into shape (1,)
        key = None
        if value.size <= 64:
            key = (value.dtype.str, value.shape, value.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        self.values[name] = value
        if key is not None:
            self._consts[key] = name
        return name


    def finish(self, nodes: list, outputs: list[str]) -> tuple[list, list]:
        """The nodes that ``outputs`` need (in order, bodies pruned too) and the initializers they read.

        Rules may leave a value unused (a constant folded on the host, a cast that a host table
        replaced); ORT with optimisations off would still run such nodes every step.
        """
        kept, used = _prune(nodes, set(outputs))
        return kept, [t for t in self.initializers if t.name in used]


def _prune(nodes, needed: set[str]) -> tuple[list, set[str]]:
    """Backward liveness over ``nodes``; returns the live nodes and every name they read."""
    needed = set(needed)
    live = []
    for node in reversed(nodes):
        if not needed.intersection(node.output):
            continue
        live.append(node)
        needed.update(node.input)
        for attr in node.attribute:
            if attr.HasField("g"):
                body, reads = _prune(list(attr.g.node), {o.name for o in attr.g.output})
                del attr.g.node[:]
                attr.g.node.extend(body)
                needed.update(reads)
    return live[::-1], needed


class Scope:
    """The nodes of one ONNX graph; ``parent`` is the enclosing scope (None for the main graph)."""

    def __init__(self, builder: Builder, prefix: str = "", parent: "Scope | None" = None):
        self.builder = builder
        self.prefix = prefix
        self.parent = parent
        self.nodes: list = []

    def child(self, prefix: str) -> "Scope":
        return Scope(self.builder, self.prefix + prefix, self)


class Emit:
    """Writes the ONNX nodes that lower one IR node (``label`` such as ``add_12``) into ``scope``."""

    def __init__(self, scope: Scope, label: str, span, options=None, lower=None, static: Scope | None = None,
                 env: dict | None = None):
        self.scope = scope
        self.builder = scope.builder
        self.label = label
        self.span = span
        self.options = options   # the lowering options (to_onnx.Options)
        self.lower = lower       # the interpreter, for rules that lower a body graph (LOOP)
        self.static_scope = static or scope  # where this graph's unbatched values live (hoisted out of the time loop)
        self.env = env or {}     # ARG name -> lowered value
        self._k = 0
        self._static: Emit | None = None

    def static(self) -> "Emit":
        """An Emit for work that depends only on unbatched values, so it runs once, outside the time loop."""
        if self.static_scope is self.scope:
            return self
        if self._static is None:
            self._static = Emit(self.static_scope, self.label, self.span, self.options, self.lower)
        return self._static

    # -- raw nodes
    def op(self, op_type: str, *inputs: str, outputs: int = 1, out_name: str | None = None, **attrs):
        """Append one ONNX node; returns its output name (or a list when ``outputs > 1``).

        ``out_name`` names the single output (a graph output), else names are fresh.
        """
        b = self.builder
        tag = f"{self.label}.{self._k}" if self._k else self.label
        self._k += 1
        if out_name is not None:
            names = [out_name]
        else:
            names = [b.fresh(f"{self.scope.prefix}{tag}" + (f":{j}" if outputs > 1 else "")) for j in range(outputs)]
        node_name = b.fresh(f"{self.scope.prefix}{tag}@{self.span}")
        node = helper.make_node(op_type, list(inputs), names, name=node_name, doc_string=str(self.span), **attrs)
        self.scope.nodes.append(node)
        return names if outputs > 1 else names[0]

    def const(self, value, dtype=None) -> str:
        return self.builder.const(np.asarray(value, dtype=dtype), f"{self.label}.const")

    def i64(self, values) -> str:
        """A 1-D int64 tensor (shapes, axes, starts): a constant, or computed at run time where an
        entry is a size bound by data (a ``Dim``)."""
        values = list(values)
        if not any(isinstance(v, Dim) for v in values):
            return self.const(np.asarray(values, dtype=np.int64).reshape(-1))
        pieces, run = [], []
        for v in values:
            if isinstance(v, Dim):
                if run:
                    pieces.append(self.const(np.asarray(run, dtype=np.int64)))
                    run = []
                pieces.append(self.builder.size(v))
            else:
                run.append(int(v))
        if run:
            pieces.append(self.const(np.asarray(run, dtype=np.int64)))
        return pieces[0] if len(pieces) == 1 else self.op("Concat", *pieces, axis=0)

    def scalar(self, value, dtype: ir.DType) -> str:
        """A scalar of ``dtype``; a size bound by data is read off the inputs at run time."""
        if isinstance(value, Dim):
            return self.op("Cast", self.op("Squeeze", self.builder.size(value), self.i64([0])), to=ONNX_DTYPE[dtype])
        return self.const(np.asarray(value, dtype=dtype.numpy))

    # -- helpers on Vals
    def cast(self, v: Val, dtype: ir.DType) -> Val:
        if v.dtype is dtype:
            return v
        return Val(self.op("Cast", v.name, to=ONNX_DTYPE[dtype]), dtype, v.shape, v.batched)

    def lift(self, v: Val, rank: int) -> str:
        """Give a batched value ``rank`` per-sample axes (new ones after the batch axis).

        Unbatched values already broadcast from the right against ``[B, *shape]``; a batched
        value of lower per-sample rank would wrongly align its batch axis with a sample axis.
        """
        axes = lifted_axes(len(v.shape), v.batched, rank)
        return self.op("Unsqueeze", v.name, self.i64(axes)) if axes else v.name

    def batch(self) -> str:
        """The 1-D int64 tensor ``[B]``."""
        if self.builder.batch_dim is None:
            raise ir.IRError(f"{self.span}: a batched value is needed but the program has no state or input")
        return self.builder.batch_dim

    def to_batch(self, v: Val) -> Val:
        """Repeat an unbatched value along a new leading batch axis."""
        if v.batched:
            return v
        x = self.op("Unsqueeze", v.name, self.i64([0]))
        shape = self.op("Concat", self.batch(), self.i64([1] * len(v.shape)), axis=0)
        return Val(self.op("Expand", x, shape), v.dtype, v.shape, True)

    def zeros(self, dtype: ir.DType, shape, batched: bool) -> str:
        """A zero tensor ``[B, *shape]`` (or ``shape``)."""
        fill = helper.make_tensor("value", ONNX_DTYPE[dtype], [1], [0])
        if not batched and not any(isinstance(d, Dim) for d in shape):
            return self.const(np.zeros(shape, dtype=dtype.numpy))
        if not batched:
            return self.op("ConstantOfShape", self.i64(shape), value=fill)
        dims = self.op("Concat", self.batch(), self.i64(shape), axis=0) if shape else self.batch()
        return self.op("ConstantOfShape", dims, value=fill)


def where(e: Emit, cond: str, x: str, y: str, dtype: ir.DType) -> str:
    """Where, also for bool data (ONNX Runtime implements Where only for numeric data)."""
    if dtype is ir.DType.bool:
        return e.op("Or", e.op("And", cond, x), e.op("And", e.op("Not", cond), y))
    return e.op("Where", cond, x, y)
