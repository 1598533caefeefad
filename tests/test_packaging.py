"""The wheel trap (STYLE.md): every code folder must be listed in pyproject.toml, or an editable
install works while the wheel silently leaves the folder out.  Also: the installed package is
this tree, the console script and plugin entry points point at real code, the wheel carries the
spec library and works installed into a fresh environment, and CI runs the README's test command."""

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
DATA_PACKAGES = {"nspec.std": "specs/lib"}  # listed packages without code: the spec library, as package data
STD_FILES = sorted(p.name for p in (ROOT / "specs" / "lib").glob("*.nspec"))


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
        if name in DATA_PACKAGES:
            continue
        assert (folder / "__init__.py").is_file(), f"{name} is listed but {folder} has no __init__.py"


def test_spec_library_is_mapped_as_package_data():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert STD_FILES and "neurons.nspec" in STD_FILES
    for name, folder in DATA_PACKAGES.items():
        assert name in setuptools["packages"] and setuptools["package-dir"][name] == folder
        assert setuptools["package-data"][name] == ["*.nspec"]
        assert not list((ROOT / folder).glob("*.py")), f"{folder} is shipped as data; code there would not be"


def test_std_resolves_to_the_source_library_in_this_tree():
    from nspec.compiler.modules import std_lib

    assert std_lib() == (ROOT / "specs" / "lib").resolve()


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the tracked and new files (so the shared tree gets no
    build/ or egg-info changes)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp / "src"
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    out = tmp / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(out), str(src)], capture_output=True, text=True,
                           env={**os.environ, "PIP_NO_INPUT": "1"})
    assert built.returncode == 0, f"pip wheel failed (setuptools>=68 must be importable here):\n{built.stderr}"
    return next(out.glob("nspec-*.whl"))


def test_wheel_contains_every_package(wheel):
    src = wheel.parent.parent / "src"  # the copy the wheel was built from
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, folder in _packages_on_disk().items():
        assert f"{name.replace('.', '/')}/__init__.py" in names, f"the wheel lacks {name} ({folder}/)"
        for py in (ROOT / folder).glob("*.py"):
            if (src / folder / py.name).exists():
                assert f"{name.replace('.', '/')}/{py.name}" in names
    assert "nspec/dsl/nspec.lark" in names
    assert "nspec/py.typed" in names


def test_wheel_contains_the_spec_library(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(n.removeprefix("nspec/std/") for n in names if n.startswith("nspec/std/"))
    assert shipped == STD_FILES
    with zipfile.ZipFile(wheel) as z:
        for name in STD_FILES:
            assert z.read(f"nspec/std/{name}") == (ROOT / "specs" / "lib" / name).read_bytes()


USES_STD = """\
from "std/neurons.nspec" import LIF

network Pair {
  population P: LIF(I0 = 0.2 nA)[2]
  record v of P as v
}

simulate Pair for 20 ms, dt = 0.1 ms
"""


def test_installed_wheel_runs_a_spec_importing_std(wheel, tmp_path):
    """Installed into a fresh environment (dependencies from the system site-packages), run from a
    folder outside the checkout: the package, its std/ library and the console script are the
    installed copies, not this tree."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python, script = venv / "bin" / "python", venv / "bin" / "nspec"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NSPEC_PATH", "PYTHONHOME")}
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "pair.nspec").write_text(USES_STD, encoding="utf-8")

    def run(*argv):
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    where = run(python, "-c", "import nspec; from nspec.compiler.modules import std_lib; "
                              "print(nspec.__file__); print(std_lib())").split()
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    assert Path(where[0]).resolve() == (site / "nspec" / "__init__.py").resolve(), where
    assert Path(where[1]) == (site / "nspec" / "std").resolve(), where
    assert not Path(where[0]).resolve().is_relative_to(ROOT)
    assert "usage: nspec" in run(script, "--help")
    assert run(script, "--version").split() == ["nspec", _pyproject()["project"]["version"]]
    run(script, "run", "pair.nspec", "--quiet", "-o", "out.npz")
    import numpy as np

    with np.load(work / "out.npz") as saved:
        assert saved["v.v"].shape == (200, 2)  # 20 ms at 0.1 ms, two neurons


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
