"""Imports are confined to the spec's project, std/ and NSPEC_PATH, and refused before a file is opened.

A hostile spec must not make a diagnostic quote a file that is not a spec (``/proc/self/environ``,
``std/../../etc/passwd``), nor hang reading a device or a FIFO.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from nspec.compiler.driver import check_files

LIBRARY = """
module lib.helpers "a helper"
system Twice {
  in x: f32
  out y: f32
  y = 2 * x
}
"""


def importing(*imports: str) -> str:
    lines = "\n".join(imports)
    return f'module m.main "imports"\n{lines}\nsystem S {{\n  out y: f32\n  y = 1\n}}\n'


@pytest.fixture
def project(tmp_path):
    """tmp/project (marked by nspec.toml) with specs/main.nspec, lib/helpers.nspec, and a secret outside."""
    root = tmp_path / "project"
    (root / "specs").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "nspec.toml").write_text("")
    (root / "lib" / "helpers.nspec").write_text(textwrap.dedent(LIBRARY))
    (tmp_path / "outside.nspec").write_text("SECRET-OUTSIDE-THE-PROJECT\n")
    (root / "notes.txt").write_text("SECRET-NOT-A-SPEC\n")
    return root


def check(path: Path) -> list[str]:
    diags, sources = check_files([path])
    return [d.render(sources) for d in diags if d.severity == "error"]


def write(project: Path, *imports: str) -> Path:
    path = project / "specs" / "main.nspec"
    path.write_text(importing(*imports))
    return path


def test_imports_inside_the_project_and_std_work(project):
    assert check(write(project, 'import "../lib/helpers.nspec"', 'from "std/neurons.nspec" import LIF')) == []


@pytest.mark.parametrize("target, why", [
    ("/proc/self/environ", "not an absolute path"),
    ("/dev/zero", "not an absolute path"),
    ("std/../../etc/passwd", "only .nspec files can be imported"),
    ("std/../../../../../../../../etc/passwd.nspec", "resolves outside the folders imports may read"),
    ("../../outside.nspec", "resolves outside the folders imports may read"),
    ("../notes.txt", "only .nspec files can be imported"),
])
def test_imports_outside_are_refused_at_the_import_line_without_quoting_the_file(project, target, why):
    os.environ["NSPEC_TEST_SECRET"] = "SECRET-IN-THE-ENVIRONMENT"
    try:
        errors = check(write(project, f'import "{target}"'))
    finally:
        del os.environ["NSPEC_TEST_SECRET"]
    assert len(errors) == 1, errors
    assert f'main.nspec:2:1: error: cannot import "{target}": ' in errors[0] and why in errors[0]
    assert "SECRET" not in errors[0]


def test_a_symbolic_link_out_of_the_project_is_refused(project):
    (project / "specs" / "link.nspec").symlink_to(project.parent / "outside.nspec")
    errors = check(write(project, 'import "link.nspec"'))
    assert len(errors) == 1 and "resolves outside the folders imports may read" in errors[0]
    assert "SECRET" not in errors[0]


def test_a_fifo_is_refused_not_read(project):
    os.mkfifo(project / "specs" / "pipe.nspec")  # reading it would block forever
    errors = check(write(project, 'import "pipe.nspec"'))
    assert len(errors) == 1 and "pipe.nspec is not a regular file" in errors[0]


def test_the_search_path_adds_folders(project, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "shared_helpers.nspec").write_text(textwrap.dedent(LIBRARY))
    path = write(project, 'from "shared_helpers.nspec" import Twice')
    monkeypatch.delenv("NSPEC_PATH", raising=False)
    assert any("no such file" in e for e in check(path))
    monkeypatch.setenv("NSPEC_PATH", str(shared))
    assert check(path) == []


def test_without_a_project_marker_the_spec_folder_is_the_project(tmp_path):
    lone = tmp_path / "lone"
    (lone / "sub").mkdir(parents=True)
    (lone / "sub" / "helpers.nspec").write_text(textwrap.dedent(LIBRARY))
    (lone / "main.nspec").write_text(importing('import "sub/helpers.nspec"'))
    assert check(lone / "main.nspec") == []
    (lone / "sub" / "up.nspec").write_text(importing('import "../main.nspec"'))
    errors = check(lone / "sub" / "up.nspec")  # compiled on its own, its project is sub/
    assert len(errors) == 1 and "resolves outside" in errors[0]
