"""Composites (wiring diagrams) and workspaces.

A ``composite`` declares outer ports, boxes filled with systems, and wires.  Every wire is
checked here: its ends exist and point the right way, dtypes, shapes and units agree, an
``exclusive`` port has one source.  Guardedness (no instantaneous cycle) is checked when the
diagram is flattened, because it needs each filler's feedthrough relation.

Boxes may be repeated (``repeat L [shared]``: L copies chained first output -> first input,
one parameter set when shared, separate states always) or replicated (``box c: Cell[n]``: n
copies side by side; each port gains a leading axis of size n).  Both are expanded into an inner
wiring diagram with small adapter boxes, so flattening stays the one substitution rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .builtins import topk_mask
from .declared_types import check_batch_axis, check_merge, resolve_type
from .expressions import Abort, ExprBuilder, Val, fmt_shape, static
from .ir import DType, GraphBuilder, Op, Var
from .limits import check_unrolled
from .networks import static_builder
from .systems import BoxIR, Composite, PortSig, Primitive, WireIR
from .units import DIMENSIONLESS, describe


def _sig_text(p: PortSig) -> str:
    unit = "" if p.dim.dimensionless else f" {describe(p.dim)}"
    return f"{p.dtype.value}{fmt_shape(p.shape) if p.shape else ''}{unit}"


def build_composite(elab, decl: A.SystemDecl, scope, args: dict) -> Composite:
    b = static_builder(elab, scope, args)
    inputs: list[PortSig] = []
    outputs: list[PortSig] = []
    boxes: dict[str, BoxIR] = {}
    declared: dict[str, Span] = {}
    broken: set[str] = set()  # boxes whose declaration failed (its error is reported)
    wires: list[WireIR] = []
    allowed = (A.Port, A.Box, A.Wire, A.Expose, A.Assert)
    for stmt in decl.body:
        if not isinstance(stmt, allowed):
            hint = {"Param": "parameters belong to the boxes' systems", "State": "state belongs to the boxes' systems",
                    "Population": "populations belong in a network"}.get(type(stmt).__name__, "")
            elab.diags.error(stmt.span, f"'{type(stmt).__name__.lower()}' is not allowed in a composite"
                             + (f"; {hint}" if hint else ""))
    for stmt in decl.body:
        try:
            if isinstance(stmt, A.Port):
                if stmt.name in declared:
                    b.fail(stmt.span, f"'{stmt.name}' is already declared (line {declared[stmt.name].line})")
                dtype, shape, dim = resolve_type(b, stmt.type)
                sig = PortSig(stmt.name, dtype, shape, dim, check_merge(b, stmt, dtype), stmt.stack, stmt.span,
                              check_batch_axis(b, stmt, shape))
                (inputs if stmt.direction == "in" else outputs).append(sig)
                declared[stmt.name] = stmt.span
            elif isinstance(stmt, A.Box):
                if stmt.name in declared:
                    b.fail(stmt.span, f"'{stmt.name}' is already declared (line {declared[stmt.name].line})")
                declared[stmt.name] = stmt.span
                broken.add(stmt.name)  # until it builds: wires to a box that failed say nothing more
                boxes[stmt.name] = _box(elab, scope, b, stmt)
                broken.discard(stmt.name)
            elif isinstance(stmt, A.Assert):
                v = b.expr(stmt.condition)
                if not (v.is_static and v.static is True):
                    b.fail(stmt.span, f"assertion failed: {stmt.message or 'condition is false'}")
        except Abort:
            continue
    for stmt in decl.body:
        try:
            if isinstance(stmt, A.Expose) and stmt.port.box not in broken:
                port = _expose(b, stmt, boxes, declared, inputs, outputs)
                wires.append(port)
        except Abort:
            continue
    comp_in = {p.name: p for p in inputs}
    comp_out = {p.name: p for p in outputs}
    skipped: set[str] = set()  # outputs wired from a box that failed: not reported as unwired
    for stmt in decl.body:
        if isinstance(stmt, A.Wire):
            for target in stmt.targets:
                if stmt.source.box in broken or target.box in broken:
                    skipped.add(target.port if target.box is None else "")
                    continue  # its box's own error was reported
                try:
                    wires.append(_wire(b, stmt.source, target, stmt.span, boxes, comp_in, comp_out))
                except Abort:
                    continue
    _check_merges(b, wires, boxes, comp_out)
    wired_out = {w.dst_port for w in wires if w.dst_box is None} | skipped
    for p in outputs:
        if p.name not in wired_out:
            elab.diags.error(p.span, f"output port '{p.name}' of {decl.name} is not wired")
    return Composite(decl.name, tuple(inputs), tuple(outputs), tuple(boxes.values()), tuple(wires), (), decl.span)


def _box(elab, scope, b: ExprBuilder, stmt: A.Box) -> BoxIR:
    sdecl, home = elab.lookup_system(scope, stmt.system, b, ("system", "composite", "workspace", "network", "neuron"))
    args = elab.bind_args(sdecl, home, stmt.system, b)
    count = b.static_int(stmt.count, "a replication count") if stmt.count is not None else None
    if count is not None and count <= 0:
        b.fail(stmt.count.span, f"a replication count must be positive, got {count}")
    if count is not None and sdecl.kind != "neuron" and (too_many := check_unrolled("replication", count)):
        b.fail(stmt.count.span, too_many)
    if sdecl.kind == "neuron":
        system = elab.instantiate(sdecl, home, args, stmt.span, replicas=count or 1)
        count = None
    else:
        system = elab.instantiate(sdecl, home, args, stmt.span)
    if count is not None:
        system = replicate(system, count, stmt.span)
    if stmt.repeat is not None:
        times = b.static_int(stmt.repeat, "a repeat count")
        if times <= 0:
            b.fail(stmt.repeat.span, f"a repeat count must be a positive integer, got {times}")
        if too_many := check_unrolled(f"repeat {times}", times):
            b.fail(stmt.repeat.span, too_many)
        system = repeat(b, system, times, stmt.shared, stmt.span)
    return BoxIR(stmt.name, system, stmt.name, stmt.name, stmt.span)


def _find_port(b: ExprBuilder, boxes, ref: A.PortRef, direction: str) -> PortSig:
    box = boxes.get(ref.box)
    if box is None:
        b.fail(ref.span, f"unknown box '{ref.box}'" + (f"; boxes: {', '.join(boxes)}" if boxes else ""))
    sig = box.system.port(direction, ref.port)
    if sig is None:
        other = box.system.port("out" if direction == "in" else "in", ref.port)
        if other is not None:
            b.fail(ref.span, f"'{ref.box}.{ref.port}' is an {'output' if direction == 'in' else 'input'} port of "
                             f"{box.system.name}; a wire goes from an output to an input")
        names = ", ".join(p.name for p in (box.system.inputs if direction == "in" else box.system.outputs)
                          if not p.name.startswith(("state.", "inc.")))
        b.fail(ref.span, f"box '{ref.box}' ({box.system.name}) has no {'input' if direction == 'in' else 'output'} "
                         f"port '{ref.port}'" + (f"; it has {names}" if names else ""))
    return sig


def _wire(b: ExprBuilder, src: A.PortRef, dst: A.PortRef, span: Span, boxes, comp_in, comp_out) -> WireIR:
    if src.index is not None:
        b.fail(src.span, "a wire source is a whole port; index the target instead (`-> ws.write[1]`)")
    if src.box is None:
        if src.port in comp_out:
            b.fail(src.span, f"'{src.port}' is an output of this composite; a wire cannot start there")
        if src.port not in comp_in:
            b.fail(src.span, f"unknown port '{src.port}': not an input of this composite"
                   + (f" (did you mean a box? boxes: {', '.join(boxes)})" if boxes else ""))
        s = comp_in[src.port]
    else:
        s = _find_port(b, boxes, src, "out")
    if dst.box is None:
        if dst.port in comp_in:
            b.fail(dst.span, f"'{dst.port}' is an input of this composite; a wire cannot end there")
        if dst.port not in comp_out:
            b.fail(dst.span, f"unknown port '{dst.port}': not an output of this composite")
        t = comp_out[dst.port]
    else:
        t = _find_port(b, boxes, dst, "in")
    index = None
    want_shape = t.shape
    if dst.index is not None:
        index = b.static_int(dst.index, "a port row")
        if not t.shape or not 0 <= index < t.shape[0]:
            b.fail(dst.span, f"row {index} is out of range for port '{dst.port}' of shape {fmt_shape(t.shape)}")
        want_shape = t.shape[1:]
        if t.merge != "sum":
            b.fail(dst.span, "rows can be wired only into ports that merge by sum")
    if s.dtype != t.dtype:
        b.fail(span, f"type mismatch on wire {_ref(src)} -> {_ref(dst)}: {_sig_text(s)} into {_sig_text(t)}")
    if s.shape != want_shape:
        b.fail(span, f"shape mismatch on wire {_ref(src)} -> {_ref(dst)}: {fmt_shape(s.shape)} into "
                     f"{fmt_shape(want_shape)}" + (" (a row of the port)" if index is not None else ""))
    if s.dim != t.dim:
        b.fail(span, f"unit mismatch on wire {_ref(src)} -> {_ref(dst)}: {describe(s.dim)} into {describe(t.dim)}")
    return WireIR(src.box, src.port, dst.box, dst.port, index, span)


def _ref(r: A.PortRef) -> str:
    base = r.port if r.box is None else f"{r.box}.{r.port}"
    return base + ("[...]" if r.index is not None else "")


def _check_merges(b: ExprBuilder, wires: list[WireIR], boxes, comp_out) -> None:
    seen: dict[tuple, WireIR] = {}
    for w in wires:
        sig = comp_out.get(w.dst_port) if w.dst_box is None else boxes[w.dst_box].system.port("in", w.dst_port)
        key = (w.dst_box, w.dst_port, w.index)
        if sig is not None and sig.merge == "exclusive" and key in seen:
            first = seen[key]
            b.diags.error(w.span, f"port '{w.target()}' is exclusive but has two sources: {first.source()} (line "
                                  f"{first.span.line}) and {w.source()}")
        seen.setdefault(key, w)


def _expose(b: ExprBuilder, stmt: A.Expose, boxes, declared, inputs, outputs) -> WireIR:
    ref = stmt.port
    if ref.box is None:
        b.fail(ref.span, "expose names an inner port: 'expose box.port as name'")
    if stmt.alias in declared:
        b.fail(stmt.span, f"'{stmt.alias}' is already declared (line {declared[stmt.alias].line})")
    box = boxes.get(ref.box)
    if box is None:
        b.fail(ref.span, f"unknown box '{ref.box}'")
    out = box.system.port("out", ref.port)
    if out is not None:
        outputs.append(replace(out, name=stmt.alias, span=stmt.span, merge="sum"))
        declared[stmt.alias] = stmt.span
        return WireIR(ref.box, ref.port, None, stmt.alias, None, stmt.span)
    inp = box.system.port("in", ref.port)
    if inp is None:
        b.fail(ref.span, f"box '{ref.box}' ({box.system.name}) has no port '{ref.port}'")
    inputs.append(replace(inp, name=stmt.alias, span=stmt.span))
    declared[stmt.alias] = stmt.span
    return WireIR(None, stmt.alias, ref.box, ref.port, None, stmt.span)


# ---------------------------------------------------------------- repetition and replication
def repeat(b: ExprBuilder, system, times: int, shared: bool, span: Span) -> Composite:
    """L copies in a chain: copy i's first output feeds copy i+1's first input; other inputs are shared."""
    if not system.inputs or not system.outputs:
        b.fail(span, f"repeat needs a system with an input and an output; {system.name} has "
                     f"{len(system.inputs)} input(s) and {len(system.outputs)} output(s)")
    first_in, first_out = system.inputs[0], system.outputs[0]
    if (first_in.dtype, first_in.shape, first_in.dim) != (first_out.dtype, first_out.shape, first_out.dim):
        b.fail(span, f"repeat chains {system.name}'s first output '{first_out.name}' ({_sig_text(first_out)}) into its "
                     f"first input '{first_in.name}' ({_sig_text(first_in)}); their types differ")
    boxes = tuple(BoxIR(str(i), system, "" if shared else str(i), str(i), span) for i in range(times))
    wires = []
    for p in system.inputs[1:]:
        wires += [WireIR(None, p.name, str(i), p.name, None, span) for i in range(times)]
    wires.append(WireIR(None, first_in.name, "0", first_in.name, None, span))
    for i in range(1, times):
        wires.append(WireIR(str(i - 1), first_out.name, str(i), first_in.name, None, span))
    for p in system.outputs:
        wires.append(WireIR(str(times - 1), p.name, None, p.name, None, span))
    return Composite(f"{system.name}x{times}", system.inputs, system.outputs, boxes, tuple(wires), (), span)


def replicate(system, count: int, span: Span) -> Composite:
    """n copies side by side; every port gains a leading axis of size n (split/stack adapters)."""
    boxes = [BoxIR(str(i), system, str(i), str(i), span) for i in range(count)]
    wires: list[WireIR] = []
    inputs = tuple(replace(p, shape=(count,) + p.shape) for p in system.inputs)
    outputs = tuple(replace(p, shape=(count,) + p.shape) for p in system.outputs)
    for p in system.inputs:
        split = _adapter_split(p, count, span)
        boxes.append(BoxIR(f"split.{p.name}", split, f"split.{p.name}", f"split.{p.name}", span))
        wires.append(WireIR(None, p.name, f"split.{p.name}", "x", None, span))
        wires += [WireIR(f"split.{p.name}", f"y{i}", str(i), p.name, None, span) for i in range(count)]
    for p in system.outputs:
        stack = _adapter_stack(p, count, span)
        boxes.append(BoxIR(f"stack.{p.name}", stack, f"stack.{p.name}", f"stack.{p.name}", span))
        wires += [WireIR(str(i), p.name, f"stack.{p.name}", f"x{i}", None, span) for i in range(count)]
        wires.append(WireIR(f"stack.{p.name}", "y", None, p.name, None, span))
    return Composite(f"{system.name}[{count}]", inputs, outputs, tuple(boxes), tuple(wires), (), span)


def _adapter_split(p: PortSig, n: int, span: Span) -> Primitive:
    g = GraphBuilder()
    x = g.arg("x", "input", p.dtype, (n,) + p.shape, span)
    outs = []
    rank = len(p.shape) + 1
    for i in range(n):
        starts = (i,) + (0,) * len(p.shape)
        stops = (i + 1,) + p.shape
        s = g.add(Op.SLICE, [x], p.dtype, (1,) + p.shape, (("starts", starts), ("stops", stops), ("steps", (1,) * rank)), span)
        g.result(f"y{i}", "output", g.add(Op.RESHAPE, [s], p.dtype, p.shape, (), span))
        outs.append(replace(p, name=f"y{i}"))
    return Primitive("split", (replace(p, name="x", shape=(n,) + p.shape),), tuple(outs), (), (), g.build(),
                     GraphBuilder().build(), (), span)


def _adapter_stack(p: PortSig, n: int, span: Span) -> Primitive:
    g = GraphBuilder()
    parts = []
    ins = []
    for i in range(n):
        a = g.arg(f"x{i}", "input", p.dtype, p.shape, span)
        parts.append(g.add(Op.RESHAPE, [a], p.dtype, (1,) + p.shape, (), span))
        ins.append(replace(p, name=f"x{i}"))
    y = g.add(Op.CONCAT, parts, p.dtype, (n,) + p.shape, (("axis", 0),), span)
    g.result("y", "output", y)
    return Primitive("stack", tuple(ins), (replace(p, name="y", shape=(n,) + p.shape),), (), (), g.build(),
                     GraphBuilder().build(), (), span)


# ---------------------------------------------------------------- workspace
@dataclass(frozen=True, slots=True)
class WriteRule:
    """How a workspace's modules compete for its content: ``weights(ex, b, gates, rule, modules)``
    gives one weight per module (the new content is ``sum_m weights[m] * write[m]``); ``ex`` builds
    the step graph, ``b`` evaluates the rule's compile-time arguments (``rule.args``).  ``usage``
    is how the rule is written after ``write by``."""

    usage: str
    weights: Callable[[ExprBuilder, ExprBuilder, Val, A.TypeRef, int], Val]


def _gated(ex: ExprBuilder, b: ExprBuilder, gates: Val, rule: A.TypeRef, modules: int) -> Val:
    return gates


def _softmax(ex: ExprBuilder, b: ExprBuilder, gates: Val, rule: A.TypeRef, modules: int) -> Val:
    return ex.add(Op.SOFTMAX, [gates], gates.dtype, gates.shape, DIMENSIONLESS, rule.span, (("axis", 0),))


def _topk_softmax(ex: ExprBuilder, b: ExprBuilder, gates: Val, rule: A.TypeRef, modules: int) -> Val:
    if len(rule.args) != 1:
        b.fail(rule.span, "topk takes k: 'write by topk(2)'")
    k = b.static_int(rule.args[0], "k")
    if not 0 < k <= modules:
        b.fail(rule.args[0].span, f"topk: k = {k} must be in 1..{modules} (1 to the number of modules)")
    mask = topk_mask(ex, gates, k, rule.span)
    losers = ex.binary("*", ex.binary("-", static(1.0), mask, rule.span), static(-1e30), rule.span)
    return _softmax(ex, b, ex.binary("+", gates, losers, rule.span), rule, modules)


def _argmax_straight_through(ex: ExprBuilder, b: ExprBuilder, gates: Val, rule: A.TypeRef, modules: int) -> Val:
    """Hard routing: the one-hot of the best gate (the lowest index on a tie) forward, the gradient
    of softmax(gates) backward: ``one_hot + (soft - stop_gradient(soft))``, whose bracket is exactly 0."""
    best = ex.add(Op.ARGMAX, [gates], DType.i64, (), DIMENSIONLESS, rule.span, (("axis", 0),))
    one_hot = ex.cast(ex.binary("==", static(np.arange(modules)), best, rule.span), gates.dtype, rule.span)
    soft = _softmax(ex, b, gates, rule, modules)
    frozen = ex.add(Op.STOP_GRADIENT, [soft], soft.dtype, soft.shape, DIMENSIONLESS, rule.span)
    return ex.binary("+", one_hot, ex.binary("-", soft, frozen, rule.span), rule.span)


WRITE_RULES: dict[str, WriteRule] = {
    "softmax": WriteRule("softmax", _softmax),       # weights = softmax(gates) (soft competition)
    "gated": WriteRule("gated", _gated),             # weights = gates (a controller's gates, each in [0, 1])
    "topk": WriteRule("topk(k)", _topk_softmax),     # weights = softmax over the k best gates, 0 elsewhere
    "argmax": WriteRule("argmax", _argmax_straight_through),  # weights = one-hot of the best; softmax's gradient
}


def build_workspace(elab, decl: A.SystemDecl, scope, args: dict) -> Primitive:
    """A global workspace: content state; read = content (broadcast); write by competition over modules."""
    b = static_builder(elab, scope, args)
    ports: dict[str, PortSig] = {}
    slots, rule = 1, None
    for stmt in decl.body:
        try:
            if isinstance(stmt, A.Port):
                dtype, shape, dim = resolve_type(b, stmt.type)
                ports[stmt.name] = PortSig(stmt.name, dtype, shape, dim, check_merge(b, stmt, dtype), False, stmt.span)
            elif isinstance(stmt, A.Slots):
                slots = b.static_int(stmt.count, "the number of slots")
                if slots <= 0:
                    b.fail(stmt.count.span, f"the number of slots must be positive, got {slots}")
            elif isinstance(stmt, A.Write):
                rule = stmt.rule
                if rule.name not in WRITE_RULES:
                    usages = [r.usage for r in WRITE_RULES.values()]
                    b.fail(rule.span, f"unknown write rule '{rule.name}'; use {', '.join(usages[:-1])} or {usages[-1]}")
                if "(" not in WRITE_RULES[rule.name].usage and (rule.args or rule.kwargs):
                    b.fail(rule.span, f"write rule '{rule.name}' takes no arguments: 'write by {rule.name}'")
            else:
                b.fail(stmt.span, f"'{type(stmt).__name__.lower()}' is not allowed in a workspace; it declares ports "
                                  "(write, gates, read), slots and 'write by'")
        except Abort:
            continue
    for need, direction in (("write", "in"), ("gates", "in"), ("read", "out")):
        if need not in ports:
            elab.diags.error(decl.span, f"workspace {decl.name} needs an {'input' if direction == 'in' else 'output'} "
                                        f"port '{need}'")
    if rule is None:
        elab.diags.error(decl.span, f"workspace {decl.name} needs a write rule: 'write by "
                                    f"{'|'.join(r.usage for r in WRITE_RULES.values())}'")
    if elab.diags.has_errors:
        raise Abort
    write, gates, read = ports["write"], ports["gates"], ports["read"]
    if len(write.shape) != 2 or gates.shape != write.shape[:1]:
        b.fail(write.span, f"workspace ports: write must be [modules, dim] and gates [modules]; got "
                           f"{fmt_shape(write.shape)} and {fmt_shape(gates.shape)}")
    modules, dim = write.shape
    want_read = (dim,) if slots == 1 else (slots, dim)
    if read.shape != want_read:
        b.fail(read.span, f"workspace read must have shape {fmt_shape(want_read)}, got {fmt_shape(read.shape)}")
    g = GraphBuilder()
    ex = ExprBuilder(g, elab.diags, lambda n, s: None)
    w = Val(write.dtype, write.shape, write.dim, g.arg("write", "input", write.dtype, write.shape, write.span))
    gt = Val(gates.dtype, gates.shape, DIMENSIONLESS, g.arg("gates", "input", gates.dtype, gates.shape, gates.span))
    content = Val(read.dtype, want_read, read.dim, g.arg("content", "state", read.dtype, want_read, decl.span))
    g.result("read", "output", content.node)
    weights = WRITE_RULES[rule.name].weights(ex, b, gt, rule, modules)
    if slots == 1:
        nxt = ex.add(Op.EINSUM, [weights, w], w.dtype, (dim,), w.dim, decl.span, (("equation", "m,md->d"),))
    else:
        rows = []
        remaining = gt
        for _ in range(slots):
            best = ex.add(Op.ARGMAX, [remaining], DType.i64, (), DIMENSIONLESS, decl.span, (("axis", 0),))
            onehot = ex.cast(ex.binary("==", static(np.arange(modules)), best, decl.span), w.dtype, decl.span)
            row = ex.add(Op.EINSUM, [onehot, w], w.dtype, (dim,), w.dim, decl.span, (("equation", "m,md->d"),))
            rows.append(ex.add(Op.RESHAPE, [row], w.dtype, (1, dim), w.dim, decl.span))
            remaining = ex.binary("-", remaining, ex.binary("*", onehot, static(1e30), decl.span), decl.span)
        nxt = ex.add(Op.CONCAT, rows, w.dtype, (slots, dim), w.dim, decl.span, (("axis", 0),))
    g.result("content", "next", nxt.node)
    init = GraphBuilder()
    zero = init.const(np.zeros(want_read, read.dtype.numpy), read.dtype)
    init.result("content", "value", zero)
    state = Var("content", read.dtype, want_read, decl.span)
    return Primitive(decl.name, (write, gates), (read,), (), (state,), g.build(), init.build(), (), decl.span)

