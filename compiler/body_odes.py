"""Continuous equations of a body: ``dv/dt = ...`` becomes INTEGRATE nodes, one per group of
equations sharing a method, each carrying its right-hand side f as a graph (``rhs_graph``), the
probes its scheme needs and, for linear schemes, the constant matrix A measured by probing f.
The discretize-odes pass later expands each node with ``compiler/discretize.py``'s schemes.

Every function takes the ``Body`` being elaborated; ``Body.integrate`` is the entry point.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from nspec.dsl import ast as A

from .body_env import TIME, Env
from .discretize import INTEGRATORS, linear_coefficients
from .expressions import Abort, Val, static
from .ir import DType, Graph, GraphBuilder, Op
from .ops import Folded, IntegrateAttrs
from .units import describe

if TYPE_CHECKING:  # annotations only: bodies.py imports this module
    from .bodies import Body


def integrate(body: Body, env: Env, odes: dict[str, A.Ode], default: str | None, hold: Val | None) -> dict[str, Val]:
    """The new values of the states of ``odes``: one INTEGRATE node per method's group."""
    b = env.b
    scratch = GraphBuilder()  # the check must not leave an unused copy of f in the step graph
    check = Env(body, scratch, overrides=rhs_args(body, scratch, ()))
    for name, ode in odes.items():
        probe = check.b.expr(ode.rhs)
        want = body.decls[name].val.dim / TIME
        if probe.dim != want:
            b.fail(ode.rhs.span, f"unit mismatch: d{name}/dt must be {describe(want)} (the unit of {name} per "
                                 f"second), the right-hand side is {describe(probe.dim)}")
        if probe.dtype is DType.bool:
            b.fail(ode.rhs.span, f"d{name}/dt must be a number, not a bool")
    groups: dict[str, list[str]] = {}
    for name, ode in odes.items():
        m = ode.method or default or getattr(body.elab, "default_method", None)
        groups.setdefault(m or "auto", []).append(name)
    held = {n for n, o in odes.items() if o.unless == "refractory"} if hold is not None else set()
    out: dict[str, Val] = {}
    for method, names in groups.items():
        out.update(integrate_group(body, env, {n: odes[n] for n in names}, method, hold, held))
    return out


def rhs(body: Body, odes: dict[str, A.Ode], values: dict[str, Val], graph: GraphBuilder | None = None) -> dict[str, Val]:
    """The right-hand sides of ``odes`` with ``values`` in place of names, built into ``graph``."""
    env = Env(body, graph or body.g, overrides=values)
    return {name: env.b.as_float(env.b.expr(o.rhs), o.rhs.span) for name, o in odes.items()}


def rhs_args(body: Body, graph: GraphBuilder, integrated) -> dict[str, Val]:
    """Every input, state and param as an ARG of ``graph``: role state for the ``integrated``
    states, input for what the right-hand side reads besides them."""
    return {n: replace(d.val, node=graph.arg(n, "state" if n in integrated else "input", d.val.dtype,
                                              d.val.shape, d.span))
            for n, d in body.decls.items()
            if d.kind in ("in", "state", "param") and d.val is not None and n != "refractory_steps"}


def rhs_graph(body: Body, odes: dict[str, A.Ode]) -> tuple[Graph, tuple[str, ...], dict[str, Val]]:
    """f as a graph reading the states of ``odes`` and what else it reads (the names returned),
    with a ``deriv`` result per state; derivatives known at compile time are returned apart."""
    scratch = GraphBuilder()
    args = rhs_args(body, scratch, odes)
    derivs = rhs(body, odes, args, scratch)
    for name, v in derivs.items():
        if not v.is_static:
            scratch.result(name, "deriv", v.node)
    full = scratch.build()
    keep = sorted(full.reachable([r.node for r in full.results] + [args[n].node for n in odes]))
    index = {old: new for new, old in enumerate(keep)}
    nodes = tuple(replace(full.nodes[i], inputs=tuple(index[j] for j in full.nodes[i].inputs)) for i in keep)
    graph = Graph(nodes, tuple(replace(r, node=index[r.node]) for r in full.results))
    reads = tuple(n.attr("name") for n in nodes if n.op is Op.ARG and n.attr("name") not in odes)
    return graph, reads, {name: v for name, v in derivs.items() if v.is_static}


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


def integrate_group(body: Body, env: Env, odes: dict[str, A.Ode], method: str, hold: Val | None, held: set[str]):
    """One INTEGRATE node for equations sharing a method; ``auto`` is exact when the equations are
    linear with constant coefficients, else euler."""
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
    f, reads, folded = rhs_graph(body, odes)
    probed = probes(body, odes, integrator.probes)
    folded.update({n: v for n, v in probed.items() if v.is_static})
    probe_names = tuple(n for n, v in probed.items() if not v.is_static)
    held_here = tuple(n for n in odes if n in held)
    inputs = [xs[n].node for n in odes] + [body.decls[n].val.node for n in reads]
    inputs += [probed[n].node for n in probe_names] + ([hold.node] if held_here else [])
    attrs = IntegrateAttrs(method, float(body.elab.dt), tuple(odes), f, reads, probe_names,
                           tuple((n, Folded(v.static, v.dtype, v.shape, v.weak)) for n, v in folded.items()),
                           held_here, None if coefficients is None else tuple(map(tuple, coefficients.tolist())),
                           tuple(o.span for o in odes.values()))
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
            if v.is_static:
                v = env.b.add(Op.BROADCAST, [replace(v, dtype=DType.f64)], DType.f64,  # probes are float64
                              body.decls[name].val.shape, v.dim, ode.span)
            scratch.result(name, "value", v.node)
    except Abort:
        return None
    return linear_coefficients(scratch.build(), list(odes))
