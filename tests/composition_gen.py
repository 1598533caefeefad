"""Random well-typed, guarded wiring diagrams as nspec source, with their meaning in NumPy.

The composition laws of COMPOSITION.md are checked on diagrams drawn from here; backend tests
reuse the same strategies.  The generator knows the equations of every box it emits, so it also
simulates a diagram directly (``Diagram.simulate``): an oracle that shares no code with nspec's
elaborator or ``flatten``, and so catches a merge or substitution rule that is consistently wrong.

Public API (everything else is private):

``diagrams(prefix="D", inputs=None, outputs=None, max_boxes=5, nest=True)``
    A Hypothesis strategy of ``Diagram``.  Primitive systems have f32 ports of size 2 or 3, one
    state ``s``, Moore outputs (``o = c * tanh(s)``) and Mealy outputs (``o = c * tanh(s) +
    tanh(i0 @ W_i0 + ...)``: feedthrough), or are unit delays.  The top composite has copies,
    merges (``sum``/``max``/``exclusive``), unwired inputs (the monoid's unit), pass wires,
    feedback through Moore outputs and ``repeat L [shared]`` boxes (deterministic initialisers, so
    shared and separate parameters start equal); with ``nest`` some boxes are
    grouped into nested composites (depth up to 3) whose boundary ports keep the behaviour, so
    ``Diagram.flat()`` (hand-flattening) is behaviourally equal.  ``inputs``/``outputs`` fix the
    top's interface as port sizes (names ``x0, x1, ...`` and ``y0, y1, ...``).
``prims(name, size=None, loop=False)``
    A strategy of one primitive system (``Prim``); ``loop`` makes it a Mealy box fit for a feedback loop.
``Diagram``
    ``.spec_text()`` nspec source of every system (dependencies first) ending with the top;
    ``.flat()`` / ``.flat_spec_text()`` the hand-flattened diagram (every non-repeated composite
    box substituted, inner boxes renamed ``outer_inner``); ``.simulate(inputs, steps)`` the NumPy
    oracle (inputs and outputs by port name, arrays ``[steps, size]``, float32);
    ``.feedthrough(name=None)`` F of a system (output -> inputs read in the same step);
    ``.instantaneous_cycle(name=None)`` and ``.dependency_edges(name=None)`` of a composite;
    ``.paths(name=None)`` the parameter and state paths flattening must give;
    ``.top_comp``, ``.system(name)``, ``.interface(name)``, ``.replace_system(s)``.
``Prim``, ``Comp``, ``Box``, ``Ref``, ``Wire``, ``Port``
    The frozen description the text and the oracle are both made from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

SIZES = (2, 3)
DECAYS = (0.3, 0.5, 0.8)
GAINS = (0.5, 1.0, -0.7, 1.5)
BOUNDS = (-0.9, -0.5, -0.2, 0.3, 0.6, 1.1)
INITS = (0.0, 0.1, -0.25)
UNITS = {"sum": 0.0, "exclusive": 0.0, "max": -np.inf}
F32 = np.float32


# ---------------------------------------------------------------- the description
@dataclass(frozen=True)
class Port:
    """A typed port: ``f32[size]`` with the monoid that merges several incoming wires."""

    name: str
    size: int
    merge: str = "sum"
    dtype: str = "f32"

    def decl(self, direction: str) -> str:
        merge = "" if self.merge == "sum" else f" merge {self.merge}"
        return f"{direction} {self.name}: {self.dtype}[{self.size}]{merge}"


@dataclass(frozen=True)
class Prim:
    """A primitive system: state ``s: f32[size]``, one weight ``W_<input>`` per input.

    ``next s = decay * s + tanh(sum_i i @ W_i)``; output j is ``gain_j * tanh(s)``, plus
    ``tanh(sum over reads[j] of i @ W_i)`` when it reads inputs (Mealy).  With ``delay`` the
    system is a unit delay instead: ``o = s``, ``next s = i`` (one input, one output).
    """

    name: str
    size: int
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    reads: tuple[tuple[str, ...], ...]
    decay: float = 0.5
    gains: tuple[float, ...] = ()
    bounds: tuple[tuple[float, float], ...] = ()
    init: float = 0.0
    delay: bool = False

    def weight(self, port: str) -> np.ndarray:
        """The initial value of ``W_<port>`` (what ``linspace(lo, hi)`` gives)."""
        k = [p.name for p in self.inputs].index(port)
        lo, hi = self.bounds[k]
        d = self.inputs[k].size
        return np.linspace(lo, hi, d * self.size).reshape(d, self.size).astype(F32)

    def drive(self, names, subst: dict[str, str]) -> str:
        return " + ".join(f"{subst.get(n, n)} @ W_{n}" for n in names)

    def readout_expr(self, j: int, subst: dict[str, str] | None = None) -> str:
        """The right-hand side of output j; ``subst`` replaces input names by expressions."""
        subst = subst or {}
        if self.delay:
            return "s"
        moore = f"{self.gains[j]!r} * tanh(s)"
        return moore + (f" + tanh({self.drive(self.reads[j], subst)})" if self.reads[j] else "")

    def update_expr(self, subst: dict[str, str] | None = None) -> str:
        subst = subst or {}
        if self.delay:
            name = self.inputs[0].name
            return subst.get(name, name)
        return f"{self.decay!r} * s + tanh({self.drive([p.name for p in self.inputs], subst)})"

    def decls(self) -> list[str]:
        """Params and state, without ports (hand-written systems reuse them)."""
        lines = [] if self.delay else [
            f"param W_{p.name}: f32[{p.size}, {self.size}] = linspace({lo!r}, {hi!r})"
            for p, (lo, hi) in zip(self.inputs, self.bounds)]
        return lines + [f"state s: f32[{self.size}] = {self.init!r}"]

    def text(self) -> str:
        lines = [p.decl("in") for p in self.inputs] + [p.decl("out") for p in self.outputs] + self.decls()
        lines += [f"{p.name} = {self.readout_expr(j)}" for j, p in enumerate(self.outputs)]
        lines.append(f"next s = {self.update_expr()}")
        return f"system {self.name} {{\n" + "".join(f"  {x}\n" for x in lines) + "}"

    def feedthrough(self) -> dict[str, frozenset[str]]:
        return {p.name: frozenset(r) for p, r in zip(self.outputs, self.reads)}


@dataclass(frozen=True)
class Ref:
    """A port reference: ``box.port``, or the composite's own port when ``box`` is None."""

    box: str | None
    port: str

    def __str__(self) -> str:
        return self.port if self.box is None else f"{self.box}.{self.port}"


@dataclass(frozen=True)
class Wire:
    src: Ref
    dst: Ref


@dataclass(frozen=True)
class Box:
    name: str
    system: str
    repeat: int = 0  # 0: a plain box; L: `repeat L [shared]`
    shared: bool = True

    def text(self) -> str:
        tail = f" repeat {self.repeat}" + (" shared" if self.shared else "") if self.repeat else ""
        return f"box {self.name}: {self.system}{tail}"


@dataclass(frozen=True)
class Comp:
    """A wiring diagram.  ``copy_syntax``: one ``wire`` statement per source, in first-use order."""

    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    boxes: tuple[Box, ...]
    wires: tuple[Wire, ...]
    copy_syntax: bool = True

    def text(self) -> str:
        lines = [p.decl("in") for p in self.inputs] + [p.decl("out") for p in self.outputs]
        lines += [b.text() for b in self.boxes]
        if self.copy_syntax:
            groups: dict[Ref, list[Ref]] = {}
            for w in self.wires:
                groups.setdefault(w.src, []).append(w.dst)
            lines += [f"wire {src} -> " + ", ".join(str(d) for d in dsts) for src, dsts in groups.items()]
        else:
            lines += [f"wire {w.src} -> {w.dst}" for w in self.wires]
        return f"composite {self.name} {{\n" + "".join(f"  {x}\n" for x in lines) + "}"

    def box(self, name: str) -> Box:
        return next(b for b in self.boxes if b.name == name)


System = Prim | Comp


@dataclass(frozen=True)
class Diagram:
    """Systems in declaration order (dependencies first) and the name of the top composite."""

    systems: tuple[System, ...]
    top: str

    def system(self, name: str) -> System:
        return next(s for s in self.systems if s.name == name)

    @property
    def top_comp(self) -> Comp:
        return self.system(self.top)

    def spec_text(self) -> str:
        return "\n\n".join(s.text() for s in self.systems) + "\n"

    def replace_system(self, new: System) -> "Diagram":
        """The diagram with ``new`` in place of the system of the same name (appended if new)."""
        if any(s.name == new.name for s in self.systems):
            return replace(self, systems=tuple(new if s.name == new.name else s for s in self.systems))
        return replace(self, systems=self.systems + (new,))

    def interface(self, name: str) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
        s = self.system(name)
        return s.inputs, s.outputs

    def feedthrough(self, name: str | None = None) -> dict[str, frozenset[str]]:
        """F of a system: each output -> the inputs it reads in the same step (exact reachability)."""
        return _feedthrough(self, name or self.top)

    def instantaneous_cycle(self, name: str | None = None) -> list[str] | None:
        """A cycle of a composite's instantaneous dependency graph, port by port, or None."""
        return _cycle(self, self.system(name or self.top))

    def paths(self, name: str | None = None) -> tuple[frozenset[str], frozenset[str]]:
        """(parameter paths, state paths) of a system as flattening names them: ``box/inner/W_i0``;
        a repeated box's copies hold states ``box/<copy>/...`` and, unless shared, params the same way."""
        s = self.system(name or self.top)
        if isinstance(s, Prim):
            return frozenset(() if s.delay else (f"W_{p.name}" for p in s.inputs)), frozenset(("s",))
        params: set[str] = set()
        states: set[str] = set()
        for b in s.boxes:
            inner_params, inner_states = self.paths(b.system)
            copies = [f"{b.name}/{i}" for i in range(b.repeat)] if b.repeat else [b.name]
            states |= {f"{c}/{x}" for c in copies for x in inner_states}
            params |= {f"{c}/{x}" for c in ([b.name] if b.shared else copies) for x in inner_params}
        return frozenset(params), frozenset(states)

    def dependency_edges(self, name: str | None = None) -> dict[str, list[str]]:
        """A composite's instantaneous dependency graph: wires plus each box's in -> out F edges."""
        return _edges(self, self.system(name or self.top))

    def flat(self) -> "Diagram":
        """The hand-flattened diagram: the top with every non-repeated composite box substituted."""
        top = _inline(self, self.top_comp)
        return _toposorted(self.replace_system(top))

    def flat_spec_text(self) -> str:
        return self.flat().spec_text()

    def simulate(self, inputs: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
        """Run the top for ``steps`` steps from the initial state: the NumPy oracle (float32)."""
        top = self.top_comp
        state = _init(self, top.name)
        outs: dict[str, list[np.ndarray]] = {p.name: [] for p in top.outputs}
        for t in range(steps):
            frame = _Frame(self, top, state, lambda name, t=t: np.asarray(inputs[name][t], dtype=F32))
            for p in top.outputs:
                outs[p.name].append(frame.port_value(Ref(None, p.name)))
            state = frame.next_state()
        return {k: np.stack(v) for k, v in outs.items()}


# ---------------------------------------------------------------- feedthrough and cycles
def _box_ft(d: Diagram, box: Box) -> dict[str, frozenset[str]]:
    f = _feedthrough(d, box.system)
    if not box.repeat:
        return f
    ins, outs = d.interface(box.system)
    first_in, first_out = ins[0].name, outs[0].name
    cur = dict(f)
    for _ in range(box.repeat - 1):  # copy i's first input is copy i-1's first output
        cur = {o: (f[o] - {first_in}) | (cur[first_out] if first_in in f[o] else frozenset()) for o in f}
    return cur


@lru_cache(maxsize=4096)
def _feedthrough(d: Diagram, name: str) -> dict[str, frozenset[str]]:
    s = d.system(name)
    if isinstance(s, Prim):
        return s.feedthrough()
    fts = {b.name: _box_ft(d, b) for b in s.boxes}
    into: dict[Ref, list[Ref]] = defaultdict(list)
    for w in s.wires:
        into[w.dst].append(w.src)

    def reach(dst: Ref, seen: frozenset) -> set[str]:
        acc: set[str] = set()
        for src in into[dst]:
            if src.box is None:
                acc.add(src.port)
            elif (src.box, src.port) not in seen:
                for i in fts[src.box][src.port]:
                    acc |= reach(Ref(src.box, i), seen | {(src.box, src.port)})
        return acc

    return {p.name: frozenset(reach(Ref(None, p.name), frozenset())) for p in s.outputs}


def _edges(d: Diagram, comp: Comp) -> dict[str, list[str]]:
    """The instantaneous dependency graph at port level: wires plus in -> out edges of each box's F."""
    edges: dict[str, list[str]] = defaultdict(list)
    for w in comp.wires:
        edges[str(w.src)].append(str(w.dst))
    for b in comp.boxes:
        for out, ins in _box_ft(d, b).items():
            for i in sorted(ins):
                edges[f"{b.name}.{i}"].append(f"{b.name}.{out}")
    return edges


def _cycle(d: Diagram, comp: Comp) -> list[str] | None:
    edges = _edges(d, comp)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in edges.get(n, ()):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in list(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


# ---------------------------------------------------------------- the NumPy oracle
def _init(d: Diagram, name: str):
    s = d.system(name)
    if isinstance(s, Prim):
        return np.full(s.size, s.init, dtype=F32)
    return {b.name: ([_init(d, b.system) for _ in range(b.repeat)] if b.repeat else _init(d, b.system))
            for b in s.boxes}


def _merge(merge: str, size: int, values: list[np.ndarray]) -> np.ndarray:
    if not values:
        return np.full(size, UNITS[merge], dtype=F32)
    acc = values[0]
    for v in values[1:]:
        acc = np.maximum(acc, v) if merge == "max" else (acc + v).astype(F32)
    return acc


class _Sys:
    """One system at one step: its state and a lazy getter of its input ports."""

    def __init__(self, d: Diagram, name: str, state, get: Callable[[str], np.ndarray]):
        self.d, self.s, self.state, self.get = d, d.system(name), state, get
        self.frame = _Frame(d, self.s, state, get) if isinstance(self.s, Comp) else None

    def output(self, port: str) -> np.ndarray:
        s = self.s
        if self.frame is not None:
            return self.frame.port_value(Ref(None, port))
        j = [p.name for p in s.outputs].index(port)
        if s.delay:
            return self.state.copy()
        y = F32(s.gains[j]) * np.tanh(self.state)
        if s.reads[j]:
            y = y + np.tanh(self._drive(s.reads[j]))
        return y.astype(F32)

    def _drive(self, names) -> np.ndarray:
        acc = None
        for n in names:
            term = (self.get(n) @ self.s.weight(n)).astype(F32)
            acc = term if acc is None else (acc + term).astype(F32)
        return acc

    def next_state(self):
        s = self.s
        if self.frame is not None:
            return self.frame.next_state()
        if s.delay:
            return self.get(s.inputs[0].name).astype(F32)
        return (F32(s.decay) * self.state + np.tanh(self._drive([p.name for p in s.inputs]))).astype(F32)


class _Repeat:
    """``repeat L [shared]``: L copies, copy i's first input is copy i-1's first output."""

    def __init__(self, d: Diagram, box: Box, states: list, get: Callable[[str], np.ndarray]):
        ins, outs = d.interface(box.system)
        self.copies: list[_Sys] = []
        for i, st_i in enumerate(states):
            def getter(port, i=i):
                if port == ins[0].name and i > 0:
                    return self.copies[i - 1].output(outs[0].name)
                return get(port)
            self.copies.append(_Sys(d, box.system, st_i, _memo(getter)))

    def output(self, port: str) -> np.ndarray:
        return self.copies[-1].output(port)

    def next_state(self):
        return [c.next_state() for c in self.copies]


def _memo(fn: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = fn(name)
        return cache[name]

    return get


class _Frame:
    """A composite at one step: port values by demand (only what each readout reads), memoised."""

    def __init__(self, d: Diagram, comp: Comp, state, get: Callable[[str], np.ndarray]):
        self.d, self.comp, self.get = d, comp, _memo(get)
        self.cache: dict[Ref, np.ndarray] = {}
        self.boxes = {}
        for b in comp.boxes:
            port_get = _memo(lambda port, b=b: self.port_value(Ref(b.name, port)))
            if b.repeat:
                self.boxes[b.name] = _Repeat(d, b, state[b.name], port_get)
            else:
                self.boxes[b.name] = _Sys(d, b.system, state[b.name], port_get)

    def sig(self, ref: Ref) -> Port:
        if ref.box is None:
            return next(p for p in self.comp.outputs if p.name == ref.port)
        ins, _ = self.d.interface(self.comp.box(ref.box).system)
        return next(p for p in ins if p.name == ref.port)

    def port_value(self, dst: Ref) -> np.ndarray:
        """The merged value arriving at a box input or at an output of the composite."""
        if dst not in self.cache:
            sig = self.sig(dst)
            values = [self.source(w.src) for w in self.comp.wires if w.dst == dst]
            self.cache[dst] = _merge(sig.merge, sig.size, values)
        return self.cache[dst]

    def source(self, src: Ref) -> np.ndarray:
        if src.box is None:
            return self.get(src.port)
        return self.boxes[src.box].output(src.port)

    def next_state(self):
        return {name: box.next_state() for name, box in self.boxes.items()}


# ---------------------------------------------------------------- hand-flattening
def _inline(d: Diagram, comp: Comp) -> Comp:
    """``comp`` with every non-repeated composite box substituted, innermost first."""
    for b in comp.boxes:
        inner = d.system(b.system)
        if isinstance(inner, Comp) and not b.repeat:
            comp = _splice(d, comp, b.name, _inline(d, inner))
    return comp


def _compatible(outer: str, inner: str) -> bool:
    return outer == inner or {outer, inner} <= {"sum", "exclusive"}


def _splice(d: Diagram, parent: Comp, n: str, inner: Comp) -> Comp:
    """``parent`` with box ``n`` (filled with ``inner``) replaced by inner's boxes, renamed ``n_<box>``.

    A wire path through one of n's ports becomes a direct wire (one per path, so multiplicities are
    kept).  That is behaviour-preserving only when the port has exactly one source or merges with
    the same monoid as every consumer; anything else raises ``ValueError``.
    """
    def rename(r: Ref) -> Ref:
        return Ref(n, r.port) if r.box is None else Ref(f"{n}_{r.box}", r.port)

    edges = [(w.src, w.dst) for w in parent.wires] + [(rename(w.src), rename(w.dst)) for w in inner.wires]
    out_edges: dict[Ref, list[Ref]] = defaultdict(list)
    in_count: dict[Ref, int] = defaultdict(int)
    for s, t in edges:
        out_edges[s].append(t)
        in_count[t] += 1
    boxes = {b.name: b for b in parent.boxes if b.name != n}
    boxes.update({f"{n}_{b.name}": replace(b, name=f"{n}_{b.name}") for b in inner.boxes})
    sigs = {p.name: p for p in inner.inputs + inner.outputs}

    def merge_of(r: Ref) -> str:
        if r.box == n:
            return sigs[r.port].merge
        if r.box is None:
            return next(p for p in parent.outputs if p.name == r.port).merge
        ins, _ = d.interface(boxes[r.box].system)
        return next(p for p in ins if p.name == r.port).merge

    for p in inner.inputs + inner.outputs:
        mid = Ref(n, p.name)
        consumers = out_edges[mid]
        if in_count[mid] != 1 and consumers:
            if in_count[mid] == 0:
                raise ValueError(f"{mid} has no source but feeds {consumers}")
            if not all(_compatible(p.merge, merge_of(c)) for c in consumers):
                raise ValueError(f"{mid} merges by {p.merge} into ports with another monoid")

    def expand(t: Ref, depth: int = 0) -> list[Ref]:
        if t.box != n:
            return [t]
        if depth > 64:
            raise ValueError("an instantaneous pass-through loop")
        return [x for u in out_edges[t] for x in expand(u, depth + 1)]

    wires = tuple(Wire(s, t2) for s, t in edges if s.box != n for t2 in expand(t))
    order = []
    for b in parent.boxes:
        order += [boxes[f"{n}_{x.name}"] for x in inner.boxes] if b.name == n else [b]
    return replace(parent, boxes=tuple(order), wires=wires)


# ---------------------------------------------------------------- strategies
@st.composite
def prims(draw, name: str, size: int | None = None, loop: bool = False) -> Prim:
    """One primitive system; ``size`` fixes its state (and output) size.

    With ``loop`` it is never a delay, its first input has the state's size and its first output
    reads that input (a Mealy box: a loop from ``o0`` back to ``i0`` needs state elsewhere).
    """
    size = size if size is not None else draw(st.sampled_from(SIZES))
    if not loop and draw(st.integers(0, 5)) == 5:
        return Prim(name, size, (Port("i0", size),), (Port("o0", size),), ((),), delay=True)
    k = draw(st.integers(1, 2))
    inputs = tuple(Port(f"i{j}", draw(st.sampled_from(SIZES)),
                        draw(st.sampled_from(("sum", "sum", "max", "exclusive")))) for j in range(k))
    if loop or draw(st.booleans()):  # a first input of the state's size: the prim can be repeated
        inputs = (replace(inputs[0], size=size),) + inputs[1:]
    n_out = draw(st.integers(1, 2))
    names = [p.name for p in inputs]
    reads = tuple(tuple(n for n in names if (loop and j == 0 and n == "i0") or draw(st.booleans()))
                  for j in range(n_out))
    return Prim(name, size, inputs, tuple(Port(f"o{j}", size) for j in range(n_out)), reads,
                decay=draw(st.sampled_from(DECAYS)),
                gains=tuple(draw(st.sampled_from(GAINS)) for _ in range(n_out)),
                bounds=tuple((draw(st.sampled_from(BOUNDS)), draw(st.sampled_from(BOUNDS))) for _ in inputs),
                init=draw(st.sampled_from(INITS)))


def _acyclic_with(d: Diagram, comp: Comp, wire: Wire) -> bool:
    trial = replace(comp, wires=comp.wires + (wire,))
    return _cycle(d.replace_system(trial), trial) is None


@st.composite
def _flat_top(draw, prefix: str, inputs, outputs, max_boxes: int) -> Diagram:
    """A diagram whose top holds primitive (possibly repeated) boxes only."""
    n_boxes = draw(st.integers(max(1, len(outputs or ())), max_boxes))
    systems: list[Prim] = []
    boxes: list[Box] = []
    for i in range(n_boxes):
        want = outputs[i] if outputs and i < len(outputs) else None
        reusable = [p for p in systems if want is None or p.size == want]
        if reusable and draw(st.integers(0, 3)) == 3:
            prim = draw(st.sampled_from(reusable))
        else:
            prim = draw(prims(f"{prefix}_P{len(systems)}", want))
            systems.append(prim)
        repeat = 0
        if prim.inputs[0].size == prim.size and draw(st.integers(0, 4)) == 4:
            repeat = draw(st.integers(1, 3))
        boxes.append(Box(f"b{i}", prim.name, repeat, draw(st.booleans()) if repeat else True))
    fixed = inputs is not None
    top_in = [Port(f"x{j}", s) for j, s in enumerate(inputs)] if fixed else \
        [Port(f"x{j}", draw(st.sampled_from(SIZES))) for j in range(draw(st.integers(1, 2)))]
    comp = Comp(prefix, tuple(top_in), (), tuple(boxes), ())
    d = Diagram(tuple(systems) + (comp,), prefix)

    def sources(size: int, dst: Ref | None) -> list[Ref]:
        found = [Ref(None, p.name) for p in comp.inputs if p.size == size]
        for b in comp.boxes:
            for p in d.interface(b.system)[1]:
                if p.size == size and (dst is None or _acyclic_with(d, comp, Wire(Ref(b.name, p.name), dst))):
                    found.append(Ref(b.name, p.name))
        return found

    for b in boxes:
        for port in d.interface(b.system)[0]:
            lo, hi = {"sum": (0, 2), "max": (1, 2), "exclusive": (0, 1)}[port.merge]
            for _ in range(draw(st.integers(lo, hi))):
                dst = Ref(b.name, port.name)
                cands = sources(port.size, dst)
                if not cands and not fixed and len(comp.inputs) < 3:
                    comp = replace(comp, inputs=comp.inputs + (Port(f"x{len(comp.inputs)}", port.size),))
                    cands = sources(port.size, dst)
                assume(cands)
                comp = replace(comp, wires=comp.wires + (Wire(draw(st.sampled_from(cands)), dst),))
                d = d.replace_system(comp)
    sizes = outputs if outputs is not None else [
        draw(st.sampled_from(sorted({p.size for b in boxes for p in d.interface(b.system)[1]})))
        for _ in range(draw(st.integers(1, 2)))]
    for j, size in enumerate(sizes):
        merge = draw(st.sampled_from(("sum", "sum", "max", "exclusive")))
        port = Port(f"y{j}", size, merge)
        comp = replace(comp, outputs=comp.outputs + (port,))
        for _ in range(draw(st.integers(1, 1 if merge == "exclusive" else 2))):
            comp = replace(comp, wires=comp.wires + (Wire(draw(st.sampled_from(sources(size, None))),
                                                          Ref(None, port.name)),))
    return d.replace_system(comp)


def _group(d: Diagram, comp: Comp, members: list[str], name: str, box_name: str, merge_boundary: bool,
           merges: list[str]) -> tuple[Diagram, Comp]:
    """Move ``members`` of ``comp`` into a new composite ``name`` used as box ``box_name``.

    A source outside with targets inside gets one input port (one source: any monoid keeps its
    value); a source inside with targets outside gets one output port.  With ``merge_boundary``,
    an inside port whose only sources are several outside sources used nowhere else inside gets
    them through one input port merging with the same monoid (associativity).
    """
    inside = set(members)
    def is_in(r: Ref) -> bool:
        return r.box in inside

    inner_wires: list[Wire] = []
    outer_wires: list[Wire] = []
    in_ports: list[Port] = []
    out_ports: list[Port] = []
    in_of: dict[Ref, str] = {}
    out_of: dict[Ref, str] = {}
    merged_dst: dict[Ref, str] = {}
    size_of = _size_table(d, comp)
    mk = iter(merges * 64)
    if merge_boundary:
        crossing = [w for w in comp.wires if not is_in(w.src) and is_in(w.dst)]
        for dst in dict.fromkeys(w.dst for w in crossing):
            srcs = [w.src for w in crossing if w.dst == dst]
            others = [w for w in comp.wires if w.dst == dst and is_in(w.src)]
            exclusive = all(w.dst == dst for w in crossing if w.src in srcs)
            merge = _port_merge(d, comp, dst)
            if len(srcs) >= 2 and not others and exclusive and merge != "exclusive":
                pname = f"gi{len(in_ports)}"
                in_ports.append(Port(pname, size_of[dst], merge))
                merged_dst[dst] = pname
                inner_wires.append(Wire(Ref(None, pname), dst))
    for w in comp.wires:
        if is_in(w.src) and is_in(w.dst):
            inner_wires.append(w)
        elif not is_in(w.src) and is_in(w.dst):
            if w.dst in merged_dst:
                outer_wires.append(Wire(w.src, Ref(box_name, merged_dst[w.dst])))
                continue
            if w.src not in in_of:
                pname = f"gi{len(in_ports)}"
                in_ports.append(Port(pname, size_of[w.src], next(mk)))
                in_of[w.src] = pname
                outer_wires.append(Wire(w.src, Ref(box_name, pname)))
            inner_wires.append(Wire(Ref(None, in_of[w.src]), w.dst))
        elif is_in(w.src) and not is_in(w.dst):
            if w.src not in out_of:
                pname = f"go{len(out_ports)}"
                out_ports.append(Port(pname, size_of[w.src], next(mk)))
                out_of[w.src] = pname
                inner_wires.append(Wire(w.src, Ref(None, pname)))
            outer_wires.append(Wire(Ref(box_name, out_of[w.src]), w.dst))
        else:
            outer_wires.append(w)
    group = Comp(name, tuple(in_ports), tuple(out_ports), tuple(b for b in comp.boxes if b.name in inside),
                 tuple(inner_wires))
    boxes: list[Box] = []
    for b in comp.boxes:
        if b.name not in inside:
            boxes.append(b)
        elif not any(x.name == box_name for x in boxes):
            boxes.append(Box(box_name, name))
    parent = replace(comp, boxes=tuple(boxes), wires=tuple(outer_wires))
    d = Diagram(tuple(s for s in d.systems if s.name != comp.name) + (group, parent), d.top)
    return d, parent


def _size_table(d: Diagram, comp: Comp) -> dict[Ref, int]:
    sizes = {Ref(None, p.name): p.size for p in comp.inputs + comp.outputs}
    for b in comp.boxes:
        ins, outs = d.interface(b.system)
        sizes.update({Ref(b.name, p.name): p.size for p in ins + outs})
    return sizes


def _port_merge(d: Diagram, comp: Comp, dst: Ref) -> str:
    if dst.box is None:
        return next(p for p in comp.outputs if p.name == dst.port).merge
    ins, _ = d.interface(comp.box(dst.box).system)
    return next(p for p in ins if p.name == dst.port).merge


@st.composite
def _nest(draw, d: Diagram, comp_name: str, depth: int, counter: list[int]) -> Diagram:
    """Group some boxes of ``comp_name`` into nested composites, recursively (``depth`` levels)."""
    comp = d.system(comp_name)
    if depth == 0 or not comp.boxes or draw(st.integers(0, 3)) == 0:
        return d
    names = [b.name for b in comp.boxes if isinstance(d.system(b.system), Prim)]
    if not names:
        return d
    members = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    gname = f"{d.top}_G{counter[0]}"
    bname = f"g{counter[0]}"
    counter[0] += 1
    merges = draw(st.lists(st.sampled_from(("sum", "max", "exclusive")), min_size=1, max_size=3))
    d, _ = _group(d, comp, sorted(members, key=names.index), gname, bname, draw(st.booleans()), merges)
    d = draw(_nest(d, gname, depth - 1, counter))
    parent = d.system(comp_name)
    group = d.system(gname)
    if group.inputs and group.outputs and group.inputs[0].size == group.outputs[0].size and \
            draw(st.integers(0, 3)) == 3:
        box = parent.box(bname)
        trial = replace(parent, boxes=tuple(replace(b, repeat=2, shared=draw(st.booleans())) if b is box else b
                                            for b in parent.boxes))
        if _cycle(d.replace_system(trial), trial) is None:
            d = d.replace_system(trial)
    return draw(_nest(d, comp_name, depth - 1, counter))


@st.composite
def diagrams(draw, prefix: str = "D", inputs: tuple[int, ...] | None = None,
             outputs: tuple[int, ...] | None = None, max_boxes: int = 5, nest: bool = True) -> Diagram:
    """A random well-typed, guarded diagram named ``prefix`` (see the module docstring)."""
    d = draw(_flat_top(prefix, inputs, outputs, max_boxes))
    if nest:
        d = draw(_nest(d, prefix, 3, [0]))
    d = d.replace_system(replace(d.top_comp, copy_syntax=draw(st.booleans())))
    return _toposorted(d)


def _toposorted(d: Diagram) -> Diagram:
    """The systems the top uses, each after the systems its boxes use."""
    order: list[System] = []

    def visit(name: str) -> None:
        if any(s.name == name for s in order):
            return
        s = d.system(name)
        if isinstance(s, Comp):
            for b in s.boxes:
                visit(b.system)
        order.append(s)

    visit(d.top)
    return Diagram(tuple(order), d.top)
