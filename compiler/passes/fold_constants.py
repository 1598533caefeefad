"""Constant folding and algebraic identities: ``fold_constants(program) -> program`` (pure).

A node whose inputs are all constants becomes a constant, computed by the reference
interpreter's rule for its op (so folding can never disagree with the oracle).  Then two small
rewrite tables remove operations that cannot change a value: a binary op with a neutral or
absorbing constant operand, and structural no-ops (a cast to the same dtype, a double negation).
An elementwise op's operand that is a constant array of one value becomes a scalar constant.

Inputs that a fold or a forward makes unused stay in the graph; ``eliminate_dead_code`` removes
them.  Spans are kept: a folded constant carries the span of the node it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from nspec.compiler.interpret import RULES, Context
from nspec.compiler.ir import ELEMENTWISE_BINARY, DType, Graph, Node, Op, Program, Result

# A folded value may be larger than its inputs (broadcast(0, [4000, 4000])): fold it only up to
# this many elements, or the size of its largest input, so programs never bloat.
FOLD_LIMIT = 1 << 12
NEVER_FOLDED = {Op.CONST, Op.ARG, Op.RANDOM, Op.LOOP, Op.ITEM}

ANY = frozenset(DType)
INTS = frozenset({DType.i32, DType.i64})


@dataclass(frozen=True)
class Fill:
    """A replacement by a constant of the node's shape, every element ``value``."""

    value: float | bool


@dataclass(frozen=True)
class Identity:
    """``op`` whose input ``position`` is a constant equal to ``value`` everywhere becomes
    ``result``: the input of that index, or a ``Fill``.  Only for node dtypes in ``dtypes``."""

    op: Op
    position: int
    value: float | bool
    result: int | Fill
    dtypes: frozenset = ANY


IDENTITIES = (
    Identity(Op.ADD, 1, 0, 0),                      # x+0 -> x (a -0.0 stays -0.0; it compares equal to +0.0)
    Identity(Op.ADD, 0, 0, 1),                      # 0+x -> x
    Identity(Op.SUB, 1, 0, 0),                      # x-0 -> x
    Identity(Op.MUL, 1, 1, 0),                      # x*1 -> x
    Identity(Op.MUL, 0, 1, 1),                      # 1*x -> x
    Identity(Op.DIV, 1, 1, 0),                      # x/1 -> x
    Identity(Op.POW, 1, 1, 0),                      # x^1 -> x
    Identity(Op.POW, 1, 0, Fill(1)),                # x^0 -> 1 (IEEE: pow(nan, 0) = pow(inf, 0) = 1)
    Identity(Op.MUL, 1, 0, Fill(0), INTS),          # x*0 -> 0 only for integers: a float inf or nan times 0 is nan
    Identity(Op.MUL, 0, 0, Fill(0), INTS),          # 0*x -> 0 likewise
    Identity(Op.AND, 1, True, 0),                   # x and true -> x
    Identity(Op.AND, 0, True, 1),                   # true and x -> x
    Identity(Op.AND, 1, False, Fill(False)),        # x and false -> false
    Identity(Op.AND, 0, False, Fill(False)),        # false and x -> false
    Identity(Op.OR, 1, False, 0),                   # x or false -> x
    Identity(Op.OR, 0, False, 1),                   # false or x -> x
    Identity(Op.OR, 1, True, Fill(True)),           # x or true -> true
    Identity(Op.OR, 0, True, Fill(True)),           # true or x -> true
    Identity(Op.WHERE, 0, True, 1),                 # where(true, a, b) -> a
    Identity(Op.WHERE, 0, False, 2),                # where(false, a, b) -> b
)

# Structural no-ops: (op, the new index to forward, given the node and the nodes built so far, or None).
Forward = Callable[[Node, list[Node]], int | None]


def _input(n: Node, nodes: list[Node]) -> Node:
    return nodes[n.inputs[0]]


NO_OPS: tuple[tuple[Op, Forward], ...] = (
    (Op.NEG, lambda n, nodes: _input(n, nodes).inputs[0] if _input(n, nodes).op is Op.NEG else None),  # --x -> x
    (Op.NOT, lambda n, nodes: _input(n, nodes).inputs[0] if _input(n, nodes).op is Op.NOT else None),  # not not x -> x
    (Op.CAST, lambda n, nodes: n.inputs[0]),                       # cast(x: T) to T -> x
    (Op.RESHAPE, lambda n, nodes: n.inputs[0]),                    # reshape to its own shape -> x
    (Op.BROADCAST, lambda n, nodes: n.inputs[0]),                  # broadcast to its own shape -> x
    (Op.TRANSPOSE, lambda n, nodes: n.inputs[0] if tuple(n.attr("perm")) == tuple(range(len(n.shape))) else None),
    #                                                                transpose by (0, 1, ...) -> x
)


def _uniform_value(node: Node):
    """The single value of every element of a constant node, or None."""
    if node.op is not Op.CONST:
        return None
    v = node.attr("value")
    if v.size == 0 or not np.all(v == v.flat[0]):
        return None
    return v.flat[0]


def _fold(node: Node, ins: list[Node]) -> Node | None:
    """``node`` evaluated to a CONST when all its inputs are constants (None if it cannot be)."""
    if node.op in NEVER_FOLDED or not all(i.op is Op.CONST for i in ins):
        return None
    args = [i.attr("value") for i in ins]
    try:
        with np.errstate(all="ignore"):  # log(0) folds to -inf silently, as the run would compute it
            value = np.asarray(RULES[node.op](node, args, [False] * len(args), Context({})), dtype=node.dtype.numpy)
    except (ValueError, TypeError, IndexError, ArithmeticError):
        return None  # e.g. an integer power with a negative exponent: left for the run to report
    if value.shape != node.shape or value.size > max([FOLD_LIMIT] + [a.size for a in args]):
        return None
    return Node(Op.CONST, (), node.dtype, node.shape, (("value", np.array(value)),), node.span)


def _same_type(node: Node, other: Node) -> bool:
    return other.dtype == node.dtype and other.shape == node.shape


def _rewrite(node: Node, nodes: list[Node], random: list[bool]) -> int | Node | None:
    """An identity or a no-op applied to ``node``: the (new) index to forward, a CONST, or None.

    A forward applies only to a node of the same dtype and shape, so broadcasting is never lost.
    An identity never drops an operand that draws random numbers (``random``): the draws after
    it would shift, and an init graph would give different values for the same seed.
    """
    ins = [nodes[j] for j in node.inputs]
    for rule in IDENTITIES:
        if rule.op is not node.op or node.dtype not in rule.dtypes:
            continue
        value = _uniform_value(ins[rule.position])
        if value is None or value != rule.value:
            continue
        if any(random[j] for k, j in enumerate(node.inputs) if k != rule.result):
            continue
        if isinstance(rule.result, Fill):
            filled = np.full(node.shape, rule.result.value, node.dtype.numpy)
            return Node(Op.CONST, (), node.dtype, node.shape, (("value", filled),), node.span)
        if _same_type(node, ins[rule.result]):
            return node.inputs[rule.result]
    for op, forward in NO_OPS:
        if op is node.op:
            target = forward(node, nodes)
            if target is not None and _same_type(node, nodes[target]):
                return target
    return None


BROADCASTING = ELEMENTWISE_BINARY | {Op.WHERE}


def _scalar_operands(n: Node, nodes: list[Node]) -> Node:
    """``n`` (an elementwise op) reading a one-element CONST in place of each operand that is a
    constant of ``n``'s whole shape with one value everywhere, when another operand keeps that
    shape: ``where(spike, [Vr, Vr, ...], v)`` becomes ``where(spike, Vr, v)``.  The value is
    unchanged, and the backends read an immediate instead of a per-element constant buffer (one
    memory stream less in CUBA's fused step loop).  New CONSTs are appended to ``nodes``."""
    if n.op not in BROADCASTING or len(n.shape) == 0:
        return n
    ins = [nodes[j] for j in n.inputs]
    full = [i.shape == n.shape and i.op is not Op.CONST for i in ins]
    if not any(full):
        return n
    inputs = list(n.inputs)
    for k, i in enumerate(ins):
        if i.op is Op.CONST and i.shape == n.shape and i.attr("value").size > 1 and _uniform_value(i) is not None:
            value = np.array(i.attr("value").flat[0], dtype=i.dtype.numpy)
            nodes.append(Node(Op.CONST, (), i.dtype, (), (("value", value),), i.span))
            inputs[k] = len(nodes) - 1
    return replace(n, inputs=tuple(inputs))


def fold_graph(graph: Graph) -> Graph:
    """Fold constants and apply the identities in ``graph`` and in its LOOP bodies."""
    nodes: list[Node] = []
    random: list[bool] = []  # per new node: does its value depend on a RANDOM draw?
    where: list[int] = []  # old index -> new index
    for n in graph.nodes:
        n = replace(n, inputs=tuple(where[j] for j in n.inputs))
        if n.op is Op.LOOP and isinstance(n.attr("body"), Graph):
            body = fold_graph(n.attr("body"))
            n = replace(n, attrs=replace(n.attrs, body=body))
        n = _scalar_operands(n, nodes)
        random += [False] * (len(nodes) - len(random))  # the scalar constants it added draw nothing
        new = _fold(n, [nodes[j] for j in n.inputs])
        if new is None:
            new = _rewrite(n, nodes, random)
        if isinstance(new, int):
            where.append(new)
            continue
        new = new if new is not None else n
        nodes.append(new)
        random.append(new.op is Op.RANDOM or any(random[j] for j in new.inputs))
        where.append(len(nodes) - 1)
    results = tuple(Result(r.name, r.kind, where[r.node]) for r in graph.results)
    return Graph(tuple(nodes), results)


def fold_constants(program: Program) -> Program:
    """``program`` with constants folded and identities applied in its step and init graphs."""
    return replace(program, step=fold_graph(program.step), init=fold_graph(program.init))


__all__ = ["fold_constants", "fold_graph", "IDENTITIES", "NO_OPS", "FOLD_LIMIT"]
