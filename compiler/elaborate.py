"""AST -> systems -> Design: binds hyperparameters, checks every statement, builds the IR of each system.

``elaborate_file`` compiles a spec's run target; ``check_module`` elaborates every declaration
of a file that can be instantiated on its own and returns all diagnostics.  The work per kind:

* ``system`` / ``neuron``: ``compiler/bodies.py`` (equations, state, events) -> ``Primitive``
* ``composite`` / ``workspace``: ``compiler/composites.py`` -> ``Composite`` / ``Primitive``
* ``network``: ``compiler/networks.py`` desugars populations and projections into a ``Composite``

The run target becomes a ``Design`` (the system and the run's settings) that the pipeline
(``pipeline.py``) compiles to a ``Program``, starting with flatten-systems.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Collector, Diagnostic, SourceMap, Span, unique
from nspec.dsl.parser import parse

from .bodies import build_body
from .bounds import static_errors
from .declared_types import DTYPES, unit_of
from .discretize import METHODS, unknown_method
from .composites import build_composite, build_workspace
from .data_dims import (DataDim, DataShapes, Evidence, Use, bind, given_value, not_an_int, reads, type_problem,
                        unbound_message, unbound_without_data)
from .expressions import Abort, ExprBuilder, Val, static
from .values import int_range, outside_int
from .ir import DType, GraphBuilder
from .modules import Loader, Scope
from .networks import build_network
from .overrides import Binding, Given, Overrides, keywords
from .passes.flatten_systems import check_weight_keys, flatten
from .pipeline import Design
from .units import describe, unit
from .unroll import resolve_structure

DEFAULT_DT = 1e-4  # 0.1 ms, Brian2's default


class Statics:
    """Compile-time values of a module's hyperparameters and constants (evaluated on demand)."""

    def __init__(self, elab: "Elaborator", scope: Scope):
        self.elab = elab
        self.scope = scope
        self.values: dict[str, Val] = {}
        self._busy: set[str] = set()

    def get(self, name: str, span: Span) -> Val | None:
        if name in self.values:
            return self.values[name]
        found = self.scope.find(name)
        if found is None or not isinstance(found[0], (A.Hyper, A.Const)):
            return None
        decl, home = found
        if home is not self.scope:
            return self.elab.statics(home).get(decl.name, span)
        if name in self._busy:
            self.elab.diags.error(decl.span, f"'{name}' is defined in terms of itself")
            raise Abort
        self._busy.add(name)
        try:
            value = self._evaluate(decl)
        finally:
            self._busy.discard(name)
        self.values[name] = value
        return value

    def _evaluate(self, decl) -> Val:
        b = ExprBuilder(GraphBuilder(), self.elab.diags, lambda n, s: self.get(n, s))
        if isinstance(decl, A.Const):
            v = b.expr(decl.value)
            if not v.is_static:
                b.fail(decl.value.span, f"'{decl.name}' must be known at compile time")
            declared = DTYPES.get(decl.type.dtype) if decl.type is not None else None
            if declared in (DType.i32, DType.i64) and (outside := outside_int(v.static, declared, floats=True)):
                b.fail(decl.value.span, f"{outside} does not fit in {declared.value}: it is outside "
                                        f"{int_range(declared)}")
            return v
        if isinstance(decl.default, A.Auto):
            return self._data_bound(decl, b)
        default = b.expr(decl.default)
        if not default.is_static:
            b.fail(decl.default.span, f"the default of hyperparameter '{decl.name}' must be known at compile time")
        value = default
        binding = self.elab.bindings.get(id(decl))
        if binding is not None:
            value = self._override(decl, default, binding, b)
        kind = decl.type.dtype if decl.type is not None else None
        _check_hyper_type(b, decl, value, kind)
        self._check_choices(decl, value, b)
        return value

    def _check_choices(self, decl: A.Hyper, value: Val, b: ExprBuilder) -> None:
        if decl.choices is not None:
            options = [b.expr(c).static for c in decl.choices]
            if value.static not in options:
                b.fail(decl.default.span, f"hyperparameter '{decl.name}' = {value.static!r} is not one of "
                                  f"{', '.join(repr(o) for o in options)}")

    def _data_bound(self, decl: A.Hyper, b: ExprBuilder) -> Val:
        """A dimension bound by data (``auto``): a value given as a hyperparameter, else the data's
        (``compiler/data_dims.py``, bound before elaboration), else the default of ``auto(default)``."""
        elab, auto = self.elab, decl.default
        if type_problem(decl) is not None:
            b.fail(decl.type.span, type_problem(decl))
        fallback = None if auto.default is None else b.static_value(auto.default, f"the default of '{decl.name}'")
        bound = elab.data_bound.get(decl.name) if self.scope is elab.main and elab.data_bound else None
        binding = elab.bindings.get(id(decl))
        if binding is not None:
            given = given_value(binding.value)
            if given is None:
                b.fail(decl.span, not_an_int(decl.name, binding.value))
            value, source = static(given), "the hyperparameter value"
        elif bound is not None:
            value, source = static(bound.value), f"data: the {bound.what}"
        elif fallback is not None:
            value, source = fallback, "the default"
        elif elab.data_bound is None:
            raise Abort  # checking without data: what needs this dimension is checked when it runs
        else:
            uses = elab.data_uses.get(decl.name, []) if self.scope is elab.main else []
            b.fail(decl.span, unbound_message(decl.name, uses))
        _check_hyper_type(b, decl, value, "int")
        self._check_choices(decl, value, b)
        if self.scope is elab.main:
            elab.data_sources[decl.name] = source
        return value

    def _override(self, decl: A.Hyper, default: Val, binding: Binding, b: ExprBuilder) -> Val:
        raw, key = binding.value, binding.key
        if outside := outside_int(raw):  # a Python int (or a list of them) given to nspec.load
            b.fail(decl.span, f"--param {key}: {outside} is outside {int_range()}")
        if isinstance(raw, str) and not isinstance(default.static, str):
            parsed, why = _parse_quantity(raw)
            if parsed is None:
                b.fail(decl.span, f"--param {key}={raw!r}: " + (why or f"expected a "
                                  f"{type(default.static).__name__} like the default {default.static!r}"))
            if parsed.dim != default.dim:
                like = _fmt_value(decl.default)
                if parsed.dim.dimensionless:
                    b.fail(decl.span, f"--param {key}={raw}: '{decl.name}' has a unit ({describe(default.dim)}); "
                                      f"write it with one, like its default {like}")
                b.fail(decl.span, f"--param {key}={raw!r}: '{decl.name}' is in {describe(default.dim)} (like "
                                  f"its default {like}), not {describe(parsed.dim)}")
            return parsed
        v = static(raw, default.dim) if not isinstance(raw, (list, str)) else Val(DType.f32, (), default.dim, static=raw)
        return v


def _fmt_value(e: A.Expr) -> str:
    """A default as written (``10 ms``), for messages."""
    return f"{e.value:g} {e.unit}" if isinstance(e, A.Quantity) else f"line {e.span.line}"



def _parse_quantity(text: str) -> tuple[Val | None, str | None]:
    """'0.1 ms' or '2' -> a static value, for overrides given as strings; else None and, when the text
    parses but is not a value (an integer past i64, an unknown unit), why."""
    module, diags = parse(f"let v = {text}", "<param>")
    if diags or module is None:
        return None, None
    collector = Collector()
    b = ExprBuilder(GraphBuilder(), collector, lambda n, s: None)
    try:
        v = b.expr(module.items[0].value)
    except Abort:
        return None, collector.items[0].message if collector.items else None
    return (v, None) if v.is_static else (None, None)


def _check_hyper_type(b: ExprBuilder, decl: A.Hyper, value: Val, kind: str | None) -> None:
    v = value.static
    ok = {
        None: True,
        "int": isinstance(v, (int, np.integer)) and not isinstance(v, bool),
        "float": isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool),
        "f32": isinstance(v, (int, float)) and not isinstance(v, bool),
        "f64": isinstance(v, (int, float)) and not isinstance(v, bool),
        "i64": isinstance(v, int) and not isinstance(v, bool),
        "str": isinstance(v, str),
        "bool": isinstance(v, bool),
    }.get(kind, True)
    if not ok:
        b.fail(decl.default.span, f"hyperparameter '{decl.name}' is declared {kind} but its value is {v!r}")
    if decl.type is not None and decl.type.unit is not None:
        want = unit_of(b, decl.type.unit)
        if value.dim != want[1]:
            b.fail(decl.span, f"hyperparameter '{decl.name}' must be in {describe(want[1])}, got "
                              f"{describe(value.dim)}")


class Elaborator:
    """Holds the loaded modules and instantiates declarations with bound template arguments."""

    def __init__(self, sources: SourceMap, overrides: dict[str, Any], given: Given | None = None):
        self.sources = sources
        # dimensions bound by data (compiler/data_dims.py), for the file that is run (``main``);
        # ``data_bound`` is None while checking without data
        self.main: Scope | None = None
        self.data_uses: dict[str, list[Use]] = {}
        self.data_bound: dict[str, Evidence] | None = None
        self.data_sources: dict[str, str] = {}
        self.diags = Collector(sources)
        self.loader = Loader(sources, self.diags)
        self.overrides = dict(overrides)
        given = given or keywords("Elaborator", "<program>", overrides)
        self.given = given  # where the overrides were written, for their diagnostics
        given.register(sources)
        self.bindings: dict[int, Binding] = {}  # id(hyper declaration) -> its override
        self._statics: dict[int, Statics] = {}
        self._instances: dict[tuple, Any] = {}
        self.dt = DEFAULT_DT
        self.seed = 0
        self._stack: list[str] = []

    def bind_overrides(self, root: Scope) -> None:
        """Which declaration each override sets (compiler/overrides.py), once every file is loaded."""
        self.bindings = Overrides(self.loader, root).bind(self.overrides, self.given.span, self.diags.error)

    def statics(self, scope: Scope) -> Statics:
        key = id(scope)
        if key not in self._statics:
            self._statics[key] = Statics(self, scope)
        return self._statics[key]

    # ------------------------------------------------------------ instantiation
    def bind_args(self, decl: A.SystemDecl, scope: Scope, ref: A.TypeRef | None, caller: ExprBuilder | None,
                  extra: dict[str, Val] | None = None) -> dict[str, Val]:
        """Template arguments of ``decl`` from a reference ``Name(a, k = v)``, defaults filled in."""
        values: dict[str, Val] = {}
        given: dict[str, Span] = {}  # where each argument is written, for errors at the use site
        params = {p.name: p for p in decl.params}
        order = [p.name for p in decl.params]
        if ref is not None and caller is not None:
            if len(ref.args) > len(order):
                caller.fail(ref.span, f"{decl.name} takes {len(order)} template argument(s), got {len(ref.args)}")
            for name, arg in zip(order, ref.args):
                values[name] = caller.static_value(arg, f"template argument '{name}' of {decl.name}")
                given[name] = arg.span
            for kw in ref.kwargs:
                if kw.name not in params:
                    caller.fail(kw.span, f"{decl.name} has no template parameter '{kw.name}'"
                                + (f"; it takes {', '.join(order)}" if order else ""))
                if kw.name in values:
                    caller.fail(kw.span, f"template argument '{kw.name}' given twice")
                values[kw.name] = caller.static_value(kw.value, f"template argument '{kw.name}' of {decl.name}")
                given[kw.name] = kw.span
        values.update(extra or {})
        statics = self.statics(scope)
        b = ExprBuilder(GraphBuilder(), self.diags, lambda n, s: values.get(n) or statics.get(n, s))
        for p in decl.params:
            if p.name not in values:
                if p.default is None:
                    where = ref.span if ref is not None else decl.span
                    self.diags.error(where, f"{decl.name} needs a value for template parameter '{p.name}'")
                    raise Abort
                values[p.name] = b.static_value(p.default, f"the default of '{p.name}'")
            if p.type is not None and p.type.unit is not None:
                want = unit_of(b, p.type.unit)[1]
                if values[p.name].dim != want:
                    where = ref.span if ref is not None else p.span
                    b.fail(where, f"template parameter '{p.name}' of {decl.name} must be in {describe(want)}, got "
                                  f"{describe(values[p.name].dim)}")
            elif p.name in given and p.default is not None and caller is not None:
                default = b.static_value(p.default, f"the default of '{p.name}'")
                if default.dim != values[p.name].dim and not isinstance(default.static, (str, list, bool)):
                    caller.fail(given[p.name], f"template argument '{p.name}' of {decl.name} is in "
                                               f"{describe(values[p.name].dim)}, but its default "
                                               f"({_fmt_value(p.default)}) is in {describe(default.dim)}")
        return values

    def instantiate(self, decl: A.SystemDecl, scope: Scope, args: dict[str, Val], span: Span, **options):
        key = (id(decl), tuple(sorted((k, _freeze(v.static), str(v.dim)) for k, v in args.items())),
               tuple(sorted(options.items())))
        if key in self._instances:
            return self._instances[key]
        if decl.name in self._stack:
            self.diags.error(span, f"{decl.name} contains itself: " + " -> ".join(self._stack + [decl.name]))
            raise Abort
        self._stack.append(decl.name)
        try:
            decl = self.resolve_structure(decl, scope, args)
            result = self._build(decl, scope, args, span, **options)
        finally:
            self._stack.pop()
        self._instances[key] = result
        return result

    def resolve_structure(self, decl: A.SystemDecl, scope: Scope, args: dict[str, Val]) -> A.SystemDecl:
        """The declaration with its ``if``, ``for`` and indexed names resolved (compiler/unroll.py)."""
        statics = self.statics(scope)

        def lookup(n: str, s: Span) -> Val | None:
            return args.get(n) or (static(self.dt, unit("s")[1]) if n == "dt" else statics.get(n, s))

        return resolve_structure(decl, lookup, lambda find: ExprBuilder(GraphBuilder(), self.diags, find))

    def _build(self, decl: A.SystemDecl, scope: Scope, args: dict[str, Val], span: Span, **options):
        if decl.kind in ("system", "neuron", "synapse"):
            return build_body(self, decl, scope, args, **options)
        if decl.kind in ("composite",):
            return build_composite(self, decl, scope, args)
        if decl.kind == "workspace":
            return build_workspace(self, decl, scope, args)
        return build_network(self, decl, scope, args)

    def lookup_system(self, scope: Scope, ref: A.TypeRef, b: ExprBuilder, kinds: tuple[str, ...]):
        found = scope.find(ref.name)
        if found is None or not isinstance(found[0], A.SystemDecl):
            known = sorted(n for n, (d, _) in scope.decls.items() if isinstance(d, A.SystemDecl))
            hint = f"; known: {', '.join(known)}" if known else ""
            b.fail(ref.span, f"unknown system '{ref.name}'{hint}")
        decl, home = found
        if decl.kind not in kinds:
            b.fail(ref.span, f"'{ref.name}' is a {decl.kind}; here a {' or '.join(kinds)} is needed")
        return decl, home


# ---------------------------------------------------------------- designs
def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return (v.shape, v.tobytes())
    return v


def run_target(scope: Scope, target: str | None, diags: Collector) -> tuple[A.SystemDecl | None, A.Simulate | None]:
    sims = [i for i in scope.module.items if isinstance(i, A.Simulate)]
    if target is not None:
        found = scope.find(target)
        if found is None or not isinstance(found[0], A.SystemDecl):
            names = ", ".join(d.name for d in scope.systems()) or "none"
            diags.error(Span(scope.path, 1, 1), f"no system named '{target}' in {scope.path} (declared: {names})")
            return None, None
        sim = next((s for s in sims if s.target.name == target), None)
        return found[0], sim
    if len(sims) > 1:
        diags.error(sims[1].span, "a file may have one 'simulate' item")
    if sims:
        sim = sims[0]
        found = scope.find(sim.target.name)
        if found is None or not isinstance(found[0], A.SystemDecl):
            diags.error(sim.target.span, f"simulate: unknown system '{sim.target.name}'")
            return None, None
        return found[0], sim
    runnable = [d for d in scope.systems() if d.kind in ("network", "composite", "system")]
    if not runnable:
        diags.error(Span(scope.path, 1, 1), "nothing to run: the file declares no network, composite or system")
        return None, None
    return runnable[-1], None


def apply_simulate(elab: Elaborator, scope: Scope, sim: A.Simulate | None) -> int | None:
    """Reads dt, seed and the duration from a `simulate` item; returns the number of steps."""
    if "dt" in elab.overrides:  # a duration, or a number of seconds
        raw = elab.overrides["dt"]
        v, why = _parse_quantity(raw) if isinstance(raw, str) else (static(raw), None)
        if v is None or isinstance(v.static, bool) or not isinstance(v.static, (int, float)) or \
                not (v.dim.dimensionless or v.dim == unit("s")[1]) or not 0 < v.static < math.inf:
            elab.diags.error(elab.given.span("dt"), f"--param dt={raw!r} is not a positive, finite duration"
                             + (f": {why}" if why else ""))
            raise Abort
        elab.dt = float(v.static)
    if "seed" in elab.overrides:
        raw = elab.overrides["seed"]
        v, why = _parse_quantity(raw) if isinstance(raw, str) else (static(raw), None)
        if v is None or not isinstance(v.static, int) or isinstance(v.static, bool) or v.static < 0 or outside_int(v.static):
            elab.diags.error(elab.given.span("seed"), f"--param seed={raw!r} is not a seed, an integer from 0 to "
                                                      f"2^63 - 1" + (f": {why}" if why else ""))
            raise Abort
        elab.seed = v.static
    if sim is None:
        return None
    statics = elab.statics(scope)
    b = ExprBuilder(GraphBuilder(), elab.diags, lambda n, s: statics.get(n, s))
    duration = b.static_value(sim.duration, "the simulated duration")
    time = unit("s")[1]
    for opt in sim.options:
        if opt.name == "dt":
            if "dt" not in elab.overrides:
                v = b.static_value(opt.value, "dt")
                if v.dim != time:
                    b.fail(opt.value.span, f"dt must be a duration, got {describe(v.dim)}")
                if not float(v.static) > 0:
                    b.fail(opt.value.span, "dt must be positive")
                elab.dt = float(v.static)
        elif opt.name == "seed":
            if "seed" not in elab.overrides:
                elab.seed = b.static_int(opt.value, "seed")
                if elab.seed < 0:
                    b.fail(opt.value.span, f"a seed is an integer from 0 to 2^63 - 1, got {elab.seed}")
        elif opt.name == "method":
            continue  # the default integration method: _default_method checks it, bodies read elab.default_method
        else:
            b.fail(opt.span, f"unknown simulate option '{opt.name}'; options are dt, seed, method")
    if duration.dim == time:
        return max(b.static_steps(duration, elab.dt, sim.duration.span, "the simulated duration"), 1)
    if duration.dim.dimensionless and isinstance(duration.static, int):
        return duration.static  # a number of steps (data time)
    b.fail(sim.duration.span, f"'simulate ... for' needs a duration (like 1 s) or a number of steps, got "
                              f"{describe(duration.dim)}")


def _default_method(elab: Elaborator, scope: Scope, sim: A.Simulate | None) -> str | None:
    """``simulate ..., method = m``: a method's name, or a hyperparameter holding one."""
    opt = next((o for o in sim.options if o.name == "method"), None) if sim is not None else None
    if opt is None:
        return None
    if isinstance(opt.value, A.Name) and opt.value.id in METHODS:
        return opt.value.id
    statics = elab.statics(scope)
    b = ExprBuilder(GraphBuilder(), elab.diags, lambda n, s: statics.get(n, s))
    if isinstance(opt.value, A.Name) and statics.get(opt.value.id, opt.value.span) is None:
        b.fail(opt.value.span, unknown_method(opt.value.id))
    v = b.static_value(opt.value, "the default integration method")
    if v.static not in METHODS:
        what = f"'{opt.value.id}' is" if isinstance(opt.value, A.Name) else "it is"
        b.fail(opt.value.span, f"simulate ..., method: {what} {v.static!r}, not the name of an integration method; "
                               f"the methods are {', '.join(METHODS)}")
    return v.static


def elaborate_file(path: str, sources: SourceMap, hyper: dict, target: str | None = None,
                   data: DataShapes | None = None, given: Given | None = None) -> Design:
    """Elaborate the run target of the spec at ``path`` into the ``Design`` the pipeline compiles;
    ``data`` (the shapes of the weights and inputs) binds its ``auto`` dimensions; ``given``: where
    ``hyper`` was written (default: this call).  Raises ``NspecError`` on any error."""
    elab = Elaborator(sources, hyper, given or keywords("elaborate_file", path, hyper))
    scope = elab.loader.load(path)
    elab.diags.check()
    elab.bind_overrides(scope)
    elab.diags.check()
    design = None
    try:
        decl, sim = run_target(scope, target, elab.diags)
        elab.diags.check()
        elab.main = scope
        elab.data_uses, elab.data_bound = bind(scope.module, decl, data or DataShapes(), root_overrides(elab, scope),
                                               elab.diags)
        elab.diags.check()
        steps = apply_simulate(elab, scope, sim)
        elab.default_method = _default_method(elab, scope, sim)
        args = elab.bind_args(decl, scope, None, None)
        system = elab.instantiate(decl, scope, args, decl.span)
        _check_overrides(elab, scope)
        elab.diags.check()
        hyper_items = tuple(sorted((k, _freeze(v)) for k, v in elab.overrides.items()))
        design = Design(system, decl.name, elab.dt, elab.seed, hyper_items, steps, decl.span, sources,
                        _data_dims(elab))
    except Abort:
        pass
    elab.diags.check()
    return design


def root_overrides(elab: Elaborator, root: Scope) -> dict:
    """The overrides bound to the root file's own hyperparameters, by name (what data must agree with)."""
    return {b.decl.name: b.value for b in elab.bindings.values() if b.home is root}


def _data_dims(elab: Elaborator) -> tuple[DataDim, ...]:
    """The run's data-bound dimensions as compiled (those the run target reads)."""
    statics = elab.statics(elab.main)
    return tuple(DataDim(name, int(statics.values[name].static), elab.data_sources[name], tuple(uses))
                 for name, uses in elab.data_uses.items() if name in statics.values)


def _check_overrides(elab: Elaborator, scope: Scope) -> None:
    """The type and one_of checks of the overridden hyperparameters that nothing read."""
    for binding in elab.bindings.values():
        try:
            elab.statics(binding.home).get(binding.decl.name, binding.decl.span)
        except Abort:
            pass


def check_module(path: str, sources: SourceMap, hyper: dict, given: Given | None = None) -> list[Diagnostic]:
    """Every diagnostic of one file: each declaration instantiated with its defaults, plus the run target.
    ``given``: where ``hyper`` was written (default: this call)."""
    elab = Elaborator(sources, hyper, given or keywords("check_module", path, hyper))
    scope = elab.loader.load(path)
    if scope is None or elab.diags.has_errors:
        return elab.diags.items
    elab.bind_overrides(scope)
    elab.main = scope
    elab.data_uses = bind(scope.module, run_target(scope, None, Collector())[0], None, root_overrides(elab, scope),
                          elab.diags)[0]
    if elab.diags.has_errors:  # a data-bound dimension's declaration is wrong: what uses it would only echo that
        return elab.diags.items
    statics = elab.statics(scope)
    for item in scope.module.items:
        try:
            if isinstance(item, (A.Hyper, A.Const)):
                statics.get(item.name, item.span)
        except Abort:
            pass
    sims = [i for i in scope.module.items if isinstance(i, A.Simulate)]
    if len(sims) > 1:  # as running it would say
        elab.diags.error(sims[1].span, "a file may have one 'simulate' item")
    try:
        sim_steps = apply_simulate(elab, scope, sims[0] if sims else None)
        del sim_steps
    except Abort:
        pass
    try:
        elab.default_method = _default_method(elab, scope, sims[0] if sims else None)
    except Abort:
        elab.default_method = None
    for s in sims:
        if scope.find(s.target.name) is None:
            elab.diags.error(s.target.span, f"simulate: unknown system '{s.target.name}'")
    needs_data = unbound_without_data(scope.module, root_overrides(elab, scope))
    for decl in scope.systems():
        if any(p.default is None for p in decl.params) or decl.kind == "synapse":
            continue  # templates and synapses are checked where they are used
        if reads(decl, needs_data):
            continue  # sized by data: checked when it runs with its weights or inputs
        try:
            system = elab.instantiate(decl, scope, elab.bind_args(decl, scope, None, None), decl.span)
            if decl.kind in ("network", "composite"):
                system = flatten(system, elab.diags)
            check_weight_keys(system.params, elab.diags)
            elab.diags.extend(static_errors(system.step, system.init))
        except Abort:
            pass
    _check_overrides(elab, scope)
    _check_test_blocks(elab, scope)
    return unique(elab.diags.items)


def _check_test_blocks(elab: Elaborator, scope: Scope) -> None:
    overrides = Overrides(elab.loader, scope)
    for test in (i for i in scope.module.items if isinstance(i, A.Test)):
        sets = {s.name: s.span for s in test.body if isinstance(s, A.SetStmt)}

        def error(span: Span, message: str, *notes: str) -> None:
            elab.diags.error(span, f"test \"{test.name}\": {message}", *notes)

        overrides.bind(dict.fromkeys(sets), sets.__getitem__, error)
        for stmt in test.body:
            if isinstance(stmt, A.Let) and stmt.index is not None:
                elab.diags.error(stmt.index.span, f"test \"{test.name}\": families of names ('let {stmt.name}[...]') "
                                                  "are declared in systems; a test's 'let' names one value")
            if isinstance(stmt, A.Run) and stmt.target is not None and scope.find(stmt.target.name) is None:
                elab.diags.error(stmt.target.span, f"test \"{test.name}\": unknown system '{stmt.target.name}'")

