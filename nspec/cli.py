"""The ``nspec`` command line: check, compile, run, sweep and test specs.

    nspec check FILE|DIR...             every diagnostic; exit 1 on errors
    nspec compile SPEC [--emit STAGE | --target T -o OUT]
    nspec run SPEC [--param k=v]... [--output out.npz] [--backend B] [--duration 1s | --steps N]
    nspec sweep SPEC --grid NAME=v1,v2 [--seeds 0:16] [--metric EXPR] --output results.parquet   on Ray
    nspec test [FILE|DIR...]            the spec-level ``test`` blocks
    nspec train SPEC --data D.npz --loss KIND:OUTPUT:TARGET [--epochs N] [--checkpoint DIR [--resume]]
    nspec import-nir GRAPH.nir -o MODEL.nspec   a NIR graph as a spec and its weights (alias: import)

Exit codes (``nspec.compiler.driver``): 0 ok, 1 user error (diagnostics printed), 2 usage error,
3 internal error.  A user error never prints a Python traceback; an internal error prints one
only with ``--debug`` or ``NSPEC_DEBUG=1``.  Heavy modules (numpy, pint, the backends, torch,
tvm, matplotlib) are imported inside the command that needs them, so ``nspec --help`` and
``nspec check`` start fast.

This module is the entry point (``main``, the ``nspec`` console script and ``python -m nspec``):
the parser is built in ``cli_parser.py``, the commands run in ``cli_commands.py``; their public
names are importable from here too.
"""

from __future__ import annotations

import os
import sys
import traceback

from nspec.cli_commands import (EMIT_STAGES, IR_STAGES, REPORT_HINT, TARGETS, CliError, cmd_check, cmd_compile, cmd_run,
                                cmd_sweep, cmd_test, cmd_train, spec_paths)
from nspec.cli_parser import build_parser, duration, param, positive_int
from nspec.compiler.driver import EXIT_INTERNAL, EXIT_USAGE, EXIT_USER_ERROR
from nspec.compiler.limits import limits_for, using
from nspec.dsl.diagnostics import NspecError


def _user_errors() -> tuple[type, ...]:
    """Exceptions that describe a mistake in the user's spec, files or flags (exit 1)."""
    errors: list[type] = [NspecError, CliError]
    # only a command that imported these modules can raise their errors
    executor = sys.modules.get("nspec.runtime.executor")
    if executor is not None:
        errors.append(executor.BackendError)
    model = sys.modules.get("nspec.runtime.model")
    if model is not None:
        errors.extend((model.WeightsError, model.InputError, model.NonFiniteError, model.LimitExceeded))
    nir_import = sys.modules.get("nspec.runtime.nir_import")
    if nir_import is not None:
        errors.append(nir_import.NirError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # where a --param is located in messages
    # --debug is accepted before and after the command; its default is SUPPRESS so that a
    # subcommand's parser does not reset a flag given before it
    args.debug = getattr(args, "debug", False) or os.environ.get("NSPEC_DEBUG", "") not in ("", "0")
    try:
        with using(limits_for(getattr(args, "max_memory", None))):
            return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`nspec compile --emit ir | head`): stop quietly, as on SIGPIPE;
        # pointing stdout at /dev/null keeps Python's exit-time flush from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            code = getattr(exc, "code", EXIT_USER_ERROR)
            print(exc.render() if isinstance(exc, NspecError) else f"error: {exc}", file=sys.stderr)
            return code
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(REPORT_HINT, file=sys.stderr)
        return EXIT_INTERNAL


# The parser's and the commands' public names are re-exported: callers import them from here.
__all__ = ["main", "build_parser", "param", "duration", "positive_int", "spec_paths", "CliError", "TARGETS",
           "IR_STAGES", "EMIT_STAGES", "cmd_check", "cmd_compile", "cmd_run", "cmd_sweep", "cmd_test", "cmd_train"]
