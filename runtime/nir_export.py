"""nspec models into NIR (docs/nir.md).

A model whose run target is a composite of ``std/nir.nspec`` boxes (what ``nspec.nir.read``
writes, or a spec written with that library) exports box by box: each box is the NIR primitive of
the same name with the values its parameters hold now, each wire an edge, a nested composite a
nested graph.  A ``StepDelay`` on the edge that leaves a neuron and closes a loop is NIR's own
convention (the loop reads the neuron's last output), so it becomes a plain edge.  Anything else is
an ``NspecError`` located at the box or wire NIR cannot express.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nspec.compiler.elaborate import elaborate_file
from nspec.compiler.modules import std_lib
from nspec.compiler.systems import Composite
from nspec.dsl.diagnostics import NspecError, SourceMap, error
from nspec.runtime.nir_import import require_nir, sccs

NEURON_BOXES = {"LIF", "IF", "CubaLIF", "LI", "Integrator"}
EXPORTABLE = "LIF, CubaLIF, IF, LI, Integrator, Threshold, Affine, Linear, Scale, Delay and StepDelay"


def to_nir(model):
    """The ``nir.NIRGraph`` of ``model``'s run target, with its current parameter values."""
    require_nir()
    sources = SourceMap()
    design = elaborate_file(str(model.path), sources, dict(model.hyper), model.target)
    return Exporter(model.state_dict(), sources, model.dt).graph(design.system, "", design.span)


class Exporter:
    def __init__(self, params: dict, sources: SourceMap, dt: float):
        self.params = params
        self.dt = dt  # a Delay's k steps are k * dt seconds in NIR
        self.sources = sources
        self.library = (Path(std_lib()) / "nir.nspec").resolve()

    def fail(self, span, message: str):
        raise NspecError([error(span, message)], self.sources)

    def from_library(self, system) -> bool:
        path = getattr(system.span, "path", None)
        return bool(path) and Path(path).resolve() == self.library

    def graph(self, comp, prefix: str, span):
        nir = require_nir()
        if not isinstance(comp, Composite):
            self.fail(span, f"NIR export takes a composite of std/nir.nspec boxes; '{comp.name}' is a system")
        nodes: dict = {}
        for p in comp.inputs:
            nodes[p.name] = nir.Input(input_type=np.array(p.shape))
        for p in comp.outputs:
            nodes[p.name] = nir.Output(output_type=np.array(p.shape))
        delays, kinds = {}, {}
        for box in comp.boxes:
            if box.name in nodes:
                self.fail(box.span, f"box '{box.name}' has the name of a port: NIR names both by one node name")
            where = f"{prefix}{box.param_prefix}/"
            kinds[box.name] = box.system.name if self.from_library(box.system) else None
            if kinds[box.name] == "StepDelay":
                delays[box.name] = box
            elif kinds[box.name] == "Delay":
                k, n = next(v.shape for v in box.system.states if v.name.rsplit("/", 1)[-1] == "buf")
                nodes[box.name] = nir.Delay(delay=np.full(n, k * self.dt, np.float32))
            elif kinds[box.name] is not None:
                nodes[box.name] = self.primitive(box.system.name, where)
            elif isinstance(box.system, Composite):
                nodes[box.name] = self.graph(box.system, where, box.span)
            else:
                self.fail(box.span, f"box '{box.name}' is a {box.system.name}, which NIR cannot express: export "
                                    f"takes the std/nir.nspec boxes ({EXPORTABLE}) and composites of them")
        edges: list[tuple[str, str]] = []
        into = {name: [] for name in delays}
        out_of = {name: [] for name in delays}
        for w in comp.wires:
            if w.index is not None:
                self.fail(w.span, "a wire into a row of a port has no NIR edge")
            src = self.end(w.src_box, w.src_port, kinds, comp, w.span)
            dst = self.end(w.dst_box, w.dst_port, kinds, comp, w.span)
            if w.dst_box in delays:
                into[w.dst_box].append((w, src))
            elif w.src_box in delays:
                out_of[w.src_box].append(dst)
            else:
                edges.append((src, dst))
        late = []
        for name, box in delays.items():
            sources = into[name]
            if len(sources) != 1 or kinds.get(sources[0][0].src_box) not in NEURON_BOXES:
                self.fail(box.span, f"StepDelay '{name}' must read the output of one neuron box "
                                    f"({', '.join(sorted(NEURON_BOXES))}): NIR delays a loop at a neuron's output")
            late += [(sources[0][1], dst, box.span) for dst in out_of[name]]
        edges += [(a, b) for a, b, _ in late]
        names = sorted({e.partition(".")[0] for edge in edges for e in edge})
        comp_of = sccs(names, [(a.partition(".")[0], b.partition(".")[0]) for a, b in edges])
        for a, b, where in late:
            if comp_of[a.partition(".")[0]] != comp_of[b.partition(".")[0]]:
                self.fail(where, f"the StepDelay on {a} -> {b} is outside a loop: NIR has a one-step delay only "
                                 "where an edge leaves a neuron and closes a loop")
        return nir.NIRGraph(nodes=nodes, edges=edges)

    def end(self, box: str | None, port: str, kinds: dict, comp, span) -> str:
        """The NIR edge end of a wire end: a port node or a box (a nested graph by its name)."""
        if box is None:
            return port
        if kinds[box] is None:
            system = next(b.system for b in comp.boxes if b.name == box)
            for side in (system.inputs, system.outputs):
                if port in {p.name for p in side} and len(side) != 1:
                    self.fail(span, f"the nested composite '{box}' has {len(side)} ports on this side: NIR's edges "
                                    "name a nested graph, not its ports, so it may have one input and one output")
            return box
        if port not in ("x", "y"):
            self.fail(span, f"the port '{box}.{port}' is a neuron's state readout: NIR nodes have one input "
                            "and one output")
        return box

    def primitive(self, name: str, where: str):
        nir = require_nir()
        get = lambda key: np.asarray(self.params[where + key], np.float32)  # noqa: E731
        if name == "LIF":
            return nir.LIF(tau=get("P/tau"), r=get("P/r"), v_leak=get("P/v_leak"),
                           v_threshold=get("P/v_threshold"), v_reset=get("P/v_reset"))
        if name == "IF":
            return nir.IF(r=get("P/r"), v_threshold=get("P/v_threshold"), v_reset=get("P/v_reset"))
        if name == "CubaLIF":
            return nir.CubaLIF(tau_syn=get("syn/tau_syn"), tau_mem=get("mem/P/tau"), r=get("mem/P/r"),
                               v_leak=get("mem/P/v_leak"), v_threshold=get("mem/P/v_threshold"),
                               v_reset=get("mem/P/v_reset"), w_in=get("syn/w_in"))
        if name == "LI":
            return nir.LI(tau=get("tau"), r=get("r"), v_leak=get("v_leak"))
        if name == "Integrator":
            return nir.I(r=get("r"))
        if name == "Threshold":
            return nir.Threshold(threshold=get("threshold"))
        if name == "Scale":
            return nir.Scale(scale=get("scale"))
        if name == "Affine":
            return nir.Affine(weight=get("weight"), bias=get("bias"))
        return nir.Linear(weight=get("weight"))
