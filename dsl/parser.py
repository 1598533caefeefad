"""Source text -> AST, with parse errors reported in the language's own terms.

The LALR(1) parser and its post-lexer are in ``grammar.py``; Lark errors become located
``Diagnostic``s in ``parse_errors.py``, which names common mistakes in the language's terms
(``ERROR_EXAMPLES``, in ``error_examples.py``).  The public names callers used to import from
here (``ERROR_EXAMPLES``, ``StatementBreaks``) are re-exported.
"""

from __future__ import annotations

from lark.exceptions import UnexpectedInput, VisitError

from . import ast as A
from .diagnostics import Diagnostic, Span, error
from .error_examples import ERROR_EXAMPLES
from .grammar import StatementBreaks, lark_parser
from .parse_errors import caret_within, diagnose
from .transform import SyntaxProblem, ToAst


def parse(text: str, path: str = "<string>") -> tuple[A.Module | None, list[Diagnostic]]:
    """Parse one file.  Returns the AST, or ``None`` with the syntax errors found."""
    if "\x00" in text:
        pos = text.index("\x00")
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return None, [error(Span(path, line, col, line, col + 1), "the file contains a NUL byte; nspec specs are text")]
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as exc:
        return None, [caret_within(diagnose(exc, text, path), text)]
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
    try:
        return ToAst(path).transform(tree), []
    except VisitError as exc:
        if isinstance(exc.orig_exc, SyntaxProblem):
            return None, [caret_within(error(exc.orig_exc.span, exc.orig_exc.message), text)]
        if isinstance(exc.orig_exc, RecursionError):
            return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]
        raise
    except RecursionError:
        return None, [error(Span(path, 1, 1, 1, 2), "the spec nests too deeply to parse")]


__all__ = ["parse", "ERROR_EXAMPLES", "StatementBreaks", "lark_parser"]
