"""The compiler driver: the phases in order, stopping after the first phase with errors.

    parse -> resolve (imports, names) -> elaborate (hyperparameters, units, shapes, wiring; builds IR)
          -> passes (``compiler/pipeline.py``) -> Program

Every entry point returns or raises located diagnostics (``NspecError``); none of them executes
code from the spec.
"""

from __future__ import annotations

from pathlib import Path

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import Diagnostic, NspecError, SourceMap, Span, error

from .data_dims import DataShapes
from .elaborate import check_module, elaborate_file
from .ir import print_program
from .limits import LimitError, Limits, using
from .modules import parse_file
from .overrides import Given, keywords
from .pipeline import describe_passes, run_pipeline

# Exit codes shared by the CLI.
EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def check_files(paths, hyper: dict | None = None, limits: Limits | None = None,
                given: Given | None = None) -> tuple[list[Diagnostic], SourceMap]:
    """All diagnostics for each file (``nspec check``): parse, resolve, elaborate every declaration;
    ``limits`` (default: ``limits.current()``) bounds what checking may build; ``given`` is where
    ``hyper`` was written, for its diagnostics (default: this call)."""
    sources = SourceMap()
    diags: list[Diagnostic] = []
    with using(limits):
        for path in paths:
            try:
                diags.extend(check_module(str(path), sources, hyper or {},
                                          given or keywords("check_files", path, hyper or {})))
            except RecursionError:
                diags.append(_too_deep(str(path)))
            except LimitError as exc:  # raised where no collector is at hand (a node's shape)
                diags.append(error(_located(exc.span, path), exc.message))
    return diags, sources


def _located(span: Span, path) -> Span:
    """A node's span, or the file's start for a node built without one (every diagnostic is located)."""
    return span if span.line >= 1 and span.col >= 1 else Span(str(path), 1, 1)


def _too_deep(path: str) -> Diagnostic:
    return error(Span(path, 1, 1), "an expression or declaration nests too deeply to check (split it with 'let')")


def compile_file(path: str | Path, hyper: dict | None = None, target: str | None = None,
                 optimize: bool = True, sources: SourceMap | None = None, until: str | None = None,
                 limits: Limits | None = None, data: DataShapes | None = None, given: Given | None = None):
    """Compile the spec's run target (``simulate`` item, or ``target`` by name) to a ``Program``.

    ``optimize=False`` runs only the pipeline's required passes; ``until`` stops after the named pass;
    ``limits`` (default: ``limits.current()``) bounds what compiling may build; ``data`` (the shapes
    of the weights and inputs) binds the spec's ``auto`` dimensions (``compiler/data_dims.py``);
    ``given`` is where ``hyper`` was written, for its diagnostics (default: this call).
    Raises ``NspecError`` with every diagnostic when the spec has errors.
    """
    sources = sources if sources is not None else SourceMap()
    with using(limits):
        try:
            design = elaborate_file(str(path), sources, hyper or {}, target, data,
                                    given or keywords("compile_file", path, hyper or {}))
            return run_pipeline(design, optimize=optimize, until=until)
        except RecursionError:
            raise NspecError([_too_deep(str(path))], sources) from None
        except LimitError as exc:
            raise NspecError([error(_located(exc.span, path), exc.message)], sources) from None


def emit(path: str | Path, stage: str, hyper: dict | None = None, target: str | None = None,
         given: Given | None = None) -> str:
    """Text of one compiler stage (``--emit ast|ir|ir-opt|passes|after=PASS``)."""
    sources = SourceMap()
    if stage == "ast":
        module, diags = parse_file(path, sources)
        if diags:
            raise NspecError(diags, sources)
        return A.dump(module)
    until = stage.removeprefix("after=") if stage.startswith("after=") else None
    program = compile_file(path, hyper, target, optimize=(stage == "ir-opt"), sources=sources, until=until,
                           given=given)
    return print_program(program)
