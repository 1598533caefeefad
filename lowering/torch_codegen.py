"""Generated code for torch plans: each ``Plan`` of ``torch_rules.py`` becomes straight-line Python.

The interpreter of ``torch_rules.execute`` pays, per node and step, a rule lookup, an input list,
a try/except and a dtype check.  Here a plan is turned once into a ``torch.fx`` graph, so torch
writes (and compiles) its Python: a module's step plan and its LOOP bodies when the module is built
(``prepare``, called by ``to_torch.ProgramModule``: under ``torch.compile``, code still to be
generated at a first run is a guard that fails once per plan), any other plan
(``to_torch.evaluate``'s, the initial values' plans, a copied or unpickled plan, whose slot is
empty) at its first run.  One
statement per live node: a direct torch call for the common ops (elementwise arithmetic,
comparisons, ``where``, einsum with its batched equation, reductions, reshape, transpose, slices),
and a call to the op's rule of ``torch_rules.RULES``, bound to its ``Site``, for the rest (LOOP,
PROPAGATE, the draws, SPIKE with its surrogate, layer norm, gathers, CHECK).  The batched forms are
the rules' own, decided here from the static shapes and batched flags (``compiler/batching.py``):
an operand of lower rank gets its size-1 axes by indexing, an axis attribute becomes its stored
axis, the batch axis of a reshape is ``-1``.  Every value is cast to its node's dtype where torch's
result could differ, as the interpreter does after each rule.  No source text is formed or
evaluated by nspec itself: the nodes are built with torch.fx's graph API and ``GraphModule``
generates the code.

A plan yields two functions: ``once(args, consts, frame, grad, local_grad)`` computes the nodes that
depend on parameters and constants only (in a LOOP body, on loop invariants too), and what per-step
nodes do first to such values (a GATHER's indices made int64 and in range, an EINSUM's fixed operand
arranged for ``bmm``: ``_preparations``), at a run's first step (their tuple is kept in the run's
``Frame.cache``, as the interpreter keeps each value), and ``step(args, consts, once, frame, grad,
local_grad)`` the rest, returning the values of ``Plan.roots``.  The nodes only plastic updates
need run after ``torch._C._set_grad_enabled(local_grad)``, which gives back ``grad`` after them.  A
failure inside generated code is located by the line it raised on: each line maps to its node,
whose span the error names (``lines``).

``execute(plan, frame)`` runs the generated code, or the interpreter when the environment sets
``NSPEC_TORCH_INTERPRET=1`` (read at import into ``INTERPRET``) or the caller passes
``interpret=True``: the interpreter stays the reference for debugging, and the tests run both.
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

from nspec.compiler.batching import batched_perm, sliced, stored_axes, stored_axis
from nspec.compiler.ir import Op
from nspec.lowering import torch_rules as rules
from nspec.lowering.torch_einsum import arrange, contract
from nspec.lowering.torch_rules import RULES, TORCH_DTYPES, Frame, Loop, Plan, Site
from nspec.runtime.executor import BackendError

INTERPRET = os.environ.get("NSPEC_TORCH_INTERPRET", "") not in ("", "0")

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ARITH = {Op.ADD: operator.add, Op.SUB: operator.sub, Op.MUL: operator.mul, Op.POW: operator.pow,
          Op.MAXIMUM: torch.maximum, Op.MINIMUM: torch.minimum}
_COMPARE = {Op.LT: operator.lt, Op.LE: operator.le, Op.GT: operator.gt, Op.GE: operator.ge, Op.EQ: operator.eq,
            Op.NE: operator.ne, Op.AND: torch.logical_and, Op.OR: torch.logical_or}
# unary ops whose result keeps the operand's dtype always, or when it is a float one
_SAME = {Op.NEG: torch.neg, Op.ABS: torch.abs, Op.RELU: torch.relu, Op.FLOOR: torch.floor}
_FLOAT_SAME = {Op.EXP: torch.exp, Op.LOG: torch.log, Op.SQRT: torch.sqrt, Op.TANH: torch.tanh,
               Op.SIGMOID: torch.sigmoid, Op.SILU: F.silu, Op.SOFTPLUS: F.softplus, Op.SIN: torch.sin,
               Op.COS: torch.cos, Op.ERF: torch.erf}
# rules whose result is always in the node's dtype (they cast their operands to it): no cast after them
_RULES_IN_DTYPE = {Op.CONCAT, Op.SCATTER_ADD, Op.PROPAGATE, Op.LAYERNORM}
_REDUCE = {Op.SUM: torch.sum, Op.MEAN: torch.mean, Op.MAX: torch.amax, Op.MIN: torch.amin}


@dataclass(frozen=True, slots=True)
class Code:
    """A plan's generated functions, the nodes they return, and where each line came from."""

    once: Callable | None          # parameter-only nodes, once per run; None when there are none
    step: Callable
    roots: tuple[int, ...]
    size: int                      # the graph's node count (``execute`` returns a list that long)
    local: bool                    # whether plastic-only nodes switch the grad mode
    lines: dict[tuple[str, int], Site]   # (generated file, line) -> the node it computes
    source: str                    # both functions' Python, for reading


# ---------------------------------------------------------------- running
def execute(plan: Plan, frame: Frame, interpret: bool | None = None) -> list:
    """Every root's value (``Plan.roots``; None elsewhere), computed by the plan's generated code, or
    by the interpreter of ``torch_rules.execute`` (every live node's value) with ``interpret``
    (default: ``INTERPRET``)."""
    if INTERPRET if interpret is None else interpret:
        return rules.execute(plan, frame if frame.run is None else replace(frame, run=None))
    if frame.run is not run:
        frame = replace(frame, run=run)  # LOOP bodies run generated code too
    return run(plan, frame)


def run(plan: Plan, frame: Frame) -> list:
    """Run ``plan``'s generated code (built on first use); a failure names its node and spec line."""
    code = plan.generated.code or generate(plan)
    grad = torch.is_grad_enabled()
    local_grad = frame.plasticity_grad and grad
    try:
        once = None
        if code.once is not None:
            key = ("once", id(plan))
            once = frame.cache.get(key)
            if once is None:
                once = frame.cache[key] = code.once(frame.args, frame.consts, frame, grad, local_grad)
        out = code.step(frame.args, frame.consts, once, frame, grad, local_grad)
    except BackendError:
        torch._C._set_grad_enabled(grad)
        raise
    except Exception as exc:
        torch._C._set_grad_enabled(grad)
        site = _failing_site(code, exc)
        if site is None:
            raise
        raise rules.node_error(site.node, site.index, f"{type(exc).__name__}: {exc}") from exc
    vals: list = [None] * code.size
    for i, v in zip(code.roots, out):
        vals[i] = v
    return vals


def prepare(plan: Plan) -> None:
    """Generate the code of ``plan`` and of its LOOP bodies now, when a module is built: under
    ``torch.compile`` a plan whose code is still to be generated on its first run is a guard that
    fails once per plan (each LOOP body is a plan), and dynamo stops recompiling after eight."""
    if INTERPRET:
        return
    if plan.generated.code is None:
        generate(plan)
    for s in plan.sites + plan.local:
        if isinstance(s.extra, Loop):
            prepare(s.extra.body)


def _failing_site(code: Code, exc: BaseException) -> Site | None:
    """The node of the innermost generated line in ``exc``'s traceback."""
    site, tb = None, exc.__traceback__
    while tb is not None:
        site = code.lines.get((tb.tb_frame.f_code.co_filename, tb.tb_lineno), site)
        tb = tb.tb_next
    return site


def source(plan: Plan) -> str:
    """The Python generated for ``plan`` (its ``once`` function, if any, then its ``step``)."""
    return (plan.generated.code or generate(plan)).source


# ---------------------------------------------------------------- generating
def generate(plan: Plan) -> Code:
    """Build ``plan``'s functions and keep them in its slot."""
    once_sites = [s for s in plan.sites + plan.local if s.once]
    per_step = [s for s in plan.sites + plan.local if not s.once]
    wanted = {j for s in per_step for j in s.node.inputs} | set(plan.roots)
    kept = [s.index for s in once_sites if s.index in wanted]  # once values the step reads
    fixed = {s.index for s in once_sites} | {s.index for s in plan.sites + plan.local if s.op == "const"}
    # what per-step nodes do to fixed operands (make indices in range, arrange an einsum's operand): once
    prepared: dict[tuple, Site] = {}
    for s in per_step:
        for key in _preparations(plan, s):
            if key[1] in fixed:
                prepared.setdefault(key, s)
    lines: dict[tuple[str, int], Site] = {}
    once = None
    sources = []
    if once_sites or prepared:
        b = _Builder(plan, "Once")
        b.sites([s for s in plan.sites if s.once], [s for s in plan.local if s.once])
        once = b.finish([b.value(i) for i in kept] + [b.prepared(key, s) for key, s in prepared.items()], lines)
        sources.append(once.__self__.code)
    b = _Builder(plan, "Step")
    for k, i in enumerate(kept):
        b.env[i] = b._op(b.by_index[i], operator.getitem, (b.once, k), name=f"once_{i}")
    for k, (key, s) in enumerate(prepared.items(), len(kept)):
        b.prepare[key] = b._op(s, operator.getitem, (b.once, k), name=f"once_{key[0]}_{key[1]}")
    b.sites([s for s in plan.sites if not s.once], [s for s in plan.local if not s.once])
    step = b.finish([b.value(i) for i in plan.roots], lines)
    sources.append(step.__self__.code)
    code = Code(once, step, plan.roots, len(plan.flags), bool(plan.local), lines,
                "\n".join(src.strip("\n") for src in sources) + "\n")
    plan.generated.code = code
    return code


class _Builder:
    """One generated function: placeholders, then one statement group per site."""

    def __init__(self, plan: Plan, kind: str):
        self.plan = plan
        self.kind = kind
        self.graph = g = fx.Graph()
        self.args, self.consts = g.placeholder("args"), g.placeholder("consts")
        self.once = g.placeholder("once") if kind == "Step" else None
        self.frame, self.grad = g.placeholder("frame"), g.placeholder("grad")
        self.local_grad = g.placeholder("local_grad")
        self.env: dict[int, fx.Node] = {}
        self.by_index = {s.index: s for s in plan.sites + plan.local}
        self.site_of: dict[str, Site] = {}   # fx node name -> the site it belongs to
        self.prepare: dict[tuple, fx.Node] = {}  # (kind, node, argument) -> the node's value prepared

    def prepared(self, key: tuple, s: Site) -> fx.Node:
        """Node ``key[1]``'s value prepared by ``_PREPARE[key[0]]`` with ``key[2]`` (for site ``s``),
        computed once per function."""
        if key not in self.prepare:
            kind, j, arg = key
            self.prepare[key] = self._op(s, _PREPARE[kind], (self.value(j), arg), name=f"{kind}_{j}")
        return self.prepare[key]

    def value(self, i: int) -> fx.Node:
        """Node ``i``'s value; an ARG or a CONST is read where it is first needed."""
        if i not in self.env:
            self.env[i] = self.site(self.by_index[i])
        return self.env[i]

    def sites(self, main: list[Site], local: list[Site]) -> None:
        """Emit ``main``, then ``local`` with the plastic updates' grad mode."""
        for s in main:
            if s.op not in ("arg", "const"):
                self.env[s.index] = self.site(s)
        if local:
            self.graph.call_function(torch._C._set_grad_enabled, (self.local_grad,))
            for s in local:
                if s.op not in ("arg", "const"):
                    self.env[s.index] = self.site(s)
            self.graph.call_function(torch._C._set_grad_enabled, (self.grad,))

    def finish(self, outputs: list[fx.Node], lines: dict) -> Callable:
        self.graph.output(tuple(outputs))
        module = fx.GraphModule(torch.nn.Module(), self.graph, class_name=self.kind)
        filename = module.forward.__code__.co_filename
        for number, line in enumerate(module.code.split("\n"), 1):
            m = re.match(r"\s+(\w+) = ", line)
            if m and m.group(1) in self.site_of:
                lines[(filename, number)] = self.site_of[m.group(1)]
        return module.forward

    # -- one site
    def _op(self, s: Site, target, args, kwargs=None, name=None, method=False) -> fx.Node:
        """A call for site ``s`` (a function, or with ``method`` a tensor method)."""
        node = self.graph.create_node("call_method" if method else "call_function", target, tuple(args),
                                      kwargs or {}, name=name)
        self.site_of[node.name] = s
        return node

    def site(self, s: Site) -> fx.Node:
        n = s.node
        if n.op is Op.CONST:
            return self._op(s, operator.getitem, (self.consts, s.extra), name=f"const_{s.index}")
        if n.op is Op.ARG:
            x = self._op(s, operator.getitem, (self.args, n.attr("name")), name=f"read_{s.index}")
            return self._op(s, as_dtype, (x, s.dtype), name=f"arg_{s.index}")
        value, dtype = self._inline(s)
        if value is None:  # the op's rule, bound to its site
            value = self._op(s, _bound(s), ([self.value(j) for j in n.inputs], self.frame),
                             name=f"{s.op}_{s.index}")
            dtype = s.dtype if n.op in _RULES_IN_DTYPE else None
        if s.dtype is not None and dtype is None:  # a dtype known only when it runs
            value = self._op(s, as_dtype, (value, s.dtype), name=f"cast_{s.index}")
        elif s.dtype is not None and dtype != s.dtype:
            value = self._op(s, "to", (value, s.dtype), method=True, name=f"cast_{s.index}")
        return value

    def _dtype(self, j: int) -> torch.dtype | None:
        n = self.plan.graph.nodes[j]
        return None if n.op is Op.LOOP else TORCH_DTYPES[n.dtype]

    def _aligned(self, s: Site, dtype: torch.dtype | None = None) -> list[fx.Node]:
        """The inputs as ``torch_batching.align`` gives them: cast to ``dtype``, batched ones of
        lower per-sample rank with size-1 axes after the batch axis."""
        rank = len(s.node.shape)
        out = []
        for j, b in zip(s.node.inputs, s.batched):
            x = self.value(j)
            if dtype is not None and self._dtype(j) != dtype:
                x = self._op(s, "to", (x, dtype), method=True, name=f"cast_{j}")
            k = rank - len(self.plan.graph.nodes[j].shape)
            if b and k > 0:
                x = self._op(s, operator.getitem, (x, (slice(None),) + (None,) * k), name=f"lift_{j}")
            out.append(x)
        return out

    def _inline(self, s: Site) -> tuple[fx.Node | None, torch.dtype | None]:
        """A direct torch call for ``s`` and the dtype it gives, or (None, None) for its rule."""
        n, op, name = s.node, s.node.op, f"{s.op}_{s.index}"
        ins = [self.value(j) for j in n.inputs]
        in_dtype = self._dtype(n.inputs[0]) if n.inputs else None
        if op in _ARITH or (op in (Op.DIV, Op.MOD) and s.dtype in _FLOATS):
            fn = _ARITH.get(op) or (operator.truediv if op is Op.DIV else torch.remainder)
            return self._op(s, fn, self._aligned(s, s.dtype), name=name), s.dtype
        if op in _COMPARE:
            return self._op(s, _COMPARE[op], self._aligned(s), name=name), torch.bool
        if op is Op.NOT:
            return self._op(s, torch.logical_not, ins, name=name), torch.bool
        if op in _SAME:
            return self._op(s, _SAME[op], ins, name=name), in_dtype
        if op in _FLOAT_SAME:
            return self._op(s, _FLOAT_SAME[op], ins, name=name), in_dtype if in_dtype in _FLOATS else None
        if op is Op.STOP_GRADIENT:
            return self._op(s, "detach", ins, method=True, name=name), in_dtype
        if op is Op.CAST:
            return ins[0], in_dtype
        if op is Op.WHERE:
            c, a, b = self._aligned(s)
            if self._dtype(n.inputs[0]) != torch.bool:
                c = self._op(s, "bool", (c,), method=True, name=f"cond_{s.index}")
            a, b = (self._op(s, "to", (x, s.dtype), method=True, name=f"cast_{j}")
                    if self._dtype(j) != s.dtype else x for x, j in zip((a, b), n.inputs[1:]))
            return self._op(s, torch.where, (c, a, b), name=name), s.dtype
        if op in _REDUCE:
            dims = stored_axes(n.attr("axes"), len(self.plan.graph.nodes[n.inputs[0]].shape), s.batched[0])
            if not dims:
                return ins[0], in_dtype
            x = ins[0]
            if op is Op.MEAN and in_dtype not in _FLOATS:
                x, in_dtype = self._op(s, "to", (x, s.dtype), method=True, name=f"cast_{s.index}"), s.dtype
            kept = in_dtype if op is not Op.SUM or in_dtype in _FLOATS else None
            return self._op(s, _REDUCE[op], (x,), {"dim": dims, "keepdim": bool(n.attr("keepdims", False))},
                            name=name), kept
        if op in (Op.ARGMAX, Op.SOFTMAX, Op.LOGSUMEXP):
            axis = stored_axis(n.attr("axis"), len(self.plan.graph.nodes[n.inputs[0]].shape), s.batched[0])
            fn = {Op.ARGMAX: torch.argmax, Op.SOFTMAX: torch.softmax, Op.LOGSUMEXP: torch.logsumexp}[op]
            kept = torch.int64 if op is Op.ARGMAX else in_dtype if in_dtype in _FLOATS else None
            return self._op(s, fn, (ins[0],), {"dim": axis}, name=name), kept
        if op is Op.EINSUM:
            xs = [self._op(s, "to", (x, s.dtype), method=True, name=f"cast_{j}") if self._dtype(j) != s.dtype else x
                  for x, j in zip(ins, n.inputs)]
            equation, linear, c = s.extra
            if linear:
                return self._op(s, F.linear, xs, name=name), s.dtype
            if c is not None:  # as ``Contraction.operands``: a fixed operand arranged once per run
                a, b = (self._op(s, "permute", (x, perm), method=True, name=f"permute_{j}") if not fixed
                        else self.prepared(("arrange", j, perm), s) if x is self.value(j)
                        else self._op(s, arrange, (x, perm), name=f"arrange_{j}")
                        for x, j, perm, fixed in zip(xs, n.inputs, (c.perm_a, c.perm_b), c.fixed))
                return self._op(s, _bound(s, _contract), (a, b), name=name), s.dtype
            return self._op(s, torch.einsum, (equation, *xs), name=name), s.dtype
        if op is Op.RESHAPE and (not s.batched[0] or int(np.prod(n.shape)) > 0):
            shape = ((-1,) if s.batched[0] else ()) + tuple(n.shape)
            return self._op(s, "reshape", (ins[0], shape), method=True, name=name), in_dtype
        if op is Op.TRANSPOSE:
            perm = batched_perm(n.attr("perm"), s.batched[0])
            return self._op(s, "permute", (ins[0], perm), method=True, name=name), in_dtype
        if op is Op.BROADCAST:
            (x,) = self._aligned(s)
            shape = ((-1,) if s.batched[0] else ()) + tuple(n.shape)
            return self._op(s, "expand", (x, shape), method=True, name=name), in_dtype
        if op is Op.SLICE:
            index = sliced(n.attr("starts"), n.attr("stops"), n.attr("steps"), s.batched[0])
            return self._op(s, operator.getitem, (ins[0], index), name=name), in_dtype
        if op is Op.ITEM:
            return self._op(s, operator.getitem, (ins[0], n.attr("index")), name=name), None
        if op is Op.GATHER:
            index = self.prepared(_preparations(self.plan, s)[0], s)
            if s.batched[1] or len(self.plan.graph.nodes[n.inputs[1]].shape) != 1:
                return self._op(s, _bound(s, rules.take), (ins[0], index), name=name), in_dtype
            # one vector of indices for every sample: the rule's index_select, without its reshapes
            axis = stored_axis(n.attr("axis"), len(self.plan.graph.nodes[n.inputs[0]].shape), False) + s.batched[0]
            return self._op(s, torch.index_select, (ins[0], axis, index), name=name), in_dtype
        if op is Op.CONCAT and (not s.out or all(s.batched)):  # no input to give a batch axis
            xs = [self._op(s, "to", (x, s.dtype), method=True, name=f"cast_{j}") if self._dtype(j) != s.dtype else x
                  for x, j in zip(ins, n.inputs)]
            axis = stored_axis(n.attr("axis"), len(n.shape), s.out)
            return self._op(s, torch.cat, (xs,), {"dim": axis}, name=name), s.dtype
        return None, None


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``: ``x`` itself when it is in it already (``Tensor.to`` takes ~10x longer
    to find that out, a share of a small step's time)."""
    return x if x.dtype is dtype else x.to(dtype)


_PREPARE = {"index": rules.in_range, "arrange": arrange}


def _preparations(plan: Plan, s: Site) -> list[tuple]:
    """What site ``s`` does to an operand before its op, as ``(kind, node, argument)`` keys of
    ``_PREPARE``: a GATHER makes its indices int64 and in range of the axis it indexes, an EINSUM
    run as one ``bmm`` arranges each fixed operand already in its dtype (``torch_einsum.arrange``)."""
    n = s.node
    if n.op is Op.GATHER:
        x, idx = n.inputs
        shape = plan.graph.nodes[x].shape
        return [("index", idx, shape[stored_axis(n.attr("axis"), len(shape), False)])]
    if n.op is Op.EINSUM and s.extra[2] is not None:
        c = s.extra[2]
        return [("arrange", j, perm) for j, perm, fixed in zip(n.inputs, (c.perm_a, c.perm_b), c.fixed)
                if fixed and TORCH_DTYPES[plan.graph.nodes[j].dtype] == s.dtype]
    return []


def _contract(s: Site, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return contract(s.extra[2], a, b)


def _bound(s: Site, rule: Callable | None = None) -> Callable:
    """``RULES[op]`` (or ``rule``) with its site bound: called from generated code as
    ``rule_<op>_<i>(xs, frame)`` (or with ``rule``'s own arguments after the site)."""
    if rule is None:
        op_rule = RULES[s.node.op]

        def call(xs, frame):
            return op_rule(s, xs, frame)
    else:
        def call(*xs):
            return rule(s, *xs)

    call.__name__ = call.__qualname__ = f"{s.op}_{s.index}"
    call.__module__ = "rule"
    return call


__all__ = ["INTERPRET", "Code", "execute", "run", "generate", "prepare", "source"]
