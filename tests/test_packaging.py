"""The wheel trap (STYLE.md): every code folder must be listed in pyproject.toml, or an editable
install works while the wheel silently leaves the folder out.  Also: the installed package is
this tree, the console script and plugin entry points point at real code, and CI runs the
README's test command."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = {"nspec": "nspec", "dsl": "nspec.dsl", "compiler": "nspec.compiler",
                "lowering": "nspec.lowering", "runtime": "nspec.runtime"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _packages_on_disk() -> dict[str, str]:
    """Dotted package name -> folder (relative, '/'-separated) for every folder with an __init__.py."""
    found = {}
    for top, dotted in CODE_FOLDERS.items():
        for init in sorted((ROOT / top).rglob("__init__.py")):
            folder = init.parent.relative_to(ROOT)
            if "__pycache__" in folder.parts:
                continue
            inner = folder.parts[1:]
            found[".".join((dotted, *inner))] = folder.as_posix()
    return found


def test_every_package_folder_is_listed_in_pyproject():
    setuptools = _pyproject()["tool"]["setuptools"]
    listed, mapping = set(setuptools["packages"]), setuptools["package-dir"]
    on_disk = _packages_on_disk()
    assert {"nspec", "nspec.dsl", "nspec.compiler", "nspec.lowering", "nspec.runtime"} <= set(on_disk)
    for name, folder in on_disk.items():
        assert name in listed, f"{folder}/ is a package but [tool.setuptools] packages lacks {name!r}"
        assert mapping.get(name) == folder, f"package-dir must map {name!r} to {folder!r}, not {mapping.get(name)!r}"


def test_every_listed_package_exists():
    setuptools = _pyproject()["tool"]["setuptools"]
    for name in setuptools["packages"]:
        folder = ROOT / setuptools["package-dir"][name]
        assert (folder / "__init__.py").is_file(), f"{name} is listed but {folder} has no __init__.py"


@pytest.mark.parametrize("name", sorted(_packages_on_disk()))
def test_packages_import_from_this_tree(name):
    module = importlib.import_module(name)
    folder = ROOT / _packages_on_disk()[name]
    assert Path(module.__file__).resolve().parent == folder.resolve()


def test_entry_points_name_real_code():
    project = _pyproject()["project"]
    module, func = project["scripts"]["nspec"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    plugin = importlib.import_module(project["entry-points"]["pytest11"]["nspec"])
    assert callable(plugin.pytest_collect_file)


def test_grammar_ships_as_package_data():
    from importlib import resources

    assert "start:" in resources.files("nspec.dsl").joinpath("nspec.lark").read_text(encoding="utf-8")


def test_wheel_contains_every_package(tmp_path):
    # Build from a copy of the tracked and new files so the shared tree gets no build/ or egg-info changes.
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True, text=True,
                   env={**os.environ, "PIP_NO_INPUT": "1"})
    wheel = next(out.glob("nspec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, folder in _packages_on_disk().items():
        assert f"{name.replace('.', '/')}/__init__.py" in names, f"the wheel lacks {name} ({folder}/)"
        for py in (ROOT / folder).glob("*.py"):
            if (src / folder / py.name).exists():
                assert f"{name.replace('.', '/')}/{py.name}" in names
    assert "nspec/dsl/nspec.lark" in names
    assert "nspec/py.typed" in names


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```\n(.*?)```", text, re.S)
    assert block is not None and text.index(block.group(0)) < text.index("\n## "), "README must open with the commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "nspec run" in commands[0] and "pytest" in commands[1]
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    lines = [line for line in ci.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    assert "set -euo pipefail" in lines
    assert lines[-1] == commands[1]
    shlex.split(commands[1])  # well-formed shell words
