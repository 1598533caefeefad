"""Every spec in specs/ runs on every backend and equals the reference interpreter.

This is the "every spec" check of the ONNX, TVM and PyTorch lowerings: each spec's run target is
compiled once and driven with seeded random inputs for its own ``simulate`` duration (30 steps when
it states none), capped at ``CAP`` steps so the suite stays fast.  The run is the one
``tests/snapshot_reference.py`` saves: every output, monitor and ``value`` result recorded every
step, and every final state (``final_state:<name>``).  Each is compared with the reference: spikes,
spike times and integers exactly, floats to a float32 tolerance.

A comparison of empty spike arrays proves nothing, so a separate test asserts that the compared run
is long enough for its events to happen: every spike monitor is non-empty and every population
fires, except the ones a spec makes silent on purpose (listed with the spec's reason).
"""

from pathlib import Path

import numpy as np
import pytest

from snapshot_reference import ROOT, duration_steps, load, run_spec, specs

SPECS = specs()
BACKENDS = ["onnxruntime", "torch", "tvm"]
# The latest first spike of any population in specs/ is at step 219 (lib_neurons' AdEx cell,
# lib_synapses' conductance synapses; measured with tests/snapshot_reference.py's runs): 500 steps
# leave more than twice that, and a longer compared run mostly costs torch's per-step loop time.
CAP = 500
# Brian2's networks (4000-5000 neurons, 10^5-10^6 synapses) take 25-40 ms a step on torch's per-step
# loop: 300 steps (30 ms) already hold hundreds to thousands of spikes from every population.
CAPS = {"brian2/coba.nspec": 300, "brian2/cobahh.nspec": 300, "brian2/brunel_2000.nspec": 300,
        "brian2/brunel_hakim_1999.nspec": 300}
# Seed models run at their conformance bundles' sizes: BDH's default (6 layers of 4 x 8192 neurons)
# takes 34 s for 30 steps on onnxruntime (the reference run included) and adds no op the tiny
# configuration lacks.
BDH_TINY = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, vocab_size=16)
# The pointer network unrolls n encoder and n decoder steps: 3 steps of 4 units hold every op of the
# default (5 steps of 16) at a fraction of TVM's compile time.
HYPER = {"seeds/bdh.nspec": BDH_TINY, "seeds/bdh_parallel.nspec": BDH_TINY,
         "seeds/pointer_net.nspec": dict(hidden_size=4, n=3),
         # the default (16 neurons, 32 tokens, d_model 32) compiles in 34 s on TVM; the ops are the same
         "seeds/neuroformer.nspec": dict(n_neurons=7, n_bins=3, seq_len=6, d_model=8, d_mlp=12, d_stim_hidden=5,
                                         d_embed=4)}
# Populations that stay silent by design: their zero spike counts are the specs' own expectations.
SILENT = {
    "examples/header_imports.nspec": {"R/spike"},  # 20 x 0.1 mV volleys stay far below threshold
    "examples/lib_neurons.nspec": {"Quiet/spike", "CondQuiet/spike"},  # below rheobase
    "examples/lib_synapses.nspec": {"CondWeak/spike", "CurWeak/spike", "JumpWeak/spike", "Inhibited/spike"},
}

# Hodgkin-Huxley's spike upstroke amplifies the last-bit differences of exp() between NumPy, ONNX
# Runtime, torch and TVM: the states of a neuron caught mid-spike differ by up to 1 %, not 1e-4 (spikes
# still compare exactly).
RTOL = {"brian2/cobahh.nspec": 2e-2}


def spec_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "specs"))


def cap(path: Path) -> int:
    return CAPS.get(spec_id(path), CAP)


@pytest.fixture(scope="module")
def references():
    """The reference run of each spec, computed once and shared by the three backends."""
    return {}


def reference_run(path: Path, references: dict):
    if path not in references:
        references[path] = run_spec(path, cap(path), **HYPER.get(spec_id(path), {}))
    return references[path]


def is_exact(key: str, want: np.ndarray) -> bool:
    """Spike trains, spike monitors' times and indices, and integer or boolean arrays compare exactly."""
    return key.endswith((".i", ".t", "/spike")) or np.asarray(want).dtype.kind in "biu"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", SPECS, ids=spec_id)
def test_backend_equals_reference(path, backend, references):
    expected = reference_run(path, references)
    if expected is None:
        return  # a library-style file with no run target: its systems run through the files that use them
    got = run_spec(path, cap(path), backend, **HYPER.get(spec_id(path), {}))
    assert set(got) == set(expected)
    for key, want in expected.items():
        have = np.asarray(got[key])
        assert have.shape == np.shape(want), key
        if is_exact(key, want):
            np.testing.assert_array_equal(have, want, err_msg=key)
        else:
            scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
            np.testing.assert_allclose(have, want, rtol=RTOL.get(spec_id(path), 1e-4), atol=1e-5 * scale, err_msg=key)


@pytest.mark.parametrize("path", SPECS, ids=spec_id)
def test_the_compared_run_is_long_enough_for_its_events(path, references):
    """Every spike monitor recorded spikes and every population fired (but the deliberately silent ones)."""
    out = reference_run(path, references)
    if out is None:
        return
    model = load(path, **HYPER.get(spec_id(path), {}))
    silent = SILENT.get(spec_id(path), set())
    for m in model.monitors:
        if m.kind == "spikes":
            assert np.size(out[f"{m.name}.i"]) > 0, f"spike monitor '{m.name}' is empty"
    for key in (k for k in out if k.endswith("/spike")):
        fired = int(np.count_nonzero(out[key]))
        if key in silent:
            assert fired == 0, f"{key} is meant to stay silent"
        else:
            assert fired > 0, f"{key} never fires in {duration_steps(model, cap(path))} steps"
