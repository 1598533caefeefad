"""Source text -> AST, with parse errors reported in the language's own terms.

One LALR(1) parser is built from ``nspec.lark`` and cached.  A small post-lexer makes newlines
statement separators only where a statement can end (not inside brackets, not after an operator
or a comma), so long expressions wrap naturally.  Lark errors become located ``Diagnostic``s;
``match_examples`` (``ERROR_EXAMPLES``) names common mistakes.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .diagnostics import Diagnostic, Span, error
from .transform import ToAst

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
                propagate_positions=True, maybe_placeholders=True, cache=False)


# Named mistakes: label -> snippets that fail the same way (Lark's match_examples).
ERROR_EXAMPLES: dict[str, list[str]] = {
    "a statement must end before the next one starts (add a newline or ';')": [
        "neuron A { param a = 1 param b = 2 }",
        "system S { let a = 1 let b = 2 }",
    ],
    "a unit or '*' is missing between a number and a name: write '20 ms' or '2 * x'": [],
    "unbalanced '{': the block is not closed before the end of the file": [
        "neuron A {",
        "neuron A { param a = 1",
        "system S { let a = f(1) \n",
    ],
    "expected an expression after '='": [
        "neuron A { param a = }",
        "system S { let x = }",
        "hyper n = \n",
    ],
    "a declaration needs a name: 'neuron LIF { ... }'": [
        "neuron { }",
        "system { }",
        "composite { }",
    ],
    "a differential equation needs a right-hand side: 'dv/dt = ...'": [
        "neuron A { dv/dt }",
        "neuron A { dv/dt = }",
    ],
    "'spike' needs a condition: 'spike when v > v_th'": [
        "neuron A { spike v > 1 }",
        "neuron A { spike }",
    ],
    "a wire connects a source to targets: 'wire a.y -> b.x'": [
        "composite C { wire a.y }",
        "composite C { wire a.y b.x }",
        "composite C { wire -> b.x }",
    ],
    "a port declaration needs a type: 'in x: f32[n]'": [
        "system S { in x }",
        "system S { out y }",
        "system S { in x: }",
    ],
    "top-level items are declarations (module, import, hyper, let, neuron, system, composite, network, simulate, test)": [
        "v = 1",
        "param a = 1",
        "state v = 1",
    ],
}


def _token_name(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == _SEP:
        return "the end of the line"
    return f"'{tok}'"


def _expected_words(expected) -> str:
    names = {
        "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_SEP": "a newline or ';'",
        "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
        "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "DERIV": "'dv/dt'", "$END": "the end of the file",
    }
    words = sorted({names.get(e, f"'{e.lower()}'" if e.isupper() and not e.startswith("__") else e) for e in expected})
    words = [w for w in words if not w.startswith("__")]
    if len(words) > 6:
        return ", ".join(words[:6]) + ", ..."
    return ", ".join(words)


def _diagnose(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line = getattr(exc, "line", 0) or 1
    col = getattr(exc, "column", 0) or 1
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(path, line, col, line, col + 1)
    label = None
    try:
        label = exc.match_examples(_parser().parse, ERROR_EXAMPLES, use_accepts=True)
    except Exception:  # match_examples re-parses snippets; a failure there must not hide the error
        label = None
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else "?"
        msg = f"unexpected character {ch!r}"
        if ch == "'":
            msg += "; strings use double quotes"
        return error(span, label or msg)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type not in ("$END",):
            end = (tok.end_column or col + 1) if (tok.end_line or line) == line else col + 1
            span = Span(path, line, col, line, end)
        got = _token_name(tok)
        if label:
            return error(span, f"{label} (found {got})")
        return error(span, f"unexpected {got}; expected {_expected_words(exc.expected)}")
    return error(span, label or "the file ends in the middle of a construct")


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
        return None, [_diagnose(exc, text, path)]
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
    try:
        return ToAst(path).transform(tree), []
    except VisitError as exc:
        if isinstance(exc.orig_exc, RecursionError):
            return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
        raise
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
