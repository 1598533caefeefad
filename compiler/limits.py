"""Limits before allocation: what a program will need, estimated from its sizes before anything big
is built, and compared with the limits in force.

Every estimate is a pure function of numbers the compiler knows before it allocates (a population's
size and state count, a connection rule's sizes, a tensor's shape, a loop's count, a run's length
and its monitors).  ``check_*`` returns ``None`` or the message of a refusal, which the caller turns
into a located diagnostic (``LimitError`` where no diagnostic collector is at hand, as in
``GraphBuilder.add``).  The message states the estimate and the limit, and how to raise it.

The limits in force are a ``Limits`` record held in a context variable: ``using(limits)`` sets them
for a compile or a run (``nspec.load(..., max_memory=)``, ``Model.run(max_memory=)``,
``--max-memory``); the default allows half the machine's physical memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import re
from dataclasses import dataclass

from nspec.dsl.diagnostics import Span

MEMORY_FRACTION = 0.5  # the default limit: this fraction of the machine's physical memory
FALLBACK_MEMORY = 8 << 30  # where the physical memory cannot be read
COMPILE_COPIES = 4  # the compiler holds a tensor as float64 probes, perturbed copies and the result
PROBE_BYTES = 8  # one compile-time value (the oracle's float64 probes)
SYNAPSE_BYTES = 32  # generating one synapse: pre and post int64 indices, their sort order, its weight
DEFAULT_MAX_ITERATIONS = 1_000_000  # iterations of one LOOP (ticks, until ... max) per step
DEFAULT_MAX_UNROLLED = 10_000  # copies made at compile time (repeat L, replication [n], for loops)

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


class LimitError(Exception):
    """An estimate exceeds a limit where no diagnostic collector is at hand (``span``, ``message``);
    the driver reports it as a located diagnostic."""

    def __init__(self, span: Span, message: str):
        super().__init__(f"{span}: {message}")
        self.span = span
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force: bytes any one estimate may reach, LOOP iterations per step, compile-time copies."""

    max_bytes: int
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    max_unrolled: int = DEFAULT_MAX_UNROLLED


@functools.cache
def physical_memory() -> int:
    """The machine's physical memory in bytes (``os.sysconf``), or 8 GiB where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY


@functools.cache
def default_limits() -> Limits:
    return Limits(max_bytes=int(physical_memory() * MEMORY_FRACTION))


def parse_memory(text: str | int | float) -> int:
    """``8GB``, ``512 MiB``, ``1.5G`` or a number of bytes -> bytes; ValueError names the mistake."""
    if isinstance(text, bool):
        raise ValueError(f"a memory size is a number of bytes or a string like '8GB', got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).upper() not in _UNITS:
            raise ValueError(f"a memory size is a number with an optional unit (B, KB, MB, GB, TB), got {text!r}")
        value, unit = float(m.group(1)), m.group(2).upper()
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ValueError(f"a memory size must be at least one byte, got {text!r}")
    return int(size)


def limits_for(max_memory: str | int | float | None) -> Limits:
    """The default limits, with ``max_memory`` (bytes or '8GB') in place of the default memory limit."""
    base = default_limits()
    return base if max_memory is None else Limits(parse_memory(max_memory), base.max_iterations, base.max_unrolled)


_CURRENT: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("nspec_limits", default=None)


def current() -> Limits:
    """The limits in force (``using``), else the defaults."""
    return _CURRENT.get() or default_limits()


@contextlib.contextmanager
def using(limits: Limits | None):
    """Set the limits for the compile or run inside the ``with`` block (None: keep the ones in force)."""
    token = _CURRENT.set(limits if limits is not None else _CURRENT.get())
    try:
        yield
    finally:
        _CURRENT.reset(token)


def size_text(n: float) -> str:
    """Bytes as people read them: '7.5 GiB' (past 2^100 bytes, a power of ten of TiB)."""
    if n >= 1 << 100:  # a product of huge sizes: an int past what a float division takes
        return f"about 10^{len(str(int(n) >> 40)) - 1} TiB"
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _over(what: str, estimate: float, limits: Limits, hint: str) -> str | None:
    if estimate <= limits.max_bytes:
        return None
    return (f"{what} needs an estimated {size_text(estimate)}, over the memory limit of {size_text(limits.max_bytes)}"
            f" ({hint}; raise the limit with --max-memory or max_memory=)")


# ---------------------------------------------------------------- estimates
def tensor_bytes(shape: tuple[int, ...]) -> int:
    """What the compiler holds while building a tensor of this shape."""
    return math.prod(shape) * PROBE_BYTES * COMPILE_COPIES


def population_bytes(size: int, states: int) -> int:
    """A population: every state variable of every neuron, as the compiler holds it."""
    return size * max(states, 1) * PROBE_BYTES * COMPILE_COPIES


def synapse_count(rule: str, n_pre: int, n_post: int, arg: float | None = None) -> float:
    """The expected number of synapses of a connection rule (``where`` evaluates the dense grid)."""
    per_rule = {
        "all_to_all": lambda: n_pre * n_post,
        "one_to_one": lambda: min(n_pre, n_post),
        "prob": lambda: (arg or 0.0) * n_pre * n_post,
        "in_degree": lambda: (arg or 0) * n_post,
        "out_degree": lambda: (arg or 0) * n_pre,
        "indices": lambda: arg or 0,
        "where": lambda: n_pre * n_post,
    }
    return float(per_rule.get(rule, per_rule["where"])())


def recording_bytes(steps: int, per_step_bytes: int) -> int:
    """Recorded values for a run: bytes recorded per step (every monitor, every trial) times the steps."""
    return steps * per_step_bytes


# ---------------------------------------------------------------- checks (None or the refusal's message)
def check_tensor(shape: tuple[int, ...], limits: Limits | None = None) -> str | None:
    limits = limits or current()
    n = math.prod(shape)
    if n * PROBE_BYTES * COMPILE_COPIES <= limits.max_bytes:  # the common case, on every node built
        return None
    return _over(f"a tensor of shape {list(shape)} ({n:,} values)", tensor_bytes(shape), limits,
                 f"{PROBE_BYTES * COMPILE_COPIES} bytes per value while compiling")


def check_population(name: str, size: int, states: int, limits: Limits | None = None) -> str | None:
    limits = limits or current()
    return _over(f"population '{name}' of {size:,} neurons with {max(states, 1)} state variable(s)",
                 population_bytes(size, states), limits, f"{PROBE_BYTES * COMPILE_COPIES} bytes per value while compiling")


def check_synapses(name: str, rule: str, n_pre: int, n_post: int, arg: float | None = None,
                   limits: Limits | None = None) -> str | None:
    limits = limits or current()
    count = synapse_count(rule, n_pre, n_post, arg)
    return _over(f"projection '{name}' ({n_pre:,} -> {n_post:,} neurons, about {count:,.0f} synapses)",
                 count * SYNAPSE_BYTES, limits, f"{SYNAPSE_BYTES} bytes per synapse while generating them")


def check_iterations(what: str, count: int, limits: Limits | None = None) -> str | None:
    """A LOOP's count per step (``ticks N``, ``until ... max N``)."""
    limits = limits or current()
    if count <= limits.max_iterations:
        return None
    return (f"{what} is {count:,}, over the limit of {limits.max_iterations:,} iterations per step "
            "(a run would take hours or never end); use a smaller count")


def check_unrolled(what: str, count: int, limits: Limits | None = None) -> str | None:
    """Copies the compiler makes (``repeat L``, replication ``[n]``, the items of a ``for`` loop)."""
    limits = limits or current()
    if count <= limits.max_unrolled:
        return None
    return (f"{what} makes {count:,} copies at compile time, over the limit of {limits.max_unrolled:,}; "
            "use a population or a tensor axis instead of copies")


def check_recording(steps: int, per_step_bytes: int, limits: Limits | None = None) -> str | None:
    limits = limits or current()
    return _over(f"recording {steps:,} steps ({size_text(per_step_bytes)} per step)",
                 recording_bytes(steps, per_step_bytes), limits,
                 "monitors kept in memory; 'nspec run -o' streams them to the file in chunks instead")


__all__ = ["Limits", "LimitError", "MEMORY_FRACTION", "physical_memory", "default_limits", "parse_memory",
           "limits_for", "current", "using", "size_text", "tensor_bytes", "population_bytes", "synapse_count",
           "recording_bytes", "check_tensor", "check_population", "check_synapses", "check_iterations",
           "check_unrolled", "check_recording"]
