"""Located diagnostics: values that every phase collects and the driver prints.

A diagnostic prints as ``path:line:col: error: message``, then the source line and a caret
under the offending column.  Phases return lists of diagnostics rather than raising; the
driver stops after the first phase that produced an error.  ``NspecError`` carries a list of
diagnostics across API boundaries (``nspec.load`` raises it on a bad spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns are 1-based, ``end_*`` inclusive-exclusive."""

    path: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


UNKNOWN_SPAN = Span("<unknown>", 0, 0)
# The characters str.splitlines breaks a line at, written as their escapes.
_ESCAPED_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message about the user's spec, located at ``span``."""

    span: Span
    message: str
    severity: str = "error"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # One line each, whatever they quote (an import path written "a\nb" held a newline): the head of the
        # rendering is always ``path:line:col: severity: message``.
        object.__setattr__(self, "message", self.message.translate(_ESCAPED_BREAKS))
        object.__setattr__(self, "notes", tuple(n.translate(_ESCAPED_BREAKS) for n in self.notes))

    def render(self, sources: "SourceMap | None" = None) -> str:
        head = f"{self.span}: {self.severity}: {self.message}"
        lines = [head]
        text = sources.line(self.span) if sources is not None else None
        if text is not None:
            lines.append("    " + text.rstrip("\n").expandtabs(1))
            width = 1
            if self.span.end_line == self.span.line and self.span.end_col > self.span.col:
                width = self.span.end_col - self.span.col
            lines.append("    " + " " * max(self.span.col - 1, 0) + "^" + "~" * (width - 1))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class SourceMap:
    """The text of every file read so far, so diagnostics can quote their line."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, text: str) -> None:
        self.texts[path] = text

    def line(self, span: Span) -> str | None:
        text = self.texts.get(span.path)
        if text is None:
            try:
                text = Path(span.path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                return None
            self.texts[span.path] = text
        lines = text.split("\n")  # the parser counts lines by "\n" alone (not U+2028, form feeds...)
        if 1 <= span.line <= len(lines):
            return lines[span.line - 1].rstrip("\r")
        return None


class NspecError(Exception):
    """Raised by API entry points when a spec has errors; ``diagnostics`` lists them all."""

    def __init__(self, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...], sources: SourceMap | None = None):
        self.diagnostics = tuple(diagnostics)
        self.sources = sources
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)


def error(span: Span, message: str, *notes: str) -> Diagnostic:
    return Diagnostic(span, message, "error", tuple(notes))


def unique(diags: list[Diagnostic]) -> list[Diagnostic]:
    """``diags`` without repeats of one message at one place (a template instantiated twice reports a
    mistake once), in order."""
    seen, out = set(), []
    for d in diags:
        key = (d.span.path, d.span.line, d.span.col, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


class Collector:
    """Accumulates diagnostics during one phase; ``check()`` raises if any is an error."""

    def __init__(self, sources: SourceMap | None = None):
        self.items: list[Diagnostic] = []
        self.sources = sources

    def error(self, span: Span, message: str, *notes: str) -> None:
        self.items.append(error(span, message, *notes))

    def extend(self, diags) -> None:
        self.items.extend(diags)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def check(self) -> None:
        if self.has_errors:
            raise NspecError(unique(self.items), self.sources)
