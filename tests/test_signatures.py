"""Every op's signature against the oracle: build each op with random valid inputs, let the graph
builder infer its type from ``compiler/ops.py``, run the reference interpreter and compare the
value it actually computes (dtype and shape), per sample and with a batch axis.

The inputs that are data (``Role.input`` ARGs) carry the batch axis in the batched run; index
arrays and connectivity are constants, as the compiler builds them.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nspec.compiler.interpret import RULES, evaluate
from nspec.compiler.ir import DType, GraphBuilder, IRError, Op
from nspec.compiler.ops import ARITHMETIC, COMPARISONS, CONTINUOUS, MATH, REDUCTIONS

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FLOATS = (DType.f32, DType.f64)
NUMBERS = (DType.f32, DType.f64, DType.i32, DType.i64)
BATCH = 3

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


def values(rng, dtype: DType, shape, positive=False):
    if dtype is DType.bool:
        return rng.random(shape) < 0.5
    if dtype in (DType.i32, DType.i64):
        return rng.integers(1 if positive else -5, 6, shape).astype(dtype.numpy)
    x = rng.normal(size=shape)
    return (np.abs(x) + 0.1 if positive else x).astype(dtype.numpy)


def broadcastable(draw, shape):
    """A shape that broadcasts against ``shape``: a suffix of it with some axes set to 1."""
    k = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else s for s in shape[len(shape) - k:])


class Case:
    """Inputs (data ARGs or constants) and attributes of one node, and how to build it."""

    def __init__(self, rng):
        self.rng = rng
        self.g = GraphBuilder()
        self.data: dict[str, np.ndarray] = {}

    def arg(self, value: np.ndarray) -> int:
        name = f"x{len(self.data)}"
        self.data[name] = value
        return self.g.arg(name, "input", DType.of(value.dtype), value.shape)

    def const(self, value) -> int:
        value = np.asarray(value)
        return self.g.const(value, DType.of(value.dtype))

    def node(self, op, inputs, attrs=()) -> int:
        node = self.g.add(op, inputs, attrs=attrs)  # no declared type: the signature infers it
        self.g.result("y", "output", node)
        return node


def build(op: Op, draw, rng) -> Case:
    c = Case(rng)
    if op is Op.CONST:
        c.node(Op.CONST, (), (("value", values(rng, draw(st.sampled_from(NUMBERS)), draw(shapes))),))
    elif op is Op.ARG:
        c.g.result("y", "output", c.arg(values(rng, draw(st.sampled_from(NUMBERS)), draw(shapes))))
    elif op in ARITHMETIC:
        shape = draw(shapes)
        kinds = FLOATS if op in (Op.POW, Op.DIV, Op.MOD) else NUMBERS
        a, b = (draw(st.sampled_from(kinds)) for _ in range(2))
        positive = op in (Op.POW, Op.MOD, Op.DIV)
        c.node(op, (c.arg(values(rng, a, shape, positive)), c.arg(values(rng, b, broadcastable(draw, shape), positive))))
    elif op in COMPARISONS:
        shape = draw(shapes)
        kinds = (DType.bool,) if op in (Op.AND, Op.OR) else NUMBERS
        a, b = (draw(st.sampled_from(kinds)) for _ in range(2))
        c.node(op, (c.arg(values(rng, a, shape)), c.arg(values(rng, b, broadcastable(draw, shape)))))
    elif op in MATH:
        positive = op in (Op.LOG, Op.SQRT)
        c.node(op, (c.arg(values(rng, draw(st.sampled_from(FLOATS)), draw(shapes), positive)),))
    elif op is Op.NOT:
        c.node(op, (c.arg(values(rng, DType.bool, draw(shapes))),))
    elif op is Op.WHERE:
        shape = draw(shapes)
        cond = c.arg(values(rng, DType.bool, broadcastable(draw, shape)))
        a, b = (draw(st.sampled_from(NUMBERS)) for _ in range(2))
        c.node(op, (cond, c.arg(values(rng, a, shape)), c.arg(values(rng, b, broadcastable(draw, shape)))))
    elif op is Op.CAST:
        x = c.arg(values(rng, draw(st.sampled_from(NUMBERS)), draw(shapes)))
        c.node(op, (x,), (("dtype", draw(st.sampled_from(NUMBERS + (DType.bool,)))),))
    elif op is Op.SPIKE:
        c.node(op, (c.arg(values(rng, DType.f32, draw(shapes))),),
               (("surrogate", "fast_sigmoid"), ("surrogate_args", (25.0,))))
    elif op in REDUCTIONS:
        shape = draw(shapes.filter(len))
        axes = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
        c.node(op, (c.arg(values(rng, draw(st.sampled_from(FLOATS)), shape)),),
               (("axes", axes), ("keepdims", draw(st.booleans()))))
    elif op in (Op.ARGMAX, Op.SOFTMAX, Op.LOGSUMEXP):
        shape = draw(shapes.filter(len))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        c.node(op, (c.arg(values(rng, draw(st.sampled_from(FLOATS)), shape)),), (("axis", axis),))
    elif op is Op.LAYERNORM:
        shape = draw(shapes.filter(len))
        dtype = draw(st.sampled_from(FLOATS))
        affine = [c.arg(values(rng, dtype, shape[-1:])) for _ in range(draw(st.integers(0, 2)))]
        c.node(op, (c.arg(values(rng, dtype, shape)), *affine), (("eps", 1e-5),))
    elif op is Op.EINSUM:
        letters = string.ascii_lowercase[:5]
        size = {ch: draw(st.integers(1, 3)) for ch in letters}
        terms = [draw(st.lists(st.sampled_from(letters), min_size=0, max_size=3, unique=True))
                 for _ in range(draw(st.integers(1, 3)))]
        used = sorted(set().union(*terms))
        out = draw(st.permutations(used)).copy()[:draw(st.integers(0, len(used)))]
        equation = ",".join("".join(t) for t in terms) + "->" + "".join(out)
        ins = [c.arg(values(rng, draw(st.sampled_from(FLOATS)), tuple(size[ch] for ch in t))) for t in terms]
        c.node(op, ins, (("equation", equation),))
    elif op is Op.RESHAPE:
        shape = draw(shapes)
        target = (int(np.prod(shape)),) if draw(st.booleans()) else tuple(reversed(shape)) + (1,)
        c.node(op, (c.arg(values(rng, DType.f32, shape)),), (("shape", target),))
    elif op is Op.TRANSPOSE:
        shape = draw(shapes)
        perm = tuple(draw(st.permutations(range(len(shape)))))
        c.node(op, (c.arg(values(rng, DType.f32, shape)),), (("perm", perm),))
    elif op is Op.BROADCAST:
        target = draw(shapes)
        source = broadcastable(draw, target)
        c.node(op, (c.arg(values(rng, draw(st.sampled_from(NUMBERS)), source)),), (("shape", target),))
    elif op is Op.CONCAT:
        shape = draw(shapes.filter(len))
        axis = draw(st.integers(0, len(shape) - 1))
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            part = list(shape)
            part[axis] = draw(st.integers(1, 3))
            parts.append(c.arg(values(rng, draw(st.sampled_from(FLOATS)), tuple(part))))
        c.node(op, parts, (("axis", axis),))
    elif op is Op.SLICE:
        shape = draw(shapes)
        starts = tuple(draw(st.integers(0, n)) for n in shape)
        stops = tuple(draw(st.integers(s, n)) for s, n in zip(starts, shape))
        steps = tuple(draw(st.integers(1, 2)) for _ in shape)
        c.node(op, (c.arg(values(rng, DType.f32, shape)),), (("starts", starts), ("stops", stops), ("steps", steps)))
    elif op in (Op.GATHER, Op.SCATTER_ADD):
        shape = draw(shapes.filter(len))
        axis = draw(st.integers(0, len(shape) - 1))
        # gather takes indices of any rank; scatter_add 1-D ones (its signature refuses others)
        idx_shape = draw(st.lists(st.integers(1, 3), min_size=op is Op.SCATTER_ADD,
                                  max_size=2 if op is Op.GATHER else 1).map(tuple))
        idx = c.const(rng.integers(0, shape[axis], idx_shape).astype(draw(st.sampled_from((np.int32, np.int64)))))
        x = c.arg(values(rng, DType.f32, shape))
        if op is Op.GATHER:
            c.node(op, (x, idx), (("axis", axis),))
        else:
            vals = c.arg(values(rng, DType.f32, shape[:axis] + idx_shape + shape[axis + 1:]))
            c.node(op, (x, idx, vals), (("axis", axis),))
    elif op is Op.PROPAGATE:
        n_pre, n_post = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        mask = rng.random((n_pre, n_post)) < 0.5
        indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
        indices = np.nonzero(mask)[1].astype(np.int64)
        spikes = c.arg((rng.random(n_pre) < 0.5).astype(np.float32))
        weights = c.arg(values(rng, DType.f32, indices.shape if draw(st.booleans()) else ()))
        ins = [spikes, c.const(indptr), c.const(indices), weights]
        accumulate = draw(st.booleans())
        if accumulate:
            ins.append(c.arg(values(rng, DType.f32, (n_post,))))
        c.node(op, ins, (("n_post", n_post), ("accumulate", accumulate)))
    elif op in (Op.LOOP, Op.ITEM):
        shape = draw(shapes)
        body = GraphBuilder()
        x = body.arg("x", "state", DType.f32, shape)
        u = body.arg("u", "input", DType.f32, shape)
        nxt = body.add(Op.ADD, (x, u))
        body.result("x", "next", nxt)
        body.result("y", "output", body.add(Op.MUL, (nxt, nxt)))
        count = draw(st.integers(1, 4))
        loop = c.g.add(Op.LOOP, (c.arg(values(rng, DType.f32, shape)), c.arg(values(rng, DType.f32, shape))),
                       attrs=(("body", body.build()), ("count", count), ("carried", ("x",)), ("invariant", ("u",)),
                              ("stacked", ("y",)), ("until", None)))
        c.node(Op.ITEM, (loop,), (("index", draw(st.integers(0, 1))),))
    elif op is Op.RANDOM:
        dist = draw(st.sampled_from(("uniform", "normal")))
        c.node(op, (c.const(np.float32(0)), c.const(np.float32(1))),
               (("dist", dist), ("dtype", DType.f32), ("shape", draw(shapes))))
    elif op in (Op.UNIFORM, Op.NORMAL):
        c.node(op, (c.arg(values(rng, DType.i64, ())), c.arg(values(rng, DType.i64, ()))),
               (("stream", draw(st.integers(0, 9))), ("streams", 10), ("shape", draw(shapes))))
    elif op is Op.CHECK:
        kind = draw(st.sampled_from(("index", "divisor")))
        status = c.arg(np.array([0, draw(st.integers(0, 9)), 0], np.int64))
        x = c.arg(rng.integers(-4, 4, draw(shapes)).astype(draw(st.sampled_from((np.int32, np.int64)))))
        c.node(op, (status, x), (("site", draw(st.integers(1, 9))), ("kind", kind), ("size", draw(st.integers(1, 4)))))
    else:
        raise AssertionError(f"no case for {op}")
    return c


TESTED = [op for op in Op if op not in CONTINUOUS]


def test_scatter_add_refuses_indices_of_another_rank():
    g = GraphBuilder()
    base = g.arg("b", "input", DType.f32, (4,))
    idx = g.const(np.zeros((2, 2), np.int64), DType.i64)
    vals = g.arg("v", "input", DType.f32, (2, 2))
    with pytest.raises(IRError, match="scatter_add indices must be 1-D"):
        g.add(Op.SCATTER_ADD, (base, idx, vals), attrs=(("axis", 0),))


def test_every_op_but_the_continuous_ones_has_a_case_and_an_oracle_rule():
    # INTEGRATE never reaches a backend (discretize-odes replaces it): tests/test_discretize_odes.py
    assert set(TESTED) | CONTINUOUS == set(Op)
    assert set(TESTED) <= set(RULES)


@pytest.mark.parametrize("op", TESTED, ids=lambda o: o.value)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_inferred_type_is_the_type_the_oracle_computes(op, data, seed):
    case = build(op, data.draw, np.random.default_rng(seed))
    graph = case.g.build()
    node = graph.nodes[graph.results[0].node]
    rng = np.random.default_rng(0)
    out = evaluate(graph, case.data, rng=rng)[("y", "output")]
    assert (np.asarray(out).dtype, np.shape(out)) == (node.dtype.numpy, node.shape), graph.nodes
    batched = {k: np.stack([v] * BATCH) for k, v in case.data.items()}
    out = evaluate(graph, batched, batch=BATCH, rng=rng)[("y", "output")]
    per_sample = np.shape(out)[1:] if case.data else np.shape(out)  # a graph of constants has no batch axis
    assert (np.asarray(out).dtype, per_sample) == (node.dtype.numpy, node.shape), graph.nodes
