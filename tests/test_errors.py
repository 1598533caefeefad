"""The error corpus: every ``specs/errors/*.nspec`` must fail ``nspec check`` the way its first line says.

Each file starts with ``# expect: LINE:COL: fragment``: the first diagnostic must be located at LINE:COL of that
file and its message must contain the fragment (``a ... b`` means the pieces appear in that order).  One file per
distinct mistake: ``parse_*`` are syntax errors, the others are errors the checker must find in a file that parses.

Where the caret goes (the convention the annotations follow): on the most specific node that is wrong — the
unknown name, the offending operand or argument, the size expression, the assignment target, the wire's port
reference, the value of a hyperparameter; on the statement's keyword when the whole statement is wrong (a
duplicate declaration, a second ``next`` of the same state, a never-assigned ``out`` port, ``refractory`` without
``spike``, a failed ``assert``); on the first wire of an instantaneous cycle, whose message lists the cycle port
by port starting from that wire's source.  A binary operation is located at its left operand (the AST's span).

``support/`` holds partner files (an import cycle, a library) and is not itself part of the corpus.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.compiler.driver import check_files

ERRORS = Path(__file__).resolve().parent.parent / "specs" / "errors"
CORPUS = sorted(ERRORS.glob("*.nspec"))
_ANNOTATION = re.compile(rb"# expect: (\d+):(\d+): (.+)")


@dataclass(frozen=True)
class Expectation:
    line: int
    col: int
    fragments: tuple[str, ...]


def expectation(path: Path) -> Expectation:
    """The ``# expect:`` annotation on the first line of a corpus file."""
    first = path.read_bytes().split(b"\n", 1)[0]
    match = _ANNOTATION.fullmatch(first.rstrip(b"\r"))
    assert match, f"{path.name}: the first line must be '# expect: LINE:COL: message fragment'"
    text = match.group(3).decode("utf-8").strip()
    return Expectation(int(match.group(1)), int(match.group(2)), tuple(text.split(" ... ")))


def contains_in_order(message: str, fragments: tuple[str, ...]) -> bool:
    pos = 0
    for fragment in fragments:
        found = message.find(fragment, pos)
        if found < 0:
            return False
        pos = found + len(fragment)
    return True


def test_corpus_is_large_and_annotated():
    assert len(CORPUS) >= 60
    for path in CORPUS:
        expectation(path)
    assert (ERRORS / "support" / "cycle_partner.nspec").is_file()


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_first_diagnostic_matches_annotation(path: Path):
    want = expectation(path)
    diags, sources = check_files([path])
    assert diags, f"{path.name}: nspec check found no error"
    first = diags[0]
    rendered = first.render(sources)
    got = f"{first.span.line}:{first.span.col}: {first.message}"
    assert first.severity == "error"
    assert Path(first.span.path).resolve() == path.resolve(), rendered
    assert (first.span.line, first.span.col) == (want.line, want.col), \
        f"{path.name}: expected {want.line}:{want.col}, got {got}"
    assert contains_in_order(first.message, want.fragments), \
        f"{path.name}: expected a message with {' ... '.join(want.fragments)!r}, got {got}"
    lines = rendered.split("\n")
    assert lines[0] == f"{first.span.path}:{want.line}:{want.col}: error: {first.message}"
    source_line = path.read_bytes().decode("utf-8", errors="replace").splitlines()[want.line - 1]
    assert lines[1] == "    " + source_line.rstrip("\n").expandtabs(1), rendered
    assert re.fullmatch(r"    " + " " * (want.col - 1) + r"\^~*", lines[2]), rendered


def test_cli_check_exits_1_and_prints_every_file():
    """``nspec check`` on the whole corpus: exit code 1, one located error (with source line and caret) per file."""
    proc = subprocess.run([sys.executable, "-m", "nspec", "check", *map(str, CORPUS)],
                          capture_output=True, text=True, errors="replace", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    for path in CORPUS:
        assert re.search(re.escape(str(path)) + r":\d+:\d+: error: ", out), f"no diagnostic for {path.name}"
    assert re.search(r"\n    +\^", out), "diagnostics must show the source line and a caret"


def test_cli_check_of_a_valid_spec_exits_0():
    spec = ERRORS.parent / "cuba.nspec"
    proc = subprocess.run([sys.executable, "-m", "nspec", "check", str(spec)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["unit_state_initial_value", "unit_template_argument", "simulate_twice",
                                  "box_failed_wires_quiet"])
def test_one_mistake_gives_one_error(name):
    # a bad initial value keeps its state declared, a bad template argument stops at the use site:
    # no second error downstream about the same mistake; a box that failed to build is not "unknown" to
    # the wires and exposes that name it
    diags, _ = check_files([ERRORS / f"{name}.nspec"])
    assert len([d for d in diags if d.severity == "error"]) == 1, [d.message for d in diags]


def test_a_line_separator_in_a_comment_does_not_shift_the_quoted_line(tmp_path):
    # U+2028 is a line break to str.splitlines() but not to the parser, which counts "\n"
    path = tmp_path / "sep.nspec"
    path.write_text("system S {\n  out y: f32 # a comment\u2028with a separator\n  y = 1 +\n}\n", encoding="utf-8")
    diags, sources = check_files([path])
    rendered = diags[0].render(sources)
    assert ":3:10:" in rendered and "y = 1 +" in rendered and "with a separator" not in rendered


def test_a_flat_chain_of_lets_is_not_too_deep(tmp_path):
    # each let reads the one before: evaluated deepest first, not by a recursion 2000 deep
    lets = "\n".join(f"  let a{i} = a{i - 1} + 1" for i in range(1, 2001))
    path = tmp_path / "chain.nspec"
    path.write_text(f"system S {{\n  in x: f32\n  out y: f32\n  let a0 = x\n{lets}\n  y = a2000\n}}\n"
                    "simulate S for 2 s, dt = 1 s\n")
    diags, _ = check_files([path])
    assert diags == []
    out = nspec.load(path).run({"x": np.zeros(1, np.float32)[0]}, steps=1)["y"]
    assert float(out) == 2000.0
