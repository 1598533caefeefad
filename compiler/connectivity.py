"""Connection rules: ``connectivity(b, rule, n_pre, n_post, rng, span, name) -> (indptr, indices)``,
the CSR table of a projection's synapses (post indices sorted within each pre row), built at compile
time from the rule (all_to_all, one_to_one, p = ..., fixed_in_degree/out_degree k, indices(...),
where <condition>) with the compile-time seed's generator.  A rule whose expected synapse count is
over the memory limit is refused before any synapse is drawn (``limits.check_synapses``).
"""

from __future__ import annotations

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .expressions import ExprBuilder, static
from .ir import DType, GraphBuilder
from .limits import check_synapses


def connectivity(b: ExprBuilder, rule: A.Connect | None, n_pre: int, n_post: int, rng: np.random.Generator,
                 span: Span, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr over pre, post indices sorted within each row) for a connection rule."""
    if rule is None:
        b.fail(span, "a projection needs a 'connect' rule (all_to_all, one_to_one, p = ..., fixed_in_degree k, ...)")
    if rule.rule in ("all_to_all", "one_to_one", "where"):
        _check_synapses(b, rule, name, n_pre, n_post)
    if rule.rule == "all_to_all":
        return _csr_from_pairs(np.repeat(np.arange(n_pre), n_post), np.tile(np.arange(n_post), n_pre), n_pre)
    if rule.rule == "one_to_one":
        if n_pre != n_post:
            b.fail(rule.span, f"one_to_one needs equal sizes, got {n_pre} -> {n_post}")
        return _csr_from_pairs(np.arange(n_pre), np.arange(n_post), n_pre)
    if rule.rule == "prob":
        v = b.static_value(rule.args[0], "a connection probability")
        p = float(v.static)
        if not v.dim.dimensionless or not 0.0 <= p <= 1.0:
            b.fail(rule.args[0].span, f"a connection probability must be a number in [0, 1], got {v.static!r}")
        _check_synapses(b, rule, name, n_pre, n_post, p)
        return _csr_from_pairs(*_bernoulli_pairs(rng, n_pre, n_post, p), n_pre)
    if rule.rule in ("in_degree", "out_degree"):
        k = b.static_int(rule.args[0], "a degree")
        limit = n_pre if rule.rule == "in_degree" else n_post
        if not 0 < k <= limit:
            b.fail(rule.args[0].span, f"degree {k} must be in 1..{limit}")
        _check_synapses(b, rule, name, n_pre, n_post, k)
        if rule.rule == "in_degree":
            pre = np.concatenate([rng.choice(n_pre, k, replace=False) for _ in range(n_post)])
            post = np.repeat(np.arange(n_post), k)
        else:
            post = np.concatenate([rng.choice(n_post, k, replace=False) for _ in range(n_pre)])
            pre = np.repeat(np.arange(n_pre), k)
        return _csr_from_pairs(pre, post, n_pre)
    if rule.rule == "indices":
        if len(rule.args) != 2:
            b.fail(rule.span, f"indices(pre, post) takes two lists, got {len(rule.args)} arguments")
        pre = _indices(b, rule.args[0], "pre", n_pre)
        post = _indices(b, rule.args[1], "post", n_post)
        if pre.shape != post.shape:
            b.fail(rule.span, f"indices(pre, post) need equal lengths, got {pre.size} and {post.size}")
        return _csr_from_pairs(pre, post, n_pre)
    # where <condition over i (pre) and j (post)>
    grid = {"i": static(np.arange(n_pre)[:, None]), "j": static(np.arange(n_post)[None, :])}
    wb = ExprBuilder(GraphBuilder(), b.diags, lambda n, s: grid.get(n) or b.lookup(n, s))
    v = wb.expr(rule.args[0])
    if not v.is_static or v.dtype is not DType.bool:
        b.fail(rule.args[0].span, "a 'where' connection rule must be a bool expression of i (pre) and j (post)")
    mask = np.broadcast_to(np.asarray(v.static, dtype=bool), (n_pre, n_post))
    r, c = np.nonzero(mask)
    return _csr_from_pairs(r, c, n_pre)


def _indices(b: ExprBuilder, e: A.Expr, side: str, size: int) -> np.ndarray:
    """The ``side`` list of ``indices(pre, post)`` as int64: whole numbers in 0..size-1 (checked before the cast,
    which would wrap 1e308 or truncate 1.5)."""
    values = np.asarray(b.static_value(e, f"{side} indices").static).reshape(-1)
    if values.dtype.kind not in "iuf":
        b.fail(e.span, f"indices(pre, post): the {side} indices must be a list of integers")
    bad = ~((values >= 0) & (values < size) & (values == np.floor(values)))  # nan and inf too
    if bad.any():
        b.fail(e.span, f"indices(pre, post): {values[bad][0]:g} is not an index of the {side}synaptic population "
                       f"(size {size}: 0 to {size - 1})")
    return values.astype(np.int64)


def _check_synapses(b: ExprBuilder, rule: A.Connect, name: str, n_pre: int, n_post: int, arg=None) -> None:
    """Refuse a rule whose expected synapse count exceeds the memory limit, before generating any."""
    too_big = check_synapses(name, rule.rule, n_pre, n_post, arg)
    if too_big is not None:
        b.fail(rule.span, too_big)


# Up to this many (pre, post) pairs, `p = ...` draws one uniform number per pair (the draws every spec
# in specs/ was written against); above it, a count per row and that many distinct targets, the same
# distribution in O(synapses) instead of O(pairs): CUBA at 1M neurons has 1e12 pairs, 8e7 synapses.
DENSE_PAIRS = 100_000_000


def _bernoulli_pairs(rng: np.random.Generator, n_pre: int, n_post: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (pre, post) pair independently with probability p, as (pre, post) index arrays."""
    if n_pre * n_post <= DENSE_PAIRS:
        rows, cols = [], []
        chunk = max(1, 2_000_000 // max(n_post, 1))
        for start in range(0, n_pre, chunk):
            r, c = np.nonzero(rng.random((min(chunk, n_pre - start), n_post)) < p)
            rows.append(r + start)
            cols.append(c)
        return np.concatenate(rows), np.concatenate(cols)
    # Row i has Binomial(n_post, p) synapses on a uniform subset of that size: drawn with replacement,
    # then each repeated target drawn again until a row has no repeats (sequential rejection, which
    # leaves every subset equally likely).
    rows = np.repeat(np.arange(n_pre), rng.binomial(n_post, p, size=n_pre))
    cols = rng.integers(0, n_post, size=rows.size)
    while True:
        key = rows * np.int64(n_post) + cols
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(key.size, dtype=bool)
        repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not repeated.any():
            return rows, cols
        cols[repeated] = rng.integers(0, n_post, size=int(repeated.sum()))


def _csr_from_pairs(pre: np.ndarray, post: np.ndarray, n_pre: int) -> tuple[np.ndarray, np.ndarray]:
    # one stable sort of a combined key: lexsort's order, 10x faster on tens of millions of pairs
    order = np.argsort(pre.astype(np.int64) * (int(post.max(initial=0)) + 1) + post, kind="stable")
    pre, post = pre[order], post[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pre, minlength=n_pre))]).astype(np.int64)
    return indptr, post.astype(np.int64)


__all__ = ["connectivity"]
