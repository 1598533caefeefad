"""Integration schemes for continuous equations, written as data (Brian2's lesson).

Every method is one entry of ``INTEGRATORS``: the explicit Runge-Kutta schemes are Butcher
tableaus run by ``explicit_rk``; ``exp_euler`` and ``exact`` need the equations' linear
structure.  Elaboration emits an ``INTEGRATE`` node (``ops.IntegrateAttrs``) per group of
equations; ``passes/discretize_odes.py`` replaces it by the nodes ``discretize`` builds here.

What a scheme reads is a ``Problem``: the states, the right-hand side f as a function of state
values (the INTEGRATE's ``rhs`` graph inlined once per stage), and the probes its entry asks
for: f evaluated with states fixed to constants.  Probes are computed by the elaborator, since
an expression with a literal in place of a state folds at compile time (in float64, with the
language's untyped literals), which the IR cannot redo bit for bit.  Exact integration is the
matrix exponential of the constant coefficient matrix A (measured at elaboration by probing
the right-hand side in float64), computed once at compile time.

Stochastic equations dx/dt = f(x) + sum_k g_k(x) xi_k (white noise; Stratonovich, as in Brian2,
which matters only for multiplicative noise, g depending on the states) are integrated by an
entry's ``stochastic`` scheme, with dW_k = sqrt(dt) N_k and N_k the step's N(0, 1) draws:
Euler-Maruyama x + f dt + sum_k g_k dW_k for ``euler`` (additive noise only), stochastic Heun
for ``heun`` and Brian2's derivative-free Milstein scheme for ``milstein``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from nspec.dsl.diagnostics import Collector, NspecError, SourceMap, Span

from .expressions import Abort, ExprBuilder, Val, static
from .interpret import evaluate
from .ir import DType, Graph, GraphBuilder, IRError, Node, Op
from .ops import Folded, IntegrateAttrs
from .units import DIMENSIONLESS

# (a: lower-triangular stage coefficients, b: weights).  x_new = x + dt * sum_i b_i k_i,
# k_i = f(x + dt * sum_j a_ij k_j).
Tableau = tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class Probe:
    """An evaluation of the right-hand side that a scheme needs, with states fixed to ``value``:
    one state at a time (the others keep their values) when ``each``, else all of them.  The
    elaborator supplies it as the INTEGRATE input ``f"{state}@{label}"``."""

    label: str
    value: float
    each: bool


@dataclass(frozen=True)
class Problem:
    """One INTEGRATE node, as values of the graph being built: what a scheme reads."""

    b: ExprBuilder
    xs: dict[str, Val]                              # the states' current values
    f: Callable[[dict[str, Val]], dict[str, Val]]   # the derivatives at the given state values
    probes: dict[str, Val]                          # f"{state}@{label}" -> value
    dt: float
    spans: dict[str, Span]
    coefficients: np.ndarray | None                 # A of dx/dt = A x + b(t) (linear schemes)
    hold: Val | None                                # refractory: ``held`` keep their value
    held: tuple[str, ...]
    # white noise: f and the factors g at the given state values (state -> noise -> g), from one
    # copy of the right-hand side; the step's N(0, 1) draw of each noise; the states whose
    # factors depend on the states (multiplicative noise)
    sde: Callable[[dict[str, Val]], tuple[dict[str, Val], dict[str, dict[str, Val]]]] | None = None
    noise: dict[str, Val] = field(default_factory=dict)
    multiplicative: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Integrator:
    """One integration method: ``build(problem) -> new state values``, the probes it reads and,
    for ``kind == "explicit_rk"``, its Butcher tableau; ``stochastic`` builds the step of
    equations with noise (None: the method cannot integrate noise)."""

    name: str
    kind: str            # explicit_rk | exp_euler | exact
    build: Callable[[Problem], dict[str, Val]]
    tableau: Tableau | None = None
    probes: tuple[Probe, ...] = ()
    linear: bool = False  # needs constant coefficients (measured at elaboration)
    stochastic: Callable[[Problem], dict[str, Val]] | None = None
    noise: str | None = None       # the noise ``stochastic`` integrates: additive | multiplicative
    max_noises: int | None = None  # independent noises one group of equations may have (None: any)


def explicit_rk(tableau: Tableau, xs: dict, f: Callable[[dict], dict], axpy: Callable, dt: float) -> dict:
    """New values of the states ``xs`` after one step of the explicit scheme ``tableau``.

    ``f(values) -> derivatives`` evaluates the right-hand sides with the given state values;
    ``axpy(x, [(coef, k), ...])`` builds ``x + sum coef * k`` as graph nodes.
    """
    a, b = tableau
    ks: list[dict] = []
    for i in range(len(b)):
        if i == 0:
            stage = xs
        else:
            stage = {name: axpy(x, [(dt * a[i - 1][j], ks[j][name]) for j in range(i) if a[i - 1][j]])
                     for name, x in xs.items()}
        ks.append(f(stage))
    return {name: axpy(x, [(dt * b[i], ks[i][name]) for i in range(len(b)) if b[i]]) for name, x in xs.items()}


@dataclass(frozen=True)
class Propagator:
    """x_new = phi @ x + gamma @ b, where dx/dt = A x + b(t) and b is held constant over a step."""

    phi: np.ndarray
    gamma: np.ndarray


def propagator(a: np.ndarray, dt: float) -> Propagator:
    """Exact one-step propagator of dx/dt = A x + b (A constant), via the augmented exponential."""
    from scipy.linalg import expm  # on first use: only exact integration needs scipy (~0.15 s to load)

    k = a.shape[0]
    aug = np.zeros((2 * k, 2 * k))
    aug[:k, :k] = a * dt
    aug[:k, k:] = np.eye(k) * dt
    e = expm(aug)
    return Propagator(e[:k, :k], e[:k, k:])


def linear_coefficients(graph: Graph, names: list[str]) -> np.ndarray | None:
    """The constant matrix A of dx/dt = A x + b, where ``graph``'s ``value`` result of each of
    ``names`` is dx/dt and its ARGs read the states ``names`` and everything else f reads; None
    if f is not linear in the states with coefficients that are constant (the same for two
    random draws of the other arguments, and for every cell)."""
    args = {n.attr("name"): (n.dtype, n.shape) for n in graph.nodes if n.op is Op.ARG}
    rng = np.random.default_rng(0)
    columns = []
    for _trial in range(2):
        base = {n: rng.normal(size=s).astype(t.numpy) if t.is_float else np.ones(s, t.numpy)
                for n, (t, s) in args.items()}

        def f(point: dict[str, float]) -> np.ndarray:
            env_vals = dict(base)
            for n in names:
                env_vals[n] = np.full(args[n][1], point.get(n, 0.0), dtype=np.float64).astype(args[n][0].numpy)
            with np.errstate(all="ignore"):
                res = evaluate(graph, env_vals)
            return np.stack([np.asarray(res[(n, "value")], dtype=np.float64).reshape(-1) for n in names])

        f0 = f({})
        a = np.stack([f({n: 1.0}) - f0 for n in names], axis=1)  # [k, k, cells]
        two = f({names[0]: 2.0}) - f0
        if not (np.allclose(two, 2 * a[:, 0], rtol=1e-5, atol=1e-9) and np.all(np.isfinite(a))):
            return None
        columns.append(a)
    a0, a1 = columns
    if not np.allclose(a0, a1, rtol=1e-6, atol=1e-12) or not np.allclose(a0, a0[..., :1], rtol=1e-6, atol=1e-12):
        return None
    return a0[..., 0]


# ---------------------------------------------------------------- arithmetic on values
def fit(b: ExprBuilder, v: Val, dtype: DType, shape: tuple[int, ...], span: Span) -> Val:
    """``v`` cast and broadcast to a state's type (the elaborator checked that it fits)."""
    v = b.cast(v, dtype, span)
    if v.shape != tuple(shape):
        v = b.add(Op.BROADCAST, [v], dtype, shape, v.dim, span)
    return v


def hold_states(p: Problem, new: dict[str, Val]) -> dict[str, Val]:
    """The states ``p.held`` keep their value while ``p.hold`` (refractory) is true."""
    for name in p.held:
        new[name] = p.b.select(p.hold, p.xs[name], new[name], p.spans[name])
    return new


def axpy(b: ExprBuilder, x: Val, terms, span: Span) -> Val:
    """``x + sum coef * k`` for ``terms`` = [(coef, k), ...], coef a number or a value."""
    acc = x
    for coef, k in terms:
        acc = b.binary("+", acc, b.binary("*", static(coef) if isinstance(coef, float) else coef, k, span), span)
    return acc


# ---------------------------------------------------------------- schemes
def _explicit(tableau: Tableau) -> Callable[[Problem], dict[str, Val]]:
    def build(p: Problem) -> dict[str, Val]:
        span = next(iter(p.spans.values()))
        return hold_states(p, explicit_rk(tableau, p.xs, p.f, lambda x, terms: axpy(p.b, x, terms, span), p.dt))

    return build


def _euler_maruyama(p: Problem) -> dict[str, Val]:
    """x_new = x + f(x) dt + sum_k g_k dW_k, dW_k = sqrt(dt) N_k: for additive noise (g_k free of
    the states), where Ito and Stratonovich agree; held states hold their noise too."""
    f, g = p.sde(p.xs)
    dw = _increments(p)
    return hold_states(p, {n: axpy(p.b, x, [(p.dt, f[n]), *((dw[k], gk) for k, gk in g[n].items())], p.spans[n])
                           for n, x in p.xs.items()})


def _stochastic_heun(p: Problem) -> dict[str, Val]:
    """Heun's predictor-corrector with the noise (Stratonovich, as Brian2 reads multiplicative noise):
    x~ = x + f(x) dt + sum_k g_k(x) dW_k, x_new = x + (f(x) + f(x~)) dt / 2 + sum_k (g_k(x) + g_k(x~)) dW_k / 2;
    without noise it is the deterministic ``heun`` tableau."""
    f, g = p.sde(p.xs)
    dw = _increments(p)
    guess = {n: axpy(p.b, x, [(p.dt, f[n]), *((dw[k], gk) for k, gk in g[n].items())], p.spans[n])
             for n, x in p.xs.items()}
    f2, g2 = p.sde(guess)
    span = next(iter(p.spans.values()))
    half = {k: p.b.binary("*", static(0.5), v, span) for k, v in dw.items()}
    return hold_states(p, {n: axpy(p.b, x, [(p.dt / 2, f[n]), (p.dt / 2, f2[n]),
                                            *((half[k], gk) for k, gk in g[n].items()),
                                            *((half[k], gk) for k, gk in g2[n].items())], p.spans[n])
                           for n, x in p.xs.items()})


def _milstein(p: Problem) -> dict[str, Val]:
    """Brian2's derivative-free Milstein scheme (Stratonovich) for one noise, dW = sqrt(dt) N:
    x_s = x + f dt + g sqrt(dt), x_new = x + f dt + g dW + (g(x_s) - g(x)) dW^2 / (2 sqrt(dt)).
    The correction vanishes for additive noise: then it is Euler-Maruyama, node for node."""
    b, dt = p.b, p.dt
    f, g = p.sde(p.xs)
    dw = _increments(p)
    new = {n: axpy(b, x, [(dt, f[n]), *((dw[k], gk) for k, gk in g[n].items())], p.spans[n]) for n, x in p.xs.items()}
    if not p.multiplicative:
        return hold_states(p, new)
    (noise,) = p.noise  # the elaborator allows milstein one noise per group (max_noises)
    root = math.sqrt(dt)
    support = {n: axpy(b, x, [(dt, f[n]), *((root, gk) for gk in g[n].values())], p.spans[n]) for n, x in p.xs.items()}
    _, g_support = p.sde(support)
    span = next(iter(p.spans.values()))
    square = b.binary("*", static(1 / (2 * root)), b.binary("*", dw[noise], dw[noise], span), span)
    for n in sorted(p.multiplicative, key=list(p.xs).index):
        if noise in g[n]:
            new[n] = axpy(b, new[n], [(square, b.binary("-", g_support[n][noise], g[n][noise], p.spans[n]))],
                          p.spans[n])
    return hold_states(p, new)


def _increments(p: Problem) -> dict[str, Val]:
    """Each noise's Wiener increment dW = sqrt(dt) N over this step."""
    span = next(iter(p.spans.values()))
    return {k: p.b.binary("*", static(math.sqrt(p.dt)), v, span) for k, v in p.noise.items()}


def _exp_euler(p: Problem) -> dict[str, Val]:
    """x' = -B/A + (x + B/A) exp(A dt) for dx/dt = A x + B, A and B evaluated at the current state."""
    b = p.b
    out = {}
    for name, x in p.xs.items():
        span = p.spans[name]
        f0, f1 = p.probes[f"{name}@at0"], p.probes[f"{name}@at1"]
        a = b.binary("-", f1, f0, span)
        dt = static(p.dt)
        adt = b.binary("*", a, dt, span)
        if adt.is_static or adt.weak:
            adt = replace(adt, dtype=x.dtype, weak=False)  # keep the state's precision in exp()
        decay = b.add(Op.EXP, [adt], adt.dtype, adt.shape, DIMENSIONLESS, span)
        safe_a = b.select(b.binary("==", a, static(0.0), span), static(1.0), a, span)
        ratio = b.binary("/", f0, safe_a, span)
        exp_step = b.binary("-", b.binary("*", b.binary("+", x, ratio, span), decay, span), ratio, span)
        euler = b.binary("+", x, b.binary("*", f0, dt, span), span)
        out[name] = b.select(b.binary("==", a, static(0.0), span), euler, exp_step, span)
    return hold_states(p, out)


def _apply_propagator(p: Problem, forcing: dict[str, Val], prop: Propagator) -> dict[str, Val]:
    b = p.b
    names = list(p.xs)
    out = {}
    for i, n in enumerate(names):
        span, x = p.spans[n], p.xs[n]
        acc = None
        for j, m in enumerate(names):
            coef = float(prop.phi[i, j])
            if coef != 0.0:
                term = b.binary("*", static(coef), p.xs[m], span)
                acc = term if acc is None else b.binary("+", acc, term, span)
        for j, m in enumerate(names):
            coef = float(prop.gamma[i, j])
            if coef != 0.0 and not (forcing[m].is_static and np.all(np.asarray(forcing[m].static) == 0)):
                term = b.binary("*", static(coef), forcing[m], span)
                acc = term if acc is None else b.binary("+", acc, term, span)
        if acc is None:
            acc = replace(static(0.0), dtype=x.dtype)
        out[n] = fit(b, acc, x.dtype, x.shape, span)
    return out


def _exact(p: Problem) -> dict[str, Val]:
    """x_new = phi x + gamma b(t): the propagator of the constant matrix A; while refractory,
    the held states' rows are frozen (identity) and the others see them as constants."""
    names = list(p.xs)
    a = p.coefficients
    forcing = {n: p.probes[f"{n}@forcing"] for n in names}  # b(t): f with every state at 0
    active = propagator(a, p.dt)
    out = _apply_propagator(p, forcing, active)
    if p.held:
        mask = np.array([n in p.held for n in names])
        frozen = propagator(np.where(mask[:, None], 0.0, a), p.dt)
        frozen = Propagator(np.where(mask[:, None], np.eye(len(names)), frozen.phi),
                            np.where(mask[:, None], 0.0, frozen.gamma))
        alt = _apply_propagator(p, forcing, frozen)
        for i, n in enumerate(names):
            if not (np.allclose(frozen.phi[i], active.phi[i]) and np.allclose(frozen.gamma[i], active.gamma[i])):
                out[n] = p.b.select(p.hold, alt[n], out[n], p.spans[n])
    return out


_AT_0_AND_1 = (Probe("at0", 0.0, each=True), Probe("at1", 1.0, each=True))
_FORCING = (Probe("forcing", 0.0, each=False),)
_TABLEAUS: tuple[tuple[str, Tableau], ...] = (
    ("euler", ((), (1.0,))),
    ("midpoint", (((0.5,),), (0.0, 1.0))),
    ("heun", (((1.0,),), (0.5, 0.5))),
    ("rk4", (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6))),
)

# explicit schemes that also integrate noise: the scheme and the noise it takes (Brian2's ``stochastic``)
_STOCHASTIC = {"euler": {"stochastic": _euler_maruyama, "noise": "additive"},
               "heun": {"stochastic": _stochastic_heun, "noise": "multiplicative"}}

# Every integration method (the order is the one diagnostics list them in).
INTEGRATORS: dict[str, Integrator] = {i.name: i for i in (
    Integrator("exact", "exact", _exact, probes=_FORCING, linear=True),
    Integrator("exp_euler", "exp_euler", _exp_euler, probes=_AT_0_AND_1),
    *(Integrator(name, "explicit_rk", _explicit(t), tableau=t, **_STOCHASTIC.get(name, {})) for name, t in _TABLEAUS),
    # deterministic equations: Euler; with one noise: Milstein (strong order 1 for multiplicative noise)
    Integrator("milstein", "explicit_rk", _explicit(_TABLEAUS[0][1]), tableau=_TABLEAUS[0][1], stochastic=_milstein,
               noise="multiplicative", max_noises=1),
)}
METHODS = tuple(INTEGRATORS)


def unknown_method(name: str) -> str:
    """The message for a method name that is neither a method nor a compile-time string holding one:
    the methods, and the nearest one."""
    close = difflib.get_close_matches(name, METHODS, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (f"unknown integration method '{name}'; use {', '.join(METHODS)}, or a hyperparameter or "
            f"template parameter that holds one of these names{hint}")


# The method of an equation with noise that names none, by the kind of its noise (Brian2's choice):
# Euler-Maruyama for additive noise, stochastic Heun for multiplicative noise.
STOCHASTIC_AUTO = {"additive": "euler", "multiplicative": "heun"}


# ---------------------------------------------------------------- INTEGRATE -> nodes
def inline(g: GraphBuilder, graph: Graph, args: dict[str, int]) -> dict[int, int]:
    """Copy ``graph`` into ``g`` with its ARG nodes replaced by ``args`` (name -> node of ``g``):
    old index -> new index."""
    new: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        new[i] = args[n.attr("name")] if n.op is Op.ARG else g.add(n.op, [new[j] for j in n.inputs], n.dtype,
                                                                     n.shape, n.attrs, n.span)
    return new


def _val(v: Folded) -> Val:
    return Val(v.dtype, v.shape, DIMENSIONLESS, None, v.value, v.weak)


def discretize(b: ExprBuilder, node: Node, inputs: list[int]) -> list[int]:
    """The nodes (built with ``b``) of the new states of an INTEGRATE whose inputs are ``inputs``."""
    a: IntegrateAttrs = node.attrs
    g = b.g
    folded = {name: _val(v) for name, v in a.folded}
    given = dict(zip((*a.names, *a.reads, *a.probes), inputs))

    def value(i: int) -> Val:  # units were checked at elaboration: the scheme computes without them
        return Val(g.nodes[i].dtype, g.nodes[i].shape, DIMENSIONLESS, i)

    vals = {name: value(i) for name, i in given.items()}
    xs = {name: vals[name] for name in a.names}

    def sde(stage: dict[str, Val]) -> tuple[dict[str, Val], dict[str, dict[str, Val]]]:
        new = inline(g, a.rhs, {**given, **{n: b.node(v, node.span) for n, v in stage.items()}})

        def term(key: str, kind: str) -> Val:
            return folded[key] if key in folded else value(new[a.rhs.result(key, kind).node])

        return ({n: term(n, "deriv") for n in a.names},
                {n: {k: term(f"{n}@{k}", "value") for k in a.noises if f"{n}@{k}" in factor_keys} for n in a.names})

    factor_keys = {r.name for r in a.rhs.results if r.kind == "value"} | set(folded)
    hold = value(inputs[-1]) if a.held else None
    spans = dict(zip(a.names, a.spans or (node.span,) * len(a.names)))
    probes = {**{n: vals[n] for n in a.probes}, **folded}
    coefficients = None if a.coefficients is None else np.array(a.coefficients, dtype=np.float64)
    problem = Problem(b, xs, lambda stage: sde(stage)[0], probes, a.dt, spans, coefficients, hold, a.held,
                      sde, {k: vals[k] for k in a.noises}, multiplicative(a))
    integrator = INTEGRATORS[a.method]
    try:
        new = (integrator.stochastic if a.noises else integrator.build)(problem)
    except Abort:
        # A user's constant out of range in the update (dt = 1e308 ms makes dt/tau overflow f32): the
        # builder's located diagnostics, with the step that produced them.
        note = f"while integrating with {a.method} at dt = {a.dt:g} s"
        raise NspecError([replace(d, notes=(*d.notes, note)) for d in b.diags.items], SourceMap()) from None
    types = a.item_types()
    out = []
    for name, (dtype, shape) in zip(a.names, types):
        v = new[name]
        i = b.node(v, spans[name])
        if (g.nodes[i].dtype, g.nodes[i].shape) != (dtype, shape):
            raise IRError(f"integrate at {spans[name]}: {a.method} gives state {name!r} "
                          f"{g.nodes[i].dtype.value}{list(g.nodes[i].shape)}, not {dtype.value}{list(shape)}")
        out.append(i)
    return out


def multiplicative(a: IntegrateAttrs) -> frozenset[str]:
    """The states of ``a`` whose noise factors depend on the integrated states (else the noise is
    additive and Milstein's correction vanishes)."""
    graph = a.rhs
    depends: set[int] = set()
    for i, n in enumerate(graph.nodes):
        if (n.op is Op.ARG and n.attr("name") in a.names) or any(j in depends for j in n.inputs):
            depends.add(i)
    return frozenset(n for n in a.names for k in a.noises
                     if (r := graph.result(f"{n}@{k}", "value")) is not None and r.node in depends)


def builder(g: GraphBuilder) -> ExprBuilder:
    """An expression builder over ``g`` for schemes (they name no variables)."""
    return ExprBuilder(g, Collector(), lambda name, span: None)
