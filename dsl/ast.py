"""The nspec abstract syntax tree: one frozen dataclass per construct, each with a ``span``.

The AST mirrors the grammar (``dsl/nspec.lark``) and carries no semantics: names are unresolved,
units are unparsed, sizes are unevaluated expressions.  ``compiler/`` gives them meaning.
Children are tuples so nodes are hashable and immutable; change them with
``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .diagnostics import Span

node = dataclass(frozen=True, slots=True)


@node
class Node:
    span: Span


# ---------------------------------------------------------------- expressions
@node
class Expr(Node):
    pass


@node
class Number(Expr):
    """A dimensionless literal; ``is_int`` when written without a point or exponent (then ``value`` is
    the exact int, or inf for one of hundreds of digits)."""

    value: int | float
    is_int: bool


@node
class Quantity(Expr):
    """A literal with a unit, ``20 ms``: sugar for ``20 * ms``."""

    value: float
    unit: str


@node
class Name(Expr):
    id: str


@node
class String(Expr):
    value: str


@node
class Bool(Expr):
    value: bool


@node
class ListExpr(Expr):
    items: tuple[Expr, ...]


@node
class Unary(Expr):
    op: str  # "-", "+", "not"
    operand: Expr


@node
class Binary(Expr):
    op: str  # + - * / @ % ^ and or
    left: Expr
    right: Expr


@node
class Compare(Expr):
    """``a < b <= c``: a chain, true when every adjacent pair holds."""

    ops: tuple[str, ...]
    operands: tuple[Expr, ...]


@node
class Kwarg(Node):
    name: str
    value: Expr


@node
class Call(Expr):
    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@node
class Slice(Expr):
    start: Expr | None
    stop: Expr | None
    step: Expr | None


@node
class Index(Expr):
    value: Expr
    subscripts: tuple[Expr, ...]


@node
class Attribute(Expr):
    value: Expr
    name: str


# ---------------------------------------------------------------- types and units
@node
class UnitExpr(Node):
    pass


@node
class UnitAtom(UnitExpr):
    name: str
    exponent: float = 1


@node
class UnitOne(UnitExpr):
    value: float


@node
class UnitBinary(UnitExpr):
    op: str  # "*" or "/"
    left: UnitExpr
    right: UnitExpr


@node
class TensorType(Node):
    """``f32[n, d] mV``; every part optional but at least one present."""

    dtype: str | None
    shape: tuple[Expr, ...] | None
    unit: UnitExpr | None


# ---------------------------------------------------------------- statements in systems
@node
class Stmt(Node):
    pass


@node
class Port(Stmt):
    direction: str  # "in" | "out"
    name: str
    type: TensorType
    merge: str | None
    stack: bool
    batch_axis: float | None = None  # outputs: where a one-step result puts the batch axis


@node
class Reparam(Node):
    """``positive via relu``, ``bounded(lo, hi) via sigmoid``, ``clamp(lo, hi)``."""

    kind: str
    args: tuple[Expr, ...]
    via: str | None


@node
class Param(Stmt):
    name: str
    type: TensorType | None
    init: Expr | None
    flags: tuple[str, ...]
    key: str | None
    reparam: Reparam | None
    index: Expr | None = None  # `param W[i]`: a member of the family W (compiler/unroll.py)


@node
class State(Stmt):
    name: str
    type: TensorType | None
    init: Expr | None
    key: str | None
    learnable: bool
    index: Expr | None = None  # `state g[i]`: a member of the family g (compiler/unroll.py)


@node
class Let(Stmt):
    name: str
    type: TensorType | None
    value: Expr
    index: Expr | None = None  # `let h[i + 1] = ...`: a member of the family h (compiler/unroll.py)


@node
class Target(Node):
    name: str
    subscripts: tuple[Expr, ...]


@node
class Ode(Stmt):
    """``dv/dt = rhs [unless refractory] [method exact]``; ``dg[i]/dt`` for a member of a family of states.

    ``method`` names an integration method, or a compile-time string that holds one (a
    hyperparameter or template parameter; compiler/unroll.py replaces it by its value)."""

    var: str
    rhs: Expr
    unless: str | None
    method: str | None
    index: Expr | None = None  # `dg[i]/dt`: the equation of member g[i] (compiler/unroll.py)


@node
class Next(Stmt):
    target: Target
    value: Expr


@node
class Assign(Stmt):
    target: Target
    value: Expr


@node
class Update(Stmt):
    target: Target
    op: str  # "+=", "-=", "*=", "/="
    value: Expr


@node
class Method(Stmt):
    """``method rk4``: the declaration's default integration method; ``name`` may also be a
    compile-time string holding one (``method method`` with ``hyper method: str = "rk4"``)."""

    name: str


@node
class Surrogate(Node):
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@node
class Spike(Stmt):
    condition: Expr
    surrogate: Surrogate | None


@node
class Reset(Stmt):
    body: tuple[Stmt, ...]


@node
class Refractory(Stmt):
    duration: Expr


@node
class Event(Stmt):
    kind: str  # "on_pre" | "on_post"
    body: tuple[Stmt, ...]


@node
class TypeRef(Node):
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@node
class PopRef(Node):
    name: str
    subscripts: tuple[Expr, ...]
    port: str | None


@node
class Population(Stmt):
    name: str
    neuron: TypeRef
    size: Expr


@node
class Projection(Stmt):
    name: str
    pre: PopRef
    post: PopRef
    via: TypeRef | None
    body: tuple[Stmt, ...]


@node
class Connect(Stmt):
    rule: str  # all_to_all one_to_one prob in_degree out_degree indices where
    args: tuple[Expr, ...]


@node
class Delay(Stmt):
    value: Expr


@node
class Record(Stmt):
    variables: tuple[str, ...]
    of: PopRef | None
    every: Expr | None
    alias: str | None


@node
class Box(Stmt):
    name: str
    system: TypeRef
    count: Expr | None
    repeat: Expr | None
    shared: bool


@node
class PortRef(Node):
    box: str | None  # None for the composite's own port
    port: str
    index: Expr | None


@node
class Wire(Stmt):
    source: PortRef
    targets: tuple[PortRef, ...]


@node
class Expose(Stmt):
    port: PortRef
    alias: str


@node
class Write(Stmt):
    rule: TypeRef


@node
class Slots(Stmt):
    count: Expr


@node
class Ticks(Stmt):
    count: Expr


@node
class Until(Stmt):
    condition: Expr
    bound: Expr


@node
class If(Stmt):
    """``if cond { ... } else { ... }``: a compile-time choice between declarations."""

    condition: Expr
    then: tuple[Stmt, ...]
    otherwise: tuple[Stmt, ...]


@node
class For(Stmt):
    """``for i in range(n) { ... }``: the body repeated at compile time, ``i`` a static int each time."""

    var: str
    items: Expr
    body: tuple[Stmt, ...]


@node
class Assert(Stmt):
    condition: Expr
    message: str | None


# ---------------------------------------------------------------- top level
@node
class TemplateParam(Node):
    name: str
    type: TensorType | None
    default: Expr | None


@node
class SystemDecl(Node):
    kind: str  # system neuron synapse composite network workspace
    name: str
    params: tuple[TemplateParam, ...]
    body: tuple[Stmt, ...]


@node
class ModuleDecl(Node):
    name: str
    doc: str | None


@node
class ImportName(Node):
    name: str
    alias: str | None


@node
class Import(Node):
    """``import "lib/neurons.nspec" [as lib]`` or ``from "..." import A, B as C``."""

    path: str
    alias: str | None
    names: tuple[ImportName, ...] | None


@node
class Auto(Node):
    """``auto`` or ``auto(default)``: a hyperparameter bound by the shapes of the data that use it
    (``compiler/data_dims.py``); ``default`` is its value when no data binds it."""

    default: Expr | None


@node
class Hyper(Node):
    name: str
    type: TensorType | None
    default: Expr | Auto
    choices: tuple[Expr, ...] | None


@node
class Const(Node):
    name: str
    type: TensorType | None
    value: Expr


@node
class Option(Node):
    name: str
    value: Expr


@node
class Simulate(Node):
    target: TypeRef
    duration: Expr
    options: tuple[Option, ...]


@node
class Run(Stmt):
    target: TypeRef | None
    duration: Expr | None
    options: tuple[Option, ...]


@node
class InputStmt(Stmt):
    name: str
    value: Expr


@node
class SetStmt(Stmt):
    name: str
    value: Expr


@node
class Expect(Stmt):
    condition: Expr
    message: str | None


@node
class ExpectError(Stmt):
    fragment: str


@node
class Test(Node):
    name: str
    body: tuple[Stmt, ...]


@node
class Module(Node):
    path: str
    header: ModuleDecl | None
    items: tuple[Node, ...]

    def declarations(self):
        return [i for i in self.items if isinstance(i, SystemDecl)]


def children(n: Node):
    """The AST nodes directly below ``n`` (for generic walks and the AST dump)."""
    for f in fields(n):
        if f.name == "span":
            continue
        v = getattr(n, f.name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, tuple):
            for x in v:
                if isinstance(x, Node):
                    yield x


def walk(n: Node):
    """Pre-order walk of every node under ``n``, ``n`` included."""
    stack = [n]
    while stack:
        cur = stack.pop()
        yield cur
        stack.extend(reversed(list(children(cur))))


def dump(n: Node, indent: int = 0) -> str:
    """A readable, stable, indented dump (``nspec compile --emit ast``)."""
    pad = "  " * indent
    scalars = []
    kids = []
    for f in fields(n):
        if f.name == "span":
            continue
        v = getattr(n, f.name)
        if isinstance(v, Node):
            kids.append((f.name, [v]))
        elif isinstance(v, tuple) and v and all(isinstance(x, Node) for x in v):
            kids.append((f.name, list(v)))
        elif v is not None and v != () and v is not False:
            scalars.append(f"{f.name}={v!r}")
    line = f"{pad}{type(n).__name__}"
    if scalars:
        line += " " + " ".join(scalars)
    line += f"  @{n.span.line}:{n.span.col}"
    out = [line]
    for name, items in kids:
        out.append(f"{pad}  .{name}:")
        out.extend(dump(x, indent + 2) for x in items)
    return "\n".join(out)
