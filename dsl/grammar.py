"""The LALR(1) parser of ``nspec.lark`` and what its parse table says the language accepts.

One parser is built and cached.  A small post-lexer makes newlines statement separators only
where a statement can end (not inside brackets, not after an operator or a comma), so long
expressions wrap naturally.  The other functions ask the parse table which terminals a state
accepts and spell them in the language's words; ``parse_errors.py`` builds its messages on them.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, UnexpectedToken

_OPEN = {"(", "["}
_CLOSE = {")", "]"}
# After these a newline cannot end a statement, so it is a line continuation.
_CONTINUES = {",", "+", "-", "*", "/", "@", "%", "^", "=", "->", "and", "or", "not", "<", ">",
              "<=", ">=", "==", "!=", "+=", "-=", "*=", "/=", "{", ":"}
SEP = "_SEP"


class StatementBreaks:
    """Post-lexer: drops ``_SEP`` tokens that cannot end a statement and merges repeated ones."""

    always_accept = (SEP,)

    def process(self, stream):
        # No look-ahead here: the contextual lexer lexes each token in the parser state left by
        # the tokens already yielded, so holding a token back would lex the next one wrongly.
        depth = 0
        prev: Token | None = None
        for tok in stream:
            if tok.type == SEP:
                if depth > 0 or prev is None or prev.type == SEP or str(prev) in _CONTINUES:
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
def lark_parser() -> Lark:
    grammar = resources.files("nspec.dsl").joinpath("nspec.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=StatementBreaks(),
                propagate_positions=True, maybe_placeholders=True, cache=True)


_SPECIAL_WORDS = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string in double quotes",
                  SEP: "a newline or ';'", "DERIV": "'dv/dt'", "$END": "the end of the file"}


@lru_cache(maxsize=1)
def terminal_words() -> dict[str, str]:
    """Terminal name -> its spelling in a message ("LBRACE" -> "'{'", "NAME" -> "a name")."""
    words = {t.name: f"'{t.pattern.value}'" for t in lark_parser().terminals if t.pattern.type == "str"}
    words.update(_SPECIAL_WORDS)
    return words


@lru_cache(maxsize=1)
def statement_starts() -> frozenset[str]:
    """Terminals that begin a statement or a top-level item (keywords such as PARAM, and DERIV)."""
    starts = set()
    for rule in lark_parser().rules:
        origin = str(rule.origin.name)
        if origin.endswith(("_stmt", "_decl")) or origin in ("import_all", "import_from", "kind", "port_dir",
                                                              "event_kind"):
            if rule.expansion and rule.expansion[0].is_term:
                starts.add(rule.expansion[0].name)
    return frozenset(starts)


@lru_cache(maxsize=1)
def continuations() -> frozenset[str]:
    """What may follow an operand: operators, including 'in', which also starts an input port."""
    return accepted_after("let x = a b")


@lru_cache(maxsize=1)
def top_level_only() -> frozenset[str]:
    """Keywords that start a top-level item but no statement inside a block ('network', 'test', ...)."""
    return accepted_after("let x = 1\n)") - accepted_after("system S { )")


def keyword_of(tok: Token | None) -> str | None:
    """The keyword a NAME token spells, if it is one that starts a statement ('param', 'reset')."""
    if tok is None or tok.type != "NAME":
        return None
    words = terminal_words()
    return str(tok) if any(words.get(t) == f"'{tok}'" for t in statement_starts()) else None


def accepted_after(prefix: str) -> frozenset[str]:
    """What the parser accepts where ``prefix`` stops being valid."""
    exc = first_error(prefix)
    return frozenset(accepted_terminals(exc)) if isinstance(exc, UnexpectedToken) else frozenset()


@lru_cache(maxsize=1)
def expression_start() -> frozenset[str]:
    """The terminals that can begin an operand, wherever one is expected (after '=', '+', '^', ...)."""
    return accepted_after("let x =") & accepted_after("let x = 1 +") & accepted_after("let x = 1 ^")


@lru_cache(maxsize=1)
def type_start() -> frozenset[str]:
    """The terminals that can begin a type annotation (what the parser accepts after 'let x:')."""
    return accepted_after("let x:")


def state_position(exc: UnexpectedToken):
    return getattr(exc.state, "position", None)


def accepted_terminals(exc: UnexpectedToken) -> set[str]:
    """The terminals the parser state really accepts.

    ``exc.expected`` also lists the post-lexer's always-accepted ``_SEP`` when the contextual
    lexer raised the error, so the parse table is asked directly.
    """
    try:
        return {t for t in exc.state.parse_conf.states[exc.state.position] if t.isupper()}
    except (AttributeError, KeyError, TypeError):
        return set(exc.expected or ())


def statement_context(exc: UnexpectedToken) -> str | None:
    """The keyword of the statement being parsed ('wire', 'expose', ...), to tell apart statements
    whose parts share an LALR state."""
    stack = getattr(exc.state, "value_stack", None) or ()
    starts = statement_starts()
    return next((v.type for v in reversed(stack) if isinstance(v, Token) and v.type in starts), None)


def first_error(text: str) -> UnexpectedInput | None:
    try:
        lark_parser().parse(text)
    except UnexpectedInput as exc:
        return exc
    return None


def after_operand(accepted: set[str]) -> bool:
    """True in a state that has just read an operand (it accepts a binary operator next)."""
    return any(terminal_words().get(t) in ("'*'", "'@'") for t in accepted)


__all__ = ["StatementBreaks", "SEP", "lark_parser", "terminal_words", "statement_starts", "continuations",
           "top_level_only", "keyword_of", "accepted_after", "expression_start", "type_start", "state_position",
           "accepted_terminals", "statement_context", "first_error", "after_operand"]
