"""The embedded API: ``nspec.load(path, **hyperparameters) -> Model``.

A ``Model`` holds a compiled ``Program`` and its parameters.  ``run`` initialises state on the
host (the reference interpreter's ``initialize``, so every backend starts from the same arrays),
hands the time loop to a backend through the executor protocol, and turns recorded values into
monitor arrays (``M.i``/``M.t`` for spikes, ``M.<var>``/``M.t`` for state traces).
"""

from __future__ import annotations

import math
import time
import zipfile
import warnings
from pathlib import Path
from dataclasses import replace
from typing import Any, Iterator, Mapping

import numpy as np

from nspec.compiler.data_dims import DataShapes
from nspec.compiler.driver import compile_file, parse_file
from nspec.compiler.overrides import Given, keywords
from nspec.compiler.ir import Monitor, Program
from nspec.compiler.threefry import counter_problem
from nspec.compiler.units import parse_duration
from nspec.compiler.limits import Limits, check_recording, limits_for
from nspec.compiler.limits import current as current_limits
from nspec.dsl.diagnostics import SourceMap

from .checks import RunChecks
from .data_binding import changed, npz_shapes, shapes_of
from .executor import BackendError, RunRequest, executor_class
from .parallel import CHUNK, ParallelFormExecutor
from .lossless import LossyCastError, convert
from .reference import initialize
from .weight_files import WeightsError, read_weights
from .streaming import Chunk, NpzStreamWriter, chunk_size, concatenate, record_bytes_per_step, run_chunks


class NonFiniteError(ArithmeticError):
    """A run produced NaN or Inf in its state (``nan_check="error"``): says which, when and where."""


class InputError(ValueError):
    """Inputs given to ``run`` do not fit the model's input ports."""


class CounterError(ValueError):
    """A run would take a step counter past the range where its random draws are distinct."""


class LimitExceeded(MemoryError):
    """A run would need more memory than the limit allows (its recorded values, say); says the estimate."""


def load(path: str | Path, target: str | None = None, max_memory: str | int | None = None,
         given: Given | None = None, *, weights: str | Path | Mapping[str, Any] | None = None,
         inputs: str | Path | Mapping[str, Any] | None = None, **hyper) -> "Model":
    """Compile the spec at ``path`` (its ``simulate`` target, or ``target``) with the given hyperparameters.

    A hyperparameter of an imported file is named by its module, ``**{"cells.tau": "5 ms"}``
    (``compiler/overrides.py``); an unknown name is an ``NspecError`` that lists the known ones.
    ``max_memory`` (bytes, or a string such as ``"8GB"``; default: half the machine's physical
    memory) bounds what compiling and running may allocate: a spec or run estimated to need more is
    refused before anything of that size is built (``docs/reliability.md``).  ``given`` says where
    the hyperparameters were written, for their diagnostics (the command line passes its own;
    default: this call).  ``weights`` (what ``load_weights`` takes; they are loaded) and ``inputs``
    (arrays by name, or an ``.npz`` file: only their shapes are read) bind the spec's data-bound
    dimensions, its ``auto`` hyperparameters (``docs/language.md``, "Dimensions bound by data")."""
    sources = SourceMap()
    limits = limits_for(max_memory) if max_memory is not None else None
    given = given or keywords("nspec.load", path, hyper)
    tensors = read_weights(weights) if weights is not None else None
    model = Model(None, str(path), dict(hyper), None, target)
    model.limits = limits
    if tensors is not None:
        model._weights_data = (shapes_of(tensors), _origin(weights, "the weights given"))
    if inputs is not None:
        try:
            shapes = npz_shapes(inputs) if isinstance(inputs, (str, Path)) else shapes_of(inputs)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot read the shapes of the inputs in {inputs}: {exc}") from None
        model._inputs_data = (shapes, _origin(inputs, "the inputs given"))
    model.program = compile_file(str(path), hyper, target, sources=sources, limits=limits, data=model._data(),
                                 given=given)
    model.module, _ = parse_file(str(path), sources)
    if tensors is not None:
        model._load_tensors(tensors, model._weights_data[1], strict=True)
    return model


def _origin(source, default: str) -> str:
    """How messages name where data came from: its file, or ``default`` for a mapping."""
    return str(source) if isinstance(source, (str, Path)) else default


class Model:
    """A compiled model with its parameters; run it on any backend."""

    def __init__(self, program: Program, path: str = "<program>", hyper: dict | None = None, module=None,
                 target: str | None = None):
        self.program = program
        self.path = path
        self.hyper = hyper or {}
        self.module = module
        self.target = target
        # the shapes (and origin) of the weights loaded and the inputs last run on: what binds the
        # program's data-bound dimensions (``runtime/data_binding.py``)
        self._weights_data: tuple[dict, str] | None = None
        self._inputs_data: tuple[dict, str] | None = None
        self.params: dict[str, np.ndarray] | None = None
        self.state: Mapping[str, np.ndarray] | None = None  # a parallel run's: runtime/parallel.py FinalState
        self.last_seed: int | None = None  # the seed of the run that left ``state``
        self.last_timing: dict[str, float] = {}
        self.limits: Limits | None = None  # None: the limits in force when it runs (``limits.current()``)
        self._executors: dict[tuple, Any] = {}
        self._checks: RunChecks | None = None

    @property
    def checks(self) -> RunChecks:
        """Bounds and division checks at the start and end of a run (found once)."""
        if self._checks is None:
            self._checks = RunChecks(self.program)
        return self._checks

    # ------------------------------------------------------------ facts
    @property
    def dt(self) -> float:
        return self.program.dt

    @property
    def default_steps(self) -> int | None:
        return self.program.duration_steps

    @property
    def monitors(self) -> tuple[Monitor, ...]:
        return self.program.monitors

    @property
    def populations(self) -> dict[str, int]:
        """Spiking populations: path -> size (every ``<path>/spike`` value of the step graph)."""
        out = {}
        for r in self.program.step.results:
            if r.kind == "value" and r.name.endswith("/spike"):
                out[r.name[: -len("/spike")]] = self.program.step.nodes[r.node].shape[0]
            elif r.kind == "value" and r.name == "spike":
                out[""] = self.program.step.nodes[r.node].shape[0]
        return out

    # ------------------------------------------------------------ parameters
    def initial(self, batch: int, seed: int | None) -> tuple[dict, dict]:
        return initialize(self.program, batch, self.program.seed if seed is None else seed, self.params)

    def load_weights(self, source: str | Path | Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters by their declared external names (``key "..."``) or paths.

        Accepts ``.safetensors``, ``.npz``, a ``torch.save``d state_dict (loaded with
        ``weights_only=True``) or a mapping.  Every key must be consumed and every shape must match.
        Weights that give a data-bound dimension another size recompile the model for it.
        """
        self._load_tensors(read_weights(source), _origin(source, "the weights given"), strict)

    def _load_tensors(self, tensors: dict[str, np.ndarray], origin: str, strict: bool) -> None:
        """``load_weights`` of tensors already read from ``origin`` (named in messages)."""
        weights_data = (shapes_of(tensors), origin)
        if self.program.data_dims:  # new weights are new data: the inputs of earlier runs no longer count
            self._rebind(weights_data, None, keep_params=False)
        self._weights_data = weights_data
        by_key = {}
        for v in self.program.params:
            by_key[v.key or v.name] = v
        unknown = sorted(set(tensors) - set(by_key))
        missing = sorted(set(by_key) - set(tensors))
        problems = []
        if unknown:
            problems.append(f"unknown key(s) {', '.join(unknown)} (the model's keys: {', '.join(sorted(by_key))})")
        if missing and strict:
            problems.append(f"missing key(s) {', '.join(missing)}")
        params = dict(self.params) if self.params is not None else initialize(self.program, 1, self.program.seed)[0]
        for key, value in tensors.items():
            var = by_key.get(key)
            if var is None:
                continue
            arr = np.asarray(value)
            if tuple(arr.shape) != tuple(var.shape):
                if arr.size == int(np.prod(var.shape)) and arr.size == 1:
                    arr = arr.reshape(var.shape)
                else:
                    problems.append(f"'{key}' has shape {list(arr.shape)}, the model's {var.name} needs {list(var.shape)}")
                    continue
            try:
                params[var.name] = convert(arr, var.dtype.numpy, f"weight '{key}' ({var.dtype.value})")
            except LossyCastError as exc:
                problems.append(str(exc))
        if problems:
            raise WeightsError("weights do not fit the model: " + "; ".join(problems))
        self.checks.at_start(params)
        self.params = params

    # ------------------------------------------------------------ dimensions bound by data
    def _data(self) -> DataShapes:
        weights, w_from = self._weights_data or ({}, "the weights")
        inputs, i_from = self._inputs_data or ({}, "the inputs")
        return DataShapes(weights, inputs, w_from, i_from)

    def _rebind(self, weights_data, inputs_data, keep_params: bool) -> None:
        """Recompile when the weights and inputs given bind a data-bound dimension to another size:
        they are the data; with ``keep_params`` the loaded parameters stay (their shapes are data too)."""
        before = (self._weights_data, self._inputs_data)
        self._weights_data, self._inputs_data = weights_data, inputs_data
        try:
            if not changed(self.program, self._data()):
                return
            program = self._compiled_for(self._data())
        except BaseException:
            self._weights_data, self._inputs_data = before
            raise
        kept = self.params if keep_params else None
        self.program, self._executors, self._checks, self.state, self.params = program, {}, None, None, None
        if kept is not None:  # loaded values stay where the new program's shapes take them
            fresh = self.initial(1, None)[0]
            self.params = {k: kept[k] if k in kept and np.shape(kept[k]) == np.shape(v) else v for k, v in fresh.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        params = self.params if self.params is not None else initialize(self.program, 1, self.program.seed)[0]
        return {(v.key or v.name): params[v.name] for v in self.program.params}

    # ------------------------------------------------------------ running
    def executor(self, backend: str, parallel_form: bool = True, parallel_chunk: int = CHUNK, **options):
        """The backend's executor of this program, built once per backend and options.

        With ``parallel_form`` (the default) a run of a whole sequence goes through the parallel
        form where ``compiler/passes/parallel_form.py`` applies, ``parallel_chunk`` tokens at a time
        (``runtime/parallel.py``); ``parallel_form=False`` steps it token by token."""
        key = (backend, parallel_form, parallel_chunk, tuple(sorted(options.items())))
        if key not in self._executors:
            t0 = time.perf_counter()
            if parallel_form:
                self._executors[key] = ParallelFormExecutor(self.program, backend, parallel_chunk, **options)
            else:
                self._executors[key] = executor_class(backend)(self.program, **options)
            self.last_timing["compile_s"] = time.perf_counter() - t0
        else:
            self.last_timing["compile_s"] = 0.0
        return self._executors[key]

    def _steps(self, steps, duration, inputs) -> int:
        if steps is not None:
            return int(steps)
        if duration is not None:
            return max(int(round(parse_duration(duration) / self.dt)), 1)
        lengths = {a.shape[1] for a in inputs.values() if a.shape[1] > 1}
        if lengths:
            return min(lengths)  # a data sequence sets the length of its run
        if self.default_steps is not None:
            return self.default_steps
        return 1

    def _inputs(self, inputs: Mapping[str, Any] | None, batch: int | None) -> tuple[dict[str, np.ndarray], bool, int]:
        """Inputs as [B, T, *shape]; also whether every input was given without a time axis."""
        inputs = dict(inputs or {})
        ports = {v.name: v for v in self.program.inputs}
        unknown = sorted(set(inputs) - set(ports))
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are "
                             f"{', '.join(ports) or 'none'}")
        out, timeless, b = {}, True, batch
        for name, value in inputs.items():
            var = ports[name]
            try:  # before any axis is added, so that the index in the message is the caller's
                arr = convert(value, var.dtype.numpy, f"input '{name}' ({var.dtype.value})")
            except LossyCastError as exc:
                raise InputError(str(exc)) from None
            rank = len(var.shape)
            lead = arr.ndim - rank
            if lead < 0 or tuple(arr.shape[lead:]) != tuple(var.shape):
                raise InputError(f"input '{name}' has shape {list(arr.shape)}; the port is {var.dtype.value}"
                                 f"{list(var.shape)} (with optional leading batch and time axes)")
            if batch is None:
                if lead == 0:
                    arr = arr[None, None]
                elif lead == 1:
                    arr, timeless = arr[None], False
                else:
                    raise InputError(f"input '{name}' has shape {list(arr.shape)}: without a batch give "
                                     f"{_axes('time', shape=var.shape)} or {_axes(shape=var.shape)}; pass "
                                     f"batch={arr.shape[0]} for {_axes('batch', 'time', shape=var.shape)}")
            else:
                if lead == 1:
                    arr = arr[:, None]
                elif lead == 2:
                    timeless = False
                else:
                    raise InputError(f"input '{name}' has shape {list(arr.shape)}: with batch={batch} give "
                                     f"{_axes('batch', 'time', shape=var.shape)} or "
                                     f"{_axes('batch', shape=var.shape)}")
                if arr.shape[0] != batch:
                    raise InputError(f"input '{name}' has batch size {arr.shape[0]}, expected {batch}")
            out[name] = arr
            b = arr.shape[0]
        missing = sorted(set(ports) - set(inputs))
        if missing:
            described = ", ".join(f"{n} ({ports[n].dtype.value}{list(ports[n].shape)})" for n in missing)
            raise InputError(f"missing input(s) {described}: give each as an array by name (nspec run --inputs "
                             "FILE.npz, or Model.run(inputs={...}))")
        return out, timeless, (b or 1)

    def run(self, inputs: Mapping[str, Any] | None = None, steps: int | None = None,
            duration: str | float | None = None, record=None, backend: str = "reference", seed: int | None = None,
            batch: int | None = None, progress: bool = False, nan_check: str = "error", resume: bool = False,
            max_memory: str | int | None = None, **options) -> dict[str, np.ndarray]:
        """Run from the initial state; returns outputs, monitor arrays and recorded values by name.

        The run lasts ``steps`` steps, or ``duration`` of model time (``"200 ms"``, ``"1s"``: what
        ``nspec run --duration`` takes, or a number of seconds), else as long as the time axis of the
        inputs, else the spec's ``simulate``.  A duration that is not a positive time raises ValueError.

        Shapes.  With ``batch=None`` each input is ``[time, *port]`` or ``[*port]`` (held for every
        step), and the results carry no batch axis: outputs ``[time, *port]``, a state monitor
        ``name.<var>`` ``[samples, neurons]``, a spike monitor ``name.i`` and ``name.t``.  A batch axis
        is only read when asked for: with ``batch=B`` inputs are ``[B, time, *port]`` or ``[B, *port]``,
        outputs ``[B, time, *port]``, a state monitor ``[samples, B, neurons]`` and a spike monitor adds
        ``name.trial``.  An input with a batch axis under ``batch=None`` (``[1, T, D]``, say) raises
        ``InputError`` naming the shapes it may have.

        ``seed`` (default: the spec's ``simulate ... seed``) sets the initial values and keys the
        random draws of every step.  ``resume=True`` continues from the state the last run (or
        ``step``) ended in, with its seed: the step counter and the random streams go on, so two
        resumed runs give the same values as one run as long as both.

        ``nan_check`` ("error", "warn" or "off"): after every chunk of steps (``streaming.chunk_size``),
        when the state holds NaN or Inf, raise ``NonFiniteError`` at once (or warn) naming the state
        variables, the first step and the spec line where a finite value first became non-finite
        (found by replaying that chunk on the reference interpreter with ``check_finite``).
        ``max_memory`` (bytes or ``"8GB"``): a run whose recorded values are estimated to exceed it
        is refused with ``LimitExceeded`` before it starts (``stream`` writes them to a file instead).

        ``parallel_form`` (default True): a run of several steps that records nothing per step, of a
        program whose only memory is sums of outer products read linearly (BDH, linear attention),
        runs as masked matmuls over chunks of ``parallel_chunk`` (256) tokens
        (``compiler/passes/parallel_form.py``); False steps it token by token.  Either gives the
        same outputs and final state up to float rounding.  The final state of the last parallel
        chunk is added up only when read (``get_state``, ``step``, ``resume=True``; ``runtime/parallel.py``).
        """
        pieces = list(self._run_pieces(inputs, steps, duration, record, backend, seed, batch, progress, nan_check,
                                       max_memory, False, options, resume))
        return concatenate(pieces)

    def stream(self, path: str | Path, inputs: Mapping[str, Any] | None = None, steps: int | None = None,
               duration: str | float | None = None, record=None, backend: str = "reference", seed: int | None = None,
               batch: int | None = None, progress: bool = False, nan_check: str = "error", force: bool = False,
               **options) -> dict[str, tuple[int, ...]]:
        """``run``, writing its results to the ``.npz`` at ``path`` chunk by chunk instead of holding them:
        memory stays bounded however long the run.  The file holds what ``np.savez(path, **run(...))``
        would; returns every array's shape.  Nothing is left at ``path`` if the run fails."""
        writer = NpzStreamWriter(path)
        try:
            for piece in self._run_pieces(inputs, steps, duration, record, backend, seed, batch, progress, nan_check,
                                          None, True, options):
                writer.append(piece)
        except BaseException:
            writer.discard()
            raise
        return writer.close(replace_existing=force)

    def _run_pieces(self, inputs, steps, duration, record, backend, seed, batch, progress, nan_check, max_memory,
                    streamed: bool, options, resume: bool = False) -> Iterator[dict[str, tuple[np.ndarray, int]]]:
        """The run, chunk by chunk: each chunk's results as name -> (array, the axis chunks follow along)."""
        if nan_check not in ("error", "warn", "off"):
            raise ValueError(f"nan_check is 'error', 'warn' or 'off', got {nan_check!r}")
        if self.program.data_dims and inputs and not resume:
            self._rebind(self._weights_data, (shapes_of(inputs), "the inputs given to run"),
                         keep_params=self._weights_data is not None)
        arrays, timeless, b = self._inputs(inputs, batch)
        b = batch or b
        steps = self._steps(steps, duration, arrays)
        for name, arr in arrays.items():
            if arr.shape[1] == 1 and steps > 1:
                arrays[name] = np.broadcast_to(arr, (arr.shape[0], steps) + arr.shape[2:])
            elif arr.shape[1] < steps:
                raise InputError(f"input '{name}' covers {arr.shape[1]} steps; the run needs {steps}")
            else:
                arrays[name] = arr[:, :steps]  # every backend gets exactly the steps it runs
        wanted = self._record_list(record)
        per_step = record_bytes_per_step(self._recorded_types(wanted), b)
        if not streamed:
            limits = limits_for(max_memory) if max_memory is not None else (self.limits or current_limits())
            too_big = check_recording(steps, per_step, limits)
            if too_big is not None:
                raise LimitExceeded(too_big)
        params, state = self._start(b, batch, seed, resume)
        problem = counter_problem(self.program.step, state, steps)
        if problem:
            raise CounterError(problem)
        self.checks.at_start(params, arrays)
        ex = self.executor(backend, **options)
        request = RunRequest(params, state, arrays, steps, tuple(wanted))
        period = math.lcm(1, *(m.every for m in self.monitors), *(every for _, every in wanted))
        chunked = streamed or progress or nan_check != "off"
        size = chunk_size(steps, period, per_step) if chunked else steps
        drop_time = timeless and steps == 1
        bar = _progress_bar(steps) if progress and steps >= 1000 else None
        t0, writing, checking = time.perf_counter(), 0.0, nan_check != "off"
        try:
            for chunk in run_chunks(ex, request, size):
                if checking and self._check_finite(chunk, nan_check):
                    checking = False  # warned once; the run goes on
                if bar is not None:
                    bar.update(chunk.steps)
                handed = time.perf_counter()
                yield self._collect(chunk.result, chunk.start, chunk.steps, batch, drop_time, record)
                writing += time.perf_counter() - handed  # the caller's time (a streamed file's writes)
                self.state = chunk.result.state
        finally:
            if bar is not None:
                bar.close()
        self.last_timing["run_s"] = time.perf_counter() - t0 - writing
        self.last_timing["steps"] = steps
        self.checks.at_end(self.state)
        self.last_seed = self.last_seed if resume else seed

    def _start(self, b: int, batch: int | None, seed: int | None, resume: bool) -> tuple[dict, dict]:
        """Parameters and the state a run starts from: the initial ones, or with ``resume`` the held ones."""
        if not resume:
            return self.initial(b, seed)
        if self.state is None:
            raise ValueError("resume=True continues a previous run, but this model has not run yet")
        if seed is not None:
            raise ValueError("resume=True continues the previous run's random streams; give seed= to a fresh run")
        held = {len(v) for v in self.state.values()}
        if held and held != {b}:
            raise ValueError(f"resume=True: the held state has batch size {held.pop()}, this run asks for {b}")
        return self.initial(b, self.last_seed)[0], {k: v.copy() for k, v in self.state.items()}


    def _recorded_types(self, wanted: list[tuple[str, int]]) -> list[tuple[tuple[int, ...], np.dtype, int]]:
        """(per-sample shape, dtype, every) of every recorded value and output (outputs are kept every step)."""
        step = self.program.step
        out = [(tuple(v.shape), v.dtype.numpy, 1) for v in self.program.outputs]
        states = {v.name: v for v in self.program.states}
        for name, every in wanted:
            if name in states:
                out.append((tuple(states[name].shape), states[name].dtype.numpy, every))
                continue
            r = step.result(name, "output") or step.result(name, "value")
            if r is not None:
                out.append((step.nodes[r.node].shape, step.nodes[r.node].dtype.numpy, every))
        return out

    def _check_finite(self, chunk: Chunk, mode: str) -> bool:
        """After a chunk: NaN or Inf in the state raises ``NonFiniteError`` (or warns and returns True)."""
        state = chunk.result.state
        # a parallel-form run's pending sums are read only where a bound does not rule out an overflow
        sure = getattr(state, "surely_finite", lambda _: False)
        bad = {k: v for k in state if not sure(k) for v in (state[k],)
               if v.dtype.kind == "f" and not np.all(np.isfinite(v))}
        if not bad:
            return False
        which = ", ".join(f"'{k}' ({int(np.sum(~np.isfinite(v)))} of {v.size} values)" for k, v in sorted(bad.items()))
        last = chunk.start + chunk.steps
        message = f"the run produced NaN or Inf in state {which} by step {last}"
        compile_s = self.last_timing.get("compile_s", 0.0)  # the run's own, not the replay's
        replay = self.executor("reference", parallel_form=False, check_finite=True, first_step=chunk.start)
        self.last_timing["compile_s"] = compile_s
        try:
            replay.run(replace(chunk.request, record=()))
        except BackendError as exc:  # the reference interpreter names the step, the op and the spec line
            message += f"; first: {exc}"
        else:
            message += "; the reference interpreter stays finite on this run (a backend's rounding diverged)"
        if mode == "error":
            raise NonFiniteError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        return True

    def _record_list(self, record) -> list[tuple[str, int]]:
        wanted: dict[str, int] = {}
        for m in self.monitors:
            for v in m.variables:
                wanted[v] = math.gcd(wanted.get(v, m.every), m.every)
        for name in record or ():
            wanted[name] = 1
        self._recorded_every = dict(wanted)
        return sorted(wanted.items())

    def _collect(self, result, start: int, steps: int, batch: int | None, drop_time: bool,
                 record) -> dict[str, tuple[np.ndarray, int]]:
        """One chunk's results (its steps from ``start``): name -> (array, the axis chunks follow along)."""
        out: dict[str, tuple[np.ndarray, int]] = {}
        for v in self.program.outputs:
            arr = result.outputs[v.name]
            if drop_time:  # one step of timeless inputs: one chunk, no time axis to follow
                # `batch_axis n` places the batch at axis n (torch's h_n: [num_layers, B, H])
                out[v.name] = (arr[0, 0], 0) if batch is None else (np.moveaxis(arr[:, 0], 0, v.batch_axis or 0), 0)
                continue
            out[v.name] = (arr[0], 0) if batch is None else (arr, 1)
        for m in self.monitors:
            if m.kind == "spikes":
                rec = result.records[m.variables[0]]  # [T, B, n]
                if m.indices is not None:
                    rec = rec[..., list(m.indices)]
                if batch is None:
                    t_idx, i_idx = np.nonzero(rec[:, 0] > 0)
                    out[f"{m.name}.i"] = (i_idx.astype(np.int64), 0)
                else:
                    t_idx, b_idx, i_idx = np.nonzero(rec > 0)
                    out[f"{m.name}.i"], out[f"{m.name}.trial"] = (i_idx.astype(np.int64), 0), (b_idx, 0)
                out[f"{m.name}.t"] = ((t_idx + start) * self.dt, 0)
            else:
                for var in m.variables:
                    rec = result.records[var][:: m.every // self._recorded_every[var]]
                    if m.indices is not None:
                        rec = rec[..., list(m.indices)]
                    short = var.rsplit("/", 1)[-1]
                    out[f"{m.name}.{short}"] = (rec[:, 0] if batch is None else rec, 0)
                n = len(range(0, steps, m.every))
                out[f"{m.name}.t"] = ((np.arange(n) + start // m.every) * m.every * self.dt, 0)
        for name in record or ():
            rec = result.records[name]
            out[name] = (rec[:, 0] if batch is None else rec, 0)
        return out

    def step(self, inputs: Mapping[str, Any] | None = None, backend: str = "reference") -> dict[str, np.ndarray]:
        """Advance the held state by one step (initialising it on first use); returns the outputs."""
        if self.state is None:
            _, self.state = self.initial(1, None)
        params, _ = self.initial(1, None)
        arrays, _, _ = self._inputs(inputs, None)
        problem = counter_problem(self.program.step, self.state, 1)
        if problem:
            raise CounterError(problem)
        ex = self.executor(backend)
        self.checks.at_start(params, arrays)
        result = ex.run(RunRequest(params, dict(self.state), arrays, 1, ()))  # dict: pending sums added up
        self.checks.at_end(result.state)
        self.state = result.state
        return {k: v[0, 0] for k, v in result.outputs.items()}

    def get_state(self) -> dict[str, np.ndarray]:
        if self.state is None:
            _, self.state = self.initial(1, None)
        return {k: v.copy() for k, v in self.state.items()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        current = self.get_state()
        for k, v in state.items():
            if k not in current:
                raise KeyError(f"unknown state '{k}'; the model's states are {', '.join(current)}")
            arr = np.asarray(v)
            if arr.shape != current[k].shape:
                raise ValueError(f"state '{k}' has shape {list(current[k].shape)}, got {list(arr.shape)}")
            current[k] = convert(arr, current[k].dtype, f"state '{k}'")
        self.state = current

    def to_torch(self):
        """A ``torch.nn.Module`` of this model (see ``nspec.lowering.to_torch``); with data-bound
        dimensions it rebuilds itself for a state_dict or inputs of other sizes, as ``LazyLinear`` does."""
        from nspec.lowering.to_torch import to_module

        return to_module(self.program, params=self.params, rebuild=self._compiled_for if self.program.data_dims else None)

    def _compiled_for(self, data: DataShapes) -> Program:
        """This model's spec and hyperparameters compiled for the sizes ``data`` gives (the torch
        module's rebuild when its data-bound dimensions change)."""
        return compile_file(self.path, self.hyper, self.target, limits=self.limits, data=data)

    def to_nir(self):
        """The ``nir.NIRGraph`` of this model, a composite of ``std/nir.nspec`` boxes (docs/nir.md)."""
        from nspec.runtime.nir_export import to_nir
        return to_nir(self)

    def export_onnx(self, path: str | Path, **options) -> None:
        """A self-contained ONNX file: the whole run, with this model's parameters stored inside.

        Its data-bound dimensions stay symbolic where the graph can compute them from its inputs'
        shapes (``to_onnx.symbolic_for``): the spec is compiled again at other values to find them."""
        from nspec.lowering.to_onnx import export

        options.setdefault("params", self.initial(1, None)[0])
        options.setdefault("compile_at", self._compiled_at if Path(self.path).is_file() else None)
        export(self.program, str(path), **options)

    def _compiled_at(self, dims: dict[str, int]) -> Program:
        """The spec compiled with the data-bound dimensions ``dims`` given as values (no data)."""
        return compile_file(self.path, {**self.hyper, **dims}, self.target, limits=self.limits)


def _axes(*lead: str, shape: tuple[int, ...]) -> str:
    """A shape for a message: ``_axes("time", shape=(3,)) == "[time, 3]"``."""
    return "[" + ", ".join([*lead, *map(str, shape)]) + "]"


def _progress_bar(steps: int):
    """A progress bar over the run's steps (tqdm, imported only when a bar is shown)."""
    from tqdm import tqdm

    return tqdm(total=steps, unit="step", desc="running")
