"""pytest plugin: each ``test "name" { ... }`` block of a ``*.nspec`` file is a pytest item.

Registered through the ``pytest11`` entry point, so ``python -m pytest`` collects the spec
tests found under the configured ``testpaths`` next to the Python tests.  Specs under
``specs/errors/`` are deliberately broken inputs for the diagnostics tests and are skipped.
A failure reports the spec's own location (``path:line:col: test "name" failed: ...``), not a
Python traceback.  Imports of the compiler happen at collection, so loading the plugin stays
cheap for sessions that collect no spec.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# Only files that declare a test are collected; libraries of neurons and synapses are not.
_DECLARES_TEST = re.compile(r'^[ \t]*test[ \t]+"', re.MULTILINE)


def _is_error_spec(path: Path) -> bool:
    parts = path.parts
    return any(a == "specs" and b == "errors" for a, b in zip(parts, parts[1:]))


def pytest_collect_file(file_path: Path, parent):
    """Collect ``*.nspec`` files that declare at least one test."""
    if file_path.suffix != ".nspec" or _is_error_spec(file_path):
        return None
    try:
        text = file_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not _DECLARES_TEST.search(text):
        return None
    return SpecFile.from_parent(parent, path=file_path)


class SpecTestFailed(Exception):
    """A spec test's expectation did not hold (its message is the located report)."""


class SpecFile(pytest.File):
    """One spec file; its items are its test blocks."""

    def collect(self):
        from nspec.dsl.diagnostics import SourceMap
        from nspec.runtime.spectest import collect

        sources = SourceMap()
        tests, diags = collect(self.path, sources)
        if diags:
            raise self.CollectError("\n".join(d.render(sources) for d in diags))
        for test in tests:
            yield SpecItem.from_parent(self, name=test.name, test=test, sources=sources)


class SpecItem(pytest.Item):
    """One ``test`` block, run with ``nspec.runtime.spectest.run_test``."""

    def __init__(self, *, test, sources, **kwargs):
        super().__init__(**kwargs)
        self.test = test
        self.sources = sources

    def runtest(self) -> None:
        from nspec.runtime.spectest import run_test

        outcome = run_test(self.test, self.sources)
        if not outcome.passed:
            raise SpecTestFailed(outcome.message)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SpecTestFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.test.span.line - 1, f'test "{self.test.name}"'
