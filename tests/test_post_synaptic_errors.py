"""A mistake in what a synapse reads from or adds to its neurons (the STDP example's post-synaptic ``ge``, the
``post.v`` a rule reads, the spikes an event waits for) is one located error, the same from ``nspec check``
(``check_files``) and from ``nspec run`` (``nspec.load``).

Each case edits ``specs/examples/plasticity_stdp.nspec`` (its library synapse STDP adds ``w * gmax`` to the
post neuron's ``ge`` on each presynaptic spike) or a copy with a local synapse.  Before the fixes, some
crashed ``check`` only (a post population lost to an error: a KeyError when flattening), some both (an
IRError for an i64 or a vector ``ge``, a bool ``post.v``, a population without spikes), and a vector ``ge``
of as many values as neurons ran, adding synapse j's conductance to element j of every neuron.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nspec
from nspec.compiler.driver import check_files
from nspec.dsl import NspecError

EXAMPLE = Path(__file__).resolve().parent.parent / "specs" / "examples" / "plasticity_stdp.nspec"
LIBRARY = "synapses.nspec"
# The STDP example with the library's synapse written out, so that a case can change the rule itself.
LOCAL_STDP = """
synapse Local(taupre = 20 ms, taupost = 20 ms, wmax = 1.0, Apre = 0.01, Apost = -0.0105, gmax = 1 nS) {
  state w: f32 = uniform(0, 1) * wmax
  state apre: f32 = 0
  state apost: f32 = 0
  dapre/dt = -apre / taupre
  dapost/dt = -apost / taupost
  method exact
  on_pre  { ge += w * gmax;  apre += Apre;  w = clip(w + apost, 0, wmax) }
  on_post { apost += Apost * READ;  w = clip(w + apre, 0, wmax) }
}
"""

# (edits of the example: (old, new) pairs; the file the error is in; its line; a fragment of its message)
CASES = {
    # check crashed (KeyError 'PostAfter': the population lost to its bool '+'); run reported the bool '+'
    "ge-bool": ([("state ge: nS = 0 nS", "state ge: bool = false")], LIBRARY, 46,
                "'ge' of PostAfter is bool: a synapse adds one float per neuron"),
    # both: an IRError (an i64 state plus the f32 increment)
    "ge-i64": ([("state ge: nS = 0 nS", "state ge: i64 nS = 0 nS")], LIBRARY, 46, "'ge' of PostAfter is i64"),
    # both: an IRError, shapes (3, 2) and (3,) do not broadcast
    "ge-vector": ([("state ge: nS = 0 nS", "state ge: f32[2] nS = 0 nS"), ("(phase = 0.25)[1]", "(phase = 0.25)[3]")],
                  LIBRARY, 46, "'ge' of PostAfter is f32[2]: a synapse adds one float per neuron"),
    # it ran: [3, 3] + [3] broadcast along the wrong axis
    "ge-vector-as-long-as-the-population": (
        [("state ge: nS = 0 nS", "state ge: f32[3] nS = 0 nS"), ("(phase = 0.25)[1]", "(phase = 0.25)[3]")],
        LIBRARY, 46, "'ge' of PostAfter is f32[3]"),
    "ge-in-mV": ([("state ge: nS = 0 nS", "state ge: mV = 0 mV")], LIBRARY, 46,
                 "unit mismatch: 'ge' of PostAfter is V, the increment is S"),
    "ge-dimensionless": ([("state ge: nS = 0 nS", "state ge: f32 = 0")], LIBRARY, 46,
                         "unit mismatch: 'ge' of PostAfter is dimensionless, the increment is S"),
    "ge-missing": ([("  state ge: nS = 0 nS\n", "")], LIBRARY, 46,
                   "on_pre/on_post target 'ge' is neither a variable of this synapse nor a state of the post "
                   "population 'PostAfter' (Pacemaker)"),
    "ge-initial-value-in-mV": ([("state ge: nS = 0 nS", "state ge: nS = 0 mV")], EXAMPLE.name, 12,
                               "unit mismatch: state 'ge' is S, its initial value is V"),
    # both: an IRError, flatten found no port Pre.spike
    "no-spikes": ([("  spike when v >= 1\n  reset { v = 0 }\n", "")], LIBRARY, 46,
                  "on_pre needs the spikes of the presynaptic population 'Pre', but neuron Pacemaker has no "
                  "'spike when' condition"),
    "wmax-with-a-unit": ([("STDP(wmax = 1.0) { connect all_to_all }\n  projection ltd",
                           "STDP(wmax = 1.0 mV) { connect all_to_all }\n  projection ltd")], EXAMPLE.name, 23,
                         "template argument 'wmax' of STDP is in V, but its default (line 39) is in dimensionless"),
    "gmax-in-mV": ([("STDP(wmax = 1.0) { connect all_to_all }\n  projection ltd",
                     "STDP(wmax = 1.0, gmax = 1 mV) { connect all_to_all }\n  projection ltd")], EXAMPLE.name, 23,
                   "template argument 'gmax' of STDP is in V, but its default (1 nS) is in S"),
    # both: an IRError (the bool state read as f32)
    "post-read-of-a-bool": ([("READ", "post.v"), ("state v: f32 = phase", "state v: bool = false"),
                             ("dv/dt = 1 / period", "next v = not v"), ("spike when v >= 1", "spike when v"),
                             ("reset { v = 0 }", "reset { v = false }")], EXAMPLE.name, 16,
                            "cannot multiply a bool value"),
    "post-read-of-a-vector": ([("READ", "post.x"), ("state ge: nS = 0 nS", "state ge: nS = 0 nS\n  state x: f32[2] = 0")],
                              EXAMPLE.name, 16, "'post.x' reads one value per neuron, but 'x' of neuron Pacemaker is "
                                                "f32[2] per neuron"),
    "post-trace-in-nS": ([("READ", "post.ge")], EXAMPLE.name, 16,
                         "unit mismatch: cannot add dimensionless (left side) and S (right side)"),
}
LOCAL = {"post-read-of-a-bool", "post-read-of-a-vector", "post-trace-in-nS"}


def _variant(tmp_path: Path, name: str) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    if name in LOCAL:
        text = text.replace("from \"std/synapses.nspec\" import STDP\n", LOCAL_STDP).replace("via STDP(", "via Local(")
    for old, new in CASES[name][0]:
        assert old in text, (name, old)
        text = text.replace(old, new)
    path = tmp_path / EXAMPLE.name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_and_run_give_the_same_located_error(tmp_path, name):
    _, where, line, fragment = CASES[name]
    path = _variant(tmp_path, name)
    diags, _ = check_files([path])
    errors = [d for d in diags if d.severity == "error"]
    assert errors and fragment in errors[0].message, [d.message for d in errors]
    assert (Path(errors[0].span.path).name, errors[0].span.line) == (where, line), errors[0]
    with pytest.raises(NspecError) as raised:
        nspec.load(path)
    first = raised.value.diagnostics[0]
    assert (first.span, first.message) == (errors[0].span, errors[0].message)


def test_an_increment_names_where_the_post_state_is_declared(tmp_path):
    diags, sources = check_files([_variant(tmp_path, "ge-in-mV")])
    text = diags[0].render(sources)
    assert re.search(rf"note: 'ge' is declared at .*{EXAMPLE.name}:12:3 \(neuron Pacemaker\)", text), text


def test_a_mistake_in_a_template_used_twice_is_reported_once_by_run(tmp_path):
    """Pacemaker is instantiated with three phases: its mistake was reported three times by ``run``."""
    with pytest.raises(NspecError) as raised:
        nspec.load(_variant(tmp_path, "ge-initial-value-in-mV"))
    assert len(raised.value.diagnostics) == 1, raised.value.diagnostics


def test_rate_neurons_have_no_spikes_for_events(tmp_path):
    path = tmp_path / "rates.nspec"
    path.write_text("""
neuron R {
  state r: f32 = 1
  state g: f32 = 0
  dr/dt = -r / (10 ms)
}
network Net {
  population A: R[3]
  population B: R[2]
  projection p: A -> B { connect all_to_all; on_pre { g += 1.0 } }
  projection q: A -> B { connect all_to_all; state w: f32 = 0; on_post { w += 1.0 } }
  projection s: A -> B { connect all_to_all; state w: f32 = 0; next w = w + float(pre) }
}
""")
    diags, _ = check_files([path])
    assert [(d.span.line, d.message.split(",")[0]) for d in diags] == [
        (10, "on_pre needs the spikes of the presynaptic population 'A'"),
        (11, "on_post needs the spikes of the postsynaptic population 'B'"),
        (12, "'pre' needs the spikes of the presynaptic population 'A'")]
    with pytest.raises(NspecError):
        nspec.load(path)
