"""What the command line's commands share: ``CliError``, the ``--param`` pairs, the command line as
typed (so a mistake is located in it), the spec files a folder stands for, the check that an output
may be written, and loading a backend's lowering with a user-facing error when it is missing."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from nspec.compiler.driver import EXIT_USER_ERROR


# Folders never searched for specs when a directory is given.
_SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist"}

# What an internal error tells the user (by the command line, and by `nspec test` per test).
REPORT_HINT = ("this is a bug in nspec, not in your spec: please report it with the command and the spec "
               "(run with --debug or NSPEC_DEBUG=1 to see the traceback)")


class CliError(Exception):
    """A user error the command line finds itself (an existing output file, a missing backend)."""

    code = EXIT_USER_ERROR


def hyper_args(pairs) -> dict:
    hyper: dict = {}
    for key, value in pairs or ():
        if key in hyper:
            raise CliError(f"--param {key} is given twice")
        hyper[key] = value
    return hyper


def given_args(args):
    """The command line as typed, so a mistake in a --param is located in it."""
    from nspec.compiler.overrides import command_line

    return command_line(getattr(args, "argv", None) or sys.argv[1:])


# ---------------------------------------------------------------- files
def spec_paths(args: list[str]) -> list[Path]:
    """Spec files named on the command line; a directory stands for every ``*.nspec`` below
    it, except hidden folders and the deliberately broken ``specs/errors/``."""
    out: list[Path] = []
    for arg in args:
        root = Path(arg)
        if not root.is_dir():
            out.append(root)  # a missing file is reported by the checker, with its name
            continue
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                             and not (d == "errors" and Path(folder).name == "specs"))
            found.extend(Path(folder) / f for f in files if f.endswith(".nspec"))
        if not found:
            raise CliError(f"no .nspec files in {arg}")
        out.extend(sorted(found))
    return out


def refuse_overwrite(path: Path, force: bool, flag: str) -> None:
    """Check an output path before any work, so a long run is never wasted."""
    if path.exists() and not force:
        raise CliError(f"{path} already exists; pass --force to overwrite it ({flag})")
    if path.exists() and path.is_dir():
        raise CliError(f"{path} is a directory ({flag})")
    if not path.parent.is_dir():
        raise CliError(f"the folder {path.parent} does not exist ({flag})")


def lowering(module: str, function: str):
    """``nspec.lowering.<module>.<function>``, or a user-facing 'backend not available' error."""
    name = f"nspec.lowering.{module}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise CliError(f"backend not available: {name} is not part of this installation") from None
        if exc.name and exc.name.split(".")[0] == "nspec":
            raise
        raise CliError(f"backend not available: the package {exc.name!r} is not installed") from None
    fn = getattr(mod, function, None)
    if fn is None:
        raise CliError(f"backend not available: {name} has no {function}()")
    return fn


__all__ = ["CliError", "REPORT_HINT", "hyper_args", "given_args", "spec_paths", "refuse_overwrite", "lowering"]
