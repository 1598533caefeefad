"""The nspec package has no import cycles, and no module imports another's private names.

Every module under the code folders is parsed with ``ast`` (nothing is imported, so a cycle that
only bites in some import order is still found).  Every import statement counts, at module level
and inside functions alike (a function-level import hides a cycle from the interpreter, not from
the design), except those under ``if TYPE_CHECKING:``, which never run.  Relative imports are
resolved against the importing module's package; ``from package import name`` is an edge to the
submodule ``package.name`` when there is one, else to ``package``.  Modules are found by walking
the folders, so a new module or package is covered without editing this file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level folder -> the dotted package it installs as (pyproject.toml's package-dir).
CODE_FOLDERS = {"nspec": "nspec", "dsl": "nspec.dsl", "compiler": "nspec.compiler",
                "lowering": "nspec.lowering", "runtime": "nspec.runtime"}


def discover_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of every code folder."""
    modules = {}
    for top, dotted in CODE_FOLDERS.items():
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root / top).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((dotted, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node of ``tree`` that can run (``if TYPE_CHECKING:`` bodies skipped)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The nspec modules that module ``name`` (source ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def private_imports(name: str, path: Path, known: set[str]) -> list[str]:
    """``from M import _x`` statements in module ``name`` where ``M`` is another nspec module: a
    private name is that module's own business (make it public or move it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        if base not in known or base == name:
            continue
        found += [(node.lineno, f"{name}:{node.lineno}: from {base} import {alias.name}") for alias in node.names
                  if alias.name.startswith("_") and not alias.name.startswith("__")]
    return [text for _, text in sorted(found)]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the nspec modules it imports."""
    modules = discover_modules(root)
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected component with more than
    one module, found with Tarjan's algorithm (iterative, so deep graphs cannot overflow)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start), on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    start = min(component)
    parents = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [start] + path[::-1][1:] + [start] if node != start else [start, start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_walk_finds_every_code_folder():
    modules = discover_modules()
    for dotted in CODE_FOLDERS.values():
        assert dotted in modules, f"{dotted} was not discovered"
    assert "nspec.compiler.passes.fold_constants" in modules  # nested packages are walked too
    assert "nspec.compiler.expressions" in modules


def test_imports_are_resolved(tmp_path):
    """Absolute, relative, submodule and function-level imports all become edges; TYPE_CHECKING ones do not."""
    (tmp_path / "compiler" / "passes").mkdir(parents=True)
    for top in CODE_FOLDERS:
        (tmp_path / top).mkdir(exist_ok=True)
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "compiler" / "passes" / "__init__.py").write_text("")
    (tmp_path / "compiler" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .b import x\nfrom . import c\n"
        "if TYPE_CHECKING:\n    from nspec.runtime import r\n"
        "def f():\n    import nspec.dsl.d\n")
    (tmp_path / "compiler" / "passes" / "p.py").write_text("from ..a import y\nfrom nspec.compiler.passes import q\n")
    for name in ("compiler/b.py", "compiler/c.py", "runtime/r.py", "dsl/d.py", "compiler/passes/q.py"):
        (tmp_path / name).write_text("")
    graph = import_graph(tmp_path)
    assert graph["nspec.compiler.a"] == {"nspec.compiler.b", "nspec.compiler.c", "nspec.dsl.d"}
    assert graph["nspec.compiler.passes.p"] == {"nspec.compiler.a", "nspec.compiler.passes.q"}


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
])
def test_find_cycles(graph, expected):
    assert sorted(find_cycles(graph)) == expected


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module -> module it imports):\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles)


def test_private_imports_are_found(tmp_path):
    (tmp_path / "compiler").mkdir()
    for top in CODE_FOLDERS:
        (tmp_path / top).mkdir(exist_ok=True)
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "compiler" / "a.py").write_text("from .b import _hidden, shown, __version__\n"
                                                "def f():\n    from nspec.compiler.b import _late\n")
    (tmp_path / "compiler" / "b.py").write_text("")
    modules = discover_modules(tmp_path)
    found = private_imports("nspec.compiler.a", modules["nspec.compiler.a"], set(modules))
    assert found == ["nspec.compiler.a:1: from nspec.compiler.b import _hidden",
                     "nspec.compiler.a:3: from nspec.compiler.b import _late"]


def test_no_module_imports_another_modules_private_names():
    modules = discover_modules()
    found = [line for name, path in modules.items() for line in private_imports(name, path, set(modules))]
    assert not found, "private names imported across modules:\n  " + "\n  ".join(found)
