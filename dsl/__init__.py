"""The nspec language front end: grammar, AST and parser with located diagnostics."""

from .diagnostics import Diagnostic, NspecError, SourceMap, Span
from .parser import parse

__all__ = ["Diagnostic", "NspecError", "SourceMap", "Span", "parse"]
