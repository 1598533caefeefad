"""Lark's syntax errors turned into located diagnostics in the language's own terms.

``ERROR_EXAMPLES`` (``error_examples.py``) names common mistakes by example; ``diagnose`` tries a
table of rules (brackets, numbers, keywords, separators, the named examples), most specific
first, then says in general what the parser expected there.  ``parser.parse`` calls
``diagnose`` and ``caret_within``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .diagnostics import Diagnostic, Span, error
from .error_examples import example_table
from .grammar import (SEP, accepted_terminals, continuations, expression_start, first_error, keyword_of, state_position,
                      statement_context, statement_starts, terminal_words, top_level_only, type_start)


_CLOSER = {"(": ")", "[": "]", "{": "}"}
_OPENER = {v: k for k, v in _CLOSER.items()}
_OPENER_TYPES = {"LPAR", "LSQB", "LBRACE"}
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/="}
# Keywords followed by the name they declare or assign; '=' right after one means the name is missing.
_NAMING_KEYWORDS = {"module", "hyper", "let", "param", "state", "next", "in", "out", "box", "population",
                    "projection", "input", "set", "system", "neuron", "synapse", "composite", "network",
                    "workspace"}
_NUMBER = re.compile(r"(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")  # the grammar's NUMBER
_NUMBER_BEFORE = re.compile(r"(?<![A-Za-z_0-9.])(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?[ \t]*$")


def _expected_words(expected) -> str:
    """What a parser state accepts, in the language's words: "an expression, ')' or ','"."""
    expected = set(expected)
    words = []
    for group, word in ((type_start(), "a type"), (expression_start(), "an expression")):
        if group and group <= expected:
            expected -= group
            words.append(word)
    spelled = terminal_words()
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
    if tok.type == SEP:
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
    """What is known where the parser stopped: the facts every ``diagnose`` rule reads."""

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
        if end is not None and (self.tok.type in (SEP, "$END") or self.tok.line > end[0]):
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
        return bool(self.expected & (statement_starts() - continuations()))

    def starts_line(self) -> bool:
        start = self.tok.start_pos or 0
        return not self.text[self.text.rfind("\n", 0, start) + 1:start].strip()


def _unclosed(f: _Failure, inner: Token, before: str, span: Span | None = None) -> Diagnostic:
    return error(span or f.span, f"unclosed '{inner}' (opened at {inner.line}:{inner.column}): "
                                 f"expected '{_CLOSER[str(inner)]}' before {before}")


def _quantity_keyword(f: _Failure) -> Diagnostic | None:
    """'20 ms param Vt = ...' reads 'param' as a unit after a number: a separator is missing."""
    prev = f.prev
    if prev is None or keyword_of(prev) is None or prev.start_pos is None:
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
    words = terminal_words()
    raw_prev = f.raw_prev
    if want == "}":
        # 'network' read as a name inside a block: the block before it was never closed
        top_words = {words.get(t) for t in top_level_only()}
        if raw_prev is not None and raw_prev.type == "NAME" and f"'{raw_prev}'" in top_words:
            return _unclosed(f, inner, f"'{raw_prev}'", _tok_span(f.path, raw_prev))
        breaks_out = tok.type in top_level_only()
    else:
        if inner.line < tok.line and f.starts_line():
            return _unclosed(f, inner, f.got)  # a new line starts while a bracket of an earlier one is open
        breaks_out = closer or tok.type == "LBRACE" or tok.type in statement_starts()
    want_type = next((k for k, v in words.items() if v == f"'{want}'"), None)
    return _unclosed(f, inner, f.got) if want_type in f.expected and breaks_out else None


def _number(f: _Failure) -> Diagnostic | None:
    return _bad_number(f.tok, f.text, f.path, f.expected)


def _keyword_misuse(f: _Failure) -> Diagnostic | None:
    """A keyword where a name belongs ('param = 1'), or a keyword used as a name ('spike = x')."""
    kw = f.raw_prev
    if kw is None or kw.type not in statement_starts() or kw.type == "DERIV":
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
    if f.tok.type in statement_starts() and not f.at_statement_start and f.expected & {SEP, "RBRACE", "$END"}:
        return error(f.span, f"missing newline or ';' before {f.got}")
    return None


def _named_example(f: _Failure) -> Diagnostic | None:
    table = example_table()
    key = (statement_context(f.exc), state_position(f.exc))
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
    if f.at_statement_start and tok.type not in statement_starts():
        return error(near, f"{f.got} cannot start a statement")
    if str(tok) == "=" and any(terminal_words().get(t) == "'=='" for t in expected):
        return error(f.span, "'=' assigns; compare with '=='")
    if expression_start() <= expected:
        after = f" after '{f.prev}'" if f.prev is not None else ""
        return error(near, f"expected an expression{after}, found {f.got}")
    operand = tok.type in ("NAME", "NUMBER", "STRING")
    if f.openers and str(f.openers[-1]) in "([" and "COMMA" in expected and operand:
        return error(near, f"missing ',' or an operator before {f.got}")
    if SEP in expected and (operand or tok.type == "DERIV"):
        return error(near, f"expected an operator, a newline or ';' before {f.got}")
    words = _expected_words(expected)
    if tok.type == SEP and str(tok) != ";":
        return error(near, f"the line ends before the statement is complete: expected {words}")
    if f.at_end:
        return error(near, f"the file ends before the statement is complete: expected {words}")
    return error(near, f"unexpected {f.got}; expected {words}")


# The rules of diagnose, most specific first; the first that recognises the mistake names it.
# The words that start a statement or a declaration: a name close to one of them, followed by
# something an assignment cannot be, is most likely that keyword misspelled.
STATEMENT_KEYWORDS = ("assert", "box", "composite", "const", "delay", "expect", "expose", "for", "from", "hyper",
                      "if", "import", "input", "let", "method", "module", "network", "neuron", "next", "on_post",
                      "on_pre", "param", "population", "projection", "record", "refractory", "reset", "run", "set",
                      "simulate", "spike", "state", "synapse", "system", "test", "ticks", "until", "wire",
                      "workspace")


def _misspelled_keyword(f: _Failure) -> Diagnostic | None:
    """``refactory 2 ms``: a name that reads like a statement keyword, then not an assignment."""
    prev = f.prev
    if prev is None or prev.type != "NAME" or f.at_end or f.tok.line != prev.line or str(f.tok) in ("=", "+=", "-="):
        return None
    close = difflib.get_close_matches(str(prev), STATEMENT_KEYWORDS, n=1, cutoff=0.8)
    if not close or close[0] == str(prev):
        return None
    return error(_tok_span(f.path, prev), f"unknown statement '{prev}': did you mean '{close[0]}'?")


_RULES = (_misspelled_keyword, _quantity_keyword, _brackets, _number, _keyword_misuse, _missing_separator,
          _named_example)


def diagnose(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    """One located diagnostic for a syntax error, in the language's terms (see ERROR_EXAMPLES)."""
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(exc, text, path)
    if not isinstance(exc, UnexpectedToken):  # LALR reports the end of the file as a '$END' token
        return error(_end_span(path, text), "the file ends in the middle of a statement")
    f = _Failure(exc, text, path, tuple(getattr(exc.state, "value_stack", None) or ()), frozenset(accepted_terminals(exc)))
    if f.at_end and not f.openers and not text.endswith("\n"):
        # Files end with a newline, and so do the snippets of ERROR_EXAMPLES: diagnose that way.
        again = first_error(text + "\n")
        if isinstance(again, UnexpectedToken):
            return diagnose(again, text + "\n", path)
    for rule in _RULES:
        found = rule(f)
        if found is not None:
            return found
    return _in_general(f)


def caret_within(d: Diagnostic, text: str) -> Diagnostic:
    """The diagnostic with its caret inside the file (at most one past the last character)."""
    lines = text.split("\n")
    line = min(max(d.span.line, 1), len(lines))
    col = min(max(d.span.col, 1), len(lines[line - 1]) + 1)
    if (line, col) == (d.span.line, d.span.col):
        return d
    return replace(d, span=Span(d.span.path, line, col, line, col + 1))


__all__ = ["diagnose", "caret_within"]
