"""The multitasking Hebbian network (``specs/seeds/multitask_hebbian.nspec``; Agliari, Alessandrelli,
Barra, Ricci-Tersenghi 2023, arXiv 2308.04106, as reconstructed in SEED_MODELS.md section 7).

What is checked: the Hebbian couplings against a NumPy oracle of the storage formulas, and the
energy and magnetisation monitors of a run against them, on every backend; the Glauber update at a
large beta against the zero-noise sign update (the same draws, the same trajectory), on reference,
onnxruntime and torch; the energy as a Lyapunov function of zero-noise sequential dynamics
(exactly); single-pattern retrieval without dilution; and the paper's qualitative claim that
dilution makes the network retrieve several patterns at once, with the number retrieved growing
with d.  The last three run on the reference interpreter (N = 1000 networks for many steps); the
spec's default run equals the reference on the other backends in tests/test_backends_on_every_spec.py.

Magnetisations are read as |m_mu|: H is invariant under xi^mu -> -xi^mu for each mu separately, so
the sign with which pattern 2 or 3 is retrieved from a cue of pattern 1 is set by the random start
on pattern 1's zero sites.  A random state has |m_mu| ~ sqrt((1 - d) / N) <= 1 / sqrt(N): 0.058 at
N = 300, 0.032 at N = 1000.  The patterns and examples are drawn inside the spec (frozen parameters
`xi`, `chi`, keyed by the run's seed); the oracles read them back with ``Model.initial``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec

SPEC = Path(__file__).resolve().parent.parent / "specs" / "seeds" / "multitask_hebbian.nspec"
RETRIEVED = 0.1  # |m_mu| above this counts as retrieved: 3 x the random level 1/sqrt(1000)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def couplings(xi, chi, learning):
    """The oracle: the Hebbian counts Jh of SEED_MODELS.md section 7 (J = scale * Jh), zero diagonal."""
    eta = chi * xi[:, None, :]                             # eta^{mu,a} = chi^{mu,a} xi^mu
    if learning == "supervised":
        s = eta.sum(axis=1)                                # sum_a eta^{mu,a}
        Jh = np.einsum("ki,kj->ij", s, s)
    else:
        Jh = np.einsum("kai,kaj->ij", eta, eta)
    np.fill_diagonal(Jh, 0)
    return Jh


def final_m(model, steps, seed):
    return np.abs(model.run(steps=steps, seed=seed)["m"][-1])


@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch", "tvm"])
@pytest.mark.parametrize("learning", ["supervised", "unsupervised"])
def test_hebbian_couplings_equal_the_numpy_oracle(learning, backend):
    N, K, M, r = 40, 3, 5, 0.6
    model = nspec.load(SPEC, N=N, K=K, M=M, r=r, d=0.3, learning=learning, schedule="synchronous")
    params, state = model.initial(1, 4)
    xi, chi = params["net/xi"].astype(np.float64), params["net/chi"].astype(np.float64)
    assert set(np.unique(xi)) == {-1.0, 0.0, 1.0} and set(np.unique(chi)) == {-1.0, 1.0}
    Jh = couplings(xi, chi, learning)
    np.testing.assert_array_equal(state["net/Jh"][0], Jh)
    # the energy output is -1/2 sigma^T J sigma with J = Jh / (N M^2 r^2) or Jh / (N M r^2)
    out = model.run(steps=3, seed=4, backend=backend)
    scale = 1 / (N * M * M * r * r) if learning == "supervised" else 1 / (N * M * r * r)
    s = out["sigma"].astype(np.float64)
    np.testing.assert_allclose(out["energy"], -0.5 * scale * np.einsum("ti,ij,tj->t", s, Jh, s), rtol=1e-6)
    np.testing.assert_allclose(out["m"], s @ xi.T / N, atol=1e-6)


# Not TVM: three models per schedule are three compiles (11 s of CPU cold for the two schedules); TVM's
# Glauber draws are held to the reference's by tests/test_backends_on_every_spec.py (the spec's
# default: Glauber, sequential, random order), and its couplings and monitors by the test above.
@pytest.mark.parametrize("backend", ["reference", "onnxruntime", "torch"])
@pytest.mark.parametrize("schedule", ["synchronous", "sequential"])
def test_glauber_at_large_beta_is_the_sign_update(schedule, backend):
    # beta scale |h| >= 1e6 / (N M^2 r^2) = 1.4e2 for every nonzero integer field: tanh = +-1 exactly,
    # and at h = 0 both draw the same fair coin u < 1/2
    kw = dict(N=60, d=0.4, schedule=schedule, start="random")
    glauber = nspec.load(SPEC, dynamics="glauber", beta=1e6, **kw).run(steps=6, seed=2, backend=backend)
    sign = nspec.load(SPEC, dynamics="zero_noise", **kw).run(steps=6, seed=2, backend=backend)
    np.testing.assert_array_equal(glauber["sigma"], sign["sigma"])
    assert len({tuple(s) for s in sign["sigma"]}) > 1, "the dynamics moved"
    # a moderate beta draws other states
    warm = nspec.load(SPEC, dynamics="glauber", beta=2.0, **kw).run(steps=6, seed=2, backend=backend)
    assert not np.array_equal(warm["sigma"], sign["sigma"])


@pytest.mark.parametrize("order", ["fixed", "random"])
def test_energy_never_increases_under_zero_noise_sequential_updates(order):
    model = nspec.load(SPEC, N=200, d=0.5, dynamics="zero_noise", schedule="sequential", order=order,
                       start="random")
    for seed in (0, 1):
        energy = model.run(steps=5, seed=seed)["energy"]
        assert np.all(np.diff(energy) <= 0), energy           # exact: no tolerance
        assert energy[-1] < energy[0]


def test_without_dilution_a_noisy_cue_of_pattern_1_is_retrieved():
    # the spec's defaults: Glauber at beta = 20, sequential in a random order, 20 % of the cue flipped
    m = final_m(nspec.load(SPEC, N=300, d=0.0), steps=4, seed=3)
    assert m[0] > 0.9, m
    assert np.all(m[1:] < 0.2), m                              # random: ~ 1/sqrt(300) = 0.058


@pytest.mark.parametrize("start", ["pattern", "random"])
def test_strong_dilution_retrieves_every_pattern_in_parallel(start):
    # d = 0.6, K = 3: the hierarchical picture predicts |m| = (1 - d) d^k = 0.40, 0.24, 0.144
    model = nspec.load(SPEC, N=1000, d=0.6, dynamics="zero_noise", schedule="synchronous", start=start)
    for seed in range(3):
        m = final_m(model, steps=10, seed=seed)
        assert np.all(m > RETRIEVED), m
        assert m[0 if start == "pattern" else np.argmax(m)] < 0.5, m   # no single pattern takes all


def test_the_number_of_retrieved_patterns_grows_with_dilution():
    counts, means = [], {}
    for d in (0.0, 0.2, 0.4, 0.6, 0.8):
        model = nspec.load(SPEC, N=1000, d=d, dynamics="zero_noise", schedule="synchronous")
        ms = np.array([np.sort(final_m(model, 10, seed))[::-1] for seed in range(4)])
        counts.append(float(np.mean(np.sum(ms > RETRIEVED, axis=1))))
        means[d] = ms.mean(axis=0)
    assert counts[0] == 1 and counts[-1] == 3, counts
    assert all(b >= a for a, b in zip(counts, counts[1:])), counts
    # the cascade m_k = (1 - d) d^k of the hierarchical regime (pattern 1 on its support, pattern 2 on
    # pattern 1's zeros, ...), within 0.07
    for d in (0.2, 0.6):
        np.testing.assert_allclose(means[d], [(1 - d) * d**k for k in range(3)], atol=0.07)
