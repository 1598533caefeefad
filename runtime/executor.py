"""The executor protocol every backend implements, and the registry that finds them.

A backend compiles a ``Program`` once (``__init__``) and runs it many times (``run``).  The
runtime (``runtime/model.py``) initialises parameters and state on the host with the reference
interpreter, so every backend starts from identical arrays; a backend only lowers the step
graph and the time loop around it.

Array conventions (B = batch, T = steps):

* ``params``: per-sample shapes, no batch axis.
* ``state``: ``[B, *shape]``.
* ``inputs``: ``[B, T, *shape]`` for every program input (T >= steps).
* ``outputs`` (result): ``[B, T, *shape]`` for every program output.
* ``records`` (result): for each requested ``(name, every)``, ``[T // every, B, *shape]``: the
  value at steps 0, every, 2*every, ...  A state name records the state *before* that step's
  update (the value at time t); a step-graph result name (an output or a ``value`` result, such as
  a population's spikes) records that step's value.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nspec.compiler.ir import Program


@dataclass
class RunRequest:
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    steps: int
    record: tuple[tuple[str, int], ...] = ()


@dataclass
class RunResult:
    state: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    records: dict[str, np.ndarray] = field(default_factory=dict)


class Executor(Protocol):
    """What ``Model.run(backend=...)`` calls."""

    name: str

    def __init__(self, program: Program, **options) -> None: ...

    def run(self, request: RunRequest) -> RunResult: ...


# backend name -> "module:class"; imported only when used, so `nspec check` stays fast.
BACKENDS: dict[str, str] = {
    "reference": "nspec.runtime.reference:ReferenceExecutor",
    "onnxruntime": "nspec.lowering.to_onnx:OnnxExecutor",
    "tvm": "nspec.lowering.tvm.executor:TvmExecutor",
    "torch": "nspec.lowering.to_torch:TorchExecutor",
}


class BackendError(Exception):
    """A backend is unknown, not installed, or cannot run this program."""


def require_values(program: Program, request: RunRequest) -> None:
    """Every parameter, state and input of ``program`` has a value in ``request``."""
    missing = [v.name for v in program.params if v.name not in request.params]
    missing += [v.name for v in program.states if v.name not in request.state]
    missing += [v.name for v in program.inputs if v.name not in request.inputs]
    if missing:
        raise BackendError(f"no value given for {', '.join(missing)}")


def executor_class(name: str):
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r} is not available: {exc}") from exc
