"""Source text -> AST, with parse errors reported in the language's own terms.

One LALR(1) parser is built from ``nspec.lark`` and cached.  A small post-lexer makes newlines
statement separators only where a statement can end (not inside brackets, not after an operator
or a comma), so long expressions wrap naturally.  Lark errors become located ``Diagnostic``s;
``ERROR_EXAMPLES`` and ``_diagnose`` name common mistakes in the language's terms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import replace
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .diagnostics import Diagnostic, Span, error
from .transform import SyntaxProblem, ToAst

_OPEN = {"(", "["}
_CLOSE = {")", "]"}
# After these a newline cannot end a statement, so it is a line continuation.
_CONTINUES = {",", "+", "-", "*", "/", "@", "%", "^", "=", "->", "and", "or", "not", "<", ">",
              "<=", ">=", "==", "!=", "+=", "-=", "*=", "/=", "{", ":"}
_SEP = "_SEP"


class StatementBreaks:
    """Post-lexer: drops ``_SEP`` tokens that cannot end a statement and merges repeated ones."""

    always_accept = (_SEP,)

    def process(self, stream):
        # No look-ahead here: the contextual lexer lexes each token in the parser state left by
        # the tokens already yielded, so holding a token back would lex the next one wrongly.
        depth = 0
        prev: Token | None = None
        for tok in stream:
            if tok.type == _SEP:
                if depth > 0 or prev is None or prev.type == _SEP or str(prev) in _CONTINUES:
                    continue
            else:
                value = str(tok)
                if value in _OPEN:
                    depth += 1
                elif value in _CLOSE:
                    depth = max(depth - 1, 0)
            prev = tok
            yield tok


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("nspec.dsl").joinpath("nspec.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=StatementBreaks(),
                propagate_positions=True, maybe_placeholders=True, cache=True)


# Named mistakes: label -> snippets that fail the same way.  A snippet names the statement keyword,
# the LALR state where the parser stops and the token it stops on; an error with the same keyword
# and state gets the label, whatever the nesting depth around it (Lark's match_examples would also
# compare stack depths, and re-parse every snippet on every error).  Lookup order: same keyword,
# state and token; same keyword and state; the same for a statement without keyword; inside
# brackets, same state and token under any keyword.  The first label listed wins a tie.  Labels
# may say {found} (the offending token) and {prev} (the token before it).  Mistakes that depend
# on brackets, keywords or the text around the error have rules in ``_diagnose`` instead.
ERROR_EXAMPLES: dict[str, list[str]] = {
    "missing '=' before {found}: a value is given as 'param w = 1'": [
        "neuron A { param a 1 }",
        "system S { state s 0 }",
        "system S { let x 1 }",
        "let x 1",
        "hyper n 3",
        "test \"t\" { set n 2 }",
        "test \"t\" { input I 2 }",
        "simulate N for 1 s, dt 1 ms",
    ],
    "a differential equation needs a right-hand side: 'dv/dt = ...'": [
        "neuron A { dv/dt }",
        "neuron A { dv/dt v }",
        "neuron A { dv/dt = }",
    ],
    "'spike' needs a condition after 'when': 'spike when v > v_th'": [
        "neuron A { spike v > 1 }",
        "neuron A { spike }",
        "neuron A { spike when }",
    ],
    "a wire connects a source to targets: 'wire a.y -> b.x'": [
        "composite C { wire a.y }",
        "composite C { wire a.y b.x }",
        "composite C { wire x b.x }",
        "composite C { wire -> b.x }",
        "composite C { wire a.y -> }",
        "composite C { wire a.y -> b.x, }",
    ],
    "a port needs a type: 'in x: f32[n]'": [
        "system S { in x }",
        "system S { out y }",
        "system S { in x: }",
        "system S { in x f32 }",
    ],
    "top-level items are declarations (module, import, hyper, let, neuron, synapse, system, "
    "composite, network, workspace, simulate, test), found {found}": [
        "v = 1",
        "param a = 1",
        "state v = 1",
        "dv/dt = 1",
        "box a: B",
        "1",
        "neuron A { }\nv = 1",
        "neuron A { }\nparam a = 1",
        "neuron A { }\n1",
    ],
    "a test needs a name in double quotes: 'test \"fires sparsely\" { ... }'": [
        "test foo { }",
        "test { }",
    ],
    "'simulate' needs a target and a duration: 'simulate Net for 1 s'": [
        "simulate for 1 s",
        "simulate Net",
        "simulate Net 1 s",
        "simulate",
    ],
    "a population needs a neuron type and a size: 'population P: LIF[100]'": [
        "network N { population P: LIF }",
        "network N { population P LIF[4] }",
        "network N { population P: [4] }",
        "network N { population P: LIF(a = 1) }",
    ],
    "a projection needs '->' between its source and target: 'projection e: A -> B'": [
        "network N { projection p: A B }",
        "network N { projection p: A }",
        "network N { projection p: A[0:2] B }",
        "network N { projection p A -> B }",
    ],
    "unknown connection rule {found}: use all_to_all, one_to_one, p = <probability>, "
    "fixed_in_degree <k>, fixed_out_degree <k>, indices(<pre>, <post>) or where <condition>": [
        "network N { projection q: A -> B { connect maybe } }",
        "network N { projection q: A -> B { connect } }",
        "network N { projection q: A -> B { connect 0.1 } }",
    ],
    "a connection probability is written 'connect p = 0.1'": [
        "network N { projection q: A -> B { connect p 0.1 } }",
    ],
    "a box needs ':' and a system: 'box a: Dense(D = 8)'": [
        "composite C { box a Dense }",
        "composite C { box a: }",
        "composite C { box a }",
        "composite C { box a: 3 }",
    ],
    "'expose' needs 'as' and the outer name: 'expose b.h as hidden'": [
        "composite C { expose a.y }",
        "composite C { expose a.y hidden }",
    ],
    "'reset' takes a block of statements: 'reset { v = Vr }'": [
        "neuron A { reset v = 1 }",
        "neuron A { reset }",
    ],
    "'until' needs a bound on the number of ticks: 'until done max 50'": [
        "system S { until x > 1 }",
    ],
    "a slice has at most three parts: 'start:stop:step'": [
        "system S { let x = a[1:2:3:4] }",
    ],
    "a reparameterisation needs 'via' and a function: 'positive via relu', 'bounded(0, 1) via sigmoid'": [
        "system S { param w = 1 positive }",
        "system S { param w = 1 bounded(0, 1) }",
        "system S { param w = 1 positive relu }",
    ],
    "'expect_error' needs the expected message in double quotes: 'expect_error \"cannot add\"'": [
        "test \"t\" { expect_error }",
        "test \"t\" { expect_error foo }",
    ],
    "a message is a string in double quotes: 'assert D > 0, \"D must be positive\"'": [
        "system S { assert x, hello }",
        "test \"t\" { expect x, hello }",
    ],
    "'one_of' takes a list of choices: 'one_of [\"a\", \"b\"]'": [
        "hyper n: int = 1 one_of 1, 2",
        "hyper n: int = 1 one_of",
    ],
    "'import' needs the names to bring in: 'from \"lib/neurons.nspec\" import LIF'": [
        "from \"x.nspec\" import",
        "from \"x.nspec\" import ,",
        "from \"x.nspec\" import A,",
        "from \"x.nspec\" A",
    ],
    "an import path is a string in double quotes: 'import \"lib/neurons.nspec\"'": [
        "import x",
        "from x import y",
        "import",
    ],
    "a declaration's body is a block in braces: 'neuron LIF { ... }'": [
        "system S(D) x",
        "system S(D) = 1",
        "system S(D, N = 2) x",
        "system S() x",
    ],
    "a test's body is a block: 'test \"fires\" { run for 10 ms }'": [
        "test \"t\" run",
        "test \"t\"",
    ],
    "a test block holds run, input, set, let, expect and expect_error statements, not {found}": [
        "test \"t\" { x }",
        "test \"t\" { max(x) }",
        "test \"t\" { 1 }",
        "test \"t\" { in }",
        "test \"t\" { x = 1 }",
    ],
    "'method' needs an integration method: exact, euler, exp_euler or rk4": [
        "neuron N { dv/dt = 1 method }",
        "neuron N { method }",
        "neuron N { dv/dt = 1 method 1 }",
    ],
    "'unless' needs a condition: 'unless refractory'": [
        "neuron N { dv/dt = 1 unless }",
    ],
    "'surrogate' needs a function: 'surrogate fast_sigmoid(25)'": [
        "neuron N { spike when v > 1 surrogate }",
        "neuron N { spike when v > 1 surrogate 25 }",
    ],
    "'record' needs the variables to record: 'record v, ge of P'": [
        "network N { record of P }",
        "network N { record }",
    ],
    "'write' needs 'by' and a rule: 'write by softmax'": [
        "workspace W { write softmax }",
        "workspace W { write }",
    ],
    "a hyperparameter needs a default value: 'hyper n_layer: int = 6'": [
        "hyper n: int",
        "hyper n",
    ],
    "expected a name after '.'": [
        "system S { let x = a. }",
        "system S { let x = a..b }",
        "system S { let x = a.1 }",
        "composite C { wire a. -> b.x }",
    ],
    "a type is expected after ':': f32[n], i64, bool, spike, or a unit such as mV": [
        "system S { let x: = 1 }",
        "system S { param w: = 1 }",
        "system S { state s: = 1 }",
        "hyper n: = 1",
        "system S(D:) { }",
    ],
    "a unit power needs an integer exponent: 'm^2', 's^-1'": [
        "system S { in x: mV^ }",
        "system S { in x: mV^a }",
        "system S { in x: mV^- }",
    ],
    "a unit is expected after {prev}: 'mV/ms', 'nS*mV'": [
        "system S { in x: mV/ }",
        "system S { in x: mV* }",
        "system S { in x: f32 mV/ }",
    ],
    "'merge' needs a rule: sum, max, or, or exclusive": [
        "system S { in x: f32[2] merge }",
        "system S { in x: f32[2] merge 1 }",
    ],
    "'of' needs a population: 'record v of P[0:10]'": [
        "network N { record v of }",
        "network N { record v of 1 }",
    ],
    "an assignment needs '=' and a value after {prev}: 'y = h @ W', 'next S = S + 1', 'ge += w'": [
        "system S { next S }",
        "system S { y }",
        "system S { y 1 }",
        "neuron N { on_pre { ge } }",
        "network N { projection p: A -> B { ge } }",
    ],
    "'if' needs a condition and a block: 'if routing == \"none\" { ... } else { ... }'": [
        "system S { if c\n}",
    ],
    "'else' needs a block or another 'if': 'else { ... }', 'else if c { ... }'": [
        "system S { if c { } else x }",
        "system S { if c { } else }",
    ],
    "'for' needs a loop variable, 'in', a list and a block: 'for i in range(n) { ... }'": [
        "system S { for in range(3) { } }",
        "system S { for i range(3) { } }",
        "system S { for i in range(3)\n}",
        "system S { for }",
        "system S { for 1 in range(3) { } }",
        "system S { for i in { } }",
    ],
    "a family member's index is one expression in brackets: 'let h[i + 1] = ...', 'param W[i]: f32[D]'": [
        "system S { let h[] = 1 }",
        "system S { param W[] : f32 }",
    ],
    "'ticks' needs a count: 'ticks 5'": [
        "system S { ticks }",
    ],
    "a template parameter is a name with an optional type and default: 'system S(D, N = 4)'": [
        "system S(D, ) { }",
        "system S(, D) { }",
        "system S(1) { }",
        "system S(k + 1) { }",
        "system S(k - = 1) { }",
        "system S(k += 1) { }",
    ],
}

_CLOSER = {"(": ")", "[": "]", "{": "}"}
_OPENER = {v: k for k, v in _CLOSER.items()}
_OPENER_TYPES = {"LPAR", "LSQB", "LBRACE"}
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/="}
# Keywords followed by the name they declare or assign; '=' right after one means the name is missing.
_NAMING_KEYWORDS = {"module", "hyper", "let", "param", "state", "next", "in", "out", "box", "population",
                    "projection", "input", "set", "system", "neuron", "synapse", "composite", "network",
                    "workspace"}
_SPECIAL_WORDS = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string in double quotes",
                  _SEP: "a newline or ';'", "DERIV": "'dv/dt'", "$END": "the end of the file"}
_NUMBER = re.compile(r"(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")  # the grammar's NUMBER
_NUMBER_BEFORE = re.compile(r"(?<![A-Za-z_0-9.])(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?[ \t]*$")


@lru_cache(maxsize=1)
def _terminal_words() -> dict[str, str]:
    """Terminal name -> its spelling in a message ("LBRACE" -> "'{'", "NAME" -> "a name")."""
    words = {t.name: f"'{t.pattern.value}'" for t in _parser().terminals if t.pattern.type == "str"}
    words.update(_SPECIAL_WORDS)
    return words


@lru_cache(maxsize=1)
def _statement_starts() -> frozenset[str]:
    """Terminals that begin a statement or a top-level item (keywords such as PARAM, and DERIV)."""
    starts = set()
    for rule in _parser().rules:
        origin = str(rule.origin.name)
        if origin.endswith(("_stmt", "_decl")) or origin in ("import_all", "import_from", "kind", "port_dir",
                                                              "event_kind"):
            if rule.expansion and rule.expansion[0].is_term:
                starts.add(rule.expansion[0].name)
    return frozenset(starts)


@lru_cache(maxsize=1)
def _continuations() -> frozenset[str]:
    """What may follow an operand: operators, including 'in', which also starts an input port."""
    return _accepted_after("let x = a b")


@lru_cache(maxsize=1)
def _top_level_only() -> frozenset[str]:
    """Keywords that start a top-level item but no statement inside a block ('network', 'test', ...)."""
    return _accepted_after("let x = 1\n)") - _accepted_after("system S { )")


def _keyword(tok: Token | None) -> str | None:
    """The keyword a NAME token spells, if it is one that starts a statement ('param', 'reset')."""
    if tok is None or tok.type != "NAME":
        return None
    words = _terminal_words()
    return str(tok) if any(words.get(t) == f"'{tok}'" for t in _statement_starts()) else None


def _accepted_after(prefix: str) -> frozenset[str]:
    """What the parser accepts where ``prefix`` stops being valid."""
    exc = _first_error(prefix)
    return frozenset(_accepted(exc)) if isinstance(exc, UnexpectedToken) else frozenset()


@lru_cache(maxsize=1)
def _expression_start() -> frozenset[str]:
    """The terminals that can begin an operand, wherever one is expected (after '=', '+', '^', ...)."""
    return _accepted_after("let x =") & _accepted_after("let x = 1 +") & _accepted_after("let x = 1 ^")


@lru_cache(maxsize=1)
def _type_start() -> frozenset[str]:
    """The terminals that can begin a type annotation (what the parser accepts after 'let x:')."""
    return _accepted_after("let x:")


def _position(exc: UnexpectedToken):
    return getattr(exc.state, "position", None)


def _accepted(exc: UnexpectedToken) -> set[str]:
    """The terminals the parser state really accepts.

    ``exc.expected`` also lists the post-lexer's always-accepted ``_SEP`` when the contextual
    lexer raised the error, so the parse table is asked directly.
    """
    try:
        return {t for t in exc.state.parse_conf.states[exc.state.position] if t.isupper()}
    except (AttributeError, KeyError, TypeError):
        return set(exc.expected or ())


@lru_cache(maxsize=1)
def _example_table() -> dict[tuple, str]:
    """(statement keyword, parser state, token type or None) -> label, from ``ERROR_EXAMPLES``."""
    table: dict[tuple, str] = {}
    for label, snippets in ERROR_EXAMPLES.items():
        for snippet in snippets:
            exc = _first_error(snippet)
            if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
                exc = _first_error(snippet + "\n")  # as in a file, which ends with a newline
            if isinstance(exc, UnexpectedToken):
                if _after_operand(_accepted(exc)):
                    continue  # the state after an operand is shared by every expression: not a named mistake
                key = (_context(exc), _position(exc))
                table.setdefault((*key, exc.token.type), label)
                table.setdefault((*key, None), label)
                if any(isinstance(v, Token) and v.type in ("LPAR", "LSQB") for v in exc.state.value_stack):
                    # inside brackets the mistake is in an expression, whatever the statement around it
                    table.setdefault(("*", _position(exc), exc.token.type), label)
    return table


def _context(exc: UnexpectedToken) -> str | None:
    """The keyword of the statement being parsed ('wire', 'expose', ...), to tell apart statements
    whose parts share an LALR state."""
    stack = getattr(exc.state, "value_stack", None) or ()
    starts = _statement_starts()
    return next((v.type for v in reversed(stack) if isinstance(v, Token) and v.type in starts), None)


def _first_error(text: str) -> UnexpectedInput | None:
    try:
        _parser().parse(text)
    except UnexpectedInput as exc:
        return exc
    return None


def _after_operand(accepted: set[str]) -> bool:
    """True in a state that has just read an operand (it accepts a binary operator next)."""
    return any(_terminal_words().get(t) in ("'*'", "'@'") for t in accepted)


def _expected_words(expected) -> str:
    """What a parser state accepts, in the language's words: "an expression, ')' or ','"."""
    expected = set(expected)
    words = []
    for group, word in ((_type_start(), "a type"), (_expression_start(), "an expression")):
        if group and group <= expected:
            expected -= group
            words.append(word)
    spelled = _terminal_words()
    named = sorted(spelled[e] for e in expected if e in spelled and spelled[e][0] != "'")
    quoted = sorted(spelled[e] for e in expected if e in spelled and spelled[e][0] == "'")
    tail = [w for w in named if w in ("a newline or ';'", "the end of the file")]
    words += [w for w in named if w not in tail] + quoted + tail
    if len(words) > 7:
        words = words[:6] + ["..."]
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _token_name(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == _SEP:
        return "';'" if str(tok) == ";" else "the end of the line"
    text = str(tok) if len(tok) <= 24 else str(tok)[:20] + "..."
    return f"the string {text}" if tok.type == "STRING" else f"'{text}'"


def _last_leaf(value) -> Token | None:
    """The last token inside a parse-stack value (a token or a partly reduced tree)."""
    while isinstance(value, Tree):
        kids = [c for c in value.children if c is not None]
        if not kids:
            return None
        value = kids[-1]
    return value if isinstance(value, Token) else None


def _end_of(value) -> tuple[int, int] | None:
    """(line, column) just after a parse-stack value."""
    if isinstance(value, Token):
        return (value.end_line, value.end_column) if value.end_line else None
    meta = getattr(value, "meta", None)
    if meta is None or getattr(meta, "empty", True):
        return None
    return meta.end_line, meta.end_column


def _tok_span(path: str, tok: Token) -> Span:
    one_line = tok.end_line == tok.line and tok.end_column and tok.end_column > tok.column
    end = tok.end_column if one_line else tok.column + 1
    return Span(path, tok.line, tok.column, tok.line, end)


def _end_span(path: str, text: str) -> Span:
    body = text.rstrip()
    line = body.count("\n") + 1
    col = len(body) - (body.rfind("\n") + 1) + 1
    return Span(path, line, col, line, col + 1)


def _bad_character(exc: UnexpectedCharacters, text: str, path: str) -> Diagnostic:
    pos = exc.pos_in_stream
    ch = text[pos] if 0 <= pos < len(text) else ""
    span = Span(path, exc.line or 1, exc.column or 1, exc.line or 1, (exc.column or 1) + 1)
    if ch == "'":
        msg = "strings use double quotes: write \"...\", not '...'"
    elif ch == '"':
        msg = "unterminated string: a string must end with '\"' on the same line"
    elif ch in ("&", "|"):
        msg = f"unexpected character '{ch}': write 'and', 'or' and 'not' for logic"
    elif ch == "!":
        msg = "unexpected character '!': write 'not x' for negation and '!=' for inequality"
    elif ch == "\\":
        msg = "a '\\' continues a statement only as the last character of a line"
    elif not ch.isprintable():
        msg = f"unexpected control character U+{ord(ch):04X}" if ch else "unexpected character"
    elif ord(ch) > 127:
        msg = f"unexpected character '{ch}' (U+{ord(ch):04X}): names and operators are ASCII"
    else:
        msg = f"unexpected character '{ch}'"
    return error(span, msg)


def _bad_number(tok: Token, text: str, path: str, expected: set[str]) -> Diagnostic | None:
    """'1.2.3' lexes as '1.2' '.' '3', and '1x' as a number and a unit: say what was meant."""
    if tok.type not in ("NUMBER", "DOT", "NAME") or tok.start_pos is None:
        return None
    line_start = text.rfind("\n", 0, tok.start_pos) + 1
    start = end = tok.start_pos
    while start > line_start and (text[start - 1].isalnum() or text[start - 1] in "._"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] in "._"):
        end += 1
    word = text[start:end]
    number = _NUMBER.match(word)
    if number is None or not word[:1].isdigit() and word[:1] != ".":
        return None
    rest = word[number.end():]
    col = start - line_start + 1
    span = Span(path, tok.line, col, tok.line, col + len(word))
    if rest[:1] == "." or rest[:1].isdigit():
        return error(span, f"malformed number '{word}'")
    if rest and tok.type == "NUMBER" and "NAME" in expected:
        return error(span, f"a name cannot start with a digit: '{word}'")
    return None


@dataclass(frozen=True)
class _Failure:
    """What is known where the parser stopped: the facts every ``_diagnose`` rule reads."""

    exc: UnexpectedToken
    text: str
    path: str
    stack: tuple
    expected: frozenset[str]

    @property
    def tok(self) -> Token:
        return self.exc.token

    @property
    def at_end(self) -> bool:
        return self.tok.type == "$END"

    @property
    def span(self) -> Span:
        return _end_span(self.path, self.text) if self.at_end else _tok_span(self.path, self.tok)

    @property
    def near(self) -> Span:
        """Right after the last token read when the line or file ended first (where something is missing)."""
        end = _end_of(self.stack[-1]) if self.stack else None
        if end is not None and (self.tok.type in (_SEP, "$END") or self.tok.line > end[0]):
            return Span(self.path, end[0], end[1], end[0], end[1] + 1)
        return self.span

    @property
    def got(self) -> str:
        return _token_name(self.tok)

    @property
    def prev(self) -> Token | None:
        return _last_leaf(self.stack[-1]) if self.stack else None

    @property
    def raw_prev(self) -> Token | None:
        """The previous token when no rule has absorbed it yet (a keyword just read, say)."""
        return self.stack[-1] if self.stack and isinstance(self.stack[-1], Token) else None

    @property
    def openers(self) -> list[Token]:
        """Brackets still open: a bracket token stays on the parse stack until its rule is complete."""
        return [v for v in self.stack if isinstance(v, Token) and v.type in _OPENER_TYPES]

    @property
    def at_statement_start(self) -> bool:
        return bool(self.expected & (_statement_starts() - _continuations()))

    def starts_line(self) -> bool:
        start = self.tok.start_pos or 0
        return not self.text[self.text.rfind("\n", 0, start) + 1:start].strip()


def _unclosed(f: _Failure, inner: Token, before: str, span: Span | None = None) -> Diagnostic:
    return error(span or f.span, f"unclosed '{inner}' (opened at {inner.line}:{inner.column}): "
                                 f"expected '{_CLOSER[str(inner)]}' before {before}")


def _quantity_keyword(f: _Failure) -> Diagnostic | None:
    """'20 ms param Vt = ...' reads 'param' as a unit after a number: a separator is missing."""
    prev = f.prev
    if prev is None or _keyword(prev) is None or prev.start_pos is None:
        return None
    if not _NUMBER_BEFORE.search(f.text, 0, prev.start_pos):
        return None
    if f.openers and str(f.openers[-1]) in "([":
        return _unclosed(f, f.openers[-1], f"'{prev}'", _tok_span(f.path, prev))
    return error(_tok_span(f.path, prev), f"missing newline or ';' before '{prev}'")


def _brackets(f: _Failure) -> Diagnostic | None:
    """Unclosed and unmatched brackets: they explain most other symptoms."""
    tok, openers = f.tok, f.openers
    closer = tok.type in ("RPAR", "RSQB", "RBRACE")
    if not openers:
        if closer:
            return error(f.span, f"unmatched {f.got}: " + ("no block is open here" if tok.type == "RBRACE"
                                                           else "no bracket is open here"))
        return None
    inner = openers[-1]
    want = _CLOSER[str(inner)]
    if f.at_end:
        return error(_tok_span(f.path, inner), f"unclosed '{inner}': no matching '{want}' before the end of the file")
    if closer and not any(_CLOSER[str(o)] == str(tok) for o in openers):
        return error(f.span, f"unmatched {f.got}: no '{_OPENER[str(tok)]}' is open here")
    words = _terminal_words()
    raw_prev = f.raw_prev
    if want == "}":
        # 'network' read as a name inside a block: the block before it was never closed
        top_words = {words.get(t) for t in _top_level_only()}
        if raw_prev is not None and raw_prev.type == "NAME" and f"'{raw_prev}'" in top_words:
            return _unclosed(f, inner, f"'{raw_prev}'", _tok_span(f.path, raw_prev))
        breaks_out = tok.type in _top_level_only()
    else:
        if inner.line < tok.line and f.starts_line():
            return _unclosed(f, inner, f.got)  # a new line starts while a bracket of an earlier one is open
        breaks_out = closer or tok.type == "LBRACE" or tok.type in _statement_starts()
    want_type = next((k for k, v in words.items() if v == f"'{want}'"), None)
    return _unclosed(f, inner, f.got) if want_type in f.expected and breaks_out else None


def _number(f: _Failure) -> Diagnostic | None:
    return _bad_number(f.tok, f.text, f.path, f.expected)


def _keyword_misuse(f: _Failure) -> Diagnostic | None:
    """A keyword where a name belongs ('param = 1'), or a keyword used as a name ('spike = x')."""
    kw = f.raw_prev
    if kw is None or kw.type not in _statement_starts() or kw.type == "DERIV":
        return None
    naming = str(kw) in _NAMING_KEYWORDS and not _loop_in(f)
    if str(f.tok) in _ASSIGN_OPS and not naming:
        return error(_tok_span(f.path, kw), f"'{kw}' is a keyword and cannot be assigned; use another name")
    if naming and "NAME" in f.expected and f.tok.type != "NAME":
        return error(f.span, f"missing name after '{kw}'")
    return None


def _loop_in(f: _Failure) -> bool:
    """The 'in' of 'for i in ...' (which names nothing, unlike an input port's 'in')."""
    return len(f.stack) >= 3 and isinstance(f.stack[-3], Token) and f.stack[-3].type == "FOR"


def _missing_separator(f: _Failure) -> Diagnostic | None:
    """A keyword that starts a statement, right where the previous statement could have ended."""
    if f.tok.type in _statement_starts() and not f.at_statement_start and f.expected & {_SEP, "RBRACE", "$END"}:
        return error(f.span, f"missing newline or ';' before {f.got}")
    return None


def _named_example(f: _Failure) -> Diagnostic | None:
    table = _example_table()
    key = (_context(f.exc), _position(f.exc))
    tok = f.tok.type
    # The statement's own keyword first, then statements without one (assignments), then expressions.
    label = next((table[k] for k in ((*key, tok), (*key, None), (None, key[1], tok), (None, key[1], None),
                                     ("*", key[1], tok)) if k in table), None)
    if label is None:
        return None
    prev = f"'{f.prev}'" if f.prev is not None else "the start"
    return error(f.near, label.replace("{found}", f.got).replace("{prev}", prev))


def _in_general(f: _Failure) -> Diagnostic:
    """What the parser state expects, in words."""
    tok, expected, near = f.tok, f.expected, f.near
    if f.at_statement_start and tok.type not in _statement_starts():
        return error(near, f"{f.got} cannot start a statement")
    if str(tok) == "=" and any(_terminal_words().get(t) == "'=='" for t in expected):
        return error(f.span, "'=' assigns; compare with '=='")
    if _expression_start() <= expected:
        after = f" after '{f.prev}'" if f.prev is not None else ""
        return error(near, f"expected an expression{after}, found {f.got}")
    operand = tok.type in ("NAME", "NUMBER", "STRING")
    if f.openers and str(f.openers[-1]) in "([" and "COMMA" in expected and operand:
        return error(near, f"missing ',' or an operator before {f.got}")
    if _SEP in expected and (operand or tok.type == "DERIV"):
        return error(near, f"expected an operator, a newline or ';' before {f.got}")
    words = _expected_words(expected)
    if tok.type == _SEP and str(tok) != ";":
        return error(near, f"the line ends before the statement is complete: expected {words}")
    if f.at_end:
        return error(near, f"the file ends before the statement is complete: expected {words}")
    return error(near, f"unexpected {f.got}; expected {words}")


# The rules of _diagnose, most specific first; the first that recognises the mistake names it.
_RULES = (_quantity_keyword, _brackets, _number, _keyword_misuse, _missing_separator, _named_example)


def _diagnose(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    """One located diagnostic for a syntax error, in the language's terms (see ERROR_EXAMPLES)."""
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(exc, text, path)
    if not isinstance(exc, UnexpectedToken):  # LALR reports the end of the file as a '$END' token
        return error(_end_span(path, text), "the file ends in the middle of a statement")
    f = _Failure(exc, text, path, tuple(getattr(exc.state, "value_stack", None) or ()), frozenset(_accepted(exc)))
    if f.at_end and not f.openers and not text.endswith("\n"):
        # Files end with a newline, and so do the snippets of ERROR_EXAMPLES: diagnose that way.
        again = _first_error(text + "\n")
        if isinstance(again, UnexpectedToken):
            return _diagnose(again, text + "\n", path)
    for rule in _RULES:
        found = rule(f)
        if found is not None:
            return found
    return _in_general(f)


def _within(d: Diagnostic, text: str) -> Diagnostic:
    """The diagnostic with its caret inside the file (at most one past the last character)."""
    lines = text.split("\n")
    line = min(max(d.span.line, 1), len(lines))
    col = min(max(d.span.col, 1), len(lines[line - 1]) + 1)
    if (line, col) == (d.span.line, d.span.col):
        return d
    return replace(d, span=Span(d.span.path, line, col, line, col + 1))


def parse(text: str, path: str = "<string>") -> tuple[A.Module | None, list[Diagnostic]]:
    """Parse one file.  Returns the AST, or ``None`` with the syntax errors found."""
    if "\x00" in text:
        pos = text.index("\x00")
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return None, [error(Span(path, line, col, line, col + 1), "the file contains a NUL byte; nspec specs are text")]
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        return None, [_within(_diagnose(exc, text, path), text)]
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
    try:
        return ToAst(path).transform(tree), []
    except VisitError as exc:
        if isinstance(exc.orig_exc, SyntaxProblem):
            return None, [_within(error(exc.orig_exc.span, exc.orig_exc.message), text)]
        if isinstance(exc.orig_exc, RecursionError):
            return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
        raise
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
