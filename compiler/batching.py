"""Batching once: what a per-sample op becomes when the runtime prepends a batch axis.

Shapes in the IR are per sample.  At run time every value that depends on a state or an input
carries one leading batch axis ``B`` (``ir.batched`` says which); parameters and constants do
not.  So each backend must turn a per-sample op into a stored-array op the same way: an einsum
gets a batch letter on its batched operands and its result, a per-sample axis moves by one on a
batched value, a batched operand of lower rank gets size-1 axes after its batch axis before
broadcasting.  Those rules live here, once, as pure functions of equations, axes and shapes,
so a backend's rule for an op is one library call on what these functions give.

LOOPs with ``until`` (``ir.py``, "Loops") have one more per-sample rule: a sample whose
condition has held keeps its carried values and repeats its last stacked outputs.
``until_step`` writes it over a backend's array vocabulary (``Until``); ``iterate`` runs a whole
loop with it for backends that execute eagerly, and ``LoopSpec`` decodes what every backend
needs of a LOOP node (its ``LoopAttrs``, the body nodes it reads, the body's unbatched names).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .ops import IRError, LoopAttrs


# ---------------------------------------------------------------- einsum
def batch_letter(equation: str) -> str:
    """The first ASCII letter that ``equation`` does not use: the batch axis's index."""
    return next(c for c in string.ascii_letters if c not in equation)


def batched_equation(equation: str, flags: Sequence[bool], out: bool | None = None) -> str:
    """``equation`` (per sample, explicit output) with a batch letter on each operand whose flag
    is set and on the result when ``out`` (default: when any operand is batched); spaces dropped."""
    equation = equation.replace(" ", "")
    out = any(flags) if out is None else out
    if not out and not any(flags):
        return equation
    lhs, result = equation.split("->")
    letter = batch_letter(equation)
    terms = ",".join(letter + term if b else term for term, b in zip(lhs.split(","), flags))
    return f"{terms}->{letter if out else ''}{result}"


# ---------------------------------------------------------------- axes
def stored_axis(axis: int, rank: int, batched: bool) -> int:
    """Per-sample ``axis`` (negative counts from the end of the sample) of a value of per-sample
    ``rank``, as an axis of the stored array."""
    return (axis % rank if rank else 0) + int(batched)


def stored_axes(axes: Sequence[int], rank: int, batched: bool) -> tuple[int, ...]:
    """``stored_axis`` of each of ``axes``."""
    return tuple(stored_axis(a, rank, batched) for a in axes)


def batched_perm(perm: Sequence[int], batched: bool) -> tuple[int, ...]:
    """A per-sample permutation as a permutation of the stored axes (the batch axis stays first)."""
    return (0,) + tuple(p + 1 for p in perm) if batched else tuple(perm)


def sliced(starts: Sequence[int], stops: Sequence[int], steps: Sequence[int], batched: bool) -> tuple[slice, ...]:
    """The stored index of a per-sample slice: the whole batch axis, then one slice per axis."""
    return (slice(None),) * int(batched) + tuple(slice(a, b, c) for a, b, c in zip(starts, stops, steps))


def stored_shape(shape: tuple[int, ...], like: Sequence[int], batched: bool) -> tuple[int, ...]:
    """Per-sample ``shape`` as a stored shape, with the batch axis of the stored shape ``like``."""
    return tuple(like[:1]) + tuple(shape) if batched else tuple(shape)


# ---------------------------------------------------------------- broadcasting
def lifted_axes(sample_rank: int, batched: bool, rank: int) -> tuple[int, ...]:
    """Where a value of per-sample rank ``sample_rank`` needs size-1 axes so that right-aligned
    broadcasting against per-sample rank ``rank`` pairs per-sample axes: right after the batch
    axis of a batched value (an unbatched value already aligns from the right)."""
    missing = rank - sample_rank
    return tuple(range(1, 1 + missing)) if batched and missing > 0 else ()


def aligned_shape(shape: Sequence[int], batched: bool, rank: int) -> tuple[int, ...]:
    """The stored ``shape`` with the size-1 axes of ``lifted_axes`` inserted."""
    shape = tuple(shape)
    k = len(lifted_axes(len(shape) - int(batched), batched, rank))
    return shape[:1] + (1,) * k + shape[1:]


def batch_size(xs: Sequence[Any], flags: Sequence[bool]) -> int:
    """B: the leading size of the first batched value (arrays or tensors)."""
    return next(x.shape[0] for x, b in zip(xs, flags) if b)


# ---------------------------------------------------------------- loops
@dataclass(frozen=True, slots=True)
class LoopSpec:
    """A LOOP node decoded once: its attributes and the body nodes each backend reads."""

    attrs: LoopAttrs
    next_nodes: tuple[int, ...]     # the next value of each carried name
    out_nodes: tuple[int, ...]      # each stacked output
    until_node: int | None          # the `until` condition

    @classmethod
    def of(cls, node) -> "LoopSpec":
        """The spec of LOOP ``node``; ``IRError`` if it is no LOOP or its body lacks a result."""
        try:
            a = LoopAttrs.of(node)
            return cls(a, tuple(a.result_node(c, "next") for c in a.carried),
                       tuple(a.result_node(s, "output") for s in a.stacked),
                       a.result_node(a.until, "value") if a.until is not None else None)
        except (KeyError, TypeError) as exc:
            raise IRError(exc.args[0]) from None

    @property
    def roots(self) -> tuple[int, ...]:
        """Every body node the loop reads."""
        return self.next_nodes + self.out_nodes + (() if self.until_node is None else (self.until_node,))

    def unbatched(self, flags: Sequence[bool], batched: bool) -> frozenset[str]:
        """The body's ARG names without a batch axis, given the LOOP's input ``flags``: in a batched
        loop every carried value is batched (its ITEMs are), invariants keep their own flag."""
        n = len(self.attrs.carried)
        names = {name for name, b in zip(self.attrs.invariant, flags[n:]) if not b}
        return frozenset(names if batched else names | set(self.attrs.carried))


@dataclass(frozen=True, slots=True)
class Until:
    """A backend's array vocabulary for the `until` rule.

    ``keep(done, old, new)``: ``old`` where the sample is done, else ``new`` (``done`` is one bool
    per sample, broadcast over the value's per-sample axes); ``either(done, cond)``: logical or;
    ``finished(done)``: whether every sample is done (eager backends only).
    """

    keep: Callable[[Any, Any, Any], Any]
    either: Callable[[Any, Any], Any]
    finished: Callable[[Any], bool] | None = None


def until_step(ops: Until, done, carried: Sequence, nexts: Sequence, lasts: Sequence, outs: Sequence, cond):
    """One iteration of a LOOP with ``until``: ``(done, nexts, outs)`` after it.

    Samples already done keep their ``carried`` values and repeat their ``lasts`` outputs; ``done``
    becomes ``done or cond``.  ``done`` None means no iteration has run yet (nothing is done).
    """
    if done is None:
        return cond, list(nexts), list(outs)
    nexts = [ops.keep(done, c, v) for c, v in zip(carried, nexts)]
    outs = [ops.keep(done, p, o) for p, o in zip(lasts, outs)]
    return ops.either(done, cond), nexts, outs


def iterate(count: int, carry: list, body: Callable[[list], tuple[list, list, Any]], ops: Until | None):
    """Run a LOOP eagerly: ``(final carried values, count frames of stacked outputs)``.

    ``body(carry) -> (nexts, outs, cond)`` runs one iteration (``cond`` None without ``until``).
    With ``until`` (``ops`` given) the loop stops once every sample is done; the frames of an early
    exit are padded with the last one, so every sample repeats its last outputs.
    """
    done = None
    frames: list[list] = []
    for _ in range(count):
        nexts, outs, cond = body(carry)
        if ops is not None:
            done, nexts, outs = until_step(ops, done, carry, nexts, frames[-1] if frames else (), outs, cond)
        carry = nexts
        frames.append(outs)
        if ops is not None and ops.finished(done):
            break
    if frames:
        frames += [frames[-1]] * (count - len(frames))
    return carry, frames


__all__ = ["batch_letter", "batched_equation", "stored_axis", "stored_axes", "batched_perm", "sliced", "stored_shape",
           "lifted_axes", "aligned_shape", "batch_size", "LoopSpec", "Until", "until_step", "iterate"]
