"""The bodies of ``system`` and ``neuron`` declarations -> ``Primitive`` systems.

A body declares ports, parameters and state, then equations: ``let`` (algebraic, evaluated
lazily so every integration stage and every event sees its own values), readouts ``y = ...``,
discrete updates ``next S = ...``, continuous ``dv/dt = ...`` (left in the IR as ``INTEGRATE``
nodes by ``body_odes.py``, one per group of equations sharing a method; the discretize-odes pass
builds their schemes from ``compiler/discretize.py``), and spike events with reset and
refractoriness.  Names resolve through ``body_env.Env``.
A neuron body is replicated over a population: every state gets a leading axis of that size.

Order of one step (Brian2's): integrate the equations, test the threshold (not while
refractory), add the increments other systems send to this one (synaptic input), reset the
neurons that spiked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .body_env import TIME, Env, hidden_nexts
from .declared_types import check_batch_axis, check_merge, resolve_type, unit_of, unit_text
from .body_odes import integrate
from .expressions import Abort, ExprBuilder, Val, fmt_shape, fmt_type, static
from .ir import DType, GraphBuilder, Op, Var
from .surrogates import DEFAULT_SURROGATE, SURROGATES
from .systems import PortSig, Primitive
from .ticks import wrap_ticks
from .units import DIMENSIONLESS, Dim, base_unit_name, describe

@dataclass
class _Decl:
    kind: str      # in | out | param | state | static
    val: Val | None
    var: Var | None = None
    port: PortSig | None = None
    span: Span | None = None


class Body:
    """Elaborates one ``system`` or ``neuron`` declaration into a ``Primitive``."""

    ALLOWED = {
        "system": (A.Port, A.Param, A.State, A.Let, A.Ode, A.Next, A.Assign, A.Update, A.Method, A.Spike,
                   A.Reset, A.Refractory, A.Ticks, A.Until, A.Assert),
        "neuron": (A.Port, A.Param, A.State, A.Let, A.Ode, A.Next, A.Assign, A.Method, A.Spike, A.Reset,
                   A.Refractory, A.Assert),
    }

    def __init__(self, elab, decl: A.SystemDecl, scope, args: dict[str, Val], replicas: int | None = None,
                 increments: frozenset[str] = frozenset(), name: str | None = None):
        self.elab = elab
        self.decl = decl
        self.scope = scope
        self.args = args
        self.diags = elab.diags
        self.replicas = replicas
        self.increments = increments
        self.name = name or decl.name
        self.g = GraphBuilder()
        self.init_g = GraphBuilder()
        self.decls: dict[str, _Decl] = {}
        self.lets: dict[str, A.Let] = {}
        self.init_params: dict[str, Val] = {}
        self.params: list[Var] = []
        self.states: list[Var] = []
        self.inputs: list[PortSig] = []
        self.outputs: list[PortSig] = []
        self.statics = elab.statics(scope)
        self.clock_val: Val | None = None  # the step counter, once an equation reads `t` or draws
        self.seed_val: Val | None = None  # the run's seed, once an equation draws

    # ------------------------------------------------------------ names
    def static(self, name: str, span: Span) -> Val | None:
        if name in self.args:
            return self.args[name]
        if name == "dt":
            return static(self.elab.dt, TIME)
        return self.statics.get(name, span)

    def shape(self, declared: tuple[int, ...]) -> tuple[int, ...]:
        return ((self.replicas,) if self.replicas is not None else ()) + declared

    def declare(self, b: ExprBuilder, name: str, span: Span, what: str) -> None:
        if name in self.decls or name in self.lets:
            prev = self.decls[name].span if name in self.decls else self.lets[name].span
            b.fail(span, f"'{name}' is already declared (line {prev.line})" if prev else f"'{name}' is already declared")
        if name in self.args:
            b.fail(span, f"{what} '{name}' has the same name as a template parameter")

    def conform(self, b: ExprBuilder, v: Val, t: A.TensorType, span: Span, what: str) -> Val:
        dtype, shape, dim = resolve_type(b, t, v.dtype)
        return self.fit(b, v, dtype, self.shape(shape) if shape else v.shape, dim, span, what)

    def fit(self, b: ExprBuilder, v: Val, dtype: DType, shape: tuple[int, ...], dim: Dim, span: Span, what: str) -> Val:
        """``v`` converted to a declared type, or a diagnostic naming both types."""
        if v.dim != dim:
            b.fail(span, f"unit mismatch: {what} is {describe(dim)}, the value is {describe(v.dim)}")
        if v.dtype is DType.bool and dtype is not DType.bool:
            b.fail(span, f"type mismatch: {what} is {dtype.value}, the value is bool")
        if v.dtype.is_float and dtype in (DType.i64, DType.i32) and not v.is_static:
            b.fail(span, f"type mismatch: {what} is {dtype.value}, the value is {v.dtype.value}; use int(...)")
        try:
            if tuple(np.broadcast_shapes(v.shape, shape)) != tuple(shape):
                raise ValueError
        except ValueError:
            b.fail(span, f"shape mismatch: {what} has shape {fmt_shape(shape)}, the value {fmt_shape(v.shape)}")
        v = b.cast(v, dtype, span)
        if v.shape != tuple(shape):
            v = b.add(Op.BROADCAST, [v], dtype, shape, v.dim, span)
        return v

    # ------------------------------------------------------------ declarations
    def run(self):
        kind = self.decl.kind
        allowed = self.ALLOWED[kind]
        body = self.decl.body
        env0 = Env(self, self.g)
        b = env0.b
        for stmt in body:
            if not isinstance(stmt, allowed):
                what = type(stmt).__name__.lower()
                hint = {"box": "boxes and wires belong in a composite", "wire": "boxes and wires belong in a composite",
                        "population": "populations belong in a network", "projection": "projections belong in a network",
                        "event": "on_pre/on_post belong in a synapse or a projection"}.get(what, "")
                self.diags.error(stmt.span, f"'{what}' is not allowed in a {kind}" + (f"; {hint}" if hint else ""))
                continue
            try:
                self.declaration(b, stmt)
            except Abort:
                continue
        return self

    def declaration(self, b: ExprBuilder, stmt) -> None:
        if isinstance(stmt, A.Port):
            self.port(b, stmt)
        elif isinstance(stmt, A.Param):
            self.param(b, stmt)
        elif isinstance(stmt, A.State):
            self.state(b, stmt)
        elif isinstance(stmt, A.Let):
            self.declare(b, stmt.name, stmt.span, "let")
            self.lets[stmt.name] = stmt
        elif isinstance(stmt, A.Assert):
            self.check_assert(b, stmt)

    def check_assert(self, b: ExprBuilder, stmt: A.Assert) -> None:
        env = Env(self, GraphBuilder())
        read = env.b.lookup

        def compile_time_only(name: str, span: Span) -> Val | None:
            v = read(name, span)
            if v is not None and not v.is_static:  # a port, state or let of the step graph
                b.fail(span, f"an assert condition must be known at compile time; '{name}' is computed at run time")
            return v

        env.b.lookup = compile_time_only
        v = env.b.expr(stmt.condition)
        if not v.is_static or v.dtype is not DType.bool:
            b.fail(stmt.condition.span, "an assert condition must be a bool known at compile time")
        if not v.static:
            b.fail(stmt.span, f"assertion failed: {stmt.message or 'condition is false'}")

    def port(self, b: ExprBuilder, p: A.Port) -> None:
        self.declare(b, p.name, p.span, "port")
        dtype, shape, dim = resolve_type(b, p.type)
        merge = check_merge(b, p, dtype)
        if p.direction == "in" and p.stack:
            b.fail(p.span, "'stack' applies to output ports")
        sig = PortSig(p.name, dtype, self.shape(shape), dim, merge, p.stack, p.span,
                      check_batch_axis(b, p, shape))
        if p.direction == "in":
            node = self.g.arg(p.name, "input", dtype, sig.shape, p.span)
            self.decls[p.name] = _Decl("in", Val(dtype, sig.shape, dim, node), port=sig, span=p.span)
            self.inputs.append(sig)
        else:
            self.decls[p.name] = _Decl("out", None, port=sig, span=p.span)
            self.outputs.append(sig)

    def param(self, b: ExprBuilder, p: A.Param) -> None:
        self.declare(b, p.name, p.span, "param")
        for f in p.flags:
            if p.flags.count(f) > 1:
                b.fail(p.span, f"flag '{f}' is given twice")
        if "frozen" in p.flags and "learnable" in p.flags:
            b.fail(p.span, f"param '{p.name}' cannot be both frozen and learnable")
        dtype, shape, dim = resolve_type(b, p.type)
        # In a neuron, a param with a compile-time value is a constant of the population.
        if self.decl.kind == "neuron" and "learnable" not in p.flags and p.reparam is None and p.init is not None:
            try:
                v = Env(self, GraphBuilder(), init=True).b.expr(p.init)
            except Abort:
                raise
            if v.is_static:
                if p.type is not None and v.dim != dim:
                    b.fail(p.init.span, f"unit mismatch: param '{p.name}' is {describe(dim)}, the value is "
                                        f"{describe(v.dim)}")
                self.decls[p.name] = _Decl("static", v, span=p.span)
                return
        if p.type is None and p.init is not None:
            probe = Env(self, GraphBuilder(), allow_random=True, target_shape=(), init=True).b.expr(p.init)
            dim = probe.dim
            if probe.shape:
                shape = probe.shape
        full = self.shape(shape) if self.decl.kind in ("neuron", "synapse") else shape  # one per neuron/synapse
        init = self.checked_initial_value(p.init, dtype, full, dim, p.name, "param")
        self.init_g.result(p.name, "value", init)
        raw = self.g.arg(p.name, "param", dtype, full, p.span)
        reparam = self.reparam(b, p, Val(dtype, full, dim, raw))
        learnable = "frozen" not in p.flags and dtype.is_float
        if self.decl.kind == "neuron" and "learnable" not in p.flags:
            learnable = False
        var = Var(p.name, dtype, full, p.span, base_unit_name(dim), p.key, learnable, False, reparam[1])
        self.params.append(var)
        self.decls[p.name] = _Decl("param", reparam[0], var, span=p.span)
        init_raw = self.init_g.arg(p.name, "param", dtype, full, p.span)
        init_b = ExprBuilder(self.init_g, self.diags, lambda n, s: None)
        self.init_params[p.name] = self.apply_reparam(init_b, Val(dtype, full, dim, init_raw), p)

    def reparam(self, b: ExprBuilder, p: A.Param, raw: Val) -> tuple[Val, tuple]:
        if p.reparam is None:
            return raw, ()
        r = p.reparam
        v = self.apply_reparam(b, raw, p)
        if r.kind == "positive":
            return v, ("positive", r.via)
        lo, hi = (float(Env(self, GraphBuilder()).b.static_value(x, "a bound").static) for x in r.args)
        return v, (r.kind, lo, hi) + ((r.via,) if r.via else ())

    def apply_reparam(self, b: ExprBuilder, raw: Val, p: A.Param) -> Val:
        r = p.reparam
        if r is None:
            return raw
        span = r.span
        if not raw.dtype.is_float:
            b.fail(span, "only float parameters can be reparameterised")
        if r.kind == "positive":
            if r.via not in ("relu", "softplus", "exp", "abs"):
                b.fail(span, f"'positive via {r.via}': use relu, softplus, exp or abs")
            op = {"relu": Op.RELU, "softplus": Op.SOFTPLUS, "exp": Op.EXP, "abs": Op.ABS}[r.via]
            return b.add(op, [raw], raw.dtype, raw.shape, raw.dim, span)
        env = Env(self, GraphBuilder())
        lo, hi = (env.b.static_value(x, "a bound") for x in r.args)
        for bound, node in ((lo, r.args[0]), (hi, r.args[1])):
            if bound.dim != raw.dim:
                b.fail(node.span, f"unit mismatch: the bound is {describe(bound.dim)}, param '{p.name}' is "
                                  f"{describe(raw.dim)}")
        if not float(lo.static) < float(hi.static):
            b.fail(span, f"the bounds must satisfy lo < hi, got {lo.static:g} and {hi.static:g}")
        if r.kind == "clamp":
            low = b.binary_raw(Op.MAXIMUM, raw, lo, span)
            return b.binary_raw(Op.MINIMUM, low, hi, span)
        if r.via != "sigmoid":
            b.fail(span, f"'bounded(lo, hi) via {r.via}': only sigmoid is supported")
        s = b.add(Op.SIGMOID, [replace(raw, dim=DIMENSIONLESS)], raw.dtype, raw.shape, DIMENSIONLESS, span)
        width = static(float(hi.static) - float(lo.static), raw.dim)
        return b.binary("+", b.binary("*", s, width, span), lo, span)

    def checked_initial_value(self, e: A.Expr | None, dtype: DType, shape, dim: Dim, name: str, what: str) -> int:
        """``initial_value``, or zeros when it has an error (reported): the name stays declared with its
        type, so the equations that read it are checked against it instead of failing as unknown."""
        try:
            return self.initial_value(e, dtype, shape, dim, name, what)
        except Abort:
            return self.initial_value(None, dtype, shape, dim, name, what)

    def initial_value(self, e: A.Expr | None, dtype: DType, shape, dim: Dim, name: str, what: str) -> int:
        env = Env(self, self.init_g, allow_random=True, target_shape=shape, init=True)
        b = env.b
        if e is None:
            return self.init_g.add(Op.BROADCAST, [self.init_g.const(np.zeros((), dtype.numpy), dtype)], dtype, shape)
        v = b.expr(e)
        if v.is_static and isinstance(v.static, str):
            b.fail(e.span, f"the initial value of {what} '{name}' cannot be a string")
        zero_ok = v.is_static and np.all(np.asarray(v.static) == 0) and v.dim.dimensionless
        if v.dim != dim and not zero_ok:
            b.fail(e.span, f"unit mismatch: {what} '{name}' is {describe(dim)}, its initial value is {describe(v.dim)}")
        v = replace(v, dim=dim)
        fitted = self.fit(b, v, dtype, shape, dim, e.span, f"{what} '{name}'")
        return b.node(fitted, e.span)

    def state(self, b: ExprBuilder, s: A.State) -> None:
        self.declare(b, s.name, s.span, "state")
        dtype, shape, dim = resolve_type(b, s.type)
        if s.type is None and s.init is not None:
            probe = Env(self, GraphBuilder(), allow_random=True, init=True).b.expr(s.init)
            dim = probe.dim
            if probe.shape and self.replicas is None:
                shape = probe.shape
            dtype = probe.dtype if probe.dtype is not DType.i64 or not probe.weak else DType.f32
            if probe.weak:
                dtype = DType.f32
        full = self.shape(shape)
        init = self.checked_initial_value(s.init, dtype, full, dim, s.name, "state")
        self.init_g.result(s.name, "value", init)
        node = self.g.arg(s.name, "state", dtype, full, s.span)
        var = Var(s.name, dtype, full, s.span, base_unit_name(dim), s.key, s.learnable)
        if s.type is not None and s.type.unit is not None and not dim.dimensionless:
            var = replace(var, declared_unit=unit_text(s.type.unit), declared_scale=unit_of(b, s.type.unit)[0])
        self.states.append(var)
        self.decls[s.name] = _Decl("state", Val(dtype, full, dim, node), var, span=s.span)

    def add_state(self, name: str, dtype: DType, shape, init_value: float, span: Span) -> Val:
        """An internal state (the refractory counter)."""
        node = self.g.arg(name, "state", dtype, shape, span)
        self.init_g.result(name, "value", self.init_g.add(
            Op.BROADCAST, [self.init_g.const(np.asarray(init_value, dtype.numpy), dtype)], dtype, shape))
        self.states.append(Var(name, dtype, shape, span, "", None, False))
        return Val(dtype, shape, DIMENSIONLESS, node)

    # ------------------------------------------------------------ equations
    def equations(self) -> None:
        stmts = [s for s in self.decl.body if isinstance(s, self.ALLOWED[self.decl.kind])]
        b = Env(self, self.g).b
        odes: dict[str, A.Ode] = {}
        nexts: dict[str, A.Stmt] = {}
        assigns: dict[str, A.Assign] = {}
        spike = reset = refractory = None
        method = None
        for s in stmts:
            try:
                if isinstance(s, A.Ode):
                    self.require_state(b, s.var, s.span, "'d{0}/dt'".format(s.var))
                    if s.var in odes or s.var in nexts:
                        b.fail(s.span, f"state '{s.var}' already has an equation (line "
                                       f"{(odes.get(s.var) or nexts[s.var]).span.line})")
                    odes[s.var] = s
                elif isinstance(s, (A.Next, A.Update)):
                    name = s.target.name
                    self.require_state(b, name, s.target.span, "'next'" if isinstance(s, A.Next) else "an update")
                    if name in odes or name in nexts:
                        b.fail(s.span, f"state '{name}' already has an equation (line "
                                       f"{(odes.get(name) or nexts[name]).span.line})")
                    if s.target.subscripts:
                        b.fail(s.target.span, "'next' sets a whole state; build the new value with where()/scatter_add()")
                    nexts[name] = s
                elif isinstance(s, A.Assign):
                    self.require_output(b, s.target, assigns)
                    assigns[s.target.name] = s
                elif isinstance(s, A.Method):  # its name is a method's: compiler/unroll.py checked it
                    if method is not None:
                        b.fail(s.span, f"a {self.decl.kind} has one 'method' statement (the first is at line "
                                       f"{method.span.line})")
                    method = s
                elif isinstance(s, A.Spike):
                    if spike is not None:
                        b.fail(s.span, f"a system has one spike condition (the first is at line {spike.span.line})")
                    spike = s
                elif isinstance(s, A.Reset):
                    if reset is not None:
                        b.fail(s.span, f"a {self.decl.kind} has one reset block (the first is at line {reset.span.line})")
                    reset = s
                elif isinstance(s, A.Refractory):
                    if refractory is not None:
                        b.fail(s.span, f"a {self.decl.kind} has one refractory period (the first is at line "
                                       f"{refractory.span.line})")
                    refractory = s
            except Abort:
                continue
        for s in stmts:
            if isinstance(s, A.Ode) and s.unless is not None:
                if s.unless != "refractory":
                    self.diags.error(s.span, f"'unless {s.unless}': only 'unless refractory' is supported")
                elif refractory is None:
                    self.diags.error(s.span, "'unless refractory' needs a 'refractory' period in this neuron")
        if reset is not None and spike is None:
            self.diags.error(reset.span, "'reset' needs a spike condition ('spike when ...')")
        if refractory is not None and spike is None:
            self.diags.error(refractory.span, "'refractory' needs a spike condition ('spike when ...')")
        self.build_step(odes, nexts, assigns, spike, reset, refractory, method.name if method else None)

    def require_state(self, b: ExprBuilder, name: str, span: Span, what: str) -> None:
        d = self.decls.get(name)
        if d is None:
            b.fail(span, f"{what} for '{name}', which is not a declared state" if name not in self.lets
                   else f"{what} for '{name}', which is a 'let', not a state")
        if d.kind != "state":
            kind = {"in": "an input port", "out": "an output port", "param": "a parameter",
                    "static": "a constant"}[d.kind]
            b.fail(span, f"{what} for '{name}', which is {kind}, not a state")

    def require_output(self, b: ExprBuilder, target: A.Target, assigns) -> None:
        d = self.decls.get(target.name)
        if d is None or d.kind != "out":
            kind = {"in": "an input port", "param": "a parameter", "state": "a state (use 'next')",
                    "static": "a constant"}.get(d.kind if d else "", "not declared")
            if d is None and target.name in self.lets:
                kind = "a 'let'"
            b.fail(target.span, f"cannot assign to '{target.name}': it is {kind}; only output ports are assigned")
        if target.name in assigns:
            b.fail(target.span, f"output '{target.name}' is assigned twice (first at line {assigns[target.name].span.line})")

    def build_step(self, odes, nexts, assigns, spike, reset, refractory, method) -> None:
        env = Env(self, self.g, target_shape=self.shape(()))
        b = env.b
        new: dict[str, Val] = {}
        # continuous equations
        hold = None
        ref_steps = 0
        counter = None
        if refractory is not None and spike is not None:
            try:
                d = env.b.static_value(refractory.duration, "the refractory period")
                if d.dim != TIME:
                    b.fail(refractory.duration.span, f"the refractory period must be a duration, got {describe(d.dim)}")
                ref_steps = env.b.static_steps(d, self.elab.dt, refractory.duration.span, "the refractory period")
                counter = self.add_state("refractory_steps", DType.f32, self.shape(()), 0.0, refractory.span)
                hold = b.binary(">", counter, static(1.0), refractory.span)
            except Abort:
                pass
        if odes:
            try:
                new.update(self.integrate(env, odes, method, hold))
            except Abort:
                pass
        for name, s in nexts.items():
            try:
                d = self.decls[name]
                b.target_shape = d.val.shape  # a draw in `next x = ...` gives one value per element of x
                value = b.expr(s.value)
                if isinstance(s, A.Update):
                    op = s.op[0]
                    value = b.binary(op, d.val, value, s.span)
                new[name] = self.fit(b, value, d.val.dtype, d.val.shape, d.val.dim, s.value.span, f"state '{name}'")
            except Abort:
                continue
        for name, s in assigns.items():
            try:
                port = self.decls[name].port
                value = self.fit(b, b.expr(s.value), port.dtype, port.shape, port.dim, s.value.span,
                                 f"output '{name}'")
                self.g.result(name, "output", b.node(value, s.span))
            except Abort:
                continue
        for port in self.outputs:
            if port.name not in assigns:
                self.diags.error(port.span, f"output port '{port.name}' is never assigned")
        # events: threshold on the integrated values, then increments, then reset
        after = {**{n: d.val for n, d in self.decls.items() if d.kind == "state"}, **new}
        spiked = None
        if spike is not None:
            try:
                spiked = self.threshold(spike, after, hold)
                self.g.result("spike", "value", b.node(spiked, spike.span))
            except Abort:
                spiked = None
        # Brian2's conditional write: a state held while refractory ('unless refractory') also
        # ignores the increments of the step it spikes in and of its refractory steps
        held = {n for n, o in odes.items() if o.unless == "refractory"} if hold is not None else set()
        refractory_now = None
        if held and spiked is not None:
            refractory_now = b.binary("or", hold, b.binary(">", spiked, static(0.0), spike.span), refractory.span)
        for name in sorted(self.increments):
            d = self.decls.get(name)
            if d is None or d.kind != "state" or not d.val.dtype.is_float or d.val.shape != self.shape(()):
                continue  # not a scalar float state per neuron: the projection reports it at the increment
            inc_port = PortSig(f"inc.{name}", d.val.dtype, d.val.shape, d.val.dim, "sum", False, d.span)
            self.inputs.append(inc_port)
            inc = Val(d.val.dtype, d.val.shape, d.val.dim, self.g.arg(inc_port.name, "input", d.val.dtype,
                                                                      d.val.shape, d.span))
            if name in held and refractory_now is not None:
                inc = b.select(refractory_now, static(0.0), inc, d.span)
            after[name] = b.binary("+", after[name], inc, d.span)
        if spiked is not None:
            fired = b.binary(">", spiked, static(0.0), spike.span)
            if reset is not None:
                after = self.apply_reset(reset, after, fired)
            if counter is not None:
                dec = b.binary_raw(Op.MAXIMUM, b.binary("-", counter, static(1.0), refractory.span), static(0.0),
                                   refractory.span)
                after["refractory_steps"] = b.select(fired, static(float(ref_steps)), dec, refractory.span)
            out_sig = PortSig("spike", DType.f32, spiked.shape, DIMENSIONLESS, "sum", False, spike.span)
            self.outputs.append(out_sig)
            self.g.result("spike", "output", b.node(spiked, spike.span))
        after.update(hidden_nexts(self, b))
        for var in self.states:
            value = after.get(var.name)
            node = self.decls[var.name].val.node if value is None and var.name in self.decls else None
            if value is not None:
                node = b.node(value, var.span)
            elif var.name == "refractory_steps":
                continue
            self.g.result(var.name, "next", node)

    def threshold(self, spike: A.Spike, values: dict[str, Val], hold: Val | None) -> Val:
        env = Env(self, self.g, overrides=values, target_shape=self.shape(()))
        b = env.b
        cond = spike.condition
        inclusive = False
        if isinstance(cond, A.Compare) and len(cond.ops) == 1 and cond.ops[0] in (">", ">=", "<", "<="):
            lhs, rhs = (b.expr(x) for x in cond.operands)
            if lhs.dim != rhs.dim:
                b.fail(cond.span, f"unit mismatch in the spike condition: {describe(lhs.dim)} and {describe(rhs.dim)}")
            margin = b.binary("-", lhs, rhs, cond.span) if cond.ops[0][0] == ">" else b.binary("-", rhs, lhs, cond.span)
            margin = b.as_float(margin, cond.span)
            inclusive = cond.ops[0] in (">=", "<=")
        else:
            c = b.expr(cond)
            if c.dtype is not DType.bool:
                b.fail(cond.span, f"a spike condition must be a comparison or bool, got {fmt_type(c)}")
            margin = b.binary("-", b.cast(c, DType.f32, cond.span), static(0.5), cond.span)
        surrogate, sargs = self.surrogate(b, spike)
        s = b.add(Op.SPIKE, [replace(margin, dim=DIMENSIONLESS)], margin.dtype, margin.shape, DIMENSIONLESS, spike.span,
                  (("surrogate", surrogate), ("surrogate_args", sargs)))
        if inclusive:
            # SPIKE fires where the margin is > 0; '>=' and '<=' also fire at 0 (exactly, without a
            # gradient: the surrogate of the strict part shapes the gradient)
            at_zero = b.binary("==", margin, static(0.0, margin.dim), cond.span)
            s = b.binary("+", s, replace(b.cast(at_zero, s.dtype, cond.span), dim=DIMENSIONLESS), spike.span)
        if self.replicas is not None and s.shape != self.shape(()):
            s = b.add(Op.BROADCAST, [s], s.dtype, self.shape(()), DIMENSIONLESS, spike.span)
        if hold is not None:
            s = b.binary("*", s, b.cast(b.add(Op.NOT, [hold], DType.bool, hold.shape, DIMENSIONLESS, spike.span),
                                        DType.f32, spike.span), spike.span)
        return s

    def surrogate(self, b: ExprBuilder, spike: A.Spike) -> tuple[str, tuple]:
        if spike.surrogate is None:
            return DEFAULT_SURROGATE
        sg = spike.surrogate
        if sg.name not in SURROGATES:
            b.fail(sg.span, f"unknown surrogate '{sg.name}'; use {', '.join(SURROGATES)}")
        args = tuple(float(b.static_value(a, "a surrogate argument").static) for a in sg.args)
        if sg.kwargs:
            b.fail(sg.kwargs[0].span, "surrogate arguments are positional")
        return sg.name, args

    def apply_reset(self, reset: A.Reset, values: dict[str, Val], fired: Val) -> dict[str, Val]:
        values = dict(values)
        for stmt in reset.body:
            env = Env(self, self.g, overrides=values, target_shape=self.shape(()))
            b = env.b
            try:
                if not isinstance(stmt, (A.Assign, A.Update)):
                    b.fail(stmt.span, "a reset block holds assignments like 'v = v_reset' or 'w += b'")
                name = stmt.target.name
                d = self.decls.get(name)
                if d is None or d.kind != "state":
                    b.fail(stmt.target.span, f"reset assigns '{name}', which is not a state")
                value = b.expr(stmt.value)
                if isinstance(stmt, A.Update):
                    value = b.binary(stmt.op[0], values[name], value, stmt.span)
                value = self.fit(b, value, d.val.dtype, d.val.shape, d.val.dim, stmt.value.span, f"state '{name}'")
                values[name] = b.select(fired, value, values[name], stmt.span)
            except Abort:
                continue
        return values

    # ------------------------------------------------------------ integration
    def integrate(self, env: Env, odes: dict[str, A.Ode], default: str | None, hold: Val | None) -> dict[str, Val]:
        """The new values of the states of ``odes`` (``body_odes.integrate``)."""
        return integrate(self, env, odes, default, hold)


    # ------------------------------------------------------------ result
    def primitive(self) -> Primitive:
        return Primitive(self.name, tuple(self.inputs), tuple(self.outputs), tuple(self.params), tuple(self.states),
                         self.g.build(), self.init_g.build(), (), self.decl.span)


def build_body(elab, decl: A.SystemDecl, scope, args: dict[str, Val], replicas: int | None = None,
               increments: frozenset[str] = frozenset(), name: str | None = None) -> Primitive:
    """Elaborate a ``system`` (or, with ``replicas``, a ``neuron`` population) into a Primitive."""
    if decl.kind == "synapse":
        elab.diags.error(decl.span, f"'{decl.name}' is a synapse; use it in a projection: `projection p: A -> B via "
                                    f"{decl.name}`")
        raise Abort
    if decl.kind == "neuron" and replicas is None:
        replicas = 1
    errors_before = sum(d.severity == "error" for d in elab.diags.items)
    body = Body(elab, decl, scope, args, replicas, increments, name).run()
    body.equations()
    ticks = [s for s in decl.body if isinstance(s, (A.Ticks, A.Until))]
    prim = body.primitive()
    if ticks:
        if sum(d.severity == "error" for d in elab.diags.items) > errors_before:
            raise Abort  # a body with errors (an unassigned output, say) cannot become a LOOP body
        prim = wrap_ticks(Env(body, body.g).b, body.g, prim, ticks)
    return prim
