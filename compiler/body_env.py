"""Name lookup while a body's equations are elaborated: ``Env`` resolves a name to an input,
state, parameter, ``let`` (evaluated lazily, once per context) or compile-time value.

Shared by ``bodies.py`` (declarations, the step, events), ``body_odes.py`` (continuous
equations) and ``networks.py``; ``Env`` reads its body's ``decls``, ``lets``, ``conform`` and
``static`` and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nspec.dsl.diagnostics import Span

from .expressions import ExprBuilder, Val
from .ir import GraphBuilder
from .units import unit

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
                             draw=body.draw if step else None)

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
            return body.time(span)
        return body.static(name, span)
