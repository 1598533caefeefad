"""Layering: the compiler and the front end never import the runtime or the backends.

Every module of ``nspec.compiler`` and ``nspec.dsl`` is parsed (not imported) and every import
statement in it, at module level or inside a function, is resolved to an absolute module name
(relative imports against the module's package).  A compiler that needs the oracle's rules
imports ``nspec.compiler.interpret``, never ``nspec.runtime``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nspec.compiler
import nspec.dsl

LOWER_LAYERS = ("nspec.runtime", "nspec.lowering")
LAYERS = (nspec.compiler, nspec.dsl)


def module_files(package) -> list[tuple[str, Path]]:
    """(module name, source file) of every module in ``package``, subpackages included."""
    root = Path(package.__file__).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join([package.__name__, *parts]), path))
    return out


def imported_modules(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the module ``name`` at ``path``;
    ``from m import a`` gives both ``m`` and ``m.a`` (``a`` may be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def forbidden(imports: list[tuple[int, str]]) -> list[str]:
    return [f"line {line}: {module}" for line, module in imports
            if any(module == layer or module.startswith(layer + ".") for layer in LOWER_LAYERS)]


@pytest.mark.parametrize("package", LAYERS, ids=lambda p: p.__name__)
def test_no_import_of_runtime_or_lowering(package):
    files = module_files(package)
    assert len(files) > 3, f"found no modules under {package.__name__}"
    bad = {name: forbidden(imported_modules(name, path)) for name, path in files}
    assert not {k: v for k, v in bad.items() if v}


def test_interpreter_lives_in_the_compiler():
    # The passes that evaluate graphs read the oracle's rules from the compiler.
    names = dict(module_files(nspec.compiler))
    for module in ("nspec.compiler.passes.fold_constants", "nspec.compiler.discretize", "nspec.compiler.values"):
        assert "nspec.compiler.interpret" in {m for _, m in imported_modules(module, names[module])}


@pytest.mark.parametrize("source, package_init, expected", [
    ("import nspec.runtime.reference", False, ["line 1: nspec.runtime.reference"]),
    ("def f():\n    from nspec.lowering import to_onnx", False,
     ["line 2: nspec.lowering", "line 2: nspec.lowering.to_onnx"]),
    ("from ..runtime import model", False, ["line 1: nspec.runtime", "line 1: nspec.runtime.model"]),
    ("from ...runtime import model", True, ["line 1: nspec.runtime", "line 1: nspec.runtime.model"]),
    ("from .. import lowering", False, ["line 1: nspec.lowering"]),
    ("from .interpret import evaluate\nimport nspec.runtimes", False, []),
])
def test_the_check_sees_every_kind_of_import(tmp_path, source, package_init, expected):
    # A check that could miss a function-level or relative import would pass vacuously.
    path = tmp_path / ("__init__.py" if package_init else "mod.py")
    path.write_text(source)
    name = "nspec.compiler.passes" if package_init else "nspec.compiler.mod"
    assert forbidden(imported_modules(name, path)) == expected
