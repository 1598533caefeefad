"""The composition laws of COMPOSITION.md (laws 1-8) as Hypothesis properties over random diagrams.

Diagrams come from ``composition_gen``: random well-typed, guarded wiring diagrams written as nspec
source, compiled with ``nspec.load`` and run on the reference backend.  Laws that relate two
diagrams compare their runs and, where the law is about structure, the canonical form of their
flattened step graphs (``canonical_form``: ``ir.print_graph`` of the graph rebuilt in a canonical
order, arguments renamed, commutative operands sorted and associative chains flattened, so only
what the law says is irrelevant is forgotten).  ``Diagram.simulate`` is the independent oracle:
it runs the diagram from the generator's own description in NumPy, without nspec's flatten.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nspec
from composition_gen import Box, Comp, Diagram, Port, Prim, Ref, Wire, diagrams, prims
from nspec.compiler.driver import check_files
from nspec.compiler.elaborate import Elaborator
from nspec.compiler.ir import Graph, Node, Op, Result, print_graph
from nspec.compiler.passes.flatten_systems import flatten
from nspec.dsl import NspecError
from nspec.dsl.diagnostics import SourceMap

LAW = settings(deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
RTOL, ATOL = 1e-5, 1e-6
STEPS = st.integers(1, 10)
SEEDS = st.integers(0, 2**16)
_FILES = itertools.count()


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("laws")


def write(workdir: Path, text: str) -> Path:
    """A fresh spec file (a new name each time, so no cache can confuse two diagrams)."""
    path = workdir / f"d{next(_FILES)}.nspec"
    path.write_text(text)
    return path


def inputs_for(ports, steps: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p.name: rng.uniform(-1.5, 1.5, (steps, p.size)).astype(np.float32) for p in ports}


def run(path: Path, target: str, inputs: dict, steps: int, **hyper) -> dict[str, np.ndarray]:
    """Outputs as ``[steps, size]`` (``Model.run`` drops the time axis of a one-step run without inputs)."""
    out = nspec.load(path, target=target, **hyper).run(inputs=inputs, steps=steps)
    return {k: np.reshape(v, (steps, -1)) for k, v in out.items()}


def flattened(path: Path, target: str):
    """The flattened primitive system of ``target`` (``flatten_systems.flatten``)."""
    elab = Elaborator(SourceMap(), {})
    scope = elab.loader.load(str(path))
    decl, home = scope.find(target)
    system = elab.instantiate(decl, home, elab.bind_args(decl, home, None, None), decl.span)
    prim = flatten(system, elab.diags)
    elab.diags.check()
    return prim


def assert_close(got: dict, want: dict, names, what: str) -> None:
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=f"{what}: output {name}")


def assert_same(got: dict, want: dict, names, what: str) -> None:
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: output {name}")


COMMUTATIVE = {Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.AND, Op.OR, Op.EQ, Op.NE}
ASSOCIATIVE = {Op.ADD, Op.MUL, Op.MAXIMUM, Op.MINIMUM, Op.AND, Op.OR}


def _attr_key(attrs) -> tuple:
    """Attributes as exact text: arrays by dtype, shape and bytes; LOOP bodies by their printed form."""
    out = []
    for k, v in attrs:
        if isinstance(v, np.ndarray):
            v = (str(v.dtype), v.shape, v.tobytes().hex())
        elif isinstance(v, Graph):
            v = print_graph(v)
        out.append((k, repr(v)))
    return tuple(out)


def canonical_form(graph: Graph, rename=lambda name: name) -> str:
    """``print_graph`` of ``graph`` in a canonical form.

    Argument and result paths go through ``rename``; spans are dropped; operands of commutative
    ops are sorted and chains of one associative op (same dtype and shape) become one n-ary node;
    nodes are emitted depth-first from the results sorted by name, so declaration order and the
    order of equal merges do not show.  Dead nodes disappear.
    """
    table: dict[str, tuple] = {}
    digest: list[str] = []
    operands: list[list[str]] = []
    for n in graph.nodes:
        attrs = tuple((k, rename(v) if n.op is Op.ARG and k == "name" else v) for k, v in n.attrs.items())
        ops: list[str] = []
        for j in n.inputs:
            c = graph.nodes[j]
            if n.op in ASSOCIATIVE and c.op is n.op and c.dtype == n.dtype and c.shape == n.shape:
                ops.extend(operands[j])
            else:
                ops.append(digest[j])
        if n.op in COMMUTATIVE:
            ops.sort()
        key = repr((n.op.value, n.dtype.value, n.shape, _attr_key(attrs), tuple(ops)))
        h = hashlib.sha1(key.encode()).hexdigest()
        table[h] = (n, attrs, tuple(ops))
        digest.append(h)
        operands.append(ops)
    nodes: list[Node] = []
    index: dict[str, int] = {}

    def emit(h: str) -> int:
        if h not in index:
            n, attrs, ops = table[h]
            ins = tuple(emit(o) for o in ops)
            nodes.append(Node(n.op, ins, n.dtype, n.shape, attrs))
            index[h] = len(nodes) - 1
        return index[h]

    wanted = sorted((rename(r.name), r.kind, digest[r.node]) for r in graph.results)
    results = tuple(Result(name, kind, emit(h)) for name, kind, h in wanted)
    return print_graph(Graph(tuple(nodes), results))


def merged_path(name: str) -> str:
    """``g0/g1/b2/s`` -> ``g0_g1_b2/s``: the path a hand-flattened box ``g0_g1_b2`` gives its state."""
    head, sep, leaf = name.rpartition("/")
    return head.replace("/", "_") + sep + leaf


def identity_comp(name: str, inner: str, ins, outs) -> Comp:
    """The identity diagram around ``inner``: same ports (and monoids), wired straight through."""
    wires = [Wire(Ref(None, p.name), Ref("core", p.name)) for p in ins]
    wires += [Wire(Ref("core", p.name), Ref(None, p.name)) for p in outs]
    return Comp(name, tuple(ins), tuple(outs), (Box("core", inner),), tuple(wires))


def with_top(d: Diagram, top: Comp) -> Diagram:
    """``d``'s systems plus ``top`` (a new outermost composite) as the diagram's top."""
    return Diagram(d.systems + (top,), top.name)


def add_systems(d: Diagram, *new) -> Diagram:
    """``d`` with ``new`` systems declared just before its top (which the generator declares last)."""
    return Diagram(d.systems[:-1] + tuple(new) + d.systems[-1:], d.top)


def refill(comp: Comp, box: Box, system: str) -> Comp:
    """``comp`` with ``box`` filled with another system."""
    return replace(comp, boxes=tuple(replace(b, system=system) if b == box else b for b in comp.boxes))


DELAY = "Delay"


def delay_prim(size: int, name: str = DELAY) -> Prim:
    return Prim(name, size, (Port("i0", size),), (Port("o0", size),), ((),), delay=True)


# ---------------------------------------------------------------- law 1: identity
@settings(LAW, max_examples=15)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_identity_wrapping_changes_nothing(workdir, d, steps, seed, data):
    top = d.top_comp
    outer = with_top(d, identity_comp("IdTop", d.top, top.inputs, top.outputs))
    box = data.draw(st.sampled_from(top.boxes), "box")
    ins, outs = d.interface(box.system)
    wrapped = add_systems(d, identity_comp(f"Id_{box.system}", box.system, ins, outs))
    wrapped = wrapped.replace_system(refill(top, box, f"Id_{box.system}"))
    x = inputs_for(top.inputs, steps, seed)
    names = [p.name for p in top.outputs]
    base_path = write(workdir, d.spec_text())
    base = run(base_path, d.top, x, steps)
    for other, target in ((outer, "IdTop"), (wrapped, d.top)):
        path = write(workdir, other.spec_text())
        assert_same(run(path, target, x, steps), base, names, f"identity wrapper {path}")
        drop_core = lambda n: "/".join(s for s in n.split("/") if s != "core")
        assert canonical_form(flattened(path, target).step, drop_core) == \
            canonical_form(flattened(base_path, d.top).step), f"identity wrapper changes the flattened form: {path}"


# ---------------------------------------------------------------- law 2: associativity of nesting
@settings(LAW, max_examples=40)
@given(diagrams(), STEPS, SEEDS)
def test_nesting_is_associative(workdir, d, steps, seed):
    nested_path = write(workdir, d.spec_text())
    flat_path = write(workdir, d.flat_spec_text())
    x = inputs_for(d.top_comp.inputs, steps, seed)
    names = [p.name for p in d.top_comp.outputs]
    assert_close(run(nested_path, d.top, x, steps), run(flat_path, d.top, x, steps), names,
                 f"nested {nested_path} vs hand-flattened {flat_path}")
    nested = canonical_form(flattened(nested_path, d.top).step, merged_path)
    flat = canonical_form(flattened(flat_path, d.top).step, merged_path)
    assert nested == flat, f"flatten(nested) differs from the flat diagram: {nested_path} vs {flat_path}"


# ---------------------------------------------------------------- law 3: order, symmetry, interchange
@settings(LAW, max_examples=15)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_declaration_order_changes_nothing(workdir, d, steps, seed, data):
    shuffled = d
    for comp in (s for s in d.systems if isinstance(s, Comp)):
        boxes = data.draw(st.permutations(comp.boxes), f"boxes of {comp.name}")
        wires = data.draw(st.permutations(comp.wires), f"wires of {comp.name}")
        shuffled = shuffled.replace_system(replace(comp, boxes=tuple(boxes), wires=tuple(wires),
                                                   copy_syntax=data.draw(st.booleans())))
    shuffled = replace(shuffled, systems=tuple(data.draw(st.permutations(shuffled.systems), "declarations")))
    a, b = write(workdir, d.spec_text()), write(workdir, shuffled.spec_text())
    x = inputs_for(d.top_comp.inputs, steps, seed)
    assert_same(run(b, d.top, x, steps), run(a, d.top, x, steps), [p.name for p in d.top_comp.outputs],
                f"declaration order {a} vs {b}")
    assert canonical_form(flattened(a, d.top).step) == canonical_form(flattened(b, d.top).step), \
        f"declaration order changes the flattened form: {a} vs {b}"


def par_comp(name: str, parts: list[tuple[str, Diagram]]) -> Comp:
    """``par`` of the diagrams' tops, as boxes named by ``parts``; ports ``<box>_<port>``."""
    ins, outs, boxes, wires = [], [], [], []
    for box, d in parts:
        top = d.top_comp
        boxes.append(Box(box, d.top))
        for p in top.inputs:
            ins.append(replace(p, name=f"{box}_{p.name}", merge="sum"))
            wires.append(Wire(Ref(None, f"{box}_{p.name}"), Ref(box, p.name)))
        for p in top.outputs:
            outs.append(replace(p, name=f"{box}_{p.name}", merge="sum"))
            wires.append(Wire(Ref(box, p.name), Ref(None, f"{box}_{p.name}")))
    return Comp(name, tuple(ins), tuple(outs), tuple(boxes), tuple(wires))


def seq_comp(name: str, parts: list[tuple[str, Diagram]]) -> Comp:
    """``seq`` of one-input one-output diagrams: ``x0 -> first -> ... -> last -> y0``."""
    first, last = parts[0][1].top_comp, parts[-1][1].top_comp
    wires = [Wire(Ref(None, "x0"), Ref(parts[0][0], "x0"))]
    wires += [Wire(Ref(a, "y0"), Ref(b, "x0")) for (a, _), (b, _) in zip(parts, parts[1:])]
    wires.append(Wire(Ref(parts[-1][0], "y0"), Ref(None, "y0")))
    return Comp(name, (replace(first.inputs[0], merge="sum"),), (replace(last.outputs[0], merge="sum"),),
                tuple(Box(box, d.top) for box, d in parts), tuple(wires))


def spec_of(diagrams_: list[Diagram], *comps: Comp) -> str:
    return "".join(d.spec_text() + "\n" for d in diagrams_) + "\n\n".join(c.text() for c in comps) + "\n"


@settings(LAW, max_examples=8)
@given(diagrams("A", max_boxes=3), diagrams("B", max_boxes=3), STEPS, SEEDS)
def test_parallel_composition_is_symmetric(workdir, a, b, steps, seed):
    ab = par_comp("AB", [("a", a), ("b", b)])
    ba = par_comp("BA", [("b", b), ("a", a)])
    path = write(workdir, spec_of([a, b], ab, ba))
    x = inputs_for(ab.inputs, steps, seed)
    names = [p.name for p in ab.outputs]
    assert_same(run(path, "BA", x, steps), run(path, "AB", x, steps), names, f"par(A,B) vs par(B,A) in {path}")
    assert canonical_form(flattened(path, "AB").step) == canonical_form(flattened(path, "BA").step)


@settings(LAW, max_examples=8)
@given(st.tuples(*(st.sampled_from((2, 3)) for _ in range(6))).flatmap(lambda s: st.tuples(
    diagrams("F", (s[0],), (s[1],), max_boxes=2), diagrams("H", (s[1],), (s[2],), max_boxes=2),
    diagrams("G", (s[3],), (s[4],), max_boxes=2), diagrams("K", (s[4],), (s[5],), max_boxes=2))), STEPS, SEEDS)
def test_interchange_law(workdir, fhgk, steps, seed):
    f, h, g, k = fhgk
    lhs = [par_comp("ParFG", [("f", f), ("g", g)]), par_comp("ParHK", [("h", h), ("k", k)])]
    lhs.append(Comp("Lhs", lhs[0].inputs, lhs[1].outputs, (Box("p1", "ParFG"), Box("p2", "ParHK")), (
        Wire(Ref(None, "f_x0"), Ref("p1", "f_x0")), Wire(Ref(None, "g_x0"), Ref("p1", "g_x0")),
        Wire(Ref("p1", "f_y0"), Ref("p2", "h_x0")), Wire(Ref("p1", "g_y0"), Ref("p2", "k_x0")),
        Wire(Ref("p2", "h_y0"), Ref(None, "h_y0")), Wire(Ref("p2", "k_y0"), Ref(None, "k_y0")))))
    rhs = [seq_comp("SeqFH", [("f", f), ("h", h)]), seq_comp("SeqGK", [("g", g), ("k", k)])]
    rhs.append(Comp("Rhs", lhs[2].inputs, lhs[2].outputs, (Box("s1", "SeqFH"), Box("s2", "SeqGK")), (
        Wire(Ref(None, "f_x0"), Ref("s1", "x0")), Wire(Ref(None, "g_x0"), Ref("s2", "x0")),
        Wire(Ref("s1", "y0"), Ref(None, "h_y0")), Wire(Ref("s2", "y0"), Ref(None, "k_y0")))))
    path = write(workdir, spec_of([f, h, g, k], *lhs, *rhs))
    x = inputs_for(lhs[2].inputs, steps, seed)
    assert_close(run(path, "Rhs", x, steps), run(path, "Lhs", x, steps), ["h_y0", "k_y0"],
                 f"seq(par(f,g), par(h,k)) vs par(seq(f,h), seq(g,k)) in {path}")
    drop_first = lambda n: n.split("/", 1)[1] if "/" in n else n
    assert canonical_form(flattened(path, "Lhs").step, drop_first) == \
        canonical_form(flattened(path, "Rhs").step, drop_first), f"interchange changes the flattened form: {path}"


# ---------------------------------------------------------------- law 4: copy/delete, merge/unit, delay
@settings(LAW, max_examples=12)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_unused_outputs_and_unit_merges_change_nothing(workdir, d, steps, seed, data):
    top = d.top_comp
    x = inputs_for(top.inputs, steps, seed)
    names = [p.name for p in top.outputs]
    base = run(write(workdir, d.spec_text()), d.top, x, steps)

    # delete: an observer box reads existing ports and its outputs go nowhere; an extra output copies one
    obs = data.draw(prims("Observer"), "observer")
    obs = replace(obs, inputs=tuple(replace(p, merge="sum") for p in obs.inputs))  # any number of sources
    size_of = {Ref(None, p.name): p.size for p in top.inputs}
    size_of.update({Ref(b.name, p.name): p.size for b in top.boxes for p in d.interface(b.system)[1]})
    extra = tuple(Wire(s, Ref("obs", p.name)) for p in obs.inputs for s in data.draw(st.lists(
        st.sampled_from([s for s in size_of if size_of[s] == p.size] or [None]), max_size=2), "observed")
        if s is not None)
    copied = data.draw(st.sampled_from([s for s in size_of if s.box is not None] or list(size_of)), "copied")
    observed = replace(top, boxes=top.boxes + (Box("obs", "Observer"),),
                       outputs=top.outputs + (Port("extra", size_of[copied]),),
                       wires=top.wires + extra + (Wire(copied, Ref(None, "extra")),))
    observer = add_systems(d, obs).replace_system(observed)
    path = write(workdir, observer.spec_text())
    got = run(path, d.top, x, steps)
    assert_same(got, base, names, f"unused outputs {path}")
    assert_close(got, observer.simulate(x, steps), ["extra"], f"a copied output vs the NumPy oracle: {path}")

    # unit: a box's port also merges an unwired outer port of the same monoid
    box = data.draw(st.sampled_from(top.boxes), "box")
    ins, outs = d.interface(box.system)
    port = data.draw(st.sampled_from([p for p in ins if p.merge != "exclusive"] or [None]), "port")
    if port is not None:
        unit = Comp(f"Unit_{box.system}", ins + (replace(port, name="extra_in"),), outs, (Box("core", box.system),),
                    tuple(Wire(Ref(None, p.name), Ref("core", p.name)) for p in ins)
                    + (Wire(Ref(None, "extra_in"), Ref("core", port.name)),)
                    + tuple(Wire(Ref("core", p.name), Ref(None, p.name)) for p in outs))
        path = write(workdir, add_systems(d, unit).replace_system(refill(top, box, unit.name)).spec_text())
        assert_same(run(path, d.top, x, steps), base, names, f"merge with the unit of {port.merge}: {path}")


@pytest.mark.parametrize("merge, unit", [("sum", 0.0), ("max", -np.inf), ("exclusive", 0.0)])
def test_an_unwired_port_carries_the_unit(workdir, merge, unit):
    spec = (f"composite Pass {{\n  in a: f32[3] merge {merge}\n  out y: f32[3] merge {merge}\n  wire a -> y\n}}\n"
            "composite Outer {\n  in x: f32[3]\n  out y: f32[3]\n  out z: f32[3]\n  box p: Pass\n"
            "  wire p.y -> y\n  wire x -> z\n}\n")
    x = {"x": np.ones((2, 3), np.float32)}
    np.testing.assert_array_equal(run(write(workdir, spec), "Outer", x, 2)["y"], np.full((2, 3), unit, np.float32))


@settings(LAW, max_examples=10)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_merging_a_source_with_itself(workdir, d, steps, seed, data):
    top = d.top_comp
    port = data.draw(st.sampled_from(top.inputs), "input")
    merge = data.draw(st.sampled_from(("sum", "max")), "monoid")
    core = replace(top, inputs=tuple(replace(p, merge=merge) if p == port else p for p in top.inputs))
    twice = identity_comp("Twice", d.top, core.inputs, core.outputs)
    twice = replace(twice, wires=twice.wires + (Wire(Ref(None, port.name), Ref("core", port.name)),))
    path = write(workdir, d.replace_system(core).spec_text() + "\n" + twice.text() + "\n")
    x = inputs_for(top.inputs, steps, seed)
    scaled = dict(x)
    if merge == "sum":
        scaled[port.name] = 2 * x[port.name]
    names = [p.name for p in top.outputs]
    assert_same(run(path, "Twice", x, steps), run(path, d.top, scaled, steps), names,
                f"{merge} merge of {port.name} with itself: {path}")


@settings(LAW, max_examples=12)
@given(prims("M", loop=True), STEPS, SEEDS)
def test_feedback_through_state_is_a_unit_delay(workdir, m, steps, seed):
    delay = delay_prim(m.size)
    others = m.inputs[1:]
    loop = Comp("Loop", tuple(replace(p, merge="sum") for p in others), (Port("y", m.size),),
                (Box("m", "M"), Box("d", DELAY)),
                (Wire(Ref("m", "o0"), Ref("d", "i0")), Wire(Ref("m", "o0"), Ref(None, "y")),
                 Wire(Ref("d", "o0"), Ref("m", "i0")))
                + tuple(Wire(Ref(None, p.name), Ref("m", p.name)) for p in others))
    prev = {"i0": "prev"}
    lines = [replace(p, merge="sum").decl("in") for p in others] + [f"out y: f32[{m.size}]"] + m.decls()
    lines += [f"state prev: f32[{m.size}] = 0.0", f"y = {m.readout_expr(0, prev)}",
              f"next s = {m.update_expr(prev)}", f"next prev = {m.readout_expr(0, prev)}"]
    held = "system Held {\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
    diagram = Diagram((m, delay, loop), "Loop")
    path = write(workdir, diagram.spec_text() + "\n" + held)
    x = inputs_for(others, steps, seed)
    got = run(path, "Loop", x, steps)
    assert_close(got, run(path, "Held", x, steps), ["y"], f"loop through a delay vs a held previous value: {path}")
    assert_close(got, diagram.simulate(x, steps), ["y"], f"loop through a delay vs the NumPy oracle: {path}")
    alone = Diagram((delay, Comp("JustDelay", (Port("u", m.size),), (Port("y", m.size),), (Box("d", DELAY),),
                                 (Wire(Ref(None, "u"), Ref("d", "i0")), Wire(Ref("d", "o0"), Ref(None, "y"))))),
                    "JustDelay")
    u = inputs_for(alone.top_comp.inputs, steps, seed + 1)
    shifted = np.concatenate([np.zeros((1, m.size), np.float32), u["u"][:-1]])
    np.testing.assert_array_equal(run(write(workdir, alone.spec_text()), "JustDelay", u, steps)["y"], shifted)


# ---------------------------------------------------------------- law 5: functoriality and oracles
@settings(LAW, max_examples=10)
@given(st.tuples(*(st.sampled_from((2, 3)) for _ in range(3))).flatmap(lambda s: st.tuples(
    diagrams("A", (s[0],), (s[1],), max_boxes=4), diagrams("B", (s[1],), (s[2],), max_boxes=4))), STEPS, SEEDS)
def test_sequential_composition_is_functorial(workdir, ab, steps, seed):
    a, b = ab
    path = write(workdir, spec_of([a, b], seq_comp("Seq", [("a", a), ("b", b)])))
    x = inputs_for(a.top_comp.inputs, steps, seed)
    ya = run(path, a.top, x, steps)["y0"]
    yb = run(path, b.top, {"x0": ya}, steps)["y0"]
    np.testing.assert_allclose(run(path, "Seq", x, steps)["y0"], yb, rtol=RTOL, atol=ATOL,
                               err_msg=f"Beh(seq(A,B)) != Beh(B) o Beh(A): {path}")


@settings(LAW, max_examples=8)
@given(diagrams("A", max_boxes=3), diagrams("B", max_boxes=3), STEPS, SEEDS)
def test_parallel_composition_is_functorial(workdir, a, b, steps, seed):
    parts = [("a", a), ("b", b), ("c", a)]  # A fills two boxes: one system, two independent instances
    par = par_comp("Par", parts)
    path = write(workdir, spec_of([a, b], par))
    x = inputs_for(par.inputs, steps, seed)
    both = run(path, "Par", x, steps)
    for box, d in parts:
        alone = run(path, d.top, {p.name: x[f"{box}_{p.name}"] for p in d.top_comp.inputs}, steps)
        for p in d.top_comp.outputs:
            np.testing.assert_allclose(both[f"{box}_{p.name}"], alone[p.name], rtol=RTOL, atol=ATOL,
                                       err_msg=f"Beh(par(A,B)) != Beh(A) x Beh(B) at {box}.{p.name}: {path}")


@st.composite
def rewrapped(draw, d: Diagram) -> Diagram:
    """``d`` with one top box behind a composite whose ports merge with monoids of their own.

    Where the box's port has several sources, the composite's port merges them with its own monoid
    and hands one value on, so the inner port's monoid no longer matters: nested merges compose.
    """
    top = d.top_comp
    box = draw(st.sampled_from(top.boxes))
    ins, outs = d.interface(box.system)
    ports = []
    for p in ins:
        n = sum(1 for w in top.wires if w.dst == Ref(box.name, p.name))
        choices = ("sum", "exclusive") if n == 0 else ("sum", "max", "exclusive") if n == 1 else ("sum", "max")
        ports.append(replace(p, merge=draw(st.sampled_from(choices))))
    mix = identity_comp(f"Mix_{box.name}", box.system, tuple(ports), outs)
    return add_systems(d, mix).replace_system(refill(top, box, mix.name))


@settings(LAW, max_examples=60)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_reference_run_equals_numpy_oracle(workdir, d, steps, seed, data):
    d = data.draw(rewrapped(d), "a box behind ports of other monoids")
    path = write(workdir, d.spec_text())
    model = nspec.load(path, target=d.top)
    params, states = d.paths()
    assert {v.name for v in model.program.params} == params, f"parameter paths (sharing) of {path}"
    assert {v.name for v in model.program.states} == states, f"namespaced state paths of {path}"
    x = inputs_for(d.top_comp.inputs, steps, seed)
    got = {k: np.reshape(v, (steps, -1)) for k, v in model.run(inputs=x, steps=steps).items()}
    assert_close(got, d.simulate(x, steps), [p.name for p in d.top_comp.outputs], f"nspec vs the NumPy oracle: {path}")


@settings(LAW, max_examples=10)
@given(st.sampled_from((2, 3)), st.sampled_from((5.0, 10.0, 20.0)), st.sampled_from((4.0, 15.0)),
       st.sampled_from((0.0, 0.5, -1.0)), st.sampled_from((0.7, -1.3)), st.sampled_from(((-0.6, 0.9), (1.1, -0.2))),
       STEPS, SEEDS)
def test_euler_commutes_with_composition(workdir, n, tau1, tau2, k, a, bounds, steps, seed):
    readout = "x" if k == 0.0 else f"x + {k!r} * u"
    e1 = (f"system E1 {{\n  in u: f32[{n}]\n  out y: f32[{n}]\n  param W: f32[{n}, {n}] = linspace{bounds!r}\n"
          f"  state x: f32[{n}] = 0.2\n  dx/dt = (-x + tanh(u @ W)) / ({tau1!r} ms) method euler\n"
          f"  y = {readout}\n}}\n")
    e2 = (f"system E2 {{\n  in v: f32[{n}]\n  out z: f32[{n}]\n  state q: f32[{n}] = -0.1\n"
          f"  dq/dt = (-q + {a!r} * v) / ({tau2!r} ms) method euler\n  z = tanh(q)\n}}\n")
    comp = (f"composite EC {{\n  in u: f32[{n}]\n  out z: f32[{n}]\n  box e1: E1\n  box e2: E2\n"
            f"  wire u -> e1.u\n  wire e1.y -> e2.v\n  wire e2.z -> z\n}}\n")
    single = (f"system ES {{\n  in u: f32[{n}]\n  out z: f32[{n}]\n  param W: f32[{n}, {n}] = linspace{bounds!r}\n"
              f"  state x: f32[{n}] = 0.2\n  state q: f32[{n}] = -0.1\n"
              f"  dx/dt = (-x + tanh(u @ W)) / ({tau1!r} ms) method euler\n"
              f"  dq/dt = (-q + {a!r} * ({readout})) / ({tau2!r} ms) method euler\n  z = tanh(q)\n}}\n")
    path = write(workdir, e1 + e2 + comp + single)
    dt = 1e-3
    x = inputs_for([Port("u", n)], steps, seed)
    got = run(path, "EC", x, steps, dt=dt)["z"]
    np.testing.assert_allclose(got, run(path, "ES", x, steps, dt=dt)["z"], rtol=RTOL, atol=ATOL,
                               err_msg=f"Euler of the composite vs of the single system: {path}")
    w = np.linspace(*bounds, n * n).reshape(n, n)
    xs, q, want = np.full(n, 0.2), np.full(n, -0.1), []
    for t in range(steps):
        u = x["u"][t].astype(np.float64)
        y = xs + k * u
        want.append(np.tanh(q))
        xs, q = xs + dt * (-xs + np.tanh(u @ w)) / (tau1 * 1e-3), q + dt * (-q + a * y) / (tau2 * 1e-3)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-4, atol=1e-5, err_msg=f"Euler vs NumPy: {path}")


# ---------------------------------------------------------------- law 6: type errors
def _rename_port(s, old: str, new: str):
    """``s`` with port ``old`` renamed (its weight and equations follow, so its body stays valid)."""
    ren = lambda n: new if n == old else n
    if isinstance(s, Prim):
        return replace(s, inputs=tuple(replace(p, name=ren(p.name)) for p in s.inputs),
                       outputs=tuple(replace(p, name=ren(p.name)) for p in s.outputs),
                       reads=tuple(tuple(ren(n) for n in r) for r in s.reads))
    fix = lambda r: Ref(None, ren(r.port)) if r.box is None else r
    return replace(s, inputs=tuple(replace(p, name=ren(p.name)) for p in s.inputs),
                   outputs=tuple(replace(p, name=ren(p.name)) for p in s.outputs),
                   wires=tuple(Wire(fix(w.src), fix(w.dst)) for w in s.wires))


def _retype(s, port: str, **change):
    return replace(s, inputs=tuple(replace(p, **change) if p.name == port else p for p in s.inputs),
                   outputs=tuple(replace(p, **change) if p.name == port else p for p in s.outputs))


def _port_owner(d: Diagram, comp: Comp, ref: Ref):
    """The system that declares the port a wire end refers to, and that port's name."""
    if ref.box is None:
        return comp, ref.port
    return d.system(comp.box(ref.box).system), ref.port


@st.composite
def mutations(draw, d: Diagram) -> list[tuple[str, Diagram, tuple[str, ...]]]:
    """Single-point mutations of ``d``: (kind, mutated diagram, fragments one of which an error must contain)."""
    comps = [s for s in d.systems if isinstance(s, Comp) and s.wires]
    out = []
    comp = draw(st.sampled_from(comps))
    wire = draw(st.sampled_from(comp.wires))
    end = draw(st.sampled_from((wire.src, wire.dst)))
    owner, port = _port_owner(d, comp, end)
    out.append(("dtype", d.replace_system(_retype(owner, port, dtype="f64")), ("type mismatch", "types differ")))
    size = next(p.size for p in owner.inputs + owner.outputs if p.name == port)
    out.append(("shape", d.replace_system(_retype(owner, port, size=size + 2)), ("shape", "types differ")))
    out.append(("merge", d.replace_system(_retype(owner, port, merge="average")), ("merge",)))
    readouts = [(c, w.src) for c in comps for w in c.wires
                if w.src.box is not None and isinstance(d.system(c.box(w.src.box).system), Prim)]
    repeated = [(c, src) for c, src in readouts if c.box(src.box).repeat and src.port != "o0"]
    if readouts:  # the readout no longer fits its port (a repeat's later outputs pass no checked wire inside)
        c, src = draw(st.sampled_from(repeated or readouts))
        owner, port = _port_owner(d, c, src)
        size = next(p.size for p in owner.outputs if p.name == port)
        out.append(("readout shape", d.replace_system(_retype(owner, port, size=size + 2)), ("shape",)))
    side = draw(st.sampled_from(("src", "dst")))
    bad = replace(wire, **{side: replace(getattr(wire, side), port="nope")})
    out.append(("unknown port", d.replace_system(replace(comp, wires=tuple(
        bad if w == wire else w for w in comp.wires))), ("nope",)))
    boxed = [(c, b, w) for c in comps for w in c.wires for b in (w.src.box, w.dst.box) if b is not None]
    if boxed:
        c, b, w = draw(st.sampled_from(boxed))
        box = c.box(b)
        port = w.src.port if w.src.box == b else w.dst.port
        alt = replace(_rename_port(d.system(box.system), port, "other"), name=f"{box.system}_alt")
        filled = replace(c, boxes=tuple(replace(x, system=alt.name) if x == box else x for x in c.boxes))
        out.append(("filler", add_systems(d, alt).replace_system(filled),
                    (f"'{port}'",)))
    exclusive = []
    for c in comps:
        for w in c.wires:
            owner, name = _port_owner(d, c, w.dst)
            ports = owner.outputs if w.dst.box is None else owner.inputs
            if next(p for p in ports if p.name == name).merge == "exclusive":
                exclusive.append((c, w))
    if exclusive:
        c, w = draw(st.sampled_from(exclusive))
        out.append(("exclusive", d.replace_system(replace(c, wires=c.wires + (w,))), ("exclusive",)))
    top = d.top_comp
    core = replace(top, inputs=(replace(top.inputs[0], merge="exclusive"),) + top.inputs[1:])
    twice = identity_comp("Twice", d.top, core.inputs, core.outputs)
    twice = replace(twice, wires=twice.wires + (twice.wires[0],))
    out.append(("exclusive wrapper", with_top(d.replace_system(core), twice), ("exclusive",)))
    return out


def _located(diag, path: Path) -> bool:
    lines = path.read_text().splitlines()
    span = diag.span
    return (Path(span.path).resolve() == path.resolve() and 1 <= span.line <= len(lines)
            and 1 <= span.col <= len(lines[span.line - 1]) + 1)


@settings(LAW, max_examples=15)
@given(diagrams(), st.data())
def test_single_point_type_errors_are_rejected(workdir, d, data):
    base = write(workdir, d.spec_text())
    diags, _ = check_files([base])
    assert not [x for x in diags if x.severity == "error"], f"the unmutated diagram {base} does not check"
    problems = []
    for kind, mutated, fragments in data.draw(mutations(d), "mutations"):
        problems += _rejection_problems(kind, mutated, fragments, write(workdir, mutated.spec_text()))
    assert not problems, "\n".join(problems)


def _rejection_problems(kind: str, mutated: Diagram, fragments: tuple[str, ...], path: Path) -> list[str]:
    """What is wrong with how the checker and ``nspec.load`` treat a mutated (ill-typed) diagram."""
    try:
        diags, sources = check_files([path])
    except Exception as exc:  # the law: bad input is a diagnostic, never a crash
        return [f"{kind} mutation crashed the checker on {path}: {exc!r}"]
    errors = [x for x in diags if x.severity == "error"]
    if not errors:
        return [f"{kind} mutation accepted: {path}"]
    problems = []
    if not all(_located(x, path) for x in errors):
        problems.append(f"{kind}: an error without a valid location in {path}: "
                        + "; ".join(x.render(sources) for x in errors))
    if not any(f in x.message for x in errors for f in fragments):
        problems.append(f"{kind}: no error mentions {' or '.join(map(repr, fragments))} in {path}: "
                        + "; ".join(x.message for x in errors))
    try:
        nspec.load(path, target=mutated.top)
        problems.append(f"{kind}: nspec.load accepted {path}")
    except NspecError:
        pass
    except Exception as exc:
        problems.append(f"{kind}: nspec.load crashed on {path}: {exc!r}")
    return problems


# ---------------------------------------------------------------- law 7: guardedness
MEALY = Prim("Echo", 2, (Port("i0", 2),), (Port("o0", 2),), (("i0",),), 0.5, (1.0,), ((0.6, -0.9),), 0.1)


@st.composite
def closing_wires(draw, d: Diagram) -> tuple[Diagram, Wire]:
    """``d`` and a wire that closes an instantaneous loop in its top (adding Mealy boxes if needed)."""
    top = d.top_comp
    sizes = {Ref(None, p.name): p.size for p in top.inputs}
    for b in top.boxes:
        ins, outs = d.interface(b.system)
        sizes.update({Ref(b.name, p.name): p.size for p in ins + outs})
    outs = [Ref(b.name, p.name) for b in top.boxes for p in d.interface(b.system)[1]]
    ins = [Ref(b.name, p.name) for b in top.boxes for p in d.interface(b.system)[0]]
    found = [Wire(s, t) for s in outs for t in ins if sizes[s] == sizes[t]
             and d.replace_system(replace(top, wires=top.wires + (Wire(s, t),))).instantaneous_cycle() is not None]
    how = draw(st.sampled_from(("self", "pair") + (("random",) if found else ())))
    if how == "random":
        return d, draw(st.sampled_from(found))
    echo = (Box("e1", "Echo"),) if how == "self" else (Box("e1", "Echo"), Box("e2", "Echo"))
    wires = () if how == "self" else (Wire(Ref("e1", "o0"), Ref("e2", "i0")),)
    d = add_systems(d, MEALY).replace_system(
        replace(top, boxes=top.boxes + echo, wires=top.wires + wires))
    return d, Wire(Ref(echo[-1].name, "o0"), Ref("e1", "i0"))


@settings(LAW, max_examples=25)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_instantaneous_cycles_are_rejected_and_delayed_loops_run(workdir, d, steps, seed, data):
    d, closing = data.draw(closing_wires(d), "closing wire")
    top = d.top_comp
    cyclic = d.replace_system(replace(top, wires=top.wires + (closing,)))
    path = write(workdir, cyclic.spec_text())
    diags, _ = check_files([path])
    reports = [x for x in diags if "instantaneous cycle" in x.message]
    assert reports, f"instantaneous cycle not reported in {path}: {[x.message for x in diags]}"
    assert all(_located(x, path) for x in reports)
    edges = {(a, b) for a, bs in cyclic.dependency_edges().items() for b in bs}
    for report in reports:
        ports = report.message.split(": ", 1)[1].split(" -> ")
        assert ports[0] == ports[-1] and len(ports) >= 3, f"not a cycle: {report.message}"
        assert all((a, b) in edges for a, b in zip(ports, ports[1:])), f"not a path of {path}: {report.message}"
        assert (str(closing.src), str(closing.dst)) in set(zip(ports, ports[1:])), report.message
    with pytest.raises(NspecError):
        nspec.load(path, target=d.top)

    size = next(p.size for p in d.interface(top.box(closing.src.box).system)[1] if p.name == closing.src.port)
    guarded = replace(top, boxes=top.boxes + (Box("dl", "LoopDelay"),),
                      outputs=top.outputs + (Port("loop", size),),
                      wires=top.wires + (Wire(closing.src, Ref("dl", "i0")), Wire(Ref("dl", "o0"), closing.dst),
                                         Wire(closing.src, Ref(None, "loop"))))
    delayed = add_systems(d, delay_prim(size, "LoopDelay")).replace_system(guarded)
    path = write(workdir, delayed.spec_text())
    diags, _ = check_files([path])
    assert not [x for x in diags if x.severity == "error"], f"a loop through state is rejected: {path}"
    x = inputs_for(top.inputs, steps, seed)
    assert_close(run(path, d.top, x, steps), delayed.simulate(x, steps), [p.name for p in guarded.outputs],
                 f"loop through a delay vs the NumPy oracle: {path}")


# ---------------------------------------------------------------- law 8: feedthrough soundness
@settings(LAW, max_examples=25)
@given(diagrams(), STEPS, SEEDS, st.data())
def test_feedthrough_is_exact_and_sound(workdir, d, steps, seed, data):
    path = write(workdir, d.spec_text())
    feed = flattened(path, d.top).feedthrough
    assert feed == d.feedthrough(), f"F of the flattened system differs from port-level reachability: {path}"
    model = nspec.load(path, target=d.top)
    top = d.top_comp
    x = inputs_for(top.inputs, steps, seed)
    base = model.run(inputs=x, steps=steps)
    t0 = data.draw(st.integers(0, steps - 1), "perturbed step")
    rng = np.random.default_rng(seed + 7)
    for port in top.inputs:
        bumped = {k: v.copy() for k, v in x.items()}
        bumped[port.name][t0] += rng.uniform(0.5, 1.5, port.size).astype(np.float32)
        got = model.run(inputs=bumped, steps=steps)
        for out in top.outputs:
            upto = t0 + 1 if port.name not in feed[out.name] else t0
            np.testing.assert_array_equal(got[out.name][:upto], base[out.name][:upto],
                                          err_msg=f"{out.name} moved when {port.name} was perturbed at step {t0} "
                                                  f"(F = {sorted(feed[out.name])}): {path}")
