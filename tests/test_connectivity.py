"""`connect p = ...`: every (pre, post) pair independently with probability p, by either sampler.

Up to ``DENSE_PAIRS`` pairs the compiler draws one uniform number per pair (the draws the specs'
recorded spikes depend on); above it, a binomial count per row and that many distinct targets.
Both must give the same distribution; the large path must also be fast enough for 1M neurons.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nspec.compiler import connectivity as C


@pytest.mark.parametrize("dense", [True, False])
def test_each_pair_is_drawn_independently_with_probability_p(monkeypatch, dense):
    monkeypatch.setattr(C, "DENSE_PAIRS", 10**9 if dense else 0)
    rng = np.random.default_rng(5)
    n_pre, n_post, p, trials = 12, 20, 0.3, 3000
    hits = np.zeros((n_pre, n_post))
    row_sizes = []
    for _ in range(trials):
        pre, post = C._bernoulli_pairs(rng, n_pre, n_post, p)
        key = pre * n_post + post
        assert len(np.unique(key)) == len(key)  # no pair twice
        np.add.at(hits, (pre, post), 1)
        row_sizes.append(np.bincount(pre, minlength=n_pre))
    # every pair's frequency within 5 standard errors of p (a per-pair bias of 0.03 would fail)
    se = np.sqrt(p * (1 - p) / trials)
    assert np.abs(hits / trials - p).max() < 5 * se
    # a row's size is Binomial(n_post, p): chi-square against its probabilities
    sizes = np.concatenate(row_sizes)
    observed = np.bincount(sizes, minlength=n_post + 1)
    expected = stats.binom.pmf(np.arange(n_post + 1), n_post, p) * sizes.size
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


def test_the_dense_sampler_keeps_the_draws_specs_were_written_against():
    """Below the threshold the draws are the per-pair uniform numbers, in row-major order."""
    pre, post = C._bernoulli_pairs(np.random.default_rng(3), 40, 50, 0.1)
    want = np.nonzero(np.random.default_rng(3).random((40, 50)) < 0.1)
    np.testing.assert_array_equal(pre, want[0])
    np.testing.assert_array_equal(post, want[1])


def test_a_million_neurons_at_in_degree_80_is_drawn_in_seconds():
    """1e12 pairs, 8e7 synapses: the per-pair sampler could not; a CSR row is sorted and distinct."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    pre, post = C._bernoulli_pairs(rng, n // 50, n, 80 / n)  # a fiftieth of the rows keeps the test light
    indptr, indices = C._csr_from_pairs(pre, post, n // 50)
    assert abs(indices.size / (n // 50) - 80) < 0.5
    row = indices[indptr[7]:indptr[8]]
    assert np.all(np.diff(row) > 0)


def test_csr_rows_are_sorted_like_lexsort():
    rng = np.random.default_rng(1)
    pre, post = rng.integers(0, 30, 500), rng.integers(0, 40, 500)
    indptr, indices = C._csr_from_pairs(pre, post, 30)
    order = np.lexsort((post, pre))
    np.testing.assert_array_equal(indices, post[order])
    np.testing.assert_array_equal(np.diff(indptr), np.bincount(pre, minlength=30))
