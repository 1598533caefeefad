"""Systems before flattening: primitive boxes and wiring diagrams (COMPOSITION.md).

A ``Primitive`` is an open dynamical system whose one-step behaviour is an IR graph over its
own local names: ARG nodes read its params, states and input ports; results give each state's
``next`` value, each output port (``output``) and recordable values (``value``).  A ``Composite``
is a wiring diagram: boxes filled with systems (primitive or composite) and wires between ports.
``compiler/passes/flatten_systems.py`` substitutes composites down to one primitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from nspec.dsl.diagnostics import Span, UNKNOWN_SPAN

from .ir import DType, Graph, Monitor, Op, Var
from .units import DIMENSIONLESS, Dim

MERGES = ("sum", "max", "or", "exclusive")


@dataclass(frozen=True, slots=True)
class PortSig:
    name: str
    dtype: DType
    shape: tuple[int, ...]
    dim: Dim = DIMENSIONLESS
    merge: str = "sum"
    stack: bool = False
    span: Span = UNKNOWN_SPAN
    batch_axis: int | None = None   # outputs: the batch axis's place in a one-step result (default 0)


def _port(ports: tuple[PortSig, ...], name: str) -> PortSig | None:
    return next((p for p in ports if p.name == name), None)


@dataclass(frozen=True)
class Primitive:
    name: str
    inputs: tuple[PortSig, ...]
    outputs: tuple[PortSig, ...]
    params: tuple[Var, ...]
    states: tuple[Var, ...]
    step: Graph
    init: Graph
    monitors: tuple[Monitor, ...] = ()
    span: Span = UNKNOWN_SPAN

    def port(self, direction: str, name: str) -> PortSig | None:
        return _port(self.inputs if direction == "in" else self.outputs, name)

    @cached_property
    def feedthrough(self) -> dict[str, frozenset[str]]:
        """F: output port -> the input ports its readout reads (exact reachability in the graph)."""
        reads: list[frozenset[str]] = []
        for n in self.step.nodes:
            if n.op is Op.ARG:
                reads.append(frozenset([n.attr("name")]) if n.attr("role") == "input" else frozenset())
            else:
                acc = frozenset()
                for i in n.inputs:
                    acc |= reads[i]
                reads.append(acc)
        return {r.name: reads[r.node] for r in self.step.results if r.kind == "output"}


@dataclass(frozen=True, slots=True)
class WireIR:
    src_box: str | None   # None: the composite's own input port
    src_port: str
    dst_box: str | None   # None: the composite's own output port
    dst_port: str
    index: int | None = None  # a row of the target port (`ws.write[1]`)
    span: Span = UNKNOWN_SPAN

    def source(self) -> str:
        return self.src_port if self.src_box is None else f"{self.src_box}.{self.src_port}"

    def target(self) -> str:
        tail = f"[{self.index}]" if self.index is not None else ""
        return (self.dst_port if self.dst_box is None else f"{self.dst_box}.{self.dst_port}") + tail


@dataclass(frozen=True, slots=True)
class BoxIR:
    name: str
    system: "Primitive | Composite"
    param_prefix: str     # where its parameters live ("layers" for a shared repeat, "layers/2" otherwise)
    state_prefix: str
    span: Span = UNKNOWN_SPAN


@dataclass(frozen=True)
class Composite:
    name: str
    inputs: tuple[PortSig, ...]
    outputs: tuple[PortSig, ...]
    boxes: tuple[BoxIR, ...]
    wires: tuple[WireIR, ...]
    monitors: tuple[Monitor, ...] = ()
    span: Span = UNKNOWN_SPAN

    def port(self, direction: str, name: str) -> PortSig | None:
        return _port(self.inputs if direction == "in" else self.outputs, name)

    def box(self, name: str) -> BoxIR | None:
        for b in self.boxes:
            if b.name == name:
                return b
        return None
