"""Running a whole sequence in the parallel form (``compiler/passes/parallel_form.py``).

``ParallelFormExecutor`` wraps a backend's executor.  A run of several steps, with nothing
recorded step by step, of a program the pass applies to is cut into chunks of ``chunk`` tokens
(the whole run when shorter); each chunk runs as one step of the program's parallel form for that
length (compiled on the backend the first time that length is run, then kept), carrying the state
into the next (at most ``DECAY_CHUNK`` tokens with a decaying state); a chunk that starts with every accumulator at zero (a run from the initial state)
runs the form without the start state's term (``from_zero``).  A last, shorter chunk of a longer
run steps recurrently, so a run compiles at most three forms: from zero, carrying, and the first
chunk's length when the run is shorter than a chunk.  Everything else (a single step, ``Model.step``, a run recording states or monitors,
a program the pass does not apply to) is the backend's own recurrent run, unchanged.

The final state is summed only when read.  The run's last chunk in the parallel form runs the
form without its accumulators' final states (``parallel_form(..., final=False)``): the sum
``S_0 + sum_s outer(k_s, v_s)`` over the chunk (for BDH a quarter of the form's multiply-adds, which
a forward pass whose outputs are all it uses never needs) is left to ``FinalState``, which adds it
up (one matmul in NumPy) the first time it is read: ``Model.get_state``, ``Model.step``, a run
with ``resume=True``, or the next request given it as its start state.  Every earlier chunk, whose
state the next one starts from, computes its final state in the form.  The NaN check
(``Model.run(nan_check=...)``) reads a pending sum only where a bound on it (from the largest
entries of ``S_0``, ``k``, ``v`` and the decays) does not rule out an overflow: finite factors with
a bound below the float range give a finite sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nspec.compiler.ir import Program
from nspec.compiler.limits import LimitError
from nspec.compiler.passes.parallel_form import Accumulator, outer_letters, parallel_form, plan_parallel_form

from .executor import BackendError, RunRequest, RunResult, executor_class

CHUNK = 256  # tokens per chunk: the masked matmuls cost chunk^2 per chunk, the carry one contraction
# tokens per chunk with a decaying state: its weights exp(L_t - L_s) come from sums L of log a over
# the chunk, whose rounding (|L| times the float epsilon) grows with the chunk's length
DECAY_CHUNK = 64


class ParallelFormExecutor:
    """A backend's executor that runs sequences in the parallel form where the pass applies."""

    def __init__(self, program: Program, backend: str, chunk: int = CHUNK, **options):
        if chunk < 2:
            raise ValueError(f"parallel_chunk must be at least 2 tokens, got {chunk}")
        self.name = backend
        self.program, self.backend, self.chunk, self.options = program, backend, chunk, options
        self.recurrent = executor_class(backend)(program, **options)
        self.plan = plan_parallel_form(program)
        if any(a.decay is not None for a in self.plan.accumulators):
            self.chunk = min(chunk, DECAY_CHUNK)
        # (chunk length, from zero, with final states) -> the backend's executor
        self.forms: dict[tuple[int, bool, bool], object] = {}
        self.declined: dict[tuple[int, bool, bool], str] = {}  # forms not built, and why
        self.letters = {a.state: outer_letters(program, a) for a in self.plan.accumulators} if self.plan.applies else {}

    @property
    def info(self) -> dict:
        """What the backend's recurrent executor reports of its build (the TVM cache's status)."""
        return getattr(self.recurrent, "info", {})

    def form(self, length: int, from_zero: bool, final: bool = True):
        """The backend's executor of the parallel form for ``length`` tokens (with the accumulators'
        final states, or their factors instead), or None when that form is over the memory limits
        or the backend cannot build it (``declined`` says why): those chunks then step
        recurrently, as they would without the pass."""
        key = (length, from_zero, final)
        if key not in self.forms:
            try:
                program = parallel_form(self.program, length, self.plan, from_zero, final)
                self.forms[key] = executor_class(self.backend)(program, **self.options)
            except (LimitError, BackendError) as exc:
                self.forms[key], self.declined[key] = None, str(exc)
        return self.forms[key]

    def run(self, request: RunRequest) -> RunResult:
        steps = request.steps
        if not self.plan.applies or steps < 2 or request.record:
            return self.recurrent.run(request)
        state, pieces = dict(request.state), []  # a pending sum of the request's start state is added up here
        for start in range(0, steps, self.chunk):
            n = min(self.chunk, steps - start)
            window = {k: v[:, start:start + n] for k, v in request.inputs.items()}
            form, final = None, start + n < steps  # the last chunk leaves its sums to FinalState
            if n >= 2 and (n == self.chunk or start == 0):
                zero = not any(np.any(state[a.state]) for a in self.plan.accumulators)
                form = self.form(n, zero, final)
            if form is None:
                result = self.recurrent.run(RunRequest(request.params, state, window, n))
                pieces.append(result.outputs)
                state = result.state
                continue
            whole = {k: v[:, None] for k, v in window.items()}
            result = form.run(RunRequest(request.params, state, whole, 1))
            outputs = {k: v[:, 0] for k, v in result.outputs.items()}
            if not final:
                sums = {a.state: Sum(a, self.letters[a.state], None if zero else state[a.state],
                                     *(outputs.pop(f"{a.state}/{f}", None) for f in ("key", "value", "log_decay")))
                        for a in self.plan.accumulators}
                result.state = FinalState([v.name for v in self.program.states], result.state, sums)
            pieces.append(outputs)
            state = result.state
        outputs = {k: np.concatenate([p[k] for p in pieces], axis=1) if len(pieces) > 1 else pieces[0][k]
                   for k in pieces[0]}
        return RunResult(state, outputs)


@dataclass
class Sum:
    """An accumulator's state after a chunk, not yet added up: ``start`` (None: zero) plus the sum
    over the chunk's steps of ``outer(k_s, v_s)`` (each weighed, with a decay, by the products
    ``exp(L_last - L_s)`` of the decays after step ``s``, and ``start`` by ``exp(L_last)``).
    Arrays carry the batch axis first; ``letters`` are ``outer_letters``' (state, key, value, decay)."""

    acc: Accumulator
    letters: tuple[str, str, str, str]
    start: np.ndarray | None
    key: np.ndarray     # [B, L, *k]
    value: np.ndarray   # [B, L, *v]
    log_decay: np.ndarray | None = None  # [B, L, *decay sizes]: the sums L_t of log a up to t

    def _weights(self):
        """exp(L_last - L_s) [B, L, *sizes] and exp(L_last) [B, *sizes], in float64; (None, None) without decay."""
        if self.log_decay is None:
            return None, None
        logs = self.log_decay.astype(np.float64)
        return np.exp(logs[:, -1:] - logs), np.exp(logs[:, -1])

    def _spread(self, w: np.ndarray, onto: str, lead: int) -> np.ndarray:
        """Weights ``w`` over the decay's letters after ``lead`` axes, broadcastable over the letters ``onto``."""
        decay = self.letters[3]
        order = sorted(decay, key=onto.index)
        w = w.transpose(*range(lead), *(lead + decay.index(x) for x in order))
        sizes = dict(zip(order, w.shape[lead:]))
        return w.reshape(w.shape[:lead] + tuple(sizes.get(x, 1) for x in onto))

    def total(self) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow gives Inf, as the stepped run's would
            return self._total()

    def _total(self) -> np.ndarray:
        sig, ka, va, _ = self.letters
        key, value = self.key, self.value
        after, whole = self._weights()
        if after is not None:
            key = (key * self._spread(after, ka, 2)).astype(np.float32)
        b, steps = key.shape[:2]
        summed = np.matmul(key.reshape(b, steps, -1).transpose(0, 2, 1), value.reshape(b, steps, -1))
        summed = summed.reshape((b, *key.shape[2:], *value.shape[2:]))
        summed = np.ascontiguousarray(np.einsum(f"...{ka}{va}->...{sig}", summed))
        if self.start is None:
            return summed
        start = self.start if whole is None else (self.start * self._spread(whole, sig, 1)).astype(np.float32)
        return start + summed

    def surely_finite(self) -> bool:
        """Whether every entry of ``total()`` is finite, known from a bound without adding it up."""
        after, whole = self._weights()
        big = lambda a: max(float(np.max(a, initial=0.0)), -float(np.min(a, initial=0.0)))  # noqa: E731  (no |a| copy)
        bound = self.key.shape[1] * big(self.key) * big(self.value) * (1.0 if after is None else big(after))
        if self.start is not None:
            bound += big(self.start) * (1.0 if whole is None else big(whole))
        return bool(np.isfinite(bound)) and bound < 0.5 * float(np.finfo(np.float32).max)


class FinalState(Mapping):
    """A run's final state, by state name, whose accumulators' pending ``Sum``s are added up when first read."""

    def __init__(self, names: list[str], ready: Mapping[str, np.ndarray], pending: dict[str, Sum]):
        self.names = list(dict.fromkeys([k for k in names if k in ready or k in pending] + list(ready)))
        self.ready = {k: v for k, v in ready.items() if k not in pending}
        self.pending = dict(pending)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.pending:
            self.ready[name] = self.pending.pop(name).total()
        return self.ready[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def surely_finite(self, name: str) -> bool:
        """A pending sum known to be finite without adding it up (False for any other state)."""
        return name in self.pending and self.pending[name].surely_finite()
