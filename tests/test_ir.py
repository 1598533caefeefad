"""The IR's invariants (``verify``), the batching rule, and a golden test of the printer."""

from __future__ import annotations

import numpy as np
import pytest

from nspec.compiler.ir import (DType, Graph, GraphBuilder, IRError, Monitor, Node, Op, Program, Result, Var,
                               batched, print_graph, print_program, verify, verify_program)
from nspec.dsl.diagnostics import Span

f32 = DType.f32


def good_graph() -> Graph:
    g = GraphBuilder()
    x = g.arg("x", "state", f32, (2, 3))
    w = g.arg("w", "param", f32, (3,))
    y = g.add(Op.MUL, (x, w), f32, (2, 3))
    g.result("x", "next", g.add(Op.RESHAPE, (y,), f32, (3, 2)))
    g.result("y", "output", y)
    return g.build()


def with_node(graph: Graph, index: int, node: Node) -> Graph:
    nodes = list(graph.nodes)
    nodes[index] = node
    return Graph(tuple(nodes), graph.results)


def test_a_good_graph_verifies():
    verify(good_graph())


def node_breakers():
    """Broken graphs, built lazily: a node whose attributes do not fit its op fails when it is
    made (its record cannot be built), every other break when the graph is verified."""
    g = good_graph()
    return {
        "input %3 is not defined": lambda: with_node(g, 2, Node(Op.MUL, (0, 3), f32, (2, 3))),
        "input %-1 is not defined": lambda: with_node(g, 2, Node(Op.MUL, (-1, 1), f32, (2, 3))),
        "changes the size": lambda: with_node(g, 3, Node(Op.RESHAPE, (2,), f32, (4, 2))),
        "do not broadcast": lambda: with_node(g, 1, Node(Op.ARG, (), f32, (4,), (("name", "w"), ("role", "param")))),
        r"declared f32\[3, 3\], its signature gives f32\[2, 3\]": lambda: with_node(g, 2, Node(Op.MUL, (0, 1), f32, (3, 3))),
        "bad shape": lambda: with_node(g, 3, Node(Op.RESHAPE, (2,), f32, (-6, -1))),
        r"declared f32\[3\], its signature gives f64\[2\]":
            lambda: with_node(g, 1, Node(Op.CONST, (), f32, (3,), (("value", np.zeros(2)),))),
        "missing .* 'role'": lambda: with_node(g, 1, Node(Op.ARG, (), f32, (3,), (("name", "w"),))),
        r"declared f32\[3, 2\], its signature gives f32\[2, 3\]": lambda: with_node(g, 3, Node(Op.EXP, (2,), f32, (3, 2))),
        "mul takes 2 inputs, got 1": lambda: with_node(g, 2, Node(Op.MUL, (0,), f32, (2, 3))),
        "where's condition must be bool": lambda: with_node(g, 3, Node(Op.WHERE, (0, 1, 2), f32, (3, 2))),
        "missing .* 'body'": lambda: with_node(g, 3, Node(Op.LOOP, (2,), f32, (), (("count", 2),))),
        "axis 5 is out of range for rank 2": lambda: with_node(g, 3, Node(Op.SUM, (2,), f32, (), (("axes", (5,)), ("keepdims", False)))),
    }


@pytest.mark.parametrize("message", list(node_breakers()))
def test_verify_catches_each_broken_node(message):
    with pytest.raises(IRError, match=message):
        verify(node_breakers()[message]())


def test_verify_checks_results_and_loop_bodies():
    g = good_graph()
    with pytest.raises(IRError, match="defined twice"):
        verify(Graph(g.nodes, g.results + (Result("y", "output", 3),)))
    with pytest.raises(IRError, match="does not exist"):
        verify(Graph(g.nodes, (Result("y", "output", 9),)))
    with pytest.raises(ValueError, match="'later' is not a valid ResultKind"):
        Result("y", "later", 2)
    # the same name with two kinds is fine (a state's next value and a record of it)
    verify(Graph(g.nodes, g.results + (Result("y", "value", 2),)))
    bad_body = with_node(good_graph(), 3, Node(Op.RESHAPE, (2,), f32, (5,)))
    loop = Node(Op.LOOP, (0,), f32, (), (("body", bad_body), ("count", 2)))
    with pytest.raises(IRError, match="body.*changes the size"):
        verify(with_node(g, 3, loop))


def program(step: Graph, **changes) -> Program:
    init = GraphBuilder()
    init.result("w", "value", init.const(np.ones(3)))
    init.result("x", "value", init.const(np.zeros((2, 3))))
    fields = dict(name="p", step=step, init=init.build(), params=(Var("w", f32, (3,)),),
                  states=(Var("x", f32, (2, 3)),), inputs=(), outputs=(Var("y", f32, (2, 3)),))
    fields.update(changes)
    return Program(**fields)


def test_verify_program():
    verify_program(program(good_graph()))
    with pytest.raises(IRError, match="not a declared"):
        verify_program(program(good_graph(), params=()))
    with pytest.raises(IRError, match="has no next value"):
        verify_program(program(good_graph(), states=(Var("x", f32, (2, 3)), Var("z", f32, ()))))
    with pytest.raises(IRError, match="is not computed"):
        verify_program(program(good_graph(), outputs=(Var("q", f32, ()),)))
    g = good_graph()
    deriv = Graph(g.nodes, (Result("x", "deriv", 3), Result("y", "output", 2)))
    verify_program(program(deriv))  # before discretisation a state may have a derivative instead


def test_batched_rule():
    g = GraphBuilder()
    w = g.arg("w", "param", f32, (3,))
    c = g.const(2.0)
    wc = g.add(Op.MUL, (w, c), f32, (3,))
    x = g.arg("x", "input", f32, (3,))
    xw = g.add(Op.ADD, (x, wc), f32, (3,))
    s = g.arg("s", "state", f32, (3,))
    assert batched(g.build()) == [False, False, False, True, True, True]
    assert batched(g.build(), {"x"}) == [False, False, False, False, False, True]
    assert xw == 4 and s == 5


def test_builder_deduplicates_pure_nodes_and_small_constants():
    g = GraphBuilder()
    a, b = g.const(1.5), g.const(1.5)
    x = g.arg("x", "input", f32, ())
    assert a == b
    assert g.add(Op.ADD, (x, a), f32, ()) == g.add(Op.ADD, (x, b), f32, ())
    big = np.arange(100.0)
    assert g.const(big) != g.const(big)  # large constants are not hashed


# ---------------------------------------------------------------- golden printer test
def tiny_program() -> Program:
    src = "t.nspec"
    g = GraphBuilder()
    x = g.arg("x", "state", f32, (2,), Span(src, 3, 9))
    u = g.arg("u", "input", f32, (2,))
    a = g.arg("a", "param", f32, ())
    ax = g.add(Op.MUL, (a, x), f32, (2,), span=Span(src, 4, 12))
    g.result("x", "next", g.add(Op.ADD, (ax, u), f32, (2,), span=Span(src, 4, 3)))
    g.result("y", "output", g.add(Op.SUM, (x,), f32, (), (("axes", (0,)), ("keepdims", False))))
    init = GraphBuilder()
    init.result("a", "value", init.const(0.9))
    init.result("x", "value", init.add(Op.RANDOM, (init.const(0.0), init.const(1.0)), f32, (2,),
                                       (("dist", "uniform"),)))
    return Program("leaky", g.build(), init.build(), params=(Var("a", f32, (), unit="1", key="decay"),),
                   states=(Var("x", f32, (2,), unit="V"),), inputs=(Var("u", f32, (2,), unit="V"),),
                   outputs=(Var("y", f32, ()),), monitors=(Monitor("trace", "state", ("x",), None, 10),),
                   dt=1e-4, seed=42)


EXPECTED = """\
program leaky dt=0.0001s seed=42
param a: f32[scalar] [1] key='decay'
state x: f32[2] [V]
input u: f32[2] [V]
output y: f32[scalar]
monitor trace: state x every 10
init:
  %0 = const() value=[0.9] : f32[scalar]
  %1 = const() value=[0.] : f32[scalar]
  %2 = const() value=[1.] : f32[scalar]
  %3 = random(%1, %2) dist='uniform' : f32[2]
  value a = %0
  value x = %3
step:
  %0 = arg() name='x' role='state' : f32[2]  # 3:9
  %1 = arg() name='u' role='input' : f32[2]
  %2 = arg() name='a' role='param' : f32[scalar]
  %3 = mul(%2, %0) : f32[2]  # 4:12
  %4 = add(%3, %1) : f32[2]  # 4:3
  %5 = sum(%0) axes=(0,) keepdims=False : f32[scalar]
  next x = %4
  output y = %5"""


def test_print_program_golden():
    p = tiny_program()
    verify_program(p)
    assert print_program(p) == EXPECTED


def test_print_graph_nests_loop_bodies():
    body = GraphBuilder()
    body.result("h", "next", body.add(Op.NEG, (body.arg("h", "state", f32, ()),), f32, ()))
    g = GraphBuilder()
    loop = g.add(Op.LOOP, (g.const(1.0),), f32, (), (("body", body.build()), ("count", 3), ("carried", ("h",))))
    g.result("h", "output", g.add(Op.ITEM, (loop,), f32, (), (("index", 0),)))
    assert print_graph(g.build()) == """\
%0 = const() value=[1.] : f32[scalar]
%1 = loop(%0) count=3 carried=('h',) : f32[scalar]
    %0 = arg() name='h' role='state' : f32[scalar]
    %1 = neg(%0) : f32[scalar]
    next h = %1
%2 = item(%1) index=0 : f32[scalar]
output h = %2"""


def test_reachable_is_the_roots_and_everything_they_read():
    b = GraphBuilder()
    x = b.arg("x", "input", DType.f32, ())
    y = b.arg("y", "input", DType.f32, ())
    s = b.add(Op.ADD, (x, x), DType.f32, ())
    e = b.add(Op.EXP, (y,), DType.f32, ())
    g = b.build()
    assert g.reachable([s]) == {s, x}
    assert g.reachable([s, e]) == {s, x, e, y}
    assert g.reachable([]) == set()
