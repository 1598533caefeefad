"""Dimensions bound by data: ``hyper n: int = auto`` takes its value from the shapes of the data.

A data-bound hyperparameter (``auto``, or ``auto(default)``) is bound before elaboration from the
weights and inputs that use it.  Its *uses* (``Use``) are the declared shapes of the file that
name it as a whole axis:

* ``param W: f32[d, n] ... key "k"``: the weights entry ``k`` (a key with ``{...}`` stands for
  every entry it can spell); a parameter without a key in the run target itself: the entry named
  after the parameter;
* ``in x: f32[n, m]`` of the run target: the input array ``x``.

Axes are counted from the end, because an input array carries leading batch and time axes (and a
neuron's parameter a leading population axis).  Every use that data gives a value through is a
piece of evidence, as is a value given as a hyperparameter (``--param``, ``nspec.load``, a test's
``set``); two that disagree are a located error naming both.  With no evidence the default of
``auto(default)`` applies, and without one the run stops with an error that says which weights
entry or input would bind it.  ``bind`` is pure: declarations and shapes in, bindings and
diagnostics out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Collector, Span


@dataclass(frozen=True, slots=True)
class Use:
    """One declared axis that names a data-bound hyperparameter: where data can give its value."""

    kind: str      # "weight" (an entry of the weights file) or "input" (an input array)
    name: str      # the weights key (a ``{...}`` template) or the input's name
    axis: int      # the axis in the declared shape, counted from the end (-1 is the last)
    rank: int      # the declared shape's rank
    span: Span     # the axis as written

    def matches(self, entry: str) -> bool:
        """Does the weights entry or input named ``entry`` hold this use's data?"""
        if self.kind == "input" or "{" not in self.name:
            return entry == self.name
        return re.fullmatch(_key_pattern(self.name), entry) is not None

    def describe(self) -> str:
        what = "input" if self.kind == "input" else "weights entry"
        return f"{what} '{self.name}' (the axis at {self.span})"


@dataclass(frozen=True, slots=True)
class DataShapes:
    """What data says before anything is compiled: the shape of every weights entry and input array,
    and where they came from (for messages)."""

    weights: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    weights_from: str = "the weights"
    inputs_from: str = "the inputs"


@dataclass(frozen=True, slots=True)
class DataDim:
    """A data-bound hyperparameter as compiled: its value, what gave it and the uses data binds it by
    (carried on the ``Program``, so runtimes rebuild when data changes and exports can keep it symbolic,
    ``symbolic_dims.py``)."""

    name: str
    value: int
    source: str                 # "data: weights entry 'k' ...", "the hyperparameter value", "the default"
    uses: tuple[Use, ...]


@dataclass(frozen=True, slots=True)
class Evidence:
    value: int
    what: str       # the data or argument that gave the value, for messages
    span: Span      # the use (or the declaration, for a hyperparameter value)

    def describe(self) -> str:
        return f"{self.value} from the {self.what}"


def auto_hypers(module: A.Module) -> dict[str, A.Hyper]:
    """The module's data-bound hyperparameters by name."""
    return {i.name: i for i in module.items if isinstance(i, A.Hyper) and isinstance(i.default, A.Auto)}


def find_uses(module: A.Module, target: A.SystemDecl | None, names) -> dict[str, list[Use]]:
    """Every use of each of ``names`` as a whole axis of a keyed parameter's shape (any system of the
    module) or of an input's or unkeyed parameter's shape (the run target)."""
    uses: dict[str, list[Use]] = {n: [] for n in names}
    for decl in (i for i in module.items if isinstance(i, A.SystemDecl)):
        hidden = {p.name for p in decl.params}  # template parameters shadow the file's names
        for stmt, shadowed in _statements(decl.body, hidden):
            if isinstance(stmt, A.Param):
                if stmt.key is not None:
                    entry = stmt.key
                elif decl is target and stmt.index is None:
                    entry = stmt.name
                else:
                    continue
                _add(uses, "weight", entry, stmt.type, shadowed)
            elif isinstance(stmt, A.Port) and stmt.direction == "in" and decl is target:
                _add(uses, "input", stmt.name, stmt.type, shadowed)
    return uses


def _statements(body, hidden: set[str]):
    """(statement, names hidden there) for every statement, inside ``if`` and ``for`` blocks too."""
    for s in body:
        yield s, hidden
        if isinstance(s, A.If):
            yield from _statements(s.then + s.otherwise, hidden)
        elif isinstance(s, A.For):
            yield from _statements(s.body, hidden | {s.var})


def _add(uses: dict[str, list[Use]], kind: str, name: str, typ: A.TensorType | None, hidden: set[str]) -> None:
    shape = typ.shape if typ is not None and typ.shape is not None else ()
    for i, e in enumerate(shape):
        if isinstance(e, A.Name) and e.id in uses and e.id not in hidden:
            uses[e.id].append(Use(kind, name, i - len(shape), len(shape), e.span))


def _key_pattern(key: str) -> str:
    """A weights-key template as a regular expression: ``{...}`` matches any non-empty text."""
    parts = re.split(r"(\{\{|\}\}|\{[^{}]*\})", key)
    return "".join(re.escape(p[0]) if p in ("{{", "}}") else ".+" if p.startswith("{") else re.escape(p)
                   for p in parts)


def evidence(uses: list[Use], data: DataShapes) -> list[Evidence]:
    """The value each piece of data gives through each use (an entry of a lower rank gives none: the
    weights loader or the input check reports it)."""
    out = []
    for u in uses:
        table, origin = (data.weights, data.weights_from) if u.kind == "weight" else (data.inputs, data.inputs_from)
        for entry, shape in table.items():
            if u.matches(entry) and len(shape) >= u.rank:
                what = "weights entry" if u.kind == "weight" else "input"
                out.append(Evidence(int(shape[u.axis]), f"{what} '{entry}' of shape {list(shape)} in {origin} "
                                                        f"(through the axis at {u.span})", u.span))
    return out


def given_value(raw: Any) -> int | None:
    """A hyperparameter value given for a data-bound dimension, as an int (None: not an int)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
        return int(raw.strip())
    return None


def bind(module: A.Module, target: A.SystemDecl | None, data: DataShapes | None, overrides: Mapping[str, Any],
         diags: Collector) -> tuple[dict[str, list[Use]], dict[str, Evidence]]:
    """The uses of every data-bound hyperparameter of ``module`` and the value data gives each one it
    binds.  Reported in ``diags``: disagreeing evidence, a dimension no data can bind, and (unless
    ``data`` is None: checking a file without running it) one without data, value or default."""
    autos = auto_hypers(module)
    uses = find_uses(module, target, autos)
    bound: dict[str, Evidence] = {}
    for name, decl in autos.items():
        problem = type_problem(decl)
        if problem is not None:
            diags.error(decl.type.span, problem)
            continue
        if not uses[name]:
            diags.error(decl.default.span, f"'{name}' is bound by data ('auto'), but no input of the run target and no "
                                           f"keyed parameter has '{name}' as an axis of its shape, so no data can "
                                           f"bind it; give it a value instead (hyper {name}: int = 8)")
            continue
        found = evidence(uses[name], data or DataShapes())
        given = given_value(overrides.get(name))
        if name in overrides and given is None:
            diags.error(decl.span, not_an_int(name, overrides[name]))
            continue
        if given is not None:
            found.append(Evidence(given, f"value {name}={given} given as a hyperparameter (--param, nspec.load "
                                         "or a test's set)", decl.span))
        clash = next((e for e in found if e.value != found[0].value), None)
        if clash is not None:
            diags.error(found[0].span, f"'{name}' is bound by two sources that disagree: {found[0].describe()}, "
                                       f"and {clash.describe()}")
        elif found and name not in overrides:
            bound[name] = found[0]
        elif not found and name not in overrides and decl.default.default is None and data is not None:
            diags.error(decl.span, unbound_message(name, uses[name]))
    return uses, bound


def not_an_int(name: str, raw: Any) -> str:
    """The error for a value given to a data-bound dimension that is not an int."""
    return f"{name}={raw!r}: '{name}' is a size bound by data, so its value is an int"


def type_problem(decl: A.Hyper) -> str | None:
    """What is wrong with a data-bound hyperparameter's declared type (None: nothing)."""
    if decl.type is not None and decl.type.dtype not in (None, "int"):
        return f"'{decl.name}' is bound by data, so it is an int, not {decl.type.dtype}"
    return None


def unbound_message(name: str, uses: list[Use]) -> str:
    """Why a data-bound hyperparameter without a default has no value, and what would give it one."""
    ways = "; ".join(u.describe() for u in uses)
    return (f"'{name}' is bound by data and none was given: it is read from {ways}; give the weights or inputs "
            f"(nspec run --weights/--inputs, nspec.load(..., weights=, inputs=)), a value ({name}=N), "
            f"or a default (auto(N))")


def unbound_without_data(module: A.Module, overrides: Mapping[str, Any]) -> set[str]:
    """Names that cannot be known without data: the data-bound hyperparameters with no default and no
    given value, and the file's constants and hyperparameters computed from them (``nspec check``
    skips what reads them: they are checked when the spec runs with data)."""
    out = {n for n, d in auto_hypers(module).items() if d.default.default is None and n not in overrides}
    values = {i.name: (i.value if isinstance(i, A.Const) else i.default) for i in module.items
              if isinstance(i, (A.Const, A.Hyper)) and i.name not in out}
    grew = bool(out)
    while grew:
        grew = False
        for name, value in values.items():
            if name not in out and reads(value, out):
                out.add(name)
                grew = True
    return out


def reads(node: A.Node, names: set[str]) -> bool:
    """Does ``node`` mention any of ``names``?"""
    return any(isinstance(n, A.Name) and n.id in names for n in A.walk(node))
