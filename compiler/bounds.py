"""Bounds and integer division: every op that reads or writes at a computed position, or divides
integers, and the moment its operand is proven safe.

A *site* is an operand that must hold valid values: a GATHER's or a SCATTER_ADD's indices (in
``[-size, size)`` of the indexed axis), PROPAGATE's connectivity (``indptr`` a non-decreasing row
table from 0 into ``indices``, ``indices`` in ``[0, n_post)``), and an integer divisor (DIV or MOD
of integers, or a DIV of an integer cast to float: ``/`` on integers) that must not be 0.  SLICE,
CONCAT, ITEM and the delay FIFO (SLICE and CONCAT of a state) have static bounds that the type
rules already check; ARGMAX yields positions in range by construction.

Each site is proven at one of four moments (``Site.when``), from what its operand depends on:

* ``compile``: only constants.  Its values are computed now (the oracle's rules); a bad one is a
  located error at the site's line, from ``nspec check`` too (``static_errors``).
* ``start``: parameters (and constants), or an input port read as it is.  Checked when a run
  starts, on the parameters it runs with (declared, initial or loaded from a weights file) and on
  its inputs (``start_errors``).  A parameter whose initial value is a constant is also checked at
  compile time against that value.
* ``never``: anything else whose values the interval analysis (``ranges``) proves valid, such as
  ``x[argmax(y)]`` or ``x[i % 3]``.
* ``run``: the rest.  The required check-bounds pass (``passes/check_bounds.py``) gives the program
  a status state and one ``CHECK`` node per site, which keeps the first failure (site, step, value);
  the runtime turns a failed status into a located error (``status_error``), the same on every backend.

Whatever the moment, every backend's rules clamp indices into the buffer and divide by 1 where an
integer divisor is 0 (``interpret.in_range``, ``interpret.nonzero_divisor``), so no kernel touches
memory outside a buffer or traps before the error is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from nspec.dsl.diagnostics import Diagnostic, Span, error

from .interpret import CHECK_FAILS, Context, EvaluationError, Plan
from .ir import DType, Graph, Node, Op, Program
from .ops import STATUS_SHAPE, LoopAttrs

STATUS = "nspec/status"  # the state a program with run-time checks carries: (site, step, value) per sample
Range = tuple[int, int]  # inclusive bounds of an integer value; lo > hi: the value is empty


@dataclass(frozen=True, slots=True)
class Site:
    """One operand that must hold valid values (see the module docstring)."""

    kind: str                # "index" | "divisor" | "indptr" | "indices"
    loops: tuple[int, ...]   # the LOOP nodes from the step graph down to the graph holding it
    node: int                # the indexing or dividing node
    operand: int             # the node giving the checked values
    size: int                # the indexed axis (index), n_post (indices), the row count (indptr)
    span: Span
    when: str = "run"        # "compile" | "start" | "never" | "run"


# ---------------------------------------------------------------- finding sites
def _is_int(n: Node) -> bool:
    return n.dtype in (DType.i32, DType.i64)


def _sites_of(graph: Graph, i: int, n: Node, loops: tuple[int, ...]) -> list[Site]:
    nodes = graph.nodes
    if n.op is Op.GATHER:
        axis = n.attrs.axis % max(len(nodes[n.inputs[0]].shape), 1)
        return [Site("index", loops, i, n.inputs[1], nodes[n.inputs[0]].shape[axis], n.span)]
    if n.op is Op.SCATTER_ADD:
        return [Site("index", loops, i, n.inputs[1], n.shape[n.attrs.axis % len(n.shape)], n.span)]
    if n.op is Op.PROPAGATE:
        return [Site("indptr", loops, i, n.inputs[1], nodes[n.inputs[0]].shape[0], n.span),
                Site("indices", loops, i, n.inputs[2], n.attrs.n_post, n.span)]
    if n.op in (Op.DIV, Op.MOD) and _is_int(n):
        return [Site("divisor", loops, i, n.inputs[1], 0, n.span)]
    if n.op is Op.DIV:  # '/' on integers: the divisor is an integer cast to float
        d = nodes[n.inputs[1]]
        if d.op is Op.CAST and _is_int(nodes[d.inputs[0]]):
            return [Site("divisor", loops, i, d.inputs[0], 0, n.span)]
    return []


def find_sites(graph: Graph, loops: tuple[int, ...] = ()) -> list[Site]:
    """Every site of ``graph`` and of its LOOP bodies, in graph order."""
    out: list[Site] = []
    for i, n in enumerate(graph.nodes):
        if n.op is Op.LOOP:
            out += find_sites(n.attrs.body, loops + (i,))
        out += _sites_of(graph, i, n, loops)
    return out


def _graphs(step: Graph, loops: tuple[int, ...]) -> list[Graph]:
    """The step graph and each LOOP body down ``loops``."""
    out = [step]
    for k in loops:
        out.append(out[-1].nodes[k].attrs.body)
    return out


def _outer_input(graph: Graph, loop: Node, name: str) -> int | None:
    """The outer node a body ARG named ``name`` reads when it is a loop invariant (else None)."""
    a = LoopAttrs.of(loop)
    if name in a.invariant:
        return loop.inputs[len(a.carried) + a.invariant.index(name)]
    return None


# ---------------------------------------------------------------- what an operand depends on
def _depends(graphs: list[Graph], loops: tuple[int, ...], node: int) -> str:
    """"const", "params", "input" (an input port read as it is) or "run" for a node of the
    innermost graph, following loop invariants outwards."""
    graph = graphs[-1]
    n = graph.nodes[node]
    if n.op is Op.ARG:
        if len(graphs) > 1:
            outer = _outer_input(graphs[-2], graphs[-2].nodes[loops[-1]], n.attrs.name)
            return "run" if outer is None else _depends(graphs[:-1], loops[:-1], outer)
        return {"param": "params", "input": "input"}.get(n.attrs.role.value, "run")
    kinds = set()
    for j in graph.reachable([node]):
        m = graph.nodes[j]
        if m.op is Op.ARG:
            kind = _depends(graphs, loops, j)
            kinds.add("run" if kind == "input" else kind)
        elif m.op in (Op.UNIFORM, Op.RANDOM, Op.LOOP, Op.ITEM):
            kinds.add("run")
    return "run" if "run" in kinds else "params" if "params" in kinds else "const"


# ---------------------------------------------------------------- interval analysis
def _hull(*rs: Range | None) -> Range | None:
    if any(r is None for r in rs):
        return None
    return min(r[0] for r in rs), max(r[1] for r in rs)


def _corners(fn, a: Range | None, b: Range | None) -> Range | None:
    if a is None or b is None:
        return None
    vals = [fn(x, y) for x in a for y in b]
    return min(vals), max(vals)


def _const_range(n: Node) -> Range | None:
    v = np.asarray(n.attrs.value)
    if v.size == 0:
        return (1, 0)
    if v.dtype.kind in "biu" or (v.dtype.kind == "f" and np.all(np.isfinite(v)) and np.all(v == np.floor(v))):
        return int(v.min()), int(v.max())
    return None


def _mod_range(a: Range | None, b: Range | None) -> Range | None:
    if b is not None and b[0] > 0:
        return 0, b[1] - 1  # np.mod by a positive divisor
    return None


_RANGES = {
    Op.CONST: lambda n, rs, g: _const_range(n),
    Op.GATHER: lambda n, rs, g: rs[0],
    Op.SLICE: lambda n, rs, g: rs[0],
    Op.RESHAPE: lambda n, rs, g: rs[0],
    Op.TRANSPOSE: lambda n, rs, g: rs[0],
    Op.BROADCAST: lambda n, rs, g: rs[0],
    Op.CAST: lambda n, rs, g: rs[0] if not n.dtype.is_float else None,
    Op.CONCAT: lambda n, rs, g: _hull(*rs),
    Op.WHERE: lambda n, rs, g: _hull(rs[1], rs[2]),
    Op.MAXIMUM: lambda n, rs, g: _corners(max, rs[0], rs[1]),
    Op.MINIMUM: lambda n, rs, g: _corners(min, rs[0], rs[1]),
    Op.ADD: lambda n, rs, g: _corners(lambda x, y: x + y, rs[0], rs[1]),
    Op.SUB: lambda n, rs, g: _corners(lambda x, y: x - y, rs[0], rs[1]),
    Op.MUL: lambda n, rs, g: _corners(lambda x, y: x * y, rs[0], rs[1]),
    Op.NEG: lambda n, rs, g: None if rs[0] is None else (-rs[0][1], -rs[0][0]),
    Op.MOD: lambda n, rs, g: _mod_range(rs[0], rs[1]) if not n.dtype.is_float else None,
    Op.ARGMAX: lambda n, rs, g: (0, g.nodes[n.inputs[0]].shape[n.attrs.axis % len(g.nodes[n.inputs[0]].shape)] - 1),
}
_I64 = (-2**63, 2**63 - 1)


def ranges(graph: Graph, outer: Mapping[str, Range | None] | None = None) -> list[Range | None]:
    """An inclusive integer range for every node that the rules above bound (None: unknown); bool
    values are in [0, 1].  ``outer`` gives ranges of ARGs (a LOOP body's invariants)."""
    out: list[Range | None] = []
    for n in graph.nodes:
        rule = _RANGES.get(n.op)
        if n.dtype is DType.bool:
            r: Range | None = (0, 1)
        elif n.op is Op.ARG:
            r = (outer or {}).get(n.attrs.name)
        else:
            r = rule(n, [out[j] for j in n.inputs], graph) if rule is not None else None
        if r is not None and not (_I64[0] <= r[0] and r[1] <= _I64[1]):
            r = None  # beyond i64 the values may have wrapped
        out.append(r)
    return out


def _site_range(graphs: list[Graph], loops: tuple[int, ...], node: int) -> Range | None:
    outer: dict[str, Range | None] = {}
    if len(graphs) > 1:
        loop = graphs[-2].nodes[loops[-1]]
        outer_ranges = _ranges_at(graphs[:-1], loops[:-1])
        a = LoopAttrs.of(loop)
        outer = {name: outer_ranges[loop.inputs[len(a.carried) + k]] for k, name in enumerate(a.invariant)}
    return ranges(graphs[-1], outer)[node]


def _ranges_at(graphs: list[Graph], loops: tuple[int, ...]) -> list[Range | None]:
    if len(graphs) == 1:
        return ranges(graphs[0])
    loop = graphs[-2].nodes[loops[-1]]
    outer_ranges = _ranges_at(graphs[:-1], loops[:-1])
    a = LoopAttrs.of(loop)
    return ranges(graphs[-1], {name: outer_ranges[loop.inputs[len(a.carried) + k]] for k, name in enumerate(a.invariant)})


def _proven(site: Site, r: Range | None) -> bool:
    if site.kind == "index":
        return r is not None and (r[0] > r[1] or (-site.size <= r[0] and r[1] < site.size))
    if site.kind == "divisor":
        return r is not None and (r[0] > 0 or r[1] < 0)
    return False


def classify(step: Graph) -> list[Site]:
    """Every site of ``step`` with the moment it is proven (``Site.when``)."""
    out = []
    for s in find_sites(step):
        graphs = _graphs(step, s.loops)
        dep = _depends(graphs, s.loops, s.operand)
        if dep == "const":
            when = "compile"
        elif dep in ("params", "input"):
            when = "start"
        elif _proven(s, _site_range(graphs, s.loops, s.operand)):
            when = "never"
        else:
            when = "run"
        out.append(replace(s, when=when))
    return out


# ---------------------------------------------------------------- values and their errors
def operand_value(step: Graph, site: Site, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """The operand's values from ``env`` (parameters; for an input site, one step's inputs),
    computed with the oracle's rules, through loop invariants."""
    return _value(_graphs(step, site.loops), site.loops, site.operand, env)


def _value(graphs: list[Graph], loops: tuple[int, ...], node: int, env: Mapping[str, np.ndarray]) -> np.ndarray:
    graph = graphs[-1]
    need = graph.reachable([node])
    local = dict(env)
    if len(graphs) > 1:
        loop = graphs[-2].nodes[loops[-1]]
        for j in need:
            if graph.nodes[j].op is Op.ARG:
                name = graph.nodes[j].attrs.name
                local[name] = _value(graphs[:-1], loops[:-1], _outer_input(graphs[-2], loop, name), env)
    args = frozenset(graph.nodes[j].attrs.name for j in need if graph.nodes[j].op is Op.ARG)
    return Plan(graph, args, only=need).run(Context(local))[node]


def _first_bad(site: Site, v: np.ndarray) -> tuple[int, int] | None:
    """(flat position, value) of the first invalid value, or None.  A row table is checked whole."""
    v = np.asarray(v).reshape(-1)
    if site.kind == "indptr":
        return _bad_rows(v)
    if site.kind == "indices":
        bad = (v < 0) | (v >= site.size)
    else:
        bad = CHECK_FAILS[site.kind](v, site.size)
    if not bad.any():
        return None
    k = int(np.argmax(bad))
    return k, int(v[k])


def _bad_rows(v: np.ndarray) -> tuple[int, int] | None:
    if v.size and v[0] != 0:
        return 0, int(v[0])
    down = np.nonzero(np.diff(v) < 0)[0]
    return (int(down[0]) + 1, int(v[down[0] + 1])) if down.size else None


def describe(site: Site, value: int) -> str:
    """The message of an invalid ``value`` at ``site`` (the same at compile time, at the start of
    a run and at run time)."""
    if site.kind == "index":
        return f"index {value} is out of range for an axis of size {site.size}"
    if site.kind == "divisor":
        return "integer division by zero"
    if site.kind == "indices":
        return f"connectivity target {value} is out of range for {site.size} postsynaptic neurons"
    return f"connectivity row table is not a non-decreasing table from 0 (entry {value})"


def _csr_extent(indptr: np.ndarray | None, indices: np.ndarray) -> str | None:
    """A row table that points past its targets (checked once both values are known)."""
    if indptr is None or not np.asarray(indptr).size:
        return None
    last, count = int(np.asarray(indptr).reshape(-1)[-1]), np.asarray(indices).size
    return f"connectivity row table ends at {last}, past its {count} targets" if last > count else None


def static_errors(step: Graph, init: Graph | None = None) -> list[Diagnostic]:
    """Located errors for sites proven at compile time: their constant operands, and parameters
    whose initial value in ``init`` is a constant, checked against that value.  Only the values
    sites read are computed; a value that cannot be computed here is left to the run."""
    sites = classify(step)
    wanted = set().union(*(_reads(step, s) for s in sites if s.when == "start"))
    init_values = _constant_inits(init, wanted) if init is not None else {}
    out: list[Diagnostic] = []
    values: dict[tuple, np.ndarray] = {}
    for s in sites:
        graph = _graphs(step, s.loops)[-1]
        if s.when == "compile":
            env, source = {}, None
        elif s.when == "start" and _reads_only(step, s, init_values):
            env, source = init_values, "the initial value of "
        else:
            continue
        try:
            v = operand_value(step, s, env)
        except EvaluationError:
            continue
        values[(s.loops, s.operand)] = v
        bad = _first_bad(s, v)
        if bad is not None:
            where = "" if source is None else f" ({source}{_arg_names(step, s)})"
            out.append(error(s.span, describe(s, bad[1]) + where))
        elif s.kind == "indices":
            extent = _csr_extent(values.get((s.loops, graph.nodes[s.node].inputs[1])), v)
            if extent:
                out.append(error(s.span, extent))
    return out


def _constant_inits(init: Graph, names: set[str]) -> dict[str, np.ndarray]:
    """The initial values of ``names`` computed from constants alone (no random draw)."""
    out = {}
    for r in init.results:
        if r.name not in names:
            continue
        need = init.reachable([r.node])
        if all(init.nodes[j].op not in (Op.ARG, Op.RANDOM) for j in need):
            try:
                out[r.name] = Plan(init, only=need).run(Context({}))[r.node]
            except EvaluationError:
                continue
    return out


def _arg_names(step: Graph, site: Site) -> str:
    names = sorted(_reads(step, site))
    return ", ".join(f"param '{n}'" for n in names)


def _reads(step: Graph, site: Site) -> set[str]:
    """The outer ARG names a site's operand reads (through loop invariants)."""
    graphs = _graphs(step, site.loops)

    def walk(level: int, node: int) -> set[str]:
        g = graphs[level]
        names: set[str] = set()
        for j in g.reachable([node]):
            m = g.nodes[j]
            if m.op is Op.ARG:
                if level == 0:
                    names.add(m.attrs.name)
                else:
                    outer = _outer_input(graphs[level - 1], graphs[level - 1].nodes[site.loops[level - 1]], m.attrs.name)
                    names |= walk(level - 1, outer) if outer is not None else set()
        return names

    return walk(len(graphs) - 1, site.operand)


def _reads_only(step: Graph, site: Site, known: Mapping[str, np.ndarray]) -> bool:
    names = _reads(step, site)
    return bool(names) and names <= set(known)


def start_errors(program: Program, sites: list[Site], params: Mapping[str, np.ndarray],
                 inputs: Mapping[str, np.ndarray] | None = None) -> list[Diagnostic]:
    """Located errors for the ``sites`` (``start_sites``) a run checks when it starts: operands
    computed from ``params``, and input ports read as they are (``inputs``: [B, T, *shape] arrays;
    None skips them, as when weights are loaded before any run).  Messages name the weight's key."""
    keys = {v.name: v.key or v.name for v in program.params}
    out = []
    for s in sites:
        names = sorted(_reads(program.step, s))
        if any(n not in keys for n in names):
            if inputs is not None:
                out += _input_errors(s, names, inputs)
            continue
        v = operand_value(program.step, s, params)
        bad = _first_bad(s, v)
        loaded = ", ".join(f"'{keys[n]}'" for n in names)
        if bad is not None and _computed(program.step, s):
            out.append(error(s.span, f"{describe(s, bad[1])}: element {bad[0]} of the value computed from weight "
                                     f"{loaded} is {bad[1]}"))
        elif bad is not None:
            out.append(error(s.span, f"{describe(s, bad[1])}: weight {loaded} holds {bad[1]} at position {bad[0]}"))
        elif s.kind == "indices":
            n = _graphs(program.step, s.loops)[-1].nodes[s.node]
            extent = _csr_extent(operand_value(program.step, replace(s, operand=n.inputs[1]), params), v)
            if extent:
                out.append(error(s.span, f"{extent} (weight {loaded})"))
    return out


def _input_errors(site: Site, names: list[str], inputs: Mapping[str, np.ndarray]) -> list[Diagnostic]:
    (name,) = names
    arr = np.asarray(inputs[name])
    bad = _first_bad(site, arr)
    if bad is None:
        return []
    pos = np.unravel_index(bad[0], arr.shape)
    return [error(site.span, f"{describe(site, bad[1])}: input '{name}' holds {bad[1]} at sample {pos[0]}, "
                             f"step {pos[1]}" + "".join(f"[{p}]" for p in pos[2:]))]


def _computed(step: Graph, site: Site) -> bool:
    return _graphs(step, site.loops)[-1].nodes[site.operand].op is not Op.ARG


def start_sites(program: Program) -> list[Site]:
    """The sites a run checks when it starts (cached per program by the caller)."""
    return [s for s in classify(program.step) if s.when == "start"]


# ---------------------------------------------------------------- run-time checks
def status_error(program: Program, status: np.ndarray) -> Diagnostic | None:
    """The located error a failed status (``[B, 3]``: site, step, value per sample) stands for."""
    status = np.asarray(status).reshape(-1, STATUS_SHAPE[0])
    failed = np.nonzero(status[:, 0] != 0)[0]
    if not failed.size:
        return None
    b = min(failed, key=lambda k: (status[k, 1], k))  # the first step, then the first sample
    site, step, value = (int(v) for v in status[b])
    n = next((n for n in _checks(program.step) if n.attrs.site == site), None)
    if n is None:
        return None
    what = describe(Site(n.attrs.kind, (), 0, 0, n.attrs.size, n.span), value)
    return error(n.span, f"{what} (step {step}" + (f", sample {b})" if status.shape[0] > 1 else ")"))


def _checks(graph: Graph):
    for n in graph.nodes:
        if n.op is Op.CHECK:
            yield n
        elif n.op is Op.LOOP:
            yield from _checks(n.attrs.body)


__all__ = ["STATUS", "Site", "Range", "find_sites", "classify", "ranges", "operand_value", "describe", "static_errors",
           "start_errors", "start_sites", "status_error"]
