"""flatten: a wiring diagram of systems -> one primitive system (COMPOSITION.md, "Nesting").

Boxes are flattened first (recursively), then their step graphs are inlined into one graph on
demand: an output port is inlined with exactly the nodes its readout needs, so a box's input
is only required when the box's feedthrough relation F says its output reads it.  Because the
instantaneous dependency graph is checked to be acyclic first (``instantaneous_cycle``), this
demand-driven order always exists; loops through state are ordinary.  Several wires into one
port merge with the port's monoid in canonical source order; an unwired port gets the unit.
Parameters live under their box's ``param_prefix`` (one set for ``repeat L shared``), states
under its ``state_prefix``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nspec.dsl.diagnostics import Collector, Span

from ..expressions import Abort
from ..ir import DType, Graph, GraphBuilder, IRError, Monitor, Op, Program, Var, verify_program
from ..systems import BoxIR, Composite, PortSig, Primitive, WireIR


def _path(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _box_key(box: BoxIR, key: str | None) -> str | None:
    """A weight key inside a box is relative to the box (torch's module naming); "/k" is absolute."""
    if key is None or key.startswith("/") or not box.param_prefix:
        return key
    return f"{box.param_prefix.replace('/', '.')}.{key}"


def instantaneous_cycle(comp: Composite, flat: dict[str, Primitive]) -> list[str] | None:
    """A cycle in the port-level instantaneous dependency graph, as port names, or None."""
    edges: dict[str, list[str]] = {}
    for w in comp.wires:
        src = w.source() if w.src_box is None else f"{w.src_box}.{w.src_port}"
        dst = w.dst_port if w.dst_box is None else f"{w.dst_box}.{w.dst_port}"
        edges.setdefault(src, []).append(dst)
    for box in comp.boxes:
        prim = flat[box.name]
        for out, ins in prim.feedthrough.items():
            for i in sorted(ins):
                edges.setdefault(f"{box.name}.{i}", []).append(f"{box.name}.{out}")
    color: dict[str, int] = {}
    stack_path: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack_path.append(node)
        for nxt in edges.get(node, ()):
            if color.get(nxt) == 1:
                return stack_path[stack_path.index(nxt):] + [nxt]
            if color.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack_path.pop()
        color[node] = 2
        return None

    for start in sorted(edges):
        if color.get(start) is None:
            found = visit(start)
            if found:
                return found
    return None


class _Inliner:
    def __init__(self, comp: Composite, flat: dict[str, Primitive], diags: Collector):
        self.comp = comp
        self.diags = diags
        self.flat = flat
        self.g = GraphBuilder()
        self.memo: dict[str, dict[int, int]] = {b.name: {} for b in comp.boxes}
        self.boxes = {b.name: b for b in comp.boxes}
        self.port_cache: dict[tuple[str | None, str], int] = {}
        self.outer_inputs = {p.name: p for p in comp.inputs}
        self.params: dict[str, Var] = {}
        self.states: dict[str, Var] = {}

    def inline(self, box: BoxIR, targets: list[int]) -> list[int]:
        prim = self.flat[box.name]
        memo = self.memo[box.name]
        for i in sorted(prim.step.reachable(targets)):
            if i in memo:
                continue
            n = prim.step.nodes[i]
            if n.op is Op.ARG:
                name, role = n.attr("name"), n.attr("role")
                if role == "input":
                    memo[i] = self.port_value(box.name, name)
                else:
                    prefix = box.param_prefix if role == "param" else box.state_prefix
                    memo[i] = self.g.arg(_path(prefix, name), role, n.dtype, n.shape, n.span)
            else:
                memo[i] = self.g.add(n.op, [memo[j] for j in n.inputs], n.dtype, n.shape, n.attrs, n.span)
        return [memo[t] for t in targets]

    def output_value(self, box_name: str, port: str) -> int:
        if box_name not in self.boxes:  # a box lost to an earlier error (already reported)
            self.missing(f"{box_name}.{port}")
        box = self.boxes[box_name]
        res = self.flat[box_name].step.result(port, "output")
        sig = self.flat[box_name].port("out", port)
        if sig is None:
            self.missing(f"{box_name}.{port}")
        if res is None:  # never assigned: reported where the system is declared
            return self.unit(sig)
        return self.inline(box, [res.node])[0]

    def port_value(self, box_name: str | None, port: str) -> int:
        key = (box_name, port)
        if key in self.port_cache:
            return self.port_cache[key]
        if box_name is not None and box_name not in self.flat:
            self.missing(f"{box_name}.{port}")
        sig = self.comp.port("out", port) if box_name is None else self.flat[box_name].port("in", port)
        if sig is None:
            self.missing(port if box_name is None else f"{box_name}.{port}")
        wires = sorted((w for w in self.comp.wires if w.dst_box == box_name and w.dst_port == port),
                       key=lambda w: (w.src_box or "", w.src_port, -1 if w.index is None else w.index))
        parts = []
        for w in wires:
            if w.src_box is None:
                p = self.outer_inputs[w.src_port]
                v = self.g.arg(w.src_port, "input", p.dtype, p.shape, p.span)
            else:
                v = self.output_value(w.src_box, w.src_port)
            if w.index is not None:
                v = self.place_row(v, sig, w.index, w.span)
            parts.append((v, w.span))
        value = self.merge(sig, parts)
        self.port_cache[key] = value
        return value

    def missing(self, port: str) -> None:
        """A wire names a port its system lost to an earlier error (already reported): stop here."""
        if self.diags.has_errors:
            raise Abort
        raise IRError(f"flatten: port {port} of {self.comp.name} does not exist")

    def place_row(self, v: int, sig: PortSig, index: int, span: Span) -> int:
        row = self.g.add(Op.RESHAPE, [v], sig.dtype, (1,) + sig.shape[1:], (), span)
        base = self.unit(sig)
        idx = self.g.const(np.array([index], dtype=np.int64), DType.i64)
        return self.g.add(Op.SCATTER_ADD, [base, idx, row], sig.dtype, sig.shape, (("axis", 0),), span)

    def unit(self, sig: PortSig) -> int:
        fill = {"sum": 0, "exclusive": 0, "max": -np.inf, "or": 0}[sig.merge]
        if sig.dtype is DType.bool:
            fill = False
        elif not sig.dtype.is_float and fill == -np.inf:
            fill = np.iinfo(sig.dtype.numpy).min
        c = self.g.const(np.asarray(fill, dtype=sig.dtype.numpy), sig.dtype)
        return self.g.add(Op.BROADCAST, [c], sig.dtype, sig.shape) if sig.shape else c

    def merge(self, sig: PortSig, parts) -> int:
        if not parts:
            return self.unit(sig)
        acc, _ = parts[0]
        for v, span in parts[1:]:
            if sig.merge == "max" or (sig.merge == "or" and sig.dtype is not DType.bool):
                op = Op.MAXIMUM
            elif sig.merge == "or":
                op = Op.OR
            else:
                op = Op.ADD
            acc = self.g.add(op, [acc, v], sig.dtype, sig.shape, (), span)
        return acc

    def declare(self, table: dict[str, Var], var: Var, name: str) -> None:
        prev = table.get(name)
        if prev is None:
            table[name] = replace(var, name=name)


def flatten(system, diags: Collector) -> Primitive:
    """The primitive system equal to ``system`` (identity on primitives)."""
    if isinstance(system, Primitive):
        return system
    flat = {b.name: flatten(b.system, diags) for b in system.boxes}
    cycle = instantaneous_cycle(system, flat)
    if cycle is not None:
        steps = set(zip(cycle, cycle[1:]))
        in_cycle = [w for w in system.wires if (w.source(), w.target()) in steps]
        where = min((w.span for w in in_cycle), key=lambda s: (s.line, s.col), default=system.span)
        diags.error(where, f"instantaneous cycle in {system.name}: " + " -> ".join(cycle),
                    "every loop must pass through state: break it with a delay or a box whose output does not "
                    "read its input in the same step")
        raise Abort
    inl = _Inliner(system, flat, diags)
    g = inl.g
    for p in system.outputs:
        node = inl.port_value(None, p.name)
        g.result(p.name, "output", node)
    params: dict[str, Var] = {}
    states: dict[str, Var] = {}
    monitors: list[Monitor] = list(system.monitors)
    for box in system.boxes:
        prim = flat[box.name]
        for v in prim.params:
            inl.declare(params, replace(v, key=_box_key(box, v.key)), _path(box.param_prefix, v.name))
        for v in prim.states:
            inl.declare(states, v, _path(box.state_prefix, v.name))
        nexts = [r for r in prim.step.results if r.kind in ("next", "value")]
        nodes = inl.inline(box, [r.node for r in nexts])
        for r, node in zip(nexts, nodes):
            g.result(_path(box.state_prefix, r.name), r.kind, node)
        for m in prim.monitors:
            monitors.append(replace(m, variables=tuple(_path(box.state_prefix, v) for v in m.variables)))
    init = _merge_inits(system, flat)
    inputs = tuple(system.inputs)
    return Primitive(system.name, inputs, tuple(system.outputs), tuple(params.values()), tuple(states.values()),
                     g.build(), init, tuple(monitors), system.span)


def _merge_inits(system: Composite, flat: dict[str, Primitive]) -> Graph:
    g = GraphBuilder()
    done: set[str] = set()
    for box in system.boxes:
        init = flat[box.name].init
        params = {v.name for v in flat[box.name].params}
        memo: dict[int, int] = {}
        wanted = []
        for r in init.results:
            prefix = box.param_prefix if r.name in params else box.state_prefix
            full = _path(prefix, r.name)
            if full in done:
                continue
            done.add(full)
            wanted.append((full, r))
        for i in sorted(init.reachable([r.node for _, r in wanted])):
            n = init.nodes[i]
            if n.op is Op.ARG:
                memo[i] = g.arg(_path(box.param_prefix, n.attr("name")), n.attr("role"), n.dtype, n.shape, n.span)
            else:
                memo[i] = g.add(n.op, [memo[j] for j in n.inputs], n.dtype, n.shape, n.attrs, n.span)
        for full, r in wanted:
            g.result(full, "value", memo[r.node])
    return g.build()


def check_weight_keys(params, diags: Collector) -> None:
    """Every parameter is loaded and saved under its own name: its ``key``, else its path.  Two
    sharing one (two keys alike, or a key equal to another parameter's path) would leave one of
    them unloadable, and a state_dict would keep only one."""
    owner: dict[str, Var] = {}
    for v in params:
        name = (v.key[1:] if v.key.startswith("/") else v.key) if v.key else v.name  # as to_program keys it
        first = owner.setdefault(name, v)
        if first is not v:
            diags.error(v.span, f"parameter '{v.name}' is saved and loaded as '{name}', like '{first.name}' "
                                f"(line {first.span.line}): give each parameter its own key")


def to_program(prim: Primitive, name: str, dt: float, seed: int, hyper) -> Program:
    """The runnable program of a flattened system."""
    from ..units import base_unit_name

    inputs = tuple(Var(p.name, p.dtype, p.shape, p.span, base_unit_name(p.dim)) for p in prim.inputs)
    params = tuple(replace(v, key=v.key[1:]) if v.key and v.key.startswith("/") else v for v in prim.params)
    outputs = tuple(Var(p.name, p.dtype, p.shape, p.span, base_unit_name(p.dim), stack=p.stack,
                        batch_axis=p.batch_axis) for p in prim.outputs)
    program = Program(name, prim.step, prim.init, params, prim.states, inputs, outputs, prim.monitors, dt, seed,
                      None, (), tuple(hyper))
    verify_program(program)
    return program
