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
"""

from __future__ import annotations

import numpy as np

from nspec.compiler.ir import Program
from nspec.compiler.limits import LimitError
from nspec.compiler.passes.parallel_form import parallel_form, plan_parallel_form

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
        self.forms: dict[tuple[int, bool], object] = {}  # (chunk length, from zero) -> the backend's executor
        self.declined: dict[tuple[int, bool], str] = {}  # forms not built, and why

    @property
    def info(self) -> dict:
        """What the backend's recurrent executor reports of its build (the TVM cache's status)."""
        return getattr(self.recurrent, "info", {})

    def form(self, length: int, from_zero: bool):
        """The backend's executor of the parallel form for ``length`` tokens, or None when that form
        is over the memory limits or the backend cannot build it (``declined`` says why): those
        chunks then step recurrently, as they would without the pass."""
        key = (length, from_zero)
        if key not in self.forms:
            try:
                program = parallel_form(self.program, length, self.plan, from_zero)
                self.forms[key] = executor_class(self.backend)(program, **self.options)
            except (LimitError, BackendError) as exc:
                self.forms[key], self.declined[key] = None, str(exc)
        return self.forms[key]

    def run(self, request: RunRequest) -> RunResult:
        steps = request.steps
        if not self.plan.applies or steps < 2 or request.record:
            return self.recurrent.run(request)
        state, pieces = request.state, []
        for start in range(0, steps, self.chunk):
            n = min(self.chunk, steps - start)
            window = {k: v[:, start:start + n] for k, v in request.inputs.items()}
            form = None
            if n >= 2 and (n == self.chunk or start == 0):
                form = self.form(n, not any(np.any(state[a.state]) for a in self.plan.accumulators))
            if form is None:
                result = self.recurrent.run(RunRequest(request.params, state, window, n))
                pieces.append(result.outputs)
            else:
                whole = {k: v[:, None] for k, v in window.items()}
                result = form.run(RunRequest(request.params, state, whole, 1))
                pieces.append({k: v[:, 0] for k, v in result.outputs.items()})
            state = result.state
        outputs = {k: np.concatenate([p[k] for p in pieces], axis=1) if len(pieces) > 1 else pieces[0][k]
                   for k in pieces[0]}
        return RunResult(state, outputs)
