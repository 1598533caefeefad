"""Network ports: what a network shows to the diagram around it (a network is a system).

* ``in drive: f32[n] nA`` and ``wire drive -> P.I``: an input port wired into an input port of a
  population's neuron.  The dtype, the shape (one value per neuron: ``[n, *declared]``) and the
  unit must equal the neuron's.
* ``out s: f32[n]`` and a readout ``s = ...``, written as a system writes an output, of one of the
  forms in ``READOUTS``, over a whole population ``P`` or a slice ``P[a:b]``:

  ``P.spike``         the spike vector of this step (it reads this step's input: a feedthrough)
  ``P.v``             a state, as it is at the start of the step (as a monitor samples it)
  ``count(P, T)``     spikes per neuron in the last ``T / dt`` steps, this one included
  ``rate(P, T)``      that count divided by ``T``, in Hz

Each readout becomes a primitive box of the network's wiring diagram, named after the port, wired
from the population's ``spike`` or ``state.<v>`` port.  The window of a count or rate is that box's
state ``<port>/window`` (the spike vectors of the ``T / dt - 1`` steps before), so a readout is part
of the step graph and runs, and is differentiated, on every backend like any other box.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .expressions import Abort, ExprBuilder, Val, fmt_shape, static
from .ir import DType, GraphBuilder, Op, Var
from .limits import check_tensor
from .systems import BoxIR, PortSig, Primitive, WireIR
from .units import DIMENSIONLESS, Dim, describe, unit

_TIME = unit("s")[1]
READOUTS = "'s = P.spike', 's = P[0:10].v', 's = count(P, 10 ms)' or 's = rate(P[0:10], 10 ms)'"
WINDOWED = ("count", "rate")  # the functions of a spike train over a window


def type_text(dtype: DType, shape: tuple[int, ...], dim: Dim) -> str:
    """A port type as a spec writes it: ``f32[10] A``."""
    return f"{dtype.value}{fmt_shape(shape) if shape else ''}" + ("" if dim.dimensionless else f" {describe(dim)}")


def population_slice(b: ExprBuilder, ref: A.PopRef, size: int) -> tuple[int, int]:
    """The neuron range ``[lo, hi)`` of ``P`` or ``P[a:b]`` (or ``P[i]``) in a population of ``size``."""
    if not ref.subscripts:
        return 0, size
    if len(ref.subscripts) != 1:
        b.fail(ref.span, "a population slice has one range, like P[0:100]")
    s = ref.subscripts[0]
    if isinstance(s, A.Slice):
        if s.step is not None:
            b.fail(s.span, "population slices take no step")
        lo = b.static_int(s.start, "a slice bound") if s.start is not None else 0
        hi = b.static_int(s.stop, "a slice bound") if s.stop is not None else size
    else:
        lo = b.static_int(s, "an index")
        hi = lo + 1
    if not 0 <= lo < hi <= size:
        b.fail(ref.span, f"slice [{lo}:{hi}] is out of range for population '{ref.name}' of size {size}")
    return lo, hi


def declares_spike(nodes) -> bool:
    """Whether a body holds a ``spike when`` statement, at any depth (inside ``if`` or ``for`` blocks too)."""
    for n in nodes:
        if isinstance(n, A.Spike):
            return True
        if isinstance(n, A.Node) and declares_spike(v for f in dataclasses.fields(n) for v in _items(getattr(n, f.name))):
            return True
    return False


def _items(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


# ---------------------------------------------------------------- inputs
def input_wires(b: ExprBuilder, stmt: A.Wire, pops, ports_in, ports_out, built) -> list[WireIR]:
    """``wire drive -> P.I, Q.I``: a network input into neuron inputs, dtype, shape and unit checked."""
    src = stmt.source
    if src.box is not None:
        if src.box in pops and any(t.box is None and t.port in {p.name for p in ports_out} for t in stmt.targets):
            b.fail(stmt.span, f"a network's output port is a readout: write "
                              f"'{stmt.targets[0].port} = {src.box}.{src.port}' instead of a wire")
        b.fail(src.span, "in a network, wires start at the network's own input ports")
    if src.port not in {p.name for p in ports_in}:
        b.fail(src.span, f"unknown input port '{src.port}' of the network")
    source = next(p for p in ports_in if p.name == src.port)
    out = []
    for t in stmt.targets:
        if t.box is None or t.box not in pops:
            b.fail(t.span, f"wire target '{t.box or t.port}' is not a population of this network")
        ndecl = pops[t.box].decl
        ports = [s.name for s in ndecl.body if isinstance(s, A.Port) and s.direction == "in"]
        if t.port not in ports:
            states = {s.name for s in ndecl.body if isinstance(s, A.State)}
            hint = (f"; '{t.port}' is a state, and a network input drives an input port" if t.port in states else "")
            b.fail(t.span, f"neuron {ndecl.name} has no input port '{t.port}'" + hint
                   + (f" (its inputs: {', '.join(ports)})" if ports else " (it declares no input)"))
        target = built[t.box].port("in", t.port) if t.box in built else None
        if target is not None:
            wire = f"wire {src.port} -> {t.box}.{t.port}"
            theirs = f"neuron {ndecl.name}'s input '{t.port}' is {type_text(target.dtype, target.shape, target.dim)}"
            if source.dim != target.dim:
                b.fail(stmt.span, f"unit mismatch on {wire}: {describe(source.dim)} into {describe(target.dim)} (the "
                                  f"network's input '{src.port}' is {type_text(source.dtype, source.shape, source.dim)}"
                                  f", {theirs})")
            if source.dtype != target.dtype:
                b.fail(stmt.span, f"type mismatch on {wire}: {source.dtype.value} into {target.dtype.value} ({theirs})")
            if source.shape != target.shape:  # ports are per neuron: [size, *declared]
                b.fail(stmt.span, f"shape mismatch on {wire}: {fmt_shape(source.shape)} into "
                                  f"{fmt_shape(target.shape)} (a neuron's port holds one value per neuron of "
                                  f"'{t.box}')")
        out.append(WireIR(None, src.port, t.box, t.port, None, stmt.span))
    return out


# ---------------------------------------------------------------- readouts
@dataclasses.dataclass(frozen=True, slots=True)
class _Readout:
    """What one output reads: ``source`` (``spike`` or ``state.<v>``) of population ``pop`` over
    neurons ``[lo, hi)``; with ``fn`` (count, rate) summed over a ``window`` of steps lasting ``seconds``."""

    pop: str
    lo: int
    hi: int
    source: str
    fn: str | None = None
    window: int = 1
    seconds: float = 0.0


def readouts(elab, b: ExprBuilder, decl: A.SystemDecl, pops, built, ports_out) -> tuple[list[BoxIR], list[WireIR]]:
    """One box per output port, from the readout statements ``port = ...``, and its wires."""
    outs = {p.name: p for p in ports_out}
    assigned: dict[str, A.Assign] = {}
    for stmt in decl.body:
        if not isinstance(stmt, A.Assign):
            continue
        name = stmt.target.name
        try:
            if name not in outs:
                what = "a population" if name in pops else "not a port of this network"
                b.fail(stmt.target.span, f"'{name}' is {what}; a readout assigns an output port declared with "
                                         f"'out {name}: ...'")
            if stmt.target.subscripts:
                b.fail(stmt.target.span, f"a readout assigns the whole port: '{name} = ...'")
            if name in assigned:
                b.fail(stmt.span, f"output '{name}' is already assigned (line {assigned[name].span.line})")
            assigned[name] = stmt
        except Abort:  # reported; the other statements are still checked
            continue
    boxes, wires = [], []
    for port in ports_out:
        if port.name not in assigned:
            elab.diags.error(port.span, f"output port '{port.name}' of {decl.name} is never assigned: give it a "
                                        f"readout, like {READOUTS.replace('s =', f'{port.name} =')}")
            continue
        stmt = assigned[port.name]
        try:
            r = _readout_of(elab, b, stmt.value, pops, built)
            box = _readout_box(b, port, r, built[r.pop], stmt)
        except Abort:
            continue
        boxes.append(BoxIR(port.name, box, port.name, port.name, stmt.span))
        wires += [WireIR(r.pop, r.source, port.name, "x", None, stmt.span),
                  WireIR(port.name, port.name, None, port.name, None, stmt.span)]
    return boxes, wires


def _population_of(b: ExprBuilder, e: A.Expr, pops) -> tuple[str, int, int]:
    if isinstance(e, A.Name):
        ref = A.PopRef(e.span, e.id, (), None)
    elif isinstance(e, A.Index) and isinstance(e.value, A.Name):
        ref = A.PopRef(e.span, e.value.id, e.subscripts, None)
    else:
        b.fail(e.span, f"a readout reads a population or a slice of one, like P or P[0:10]; use {READOUTS}")
    if ref.name not in pops:
        b.fail(e.span, f"unknown population '{ref.name}'" + (f"; populations: {', '.join(pops)}" if pops else ""))
    lo, hi = population_slice(b, ref, pops[ref.name].size)
    return ref.name, lo, hi


def _readout_of(elab, b: ExprBuilder, e: A.Expr, pops, built) -> _Readout:
    """What the readout expression ``e`` reads, or a diagnostic naming the forms a readout takes."""
    if isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id in WINDOWED:
        fn = e.func.id
        if e.kwargs or len(e.args) != 2:
            b.fail(e.span, f"{fn} in a readout takes a population and a window: '{fn}(P, 10 ms)'")
        pop, lo, hi = _population_of(b, e.args[0], pops)
        _need_spike(b, e.span, pops[pop], fn)
        length = b.static_value(e.args[1], "a window")
        if isinstance(length.static, (str, bool)) or np.ndim(length.static) != 0 or length.dim != _TIME:
            got = ("a string" if isinstance(length.static, str) else "a bool" if isinstance(length.static, bool)
                   else "a list" if np.ndim(length.static) != 0 else describe(length.dim))
            b.fail(e.args[1].span, f"the window of {fn} is one duration, like 10 ms; got {got}")
        steps = b.static_steps(length, elab.dt, e.args[1].span, "the window")
        seconds = float(length.static)
        if steps < 1:
            b.fail(e.args[1].span, f"the window {seconds:g} s is shorter than one step (dt = {elab.dt:g} s)")
        if abs(steps * elab.dt - seconds) > 1e-9 * seconds:
            b.fail(e.args[1].span, f"the window {seconds:g} s is not a whole number of steps of dt = {elab.dt:g} s")
        if pop not in built:
            raise Abort  # its neuron's errors are already reported
        return _Readout(pop, lo, hi, "spike", fn, steps, seconds)
    if isinstance(e, A.Attribute):
        pop, lo, hi = _population_of(b, e.value, pops)
        ndecl = pops[pop].decl
        if e.name == "spike":
            _need_spike(b, e.span, pops[pop], f"{pop}.spike")
            source = "spike"
        else:
            states = [s.name for s in ndecl.body if isinstance(s, A.State)]
            if e.name not in states:
                b.fail(e.span, f"neuron {ndecl.name} has no state '{e.name}'; a readout reads 'spike'"
                       + (f" or a state ({', '.join(states)})" if states else ""))
            source = f"state.{e.name}"
        if pop not in built:
            raise Abort  # its neuron's errors are already reported
        return _Readout(pop, lo, hi, source)
    if isinstance(e, A.Call) and isinstance(e.func, A.Name):
        b.fail(e.span, f"'{e.func.id}' is not a readout of a network; use {READOUTS}")
    b.fail(e.span, f"a network's output reads a population directly; use {READOUTS} (compute with it in a "
                   "system wired after the network)")


def _need_spike(b: ExprBuilder, span: Span, pop, what: str) -> None:
    if not declares_spike(pop.decl.body):
        b.fail(span, f"{what}: neuron {pop.decl.name} of population '{pop.name}' has no 'spike when' condition")


def _readout_box(b: ExprBuilder, port: PortSig, r: _Readout, prim: Primitive, stmt: A.Assign) -> Primitive:
    """The readout as a primitive: input ``x`` (the population's port), output ``port``."""
    src = prim.port("out", r.source)
    span = stmt.value.span
    if src is None:  # the population's neuron has errors (reported where they are) and was built without it
        if not b.diags.has_errors:
            b.fail(span, f"population '{r.pop}' has no output '{r.source}'")
        raise Abort
    g = GraphBuilder()
    ex = ExprBuilder(g, b.diags, lambda n, s: None)
    x = Val(src.dtype, src.shape, src.dim, g.arg("x", "input", src.dtype, src.shape, span))
    if (r.lo, r.hi) != (0, src.shape[0]):
        rank = len(src.shape)
        x = ex.add(Op.SLICE, [x], x.dtype, (r.hi - r.lo,) + src.shape[1:], x.dim, span,
                   (("starts", (r.lo,) + (0,) * (rank - 1)), ("stops", (r.hi,) + src.shape[1:]), ("steps", (1,) * rank)))
    states, init = [], GraphBuilder()
    value = x
    if r.fn is not None:
        value, states = _windowed(b, ex, init, x, r, span)
    got = (value.dtype, value.shape, value.dim)
    if got != (port.dtype, port.shape, port.dim):
        kind = "unit" if value.dim != port.dim else "type" if value.dtype != port.dtype else "shape"
        b.fail(span, f"{kind} mismatch: output '{port.name}' is {type_text(port.dtype, port.shape, port.dim)}, the "
                     f"readout reads {type_text(*got)}")
    g.result(port.name, "output", ex.node(value, span))
    inputs = (PortSig("x", src.dtype, src.shape, src.dim, "sum", False, span),)
    return Primitive(port.name, inputs, (port,), (), tuple(states), g.build(), init.build(), (), span)


def _windowed(b: ExprBuilder, ex: ExprBuilder, init: GraphBuilder, spikes: Val, r: _Readout,
              span: Span) -> tuple[Val, list[Var]]:
    """count = the spikes of this step plus those of the window state (the ``window - 1`` steps
    before); rate = count / T.  The window shifts by one row per step."""
    n = spikes.shape[0]
    count = spikes
    states = []
    if r.window > 1:
        rows = r.window - 1
        if too_big := check_tensor((rows, n)):
            b.fail(span, too_big)
        g = ex.g
        window = Val(DType.f32, (rows, n), DIMENSIONLESS, g.arg("window", "state", DType.f32, (rows, n), span))
        before = ex.add(Op.SUM, [window], DType.f32, (n,), DIMENSIONLESS, span, (("axes", (0,)), ("keepdims", False)))
        count = ex.binary("+", before, spikes, span)
        row = ex.add(Op.RESHAPE, [spikes], DType.f32, (1, n), DIMENSIONLESS, span)
        kept = [ex.add(Op.SLICE, [window], DType.f32, (rows - 1, n), DIMENSIONLESS, span,
                       (("starts", (1, 0)), ("stops", (rows, n)), ("steps", (1, 1))))] if rows > 1 else []
        nxt = ex.add(Op.CONCAT, kept + [row], DType.f32, (rows, n), DIMENSIONLESS, span, (("axis", 0),))
        g.result("window", "next", nxt.node)
        zero = init.const(np.zeros((rows, n), np.float32), DType.f32)
        init.result("window", "value", zero)
        states.append(Var("window", DType.f32, (rows, n), span, "", None, False))
    if r.fn == "rate":
        count = ex.binary("/", count, static(r.seconds, _TIME), span)
    return count, states
