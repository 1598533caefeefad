"""NIR graphs into nspec (docs/nir.md).

A ``nir.NIRGraph`` becomes the source text of a composite of ``std/nir.nspec`` boxes, one box per
node and one wire per edge, plus the weights its parameters load (``box/param`` names, as
``Model.state_dict`` spells them).  A nested graph becomes a composite of its own.  NIR's
``Input``/``Output`` nodes become the composite's ports.  A loop needs a one-step delay: as
snnTorch computes it, an edge that leaves a neuron and comes back to it reads the neuron's spikes of
the last step (``StepDelay``), so the neuron is the loop's Moore box.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class NirError(ValueError):
    """A NIR graph (or file) that nspec cannot read, or a model NIR cannot express; the message
    names the node (its path in nested graphs) and the primitive."""


def require_nir():
    """The ``nir`` module, or a ``NirError`` that says how to install it."""
    try:
        import nir
    except ImportError:
        raise NirError("reading and writing NIR needs the packages nir and h5py: pip install nspec[nir]") from None
    return nir


# NIR primitive -> (std/nir.nspec declaration, its parameters in NIR's names, where they live in the box)
NEURONS = {
    "LIF": ("LIF", ("tau", "r", "v_leak", "v_threshold", "v_reset"), "P/"),
    "IF": ("IF", ("r", "v_threshold", "v_reset"), "P/"),
    "LI": ("LI", ("tau", "r", "v_leak"), ""),
    "I": ("Integrator", ("r",), ""),
    "Threshold": ("Threshold", ("threshold",), ""),
    "Scale": ("Scale", ("scale",), ""),
}
# CubaLIF's parameters: the current's in box `syn`, the membrane's in the LIF box `mem`
CUBA = {"tau_syn": "syn/tau_syn", "w_in": "syn/w_in", "tau_mem": "mem/P/tau", "r": "mem/P/r",
        "v_leak": "mem/P/v_leak", "v_threshold": "mem/P/v_threshold", "v_reset": "mem/P/v_reset"}
# the primitives whose output is a state of the step before: a loop may close through them
LOOP_CARRIERS = {"LIF", "IF", "CubaLIF", "LI", "I"}
RESERVED = {"in", "out", "box", "wire", "expose", "param", "state", "let", "next", "if", "else", "for",
            "network", "composite", "system", "neuron", "synapse", "hyper", "method", "import", "from",
            "module", "simulate", "test", "population", "projection", "record", "dt", "t"}


@dataclass(frozen=True)
class Imported:
    """The spec text of an imported graph and the weights it loads."""

    source: str
    weights: dict


def kind(node) -> str:
    return type(node).__name__


def load_graph(path_or_graph):
    """A ``nir.NIRGraph`` from a file (``nir.read``) or the graph itself."""
    nir = require_nir()
    if isinstance(path_or_graph, nir.NIRGraph):
        return path_or_graph
    if not isinstance(path_or_graph, (str, Path)):
        raise NirError(f"expected a NIR file or a nir.NIRGraph, got {type(path_or_graph).__name__}")
    path = Path(path_or_graph)
    if not path.is_file():
        raise NirError(f"{path}: no such NIR file")
    try:
        graph = nir.read(str(path))
    except Exception as exc:  # h5py and nir raise many kinds for a file that is not a NIR graph
        raise NirError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NirError(f"{path}: holds a single {kind(graph)} node, not a NIR graph")
    return graph


def identifier(name: str, taken: set[str]) -> str:
    """A spec name for the NIR node ``name``, unique among ``taken`` (which it joins)."""
    base = re.sub(r"\W", "_", str(name)) or "node"
    if base[0].isdigit():
        base = "n" + base
    if base in RESERVED or keyword.iskeyword(base):
        base += "_"
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def sccs(names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Strongly connected component of each name (Tarjan's algorithm, iteratively)."""
    succ = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
    index, low, comp, stack, on = {}, {}, {}, [], set()
    counter = [0]
    for root in names:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter[0]
                counter[0] += 1
                stack.append(v)
                on.add(v)
            if i < len(succ[v]):
                work.append((v, i + 1))
                w = succ[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            for w in succ[v]:
                if w in on:
                    low[v] = min(low[v], low[w])
            if low[v] == index[v]:
                number = len(set(comp.values()))
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp[w] = number
                    if w == v:
                        break
    return comp


def cycle_in(names: set[str], edges: list[tuple[str, str]]) -> list[str] | None:
    """One cycle among ``names`` through ``edges``, or None."""
    succ = {n: [b for a, b in edges if a == n and b in names] for n in names}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v):
        state[v] = 1
        path.append(v)
        for w in succ[v]:
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for n in sorted(names):
        if n not in state and (found := visit(n)):
            return found
    return None


def shape_of(value) -> tuple[int, ...]:
    return tuple(int(d) for d in np.asarray(value).reshape(-1))


class GraphWriter:
    """Writes one NIR graph level as a composite; nested graphs as composites of their own."""

    def __init__(self, method_hyper: str, states: bool, dt_seconds: float):
        self.method = method_hyper
        self.dt = dt_seconds            # a Delay's time becomes a whole number of these steps
        self.states = states            # expose the top level's neuron states as outputs
        self.decls: list[str] = []      # composites of nested graphs, innermost first
        self.weights: dict[str, np.ndarray] = {}
        self.names: set[str] = set()    # declaration names

    def fail(self, path: str, message: str):
        raise NirError(f"NIR node '{path}': {message}")

    def composite(self, graph, name: str, where: str, prefix: str) -> tuple[str, dict, dict]:
        """Writes ``graph`` as the composite ``name``; returns (name, input ports, output ports):
        NIR node name -> (port, shape)."""
        nir = require_nir()
        label = lambda n: f"{where}.{n}" if where else str(n)  # noqa: E731
        nodes = dict(graph.nodes)
        boxes, inputs, outputs = {}, {}, {}
        taken: set[str] = set()
        for n, node in nodes.items():
            if isinstance(node, nir.Input):
                inputs[n] = (identifier(n, taken), shape_of(node.input_type["input"]))
            elif isinstance(node, nir.Output):
                outputs[n] = (identifier(n, taken), shape_of(node.output_type["output"]))
        for n in nodes:
            if n not in inputs and n not in outputs:
                boxes[n] = identifier(n, taken)
        edges = [self.endpoints(e, nodes, label) for e in graph.edges]
        # output shapes: what each node produces, from its parameters or, for scalar ones, its input
        out_shape = {n: s for n, (_, s) in inputs.items()}
        in_shape: dict[str, tuple] = {}
        subs = {}
        for n, node in nodes.items():
            if isinstance(node, nir.NIRGraph):
                subs[n] = self.composite(node, f"{name}_{boxes[n]}", label(n), f"{prefix}{boxes[n]}/")
        pending = [n for n in boxes]
        for _ in range(len(nodes) + 1):
            for (a, pa), (b, pb) in edges:
                if a in out_shape and b not in in_shape:
                    in_shape[b] = out_shape[a]
            for n in list(pending):
                s = self.output_shape(nodes[n], in_shape.get(n), subs.get(n), label(n))
                if s is not None:
                    out_shape[n] = s
                    pending.remove(n)
            if not pending:
                break
        if pending:
            self.fail(label(pending[0]), f"{kind(nodes[pending[0]])} with scalar parameters has no input edge "
                                         "to give its size")
        lines = [f"composite {name} {{"]
        for n, (port, s) in inputs.items():
            lines.append(f"  in {port}: {self.type_text(s)}")
        for n, (port, s) in outputs.items():
            lines.append(f"  out {port}: {self.type_text(s)}")
        for n, box in boxes.items():
            decl = self.instance(nodes[n], box, in_shape.get(n), out_shape[n], subs.get(n), label(n), prefix, name)
            lines.append(f"  box {box}: {decl}")
        # a loop closes through the last step's output of a neuron
        names = list(boxes)
        inner = [(a, b) for (a, _), (b, _) in edges if a in boxes and b in boxes]
        comp = sccs(names, inner)
        # a loop through a Delay of k >= 1 steps is closed by it: its neurons add no step of their own
        delayed_loops = {comp[n] for n in names if kind(nodes[n]) == "Delay" and self.delay_steps(nodes[n], label(n))}
        late = {(a, b) for a, b in inner if comp[a] == comp[b] and kind(nodes[a]) in LOOP_CARRIERS
                and comp[a] not in delayed_loops}
        moore = {(a, b) for a, b in inner if kind(nodes[a]) == "Delay" and self.delay_steps(nodes[a], label(a))}
        for members in {c: {n for n in names if comp[n] == c} for c in set(comp.values())}.values():
            cycle = cycle_in(members, [e for e in inner if e not in late and e not in moore])
            if cycle:
                self.fail(label(cycle[0]), "the loop " + " -> ".join(map(str, cycle)) + " passes through no neuron "
                          "(LIF, IF, CubaLIF, LI or I) whose last step's output could close it, and no Delay")
        delayed = set()
        for (a, pa), (b, pb) in edges:
            if a in outputs or b in inputs:
                self.fail(label(a if a in outputs else b), "an edge leaves an Output node or enters an Input node")
            src = inputs[a][0] if a in inputs else f"{boxes[a]}.{pa}"
            dst = outputs[b][0] if b in outputs else f"{boxes[b]}.{pb}"
            if out_shape[a] != in_shape.get(b, out_shape[a]) and b not in outputs:
                self.fail(label(b), f"its input edge from '{a}' carries shape {list(out_shape[a])}, it takes "
                                    f"{list(in_shape[b])}")
            if b in outputs and out_shape[a] != outputs[b][1]:
                self.fail(label(b), f"the Output of shape {list(outputs[b][1])} is fed shape {list(out_shape[a])} "
                                    f"by '{a}'")
            if (a, b) in late:
                hold = f"{boxes[a]}_late"
                if a not in delayed:
                    delayed.add(a)
                    lines.append(f"  box {hold}: nir.StepDelay(n = {int(np.prod(out_shape[a]))})")
                    lines.append(f"  wire {src} -> {hold}.x")
                src = f"{hold}.y"
            lines.append(f"  wire {src} -> {dst}")
        if self.states and not where:
            for n, box in boxes.items():
                for state in {"LIF": "v", "IF": "v", "CubaLIF": "vi"}.get(kind(nodes[n]), ""):
                    lines.append(f"  expose {box}.{state} as {identifier(f'{box}_{state}', taken)}")
        lines.append("}")
        self.decls.append("\n".join(lines))
        return name, {n: (p, s) for n, (p, s) in inputs.items()}, {n: (p, s) for n, (p, s) in outputs.items()}

    def endpoints(self, edge, nodes, label):
        """((node, port), (node, port)) of an edge; ``sub.inner`` names a port of a nested graph."""
        nir = require_nir()
        out = []
        for end, role in zip(edge, ("output", "input")):
            name, _, port = str(end).partition(".")
            node = nodes.get(end, nodes.get(name))
            if node is None:
                raise NirError(f"NIR edge {tuple(edge)}: '{end}' is not a node of the graph "
                               f"(nodes: {', '.join(map(str, nodes))})")
            if end in nodes:
                name, port = end, ""
            if isinstance(node, nir.NIRGraph):
                cls = nir.Output if role == "output" else nir.Input
                ends = [n for n, x in node.nodes.items() if isinstance(x, cls)]
                if not port:
                    if len(ends) != 1:
                        raise NirError(f"NIR edge {tuple(edge)}: the graph '{label(name)}' has {len(ends)} "
                                       f"{cls.__name__} nodes; name one as '{name}.<node>'")
                    port = ends[0]
                elif port not in ends:
                    raise NirError(f"NIR edge {tuple(edge)}: '{port}' is not an {cls.__name__} node of '{label(name)}'")
                port = identifier(port, set())
            else:
                port = "y" if role == "output" else "x"
            out.append((name, port))
        return tuple(out)

    def output_shape(self, node, given, sub, where):
        """The shape ``node`` produces, or None while its input's is unknown."""
        nir = require_nir()
        k = kind(node)
        if k in ("Affine", "Linear"):
            w = np.asarray(node.weight)
            if w.ndim != 2:
                self.fail(where, f"{k} weight of shape {list(w.shape)}: nspec reads a [out, in] matrix")
            return (w.shape[0],)
        if k in NEURONS or k == "CubaLIF":
            names = NEURONS[k][1] if k in NEURONS else tuple(CUBA)
            sizes = {np.asarray(getattr(node, p)).size for p in names}
            if max(sizes) > 1:
                if len(sizes - {1}) > 1:
                    self.fail(where, f"{k} parameters of different sizes {sorted(sizes)}")
                shape = np.asarray(getattr(node, names[0])).shape if np.asarray(getattr(node, names[0])).size > 1 \
                    else next(np.asarray(getattr(node, p)).shape for p in names if np.asarray(getattr(node, p)).size > 1)
                if len(shape) != 1:
                    self.fail(where, f"{k} of shape {list(shape)}: nspec imports one-dimensional layers")
                return shape
            return given
        if k == "Delay":
            size = np.asarray(node.delay).size
            return (size,) if size > 1 else given
        if k == "Flatten":
            s = shape_of(node.input_type["input"])
            a, b = node.start_dim % len(s), node.end_dim % len(s)
            return s[:a] + (int(np.prod(s[a:b + 1])),) + s[b + 1:]
        if isinstance(node, nir.NIRGraph):
            outs = sub[2]
            if len(outs) != 1:
                self.fail(where, f"a nested graph with {len(outs)} Output nodes: nspec imports one")
            return next(iter(outs.values()))[1]
        supported = "Input, Output, Affine, Linear, Scale, LIF, CubaLIF, IF, LI, I, Threshold, Delay, Flatten, NIRGraph"
        self.fail(where, f"nspec cannot import the NIR primitive {k} (it imports {supported})")

    def delay_steps(self, node, where) -> int:
        """A Delay's time in steps of dt: one whole number for the whole node, else an error."""
        seconds = np.unique(np.asarray(node.delay, np.float64).reshape(-1))
        if seconds.size != 1:
            self.fail(where, f"Delay with different delays per element {seconds[:4].tolist()} s: nspec imports one "
                             "delay per node")
        steps = float(seconds[0]) / self.dt
        if not np.isfinite(steps) or steps < 0 or abs(steps - round(steps)) > 1e-6 * max(1.0, abs(steps)):
            self.fail(where, f"Delay of {float(seconds[0])!r} s is not a whole number of steps of dt = {self.dt!r} s "
                             "(give the import a dt that divides it: --dt, or read(..., dt=))")
        return int(round(steps))

    def type_text(self, shape) -> str:
        return "f32[" + ", ".join(str(d) for d in shape) + "]" if shape else "f32"

    def instance(self, node, box, given, shape, sub, where, prefix, owner) -> str:
        """The box's declaration with its arguments; records its weights."""
        k = kind(node)
        size = int(np.prod(shape)) if shape else 1
        key = f"{prefix}{box}/"
        if given is not None and k not in ("Affine", "Linear", "Flatten", "NIRGraph") and given != shape:
            self.fail(where, f"{k} of shape {list(shape)} is fed shape {list(given)}")
        if k in ("Affine", "Linear"):
            w = np.asarray(node.weight, np.float32)
            self.weights[key + "weight"] = w
            if k == "Affine":
                self.weights[key + "bias"] = np.broadcast_to(np.asarray(node.bias, np.float32), (w.shape[0],)).copy()
            if given is not None and given != (w.shape[1],):
                self.fail(where, f"{k} weight [{w.shape[0]}, {w.shape[1]}] is fed shape {list(given)}")
            return f"nir.{k}(n_in = {w.shape[1]}, n_out = {w.shape[0]})"
        if k in NEURONS or k == "CubaLIF":
            table = {p: NEURONS[k][2] + p for p in NEURONS[k][1]} if k in NEURONS else CUBA
            for p, path in table.items():
                v = np.asarray(getattr(node, p), np.float64)
                if p.startswith("tau") and np.any(v <= 0):
                    self.fail(where, f"{k} {p} must be positive, got {v.reshape(-1)[:4].tolist()}")
                self.weights[key + path] = np.broadcast_to(v.astype(np.float32).reshape(-1), (size,)).copy()
            decl = NEURONS[k][0] if k in NEURONS else "CubaLIF"
            method = f", m = {self.method}" if k in ("LIF", "IF", "LI", "CubaLIF") else ""
            return f"nir.{decl}(n = {size}{method})"
        if k == "Delay":
            steps = self.delay_steps(node, where)
            if steps == 0:  # no delay: the identity
                self.weights[key + "scale"] = np.ones(size, np.float32)
                return f"nir.Scale(n = {size})"
            return f"nir.Delay(n = {size}, k = {steps})"
        if k == "Flatten":
            src = shape_of(node.input_type["input"])
            if given is not None and given != src:
                self.fail(where, f"Flatten of input type {list(src)} is fed shape {list(given)}")
            decl = f"{owner}_{box}_flatten"
            self.decls.append(f"system {decl} {{\n  in x: {self.type_text(src)}\n  out y: {self.type_text(shape)}\n"
                              f"  y = reshape(x, [{', '.join(map(str, shape))}])\n}}")
            return decl
        return sub[0]


def translate(graph, dt="0.1 ms", method: str = "euler", states: bool = False) -> Imported:
    """The spec text and weights of ``graph`` integrated at ``dt`` (a quantity string, or seconds)
    with ``method`` (``euler``, ``exp_euler``, ``midpoint``, ``heun``, ``rk4``).  ``states`` also
    makes the membrane (``<box>_v``, at the start of each step) and CubaLIF's current (``<box>_i``,
    after the step's input) of the top level's neurons outputs."""
    graph = load_graph(graph)
    step = dt if isinstance(dt, str) else f"{float(dt)!r} s"
    try:
        from nspec.compiler.units import parse_duration
        seconds = parse_duration(step)
    except ValueError as exc:
        raise NirError(f"dt: {exc}") from None
    writer = GraphWriter("method", states, seconds)
    writer.composite(graph, "Graph", "", "")
    header = [
        "# Imported from a NIR graph by nspec.nir (docs/nir.md): NIR's continuous-time equations,",
        "# integrated by `method` at the step dt of the simulate item.  Forward Euler at 0.1 ms is how",
        "# snnTorch discretised its networks; the parameters load from the weights (box/param).",
        'module nir_graph "a graph imported from NIR"',
        "",
        'import "std/nir.nspec" as nir',
        "",
        f'hyper method: str = "{method}"',
        "",
    ]
    footer = ["", f"simulate Graph for 1 ms, dt = {step}", ""]
    return Imported("\n".join(header + ["\n\n".join(writer.decls)] + footer), writer.weights)
