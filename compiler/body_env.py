"""Name lookup while a body's equations are elaborated: ``Env`` resolves a name to an input,
state, parameter, ``let`` (evaluated lazily, once per context) or compile-time value.

Shared by ``bodies.py`` (declarations, the step, events), ``body_odes.py`` (continuous
equations) and ``networks.py``; ``Env`` reads its body's ``decls``, ``lets``, ``conform`` and
``static`` and nothing else.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .expressions import Abort, ExprBuilder, Val
from .ir import DType, GraphBuilder, Op
from .threefry import MASK, SEED_STATE
from .units import DIMENSIONLESS, unit
from .values import static

if TYPE_CHECKING:  # annotations only: bodies.py imports this module
    from .bodies import Body

TIME = unit("s")[1]  # the dimension of a duration (dt, refractory periods, d/dt)
CLOCK = "step_count"  # the hidden i64 state counting a body's steps, added when its equations read `t`


class Env:
    """Name lookup for one evaluation context; ``lets`` are evaluated lazily and cached here."""

    def __init__(self, body: "Body", graph: GraphBuilder, overrides: dict[str, Val] | None = None,
                 allow_random: bool = False, target_shape: tuple[int, ...] = (), init: bool = False):
        self.body = body
        self.overrides = overrides or {}
        self.cache: dict[str, Val] = {}
        self.busy: set[str] = set()
        self.init = init
        step = graph is body.g and not init  # step equations may read `t` and draw random numbers
        self.b = ExprBuilder(graph, body.diags, self.lookup, allow_random=allow_random, target_shape=target_shape,
                             draw=partial(draw, body) if step else None)

    def evaluate_reads_first(self, name: str, span: Span) -> None:
        """Evaluate the ``let``s that ``name`` reads, transitively, deepest first, so that evaluating
        ``name`` finds them cached: a chain of a thousand lets needs no deep recursion."""
        lets = self.body.lets
        order: list[str] = []
        seen = {name}
        stack: list[tuple[str, bool]] = [(name, False)]
        while stack:
            current, expanded = stack.pop()
            if expanded:
                order.append(current)
                continue
            stack.append((current, True))
            for node in A.walk(lets[current].value):
                dep = node.id if isinstance(node, A.Name) else None
                if dep in lets and dep not in seen and dep not in self.cache and dep not in self.busy \
                        and dep not in self.overrides:
                    seen.add(dep)
                    stack.append((dep, False))
        for dep in order[:-1]:  # ``name`` itself is last: the caller evaluates it
            self.lookup(dep, span)

    def lookup(self, name: str, span: Span) -> Val | None:
        if name in self.overrides:
            return self.overrides[name]
        body = self.body
        if name in body.lets and not self.init:
            if name in self.cache:
                return self.cache[name]
            if name in self.busy:
                self.b.fail(span, f"'{name}' is defined in terms of itself")
            self.busy.add(name)
            try:
                self.evaluate_reads_first(name, span)
                let = body.lets[name]
                v = self.b.expr(let.value)
                if let.type is not None:
                    v = body.conform(self.b, v, let.type, let.value.span, f"'{name}'")
            finally:
                self.busy.discard(name)
            self.cache[name] = v
            return v
        d = body.decls.get(name)
        if d is not None:
            if self.init and d.kind in ("in", "state"):
                self.b.fail(span, f"an initial value cannot read {'input' if d.kind == 'in' else 'state'} '{name}'; "
                                  "it may use parameters and constants")
            if self.init and d.kind == "param":
                return body.init_params[name]
            if d.kind == "out":
                self.b.fail(span, f"'{name}' is an output port; it cannot be read inside the system")
            return d.val
        if name == "t" and self.b.draw is not None:
            return time(body, span)
        return body.static(name, span)


# ---------------------------------------------------------------- the clock and random draws of step equations
def clock(body: "Body", span: Span) -> Val:
    """The step counter (i64, one per sample), a hidden state added on first use: it starts at 0
    and its next value is itself + 1 (``Body.build_step``), so chunked runs continue where the last
    chunk stopped."""
    if body.clock_val is None:
        body.clock_val = body.add_state(CLOCK, DType.i64, (), 0, span)
    return body.clock_val


def time(body: "Body", span: Span) -> Val:
    """`t`, the model time at the start of this step: step * dt, computed in f64 and rounded once
    to f32 (exact while the product is representable, the same bits on every backend)."""
    g = body.g
    step = g.add(Op.CAST, [clock(body, span).node], DType.f64, (), span=span)
    dt = g.const(np.asarray(body.elab.dt, np.float64), DType.f64, span)
    return Val(DType.f32, (), TIME, g.add(Op.CAST, [g.add(Op.MUL, [step, dt], DType.f64, (), span=span)], DType.f32,
                                           (), span=span))


def seed(body: "Body", span: Span) -> Val:
    """The run's seed (i64, one per sample), a hidden state added on first draw: its initial value
    is the seed of the `simulate` statement, which ``initialize`` replaces by the run's seed
    (``Model.run(seed=)``, ``nspec run --seed``); its next value is itself."""
    if body.seed_val is None:
        body.seed_val = body.add_state(SEED_STATE, DType.i64, (), body.elab.seed & MASK, span)
    return body.seed_val


def hidden_nexts(body: "Body", b: ExprBuilder) -> dict[str, Val]:
    """The next values of the clock and seed states a body's equations added."""
    out = {}
    if body.clock_val is not None:
        out[CLOCK] = b.binary("+", body.clock_val, static(1), body.decl.span)
    if body.seed_val is not None:
        out[SEED_STATE] = body.seed_val
    return out


def draw(body: "Body", shape: tuple[int, ...], span: Span, op: Op = Op.UNIFORM) -> Val:
    """f32 draws of ``shape``, new at every step: a ``UNIFORM`` (in [0, 1)) or ``NORMAL`` (standard
    normal) node reading the step counter and the run's seed (its stream is numbered per draw site
    by the number-streams pass)."""
    if any(isinstance(s, A.Ticks) for s in body.decl.body):  # a LOOP body would redraw the same numbers
        body.diags.error(span, "random draws are not supported in a system with internal ticks")
        raise Abort
    node = body.g.add(op, [clock(body, span).node, seed(body, span).node], DType.f32, shape,
                      (("stream", 0), ("streams", 1)), span)
    return Val(DType.f32, tuple(shape), DIMENSIONLESS, node)
