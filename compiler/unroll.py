"""Compile-time structure of a declaration: ``if`` choices, ``for`` loops and families of names.

A body may depend on hyperparameters in ways that change which declarations exist (the CTM's
U-Net has ``synapse_depth - 1`` down blocks, each with its own weights under its own state_dict
key).  Three constructs say so, and this pass removes all three before a body is built:

* ``if c { ... } else { ... }`` keeps the branch that the compile-time bool ``c`` picks;
* ``for i in items { ... }`` repeats its body once per item of a compile-time list, the loop
  variable replaced by the item (``range(n)``, ``reversed(range(n))``, ``[2, 4, 8]``);
* ``let h[k] = ...``, ``param W[k]: ...`` and ``state g[k]`` declare members of a family; ``h[k]``
  reads member ``k`` wherever ``h`` is a family, so ``k`` must be known at compile time; ``dg[k]/dt``,
  ``next g[k]`` and ``g[k] = ...`` (in a reset or an event) write one member.  A weight key may
  interpolate compile-time values: ``key "synapses.down_projections.{i}.1.weight"``.

The same holds inside the blocks of a body (``reset``, ``on_pre``, ``on_post``).  An integration
method named by a compile-time string (``method m`` or ``dv/dt = ... method m`` with ``hyper m: str``)
is replaced by the method it holds.

The result is an ordinary declaration: members are plain names spelled ``h[2]`` (which no
source name can be), so every later stage, error message and weight listing reads naturally.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Callable

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Span

from .discretize import METHODS, unknown_method
from .expressions import ExprBuilder, Val, static
from .ir import DType
from .limits import check_unrolled

Lookup = Callable[[str, Span], "Val | None"]

_DECLARING = (A.Port, A.Param, A.State, A.Let)
_BLOCKS = (A.Reset, A.Event)  # statements holding a block of statements


def member_name(family: str, index) -> str:
    return f"{family}[{index}]"


def _member(n: A.Node) -> bool:
    """Whether ``n`` declares a family member (``let h[k]``, ``param W[k]``, ``state g[k]``)."""
    return isinstance(n, (A.Let, A.Param, A.State)) and n.index is not None


def _needs_resolving(n: A.Node) -> bool:
    """Whether ``n`` is compile-time structure this pass removes."""
    return (isinstance(n, (A.If, A.For)) or _member(n) or (isinstance(n, A.Ode) and n.index is not None)
            or (isinstance(n, A.Param) and n.key is not None and "{" in n.key)
            or (isinstance(n, A.Method) and n.name not in METHODS)
            or (isinstance(n, A.Ode) and n.method is not None and n.method not in METHODS))


def resolve_structure(decl: A.SystemDecl, lookup: Lookup, builder: Callable[[Lookup], ExprBuilder]) -> A.SystemDecl:
    """``decl`` without ``if``, ``for`` or indexed declarations (see the module docstring).

    ``lookup`` finds template arguments, hyperparameters and constants; ``builder`` makes an
    ExprBuilder (which reports located errors) for a lookup."""
    if not any(_needs_resolving(n) for n in A.walk(decl)):
        return decl
    # names a body reads at run time: its declarations, the time, a synapse's pre- and postsynaptic sides
    runtime = {n.name for n in A.walk(decl) if isinstance(n, _DECLARING)} | {"t"}
    if decl.kind == "synapse":
        runtime |= {"pre", "post"}
    return _Unroller(decl, lookup, builder, runtime).run()


class _Unroller:
    def __init__(self, decl: A.SystemDecl, lookup: Lookup, builder, runtime: set[str]):
        self.decl = decl
        self.outer = lookup
        self.builder = builder
        self.runtime = runtime
        self.env: dict[str, object] = {}  # loop variables in scope -> their current item
        self.what = "this"                # what is being evaluated, for the run-time-name error

    # ------------------------------------------------------------ compile-time values
    def lookup(self, name: str, span: Span) -> Val | None:
        if name in self.env:
            return static(self.env[name])
        found = self.outer(name, span)
        if found is None and name.split("[")[0].split(".")[0] in self.runtime:
            if self.what == "an 'if' condition":
                self.b.fail(span, f"an 'if' condition must be a bool known at compile time; '{name}' is a run-time "
                                  "value (use where() to choose between values at run time)")
            self.b.fail(span, f"{self.what} must be known at compile time; '{name}' is declared in {self.decl.name}'s "
                              "body, which is built after loops are unrolled (compile-time values come from "
                              "hyperparameters, file-level lets, template parameters and loop variables)")
        return found

    @property
    def b(self) -> ExprBuilder:
        return self.builder(self.lookup)

    def value(self, e: A.Expr, what: str) -> Val:
        self.what = what
        v = self.b.expr(e)
        if not v.is_static:
            self.b.fail(e.span, f"{what} must be known at compile time")
        return v

    # ------------------------------------------------------------ the pass
    def run(self) -> A.SystemDecl:
        self.check_asserts(self.decl.body)
        body = self.expand(self.decl.body)
        families = self.families(body)
        if families or any(isinstance(s, A.Ode) and s.index is not None for s in body):
            body = tuple(self.rename(s, families) for s in body)
        return replace(self.decl, body=body)

    def check_asserts(self, stmts) -> None:
        """Asserts on compile-time values first: they say why a configuration is invalid better than
        the error its loops would run into (the body's build checks every assert again)."""
        for s in stmts:
            if isinstance(s, A.Assert) and not any(isinstance(n, A.Name) and n.id in self.runtime
                                                   for n in A.walk(s.condition)):
                v = self.value(s.condition, "an assert condition")
                if v.dtype is DType.bool and np.ndim(v.static) == 0 and not v.static:
                    self.b.fail(s.span, f"assertion failed: {s.message or 'condition is false'}")

    def expand(self, stmts) -> tuple:
        """Statements with ``if``/``for`` resolved, loop variables substituted, keys interpolated."""
        out = []
        for s in stmts:
            if isinstance(s, A.If):
                v = self.value(s.condition, "an 'if' condition")
                if v.dtype is not DType.bool or np.ndim(v.static) != 0:
                    self.b.fail(s.condition.span, "an 'if' condition must be a bool known at compile time (from "
                                                  "hyperparameters and template parameters)")
                out.extend(self.expand(s.then if v.static else s.otherwise))
            elif isinstance(s, A.For):
                out.extend(self.loop(s))
            elif isinstance(s, _BLOCKS):
                out.append(replace(self.substitute(replace(s, body=())), body=self.expand(s.body)))
            else:
                out.append(self.substitute(s))
        return tuple(out)

    def loop(self, s: A.For) -> list:
        if s.var in self.env:
            self.b.fail(s.span, f"the loop variable '{s.var}' is already the variable of an enclosing loop")
        if s.var in self.runtime:
            self.b.fail(s.span, f"the loop variable '{s.var}' has the name of a declaration of {self.decl.name}")
        items = self.value(s.items, "the items of a 'for' loop")
        if np.ndim(items.static) != 1:
            self.b.fail(s.items.span, "a 'for' loop runs over a list known at compile time: 'for i in range(n)', "
                                      "'for i in reversed(range(n))', 'for w in [8, 16]'")
        if too_many := check_unrolled("this 'for' loop", len(items.static)):
            self.b.fail(s.items.span, too_many)
        out = []
        for n, item in enumerate(list(items.static)):
            self.env[s.var] = item.item() if isinstance(item, np.generic) else item
            try:
                body = self.expand(s.body)
            finally:
                del self.env[s.var]
            if n == 1:
                self.check_repeatable(body, s)
            out.extend(body)
        return out

    def check_repeatable(self, body, loop: A.For) -> None:
        """A name declared by a loop's body without an index would be declared once per pass."""
        for d in body:
            if isinstance(d, _DECLARING) and not _member(d):
                what = {A.Let: "let", A.Param: "param", A.State: "state"}.get(type(d))
                hint = (f"; make it a family member, '{what} {d.name}[{loop.var}]'" if what else
                        "; declare it outside the loop")
                self.b.fail(d.span, f"'{d.name}' is declared in a 'for' loop without an index, so every pass "
                                    f"would declare it again{hint}")
            if isinstance(d, (A.Box, A.Population, A.Projection)):
                kind = type(d).__name__.lower()
                self.b.fail(d.span, f"a 'for' loop cannot declare a {kind} yet; write each one"
                                    + (", or chain copies with 'repeat'" if isinstance(d, A.Box) else ""))

    def substitute(self, s: A.Stmt) -> A.Stmt:
        """``s`` with each loop variable replaced by its item and ``{...}`` in a weight key filled in."""
        if self.env:
            s = _rebuild(s, self._replace_variable)
        if isinstance(s, A.Param) and s.key is not None and "{" in s.key:
            s = replace(s, key=self.interpolate(s.key, s.span))
        if isinstance(s, A.Method):
            s = replace(s, name=self.method(s.name, s.span))
        if isinstance(s, A.Ode) and s.method is not None:
            s = replace(s, method=self.method(s.method, s.span))
        return s

    def method(self, name: str, span: Span) -> str:
        """The integration method ``name`` stands for: itself, or the method a compile-time string of
        that name holds (a hyperparameter, template parameter or loop variable)."""
        if name in METHODS:
            return name
        v = static(self.env[name]) if name in self.env else self.outer(name, span)
        if v is None:
            self.b.fail(span, unknown_method(name))
        if not isinstance(v.static, str) or v.static not in METHODS:
            self.b.fail(span, f"method {name}: '{name}' is {v.static!r}, not the name of an integration method; "
                              f"the methods are {', '.join(METHODS)}")
        return v.static

    def _replace_variable(self, n: A.Node) -> A.Node:
        if isinstance(n, A.Name) and n.id in self.env:
            item = self.env[n.id]
            if isinstance(item, bool):
                return A.Bool(n.span, item)
            if isinstance(item, str):
                return A.String(n.span, item)
            return A.Number(n.span, item, isinstance(item, int))
        return n

    def interpolate(self, key: str, span: Span) -> str:
        """``"down.{i + 1}.weight"`` -> ``"down.3.weight"``; ``{{`` and ``}}`` are literal braces."""
        from nspec.dsl.parser import parse

        def fill(m: re.Match) -> str:
            if m.group(0) in ("{{", "}}"):
                return m.group(0)[0]
            text = m.group(1)
            module, diags = parse(f"let v = {text}", "<key>")
            if diags or module is None or not text.strip():
                self.b.fail(span, f"weight key \"{key}\": {{{text}}} is not an expression")
            v = self.value(replace(module.items[0].value, span=span), f"{{{text}}} in a weight key")
            if isinstance(v.static, (bool, list, np.ndarray)) or (isinstance(v.static, float) and not v.static.is_integer()):
                self.b.fail(span, f"weight key \"{key}\": {{{text}}} is {v.static!r}; a key takes ints and strings")
            return str(int(v.static)) if isinstance(v.static, float) else str(v.static)

        pattern = r"\{\{|\}\}|\{([^{}]*)\}"
        if any(c in re.sub(pattern, "", key) for c in "{}"):
            self.b.fail(span, f"weight key \"{key}\" has an unmatched brace; write {{{{ or }}}} for a literal one")
        return re.sub(pattern, fill, key)

    # ------------------------------------------------------------ families
    def families(self, body) -> dict[str, set]:
        """Family name -> its member indices; indexed declarations renamed in place."""
        members: dict[str, dict[object, A.Stmt]] = {}
        plain = {s.name: s for s in body if isinstance(s, _DECLARING) and not _member(s)}
        for s in body:
            if not _member(s):
                continue
            k = self.index(s.index, s.name)
            if s.name in plain:
                self.b.fail(s.span, f"'{s.name}' is declared as a plain name (line {plain[s.name].span.line}) and as "
                                    f"a family member {member_name(s.name, k)}")
            if k in members.setdefault(s.name, {}):
                first = members[s.name][k]
                self.b.fail(s.span, f"{member_name(s.name, k)} is declared twice (first on line {first.span.line})")
            members[s.name][k] = s
        return {name: set(ks) for name, ks in members.items()}

    def index(self, e: A.Expr, family: str) -> int:
        v = self.value(e, f"the index of a member of '{family}'")
        if not isinstance(v.static, (int, np.integer)) or isinstance(v.static, bool):
            self.b.fail(e.span, f"the index of a member of '{family}' must be an int, got {v.static!r}")
        return int(v.static)

    def rename(self, s: A.Stmt, families: dict[str, set]) -> A.Stmt:
        def visit(n: A.Node) -> A.Node:
            if isinstance(n, A.Index) and isinstance(n.value, A.Name) and n.value.id in families:
                family, first, rest = n.value.id, n.subscripts[0], n.subscripts[1:]
                if isinstance(first, A.Slice):
                    self.b.fail(first.span, f"'{family}' is a family of names: pick one member, like {family}[0]")
                member = A.Name(n.value.span, self.known_member(family, first, n.span, families))
                return A.Index(n.span, member, rest) if rest else member
            if isinstance(n, A.Name) and n.id in families:
                self.unindexed(n.id, n.span, families)
            if isinstance(n, A.Target) and n.name in families:
                if not n.subscripts or isinstance(n.subscripts[0], A.Slice):
                    self.unindexed(n.name, n.span, families)
                name = self.known_member(n.name, n.subscripts[0], n.span, families)
                return replace(n, name=name, subscripts=n.subscripts[1:])
            return n

        if _member(s):
            s = replace(s, name=member_name(s.name, self.index(s.index, s.name)), index=None)
        if isinstance(s, A.Ode) and s.index is not None:
            if s.var not in families:
                self.b.fail(s.index.span, f"'d{s.var}[...]/dt': '{s.var}' is not a family of states; declare its "
                                          f"members with 'state {s.var}[i]'")
            s = replace(s, var=self.known_member(s.var, s.index, s.index.span, families), index=None)
        elif isinstance(s, A.Ode) and s.var in families:
            self.unindexed(s.var, s.span, families)
        return _rebuild(s, visit)

    def unindexed(self, family: str, span: Span, families: dict[str, set]) -> None:
        self.b.fail(span, f"'{family}' is a family of names, {member_name(family, '...')}: pick one member, "
                          f"like {member_name(family, min(families[family]))}")

    def known_member(self, family: str, index: A.Expr, span: Span, families: dict[str, set]) -> str:
        """The name of member ``family[index]``, which must be declared."""
        k = self.index(index, family)
        if k not in families[family]:
            have = ", ".join(member_name(family, i) for i in sorted(families[family]))
            self.b.fail(span, f"{member_name(family, k)} is not declared; the members of '{family}' are {have}")
        return member_name(family, k)


def _rebuild(n: A.Node, visit: Callable[[A.Node], A.Node]) -> A.Node:
    """``n`` rebuilt bottom-up with ``visit`` applied to every node (parents see rebuilt children).

    An ``Index`` of a family is visited before its children, so ``h[i]`` is replaced as a whole
    rather than ``h`` alone being reported as an unindexed family."""
    if isinstance(n, A.Index) and isinstance(n.value, A.Name):
        replaced = visit(n)
        if replaced is not n:
            return replaced if isinstance(replaced, A.Name) else \
                replace(replaced, subscripts=tuple(_rebuild(x, visit) for x in replaced.subscripts))
    changes = {}
    for f in fields(n):
        if f.name == "span":
            continue
        v = getattr(n, f.name)
        if isinstance(v, A.Node):
            new = _rebuild(v, visit)
        elif isinstance(v, tuple) and any(isinstance(x, A.Node) for x in v):
            new = tuple(_rebuild(x, visit) if isinstance(x, A.Node) else x for x in v)
        else:
            continue
        if new is not v:
            changes[f.name] = new
    if changes:
        n = replace(n, **changes)
    return visit(n)

