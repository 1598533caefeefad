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
from nspec.dsl.parser import parse

from .pipeline import describe_passes, run_pipeline

# Exit codes shared by the CLI.
EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def read_source(path: str | Path, sources: SourceMap) -> tuple[str | None, list[Diagnostic]]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None, [error(Span(str(path), 1, 1), f"no such file: {path}")]
    except IsADirectoryError:
        return None, [error(Span(str(path), 1, 1), f"{path} is a directory, not a spec file")]
    except OSError as exc:
        return None, [error(Span(str(path), 1, 1), f"cannot read {path}: {exc.strerror}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [error(Span(str(path), line, col), "the file is not valid UTF-8 text")]
    sources.add(str(path), text)
    return text, []


def parse_file(path: str | Path, sources: SourceMap) -> tuple[A.Module | None, list[Diagnostic]]:
    text, diags = read_source(path, sources)
    if text is None:
        return None, diags
    return parse(text, str(path))


def check_files(paths, hyper: dict | None = None) -> tuple[list[Diagnostic], SourceMap]:
    """All diagnostics for each file (``nspec check``): parse, resolve, elaborate every declaration."""
    from nspec.compiler.elaborate import check_module

    sources = SourceMap()
    diags: list[Diagnostic] = []
    for path in paths:
        try:
            diags.extend(check_module(str(path), sources, hyper or {}))
        except RecursionError:
            diags.append(_too_deep(str(path)))
    return diags, sources


def _too_deep(path: str) -> Diagnostic:
    return error(Span(path, 1, 1), "an expression or declaration nests too deeply to check (split it with 'let')")


def compile_file(path: str | Path, hyper: dict | None = None, target: str | None = None,
                 optimize: bool = True, sources: SourceMap | None = None, until: str | None = None):
    """Compile the spec's run target (``simulate`` item, or ``target`` by name) to a ``Program``.

    ``optimize=False`` runs only the pipeline's required passes; ``until`` stops after the named pass.
    Raises ``NspecError`` with every diagnostic when the spec has errors.
    """
    from nspec.compiler.elaborate import elaborate_file

    sources = sources if sources is not None else SourceMap()
    try:
        design = elaborate_file(str(path), sources, hyper or {}, target)
    except RecursionError:
        raise NspecError([_too_deep(str(path))], sources) from None
    return run_pipeline(design, optimize=optimize, until=until)


def emit(path: str | Path, stage: str, hyper: dict | None = None, target: str | None = None) -> str:
    """Text of one compiler stage (``--emit ast|ir|ir-opt|passes|after=PASS``)."""
    sources = SourceMap()
    if stage == "ast":
        module, diags = parse_file(path, sources)
        if diags:
            raise NspecError(diags, sources)
        return A.dump(module)
    from nspec.compiler.ir import print_program

    until = stage.removeprefix("after=") if stage.startswith("after=") else None
    program = compile_file(path, hyper, target, optimize=(stage == "ir-opt"), sources=sources, until=until)
    return print_program(program)
