"""Fuzzing the front end, the checker and the back ends: a mutant of any valid spec gets located diagnostics or
runs, never a crash.

Every spec under ``specs/`` except the error corpus (globbed when the tests are collected, so new specs join in)
is mutated — a token deleted, duplicated, swapped with its neighbour or replaced by another token of the same
file; the text cut short; random bytes inserted (non-UTF-8 and NUL included); thousands of nested brackets;
very long lines — and the mutant is checked in-process with ``check_files``, written next to a copy of its
original so relative imports still resolve.  Whatever the mutant, no exception may escape, and every
diagnostic must be located (line and column >= 1, in the mutant or in a file it imports) and render as
``path:line:col: error: message``.  A handful of mutants also go through the real ``nspec check``.

A mutant that checks clean (about one in eight token mutants) is compiled with ``nspec.load`` (its
diagnostics, if compiling finds more, must be located too) and runs ``RUN_STEPS`` steps on the
reference backend with seeded random inputs; a fixed sample of clean mutants also runs on the ONNX,
PyTorch and TVM backends and must equal the reference.  The BDH seeds compile with small
hyperparameters (``SMALL``) so that a mutant of them runs in a second.

In the suite the fuzzing is reproducible: Hypothesis runs derandomized and the backend sample uses a
fixed seed.  Run by hand (``python tests/test_fuzz.py``) it draws a fresh seed and prints it; set
``NSPEC_FUZZ_SEED`` to replay a run.  A failure prints the mutation that caused it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import nspec
from nspec.compiler.driver import check_files
from nspec.dsl import NspecError
from nspec.runtime.checks import RunCheckError
from nspec.runtime.model import LimitExceeded, NonFiniteError
from snapshot_reference import seeded_inputs

SPECS_ROOT = Path(__file__).resolve().parent.parent / "specs"
# specs/brian2's networks (10^5-10^6 synapses) take seconds to build per mutant: their syntax is the
# syntax of the examples, so the fuzz mutates the small specs and keeps the suite fast.
SPECS = sorted(p for p in SPECS_ROOT.rglob("*.nspec") if not {"errors", "brian2"} & set(p.relative_to(SPECS_ROOT).parts))
TEXTS = {p: p.read_text(encoding="utf-8") for p in SPECS}
# A tokenizer independent of the grammar: whitespace, comments, strings, numbers, names, operators.
TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|[A-Za-z_]\w*|->|[<>=!+\-*/]=|.',
                   re.S)
TOKEN_KINDS = ("delete", "duplicate", "swap", "substitute")
NUMBER = re.compile(r"\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+")
NESTINGS = (("(", ")"), ("[", "]"), ("f(", ")"), ("-(", ")"))
LONG_LINES = ("name", "number", "string", "comment", "sum", "repeat")
# Sizes and counts past every limit, for a number of a spec (``huge``): limits before allocation.
HUGE = ("1e9", "1000000000", "2^31", "2^62", "2^63", "2^64", "1e23", "1e308", "1e400", "100000 * 100000", "-1e9",
        "0.5e9")
# NSPEC_FUZZ_SEED unset (the suite): derandomized Hypothesis and a fixed backend sample.
FUZZ_SEED = os.environ.get("NSPEC_FUZZ_SEED")
FUZZ = settings(deadline=None, derandomize=FUZZ_SEED is None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RUN_STEPS = 3
BACKENDS = ("onnxruntime", "torch", "tvm")
BACKEND_SAMPLE = 6  # clean mutants run on every backend
# Hyperparameters that keep the big seeds small (6 layers of 8192 neurons per head take seconds a step).
BDH_SMALL = {"n_layer": 1, "n_embd": 32, "n_head": 2, "mlp_internal_dim_multiplier": 4}
SMALL = {SPECS_ROOT / "seeds" / "bdh.nspec": BDH_SMALL, SPECS_ROOT / "seeds" / "bdh_parallel.nspec": {**BDH_SMALL, "T": 8}}


@dataclass(frozen=True)
class Mutation:
    """One edit of a spec; positions are taken modulo the text's length, so any integers are valid."""

    spec: Path
    kind: str
    at: int
    other: int = 0
    payload: bytes = b""

    def apply(self) -> bytes:
        text = TEXTS[self.spec]
        if self.kind == "truncate":
            return text[: self.at % (len(text) + 1)].encode("utf-8")
        if self.kind == "insert_bytes":
            data = text.encode("utf-8")
            cut = self.at % (len(data) + 1)
            return data[:cut] + self.payload + data[cut:]
        tokens = TOKEN.findall(text)
        solid = [i for i, t in enumerate(tokens) if not t.isspace()]
        i = solid[self.at % len(solid)]
        if self.kind == "delete":
            tokens[i] = ""
        elif self.kind == "duplicate":
            tokens[i] = tokens[i] + " " + tokens[i]
        elif self.kind == "swap":
            j = solid[(solid.index(i) + 1) % len(solid)]
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif self.kind == "substitute":
            tokens[i] = tokens[solid[self.other % len(solid)]]
        elif self.kind == "nest":
            opener, closer = NESTINGS[self.payload[0] % len(NESTINGS)]
            balanced = self.payload[1] % 2 == 0
            tokens[i] = opener * self.other + tokens[i] + (closer * self.other if balanced else "")
        elif self.kind == "huge":  # the self.at-th number of the file (any token if it has none)
            numbers = [j for j in solid if NUMBER.fullmatch(tokens[j])] or solid
            tokens[numbers[self.at % len(numbers)]] = HUGE[self.other % len(HUGE)]
        elif self.kind == "long_line":
            tokens[i] = tokens[i] + _long(LONG_LINES[self.payload[0] % len(LONG_LINES)], text, self.other)
        else:
            raise ValueError(self.kind)
        return "".join(tokens).encode("utf-8")


def _long(kind: str, text: str, n: int) -> str:
    if kind == "name":
        return " x" + "y" * n
    if kind == "number":
        return " " + "9" * n
    if kind == "string":
        return ' "' + "s" * n + '"'
    if kind == "comment":
        return " #" + "c" * n
    if kind == "sum":
        return " + 1" * (n // 4)
    line = max(text.splitlines(), key=len)
    return "; ".join([line.strip()] * max(n // max(len(line), 1), 1))


specs = st.sampled_from(SPECS)
positions = st.integers(min_value=0, max_value=2**20)
token_mutations = st.builds(Mutation, specs, st.sampled_from(TOKEN_KINDS), positions, positions)
byte_mutations = st.one_of(
    st.builds(Mutation, specs, st.just("truncate"), positions),
    st.builds(Mutation, specs, st.just("insert_bytes"), positions,
              payload=st.one_of(st.binary(min_size=1, max_size=8),
                                st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\\", b'"', b"'",
                                                 b"{", b"}", b"(", b"\t", b"\x0c", "\u03c4".encode()]))))
huge_mutations = st.builds(Mutation, specs, st.just("huge"), positions, positions)
stress_mutations = st.one_of(
    st.builds(Mutation, specs, st.just("nest"), positions, st.sampled_from([100, 1000, 5000]),
              st.binary(min_size=2, max_size=2)),
    st.builds(Mutation, specs, st.just("long_line"), positions, st.sampled_from([1000, 20000, 100000]),
              st.binary(min_size=1, max_size=1)))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A copy of ``specs/`` (without the error corpus) to write mutants into, beside their originals."""
    project = tmp_path_factory.mktemp("fuzz")
    (project / "nspec.toml").write_text("")  # a project root, like the repository's: ../lib imports stay inside
    root = project / "specs"
    shutil.copytree(SPECS_ROOT, root, ignore=shutil.ignore_patterns("errors"))
    return root


def mutant_file(mirror: Path, mutation: Mutation, tag: str = "mutant") -> Path:
    rel = mutation.spec.relative_to(SPECS_ROOT)
    path = mirror / rel.parent / f"{rel.stem}.{tag}.nspec"
    path.write_bytes(mutation.apply())
    return path


def assert_located(path: Path) -> list:
    """``nspec check`` in-process: no exception escapes, and every diagnostic is located and renders.
    Returns the diagnostics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mutant may divide by zero in a constant; that is not the point here
        diags, sources = check_files([path])
    assert_diagnostics_located(diags, sources, path)
    return diags


def assert_diagnostics_located(diags, sources, path: Path) -> None:
    for d in diags:
        assert d.severity in ("error", "warning"), d
        assert d.span.line >= 1 and d.span.col >= 1, d
        where = Path(d.span.path)
        if d.span.path == "<nspec.load>":  # an override the mutant lost, located in the call that passed it
            text = sources.texts[d.span.path]
        else:
            assert where == path or (where.suffix == ".nspec" and where.is_file()), d
            text = where.read_bytes().decode("utf-8", errors="replace")
        assert d.span.line <= max(text.count("\n") + 1, 1), d
        head = d.render(sources).split("\n", 1)[0]
        assert head == f"{d.span.path}:{d.span.line}:{d.span.col}: {d.severity}: {d.message}", head
        assert d.message.strip(), d


def compile_clean(path: Path, mutation: Mutation) -> nspec.Model | None:
    """The clean mutant compiled, or None when compiling reports errors (located ones) or finds nothing to run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return nspec.load(path, **SMALL.get(mutation.spec, {}))
        except NspecError as exc:
            assert_diagnostics_located(exc.diagnostics, exc.sources, path)
            return None


def run_mutant(model: nspec.Model, backend: str = "reference") -> dict:
    """``RUN_STEPS`` steps on seeded random inputs, every value result recorded."""
    record = sorted(r.name for r in model.program.step.results if r.kind == "value")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mutant may overflow or divide by zero at run time
        return model.run(inputs=seeded_inputs(model, RUN_STEPS), steps=RUN_STEPS, record=record, batch=None,
                         backend=backend)


def check_and_run(path: Path, mutation: Mutation) -> bool:
    """Located diagnostics, or (checked clean) a compile and a short reference run; True when it ran."""
    if any(d.severity == "error" for d in assert_located(path)):
        return False
    model = compile_clean(path, mutation)
    if model is None:
        return False
    try:
        run_mutant(model)
    except (NonFiniteError, LimitExceeded) as exc:  # the run's own located errors (a huge value diverges)
        # located at a spec line: the mutant's, or an imported library file's (its neuron diverged)
        assert NonFiniteError is not type(exc) or re.search(r"\.nspec:\d+:\d+:", str(exc)), exc
        return False
    except RunCheckError as exc:  # a run-time index out of range (a huge bound of a draw that indexes)
        assert_diagnostics_located(exc.diagnostics, exc.sources, path)
        return False
    return True


def _run(strategy, mirror: Path, examples: int) -> tuple[int, int]:
    """Runs ``examples`` mutants; returns how many were tried and how many checked clean and ran."""
    count = ran = 0

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def check(mutation: Mutation) -> None:
        nonlocal count, ran
        count += 1
        ran += check_and_run(mutant_file(mirror, mutation), mutation)

    if FUZZ_SEED is not None:
        check = seed(int(FUZZ_SEED))(check)
    check()
    return count, ran


def test_specs_to_mutate_exist():
    assert len(SPECS) >= 1 and all(TEXTS.values())


def test_token_mutants(mirror):
    count, ran = _run(token_mutations, mirror, 1600)  # the suite's sample; bench/fuzz_specs.py runs 10^4 and more
    assert count >= 1600 and ran >= 100, (count, ran)  # about one in eight checks clean and runs


def test_byte_mutants(mirror):
    count, ran = _run(byte_mutations, mirror, 800)
    assert count >= 800 and ran >= 1, (count, ran)  # a cut at a statement's end, a blank inserted, ...


def test_huge_sizes_and_counts(mirror):
    """A number replaced by one past every limit (a population of 2^62, ticks 1e9, p = 1e23, ...): a located
    error or a run, never a crash, a MemoryError or a hang (the whole test takes seconds)."""
    count, ran = _run(huge_mutations, mirror, 150)
    assert count >= 150 and ran >= 10, (count, ran)


def test_deep_nesting_and_long_lines(mirror):
    assert _run(stress_mutations, mirror, 50)[0] >= 50


def test_cli_on_mutants(mirror):
    """The real command on a few mutants: exit code 0 or 1, never a traceback or an internal error."""
    rng = random.Random(20261128)
    kinds = TOKEN_KINDS + ("truncate", "insert_bytes")
    paths = []
    for n in range(12):
        mutation = Mutation(rng.choice(SPECS), kinds[n % len(kinds)], rng.randrange(2**20), rng.randrange(2**20),
                            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))))
        paths.append(str(mutant_file(mirror, mutation, f"cli{n}")))
    proc = subprocess.run([sys.executable, "-m", "nspec", "check", *paths],
                          capture_output=True, text=True, errors="replace", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), out[-3000:]
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]


# Mutants that once crashed the checker with an internal IRError, each with the diagnostic it now gets.
FOUND = [
    # a tick loop around a body with errors (fixed in compiler/bodies.py build_body)
    (Mutation(SPECS_ROOT / "examples" / "hopfield.nspec", "delete", 183), None),
    # rope(S, pos, freqs) with 8192 frequencies for a last axis of 256 (fixed in expressions.py _rope)
    (Mutation(SPECS_ROOT / "seeds" / "bdh.nspec", "substitute", 302, 18926), "rope() needs one frequency per element"),
    # a string hyperparameter as a reshape size (float('random-pairing'); fixed in expressions.py); re-aimed at the
    # same tokens after ctm.nspec's data-bound dimensions moved them
    (Mutation(SPECS_ROOT / "seeds" / "ctm.nspec", "substitute", 1111, 131), "size 'random-pairing' is not an integer"),
    # found by bench/fuzz_specs.py: a string as normal()'s argument (fixed in builtins_random.py)
    (Mutation(SPECS_ROOT / "seeds" / "bdh_parallel.nspec", "substitute", 349595, 438259),
     "the string '/lm_head' cannot be used as a number here"),
    # zeros([-2^63, ...]): numpy's 'negative dimensions' (fixed in expressions.py static_shape; the corpus keeps
    # zeros_negative_size.nspec): 2^63 no longer folds to -2^63, it is an integer overflow
    (Mutation(SPECS_ROOT / "seeds" / "elm.nspec", "huge", 657930, 167704), "integer overflow: 2 ^ 63 = 9223372036854775808 is outside the range of i64"),
    # param f32[2^62, 3] replicated twice: an IRError from broadcasting (fixed in declared_types.py: limits)
    (Mutation(SPECS_ROOT / "examples" / "private_weights.nspec", "huge", 900418, 494523),
     "a tensor of shape [4611686018427387904, 3]"),
    # uniform(-0.1, 1e308) and uniform(0, -2^63): numpy errors when drawing (fixed in builtins_random.py; the
    # corpus keeps uniform_reversed_bounds.nspec): 2^63 no longer folds to -2^63, it is an integer overflow
    (Mutation(SPECS_ROOT / "examples" / "params.nspec", "huge", 212112, 215503), "needs finite bounds with lo <= hi"),
    (Mutation(SPECS_ROOT / "examples" / "state.nspec", "huge", 936478, 690424), "integer overflow: 2 ^ 63 = 9223372036854775808 is outside the range of i64"),
    # 'spike when' commented out, 'record spikes of P' kept: the run found no P/spike (fixed in networks.py)
    (Mutation(SPECS_ROOT / "examples" / "poisson.nspec", "substitute", 484323, 220902),
     "cannot record spikes of 'P': neuron Poisson has no 'spike when' condition"),
    # dv/dt = (1.5 - 1) / tau, a constant right-hand side with method exact: an IRError (f32 broadcast declared
    # f64; fixed in body_odes.py constant_coefficients); it now checks clean and runs
    (Mutation(SPECS_ROOT / "examples" / "events.nspec", "substitute", 737778, 472927), "clean"),
    # found by bench/fuzz_specs.py --seed 7: mlp_linears = ... + 1e308, the bound of a for loop's range(): an
    # OverflowError from len(range(...)) (fixed in builtins_lists.py range_list: counted in Python ints)
    (Mutation(SPECS_ROOT / "seeds" / "elm_v2.nspec", "huge", 1041250, 168991),
     "range() would build a compile-time list of about 10^308 values"),
    # found by --seed 16 on the merged tree: a port of a huge shape; the memory limit's message divided the byte
    # count, an int past the float range (OverflowError in limits.size_text)
    (Mutation(SPECS_ROOT / "examples" / "hopfield.nspec", "huge", 218173, 308779), "TiB, over the memory limit"),
    # found by --seed 18 on the merged tree: one_hot() of a huge class count built its compile-time range first
    # (a ValueError from np.arange; fixed in builtins.py _one_hot)
    (Mutation(SPECS_ROOT / "examples" / "expressions.nspec", "huge", 575135, 685687), "one_hot() would build"),
    # 'simulate ..., method = exa' (the text cut): a KeyError in body_odes.integrate_group (fixed in elaborate.py)
    (Mutation(SPECS_ROOT / "cuba.nspec", "truncate", 427748),  # 427732 before we and wi were hyperparameters
     "unknown integration method 'exa'; use exact, exp_euler, euler, midpoint, heun, rk4, milstein, or a "
     "hyperparameter or template parameter that holds one of these names; did you mean 'exact'?"),
    # found by --seed 11: a backslash before 'nspec' in an import path, an escaped newline in the message: the
    # diagnostic rendered on two lines (fixed in dsl/diagnostics.py: a message is one line, breaks escaped)
    (Mutation(SPECS_ROOT / "lif_fi.nspec", "insert_bytes", 632702, 210020, b"\\"),
     'cannot import "std/neurons.\\nspec": only .nspec files can be imported'),
    # found by --seed 13: connect indices([0, 1, 2], [1e308, 2, 0]): an OverflowError casting to int64 (fixed in
    # connectivity.py: indices are whole numbers in range before the cast, which also truncated 1.5 to 1)
    (Mutation(SPECS_ROOT / "examples" / "connectivity.nspec", "huge", 1020349, 314779),
     "indices(pre, post): 1e+308 is not an index of the postsynaptic population (size 3: 0 to 2)"),
    # found on the code before the huge-integer checks by --seed 14 and 15: arange(1 + 1e308) (an OverflowError in
    # len(range)); hyper digits = 2^64, folded to 0 (an EvaluationError: softmax of an empty axis); seed = 2^63,
    # folded to -2^63 (NumPy refused the negative seed when the run started)
    (Mutation(SPECS_ROOT / "seeds" / "elm.nspec", "huge", 426672, 234919), "a compile-time list of about 10^308 values"),
    (Mutation(SPECS_ROOT / "workspace_chain.nspec", "huge", 566953, 18077),
     "integer overflow: 2 ^ 64 = 18446744073709551616 is outside the range of i64"),
    (Mutation(SPECS_ROOT / "cuba.nspec", "huge", 540588, 618160),
     "integer overflow: 2 ^ 63 = 9223372036854775808 is outside the range of i64"),]


def test_a_huge_dt_is_a_located_error_when_the_update_is_built(mirror):
    """Found by bench/fuzz_specs.py --seed 20: ``dt = 1e308 ms`` checks clean (check elaborates; dt enters at
    discretisation) and made compiling raise an internal IRError (exp_euler's dt/tau overflows f32); it is now
    the builder's located error, with the step that caused it (fixed in discretize.py)."""
    mutation = Mutation(SPECS_ROOT / "examples" / "populations.nspec", "huge", 54729, 643627)
    path = mutant_file(mirror, mutation, "found")
    assert "dt = 1e308 ms" in path.read_text()
    assert not check_and_run(path, mutation)
    with pytest.raises(NspecError) as exc:
        nspec.load(path)
    assert_diagnostics_located(exc.value.diagnostics, exc.value.sources, path)
    assert any("does not fit in f32" in d.message and any("dt = 1e+305 s" in n for n in d.notes)
               for d in exc.value.diagnostics), exc.value


def test_a_readout_of_a_neuron_with_errors_reports_the_neurons_errors(tmp_path):
    """Found by bench/fuzz_specs.py --seed 21 in std/nir.nspec ('param v_threshold: f32 f32 = 1' in IFCell, whose
    network reads its spikes through an out port): the neuron was built without its spike output and the
    readout's port lookup got None, an AttributeError (fixed in network_ports.py _readout_box).  Written out
    here: the library file has changed since, and a positional mutant would no longer hit the same place."""
    path = tmp_path / "broken_cell.nspec"
    path.write_text(
        "neuron Cell {\n"
        "  in I: f32 merge sum\n"
        "  param v_threshold: f32 f32 = 1\n"
        "  state v: f32 = 0\n"
        "  dv/dt = I / (1 ms)\n"
        "  spike when v > v_threshold\n"
        "  reset { v = 0 }\n"
        "}\n"
        "network Net {\n"
        "  in x: f32[3]\n"
        "  out y: f32[3]\n"
        "  population P: Cell[3]\n"
        "  wire x -> P.I\n"
        "  y = P.spike\n"
        "}\n")
    diags = assert_located(path)
    assert [d.message for d in diags] == ["unknown unit 'f32'", "unknown name 'v_threshold'"], diags


@pytest.mark.parametrize("mutation, message", FOUND, ids=["ticks-after-errors", "rope-freqs-size", "string-size",
                                                          "string-normal", "negative-zeros", "huge-param",
                                                          "uniform-inf", "uniform-reversed", "spikes-without-spike",
                                                          "constant-exact-ode", "huge-range", "huge-port-memory-text", "huge-one-hot",
                                                          "truncated-method",
                                                          "newline-in-a-message", "huge-connect-index",
                                                          "huge-arange", "hyper-2-to-the-64", "seed-2-to-the-63"])
def test_mutants_that_crashed_once_get_located_errors(mirror, mutation, message):
    path = mutant_file(mirror, mutation, "found")
    if message == "clean":
        assert check_and_run(path, mutation)
        return
    diags = assert_located(path)
    assert any(d.severity == "error" for d in diags)
    assert message is None or any(message in d.message for d in diags), [d.message for d in diags]


def test_clean_mutants_run_on_every_backend_like_the_reference(mirror):
    """A fixed sample of clean token mutants (drawn with the fuzz seed) on ONNX, PyTorch and TVM:
    outputs and recorded values equal the reference's (integers exactly, floats to float32 rounding)."""
    rng = random.Random(int(FUZZ_SEED or 20261203))
    sample = []
    while len(sample) < BACKEND_SAMPLE:
        mutation = Mutation(rng.choice(SPECS), rng.choice(TOKEN_KINDS), rng.randrange(2**20), rng.randrange(2**20))
        path = mutant_file(mirror, mutation, f"backend{len(sample)}")
        if not any(d.severity == "error" for d in assert_located(path)):
            model = compile_clean(path, mutation)
            if model is not None:
                sample.append((mutation, model))
    for mutation, model in sample:
        expected = run_mutant(model)
        for backend in BACKENDS:
            got = run_mutant(model, backend)
            assert set(got) == set(expected), (mutation, backend)
            for key, want in expected.items():
                if want.dtype.kind in "biu":
                    np.testing.assert_array_equal(got[key], want, err_msg=f"{mutation} {backend} {key}")
                else:
                    scale = max(1.0, float(np.max(np.abs(want), where=np.isfinite(want), initial=0.0)))
                    np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-5 * scale,
                                               err_msg=f"{mutation} {backend} {key}")


if __name__ == "__main__":
    os.environ.setdefault("NSPEC_FUZZ_SEED", str(random.SystemRandom().randrange(2**32)))
    print(f"fuzzing with NSPEC_FUZZ_SEED={os.environ['NSPEC_FUZZ_SEED']} (set it to replay this run)")
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
