"""The optimisation pipeline: one explicit, ordered list of named pure passes Program -> Program.

``nspec compile --emit ir`` prints the program before this list, ``--emit ir-opt`` after it.
With ``verify=True`` (the tests' setting) the IR verifier runs after every pass.
"""

from __future__ import annotations

from typing import Callable

from .ir import Program, verify_program
from .passes.discretize_odes import discretize_odes


def _passes() -> list[tuple[str, Callable[[Program], Program]]]:
    from .passes.eliminate_dead_code import eliminate_dead_code
    from .passes.fold_constants import fold_constants

    return [
        ("fold-constants", fold_constants),
        ("eliminate-dead-code", eliminate_dead_code),
    ]


def run_pipeline(program: Program, verify: bool = True) -> Program:
    program = discretize_odes(program)  # lead: moves into PIPELINE
    for _name, fn in _passes():
        program = fn(program)
        if verify:
            verify_program(program)
    return program
