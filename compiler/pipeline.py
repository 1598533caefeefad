"""The pipeline: every pass from the elaborated design to the program a backend runs, in order, by name.

Elaboration (``elaborate.py``) turns a spec into a ``Design``: the run target as a wiring diagram of
systems, with the run's settings.  ``PIPELINE`` then takes it down to a flat, optimised ``Program``:

    flatten-systems       Design  -> Program   substitute the wiring diagram down to one primitive
    discretize-odes       Program -> Program   continuous equations (INTEGRATE) become a scheme's steps
    check-bounds          Program -> Program   indices and integer divisors: compile errors, run-time CHECKs
    fold-constants        Program -> Program   evaluate constant subgraphs with the oracle's rules
    eliminate-dead-code   Program -> Program   drop nodes no result reads

Required passes produce the IR every backend can run (``nspec compile --emit ir`` stops after them);
the rest are optimisations (``--emit ir-opt`` prints the program after all of them).  ``--emit
after=NAME`` prints the program after any one pass and ``--emit passes`` lists them.  Backends may run
passes of their own after these (``BACKEND_PASSES``: TVM's fast mode runs ``TVM_PASSES``; they are
listed too), and the runtime one more once a run's length is known (``RUN_TIME_PASSES``: the
parallel form, ``passes/parallel_form.py``).  With ``verify=True`` (the default, and what the tests use) the IR verifier re-infers
every node after every pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from nspec.dsl.diagnostics import Collector, SourceMap, Span

from .ir import Program, verify_program
from .passes.check_bounds import check_bounds
from .passes.discretize_odes import discretize_odes
from .passes.eliminate_dead_code import eliminate_dead_code
from .passes.flatten_systems import check_weight_keys, flatten, to_program
from .passes.fold_constants import fold_constants
from .passes.fuse_accumulations import fuse_accumulations
from .passes.number_streams import number_streams
from .values import Abort


@dataclass(frozen=True)
class Design:
    """What elaboration hands the pipeline: the run target (a ``Primitive`` or ``Composite``) and the
    run's settings.  ``sources`` renders the diagnostics a pass may raise."""

    system: Any
    name: str
    dt: float
    seed: int
    hyper: tuple[tuple[str, Any], ...]
    duration_steps: int | None
    span: Span
    sources: SourceMap = field(compare=False, repr=False)
    data_dims: tuple = ()       # compiler/data_dims.py DataDim: the dimensions bound by data


def flatten_systems(design: Design) -> Program:
    """Substitute the wiring diagram down to one primitive system and make it a ``Program``."""
    diags = Collector(design.sources)
    try:
        prim = flatten(design.system, diags)
    except Abort:
        prim = None
    diags.check()
    program = to_program(prim, design.name, design.dt, design.seed, design.hyper)
    check_weight_keys(program.params, diags)
    diags.check()
    return replace(program, duration_steps=design.duration_steps, data_dims=design.data_dims)


@dataclass(frozen=True)
class Pass:
    """One named pass.  ``required`` passes make the IR runnable; the others only optimise it."""

    name: str
    run: Callable[[Any], Program]
    summary: str
    required: bool = False


PIPELINE: tuple[Pass, ...] = (
    Pass("flatten-systems", flatten_systems, "Design -> Program: substitute wiring diagrams down to one system",
         required=True),
    Pass("discretize-odes", discretize_odes, "INTEGRATE nodes become their integrator's steps (INTEGRATORS)",
         required=True),
    Pass("number-streams", number_streams, "each random draw site (UNIFORM) gets its own stream id, in graph order",
         required=True),
    Pass("check-bounds", check_bounds, "constant indices and divisors checked now; the rest at the start of a run "
         "or by CHECK nodes (compiler/bounds.py)", required=True),
    Pass("fold-constants", fold_constants, "evaluate constant subgraphs with the oracle's rules; apply identities"),
    Pass("eliminate-dead-code", eliminate_dead_code, "drop nodes that no result reads (LOOP bodies included)"),
)
# The TVM backend's own passes, run after PIPELINE in fast mode only (they reorder float additions).
TVM_PASSES: tuple[Pass, ...] = (
    Pass("fuse-accumulations", fuse_accumulations, "add(x, propagate(...)) becomes a propagate accumulating into x"),
)
BACKEND_PASSES: dict[str, tuple[Pass, ...]] = {"tvm (fast mode)": TVM_PASSES}
# Run by the runtime once a run's length is known (runtime/parallel.py), on the program PIPELINE gave.
RUN_TIME_PASSES: tuple[tuple[str, str], ...] = (
    ("parallel-form", "a sequence of steps whose only memory is sums of outer products read linearly (BDH, "
     "linear attention, GLA) becomes masked matmuls over chunks (passes/parallel_form.py)"),
)


def pass_names() -> list[str]:
    return [p.name for p in PIPELINE]


def run_pipeline(design: Design | Program, *, optimize: bool = True, until: str | None = None,
                 verify: bool = True) -> Program:
    """Run ``PIPELINE`` on ``design`` (a ``Program`` skips the passes that take a ``Design``).

    ``optimize=False`` runs only the required passes; ``until`` stops after the pass of that name.
    """
    if until is not None and until not in pass_names():
        raise ValueError(f"no pass named '{until}'; the passes are {', '.join(pass_names())}")
    value = design
    for p in PIPELINE:
        if p.name == "flatten-systems" and isinstance(value, Program):
            continue
        if optimize or p.required or until is not None:
            value = p.run(value)
            if verify:
                verify_program(value)
        if p.name == until:
            break
    return value


def run_passes(program: Program, passes: tuple[Pass, ...], verify: bool = True) -> Program:
    """Run a backend's own passes (``BACKEND_PASSES[backend]``) on an already compiled program."""
    for p in passes:
        program = p.run(program)
        if verify:
            verify_program(program)
    return program


def describe_passes() -> str:
    """The text of ``nspec compile --emit passes``."""
    width = max(len(name) for name in [p.name for p in PIPELINE + sum(BACKEND_PASSES.values(), ())]
                + [name for name, _ in RUN_TIME_PASSES])
    lines = ["pipeline (in order; * = required, the rest optimise):"]
    lines += [f"  {'*' if p.required else ' '} {p.name:<{width}}  {p.summary}" for p in PIPELINE]
    for backend, passes in BACKEND_PASSES.items():
        lines.append(f"then, for {backend}:")
        lines += [f"    {p.name:<{width}}  {p.summary}" for p in passes]
    lines.append("then, at run time, for a run of several steps (Model.run; off with --no-parallel-form):")
    lines += [f"    {name:<{width}}  {summary}" for name, summary in RUN_TIME_PASSES]
    return "\n".join(lines)
