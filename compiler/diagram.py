"""The wiring diagram of a run target as Graphviz DOT text (``nspec compile SPEC --emit diagram``).

The diagram follows the spec's own structure, with the names the spec gives:

* a composite or a network is a cluster (``label="net: Spiking"``) holding its boxes; its ports are
  small nodes on its edge (``in`` ports as arrows pointing in, ``out`` ports pointing out);
* a box of a primitive system, neuron or workspace is one record node whose fields are its ports
  (``<in_x> x`` on the left, ``<out_y> y`` on the right), so a wire ends at the named port;
* a box of a composite or a network is a nested cluster, to any depth;
* a network's populations (``P: LIF[4000]``) are nodes inside its cluster and its projections
  edges between them; an output defined by an expression (``rate = rate(P, 10 ms)``) is an edge
  from every population it reads;
* every edge is labelled with the wire as the spec writes it (``inc.y -> hold.x``).

``if`` and ``for`` are resolved as compiling resolves them (with the same hyperparameters), so the
diagram shows the boxes that are built.  Node identifiers are box paths (``first/inc``) quoted, so
any name of the spec is a valid identifier.
"""

from __future__ import annotations

from pathlib import Path

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import SourceMap

from .elaborate import Elaborator, apply_simulate, run_target
from .expressions import Abort
from .networks import static_builder
from .overrides import Given, keywords

CLUSTER_KINDS = ("composite", "network")
_INDENT = "  "


def quote(text: str) -> str:
    """A DOT string literal.  DOT escapes only the quote; a backslash reaches the label as written
    (``\\ `` is a record's literal space), and no spec name or wire holds one of its own."""
    return '"' + text.replace('"', '\\"') + '"'


def _record_field(text: str) -> str:
    """Text inside a record label: braces, bars, angle brackets and spaces escaped."""
    return "".join("\\" + c if c in "{}|<>\" " else c for c in text)


class _Drawer:
    """Walks the run target's declarations and collects DOT lines."""

    def __init__(self, elab: Elaborator, sources: SourceMap):
        self.elab = elab
        self.sources = sources
        self.edges: list[str] = []  # after every cluster, so an edge never pulls a node into a cluster

    def text(self, node: A.Node) -> str:
        """The spec's own text of a node (its first line)."""
        span = node.span
        line = self.sources.line(span) or ""
        end = span.end_col - 1 if span.end_line == span.line and span.end_col > span.col else len(line)
        return line[span.col - 1:end].strip()

    def edge(self, src: str, dst: str, label: str) -> None:
        self.edges.append(f"{src} -> {dst} [label={quote(label)}];")

    # ------------------------------------------------------------ declarations
    def system(self, decl: A.SystemDecl, scope, args: dict, path: str, title: str, depth: int) -> list[str]:
        """The lines that draw ``decl`` as the box ``path``: a cluster, or one record node."""
        decl = self.elab.resolve_structure(decl, scope, args)
        ports = [s for s in decl.body if isinstance(s, A.Port)]
        if decl.kind not in CLUSTER_KINDS:
            ins = "|".join(f"<in_{p.name}> {_record_field(p.name)}" for p in ports if p.direction == "in")
            outs = "|".join(f"<out_{p.name}> {_record_field(p.name)}" for p in ports if p.direction == "out")
            label = "{" + "|".join(f for f in (f"{{{ins}}}" if ins else "", _record_field(title),
                                                f"{{{outs}}}" if outs else "") if f) + "}"
            return [f"{quote(path)} [shape=record, label={quote(label)}];"]
        pad = _INDENT
        lines = [f"subgraph {quote('cluster_' + path)} {{", f"{pad}label={quote(title)};",
                 f"{pad}style=\"{'rounded' if decl.kind == 'composite' else 'rounded,filled'}\"; "
                 f"fillcolor={quote('#f2f6fb')};"]
        for p in ports:
            shape = "rarrow" if p.direction == "in" else "larrow"
            lines.append(f"{pad}{quote(self.port(path, p.name))} [shape={shape}, label={quote(p.name)}];")
        b = static_builder(self.elab, scope, args)
        boxes: dict[str, A.SystemDecl] = {}
        populations: set[str] = set()
        for s in decl.body:
            if isinstance(s, A.Box):
                sdecl, home = self.elab.lookup_system(scope, s.system, b, ("system", "composite", "workspace",
                                                                            "network", "neuron"))
                boxes[s.name] = sdecl
                sub = self.elab.bind_args(sdecl, home, s.system, b)
                extra = "".join(f" [{self.text(e)}]" for e in (s.count,) if e is not None)
                extra += f" repeat {self.text(s.repeat)}" if s.repeat is not None else ""
                inner = self.system(sdecl, home, sub, f"{path}/{s.name}", f"{s.name}: {self.text(s.system)}{extra}",
                                    depth + 1)
                lines.extend(pad + line for line in inner)
            elif isinstance(s, A.Population):
                populations.add(s.name)
                size = b.static_int(s.size, "a population size")
                label = f"{s.name}: {self.text(s.neuron)}[{size}]"
                lines.append(f"{pad}{quote(f'{path}/{s.name}')} [shape=ellipse, label={quote(label)}];")
        for s in decl.body:
            if isinstance(s, A.Wire):
                for dst in s.targets:
                    self.edge(self.end(path, s.source, boxes, populations, "out"),
                              self.end(path, dst, boxes, populations, "in"), f"{self.text(s.source)} -> {self.text(dst)}")
            elif isinstance(s, A.Projection):
                self.edge(quote(f"{path}/{s.pre.name}"), quote(f"{path}/{s.post.name}"),
                          f"{s.name}: {self.text(s.pre)} -> {self.text(s.post)}")
            elif isinstance(s, A.Expose):
                lines.append(f"{pad}{quote(self.port(path, s.alias))} [shape=larrow, label={quote(s.alias)}];")
                self.edge(self.end(path, s.port, boxes, populations, "out"), quote(self.port(path, s.alias)),
                          self.text(s))
            elif isinstance(s, A.Assign) and decl.kind == "network":
                for name in sorted(_names(s.value) & populations):
                    self.edge(quote(f"{path}/{name}"), quote(self.port(path, s.target.name)), self.text(s))
        return lines + ["}"]

    @staticmethod
    def port(path: str, name: str) -> str:
        return f"{path}.{name}"

    def end(self, path: str, ref: A.PortRef, boxes: dict, populations: set, side: str) -> str:
        """The DOT endpoint of one end of a wire: a port node, a record field, or a population."""
        if ref.box is None:
            return quote(self.port(path, ref.port))
        if ref.box in populations:
            return quote(f"{path}/{ref.box}")
        box = f"{path}/{ref.box}"
        if boxes[ref.box].kind in CLUSTER_KINDS:
            return quote(self.port(box, ref.port))
        return f"{quote(box)}:{quote(f'{side}_{ref.port}')}"


def _names(e: A.Node) -> set[str]:
    """Every bare name an expression reads (``P`` of ``rate(P, 10 ms)`` and of ``P.v``)."""
    found = {e.id} if isinstance(e, A.Name) else set()
    for child in A.children(e):
        found |= _names(child)
    return found


def diagram(path: str | Path, hyper: dict | None = None, target: str | None = None,
            given: Given | None = None, sources: SourceMap | None = None) -> str:
    """The DOT text of the run target's wiring (``simulate`` item, or ``target`` by name).

    Call it on a spec that compiles (``compile_file`` first): a mistake it meets is reported as a
    diagnostic all the same (``NspecError``), never as a half-drawn graph."""
    sources = sources if sources is not None else SourceMap()
    elab = Elaborator(sources, hyper or {}, given or keywords("diagram", str(path), hyper or {}))
    scope = elab.loader.load(str(path))
    elab.diags.check()
    elab.bind_overrides(scope)
    elab.diags.check()
    lines: list[str] = []
    drawer = _Drawer(elab, sources)
    try:
        decl, sim = run_target(scope, target, elab.diags)
        elab.diags.check()
        apply_simulate(elab, scope, sim)  # dt may pick an `if` branch
        args = elab.bind_args(decl, scope, None, None)
        lines = drawer.system(decl, scope, args, decl.name, f"{decl.name} ({decl.kind})", 0)
    except Abort:
        pass
    elab.diags.check()
    head = [f"digraph {quote(decl.name)} {{", f"{_INDENT}rankdir=LR;", f"{_INDENT}compound=true;",
            f"{_INDENT}node [fontname=Helvetica, fontsize=10];",
            f"{_INDENT}edge [fontname=Helvetica, fontsize=8];"]
    return "\n".join(head + [_INDENT + line for line in lines + drawer.edges] + ["}"]) + "\n"


__all__ = ["diagram", "quote"]
