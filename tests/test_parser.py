"""The parser: AST shapes of every construct, newline rules, contextual keywords, and syntax-error messages.

ASTs are compared as s-expressions written out by hand here (spans left out, checked separately), so a change in
the grammar or the transformer that alters a tree shows up as a readable difference.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from nspec.dsl import ast as A
from nspec.dsl import parse
from nspec.dsl.diagnostics import SourceMap
from nspec.dsl.parser import ERROR_EXAMPLES

ERRORS = Path(__file__).resolve().parent.parent / "specs" / "errors"
PARSE_ERRORS = sorted(ERRORS.glob("parse_*.nspec"))
_RAW_TERMINALS = re.compile(r"__ANON|\b(?:RBRACE|LBRACE|LPAR|RPAR|LSQB|RSQB|NAME|NUMBER|STRING|DERIV)\b|_SEP|\$END")


def sx(value):
    """An AST as nested tuples: (ClassName, field, ...) without spans."""
    if isinstance(value, A.Node):
        return (type(value).__name__, *(sx(getattr(value, f.name)) for f in fields(value)
                                        if f.name != "span" and not (isinstance(value, (A.Let, A.Param, A.State, A.Ode))
                                                                 and f.name == "index" and value.index is None)))
    if isinstance(value, tuple):
        return tuple(sx(v) for v in value)
    return value


def ok(text: str) -> A.Module:
    module, diags = parse(text, "t.nspec")
    assert not diags, [d.message for d in diags]
    return module


def body(text: str) -> tuple:
    """The statements of the single declaration in ``text``."""
    (decl,) = ok(text).items
    return decl.body


def one(stmt_text: str, kind: str = "system") -> A.Node:
    (stmt,) = body(f"{kind} S {{\n  {stmt_text}\n}}\n")
    return stmt


def expr(text: str):
    return sx(one(f"let e = {text}").value)


def fail(text: str):
    module, diags = parse(text, "t.nspec")
    assert module is None and len(diags) == 1, (module, diags)
    return diags[0]


# ---------------------------------------------------------------- expressions
N = lambda name: ("Name", name)  # noqa: E731
NUM = lambda v: ("Number", float(v), float(v).is_integer() and "." not in str(v))  # noqa: E731


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", ("Binary", "+", N("a"), ("Binary", "*", N("b"), N("c")))),
    ("a - b - c", ("Binary", "-", ("Binary", "-", N("a"), N("b")), N("c"))),
    ("(a + b) * c", ("Binary", "*", ("Binary", "+", N("a"), N("b")), N("c"))),
    ("x @ W % 2", ("Binary", "%", ("Binary", "@", N("x"), N("W")), NUM(2))),
    ("-a ^ 2", ("Unary", "-", ("Binary", "^", N("a"), NUM(2)))),
    ("a ^ -b", ("Binary", "^", N("a"), ("Unary", "-", N("b")))),
    ("+a", ("Unary", "+", N("a"))),
    ("not a and b or c", ("Binary", "or", ("Binary", "and", ("Unary", "not", N("a")), N("b")), N("c"))),
    ("a < b <= c", ("Compare", ("<", "<="), (N("a"), N("b"), N("c")))),
    ("x in [1 mV, 2 mV]",
     ("Compare", ("in",), (N("x"), ("ListExpr", (("Quantity", 1.0, "mV"), ("Quantity", 2.0, "mV")))))),
    ("a == b != c", ("Compare", ("==", "!="), (N("a"), N("b"), N("c")))),
    ("20 ms", ("Quantity", 20.0, "ms")),
    ("1.5e-3", ("Number", 1.5e-3, False)),
    (".5", ("Number", 0.5, False)),
    ("7", ("Number", 7.0, True)),
    ('"a\\"b"', ("String", 'a"b')),
    ("true", ("Bool", True)),
    ("false", ("Bool", False)),
    ("[]", ("ListExpr", ())),
    ("f()", ("Call", N("f"), (), ())),
    ("softmax(x, axis = -1)", ("Call", N("softmax"), (N("x"),), (("Kwarg", "axis", ("Unary", "-", NUM(1))),))),
    ("x[0:3]", ("Index", N("x"), (("Slice", NUM(0), NUM(3), None),))),
    ("x[:, 1]", ("Index", N("x"), (("Slice", None, None, None), NUM(1)))),
    ("x[::2]", ("Index", N("x"), (("Slice", None, None, NUM(2)),))),
    ("x[idx]", ("Index", N("x"), (N("idx"),))),
    ("pre.v", ("Attribute", N("pre"), "v")),
    ("lib.f(x)[0]", ("Index", ("Call", ("Attribute", N("lib"), "f"), (N("x"),), ()), (NUM(0),))),
])
def test_expression_shapes(text, tree):
    assert expr(text) == tree


@pytest.mark.parametrize("text, tree", [
    ("max(a, b)", ("Call", N("max"), (N("a"), N("b")), ())),
    ("where(c, a, b)", ("Call", N("where"), (N("c"), N("a"), N("b")), ())),
    ("p * 2", ("Binary", "*", N("p"), NUM(2))),
    ("state + param", ("Binary", "+", N("state"), N("param"))),
    ("min(x, axis = 0) + in_", ("Binary", "+", ("Call", N("min"), (N("x"),), (("Kwarg", "axis", NUM(0)),)), N("in_"))),
    ("record + delay", ("Binary", "+", N("record"), N("delay"))),
])
def test_keywords_are_names_inside_expressions(text, tree):
    assert expr(text) == tree


def test_keywords_are_names_where_a_name_is_expected():
    assert sx(one("p = 1")) == ("Assign", ("Target", "p", ()), NUM(1))
    assert sx(one("max = 1")) == ("Assign", ("Target", "max", ()), NUM(1))
    assert sx(one("let state = 1")) == ("Let", "state", None, NUM(1))
    assert sx(one("connect p = p", "network").args) == (N("p"),)


# ---------------------------------------------------------------- statements
def test_port_param_state_let():
    assert sx(one("in x: f32[D, 2] mV merge max")) == (
        "Port", "in", "x", ("TensorType", "f32", (N("D"), NUM(2)), ("UnitAtom", "mV", 1)), "max", False, None)
    assert sx(one("out p: f32[C] stack")) == ("Port", "out", "p", ("TensorType", "f32", (N("C"),), None), None, True, None)
    assert sx(one("out h: f32[L, H] batch_axis 1")) == (
        "Port", "out", "h", ("TensorType", "f32", (N("L"), N("H")), None), None, False, 1.0)
    assert sx(one("in I: mV/ms")) == (
        "Port", "in", "I",
        ("TensorType", None, None, ("UnitBinary", "/", ("UnitAtom", "mV", 1), ("UnitAtom", "ms", 1))),
        None, False, None)
    assert sx(one("in r: s^-1")) == ("Port", "in", "r", ("TensorType", None, None, ("UnitAtom", "s", -1)), None, False, None)
    assert sx(one('param W: f32[D, N] = normal(0, 0.02) frozen key "w.weight"')) == (
        "Param", "W", ("TensorType", "f32", (N("D"), N("N")), None),
        ("Call", N("normal"), (NUM(0), NUM(0.02)), ()), ("frozen",), "w.weight", None)
    assert sx(one("param w: f32[N] = 0.5 positive via relu")).__getitem__(-1) == ("Reparam", "positive", (), "relu")
    assert sx(one("param t = 10 bounded(1, 150) via sigmoid learnable"))[-3:] == (
        ("learnable",), None, ("Reparam", "bounded", (NUM(1), NUM(150)), "sigmoid"))
    assert sx(one("param d = 0 clamp(0, 15)"))[-1] == ("Reparam", "clamp", (NUM(0), NUM(15)), None)
    assert sx(one("param tau")) == ("Param", "tau", None, None, (), None, None)
    assert sx(one("state S: f32[N] = start learnable")) == (
        "State", "S", ("TensorType", "f32", (N("N"),), None), N("start"), None, True)
    assert sx(one('state A = 0 key "a"')) == ("State", "A", None, NUM(0), "a", False)
    assert sx(one("let h: f32[D] = relu(x)")) == (
        "Let", "h", ("TensorType", "f32", (N("D"),), None), ("Call", N("relu"), (N("x"),), ()))


def test_equations_and_updates():
    assert sx(one("dv/dt = -v / tau unless refractory method exact", "neuron")) == (
        "Ode", "v", ("Binary", "/", ("Unary", "-", N("v")), N("tau")), "refractory", "exact")
    assert sx(one("dge / dt = 0", "neuron")) == ("Ode", "ge", NUM(0), None, None)
    assert sx(one("next S = S + 1")) == ("Next", ("Target", "S", ()), ("Binary", "+", N("S"), NUM(1)))
    assert sx(one("y[0] = x")) == ("Assign", ("Target", "y", (NUM(0),)), N("x"))
    for op in ("+=", "-=", "*=", "/="):
        assert sx(one(f"ge {op} w", "synapse")) == ("Update", ("Target", "ge", ()), op, N("w"))
    assert sx(one("method rk4", "neuron")) == ("Method", "rk4")


def test_members_of_a_family_of_states_and_their_equations():
    assert sx(one("state g[k + 1]: nS = 0 nS", "neuron")) == (
        "State", "g", ("TensorType", None, None, ("UnitAtom", "nS", 1)), ("Quantity", 0, "nS"), None, False,
        ("Binary", "+", N("k"), NUM(1)))
    ode = one("dg[k + 1]/dt = -g[k + 1] / tau method m", "neuron")
    assert sx(ode) == ("Ode", "g", ("Binary", "/", ("Unary", "-", ("Index", N("g"), (("Binary", "+", N("k"), NUM(1)),))),
                                    N("tau")), None, "m", ("Binary", "+", N("k"), NUM(1)))
    assert (ode.index.span.line, ode.index.span.col, ode.index.left.span.col, ode.index.right.span.col) == (2, 6, 6, 10)
    # inside an expression, `x[i]/dt` stays an index divided by dt
    assert sx(one("y = x[i]/dt"))[-1] == ("Binary", "/", ("Index", N("x"), (N("i"),)), N("dt"))
    module, diags = parse("neuron A {\n  dg[k +]/dt = 0\n}\n", "t.nspec")
    assert module is None and (diags[0].span.line, diags[0].span.col) == (2, 6)
    assert "'k +' is not an index" in diags[0].message


def test_events():
    assert sx(one("spike when v > Vt surrogate fast_sigmoid(25)", "neuron")) == (
        "Spike", ("Compare", (">",), (N("v"), N("Vt"))), ("Surrogate", "fast_sigmoid", (NUM(25),), ()))
    assert sx(one("spike when v > Vt surrogate straight_through", "neuron"))[-1] == (
        "Surrogate", "straight_through", (), ())
    assert sx(one("reset { v = Vr; w += b }", "neuron")) == (
        "Reset", (("Assign", ("Target", "v", ()), N("Vr")), ("Update", ("Target", "w", ()), "+=", N("b"))))
    assert sx(one("refractory 5 ms", "neuron")) == ("Refractory", ("Quantity", 5.0, "ms"))
    assert sx(one("on_pre { ge += w }", "synapse")) == (
        "Event", "on_pre", (("Update", ("Target", "ge", ()), "+=", N("w")),))
    assert sx(one("on_post { }", "synapse")) == ("Event", "on_post", ())


def test_network_statements():
    assert sx(one("population E: LIF(taum = 10 ms)[N * 2]", "network")) == (
        "Population", "E", ("TypeRef", "LIF", (), (("Kwarg", "taum", ("Quantity", 10.0, "ms")),)),
        ("Binary", "*", N("N"), NUM(2)))
    proj = one("projection e: P[0:3200] -> Q.I via STDP(wmax = 0.01) { connect p = 0.02; delay 1.5 ms }", "network")
    assert sx(proj) == (
        "Projection", "e", ("PopRef", "P", (("Slice", NUM(0), NUM(3200), None),), None), ("PopRef", "Q", (), "I"),
        ("TypeRef", "STDP", (), (("Kwarg", "wmax", NUM(0.01)),)),
        (("Connect", "prob", (NUM(0.02),)), ("Delay", ("Quantity", 1.5, "ms"))))
    assert sx(one("projection s: A -> B", "network"))[-2:] == (None, ())
    rules = {
        "all_to_all": ("all_to_all", ()), "one_to_one": ("one_to_one", ()),
        "fixed_in_degree 80": ("in_degree", (NUM(80),)), "fixed_out_degree k": ("out_degree", (N("k"),)),
        "indices(i, j)": ("indices", (N("i"), N("j"))),
        "where i != j": ("where", (("Compare", ("!=",), (N("i"), N("j"))),)),
    }
    for text, (rule, args) in rules.items():
        assert sx(one(f"connect {text}", "network")) == ("Connect", rule, args)
    assert sx(one("record v, ge of P[0:10] every 1 ms as trace", "network")) == (
        "Record", ("v", "ge"), ("PopRef", "P", (("Slice", NUM(0), NUM(10), None),), None),
        ("Quantity", 1.0, "ms"), "trace")
    assert sx(one("record spikes", "network")) == ("Record", ("spikes",), None, None, None)


def test_composition_statements():
    assert sx(one("box layers: BDH(D = 8) repeat 6 shared", "composite")) == (
        "Box", "layers", ("TypeRef", "BDH", (), (("Kwarg", "D", NUM(8)),)), None, NUM(6), True)
    assert sx(one("box cells: LIFCell[100]", "composite")) == (
        "Box", "cells", ("TypeRef", "LIFCell", (), ()), NUM(100), None, False)
    assert sx(one("box r: B repeat 2", "composite"))[-2:] == (NUM(2), False)
    assert sx(one("wire a.y -> b.x, y, ws.write[1]", "composite")) == (
        "Wire", ("PortRef", "a", "y", None),
        (("PortRef", "b", "x", None), ("PortRef", None, "y", None), ("PortRef", "ws", "write", NUM(1))))
    assert sx(one("expose b.h as hidden", "composite")) == ("Expose", ("PortRef", "b", "h", None), "hidden")
    assert sx(one("write by topk(2)", "workspace")) == ("Write", ("TypeRef", "topk", (NUM(2),), ()))
    assert sx(one("slots 1", "workspace")) == ("Slots", NUM(1))
    assert sx(one("ticks 5")) == ("Ticks", NUM(5))
    assert sx(one("until c > 0.9 max 50")) == ("Until", ("Compare", (">",), (N("c"), NUM(0.9))), NUM(50))
    assert sx(one('assert D % 2 == 0, "D must be even"')) == (
        "Assert", ("Compare", ("==",), (("Binary", "%", N("D"), NUM(2)), NUM(0))), "D must be even")


def test_if_blocks():
    assert sx(one('if routing == "none" { param a = 1 } else if deep { } else { state s = 0 }')) == (
        "If", ("Compare", ("==",), (N("routing"), ("String", "none"))), (("Param", "a", None, NUM(1), (), None, None),),
        (("If", N("deep"), (), (("State", "s", None, NUM(0), None, False),)),))
    assert sx(one("if deep { }")) == ("If", N("deep"), (), ())


# One example per statement rule of the grammar: a rule added without a test here fails the coverage check.
STATEMENTS = {
    "port_decl": ("system", "in x: f32", A.Port), "param_decl": ("system", "param w = 1", A.Param),
    "state_decl": ("system", "state s = 0", A.State), "let_stmt": ("system", "let h = x", A.Let),
    "ode_stmt": ("neuron", "dv/dt = -v", A.Ode), "next_stmt": ("system", "next s = s", A.Next),
    "assign_stmt": ("system", "y = x", A.Assign), "update_stmt": ("synapse", "w += 1", A.Update),
    "method_stmt": ("neuron", "method euler", A.Method), "spike_stmt": ("neuron", "spike when v > 1", A.Spike),
    "reset_stmt": ("neuron", "reset { v = 0 }", A.Reset),
    "refractory_stmt": ("neuron", "refractory 2 ms", A.Refractory),
    "event_stmt": ("synapse", "on_pre { g += w }", A.Event),
    "population_stmt": ("network", "population P: L[2]", A.Population),
    "projection_stmt": ("network", "projection e: P -> P", A.Projection),
    "connect_stmt": ("network", "connect all_to_all", A.Connect), "delay_stmt": ("network", "delay 1 ms", A.Delay),
    "record_stmt": ("network", "record v of P", A.Record), "box_stmt": ("composite", "box a: D", A.Box),
    "wire_stmt": ("composite", "wire a.y -> b.x", A.Wire), "expose_stmt": ("composite", "expose a.y as z", A.Expose),
    "write_stmt": ("workspace", "write by softmax", A.Write), "slots_stmt": ("workspace", "slots 1", A.Slots),
    "ticks_stmt": ("system", "ticks 3", A.Ticks), "until_stmt": ("system", "until c max 3", A.Until),
    "assert_stmt": ("system", "assert D > 0", A.Assert), "if_stmt": ("system", "if c { }", A.If),
    "for_stmt": ("system", "for i in range(3) { }", A.For), "else_stmt": ("system", "if c { }\nelse { }", A.If),
    "run_stmt": ("test", "run for 1 ms", A.Run), "input_stmt": ("test", "input I = 1", A.InputStmt),
    "set_stmt": ("test", "set n = 2", A.SetStmt), "expect_stmt": ("test", "expect x > 0", A.Expect),
    "expect_error_stmt": ("test", 'expect_error "no"', A.ExpectError),
    "module_decl": ("top", "module m", A.ModuleDecl), "import_all": ("top", 'import "a.nspec"', A.Import),
    "import_from": ("top", 'from "a.nspec" import B', A.Import), "hyper_decl": ("top", "hyper n = 1", A.Hyper),
    "const_decl": ("top", "let c = 1", A.Const), "system_decl": ("top", "system S { }", A.SystemDecl),
    "simulate_decl": ("top", "simulate S for 1 s", A.Simulate), "test_decl": ("top", 'test "t" { }', A.Test),
}


def test_every_statement_rule_has_an_example():
    from nspec.dsl.grammar import lark_parser

    rules = {str(r.origin.name) for r in lark_parser().rules}
    statement_rules = {r for r in rules if r.endswith(("_stmt", "_decl")) and not r.startswith("_")
                       or r in ("import_all", "import_from")}
    assert statement_rules == set(STATEMENTS)


@pytest.mark.parametrize("rule", sorted(STATEMENTS))
def test_statement_example_builds_its_node(rule):
    kind, text, cls = STATEMENTS[rule]
    if kind == "top":
        module = ok(text + "\n")
        node = module.header if cls is A.ModuleDecl else module.items[0]
    elif kind == "test":
        (node,) = ok(f'test "t" {{ {text} }}').items[0].body
    else:
        node = one(text, kind)
    assert type(node) is cls
    assert node.span.line >= 1 and node.span.col >= 1


def test_top_level_items():
    module = ok('module cuba.net "the CUBA network"\n'
                'import "lib/neurons.nspec"\n'
                'import "x.nspec" as x\n'
                'from "std/synapses.nspec" import ExpCurrent, STDP as Stdp\n'
                'hyper n_layer: int = 6\n'
                'hyper routing: str = "none" one_of ["none", "random"]\n'
                "let width = 2 * n_layer\n"
                "system S(D, N = 4, tau: f32 ms = 5 ms) { }\n"
                "simulate Net(n = 2) for 1 s, dt = 0.1 ms, seed = 42\n")
    assert sx(module.header) == ("ModuleDecl", "cuba.net", "the CUBA network")
    assert [sx(i) for i in module.items] == [
        ("Import", "lib/neurons.nspec", None, None),
        ("Import", "x.nspec", "x", None),
        ("Import", "std/synapses.nspec", None, (("ImportName", "ExpCurrent", None), ("ImportName", "STDP", "Stdp"))),
        ("Hyper", "n_layer", ("TensorType", "int", None, None), NUM(6), None),
        ("Hyper", "routing", ("TensorType", "str", None, None), ("String", "none"),
         (("String", "none"), ("String", "random"))),
        ("Const", "width", None, ("Binary", "*", NUM(2), N("n_layer"))),
        ("SystemDecl", "system", "S", (("TemplateParam", "D", None, None), ("TemplateParam", "N", None, NUM(4)),
                                       ("TemplateParam", "tau", ("TensorType", "f32", None, ("UnitAtom", "ms", 1)),
                                        ("Quantity", 5.0, "ms"))), ()),
        ("Simulate", ("TypeRef", "Net", (), (("Kwarg", "n", NUM(2)),)), ("Quantity", 1.0, "s"),
         (("Option", "dt", ("Quantity", 0.1, "ms")), ("Option", "seed", NUM(42)))),
    ]
    kinds = [d.kind for d in ok("\n".join(f"{k} X{i} {{ }}" for i, k in enumerate(
        ["system", "neuron", "synapse", "composite", "network", "workspace"]))).declarations()]
    assert kinds == ["system", "neuron", "synapse", "composite", "network", "workspace"]


def test_test_blocks():
    (t,) = ok('test "fires" {\n  run CUBA for 200 ms, seed = 3\n  run for 10 ms\n  run\n  set n_layer = 2\n'
              '  input I = 0.5 nA\n  let r = mean_rate(P)\n  expect r in [2 Hz, 12 Hz], "sparse"\n'
              '  expect_error "cannot add"\n}\n').items
    assert sx(t) == ("Test", "fires", (
        ("Run", ("TypeRef", "CUBA", (), ()), ("Quantity", 200.0, "ms"), (("Option", "seed", NUM(3)),)),
        ("Run", None, ("Quantity", 10.0, "ms"), ()),
        ("Run", None, None, ()),
        ("SetStmt", "n_layer", NUM(2)),
        ("InputStmt", "I", ("Quantity", 0.5, "nA")),
        ("Let", "r", None, ("Call", N("mean_rate"), (N("P"),), ())),
        ("Expect", ("Compare", ("in",), (N("r"), ("ListExpr", (("Quantity", 2.0, "Hz"), ("Quantity", 12.0, "Hz"))))),
         "sparse"),
        ("ExpectError", "cannot add"),
    ))


def test_spans_point_at_the_source():
    text = "neuron LIF {\n  param tau = 20 ms\n  dv/dt = (El - v) / tau\n}\n"
    (decl,) = ok(text).items
    param, ode = decl.body
    assert (decl.span.line, decl.span.col) == (1, 1)
    assert (param.span.line, param.span.col, param.span.end_line, param.span.end_col) == (2, 3, 2, 20)
    assert (param.init.span.line, param.init.span.col, param.init.span.end_col) == (2, 15, 20)
    assert (ode.span.line, ode.span.col) == (3, 3)
    rhs = ode.rhs
    assert (rhs.span.line, rhs.span.col, rhs.span.end_col) == (3, 12, 25)  # a binary operation spans its operands
    assert (rhs.right.span.col, rhs.right.span.end_col) == (22, 25)
    assert all(n.span.path == "t.nspec" and n.span.line >= 1 for n in A.walk(ok(text)))


# ---------------------------------------------------------------- statement separators and continuations
def test_newlines_inside_brackets_and_after_operators_continue_the_statement():
    wrapped = body("system S {\n  let y = f(a,\n           b)\n  let z = a +\n      b *\n      c\n"
                   "  let w = [1,\n   2]\n  let q = x[0,\n   1]\n}\n")
    flat = body("system S { let y = f(a, b); let z = a + b * c; let w = [1, 2]; let q = x[0, 1] }")
    assert sx(wrapped) == sx(flat)


def test_separators_comments_blank_lines_and_backslash():
    text = ("# a comment line\n\nsystem S {   # trailing comment\n\n  let a = 1; let b = 2  # two on one line\n"
            "  ;\n  let c = a \\\n    + b\n}\n\n")
    assert sx(body(text)) == (("Let", "a", None, NUM(1)), ("Let", "b", None, NUM(2)),
                              ("Let", "c", None, ("Binary", "+", N("a"), N("b"))))
    crlf = "system S {\r\n  let a = 1\r\n  let b = 2\r\n}\r\n"
    assert sx(body(crlf)) == sx(body("system S { let a = 1; let b = 2 }"))
    assert ok("").items == () and ok("\n\n# only a comment\n").items == ()


def test_a_newline_ends_a_statement():
    d = fail("system S {\n  let y = a\n  b\n}\n")
    assert (d.span.line, d.span.col) == (3, 4) and "needs '=' and a value after 'b'" in d.message


# ---------------------------------------------------------------- syntax errors
def _annotation(path: Path) -> tuple[int, int, str]:
    line, col, fragment = re.fullmatch(rb"# expect: (\d+):(\d+): (.+)", path.read_bytes().split(b"\n", 1)[0]).groups()
    return int(line), int(col), fragment.decode()


@pytest.mark.parametrize("path", PARSE_ERRORS, ids=lambda p: p.stem)
def test_corpus_parse_error(path: Path):
    """Each ``specs/errors/parse_*`` file through the parser alone (test_errors.py runs the whole checker)."""
    from nspec.compiler.driver import parse_file

    line, col, fragment = _annotation(path)
    sources = SourceMap()
    module, diags = parse_file(path, sources)
    assert module is None and len(diags) == 1
    d = diags[0]
    assert (d.span.line, d.span.col) == (line, col), d.render(sources)
    assert all(piece in d.message for piece in fragment.split(" ... ")), d.render(sources)
    assert not _RAW_TERMINALS.search(d.message), d.message


def test_corpus_has_every_parse_error_kind():
    assert len(PARSE_ERRORS) >= 40


@pytest.mark.parametrize("label, snippet", [(label, s) for label, snippets in ERROR_EXAMPLES.items()
                                            for s in snippets])
def test_every_error_example_gets_its_label(label, snippet):
    """A snippet that another rule or label claims first would be dead weight in the table."""
    pattern = re.escape(label).replace(re.escape("{found}"), ".+").replace(re.escape("{prev}"), ".+")
    assert re.fullmatch(pattern, fail(snippet).message)


@pytest.mark.parametrize("text", [
    "let x = [1 2]", "let x = f(a b)", "let x = 1 2", "system S { in x: f32 ) }", "let x: f32",
    "system S { let y = a b }", "composite C { box a: Dense 3 }", "network N { population P: LIF[1] 2 }",
])
def test_generic_mistakes_get_no_construct_label(text):
    """States shared by every expression must not be claimed by one construct's label."""
    message = fail(text).message
    assert not any(message == label or message.startswith(label.split("{")[0]) for label in ERROR_EXAMPLES
                   if not label.startswith("{")), message


@pytest.mark.parametrize("text, where, message", [
    ("let x = (1 + 2]", (1, 15), "unmatched ']': no '[' is open here"),
    ("let x = f(1, 2\nlet y = 3", (2, 1), "unclosed '(' (opened at 1:10): expected ')' before 'let'"),
    ("let x = 1 +", (1, 12), "expected an expression after '+', found the end of the file"),
    ("system S { let x = 1 }\n}", (2, 1), "unmatched '}': no block is open here"),
    ("system S {\n  in x: f32\n  param = 1\n}", (3, 9), "missing name after 'param'"),
    ("system S {\n  next = 1\n}", (2, 8), "missing name after 'next'"),
    ("system S {\n  reset = 1\n}", (2, 3), "'reset' is a keyword and cannot be assigned"),
    ("system S { state v = 0 mV state w = 1 }", (1, 27), "missing newline or ';' before 'state'"),
    ("neuron N { spike when v > 1 reset { v = 0 } }", (1, 29), "missing newline or ';' before 'reset'"),
    ("let x = 1..2", (1, 9), "malformed number '1..2'"),
    ("let x = \"a", (1, 9), "unterminated string"),
    ("let x = a | b", (1, 11), "write 'and', 'or' and 'not'"),
    ("let x = 1\r", (1, 10), "unexpected control character U+000D"),
    ("let x = \x00", (1, 9), "NUL byte"),
    ("hyper n: int", (1, 13), "a hyperparameter needs a default value"),
])
def test_syntax_error_messages(text, where, message):
    d = fail(text)
    assert (d.span.line, d.span.col) == where, d
    assert message in d.message
    assert not _RAW_TERMINALS.search(d.message), d.message


@pytest.mark.parametrize("depth", [200, 5000])
@pytest.mark.parametrize("open_, close", [("(", ")"), ("[", "]"), ("f(", ")"), ("-", "")])
def test_deep_nesting_is_a_diagnostic_not_a_crash(depth, open_, close):
    for text in (f"let x = {open_ * depth}1{close * depth}\n", f"let x = {open_ * depth}1\n"):
        module, diags = parse(text, "t.nspec")
        assert module is not None or (diags and all(d.span.line >= 1 and d.span.col >= 1 for d in diags))


@pytest.mark.parametrize("text", [
    "let x = " + "9" * 400,          # an integer literal too large for a float
    "let x = " + "9" * 5000,         # ... and beyond Python's int-from-string digit limit
    'let x = "\\x"',                 # a truncated escape in a string
    'let x = "\\N{nope}"',           # an unknown named escape
    "system S { in I: mV^1.5 }",     # a unit exponent that is not an integer
], ids=["int-400-digits", "int-5000-digits", "truncated-escape", "unknown-named-escape", "fractional-unit-power"])
def test_bad_literals_are_diagnostics_not_crashes(text):
    module, diags = parse(text, "t.nspec")
    assert module is not None or (diags and all(d.span.line >= 1 and d.span.col >= 1 for d in diags))


def test_escapes_keep_non_ascii_text():
    assert expr('"\u00e9\\n"') == ("String", "\u00e9\n")
