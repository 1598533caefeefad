"""A spec from an untrusted source cannot execute code: no eval/exec/compile anywhere in nspec."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("dsl", "compiler", "runtime", "lowering", "nspec") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dynamic_code_execution(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in ("eval", "exec", "compile", "__import__")]
    assert not calls, [f"{path.name}:{c.lineno} {c.func.id}()" for c in calls]
