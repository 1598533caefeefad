"""Lark parse tree -> AST (``dsl/ast.py``): one method per grammar rule, named after the rule."""

from __future__ import annotations

from dataclasses import fields, replace

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from . import ast as A
from .diagnostics import Span


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(tok: str) -> str:
    """A string literal's text: \\n \\t \\r \\" and \\\\ are escapes; any other backslash is kept."""
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_number(text: str) -> tuple[int | float, bool]:
    """The literal's value: an exact int when written without a point or exponent (the elaborator
    checks its range), else a float (one past the float range becomes inf, never an exception)."""
    is_int = not any(c in text for c in ".eE")
    if is_int and len(text) <= _MAX_INT_DIGITS:
        return int(text), True
    return float(text), is_int  # float() of a decimal string never raises; too many digits give inf


_MAX_INT_DIGITS = 400  # longer integer literals are far past i64 and become inf (int() of 4300+ digits raises)


class _Else:
    """An ``else`` that starts its own line, until ``block`` joins it to the ``if`` before it."""

    def __init__(self, span: Span, branch: tuple):
        self.span = span
        self.branch = branch


class SyntaxProblem(Exception):
    """A text the grammar accepts but the language does not (raised while building the AST)."""

    def __init__(self, span: Span, message: str):
        super().__init__(message)
        self.span = span
        self.message = message


@v_args(meta=True)
class ToAst(Transformer):
    """Builds AST nodes; ``path`` goes into every span."""

    def __init__(self, path: str):
        super().__init__(visit_tokens=False)
        self.path = path
        self._else_ifs: set[int] = set()  # ids of the If nodes written as 'else if' (not 'else { if }')

    # ------------------------------------------------------------ spans
    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True) and not hasattr(meta, "line"):
            return Span(self.path, 0, 0)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.path, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column)

    @staticmethod
    def _nodes(children, cls):
        return tuple(c for c in children if isinstance(c, cls))

    # ------------------------------------------------------------ top level
    def start(self, meta, ch):
        header = next((c for c in ch if isinstance(c, A.ModuleDecl)), None)
        items = tuple(c for c in ch if isinstance(c, A.Node) and not isinstance(c, A.ModuleDecl))
        return A.Module(self._span(meta), self.path, header, items)

    def module_decl(self, meta, ch):
        doc = _unquote(ch[1]) if len(ch) > 1 and ch[1] is not None else None
        return A.ModuleDecl(self._span(meta), ch[0], doc)

    def dotted(self, meta, ch):
        return ".".join(str(c) for c in ch)

    def import_all(self, meta, ch):
        alias = str(ch[1]) if len(ch) > 1 else None
        return A.Import(self._span(meta), _unquote(ch[0]), alias, None)

    def import_from(self, meta, ch):
        return A.Import(self._span(meta), _unquote(ch[0]), None, tuple(ch[1:]))

    def import_name(self, meta, ch):
        return A.ImportName(self._span(meta), str(ch[0]), str(ch[1]) if len(ch) > 1 else None)

    def hyper_decl(self, meta, ch):
        name, rest = str(ch[0]), list(ch[1:])
        typ = rest.pop(0) if rest and isinstance(rest[0], A.TensorType) else None
        default = rest.pop(0)
        choices = rest.pop(0) if rest else None
        return A.Hyper(self._span(meta), name, typ, default, choices)

    def auto(self, meta, ch):
        return A.Auto(self._span(meta), ch[0] if ch else None)

    def choices(self, meta, ch):
        return tuple(ch)

    def const_decl(self, meta, ch):
        name, typ, value = self._name_type_value(ch)
        return A.Const(self._span(meta), name, typ, value)

    def _name_type_value(self, ch):
        name = str(ch[0])
        if len(ch) == 3:
            return name, ch[1], ch[2]
        return name, None, ch[1]

    # ------------------------------------------------------------ systems
    def system_decl(self, meta, ch):
        kind, name = ch[0], str(ch[1])
        params = ch[2] if len(ch) == 4 else ()
        return A.SystemDecl(self._span(meta), kind, name, params, ch[-1])

    def kind(self, meta, ch):
        return str(ch[0])

    def template_params(self, meta, ch):
        return tuple(c for c in ch if c is not None)

    def template_param(self, meta, ch):
        name, rest = str(ch[0]), list(ch[1:])
        typ = rest.pop(0) if rest and isinstance(rest[0], A.TensorType) else None
        default = rest.pop(0) if rest else None
        return A.TemplateParam(self._span(meta), name, typ, default)

    def block(self, meta, ch):
        out: list = []
        for c in ch:
            if isinstance(c, _Else):
                last = out[-1] if out else None
                chain = []  # 'if .. else if ..': the 'else' belongs to the last 'if' of the chain
                while isinstance(last, A.If) and len(last.otherwise) == 1 and id(last.otherwise[0]) in self._else_ifs:
                    chain.append(last)
                    last = last.otherwise[0]
                if not isinstance(last, A.If) or last.otherwise:
                    raise SyntaxProblem(c.span, "'else' without an 'if' just before it")
                node = replace(last, otherwise=c.branch)
                for outer in reversed(chain):
                    node = replace(outer, otherwise=(node,))
                    self._else_ifs.add(id(node.otherwise[0]))
                out[-1] = node
            elif isinstance(c, A.Node):
                out.append(c)
        return tuple(out)

    def else_stmt(self, meta, ch):
        if not isinstance(ch[0], tuple):
            self._else_ifs.add(id(ch[0]))
        return _Else(self._span(meta), ch[0] if isinstance(ch[0], tuple) else (ch[0],))

    def port_decl(self, meta, ch):
        direction, name, typ = ch[0], str(ch[1]), ch[2]
        merge = next((c[1] for c in ch[3:] if isinstance(c, tuple) and c[0] == "merge"), None)
        stack = any(c == ("stack",) for c in ch[3:])
        batch_axis = next((c[1] for c in ch[3:] if isinstance(c, tuple) and c[0] == "batch_axis"), None)
        return A.Port(self._span(meta), direction, name, typ, merge, stack, batch_axis)

    def port_dir(self, meta, ch):
        return str(ch[0])

    def merge(self, meta, ch):
        return ("merge", str(ch[0]))

    def stack(self, meta, ch):
        return ("stack",)

    def batch_axis(self, meta, ch):
        return ("batch_axis", float(ch[0]))

    def param_decl(self, meta, ch):
        name, rest = str(ch[0]), list(ch[1:])
        index = rest.pop(0)[1] if rest and isinstance(rest[0], tuple) and rest[0][0] == "member" else None
        typ = rest.pop(0) if rest and isinstance(rest[0], A.TensorType) else None
        init = rest.pop(0) if rest and isinstance(rest[0], A.Expr) else None
        flags = tuple(c[1] for c in rest if c[0] == "flag")
        key = next((c[1] for c in rest if c[0] == "key"), None)
        reparam = next((c[1] for c in rest if c[0] == "reparam"), None)
        return A.Param(self._span(meta), name, typ, init, flags, key, reparam, index)

    def member(self, meta, ch):
        return ("member", ch[0])

    def flag(self, meta, ch):
        return ("flag", str(ch[0]))

    def weight_key(self, meta, ch):
        return ("key", _unquote(ch[0]))

    def learnable_init(self, meta, ch):
        return ("learnable", True)

    def reparam_positive(self, meta, ch):
        return ("reparam", A.Reparam(self._span(meta), "positive", (), str(ch[0])))

    def reparam_bounded(self, meta, ch):
        return ("reparam", A.Reparam(self._span(meta), "bounded", (ch[0], ch[1]), str(ch[2])))

    def reparam_clamp(self, meta, ch):
        return ("reparam", A.Reparam(self._span(meta), "clamp", (ch[0], ch[1]), None))

    def state_decl(self, meta, ch):
        name, rest = str(ch[0]), list(ch[1:])
        index = rest.pop(0)[1] if rest and isinstance(rest[0], tuple) and rest[0][0] == "member" else None
        typ = rest.pop(0) if rest and isinstance(rest[0], A.TensorType) else None
        init = rest.pop(0) if rest and isinstance(rest[0], A.Expr) else None
        key = next((c[1] for c in rest if c[0] == "key"), None)
        learnable = any(c[0] == "learnable" for c in rest)
        return A.State(self._span(meta), name, typ, init, key, learnable, index)

    def let_stmt(self, meta, ch):
        index = ch[1][1] if isinstance(ch[1], tuple) else None
        name, typ, value = self._name_type_value([ch[0]] + list(ch[2 if index is not None else 1:]))
        return A.Let(self._span(meta), name, typ, value, index)

    def ode_stmt(self, meta, ch):
        deriv = ch[0]
        text = str(deriv)
        var = text[1:text.index("/")].strip()
        index = None
        if "[" in var:  # dg[i]/dt: the index is an expression inside the one DERIV token
            var, _, inner = var.partition("[")
            index = self._index_in_token(deriv, inner.rpartition("]")[0], text.index("[") + 1)
        unless = next((c[1] for c in ch[2:] if isinstance(c, tuple) and c[0] == "unless"), None)
        method = next((c[1] for c in ch[2:] if isinstance(c, tuple) and c[0] == "method"), None)
        return A.Ode(self._span(meta), var, ch[1], unless, method, index)

    def _index_in_token(self, tok: Token, text: str, offset: int) -> A.Expr:
        """The expression ``text`` found at ``offset`` characters into ``tok`` (one line), with spans
        in the file."""
        from .grammar import lark_parser

        where = Span(self.path, tok.line, tok.column + offset, tok.line, tok.column + offset + max(len(text), 1))
        prefix = "let v = "
        try:
            items = ToAst(self.path).transform(lark_parser().parse(prefix + text)).items
        except (UnexpectedInput, VisitError):
            items = ()
        if len(items) != 1 or not isinstance(items[0], A.Const):  # a syntax error, or `;` and more
            raise SyntaxProblem(where, f"'{text.strip() or '(empty)'}' is not an index; the member of a family "
                                       "is written like dg[i + 1]/dt")
        value = items[0].value
        shift = tok.column + offset - 1 - len(prefix)

        def moved(n: A.Node) -> A.Node:
            s = n.span
            changes = {"span": Span(self.path, tok.line, s.col + shift, tok.line, s.end_col + shift)}
            for f in fields(n):
                v = getattr(n, f.name)
                if isinstance(v, A.Node) and f.name != "span":
                    changes[f.name] = moved(v)
                elif isinstance(v, tuple) and any(isinstance(x, A.Node) for x in v):
                    changes[f.name] = tuple(moved(x) if isinstance(x, A.Node) else x for x in v)
            return replace(n, **changes)

        return moved(value)

    def unless(self, meta, ch):
        return ("unless", str(ch[0]))

    def ode_method(self, meta, ch):
        return ("method", str(ch[0]))

    def next_stmt(self, meta, ch):
        return A.Next(self._span(meta), ch[0], ch[1])

    def assign_stmt(self, meta, ch):
        return A.Assign(self._span(meta), ch[0], ch[1])

    def update_stmt(self, meta, ch):
        return A.Update(self._span(meta), ch[0], ch[1], ch[2])

    def aug_op(self, meta, ch):
        return str(ch[0])

    def target(self, meta, ch):
        subs = ch[1] if len(ch) > 1 else ()
        return A.Target(self._span(meta), str(ch[0]), subs)

    def method_stmt(self, meta, ch):
        return A.Method(self._span(meta), str(ch[0]))

    def spike_stmt(self, meta, ch):
        return A.Spike(self._span(meta), ch[0], ch[1] if len(ch) > 1 else None)

    def surrogate(self, meta, ch):
        args, kwargs = ch[1] if len(ch) > 1 and ch[1] is not None else ((), ())
        return A.Surrogate(self._span(meta), str(ch[0]), args, kwargs)

    def reset_stmt(self, meta, ch):
        return A.Reset(self._span(meta), ch[0])

    def refractory_stmt(self, meta, ch):
        return A.Refractory(self._span(meta), ch[0])

    def event_stmt(self, meta, ch):
        return A.Event(self._span(meta), ch[0], ch[1])

    def event_kind(self, meta, ch):
        return str(ch[0])

    def population_stmt(self, meta, ch):
        return A.Population(self._span(meta), str(ch[0]), ch[1], ch[2])

    def projection_stmt(self, meta, ch):
        name, pre, post, rest = str(ch[0]), ch[1], ch[2], list(ch[3:])
        via = rest.pop(0) if rest and isinstance(rest[0], A.TypeRef) else None
        body = rest.pop(0) if rest else ()
        return A.Projection(self._span(meta), name, pre, post, via, body)

    def via(self, meta, ch):
        return ch[0]

    def pop_ref(self, meta, ch):
        name, rest = str(ch[0]), list(ch[1:])
        subs = rest.pop(0) if rest and isinstance(rest[0], tuple) else ()
        port = str(rest[0]) if rest else None
        return A.PopRef(self._span(meta), name, subs, port)

    def type_ref(self, meta, ch):
        args, kwargs = ch[1] if len(ch) > 1 and ch[1] is not None else ((), ())
        return A.TypeRef(self._span(meta), str(ch[0]), args, kwargs)

    def connect_stmt(self, meta, ch):
        rule, args = ch[0]
        return A.Connect(self._span(meta), rule, args)

    def conn_all(self, meta, ch):
        return ("all_to_all", ())

    def conn_one(self, meta, ch):
        return ("one_to_one", ())

    def conn_prob(self, meta, ch):
        return ("prob", (ch[0],))

    def conn_in_degree(self, meta, ch):
        return ("in_degree", (ch[0],))

    def conn_out_degree(self, meta, ch):
        return ("out_degree", (ch[0],))

    def conn_indices(self, meta, ch):
        return ("indices", (ch[0], ch[1]))

    def conn_where(self, meta, ch):
        return ("where", (ch[0],))

    def delay_stmt(self, meta, ch):
        return A.Delay(self._span(meta), ch[0])

    def record_stmt(self, meta, ch):
        names = tuple(str(c) for c in ch if isinstance(c, Token))
        of = next((c for c in ch if isinstance(c, A.PopRef)), None)
        every = next((c for c in ch if isinstance(c, A.Expr)), None)
        alias = next((c[1] for c in ch if isinstance(c, tuple)), None)
        return A.Record(self._span(meta), names, of, every, alias)

    def record_alias(self, meta, ch):
        return ("alias", str(ch[0]))

    def box_stmt(self, meta, ch):
        name, sysref, rest = str(ch[0]), ch[1], list(ch[2:])
        repeat = rest.pop() if rest and isinstance(rest[-1], tuple) else None
        count = rest[0] if rest else None
        rep_expr, shared = (repeat if repeat else (None, False))
        return A.Box(self._span(meta), name, sysref, count, rep_expr, shared)

    def repeat(self, meta, ch):
        return (ch[0], len(ch) > 1)

    def shared(self, meta, ch):
        return True

    def wire_stmt(self, meta, ch):
        return A.Wire(self._span(meta), ch[0], tuple(ch[1:]))

    def port_ref(self, meta, ch):
        names = [str(c) for c in ch if isinstance(c, Token)]
        index = next((c for c in ch if isinstance(c, A.Expr)), None)
        box, port = (names[0], names[1]) if len(names) == 2 else (None, names[0])
        return A.PortRef(self._span(meta), box, port, index)

    def expose_stmt(self, meta, ch):
        return A.Expose(self._span(meta), ch[0], str(ch[1]))

    def write_stmt(self, meta, ch):
        return A.Write(self._span(meta), ch[0])

    def slots_stmt(self, meta, ch):
        return A.Slots(self._span(meta), ch[0])

    def ticks_stmt(self, meta, ch):
        return A.Ticks(self._span(meta), ch[0])

    def until_stmt(self, meta, ch):
        return A.Until(self._span(meta), ch[0], ch[1])

    def if_stmt(self, meta, ch):
        otherwise = ()
        if len(ch) > 2:
            otherwise = ch[2] if isinstance(ch[2], tuple) else (ch[2],)
            if not isinstance(ch[2], tuple):
                self._else_ifs.add(id(ch[2]))
        return A.If(self._span(meta), ch[0], ch[1], otherwise)

    def for_stmt(self, meta, ch):
        return A.For(self._span(meta), str(ch[0]), ch[1], ch[2])

    def assert_stmt(self, meta, ch):
        return A.Assert(self._span(meta), ch[0], _unquote(ch[1]) if len(ch) > 1 else None)

    # ------------------------------------------------------------ types
    def type_ann(self, meta, ch):
        return ch[0]

    def tensor_type(self, meta, ch):
        dtype = ch[0]
        shape = next((c for c in ch[1:] if isinstance(c, tuple)), None)
        unit = next((c for c in ch[1:] if isinstance(c, A.UnitExpr)), None)
        return A.TensorType(self._span(meta), dtype, shape, unit)

    def unit_type(self, meta, ch):
        return A.TensorType(self._span(meta), None, None, ch[0])

    def dtype(self, meta, ch):
        return str(ch[0])

    def shape(self, meta, ch):
        return tuple(c for c in ch if c is not None)

    def unit_chain(self, meta, ch):
        left = ch[0]
        for op, right in zip(ch[1::2], ch[2::2]):
            left = A.UnitBinary(self._span(meta), op, left, right)
        return left

    def unit_op(self, meta, ch):
        return str(ch[0])

    def unit_atom(self, meta, ch):
        exponent = float(ch[1]) if len(ch) > 1 else 1.0
        return A.UnitAtom(self._span(meta), str(ch[0]), int(exponent) if exponent.is_integer() else exponent)

    def unit_one(self, meta, ch):
        return A.UnitOne(self._span(meta), float(ch[0]))

    def signed_int(self, meta, ch):
        return "".join(str(c) for c in ch)

    # ------------------------------------------------------------ runs and tests
    def simulate_decl(self, meta, ch):
        return A.Simulate(self._span(meta), ch[0], ch[1], tuple(ch[2:]))

    def option(self, meta, ch):
        return A.Option(self._span(meta), str(ch[0]), ch[1])

    def test_decl(self, meta, ch):
        return A.Test(self._span(meta), _unquote(ch[0]), ch[1])

    def test_block(self, meta, ch):
        return tuple(c for c in ch if isinstance(c, A.Node))

    def run_stmt(self, meta, ch):
        target = next((c for c in ch if isinstance(c, A.TypeRef)), None)
        duration = next((c for c in ch if isinstance(c, A.Expr)), None)
        options = tuple(c for c in ch if isinstance(c, A.Option))
        return A.Run(self._span(meta), target, duration, options)

    def input_stmt(self, meta, ch):
        return A.InputStmt(self._span(meta), str(ch[0]), ch[1])

    def set_stmt(self, meta, ch):
        return A.SetStmt(self._span(meta), str(ch[0]), ch[1])

    def expect_stmt(self, meta, ch):
        return A.Expect(self._span(meta), ch[0], _unquote(ch[1]) if len(ch) > 1 else None)

    def expect_error_stmt(self, meta, ch):
        return A.ExpectError(self._span(meta), _unquote(ch[0]))

    # ------------------------------------------------------------ expressions
    def or_chain(self, meta, ch):
        return self._fold(meta, "or", ch)

    def and_chain(self, meta, ch):
        return self._fold(meta, "and", ch)

    def _fold(self, meta, op, operands):
        left = operands[0]
        for right in operands[1:]:
            left = A.Binary(self._span(meta), op, left, right)
        return left

    def not_(self, meta, ch):
        return A.Unary(self._span(meta), "not", ch[0])

    def compare_chain(self, meta, ch):
        if len(ch) == 1:
            return ch[0]
        return A.Compare(self._span(meta), tuple(ch[1::2]), tuple(ch[0::2]))

    def comp_op(self, meta, ch):
        return str(ch[0])

    def binary_chain(self, meta, ch):
        left = ch[0]
        for op, right in zip(ch[1::2], ch[2::2]):
            span = Span(self.path, left.span.line, left.span.col, right.span.end_line, right.span.end_col)
            left = A.Binary(span, op, left, right)
        return left

    add_op = mul_op = comp_op

    def neg(self, meta, ch):
        return A.Unary(self._span(meta), "-", ch[0])

    def pos(self, meta, ch):
        return A.Unary(self._span(meta), "+", ch[0])

    def power(self, meta, ch):
        if len(ch) == 1:
            return ch[0]
        return A.Binary(self._span(meta), "^", ch[0], ch[1])

    def call(self, meta, ch):
        args, kwargs = ch[1] if ch[1] is not None else ((), ())
        return A.Call(self._span(meta), ch[0], args, kwargs)

    def index(self, meta, ch):
        return A.Index(self._span(meta), ch[0], ch[1])

    def attribute(self, meta, ch):
        return A.Attribute(self._span(meta), ch[0], str(ch[1]))

    def number(self, meta, ch):
        value, is_int = _parse_number(str(ch[0]))
        return A.Number(self._span(meta), value, is_int)

    def quantity(self, meta, ch):
        value, _ = _parse_number(str(ch[0]))
        return A.Quantity(self._span(meta), value, str(ch[1]))

    def name(self, meta, ch):
        return A.Name(self._span(meta), str(ch[0]))

    def string(self, meta, ch):
        return A.String(self._span(meta), _unquote(ch[0]))

    def true(self, meta, ch):
        return A.Bool(self._span(meta), True)

    def false(self, meta, ch):
        return A.Bool(self._span(meta), False)

    def list(self, meta, ch):
        return A.ListExpr(self._span(meta), tuple(c for c in ch if c is not None))

    def args(self, meta, ch):
        first_kw = next((c for c in ch if isinstance(c, A.Kwarg)), None)
        if first_kw is not None:
            late = next((c for c in ch[ch.index(first_kw):] if not isinstance(c, A.Kwarg)), None)
            if late is not None:
                raise SyntaxProblem(late.span, f"a positional argument cannot follow the keyword argument "
                                               f"'{first_kw.name} = ...'; put it before, or name it")
        return (tuple(c for c in ch if not isinstance(c, A.Kwarg)), tuple(c for c in ch if isinstance(c, A.Kwarg)))

    def kwarg(self, meta, ch):
        return A.Kwarg(self._span(meta), str(ch[0]), ch[1])

    def subscripts(self, meta, ch):
        return tuple(ch)

    def slice(self, meta, ch):
        parts = list(ch) + [None] * (3 - len(ch))
        return A.Slice(self._span(meta), parts[0], parts[1], parts[2])

