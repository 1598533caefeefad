"""The shared batching rules (``compiler/batching.py``), tested directly.

Each helper is checked against what it promises: applying a per-sample op to every sample of a
batch and stacking the results equals applying the batched form (with NumPy as the witness).
"""

from __future__ import annotations

import numpy as np
import pytest

from nspec.compiler import batching as bt
from nspec.compiler.ir import DType, GraphBuilder, IRError, Op

f32 = DType.f32
B = 3


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def per_sample(fn, xs, flags):
    """fn applied to each sample of the batched operands (unbatched ones shared), stacked."""
    return np.stack([fn(*(x[b] if f else x for x, f in zip(xs, flags))) for b in range(B)])


# ---------------------------------------------------------------- einsum
@pytest.mark.parametrize("equation, flags, expected", [
    ("ij,jk->ik", (True, False), "aij,jk->aik"),
    ("ij,jk->ik", (False, True), "ij,ajk->aik"),
    ("ij,jk->ik", (True, True), "aij,ajk->aik"),
    ("ij,jk->ik", (False, False), "ij,jk->ik"),
    ("i j , j k -> i k", (False, False), "ij,jk->ik"),        # spaces dropped
    ("ab,bc->ac", (True, False), "dab,bc->dac"),             # the first letter the equation leaves free
    ("abcdefghijklmnopqrstuvwxyz->a", (True,), "Aabcdefghijklmnopqrstuvwxyz->Aa"),
])
def test_batched_equation(equation, flags, expected):
    assert bt.batched_equation(equation, flags) == expected


def test_batched_equation_out_flag_is_explicit_when_given():
    # An unbatched result never gets the letter, even with batched operands (a sum over the batch).
    assert bt.batched_equation("i,i->", (True, False), out=False) == "ai,i->"
    assert bt.batch_letter("abc,cd->ad") == "e"


@pytest.mark.parametrize("equation, shapes, flags", [
    ("ij,jk->ik", ((2, 4), (4, 5)), (True, False)),
    ("ij,jk->ik", ((2, 4), (4, 5)), (False, True)),
    ("ij,jk->ik", ((2, 4), (4, 5)), (True, True)),
    ("td,hdn->htn", ((6, 3), (2, 3, 4)), (True, False)),
    ("i,i->", ((5,), (5,)), (True, True)),
])
def test_batched_equation_computes_each_sample(equation, shapes, flags):
    xs = [rand(*((B,) if f else ()) + s, seed=k) for k, (s, f) in enumerate(zip(shapes, flags))]
    got = np.einsum(bt.batched_equation(equation, flags), *xs)
    np.testing.assert_allclose(got, per_sample(lambda *a: np.einsum(equation, *a), xs, flags), rtol=1e-12)


# ---------------------------------------------------------------- axes
@pytest.mark.parametrize("axis, rank, batched, expected", [
    (0, 3, False, 0), (0, 3, True, 1), (-1, 3, False, 2), (-1, 3, True, 3), (-3, 3, True, 1),
    (0, 0, False, 0), (0, 0, True, 1), (-1, 0, True, 1),    # a scalar's only "axis"
])
def test_stored_axis(axis, rank, batched, expected):
    assert bt.stored_axis(axis, rank, batched) == expected


def test_stored_axes_reduce_each_sample():
    x = rand(B, 2, 3, 4)
    got = np.sum(x, axis=bt.stored_axes((0, -1), 3, True))
    np.testing.assert_allclose(got, per_sample(lambda s: np.sum(s, axis=(0, -1)), [x], [True]))
    assert bt.stored_axes((0, -1), 3, False) == (0, 2)


@pytest.mark.parametrize("perm", [(1, 0), (2, 0, 1), (0, 1, 2)])
def test_batched_perm_keeps_the_batch_axis_first(perm):
    x = rand(B, *range(2, 2 + len(perm)))
    got = np.transpose(x, bt.batched_perm(perm, True))
    np.testing.assert_array_equal(got, per_sample(lambda s: np.transpose(s, perm), [x], [True]))
    assert bt.batched_perm(perm, False) == perm


def test_sliced():
    x = rand(B, 5, 6)
    index = bt.sliced((1, 5), (4, 0), (2, -2), True)
    np.testing.assert_array_equal(x[index], per_sample(lambda s: s[1:4:2, 5:0:-2], [x], [True]))
    assert bt.sliced((1,), (4,), (1,), False) == (slice(1, 4, 1),)


def test_stored_shape():
    assert bt.stored_shape((4, 5), (B, 20), True) == (B, 4, 5)
    assert bt.stored_shape((4, 5), (20,), False) == (4, 5)


# ---------------------------------------------------------------- broadcasting
@pytest.mark.parametrize("sample_rank, batched, rank, expected", [
    (1, True, 3, (1, 2)),     # [B, n] against rank 3: [B, 1, 1, n]
    (2, True, 3, (1,)),
    (3, True, 3, ()),
    (1, False, 3, ()),        # an unbatched value aligns from the right already
    (0, True, 2, (1, 2)),     # a per-sample scalar [B]
])
def test_lifted_axes(sample_rank, batched, rank, expected):
    assert bt.lifted_axes(sample_rank, batched, rank) == expected


def test_aligned_shape_pairs_per_sample_axes():
    a, b = rand(B, 4), rand(B, 2, 3, 4, seed=1)     # per sample: [4] + [2, 3, 4]
    assert bt.aligned_shape(a.shape, True, 3) == (B, 1, 1, 4)
    assert bt.aligned_shape((4,), False, 3) == (4,)
    got = a.reshape(bt.aligned_shape(a.shape, True, 3)) + b
    np.testing.assert_allclose(got, per_sample(np.add, [a, b], [True, True]))
    c = rand(B, 5)                                # per sample [5] against [5, 1]: a [5, 5] result
    d = rand(B, 5, 1, seed=2)
    got = c.reshape(bt.aligned_shape(c.shape, True, 2)) * d
    np.testing.assert_allclose(got, per_sample(np.multiply, [c, d], [True, True]))


def test_batch_size():
    assert bt.batch_size([np.zeros(4), np.zeros((7, 4))], [False, True]) == 7


# ---------------------------------------------------------------- loops
def counting_loop(count=5, until="stop"):
    """x <- x + 1, y = x, stop when x + 1 >= thr (an invariant)."""
    body = GraphBuilder()
    x, thr = body.arg("x", "state", f32, ()), body.arg("thr", "input", f32, ())
    nxt = body.add(Op.ADD, (x, body.const(1.0)), f32, ())
    body.result("x", "next", nxt)
    body.result("y", "output", x)
    body.result("stop", "value", body.add(Op.GE, (nxt, thr), DType.bool, ()))
    g = GraphBuilder()
    attrs = (("body", body.build()), ("count", count), ("carried", ("x",)), ("invariant", ("thr",)),
             ("stacked", ("y",)), ("until", until))
    loop = g.add(Op.LOOP, (g.arg("x0", "state", f32, ()), g.arg("t", "param", f32, ())), f32, (), attrs)
    return g.build().nodes[loop]


def test_loop_spec_decodes_the_body_nodes():
    node = counting_loop()
    spec = bt.LoopSpec.of(node)
    body = spec.attrs.body
    assert spec.attrs.count == 5 and spec.attrs.carried == ("x",)
    assert spec.next_nodes == (body.result("x", "next").node,)
    assert spec.out_nodes == (body.result("y", "output").node,)
    assert spec.until_node == body.result("stop", "value").node
    assert set(spec.roots) == {spec.next_nodes[0], spec.out_nodes[0], spec.until_node}
    # In a batched loop carried values are batched; an unbatched invariant stays unbatched.
    assert spec.unbatched([True, False], True) == {"thr"}
    assert spec.unbatched([True, True], True) == frozenset()
    assert spec.unbatched([False, False], False) == {"thr", "x"}


def test_loop_spec_names_a_missing_result():
    with pytest.raises(IRError, match="no value result 'nope'"):
        bt.LoopSpec.of(counting_loop(until="nope"))


NUMPY = bt.Until(lambda done, old, new: np.where(done, old, new), np.logical_or, lambda d: bool(np.all(d)))


def test_until_step_freezes_done_samples():
    done = np.array([True, False])
    carried, nexts = [np.array([1.0, 2.0])], [np.array([10.0, 20.0])]
    lasts, outs = [np.array([5.0, 6.0])], [np.array([50.0, 60.0])]
    done, nexts, outs = bt.until_step(NUMPY, done, carried, nexts, lasts, outs, np.array([False, True]))
    np.testing.assert_array_equal(done, [True, True])
    np.testing.assert_array_equal(nexts[0], [1.0, 20.0])
    np.testing.assert_array_equal(outs[0], [5.0, 60.0])
    # Before the first iteration nothing is done: the condition becomes `done` as it is.
    done, nexts, outs = bt.until_step(NUMPY, None, carried, [np.array([3.0, 4.0])], (), [np.ones(2)],
                                      np.array([True, False]))
    np.testing.assert_array_equal(done, [True, False])
    np.testing.assert_array_equal(nexts[0], [3.0, 4.0])


def test_iterate_stops_when_every_sample_is_done_and_pads_the_frames():
    thr = np.array([2.0, 4.0])
    calls = []

    def body(carry):
        (x,) = carry
        calls.append(x.copy())
        return [x + 1], [x], x + 1 >= thr

    carry, frames = bt.iterate(6, [np.zeros(2)], body, NUMPY)
    assert len(calls) == 4                              # the second sample is done after 4 iterations
    np.testing.assert_array_equal(carry[0], [2.0, 4.0])  # each sample stopped at its threshold
    assert len(frames) == 6                             # padded to `count` with the last frame
    np.testing.assert_array_equal(np.stack([f[0] for f in frames]),
                                  [[0, 0], [1, 1], [1, 2], [1, 3], [1, 3], [1, 3]])


def test_iterate_without_until_runs_count_times():
    carry, frames = bt.iterate(3, [0], lambda c: ([c[0] + 2], [c[0]], None), None)
    assert carry == [6] and frames == [[0], [2], [4]]
    assert bt.iterate(0, [7], lambda c: ([c[0] + 1], [c[0]], None), None) == ([7], [])
