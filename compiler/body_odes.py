"""Continuous equations of a body: ``dv/dt = ...`` becomes INTEGRATE nodes, one per group of
equations sharing a method, each carrying its right-hand side f as a graph (``rhs_graph``), the
probes its scheme needs and, for linear schemes, the constant matrix A measured by probing f.
The discretize-odes pass later expands each node with ``compiler/discretize.py``'s schemes.

White noise (Brian2's ``xi``, ``xi_1``, ``xi_<name>``, of unit s^-1/2): an equation must read
dx/dt = f + sum_k g_k * xi_k (``split_noise``).  Its drift f takes the right-hand side's place;
each factor g_k is a ``value`` result ``f"{x}@{xi_k}"`` of the rhs graph; each noise name is one
N(0, 1) draw per element and step (``builtins_random.standard_normal``), made here in the step
graph (so the number-streams pass numbers it) and shared by every equation that names it, which
the INTEGRATE reads like an input (``IntegrateAttrs.noises``).  Equations with noise are
integrated by Euler-Maruyama unless they name another method that accepts noise.

Every function takes the ``Body`` being elaborated; ``Body.integrate`` is the entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .body_env import TIME, Env
from .builtins_random import standard_normal
from .discretize import INTEGRATORS, STOCHASTIC_AUTO, linear_coefficients
from .expressions import NOISE_NAME, Abort, ExprBuilder, Val, static
from .ir import DType, Graph, GraphBuilder, Op
from .ops import Folded, IntegrateAttrs
from .units import Dim, describe

if TYPE_CHECKING:  # annotations only: bodies.py imports this module
    from .bodies import Body

XI = TIME ** -0.5  # the unit of white noise: its integral over dt grows like sqrt(dt)

# noise name -> its factor g in dx/dt = f + g * xi, in the order the noises first appear
Factors = dict[str, A.Expr]


@dataclass(frozen=True, slots=True)
class Split:
    """An equation dx/dt = drift + sum factors[xi] * xi, split at its white-noise terms."""

    drift: A.Ode            # the equation with its noise terms removed
    factors: Factors
    zero_drift: bool        # the equation is noise only (dx/dt = g * xi): its drift 0 has any unit
    reads_state: str | None = None  # a state with a continuous equation that a factor reads (multiplicative noise)


def integrate(body: Body, env: Env, odes: dict[str, A.Ode], default: str | None, hold: Val | None) -> dict[str, Val]:
    """The new values of the states of ``odes``: one INTEGRATE node per method's group."""
    b = env.b
    splits: dict[str, Split] = {}
    for name, ode in odes.items():
        try:
            splits[name] = split_ode(body, b, ode)
        except Abort:
            pass
    if len(splits) < len(odes):
        raise Abort
    splits = check_terms(body, b, splits)
    odes = {name: s.drift for name, s in splits.items()}
    draws = noise_draws(body, b, splits)
    groups: dict[str, list[str]] = {}
    for name, ode in odes.items():
        groups.setdefault(group_method(body, b, ode, splits[name], default), []).append(name)
    held = {n for n, o in odes.items() if o.unless == "refractory"} if hold is not None else set()
    out: dict[str, Val] = {}
    for method, names in groups.items():
        noise = {n: splits[n].factors for n in names}
        check_noises_per_method(b, method, {n: odes[n] for n in names}, noise)
        out.update(integrate_group(body, env, {n: odes[n] for n in names}, method, hold, held, noise, draws))
    return out


# ---------------------------------------------------------------- white noise
def split_ode(body: Body, b: ExprBuilder, ode: A.Ode) -> Split:
    """``ode`` split at its noise terms; a noise used other than as a term g * xi is a located error."""
    def is_noise(name: str) -> bool:  # a declared name shadows the noise symbol
        return (NOISE_NAME.fullmatch(name) is not None and name not in body.decls and name not in body.lets
                and body.static(name, ode.rhs.span) is None)

    try:
        drift, factors = split_noise(ode.rhs, is_noise)
    except NonLinear as exc:
        span, noise, what = exc.args
        b.fail(span, f"d{ode.var}/dt must be linear in its noise, f + g * {noise}: here '{noise}' is {what}")
    zero = drift is None
    return Split(replace(ode, rhs=A.Number(ode.rhs.span, 0, True) if zero else drift), factors, zero)


class NonLinear(Exception):
    """A noise enters an expression other than as a term g * xi: args (span, noise name, what)."""


def split_noise(e: A.Expr, is_noise: Callable[[str], bool]) -> tuple[A.Expr | None, Factors]:
    """``e`` as drift + sum_k factor_k * xi_k: the drift (None when it is 0) and the factors."""
    noises = [n for n in A.walk(e) if isinstance(n, A.Name) and is_noise(n.id)]
    if not noises:
        return e, {}
    rule = SPLIT_RULES.get((type(e).__name__, getattr(e, "op", None)))
    if rule is None:
        what = NONLINEAR.get(getattr(e, "op", None)) or NONLINEAR.get(type(e).__name__, "inside this expression")
        raise NonLinear(e.span, noises[0].id, what)
    return rule(e, is_noise)


def _noise(e: A.Name, is_noise) -> tuple[A.Expr | None, Factors]:
    return None, {e.id: A.Number(e.span, 1, True)}


def _plus(e: A.Unary, is_noise) -> tuple[A.Expr | None, Factors]:
    return split_noise(e.operand, is_noise)


def _minus(e: A.Unary, is_noise) -> tuple[A.Expr | None, Factors]:
    drift, factors = split_noise(e.operand, is_noise)
    return _negate(drift), {k: _negate(g) for k, g in factors.items()}


def _sum(e: A.Binary, is_noise) -> tuple[A.Expr | None, Factors]:
    (dl, fl), (dr, fr) = split_noise(e.left, is_noise), split_noise(e.right, is_noise)
    factors = dict(fl)
    for k, g in fr.items():
        factors[k] = _combine(e.op, factors.get(k), g, e.span)
    return _combine(e.op, dl, dr, e.span), factors


def _product(e: A.Binary, is_noise) -> tuple[A.Expr | None, Factors]:
    (dl, fl), (dr, fr) = split_noise(e.left, is_noise), split_noise(e.right, is_noise)
    if fl and fr:
        raise NonLinear(e.span, next(iter(fr)), "multiplied by a noise")
    if fl:  # (dl + g xi) * right
        return (None if dl is None else A.Binary(e.span, "*", dl, e.right)), \
            {k: _times(g, e.right, e.span) for k, g in fl.items()}
    return (None if dr is None else A.Binary(e.span, "*", e.left, dr)), \
        {k: _times(e.left, g, e.span) for k, g in fr.items()}


def _quotient(e: A.Binary, is_noise) -> tuple[A.Expr | None, Factors]:
    dl, fl = split_noise(e.left, is_noise)
    _, fr = split_noise(e.right, is_noise)
    if fr:
        raise NonLinear(e.span, next(iter(fr)), "in a denominator")
    return (None if dl is None else A.Binary(e.span, "/", dl, e.right)), \
        {k: A.Binary(e.span, "/", g, e.right) for k, g in fl.items()}


def _negate(e: A.Expr | None) -> A.Expr | None:
    return None if e is None else A.Unary(e.span, "-", e)


def _combine(op: str, a: A.Expr | None, c: A.Expr | None, span: Span) -> A.Expr | None:
    """a op c for op + or -, either side possibly 0 (None)."""
    if c is None:
        return a
    if a is None:
        return c if op == "+" else _negate(c)
    return A.Binary(span, op, a, c)


def _times(a: A.Expr, c: A.Expr, span: Span) -> A.Expr:
    """a * c, without the factor 1 that a bare noise name starts with."""
    if isinstance(a, A.Number) and a.value == 1:
        return c
    if isinstance(c, A.Number) and c.value == 1:
        return a
    return A.Binary(span, "*", a, c)


# How a noise may appear in a right-hand side: (node type, operator) -> its rule.  Anything else
# that contains a noise is not linear in it.
SPLIT_RULES = {
    ("Name", None): _noise,       # xi -> 0 + 1 * xi
    ("Unary", "+"): _plus,        # +(f + g xi) -> f + g xi
    ("Unary", "-"): _minus,       # -(f + g xi) -> -f + (-g) xi
    ("Binary", "+"): _sum,        # (f1 + g1 xi) + (f2 + g2 xi) -> (f1 + f2) + (g1 + g2) xi
    ("Binary", "-"): _sum,        # (f1 + g1 xi) - (f2 + g2 xi) -> (f1 - f2) + (g1 - g2) xi
    ("Binary", "*"): _product,    # (f + g xi) * c -> f c + (g c) xi, c free of noise
    ("Binary", "/"): _quotient,   # (f + g xi) / c -> f / c + (g / c) xi, c free of noise
}
# What a noise is where it is not a term g * xi, by operator or node type (for the diagnostic).
NONLINEAR = {"^": "raised to a power", "%": "under a remainder", "@": "in a matrix product",
             "and": "in a logical operation", "or": "in a logical operation", "not": "in a logical operation",
             "Call": "inside a function call", "Compare": "in a comparison", "Index": "indexed", "ListExpr": "in a list",
             "Attribute": "under an attribute"}


def readable(dim: Dim) -> str:
    """``describe`` for units with a half power of seconds, which noise terms have: ``V*s^-1/2``
    (V per square root of a second), ``V/s*s^-1/2``."""
    if dict(dim.exps).get(TIME.exps[0][0], 0.0) % 1 != 0.5:
        return describe(dim)
    rest = dim * TIME ** 0.5
    return "s^-1/2" if rest.dimensionless else f"{describe(rest)}*s^-1/2"


def check_terms(body: Body, b: ExprBuilder, splits: dict[str, Split]) -> dict[str, Split]:
    """Every drift is the state's unit per second, every noise term g * xi too (xi is s^-1/2),
    and a factor g fits the state's shape; all mistakes are reported, then ``Abort``.  Returns
    ``splits`` with ``reads_state`` set where a factor reads a state with a continuous equation."""
    scratch = GraphBuilder()  # the check must not leave an unused copy of f in the step graph
    check = Env(body, scratch, overrides=rhs_args(body, scratch, splits))
    failed = False
    out: dict[str, Split] = {}
    for name, split in splits.items():
        x = body.decls[name].val
        want = x.dim / TIME
        try:
            probe = check.b.expr(split.drift.rhs)
            if probe.dim != want and not split.zero_drift:
                part = " without its noise terms" if split.factors else ""
                b.fail(split.drift.rhs.span, f"unit mismatch: d{name}/dt must be {describe(want)} (the unit of {name} "
                                             f"per second), the right-hand side{part} is {describe(probe.dim)}")
            if probe.dtype is DType.bool:
                b.fail(split.drift.rhs.span, f"d{name}/dt must be a number, not a bool")
        except Abort:
            failed = True
        reads = []
        for noise, factor in split.factors.items():
            try:
                g = check.b.expr(factor)
                check_factor(b, g, noise, name, x, factor.span)
                reads += states_read(scratch.build(), g, splits)
            except Abort:
                failed = True
        out[name] = replace(split, reads_state=reads[0] if reads else None)
    if failed:
        raise Abort
    return out


def states_read(graph: Graph, v: Val, states) -> list[str]:
    """The ``states`` (state ARGs of ``graph``) that the value ``v`` depends on."""
    if v.is_static:
        return []
    return [graph.nodes[i].attr("name") for i in sorted(graph.reachable([v.node]))
            if graph.nodes[i].op is Op.ARG and graph.nodes[i].attr("name") in states]


def check_factor(b: ExprBuilder, g: Val, noise: str, name: str, x: Val, span: Span) -> None:
    """The factor ``g`` of ``noise`` in d``name``/dt: a number of the state's unit per sqrt(second)."""
    want = x.dim / TIME
    if g.dtype is DType.bool:
        b.fail(span, f"the factor of {noise} in d{name}/dt must be a number, not a bool")
    if g.dim * XI != want:
        missing = want / (g.dim * XI)
        hint = {TIME ** -0.5: f"; a factor like sqrt(2 / tau) or tau^-0.5 is missing (sigma * sqrt(2 / tau) * "
                              f"{noise} has the unit of sigma per second)",
                TIME ** 0.5: f"; divide by sqrt(tau), not by tau"}.get(missing, "")
        b.fail(span, f"unit mismatch: the noise term of d{name}/dt is {readable(g.dim * XI)}, it must be "
                     f"{describe(want)} (the unit of {name} per second); {noise} has unit s^-1/2, so its factor "
                     f"must be {readable(want / XI)}, not {readable(g.dim)}{hint}")
    try:
        fits = np.broadcast_shapes(g.shape, x.shape) == tuple(x.shape)
    except ValueError:
        fits = False
    if not fits:
        b.fail(span, f"the factor of {noise} in d{name}/dt has shape {list(g.shape)}, which does not fit the "
                     f"state's shape {list(x.shape)}")


def noise_draws(body: Body, b: ExprBuilder, splits: dict[str, Split]) -> dict[str, Val]:
    """One N(0, 1) draw per noise name, of the shape of the states it drives, in the step graph."""
    draws: dict[str, Val] = {}
    for name, split in splits.items():
        shape = body.decls[name].val.shape
        for noise in split.factors:
            if noise not in draws:
                draws[noise] = standard_normal(b, shape, split.drift.span)
            elif draws[noise].shape != shape:
                b.fail(split.drift.span, f"'{noise}' drives states of shapes {list(draws[noise].shape)} and "
                                         f"{list(shape)}; one noise is one draw per element, so it needs one shape "
                                         f"(use another name, like {noise}_2, for an independent noise)")
    return draws


def group_method(body: Body, b: ExprBuilder, ode: A.Ode, split: Split, default: str | None) -> str:
    """The method integrating ``ode``: its own, its body's, the run's, else ``auto``; with noise,
    ``auto`` is Euler-Maruyama for additive noise and stochastic Heun for multiplicative noise
    (Brian2's choice), and a method that cannot integrate the noise is a located error."""
    run_default = getattr(body.elab, "default_method", None)
    method = ode.method or default or run_default
    if not split.factors:
        return method or "auto"
    kind = "additive" if split.reads_state is None else "multiplicative"
    if method is None:
        return STOCHASTIC_AUTO[kind]
    accepting = [m for m, i in INTEGRATORS.items() if i.noise == "multiplicative" or i.noise == kind]
    if method not in accepting:
        where = "" if ode.method else " (this declaration's default)" if default else " (the simulate item's default)"
        noises = ", ".join(split.factors)
        if INTEGRATORS[method].noise is None:
            b.fail(ode.span, f"method {method}{where} cannot integrate d{ode.var}/dt, which has noise ({noises}); "
                             f"the methods for stochastic equations are {', '.join(accepting)}")
        b.fail(ode.span, f"method {method}{where} integrates additive noise only, and the factor of {noises} in "
                         f"d{ode.var}/dt reads {split.reads_state}, a state with a continuous equation "
                         f"(multiplicative noise, read as Stratonovich as in Brian2); use {', '.join(accepting)}")
    return method


def check_noises_per_method(b: ExprBuilder, method: str, odes: dict[str, A.Ode], noise: dict[str, Factors]) -> None:
    """A method's limit on the number of independent noises in one group (milstein: one)."""
    limit = INTEGRATORS[method].max_noises if method in INTEGRATORS else None  # auto has no noise
    seen: list[str] = []
    for name, factors in noise.items():
        for k in factors:
            if k not in seen:
                seen.append(k)
            if limit is not None and len(seen) > limit:
                b.fail(odes[name].span, f"method {method} integrates at most {limit} independent noise per group "
                                        f"of equations, these have {', '.join(seen)}; use heun (or euler for additive noise)")


# ---------------------------------------------------------------- right-hand sides
def rhs(body: Body, odes: dict[str, A.Ode], values: dict[str, Val], graph: GraphBuilder | None = None) -> dict[str, Val]:
    """The right-hand sides of ``odes`` with ``values`` in place of names, built into ``graph``."""
    return terms(Env(body, graph or body.g, overrides=values), {name: o.rhs for name, o in odes.items()})


def terms(env: Env, exprs: dict[str, A.Expr]) -> dict[str, Val]:
    """Each expression of ``exprs`` as a float value built by ``env`` (which caches the lets they share)."""
    return {name: env.b.as_float(env.b.expr(e), e.span) for name, e in exprs.items()}


def rhs_args(body: Body, graph: GraphBuilder, integrated) -> dict[str, Val]:
    """Every input, state and param as an ARG of ``graph``: role state for the ``integrated``
    states, input for what the right-hand side reads besides them."""
    return {n: replace(d.val, node=graph.arg(n, "state" if n in integrated else "input", d.val.dtype,
                                              d.val.shape, d.span))
            for n, d in body.decls.items()
            if d.kind in ("in", "state", "param") and d.val is not None and n != "refractory_steps"}


def rhs_graph(body: Body, odes: dict[str, A.Ode], noise: dict[str, Factors], draws: dict[str, Val]
              ) -> tuple[Graph, tuple[str, ...], dict[str, Val]]:
    """f as a graph reading the states of ``odes`` and what else it reads (the names returned),
    with a ``deriv`` result per state and a ``value`` result ``f"{state}@{noise}"`` per noise
    factor; the noises it names are ARGs too (the scheme reads their draws).  Derivatives and
    factors known at compile time are returned apart."""
    scratch = GraphBuilder()
    args = rhs_args(body, scratch, odes)
    env = Env(body, scratch, overrides=args)
    derivs = terms(env, {name: o.rhs for name, o in odes.items()})
    gs = terms(env, {f"{name}@{k}": g for name, fs in noise.items() for k, g in fs.items()})
    for name, v in derivs.items():
        if not v.is_static:
            scratch.result(name, "deriv", v.node)
    for key, v in gs.items():
        if not v.is_static:
            scratch.result(key, "value", v.node)
    used = dict.fromkeys(k for fs in noise.values() for k in fs)
    noise_args = [scratch.arg(k, "input", draws[k].dtype, draws[k].shape) for k in used]
    full = scratch.build()
    keep = sorted(full.reachable([r.node for r in full.results] + [args[n].node for n in odes] + noise_args))
    index = {old: new for new, old in enumerate(keep)}
    nodes = tuple(replace(full.nodes[i], inputs=tuple(index[j] for j in full.nodes[i].inputs)) for i in keep)
    graph = Graph(nodes, tuple(replace(r, node=index[r.node]) for r in full.results))
    reads = tuple(n.attr("name") for n in nodes if n.op is Op.ARG and n.attr("name") not in odes)
    return graph, reads, {name: v for name, v in {**derivs, **gs}.items() if v.is_static}


def probes(body: Body, odes: dict[str, A.Ode], probes) -> dict[str, Val]:
    """The right-hand side evaluations an integrator asks for (``discretize.Probe``)."""
    out: dict[str, Val] = {}
    for p in probes:
        fixed = {n: replace(static(p.value, body.decls[n].val.dim), dtype=body.decls[n].val.dtype) for n in odes}
        if p.each:
            out.update({f"{n}@{p.label}": rhs(body, {n: o}, {n: fixed[n]})[n] for n, o in odes.items()})
        else:
            out.update({f"{n}@{p.label}": v for n, v in rhs(body, odes, fixed).items()})
    return out


def integrate_group(body: Body, env: Env, odes: dict[str, A.Ode], method: str, hold: Val | None, held: set[str],
                    noise: dict[str, Factors], draws: dict[str, Val]):
    """One INTEGRATE node for equations sharing a method; ``auto`` is exact when the equations are
    linear with constant coefficients, else euler (equations with noise never reach it as auto)."""
    b = env.b
    xs = {name: body.decls[name].val for name in odes}
    coefficients = None
    if method == "auto" or INTEGRATORS[method].linear:
        coefficients = constant_coefficients(body, odes)
        if coefficients is None and method != "auto":
            first = next(iter(odes.values()))
            b.fail(first.span, f"method {method} needs linear equations with constant coefficients; "
                               f"d{first.var}/dt is not (use euler, rk4 or exp_euler)")
        method = "euler" if coefficients is None else "exact" if method == "auto" else method
    integrator = INTEGRATORS[method]
    f, reads, folded = rhs_graph(body, odes, noise, draws)
    probed = probes(body, odes, integrator.probes)
    folded.update({n: v for n, v in probed.items() if v.is_static})
    probe_names = tuple(n for n, v in probed.items() if not v.is_static)
    held_here = tuple(n for n in odes if n in held)
    inputs = [xs[n].node for n in odes] + [(draws[n] if n in draws else body.decls[n].val).node for n in reads]
    inputs += [probed[n].node for n in probe_names] + ([hold.node] if held_here else [])
    attrs = IntegrateAttrs(method, float(body.elab.dt), tuple(odes), f, reads, probe_names,
                           tuple((n, Folded(v.static, v.dtype, v.shape, v.weak)) for n, v in folded.items()),
                           held_here, None if coefficients is None else tuple(map(tuple, coefficients.tolist())),
                           tuple(o.span for o in odes.values()), tuple(n for n in reads if n in draws))
    span = next(iter(odes.values())).span
    node = body.g.add(Op.INTEGRATE, inputs, DType.f32, (), attrs, span)
    return {n: Val(x.dtype, x.shape, x.dim, body.g.add(Op.ITEM, [node], x.dtype, x.shape, (("index", i),), span))
            for i, (n, x) in enumerate(xs.items())}


def constant_coefficients(body: Body, odes: dict[str, A.Ode]) -> np.ndarray | None:
    """The constant matrix A of dx/dt = A x + b(inputs), measured by probing the right-hand
    sides in float64 (``discretize.linear_coefficients``); None if they are not linear."""
    scratch = GraphBuilder()
    overrides: dict[str, Val] = {}
    for n, d in body.decls.items():
        if d.kind in ("in", "state", "param") and d.val is not None and n != "refractory_steps":
            dtype = DType.f64 if d.val.dtype.is_float else d.val.dtype  # probes need the precision
            overrides[n] = replace(d.val, node=scratch.arg(n, "param", dtype, d.val.shape), dtype=dtype)
    env = Env(body, scratch, overrides=overrides)
    try:
        for name, ode in odes.items():
            v = env.b.as_float(env.b.expr(ode.rhs), ode.rhs.span)
            if v.is_static:  # a constant derivative: f64 like the probes (an f32 constant cannot broadcast to f64)
                v = env.b.add(Op.BROADCAST, [replace(v, dtype=DType.f64, weak=False)], DType.f64,
                              body.decls[name].val.shape, v.dim, ode.span)
            scratch.result(name, "value", v.node)
    except Abort:
        return None
    return linear_coefficients(scratch.build(), list(odes))
