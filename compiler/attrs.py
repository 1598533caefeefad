"""The IR's attribute records: one small frozen dataclass per kind of op attribute.

``ops.SIGNATURES`` names the record each op carries (a node's ``attrs``); ``ops.make_attrs`` builds
one from (name, value) pairs.  The records hold values only; the type rules that read them are in
``ops.py``, which re-exports every name here.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: ops.py imports this module
    from .ops import DType


class Role(str, enum.Enum):
    """What an ARG node reads."""

    param = "param"
    state = "state"
    input = "input"


@dataclass(frozen=True, slots=True)
class Attrs:
    """Base of every attribute record; ``items()`` gives (name, value) pairs for printing."""

    def items(self) -> tuple[tuple[str, Any], ...]:
        return tuple((f.name, getattr(self, f.name)) for f in fields(self))

    def explicit(self) -> tuple[tuple[str, Any], ...]:
        """The pairs whose value is not the field's default (what the IR printer shows)."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self)
                     if f.default is MISSING or getattr(self, f.name) != f.default)


@dataclass(frozen=True, slots=True)
class NoAttrs(Attrs):
    pass


@dataclass(frozen=True, slots=True, eq=False)
class ConstAttrs(Attrs):
    value: np.ndarray

    def __eq__(self, other):
        return (isinstance(other, ConstAttrs) and self.value.dtype == other.value.dtype
                and self.value.shape == other.value.shape and bool(np.array_equal(self.value, other.value)))

    __hash__ = None  # arrays are not hashable: constants are deduplicated by their bytes instead


@dataclass(frozen=True, slots=True)
class ArgAttrs(Attrs):
    name: str
    role: Role
    dtype: DType
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CastAttrs(Attrs):
    dtype: DType


@dataclass(frozen=True, slots=True)
class SpikeAttrs(Attrs):
    surrogate: str | None = None     # None: the backend's default (lowering/surrogates.py)
    surrogate_args: tuple = ()


@dataclass(frozen=True, slots=True)
class ReduceAttrs(Attrs):
    axes: tuple[int, ...]
    keepdims: bool


@dataclass(frozen=True, slots=True)
class AxisAttrs(Attrs):
    axis: int


@dataclass(frozen=True, slots=True)
class LayerNormAttrs(Attrs):
    eps: float = 1e-5


@dataclass(frozen=True, slots=True)
class EinsumAttrs(Attrs):
    """A per-sample equation with an explicit output (``"ij,jk->ik"``)."""

    equation: str

    @property
    def terms(self) -> tuple[tuple[str, ...], str]:
        ins, out = self.equation.split("->")
        return tuple(ins.split(",")), out


@dataclass(frozen=True, slots=True)
class ShapeAttrs(Attrs):
    """RESHAPE and BROADCAST: the per-sample shape of the result."""

    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TransposeAttrs(Attrs):
    perm: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SliceAttrs(Attrs):
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    steps: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PropagateAttrs(Attrs):
    """post[j] = sum over presynaptic i with spikes[i] of w[k] for k in CSR row i.

    ``accumulate``: a fifth input ``acc[n_post]`` is the sum's starting value (post = acc + the
    events, added in event order).  Only ``fuse-accumulations`` writes it, for the TVM backend."""

    n_post: int
    accumulate: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class LoopAttrs(Attrs):
    """See "Loops" in ``ir.py``: a body run ``count`` times (or until ``until`` holds, at most
    ``count`` times), carrying ``carried``, reading ``invariant``, stacking ``stacked``."""

    body: Any  # ir.Graph (this module cannot import ir)
    count: int
    carried: tuple[str, ...] = ()
    invariant: tuple[str, ...] = ()
    stacked: tuple[str, ...] = ()
    until: str | None = None

    @classmethod
    def of(cls, node) -> "LoopAttrs":
        """The LOOP attributes of ``node`` (one decoder for every backend)."""
        if not isinstance(node.attrs, LoopAttrs):
            raise TypeError(f"{node.op.value} is not a LOOP")
        return node.attrs

    def result_node(self, name: str, kind: str) -> int:
        """The body node giving result ``name`` of ``kind``; KeyError naming it if absent."""
        r = self.body.result(name, kind)
        if r is None:
            raise KeyError(f"the LOOP body has no {kind} result {name!r}")
        return r.node

    def item_types(self) -> tuple[tuple[DType, tuple[int, ...]], ...]:
        """The types of the values ``ITEM`` reads: the final carried values, then the stacked
        outputs with a leading axis of length ``count``."""
        out = []
        for name in self.carried:
            n = self.body.nodes[self.result_node(name, "next")]
            out.append((n.dtype, n.shape))
        for name in self.stacked:
            n = self.body.nodes[self.result_node(name, "output")]
            out.append((n.dtype, (self.count,) + n.shape))
        return tuple(out)


@dataclass(frozen=True, slots=True, eq=False)
class Folded:
    """A value the elaborator computed at compile time (Python arithmetic in float64; ``weak``: an
    untyped literal that takes the other operand's dtype).  An INTEGRATE keeps such a derivative
    or probe as it is, so the scheme's arithmetic folds it exactly as elaboration would have."""

    value: Any
    dtype: DType
    shape: tuple[int, ...]
    weak: bool = False

    def __repr__(self) -> str:
        shape = list(self.shape) if self.shape else ""
        return f"{self.value!r}:{'weak ' if self.weak else ''}{self.dtype.value}{shape}"


@dataclass(frozen=True, slots=True, eq=False)
class IntegrateAttrs(Attrs):
    """One step of ``dt`` seconds of dx/dt = f(x, ...) for the states ``names`` by ``method``
    (a key of ``discretize.INTEGRATORS``).

    Inputs, in order: the current values of ``names``; the values of ``reads`` (what f reads
    besides those states); the values of ``probes`` (f evaluated with states fixed to constants,
    ``"v@at0"``, which linear schemes need); the refractory hold mask when ``held`` is not empty
    (those states keep their value while it is true).  ``rhs`` reads them through ARG nodes named
    ``names`` (role state) and ``reads`` (role input); its ``deriv`` result of each state is f.
    A derivative or probe known at compile time is in ``folded`` instead.  ``coefficients`` is
    the constant matrix A of dx/dt = A x + b(t) that exact integration needs (measured at
    elaboration).  ``ITEM`` i reads the new value of ``names[i]``, of that state's type.

    White noise: ``noises`` are the reads that are this step's N(0, 1) draws, one per noise name
    (``xi``, ``xi_1``); ``rhs`` reads them through ARGs it does not use and gives the factor g of
    noise k in dx/dt = f + sum_k g_k xi_k as the ``value`` result ``f"{state}@{k}"`` (or folded).
    """

    method: str
    dt: float
    names: tuple[str, ...]
    rhs: Any  # ir.Graph (this module cannot import ir)
    reads: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    folded: tuple[tuple[str, Folded], ...] = ()
    held: tuple[str, ...] = ()
    coefficients: tuple[tuple[float, ...], ...] | None = None  # A, one row per state
    spans: tuple = ()         # the span of each state's equation
    noises: tuple[str, ...] = ()  # the reads that are white-noise draws

    def state_types(self) -> dict[str, tuple[DType, tuple[int, ...]]]:
        """Each integrated state's (dtype, shape), from ``rhs``'s ARG nodes."""
        # ArgAttrs belongs to ARG nodes only (ops.make_attrs checks every node's record).
        return {n.attrs.name: (n.dtype, n.shape) for n in self.rhs.nodes
                if isinstance(n.attrs, ArgAttrs) and n.attrs.role is Role.state}

    def item_types(self) -> tuple[tuple[DType, tuple[int, ...]], ...]:
        """The types of the values ``ITEM`` reads: the new states."""
        types = self.state_types()
        return tuple(types[name] for name in self.names)


@dataclass(frozen=True, slots=True)
class ItemAttrs(Attrs):
    index: int


@dataclass(frozen=True, slots=True)
class RandomAttrs(Attrs):
    dist: str  # uniform | normal | orthogonal
    dtype: DType
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DrawAttrs(Attrs):
    """A step-graph draw (``UNIFORM``): Threefry key (seed, stream) and the per-sample shape; the
    stream is numbered per draw site by the number-streams pass."""

    seed: int
    stream: int
    shape: tuple[int, ...]


__all__ = ["Role", "Attrs", "NoAttrs", "ConstAttrs", "ArgAttrs", "CastAttrs", "SpikeAttrs", "ReduceAttrs", "AxisAttrs",
           "LayerNormAttrs", "EinsumAttrs", "ShapeAttrs", "TransposeAttrs", "SliceAttrs", "PropagateAttrs", "LoopAttrs",
           "Folded", "IntegrateAttrs", "ItemAttrs", "RandomAttrs", "DrawAttrs"]
