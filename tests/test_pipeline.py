"""The pipeline is one ordered list of named passes; `--emit after=PASS` and `--emit passes` show it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nspec.compiler.driver import compile_file, emit
from nspec.compiler.ir import Program, print_program, verify_program
from nspec.compiler.pipeline import PIPELINE, pass_names, run_pipeline

SPECS = Path(__file__).resolve().parent.parent / "specs"
# a network (flattened), a nested composite, a ticking system and a seed model
SAMPLES = ["cuba.nspec", "nested.nspec", "examples/ticks.nspec", "ctm_tick.nspec"]


def test_pipeline_order_required_passes_first():
    assert PIPELINE[0].name == "flatten-systems"
    required = [p.required for p in PIPELINE]
    assert required == sorted(required, reverse=True), "an optimisation runs before a required pass"
    assert len(set(pass_names())) == len(PIPELINE)
    assert {"fold-constants", "eliminate-dead-code"} <= set(pass_names())


@pytest.mark.parametrize("spec", SAMPLES)
def test_after_every_pass_is_a_verified_program(spec):
    texts = {}
    for name in pass_names():
        program = compile_file(SPECS / spec, until=name)
        assert isinstance(program, Program)
        verify_program(program)
        texts[name] = print_program(program)
    last_required = [p.name for p in PIPELINE if p.required][-1]
    assert emit(SPECS / spec, "ir") == texts[last_required]
    assert emit(SPECS / spec, "ir-opt") == texts[pass_names()[-1]]
    assert emit(SPECS / spec, f"after={last_required}") == texts[last_required]


def test_optimisations_change_something():
    # fold-constants and eliminate-dead-code are not no-ops on CUBA: the listing must show their effect
    before = compile_file(SPECS / "cuba.nspec", optimize=False)
    after = compile_file(SPECS / "cuba.nspec")
    assert len(after.step.nodes) < len(before.step.nodes)


def test_run_pipeline_refuses_an_unknown_pass():
    program = compile_file(SPECS / "cuba.nspec", optimize=False)
    with pytest.raises(ValueError, match="no pass named 'fold'"):
        run_pipeline(program, until="fold")
    assert print_program(run_pipeline(program)) == emit(SPECS / "cuba.nspec", "ir-opt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "nspec", *args], capture_output=True, text=True)


def test_cli_lists_passes_and_rejects_unknown_ones():
    listed = _cli("compile", "--emit", "passes")
    assert listed.returncode == 0, listed.stderr
    for name in pass_names():
        assert name in listed.stdout
    bad = _cli("compile", str(SPECS / "cuba.nspec"), "--emit", "after=fold")
    assert bad.returncode == 1
    assert "no pass named 'fold'" in bad.stderr and "fold-constants" in bad.stderr
    good = _cli("compile", str(SPECS / "cuba.nspec"), "--emit", "after=fold-constants")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == print_program(compile_file(SPECS / "cuba.nspec", until="fold-constants")).strip()
