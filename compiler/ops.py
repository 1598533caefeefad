"""Op signatures: each op's typed attributes and its type rule, in the manner of JAX's ``abstract_eval``.

``SIGNATURES[op]`` says how many inputs an op takes, which attribute record it carries and how
its result type follows from its inputs' types and its attributes::

    infer(inputs: tuple[Node, ...], attrs) -> (DType, shape)

The graph builder infers every node's type from this table (a declared type that disagrees is a
compiler bug, raised at the node's span), and ``verify`` re-infers every node of a graph.  Adding
an op means adding a member to ``Op``, a signature here and one rule per backend.

Attribute records are small frozen dataclasses (``attrs.py``, re-exported here).  A node built with attribute pairs
(``(("axis", 0),)``, as tests and older code write them) has them turned into its record; the
record of an op whose result type is its own argument (RESHAPE and BROADCAST to a shape, CAST
to a dtype, ARG, RANDOM) takes that type from the node when it is not given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .attrs import (ArgAttrs, Attrs, AxisAttrs, CastAttrs, CheckAttrs, ConstAttrs, DrawAttrs, EinsumAttrs, Folded, IntegrateAttrs, ItemAttrs,
                    LayerNormAttrs, LoopAttrs, NoAttrs, PropagateAttrs, RandomAttrs, ReduceAttrs, Role, ShapeAttrs,
                    SliceAttrs, SpikeAttrs, TransposeAttrs)


class DType(enum.Enum):
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def numpy(self):
        return np.dtype({"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "bool": "bool"}[self.value])

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64)

    @classmethod
    def of(cls, dtype) -> "DType":
        """The IR dtype of a NumPy dtype."""
        return {"float32": cls.f32, "float64": cls.f64, "int32": cls.i32, "int64": cls.i64, "bool": cls.bool}[np.dtype(dtype).name]


class Op(enum.Enum):
    """Every operation of the IR.  Each backend has one rule per member (tests check that)."""

    # -- leaves
    CONST = "const"          # attrs: value (np.ndarray)
    ARG = "arg"              # attrs: name, role in {param, state, input}
    # -- elementwise arithmetic (numpy broadcasting on per-sample shapes)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MOD = "mod"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    NEG = "neg"
    # -- elementwise functions
    ABS = "abs"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    SILU = "silu"
    SOFTPLUS = "softplus"
    SIN = "sin"
    COS = "cos"
    ERF = "erf"
    FLOOR = "floor"
    STOP_GRADIENT = "stop_gradient"  # the identity whose gradient is zero (torch.Tensor.detach)
    # -- comparison and logic (results are bool)
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    EQ = "eq"
    NE = "ne"
    AND = "and"
    OR = "or"
    NOT = "not"
    WHERE = "where"          # where(cond, a, b)
    CAST = "cast"            # to the node's dtype
    # -- spikes: heaviside(x) as float, with the surrogate used for gradients
    SPIKE = "spike"          # attrs: surrogate (name), surrogate_args (tuple)
    # -- reductions over axes (attrs: axes, keepdims), normalisations over the last axis
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    ARGMAX = "argmax"        # attrs: axis
    SOFTMAX = "softmax"      # attrs: axis
    LOGSUMEXP = "logsumexp"  # attrs: axis
    LAYERNORM = "layernorm"  # attrs: eps; inputs: x [, weight, bias]
    # -- contractions
    EINSUM = "einsum"        # attrs: equation (per sample, explicit output)
    # -- shape and indexing
    RESHAPE = "reshape"      # to the node's shape
    TRANSPOSE = "transpose"  # attrs: perm
    BROADCAST = "broadcast"  # to the node's shape
    CONCAT = "concat"        # attrs: axis
    SLICE = "slice"          # attrs: starts, stops, steps (one per axis)
    GATHER = "gather"        # gather(x, idx) along attrs.axis (take)
    SCATTER_ADD = "scatter_add"  # scatter_add(base, idx, values) along attrs.axis
    # -- synaptic propagation: post[j] = sum over pre i with spikes[i] of w[k] for k in row i
    PROPAGATE = "propagate"  # inputs: spikes[n_pre], indptr, indices, weights ([nnz] or one shared scalar)[, acc[n_post]]; attrs: n_post, accumulate
    # -- time structure
    LOOP = "loop"            # see "Loops" in the module docstring
    ITEM = "item"            # attrs: index; the index-th value of a LOOP or an INTEGRATE
    # -- continuous time (before discretize-odes only; no backend ever sees it)
    INTEGRATE = "integrate"  # one step of dx/dt = f(x, ...) by a named method; see IntegrateAttrs
    # -- initialisation only (run on the host by the reference interpreter, never in a step graph)
    RANDOM = "random"        # attrs: dist in {uniform, normal, orthogonal}; inputs: two scalars (lo, hi | mean, std)
    # -- random draws inside the time loop (counter-based: the same bits on every backend)
    UNIFORM = "uniform"      # attrs: stream, streams, shape; inputs: the step counter and the seed (i64 scalars); f32 in [0, 1)
    NORMAL = "normal"        # as UNIFORM; f32 standard normal: the inverse CDF of its uniform draw (compiler/normal_draws.py)
    # -- run-time checks (added by the check-bounds pass; compiler/bounds.py)
    CHECK = "check"          # check(status i64[3], x): the status, or [site, step, first bad value of x] if
                             # the status is clear and x fails attrs.kind; attrs: site, kind, size


# The op families.  A new elementwise function is one enum member above plus its name in MATH:
# its signature follows from the family; each backend then needs one rule.
ARITHMETIC = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MOD, Op.MAXIMUM, Op.MINIMUM}
COMPARISONS = {Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.AND, Op.OR}
MATH = {Op.NEG, Op.ABS, Op.EXP, Op.LOG, Op.SQRT, Op.TANH, Op.SIGMOID, Op.RELU, Op.SILU, Op.SOFTPLUS, Op.SIN, Op.COS,
        Op.ERF, Op.FLOOR, Op.STOP_GRADIENT}  # float -> float, same shape
ELEMENTWISE_BINARY = ARITHMETIC | COMPARISONS
ELEMENTWISE_UNARY = MATH | {Op.NOT, Op.CAST, Op.SPIKE}
REDUCTIONS = {Op.SUM, Op.MEAN, Op.MAX, Op.MIN}
INIT_ONLY = {Op.RANDOM}  # backends lower step graphs only; init graphs run on the host
STEP_DRAWS = {Op.UNIFORM, Op.NORMAL}  # counter-based draws of the time loop (compiler/threefry.py)
DRAWS = {Op.RANDOM} | STEP_DRAWS  # each node is its own draw: never merged with an equal-looking one
CONTINUOUS = {Op.INTEGRATE}  # replaced by passes/discretize_odes.py before any backend sees a graph


class ResultKind(str, enum.Enum):
    """What a graph result gives: a state's next value, an output port, a derivative before
    discretisation, or a named value (spikes, conditions) backends may record."""

    next = "next"
    output = "output"
    deriv = "deriv"
    value = "value"


class Merge(str, enum.Enum):
    """How wires arriving at one input port combine (the port's monoid)."""

    sum = "sum"
    max = "max"
    or_ = "or"
    exclusive = "exclusive"


# ---------------------------------------------------------------- type rules
class IRError(Exception):
    """An IR invariant does not hold: a compiler bug, never a user error."""


class SignatureError(IRError):
    """Inputs or attributes an op cannot take."""


Type = tuple[DType, tuple[int, ...]]
_RANK = {DType.bool: 0, DType.i32: 1, DType.i64: 2, DType.f32: 3, DType.f64: 4}


def promote(*dtypes: DType) -> DType:
    """The dtype a mixed elementwise op computes in: float over int over bool, wider over narrower."""
    return max(dtypes, key=_RANK.__getitem__)


def _broadcast(ins) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in np.broadcast_shapes(*(n.shape for n in ins)))
    except ValueError:
        raise SignatureError(f"shapes {', '.join(str(n.shape) for n in ins)} do not broadcast") from None


def _arith(ins, a) -> Type:
    return promote(*(n.dtype for n in ins)), _broadcast(ins)


def _compare(ins, a) -> Type:
    return DType.bool, _broadcast(ins)


def _same(ins, a) -> Type:
    return ins[0].dtype, ins[0].shape


def _where(ins, a) -> Type:
    if ins[0].dtype is not DType.bool:
        raise SignatureError("where's condition must be bool")
    return promote(ins[1].dtype, ins[2].dtype), _broadcast(ins)


def _axis(axis: int, rank: int) -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise SignatureError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _reduce(ins, a: ReduceAttrs) -> Type:
    x = ins[0]
    axes = {_axis(k, len(x.shape)) for k in a.axes}
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if a.keepdims or i not in axes)
    return x.dtype, shape


def _drop_axis(ins, a: AxisAttrs, dtype=None) -> Type:
    x = ins[0]
    k = _axis(a.axis, len(x.shape))
    return dtype or x.dtype, x.shape[:k] + x.shape[k + 1:]


def _layernorm(ins, a) -> Type:
    x = ins[0]
    for w in ins[1:]:  # an affine weight or bias broadcasts against the normalised value
        if _broadcast((x, w)) != x.shape:
            raise SignatureError(f"layernorm weight/bias of shape {w.shape} for input {x.shape}")
    return x.dtype, x.shape


def _einsum(ins, a: EinsumAttrs) -> Type:
    terms, out = a.terms
    if len(terms) != len(ins):
        raise SignatureError(f"equation {a.equation!r} names {len(terms)} operands, {len(ins)} given")
    sizes: dict[str, int] = {}
    for term, n in zip(terms, ins):
        if len(term) != len(n.shape):
            raise SignatureError(f"operand {term!r} of {a.equation!r} has shape {n.shape}")
        for letter, size in zip(term, n.shape):
            if sizes.setdefault(letter, size) != size:
                raise SignatureError(f"index {letter!r} of {a.equation!r} has sizes {sizes[letter]} and {size}")
    if any(c not in sizes for c in out):
        raise SignatureError(f"an output index of {a.equation!r} appears in no operand")
    return promote(*(n.dtype for n in ins)), tuple(sizes[c] for c in out)


def _reshape(ins, a: ShapeAttrs) -> Type:
    if int(np.prod(ins[0].shape)) != int(np.prod(a.shape)):
        raise SignatureError(f"reshape {ins[0].shape} -> {a.shape} changes the size")
    return ins[0].dtype, a.shape


def _broadcast_to(ins, a: ShapeAttrs) -> Type:
    try:
        ok = tuple(np.broadcast_shapes(ins[0].shape, a.shape)) == a.shape
    except ValueError:
        ok = False
    if not ok:
        raise SignatureError(f"cannot broadcast {ins[0].shape} to {a.shape}")
    return ins[0].dtype, a.shape


def _transpose(ins, a: TransposeAttrs) -> Type:
    x = ins[0]
    if sorted(a.perm) != list(range(len(x.shape))):
        raise SignatureError(f"{a.perm} is not a permutation of {len(x.shape)} axes")
    return x.dtype, tuple(x.shape[p] for p in a.perm)


def _concat(ins, a: AxisAttrs) -> Type:
    rank = len(ins[0].shape)
    k = _axis(a.axis, rank)
    for n in ins[1:]:
        if len(n.shape) != rank or any(s != t for i, (s, t) in enumerate(zip(n.shape, ins[0].shape)) if i != k):
            raise SignatureError(f"concat of {ins[0].shape} and {n.shape} along axis {k}")
    shape = list(ins[0].shape)
    shape[k] = sum(n.shape[k] for n in ins)
    return promote(*(n.dtype for n in ins)), tuple(shape)


def _slice(ins, a: SliceAttrs) -> Type:
    x = ins[0]
    if not len(a.starts) == len(a.stops) == len(a.steps) == len(x.shape):
        raise SignatureError(f"a slice of a rank-{len(x.shape)} value needs one bound per axis")
    return x.dtype, tuple(len(range(*slice(s, e, k).indices(n))) for s, e, k, n in zip(a.starts, a.stops, a.steps, x.shape))


def _index_dtype(n) -> None:
    if n.dtype not in (DType.i32, DType.i64):
        raise SignatureError(f"indices must be integers, got {n.dtype.value}")


def _gather(ins, a: AxisAttrs) -> Type:
    x, idx = ins
    _index_dtype(idx)
    k = _axis(a.axis, len(x.shape))
    return x.dtype, x.shape[:k] + idx.shape + x.shape[k + 1:]


def _scatter_add(ins, a: AxisAttrs) -> Type:
    base, idx, vals = ins
    _index_dtype(idx)
    if len(idx.shape) != 1:  # what the language's scatter_add() accepts and every backend implements
        raise SignatureError(f"scatter_add indices must be 1-D, got shape {idx.shape}")
    k = _axis(a.axis, len(base.shape))
    if vals.shape != base.shape[:k] + idx.shape + base.shape[k + 1:]:
        raise SignatureError(f"scatter_add values {vals.shape} for base {base.shape} and indices {idx.shape}")
    return base.dtype, base.shape


def _propagate(ins, a: PropagateAttrs) -> Type:
    if len(ins) != 4 + a.accumulate:
        raise SignatureError(f"propagate{' accumulate' * a.accumulate} takes {4 + a.accumulate} inputs, got {len(ins)}")
    spikes, indptr, indices, weights = ins[:4]
    _index_dtype(indptr), _index_dtype(indices)
    if len(spikes.shape) != 1 or indptr.shape != (spikes.shape[0] + 1,):
        raise SignatureError(f"propagate: spikes {spikes.shape} need indptr of shape [{spikes.shape[0] + 1}]")
    if weights.shape not in ((), indices.shape):
        raise SignatureError(f"propagate: weights {weights.shape} for {indices.shape} synapses")
    if a.accumulate and (ins[4].shape != (a.n_post,) or promote(ins[4].dtype, weights.dtype) != weights.dtype):
        raise SignatureError(f"propagate: accumulator {ins[4].dtype.value}{list(ins[4].shape)} for "
                             f"{weights.dtype.value}[{a.n_post}]")
    return weights.dtype, (a.n_post,)


def _draw(ins, a: DrawAttrs) -> Type:
    for what, t in zip(("counter", "seed"), ins):
        if t.dtype is not DType.i64 or t.shape != ():
            raise SignatureError(f"a draw's {what} must be an i64 scalar, got {t.dtype.value}{list(t.shape)}")
    if not 0 <= a.stream < a.streams <= 2 ** 32:
        raise SignatureError(f"a draw's stream {a.stream} must be one of its program's {a.streams} (at most 2^32)")
    return DType.f32, a.shape


CHECK_KINDS = ("index", "divisor")
STATUS_SHAPE = (3,)  # a check status: (site, step, value); site 0 while every check has held


def _check(ins, a: CheckAttrs) -> Type:
    status, x = ins
    if status.dtype is not DType.i64 or status.shape != STATUS_SHAPE:
        raise SignatureError(f"check's status must be i64{list(STATUS_SHAPE)}, got {status.dtype.value}{list(status.shape)}")
    _index_dtype(x)
    if a.kind not in CHECK_KINDS or a.site < 1 or (a.kind == "index" and a.size < 1):
        raise SignatureError(f"check: site {a.site} of kind {a.kind!r} (size {a.size})")
    return DType.i64, STATUS_SHAPE


def _item(ins, a: ItemAttrs) -> Type:
    loop = ins[0]
    if not isinstance(loop.attrs, (LoopAttrs, IntegrateAttrs)):
        raise SignatureError("ITEM reads a LOOP or an INTEGRATE")
    try:
        types = loop.attrs.item_types()
    except KeyError as exc:
        raise SignatureError(exc.args[0]) from None
    if not 0 <= a.index < len(types):
        raise SignatureError(f"ITEM {a.index} of {loop.op.value.upper()} with {len(types)} values")
    return types[a.index]


def _integrate(ins, a: IntegrateAttrs) -> Type:
    inputs = (*a.names, *a.reads, *a.probes)
    if len(ins) != len(inputs) + bool(a.held):
        raise SignatureError(f"integrate takes {len(inputs) + bool(a.held)} inputs, got {len(ins)}")
    args = {n.attrs.name: n for n in a.rhs.nodes if n.op is Op.ARG}
    folded = dict(a.folded)
    for name, n in zip(inputs, ins):
        arg = args.get(name)
        if arg is not None and (arg.dtype, arg.shape) != (n.dtype, n.shape):
            raise SignatureError(f"integrate: {name!r} is {n.dtype.value}{list(n.shape)}, the right-hand side "
                                 f"reads {arg.dtype.value}{list(arg.shape)}")
    for name in a.names:
        if name not in args or args[name].attrs.role is not Role.state:
            raise SignatureError(f"integrate: the right-hand side does not read state {name!r}")
        if (name not in folded) == (a.rhs.result(name, ResultKind.deriv) is None):
            raise SignatureError(f"integrate: state {name!r} needs exactly one derivative (a deriv result or folded)")
    if a.held and (ins[-1].dtype is not DType.bool or set(a.held) - set(a.names)):
        raise SignatureError("integrate: the hold mask must be bool and hold integrated states")
    return DType.f32, ()  # its values are read with ITEM


@dataclass(frozen=True, slots=True)
class Signature:
    """An op's arity (``None``: any number), attribute record and type rule."""

    arity: tuple[int, int | None]
    attrs: type[Attrs]
    infer: Callable[[Sequence, Attrs], Type]


def _sig(lo: int, hi: int | None, attrs: type[Attrs], infer) -> Signature:
    return Signature((lo, hi), attrs, infer)


_BINARY = _sig(2, 2, NoAttrs, _arith)
_LOGIC = _sig(2, 2, NoAttrs, _compare)
_UNARY = _sig(1, 1, NoAttrs, _same)

SIGNATURES: dict[Op, Signature] = {
    Op.CONST: _sig(0, 0, ConstAttrs, lambda ins, a: (DType.of(a.value.dtype), a.value.shape)),
    Op.ARG: _sig(0, 0, ArgAttrs, lambda ins, a: (a.dtype, a.shape)),
    **{op: _BINARY for op in ARITHMETIC},
    **{op: _UNARY for op in MATH},
    **{op: _LOGIC for op in COMPARISONS},
    Op.NOT: _sig(1, 1, NoAttrs, lambda ins, a: (DType.bool, ins[0].shape)),
    Op.WHERE: _sig(3, 3, NoAttrs, _where),
    Op.CAST: _sig(1, 1, CastAttrs, lambda ins, a: (a.dtype, ins[0].shape)),
    Op.SPIKE: _sig(1, 1, SpikeAttrs, _same),
    **{op: _sig(1, 1, ReduceAttrs, _reduce) for op in (Op.SUM, Op.MEAN, Op.MAX, Op.MIN)},
    Op.ARGMAX: _sig(1, 1, AxisAttrs, lambda ins, a: _drop_axis(ins, a, DType.i64)),
    Op.SOFTMAX: _sig(1, 1, AxisAttrs, _same),
    Op.LOGSUMEXP: _sig(1, 1, AxisAttrs, _drop_axis),
    Op.LAYERNORM: _sig(1, 3, LayerNormAttrs, _layernorm),
    Op.EINSUM: _sig(1, None, EinsumAttrs, _einsum),
    Op.RESHAPE: _sig(1, 1, ShapeAttrs, _reshape),
    Op.TRANSPOSE: _sig(1, 1, TransposeAttrs, _transpose),
    Op.BROADCAST: _sig(1, 1, ShapeAttrs, _broadcast_to),
    Op.CONCAT: _sig(1, None, AxisAttrs, _concat),
    Op.SLICE: _sig(1, 1, SliceAttrs, _slice),
    Op.GATHER: _sig(2, 2, AxisAttrs, _gather),
    Op.SCATTER_ADD: _sig(3, 3, AxisAttrs, _scatter_add),
    Op.PROPAGATE: _sig(4, 5, PropagateAttrs, _propagate),
    Op.LOOP: _sig(0, None, LoopAttrs, lambda ins, a: (DType.f32, ())),  # its values are read with ITEM
    Op.ITEM: _sig(1, 1, ItemAttrs, _item),
    Op.INTEGRATE: _sig(1, None, IntegrateAttrs, _integrate),
    Op.RANDOM: _sig(2, 2, RandomAttrs, lambda ins, a: (a.dtype, a.shape)),
    Op.UNIFORM: _sig(2, 2, DrawAttrs, _draw),
    Op.NORMAL: _sig(2, 2, DrawAttrs, _draw),
    Op.CHECK: _sig(2, 2, CheckAttrs, _check),
}

# Records whose fields the node's own type supplies when a builder gives only its type.
_FROM_NODE: dict[type[Attrs], Callable[[DType, tuple[int, ...]], dict]] = {
    ShapeAttrs: lambda dtype, shape: {"shape": shape},
    CastAttrs: lambda dtype, shape: {"dtype": dtype},
    ArgAttrs: lambda dtype, shape: {"dtype": dtype, "shape": shape},
    RandomAttrs: lambda dtype, shape: {"dtype": dtype, "shape": shape},
    DrawAttrs: lambda dtype, shape: {"shape": shape},
}


def make_attrs(op: Op, attrs, dtype: DType | None = None, shape: tuple[int, ...] | None = None) -> Attrs:
    """``op``'s attribute record from a record or (name, value) pairs; fields the record takes
    from the node's own type (a RESHAPE's shape, a CAST's dtype) come from ``dtype``/``shape``."""
    cls = SIGNATURES[op].attrs
    if isinstance(attrs, cls):
        return attrs
    if isinstance(attrs, Attrs):
        raise SignatureError(f"{op.value} takes {cls.__name__}, not {type(attrs).__name__}")
    values = dict(attrs)
    if cls in _FROM_NODE and dtype is not None:
        for k, v in _FROM_NODE[cls](dtype, tuple(shape)).items():
            values.setdefault(k, v)
    if cls is ArgAttrs and "role" in values:
        values["role"] = Role(values["role"])
    for k in ("axes", "perm", "starts", "stops", "steps", "shape", "carried", "invariant", "stacked", "surrogate_args",
              "names", "reads", "probes", "held"):
        if k in values and values[k] is not None:
            values[k] = tuple(values[k])
    try:
        return cls(**values)
    except TypeError as exc:
        raise SignatureError(f"{op.value}: {exc}") from None


def infer(op: Op, inputs: Sequence, attrs: Attrs) -> Type:
    """The (dtype, shape) of ``op`` applied to ``inputs`` (nodes) with ``attrs``; raises
    ``SignatureError`` on inputs or attributes the op cannot take."""
    sig = SIGNATURES[op]
    lo, hi = sig.arity
    if len(inputs) < lo or (hi is not None and len(inputs) > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
        raise SignatureError(f"{op.value} takes {want} inputs, got {len(inputs)}")
    dtype, shape = sig.infer(tuple(inputs), attrs)
    return dtype, tuple(int(s) for s in shape)


__all__ = ["Role", "ResultKind", "Merge", "Attrs", "NoAttrs", "ConstAttrs", "ArgAttrs", "CastAttrs", "SpikeAttrs",
           "ReduceAttrs", "AxisAttrs", "LayerNormAttrs", "EinsumAttrs", "ShapeAttrs", "TransposeAttrs", "SliceAttrs",
           "PropagateAttrs", "LoopAttrs", "Folded", "IntegrateAttrs", "ItemAttrs", "RandomAttrs", "DrawAttrs", "CheckAttrs", "Signature",
           "IRError", "SignatureError", "SIGNATURES", "make_attrs", "infer", "promote", "CONTINUOUS", "DRAWS", "STEP_DRAWS",
           "CHECK_KINDS", "STATUS_SHAPE"]
