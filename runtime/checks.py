"""The runtime's half of bounds and division checks (``compiler/bounds.py`` has the analysis).

When a run starts, the sites whose operands are parameters or input ports are checked on the
values it runs with; when it ends, a failed check status (the ``nspec/status`` state the
check-bounds pass adds for operands computed at run time) becomes the same located error on every
backend.  Both raise ``RunCheckError``, a located ``NspecError``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from nspec.compiler.bounds import STATUS, Site, start_errors, start_sites, status_error
from nspec.compiler.ir import Program
from nspec.dsl.diagnostics import NspecError, SourceMap


class RunCheckError(NspecError):
    """An index out of range or an integer division by zero, located at the spec line that does it."""


class RunChecks:
    """The checks of one program: its start sites are found once."""

    def __init__(self, program: Program):
        self.program = program
        self.sites: list[Site] = start_sites(program)

    def at_start(self, params: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """Raise for a parameter (or input) that an index or a divisor reads invalid values from."""
        if self.sites:
            diags = start_errors(self.program, self.sites, params, inputs)
            if diags:
                raise RunCheckError(diags, SourceMap())

    def at_end(self, state: Mapping[str, np.ndarray]) -> None:
        """Raise for the first run-time check that failed (its step and value)."""
        status = state.get(STATUS)
        if status is not None:
            diag = status_error(self.program, status)
            if diag is not None:
                raise RunCheckError([diag], SourceMap())


__all__ = ["RunCheckError", "RunChecks"]
