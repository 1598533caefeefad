"""Networks desugar into wiring diagrams: populations and projections become boxes.

* ``population P: LIF[n]`` -> a box holding the neuron's primitive replicated n times.  Its
  outputs are ``spike`` and every state (``state.v``, read by projections); for each state that
  projections increment it has an input ``inc.<state>`` (merge: sum), added after integration and
  before the reset (Brian2's order).
* ``projection p: A[a:b] -> B[c:d] via Syn { connect ...; on_pre { ... } }`` -> a box whose
  per-synapse variables have a leading axis of the synapse count.  It reads ``pre_spike`` (and
  ``post_spike``, ``pre.<v>``, ``post.<v>`` as needed) and sends ``inc.<v>`` to the post population
  (event-driven PROPAGATE over the CSR connectivity), or ``drive.<port>`` every step for summed
  continuous coupling (``I += w * pre.r`` outside an event block).  ``delay`` puts a FIFO of
  increments between the two.
* ``record`` items become monitors over the flattened names (``P/spike``, ``P/v``).
* ports (``network_ports.py``): ``in`` ports are wired into neuron inputs, unit checked; each ``out``
  port is a readout box (``s = P[0:10].spike``, ``r = rate(P, 10 ms)``, ``v = P.v``), so a network
  is a box like any other in a composite.

Connectivity is generated at compile time (``connectivity.py``), from the run's seed and the projection's name,
so the same seed gives the same synapses on every backend and every run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .bodies import Body, Env, build_body
from .body_env import hidden_nexts
from .declared_types import check_batch_axis, check_merge, resolve_type
from .expressions import MAX_SIZE, Abort, ExprBuilder, Val, fmt_shape, static
from .ir import DType, GraphBuilder, Monitor, Op
from .connectivity import connectivity
from .limits import check_population
from .network_ports import declares_spike, input_wires, population_slice, readouts
from .systems import BoxIR, Composite, PortSig, Primitive, WireIR
from .units import DIMENSIONLESS, describe, dim_of_base_unit, unit

_TIME = unit("s")[1]


@dataclass
class _Pop:
    name: str
    decl: A.SystemDecl
    scope: object
    args: dict
    size: int
    span: Span
    increments: set[str] = field(default_factory=set)
    states: dict[str, Val] = field(default_factory=dict)
    inputs: dict[str, PortSig] = field(default_factory=dict)


def static_builder(elab, scope, args) -> ExprBuilder:
    """An expression builder over compile-time names only: template arguments ``args``, ``dt`` and the
    hyperparameters and constants of ``scope`` (the wiring of networks and composites is static)."""
    statics = elab.statics(scope)
    return ExprBuilder(GraphBuilder(), elab.diags, lambda n, s: args.get(n) or (
        static(elab.dt, _TIME) if n == "dt" else statics.get(n, s)))


def build_network(elab, decl: A.SystemDecl, scope, args: dict) -> Composite:
    b = static_builder(elab, scope, args)
    pops: dict[str, _Pop] = {}
    unresolved: set[str] = set()  # populations whose neuron's `if`/`for` failed (reported): not built
    declared: dict[str, Span] = {}
    ports_in, ports_out, wires, boxes, monitors = [], [], [], [], []
    allowed = (A.Population, A.Projection, A.Record, A.Port, A.Wire, A.Assign, A.Assert)
    for stmt in decl.body:
        if not isinstance(stmt, allowed):
            elab.diags.error(stmt.span, f"'{type(stmt).__name__.lower()}' is not allowed in a network; a network holds "
                                        "populations, projections, records, ports, wires and readouts")
    # populations first: projections may refer to any of them
    for stmt in decl.body:
        try:
            if isinstance(stmt, A.Population):
                if stmt.name in declared:
                    b.fail(stmt.span, f"'{stmt.name}' is already declared (line {declared[stmt.name].line})")
                ndecl, home = elab.lookup_system(scope, stmt.neuron, b, ("neuron",))
                nargs = elab.bind_args(ndecl, home, stmt.neuron, b)
                try:
                    ndecl = elab.resolve_structure(ndecl, home, nargs)  # its `if`s, `for`s and families
                except Abort:  # the name stays declared, so wires and records to it are not reported too
                    unresolved.add(stmt.name)
                size = b.static_int(stmt.size, "a population size")
                if size <= 0:
                    b.fail(stmt.size.span, f"a population size must be positive, got {size}")
                if size > MAX_SIZE:
                    b.fail(stmt.size.span, f"a population size must be at most {MAX_SIZE} (2**31 - 1), got {size}")
                states = sum(isinstance(s, A.State) for s in ndecl.body)
                too_big = check_population(stmt.name, size, states)
                if too_big is not None:
                    b.fail(stmt.size.span, too_big)
                pops[stmt.name] = _Pop(stmt.name, ndecl, home, nargs, size, stmt.span)
                declared[stmt.name] = stmt.span
            elif isinstance(stmt, A.Port):
                if stmt.name in declared:
                    b.fail(stmt.span, f"'{stmt.name}' is already declared (line {declared[stmt.name].line})")
                dtype, shape, dim = resolve_type(b, stmt.type)
                sig = PortSig(stmt.name, dtype, shape, dim, check_merge(b, stmt, dtype), stmt.stack, stmt.span,
                              check_batch_axis(b, stmt, shape))
                (ports_in if stmt.direction == "in" else ports_out).append(sig)
                declared[stmt.name] = stmt.span
            elif isinstance(stmt, A.Assert):
                v = b.expr(stmt.condition)
                if not (v.is_static and v.static is True):
                    b.fail(stmt.span, f"assertion failed: {stmt.message or 'condition is false'}")
        except Abort:
            continue
    projections = []
    for stmt in decl.body:
        if isinstance(stmt, A.Projection):
            try:
                if stmt.name in declared:
                    b.fail(stmt.span, f"'{stmt.name}' is already declared (line {declared[stmt.name].line})")
                declared[stmt.name] = stmt.span
                projections.append(_Projection(elab, scope, args, stmt, pops, b))
            except Abort:
                continue
    # population boxes, now that the increments they receive are known
    for proj in projections:
        for target in proj.increment_targets:
            pops[proj.post].increments.add(target)
    built: dict[str, Primitive] = {}
    for pop in pops.values():
        try:
            if pop.name in unresolved:
                continue
            prim = _population(elab, pop)
        except Abort:
            continue
        built[pop.name] = prim
        boxes.append(BoxIR(pop.name, prim, pop.name, pop.name, pop.span))
    for proj in projections:
        try:
            prim = proj.build()
        except Abort:
            continue
        boxes.append(BoxIR(proj.name, prim, proj.name, proj.name, proj.stmt.span))
        wires.extend(proj.wires())
    for stmt in decl.body:
        try:
            if isinstance(stmt, A.Wire):
                wires.extend(input_wires(b, stmt, pops, ports_in, ports_out, built))
            elif isinstance(stmt, A.Record):
                monitors.append(_monitor(elab, b, stmt, pops, monitors, {p.name: p for p in projections}))
        except Abort:
            continue
    readout_boxes, readout_wires = readouts(elab, b, decl, pops, built, ports_out)
    boxes += readout_boxes
    wires += readout_wires
    return Composite(decl.name, tuple(ports_in), tuple(ports_out), tuple(boxes), tuple(wires), tuple(monitors), decl.span)


def _population(elab, pop: _Pop) -> Primitive:
    prim = build_body(elab, pop.decl, pop.scope, pop.args, replicas=pop.size,
                      increments=frozenset(pop.increments), name=pop.name)
    missing = sorted(pop.increments - {s.name for s in prim.states})
    if missing:
        elab.diags.error(pop.span, f"projections increment {', '.join(missing)} of population '{pop.name}', which "
                                   f"{pop.decl.name} does not declare as state")
        raise Abort
    g = GraphBuilder()
    g.nodes = list(prim.step.nodes)
    g.results = list(prim.step.results)
    outputs = list(prim.outputs)
    args = prim.step.args()
    for s in prim.states:  # read by projections (pre.v) and readouts (out v = P.v)
        node = args[s.name] if s.name in args else g.arg(s.name, "state", s.dtype, s.shape, s.span)
        g.result(f"state.{s.name}", "output", node)
        outputs.append(PortSig(f"state.{s.name}", s.dtype, s.shape, dim_of_base_unit(s.unit), "sum", False, s.span))
    return replace(prim, outputs=tuple(outputs), step=g.build())


def source_groups(sources: list[tuple[str, tuple[int, int]]], lo: int, hi: int) -> tuple[tuple[str, int, int], ...]:
    """The parts of neurons ``lo:hi`` that projections send from (named by the projections, those
    sharing a slice joined by "+"), relative to ``lo``, when they are two or more disjoint slices
    inside ``lo:hi`` (a projection from all of them is left out); else ``()`` (one source slice, or
    overlapping ones, tell no parts apart)."""
    names: dict[tuple[int, int], list[str]] = {}
    for name, (a, z) in sources:
        names.setdefault((a, z), []).append(name)
    parts = sorted(part for part in names if part != (lo, hi))  # a source of every neuron tells none apart
    if len(parts) < 2 or any(a < lo or z > hi for a, z in parts):
        return ()
    if any(z > a2 for (_, z), (a2, _) in zip(parts, parts[1:])):
        return ()
    return tuple(("+".join(names[(a, z)]), a - lo, z - lo) for a, z in parts)


def _monitor(elab, b: ExprBuilder, stmt: A.Record, pops, existing, projections) -> Monitor:
    every = 1
    if stmt.every is not None:
        v = b.static_value(stmt.every, "the recording interval")
        if v.dim != _TIME:
            b.fail(stmt.every.span, f"'every' needs a duration, got {describe(v.dim)}")
        every = b.static_steps(v, elab.dt, stmt.every.span, "the recording interval")
        if every < 1 or abs(every * elab.dt - float(v.static)) > 1e-9 * float(v.static):
            b.fail(stmt.every.span, f"the recording interval {float(v.static):g} s is not a whole number of steps "
                                    f"of dt = {elab.dt:g} s")
    if stmt.of is not None and stmt.of.name in projections:
        proj = projections[stmt.of.name]
        states = {s.name for s in proj.decl.body if isinstance(s, A.State)}
        for var in stmt.variables:
            if var not in states:
                b.fail(stmt.span, f"cannot record '{var}': projection '{proj.name}' has no synapse state '{var}'")
        if stmt.of.subscripts:
            b.fail(stmt.of.span, "record synapse variables of a whole projection")
        name = stmt.alias or f"{'_'.join(stmt.variables)}_{proj.name}"
        return Monitor(name, "state", tuple(f"{proj.name}/{v}" for v in stmt.variables), None, every, stmt.span)
    if stmt.of is None or stmt.of.name not in pops:
        what = stmt.of.name if stmt.of else "nothing"
        b.fail(stmt.of.span if stmt.of else stmt.span, f"record ... of '{what}': not a population of this network")
    pop = pops[stmt.of.name]
    lo, hi = population_slice(b, stmt.of, pop.size)
    indices = None if (lo, hi) == (0, pop.size) else tuple(range(lo, hi))
    names = {m.name for m in existing}
    if stmt.variables == ("spikes",):
        if not declares_spike(pop.decl.body):  # else the run finds no P/spike to record
            b.fail(stmt.span, f"cannot record spikes of '{pop.name}': neuron {pop.decl.name} has no 'spike when' "
                              "condition")
        name = stmt.alias or ("spikes" if "spikes" not in names else f"spikes_{pop.name}")
        groups = source_groups([(p.name, p.pre_range) for p in projections.values() if p.pre == pop.name], lo, hi)
        return Monitor(name, "spikes", (f"{pop.name}/spike",), indices, every, stmt.span, groups)
    states = {s.name for s in pop.decl.body if isinstance(s, A.State)}
    for v in stmt.variables:
        if v not in states:
            b.fail(stmt.span, f"cannot record '{v}': neuron {pop.decl.name} has no state '{v}'")
    name = stmt.alias or f"{'_'.join(stmt.variables)}_{pop.name}"
    if name in names:
        b.fail(stmt.span, f"a monitor named '{name}' already exists; give this one a name with 'as'")
    return Monitor(name, "state", tuple(f"{pop.name}/{v}" for v in stmt.variables), indices, every, stmt.span)


# ---------------------------------------------------------------- projections
class _SynapseBody(Body):
    ALLOWED = {"synapse": (A.Param, A.State, A.Let, A.Ode, A.Next, A.Update, A.Method, A.Event, A.Connect,
                           A.Delay, A.Assert)}


class _Projection:
    """One projection: connectivity, synapse variables and events -> a primitive box."""

    def __init__(self, elab, scope, args, stmt: A.Projection, pops: dict[str, _Pop], b: ExprBuilder):
        self.elab, self.stmt, self.name = elab, stmt, stmt.name
        self.pops = pops
        for ref in (stmt.pre, stmt.post):
            if ref.name not in pops:
                b.fail(ref.span, f"projection '{stmt.name}': unknown population '{ref.name}'")
        self.pre, self.post = stmt.pre.name, stmt.post.name
        self.pre_range = population_slice(b, stmt.pre, pops[self.pre].size)
        self.post_range = population_slice(b, stmt.post, pops[self.post].size)
        body = list(stmt.body)
        syn_scope, syn_args = scope, dict(args)
        syn_params = ()
        if stmt.via is not None:
            sdecl, home = elab.lookup_system(scope, stmt.via, b, ("synapse",))
            syn_args = elab.bind_args(sdecl, home, stmt.via, b)
            syn_scope = home
            body = list(sdecl.body) + body
            syn_params = sdecl.params
        self.decl = elab.resolve_structure(A.SystemDecl(stmt.span, "synapse", stmt.name, syn_params, tuple(body)),
                                           syn_scope, syn_args)  # its `if`s, `for`s and families
        self.scope, self.args = syn_scope, syn_args
        body = list(self.decl.body)
        connects = [s for s in body if isinstance(s, A.Connect)]
        if len(connects) > 1:
            b.fail(connects[1].span, "a projection has one 'connect' rule")
        n_pre = self.pre_range[1] - self.pre_range[0]
        n_post = self.post_range[1] - self.post_range[0]
        seed = zlib.crc32(f"{elab.seed}:{stmt.name}".encode())
        self.indptr, self.indices = connectivity(b, connects[0] if connects else None, n_pre, n_post,
                                                 np.random.default_rng(seed), stmt.span, stmt.name)
        self.nnz = int(self.indices.size)
        self.syn_pre = np.repeat(np.arange(n_pre), np.diff(self.indptr)).astype(np.int64)
        post_neuron_states = {s.name for s in pops[self.post].decl.body if isinstance(s, A.State)}
        post_inputs = {s.name for s in pops[self.post].decl.body if isinstance(s, A.Port) and s.direction == "in"}
        local = {s.name for s in body if isinstance(s, (A.State, A.Param, A.Let))}
        self.increment_targets: set[str] = set()
        self.drive_targets: set[str] = set()
        self.clock_increments: set[str] = set()  # post states a statement outside events adds to every step
        for s in body:
            stmts = s.body if isinstance(s, A.Event) else (s,) if isinstance(s, A.Update) else ()
            for u in stmts:
                if not isinstance(u, (A.Update, A.Assign)):
                    continue
                t = u.target.name
                if t in local:
                    continue
                if isinstance(s, A.Event) and t in post_neuron_states:
                    if s.kind != "on_pre":
                        b.fail(u.target.span, f"'{t}' is a post-neuron state; only on_pre may increment it")
                    self.increment_targets.add(t)
                elif not isinstance(s, A.Event) and t in post_inputs:
                    self.drive_targets.add(t)
                elif not isinstance(s, A.Event) and t in post_neuron_states:
                    self.increment_targets.add(t)  # added every step, after the threshold, like on_pre's
                    self.clock_increments.add(t)
                else:
                    what = "on_pre/on_post target" if isinstance(s, A.Event) else "summed target"
                    kind = "a state" if isinstance(s, A.Event) else "an input port or state"
                    b.fail(u.target.span, f"{what} '{t}' is neither a variable of this synapse nor {kind} of the "
                                          f"post population '{self.post}' ({pops[self.post].decl.name})")
        self.delay_steps = 0
        delays = [s for s in body if isinstance(s, A.Delay)]
        if delays:
            db = static_builder(elab, syn_scope, syn_args)
            d = db.static_value(delays[0].value, "a delay")
            if d.dim != _TIME or float(d.static) < 0:
                b.fail(delays[0].value.span, f"a delay must be a non-negative duration, got {d.static!r} "
                                             f"{describe(d.dim)}")
            self.delay_steps = db.static_steps(d, elab.dt, delays[0].value.span, "a delay")
        self.reads: set[tuple[str, str]] = set()
        self.uses_post_spike = any(isinstance(s, A.Event) and s.kind == "on_post" for s in body)

    # -------------------------------------------------------- building the box
    def build(self) -> Primitive:
        elab = self.elab
        body = _SynapseBody(elab, self.decl, self.scope, self.args, replicas=self.nnz, name=self.name)
        body.decl = self.decl
        g = body.g
        n_pre_pop, n_post_pop = self.pops[self.pre].size, self.pops[self.post].size
        pre_spike = Val(DType.f32, (n_pre_pop,), DIMENSIONLESS, g.arg("pre_spike", "input", DType.f32, (n_pre_pop,)))
        body.inputs.append(PortSig("pre_spike", DType.f32, (n_pre_pop,)))
        b0 = Env(body, g).b
        pre_local = self._slice(b0, pre_spike, self.pre_range)
        self.g_pre_local = pre_local
        syn_pre = static(self.syn_pre)
        post_of_syn = static(self.indices)
        gathered: dict[str, Val] = {}

        def lookup_extra(name: str, span: Span) -> Val | None:
            side, _, var = name.partition(".")
            if side not in ("pre", "post") or (var == "" and name not in ("pre", "post")):
                return None
            if name in gathered:
                return gathered[name]
            pop = self.pops[self.pre if side == "pre" else self.post]
            rng_ = self.pre_range if side == "pre" else self.post_range
            idx = syn_pre if side == "pre" else post_of_syn
            if var == "":
                self._require_spikes(b0, side, span, f"'{side}'")
                self.uses_post_spike = self.uses_post_spike or side == "post"
                if side == "pre":
                    full = pre_spike
                else:
                    full = self._post_spike(body)
            else:
                states = {s.name: s for s in pop.decl.body if isinstance(s, A.State)}
                if var not in states:
                    b0.fail(span, f"'{name}': neuron {pop.decl.name} has no state '{var}'")
                prim_dtype, shape, dim = resolve_type(b0, states[var].type)  # the population's state port's type
                if shape:
                    b0.fail(span, f"'{name}' reads one value per neuron, but '{var}' of neuron {pop.decl.name} is "
                                  f"{prim_dtype.value}{fmt_shape(shape)} per neuron")
                port = f"{side}.{var}"
                node = g.arg(port, "input", prim_dtype, (pop.size,), span)
                full = Val(prim_dtype, (pop.size,), dim, node)
                body.inputs.append(PortSig(port, prim_dtype, (pop.size,), dim))
                self.reads.add((side, var))
            local = self._slice(b0, full, rng_)
            v = b0.add(Op.GATHER, [local, idx], local.dtype, (self.nnz,), local.dim, span, (("axis", 0),))
            gathered[name] = v
            return v

        base_lookup = Env.lookup

        class SynEnv(Env):
            def lookup(self, name, span):
                if name in self.overrides:
                    return self.overrides[name]
                extra = lookup_extra(name, span)
                return extra if extra is not None else base_lookup(self, name, span)

        body.run()
        values = {n: d.val for n, d in body.decls.items() if d.kind == "state"}
        env = SynEnv(body, g)
        odes = {s.var: s for s in self.decl.body if isinstance(s, A.Ode)}
        if odes:
            for name in odes:
                body.require_state(env.b, name, odes[name].span, f"an equation 'd{name}/dt'")
            method = next((s.name for s in self.decl.body if isinstance(s, A.Method)), None)
            values.update(body.integrate(env, odes, method, None))
        increments: dict[str, Val] = {}
        drives: dict[str, Val] = {}
        for s in self.decl.body:
            try:
                if isinstance(s, A.Next):
                    body.require_state(env.b, s.target.name, s.target.span, "'next'")
                    e = SynEnv(body, g, overrides=values).b
                    d = body.decls[s.target.name]
                    e.target_shape = d.val.shape  # a draw gives one value per synapse
                    values[s.target.name] = body.fit(e, e.expr(s.value), d.val.dtype, d.val.shape, d.val.dim,
                                                     s.value.span, f"state '{s.target.name}'")
                elif isinstance(s, A.Update) and s.target.name in self.drive_targets:
                    e = SynEnv(body, g, overrides=values).b
                    e.target_shape = (self.nnz,)
                    per_syn = e.as_float(e.expr(s.value), s.value.span)
                    drives[s.target.name] = self._sum_into_post(e, per_syn, drives.get(s.target.name), s.span)
                elif isinstance(s, A.Update) and s.target.name in self.clock_increments:
                    e = SynEnv(body, g, overrides=values).b
                    e.target_shape = (self.nnz,)
                    per_syn = self._increment_value(e, s, "a statement outside on_pre")
                    increments[s.target.name] = self._sum_into_post(e, per_syn, increments.get(s.target.name),
                                                                    s.span)
                elif isinstance(s, A.Event):
                    self._require_spikes(env.b, s.kind[3:], s.span, s.kind)
                    fired = self.g_pre_local if s.kind == "on_pre" else self._slice(
                        env.b, self._post_spike(body), self.post_range)
                    values = self._event(body, SynEnv, s, values, fired, increments)
            except Abort:
                continue
        values.update(hidden_nexts(body, env.b))  # the step counter counts on, the seed stays
        for var in body.states:
            g.result(var.name, "next", env.b.node(values[var.name], var.span))
        outputs = []
        for target, inc in sorted(increments.items()):
            out = self._delayed(body, env.b, target, inc)
            g.result(f"inc.{target}", "output", env.b.node(out, self.stmt.span))
            outputs.append(PortSig(f"inc.{target}", DType.f32, (n_post_pop,), inc.dim))
        for target, drv in sorted(drives.items()):
            g.result(f"drive.{target}", "output", env.b.node(drv, self.stmt.span))
            outputs.append(PortSig(f"drive.{target}", DType.f32, (n_post_pop,), drv.dim))
        body.outputs = outputs
        return body.primitive()

    def _post_spike(self, body: Body) -> Val:
        n = self.pops[self.post].size
        if not any(p.name == "post_spike" for p in body.inputs):
            body.inputs.append(PortSig("post_spike", DType.f32, (n,)))
        return Val(DType.f32, (n,), DIMENSIONLESS, body.g.arg("post_spike", "input", DType.f32, (n,)))

    def _slice(self, b: ExprBuilder, v: Val, rng: tuple[int, int]) -> Val:
        lo, hi = rng
        if (lo, hi) == (0, v.shape[0]):
            return v
        return b.add(Op.SLICE, [v], v.dtype, (hi - lo,), v.dim, self.stmt.span,
                     (("starts", (lo,)), ("stops", (hi,)), ("steps", (1,))))

    def _pad_post(self, b: ExprBuilder, v: Val) -> Val:
        lo, hi = self.post_range
        n = self.pops[self.post].size
        if (lo, hi) == (0, n):
            return v
        parts = []
        if lo:
            parts.append(static(np.zeros(lo, np.float32), v.dim))
        parts.append(v)
        if hi < n:
            parts.append(static(np.zeros(n - hi, np.float32), v.dim))
        return b.add(Op.CONCAT, parts, v.dtype, (n,), v.dim, self.stmt.span, (("axis", 0),))

    def _sum_into_post(self, b: ExprBuilder, per_syn: Val, acc: Val | None, span: Span) -> Val:
        n_local = self.post_range[1] - self.post_range[0]
        if per_syn.shape != (self.nnz,):
            per_syn = b.add(Op.BROADCAST, [per_syn], per_syn.dtype, (self.nnz,), per_syn.dim, span)
        zeros = static(np.zeros(n_local, np.float32), per_syn.dim)
        summed = b.add(Op.SCATTER_ADD, [zeros, static(self.indices), per_syn], DType.f32, (n_local,), per_syn.dim,
                       span, (("axis", 0),))
        full = self._pad_post(b, summed)
        return full if acc is None else b.binary("+", acc, full, span)

    def _event(self, body: Body, env_cls, ev: A.Event, values: dict[str, Val], fired_local: Val,
               increments: dict[str, Val]) -> dict[str, Val]:
        values = dict(values)
        idx = static(self.syn_pre if ev.kind == "on_pre" else self.indices)
        g = body.g
        fired_syn = None
        for stmt in ev.body:
            env = env_cls(body, g, overrides=values)
            b = env.b
            b.target_shape = (self.nnz,)  # a draw (rand() < p) gives one value per synapse
            try:
                if not isinstance(stmt, (A.Update, A.Assign)):
                    b.fail(stmt.span, f"{ev.kind} holds updates like 'ge += w' or 'w = clip(w + apost, 0, wmax)'")
                name = stmt.target.name
                if name in self.increment_targets and name not in values:
                    value = self._increment_value(b, stmt, ev.kind)
                    weights = value if value.shape == (self.nnz,) else (
                        value if value.shape == () else b.fail(stmt.value.span, "an increment is one value per synapse"))
                    n_local = self.post_range[1] - self.post_range[0]
                    prop = b.add(Op.PROPAGATE, [fired_local, static(self.indptr), static(self.indices), weights],
                                 DType.f32, (n_local,), value.dim, stmt.span, (("n_post", n_local),))
                    full = self._pad_post(b, prop)
                    prev = increments.get(name)
                    increments[name] = full if prev is None else b.binary("+", prev, full, stmt.span)
                    continue
                value = b.as_float(b.expr(stmt.value), stmt.value.span)
                d = body.decls.get(name)
                if d is None or d.kind != "state":
                    b.fail(stmt.target.span, f"{ev.kind} assigns '{name}', which is not a state of this synapse")
                if isinstance(stmt, A.Update):
                    value = b.binary(stmt.op[0], values[name], value, stmt.span)
                value = body.fit(b, value, d.val.dtype, d.val.shape, d.val.dim, stmt.value.span, f"state '{name}'")
                if fired_syn is None:
                    per = b.add(Op.GATHER, [fired_local, idx], DType.f32, (self.nnz,), DIMENSIONLESS, ev.span,
                                (("axis", 0),))
                    fired_syn = b.binary(">", per, static(0.0), ev.span)
                values[name] = b.select(fired_syn, value, values[name], stmt.span)
            except Abort:
                continue
        return values

    def _increment_value(self, b: ExprBuilder, stmt, where: str) -> Val:
        """The value ``stmt`` adds to a post-neuron state (negated for '-='), checked against its unit."""
        name = stmt.target.name
        if isinstance(stmt, A.Assign) or stmt.op not in ("+=", "-="):
            b.fail(stmt.span, f"'{name}' is a post-neuron variable: {where} may only add to it ('+=' or '-=')")
        value = b.as_float(b.expr(stmt.value), stmt.value.span)
        if stmt.op == "-=":
            value = b.add(Op.NEG, [value], value.dtype, value.shape, value.dim, stmt.span)
        post_states = {s.name: s for s in self.pops[self.post].decl.body if isinstance(s, A.State)}
        pdtype, pshape, pdim = resolve_type(b, post_states[name].type)
        at = post_states[name].span
        declared = f"'{name}' is declared at {at.path}:{at.line}:{at.col} (neuron {self.pops[self.post].decl.name})"
        if not pdtype.is_float or pshape:  # the increment is one f32 per post neuron, added after the threshold
            b.fail(stmt.target.span, f"'{name}' of {self.post} is {pdtype.value}{fmt_shape(pshape) if pshape else ''}: "
                                     "a synapse adds one float per neuron, "
                                     f"so the state it increments must be a scalar f32 or f64 (like 'state {name}: "
                                     f"f32{' ' + describe(pdim) if not pdim.dimensionless else ''}')", declared)
        if value.dim != pdim:
            b.fail(stmt.value.span, f"unit mismatch: '{name}' of {self.post} is {describe(pdim)}, the "
                                    f"increment is {describe(value.dim)}", declared)
        return value

    def _require_spikes(self, b: ExprBuilder, side: str, span: Span, what: str) -> None:
        """``what`` (an event, or a read of ``pre``/``post``) needs the spikes of the ``side`` population."""
        pop = self.pops[self.pre if side == "pre" else self.post]
        if not declares_spike(pop.decl.body):  # else flattening finds no <pop>.spike to wire
            b.fail(span, f"{what} needs the spikes of the {side}synaptic population '{pop.name}', but neuron "
                         f"{pop.decl.name} has no 'spike when' condition")

    def _delayed(self, body: Body, b: ExprBuilder, target: str, inc: Val) -> Val:
        d = self.delay_steps
        if d == 0:
            return inc
        n = inc.shape[0]
        name = f"delay.{target}"
        buf = body.add_state(name, DType.f32, (d, n), 0.0, self.stmt.span)
        buf = replace(buf, dim=inc.dim)
        head = b.add(Op.SLICE, [buf], DType.f32, (1, n), inc.dim, self.stmt.span,
                     (("starts", (0, 0)), ("stops", (1, n)), ("steps", (1, 1))))
        out = b.add(Op.RESHAPE, [head], DType.f32, (n,), inc.dim, self.stmt.span)
        row = b.add(Op.RESHAPE, [inc], DType.f32, (1, n), inc.dim, self.stmt.span)
        rest = b.add(Op.SLICE, [buf], DType.f32, (d - 1, n), inc.dim, self.stmt.span,
                     (("starts", (1, 0)), ("stops", (d, n)), ("steps", (1, 1)))) if d > 1 else None
        nxt = b.add(Op.CONCAT, [rest, row] if rest is not None else [row], DType.f32, (d, n), inc.dim,
                    self.stmt.span, (("axis", 0),))
        body.g.result(name, "next", nxt.node)
        return out

    def wires(self) -> list[WireIR]:
        w = [WireIR(self.pre, "spike", self.name, "pre_spike", None, self.stmt.span)]
        if self.uses_post_spike or ("post", "") in self.reads:
            w.append(WireIR(self.post, "spike", self.name, "post_spike", None, self.stmt.span))
        for side, var in sorted(self.reads):
            pop = self.pre if side == "pre" else self.post
            w.append(WireIR(pop, f"state.{var}", self.name, f"{side}.{var}", None, self.stmt.span))
        for target in sorted(self.increment_targets):
            w.append(WireIR(self.name, f"inc.{target}", self.post, f"inc.{target}", None, self.stmt.span))
        for target in sorted(self.drive_targets):
            w.append(WireIR(self.name, f"drive.{target}", self.post, target, None, self.stmt.span))
        return w
