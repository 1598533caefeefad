"""Every templated declaration of the standard library instantiates with non-default arguments.

The library's declarations (``specs/lib/*.nspec``) are written against their template parameters;
the examples mostly use the defaults, so a body that only works for its defaults (a shape that
ignores a parameter, a slot count tied to the wrong one) would go unnoticed.  Here each
declaration that takes template arguments gets a value different from every default (sizes get
small distinct integers), is wrapped in a small spec that runs it (a composite exposing a
system's ports, a population of a neuron, a projection through a synapse), compiled, and run for
one step on the reference backend.  Declarations are found by parsing the files, so a new one is
covered without editing this test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nspec
from nspec.dsl import NspecError
from nspec.dsl import ast as A
from nspec.dsl.parser import parse

LIB = Path(__file__).resolve().parents[1] / "specs" / "lib"
# Sizes for parameters without a default, in declaration order: distinct, and each divisible by the
# next where a layer needs it (MultiheadAttention: embed_dim % num_heads == 0).
SIZES = (6, 3, 4, 5)
# Neuron pairs a synapse may connect (pre and post of the same kind); the first it fits is used.
SYNAPSE_HOSTS = ("LIF", "LIFCond", "Rate")


def _lib_decls() -> list[tuple[Path, str, A.SystemDecl]]:
    out = []
    for path in sorted(LIB.glob("*.nspec")):
        text = path.read_text(encoding="utf-8")
        module, diags = parse(text, str(path))
        assert module is not None and not diags, f"{path.name} does not parse"
        out += [(path, text, d) for d in module.items if isinstance(d, A.SystemDecl) and d.params]
    return out


DECLS = _lib_decls()


def _number(e: A.Expr) -> tuple[float, str] | None:
    """A default written as a number or a quantity (possibly negated): (value, unit text)."""
    if isinstance(e, A.Unary) and e.op == "-":
        inner = _number(e.operand)
        return None if inner is None else (-inner[0], inner[1])
    if isinstance(e, A.Number):
        return e.value, ""
    if isinstance(e, A.Quantity):
        return e.value, e.unit
    return None


OTHER_STRING = {"euler": "rk4"}


def _other_value(p: A.TemplateParam, position: int) -> str:
    """Source text of a value for ``p`` that differs from its default."""
    if p.default is None:
        return str(SIZES[position % len(SIZES)])
    if isinstance(p.default, A.String):  # an integration method (std/nir.nspec's m = "euler")
        assert p.default.value in OTHER_STRING, f"template parameter {p.name}: no other value for {p.default.value!r}"
        return f'"{OTHER_STRING[p.default.value]}"'
    parsed = _number(p.default)
    assert parsed is not None, f"template parameter {p.name}: no rule for a default like {p.default!r}"
    value, unit = parsed
    if float(value).is_integer() and not unit:
        new = int(value) + 1
    else:
        new = value * 1.25 if value != 0 else 1.0
    assert new != value
    return f"{new!r} {unit}".strip()


def non_default_args(decl: A.SystemDecl) -> dict[str, str]:
    sized = [p for p in decl.params if p.default is None]
    return {p.name: _other_value(p, sized.index(p) if p in sized else 0) for p in decl.params}


def _source(text: str, span) -> str:
    lines = text.splitlines()
    if span.end_line == span.line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    return "\n".join([lines[span.line - 1][span.col - 1:], *lines[span.line:span.end_line - 1],
                      lines[span.end_line - 1][:span.end_col - 1]])


def _call(decl: A.SystemDecl, args: dict[str, str]) -> str:
    return f"{decl.name}({', '.join(f'{k} = {v}' for k, v in args.items())})"


def wrappers(path: Path, text: str, decl: A.SystemDecl) -> list[str]:
    """Specs that run ``decl`` with non-default arguments (several candidates for a synapse)."""
    args = non_default_args(decl)
    imports = f'from "std/{path.name}" import {decl.name}\n'
    if decl.kind == "neuron":
        return [imports + f"network Main {{\n  population P: {_call(decl, args)}[3]\n}}\n"]
    if decl.kind == "synapse":
        return [imports + f'from "std/neurons.nspec" import {host}\n'
                f"network Main {{\n  population Pre: {host}[3]\n  population Post: {host}[2]\n"
                f"  projection p: Pre -> Post via {_call(decl, args)} {{ connect all_to_all }}\n}}\n"
                for host in SYNAPSE_HOSTS]
    # system, composite, workspace: a composite with the same template parameters (set to the new
    # values) and the declaration's own ports, wired straight through to one box.
    ports = [s for s in decl.body if isinstance(s, A.Port)]
    params = ", ".join(f"{k} = {v}" for k, v in args.items())
    body = [f"  {_source(text, s.span)}" for s in ports]
    body.append(f"  box d: {decl.name}({', '.join(f'{k} = {k}' for k in args)})")
    body += [f"  wire {s.name} -> d.{s.name}" if s.direction == "in" else f"  wire d.{s.name} -> {s.name}"
             for s in ports]
    return [imports + f"composite Main({params}) {{\n" + "\n".join(body) + "\n}\n"]


def _inputs(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {v.name: (rng.normal(size=v.shape) if v.dtype.is_float else rng.integers(0, 2, size=v.shape))
            .astype(v.dtype.numpy) for v in model.program.inputs}


def test_every_templated_library_declaration_is_covered():
    names = {d.name for _, _, d in DECLS}
    assert {"Linear", "MultiheadAttention", "LIF", "STDP", "TopKWorkspace", "SalienceWorkspace"} <= names
    for _, _, decl in DECLS:
        defaults = {p.name: p.default for p in decl.params}
        for name, value in non_default_args(decl).items():
            if defaults[name] is not None:
                given = parse(f"let v = {value}", "<v>")[0].items[0].value
                if isinstance(given, A.String):
                    assert given.value != defaults[name].value
                else:
                    assert _number(defaults[name]) != _number(given)


@pytest.mark.parametrize("path, text, decl", DECLS, ids=[f"{p.stem}.{d.name}" for p, _, d in DECLS])
def test_declaration_instantiates_with_non_default_arguments(path, text, decl, tmp_path):
    errors = []
    for i, spec in enumerate(wrappers(path, text, decl)):
        file = tmp_path / f"main{i}.nspec"
        file.write_text(spec)
        try:
            model = nspec.load(file)
        except NspecError as exc:
            errors.append(f"{spec}\n{exc}")
            continue
        out = model.run(inputs=_inputs(model), steps=1)
        for name, value in out.items():
            assert np.all(np.isfinite(np.asarray(value, dtype=np.float64))), f"{decl.name}: {name} is not finite"
        return
    pytest.fail(f"{decl.name} did not compile with non-default arguments:\n" + "\n\n".join(errors))
