"""Every shipped spec parses, and every example in the language reference is a real, parsing file.

The specs are all ``.nspec`` files under ``specs/`` except ``specs/errors/`` (whose files are
meant to fail).  The reference is ``docs/language.md``: each fenced ```` ```nspec ```` block must
parse and must be the exact text of a file under ``specs/examples/``, so the documentation cannot
drift from the examples that the other test suites compile and run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nspec.dsl import parse

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
EXAMPLES = SPECS / "examples"
DOC = ROOT / "docs" / "language.md"

# A fenced block: ```nspec on its own line, the body, ``` on its own line.
FENCE = re.compile(r"^```nspec[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def spec_files() -> list[Path]:
    return sorted(p for p in SPECS.rglob("*.nspec") if "errors" not in p.relative_to(SPECS).parts)


def doc_blocks() -> list[tuple[int, str]]:
    """(line number, text) of each ```nspec block of the reference."""
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def _rendered(diags, text: str, path: str) -> str:
    lines = text.splitlines()
    out = []
    for d in diags:
        line = lines[d.span.line - 1] if 0 < d.span.line <= len(lines) else ""
        out.append(f"{path}:{d.span.line}:{d.span.col}: {d.message}\n    {line}")
    return "\n".join(out)


def test_the_spec_tree_is_not_empty():
    # Guards the parametrisation below: a wrong root would otherwise collect nothing and pass.
    names = {p.relative_to(SPECS).as_posix() for p in spec_files()}
    for required in ("cuba.nspec", "lib/neurons.nspec", "lib/synapses.nspec", "lib/layers.nspec",
                     "lib/workspace.nspec", "seeds/bdh.nspec", "seeds/ctm.nspec", "seeds/elm.nspec",
                     "lif_fi.nspec", "nested.nspec", "workspace_chain.nspec"):
        assert required in names
    assert len(list(EXAMPLES.glob("*.nspec"))) >= 20


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.relative_to(SPECS).as_posix())
def test_spec_parses_without_diagnostics(path: Path):
    text = path.read_text(encoding="utf-8")
    module, diags = parse(text, str(path))
    assert not diags, _rendered(diags, text, str(path))
    assert module is not None and module.items, f"{path} declares nothing"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.nspec")), ids=lambda p: p.name)
def test_example_has_a_header_and_a_behavioural_test(path: Path):
    module, _ = parse(path.read_text(encoding="utf-8"), str(path))
    assert module.header is not None and module.header.doc, f"{path.name} needs `module name \"what it shows\"`"
    tests = [i for i in module.items if type(i).__name__ == "Test"]
    assert tests, f"{path.name} has no test block"
    for t in tests:
        kinds = {type(s).__name__ for s in t.body}
        assert kinds & {"Expect", "ExpectError"}, f'{path.name}: test "{t.name}" asserts nothing'


def test_the_reference_has_examples():
    assert len(doc_blocks()) >= 20


@pytest.mark.parametrize("line,block", doc_blocks(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_doc_block_parses_and_is_an_example_file(line: int, block: str):
    module, diags = parse(block, f"{DOC}:{line}")
    assert not diags, _rendered(diags, block, f"docs/language.md block at line {line}")
    files = {p.name: p.read_text(encoding="utf-8") for p in EXAMPLES.glob("*.nspec")}
    matches = [name for name, text in files.items() if text.strip() == block.strip()]
    assert matches, (f"the ```nspec block at docs/language.md:{line} is not the text of any file in "
                     f"specs/examples/ (copy the file into the reference verbatim)")
