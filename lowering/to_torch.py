"""Lowering to PyTorch: a trainable module and an executor over the plans of ``torch_rules.py``,
run as the Python that ``torch_codegen.py`` generates for them (or interpreted, for debugging).

``to_module(program)`` gives a ``ProgramModule``: parameters registered under their external names
(``Var.key``, else the path with ``/`` -> ``.``) in nested submodules, frozen ones as buffers; the
time loop runs in ``forward`` with the state handled functionally, so backpropagation through time,
optimisers over ``module.parameters()`` and ``torch.compile`` work.  ``TorchExecutor`` runs the
executor protocol of ``runtime/executor.py`` on CPU or CUDA; ``evaluate`` runs one graph once.
The plans, the rules table (``RULES``) and the batching conventions are described in
``torch_rules.py``; their public names are importable from here too.

Parameters are stored raw: the elaborator already follows a reparameterised parameter's ARG with the
reparameterisation's ops (``compiler/bodies.py``), so ``Var.reparam`` is only a description here and
gradients reach the raw value through those ops.  States marked ``plastic`` are updated without
gradients unless ``plasticity_grad=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from nspec.compiler.data_dims import DataShapes
from nspec.compiler.ir import INIT_ONLY, Graph, Op, Program, Var, verify_program
from nspec.lowering.surrogates import SURROGATES
from nspec.lowering.torch_codegen import execute, prepare, run
from nspec.lowering.torch_rules import RULES, TORCH_DTYPES, TORCH_UNTIL, Frame, Loop, Plan, Site, compile_plan
from nspec.runtime.data_binding import changed
from nspec.runtime.executor import BackendError, RunRequest, RunResult, require_values


def evaluate(graph: Graph, env: dict[str, Any], batch: int | None = None) -> dict[tuple[str, str], torch.Tensor]:
    """Evaluate ``graph`` once with torch: ``{(name, kind): tensor}`` for every result.

    The counterpart of ``reference.evaluate``: without ``batch`` nothing is batched; with it,
    states and inputs in ``env`` carry a leading batch axis and parameters do not.
    """
    args = graph.args()
    unbatched = frozenset(args) if batch is None else frozenset()
    consts: dict[str, np.ndarray] = {}
    plan = compile_plan(graph, consts, unbatched)
    frame = Frame({k: torch.as_tensor(v) for k, v in env.items()},
                  {k: torch.from_numpy(np.array(v)) for k, v in consts.items()}, batch)
    vals = execute(plan, frame)
    return {(r.name, r.kind): vals[r.node] for r in graph.results}


# ---------------------------------------------------------------- parameters
def external_name(var: Var) -> str:
    """The state_dict key of a parameter: its ``key``, else its path with ``/`` -> ``.``."""
    return var.key or var.name.replace("/", ".")


def _register(root: nn.Module, var: Var, value: torch.Tensor) -> tuple[nn.Module, str]:
    """Register ``value`` under ``external_name(var)`` with submodules for the dotted prefix."""
    key = external_name(var)
    *path, leaf = key.split(".")
    if not all(path) or not leaf:
        raise BackendError(f"{var.span}: error: parameter {var.name!r} has an invalid weight name {key!r}")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            if hasattr(module, part):
                raise BackendError(f"{var.span}: error: weight name {key!r} of {var.name!r} clashes with "
                                   f"another weight or a torch.nn.Module attribute ({part!r}); give it a `key`")
            child = nn.Module()
            module.add_module(part, child)
        module = child
    if hasattr(module, leaf):
        raise BackendError(f"{var.span}: error: weight name {key!r} of {var.name!r} is used twice or clashes "
                           "with a torch.nn.Module attribute; give it a distinct `key`")
    if var.learnable and var.dtype.is_float:
        module.register_parameter(leaf, value if isinstance(value, nn.Parameter) else nn.Parameter(value))
    else:
        module.register_buffer(leaf, value)  # frozen weights and index tensors: saved, never trained
    return module, leaf


# ---------------------------------------------------------------- the module
@dataclass(frozen=True, slots=True)
class _Lowered:
    """What a ProgramModule keeps besides tensors (a plain object, so nn.Module leaves it alone)."""

    program: Program
    step: Plan
    weights: tuple[tuple[Var, nn.Module, str], ...]
    init_plans: dict[str, tuple[Plan, int]]   # states with a RANDOM-free initial value, run in torch
    init_cache: dict[int, dict[str, np.ndarray]]
    next_nodes: dict[str, int]
    output_nodes: dict[str, int]
    result_nodes: dict[str, int]              # outputs and `value` results, by name
    plastic: frozenset[str]
    seed: int
    options: dict[str, Any]


class ProgramModule(nn.Module):
    """A compiled nspec program as a torch module (build it with ``to_module``).

    ``forward(steps=None, state=None, return_state=None, batch=None, **inputs)`` takes every input as
    [B, T, *shape] and returns ``{output: [B, T, *shape]}`` (plus ``"state/<path>"``: the final
    state, when ``return_state``).  Inputs given as [B, *shape], without the time axis, are one data
    step (a whole sequence or image per sample, the reference's whole forward): the outputs then
    come back without it too, as [B, *shape] with the batch at the port's ``batch_axis`` (torch.nn.
    LSTM's ``h_n``: [num_layers, B, H]).  Which layout is read from each input's rank against its
    port's (``_one_step``).  The initial state is ``initial_state(B)`` unless ``state`` gives some
    or all of it as [B, *shape].
    """

    def __init__(self, program: Program, params: dict[str, Any], *, seed: int | None = None,
                 plasticity_grad: bool = False, return_state: bool = False, propagate: str = "auto",
                 rebuild: Callable[[DataShapes], Program] | None = None):
        super().__init__()
        if propagate not in ("auto", "dense", "event"):
            raise BackendError(f"propagate must be 'auto', 'dense' or 'event', not {propagate!r}")
        self._nspec_options = (seed, {"plasticity_grad": plasticity_grad, "return_state": return_state,
                                      "propagate": propagate})
        self._nspec_rebuild = rebuild  # compiles the spec for other data sizes (``Model._compiled_for``)
        self._build(program, params)
        if rebuild is not None and program.data_dims:
            self.register_load_state_dict_pre_hook(ProgramModule._rebind_to_state_dict)

    def _build(self, program: Program, params: dict[str, Any]) -> None:
        """Register the weights (``params``: arrays, or tensors and parameters kept as they are) and
        compile the plans of ``program``."""
        seed, options = self._nspec_options
        verify_program(program)
        step = program.step
        derivs = [r.name for r in step.results if r.kind == "deriv"]
        if derivs:
            raise BackendError(f"the torch backend needs a discretised program, but {', '.join(derivs)} "
                               "still have derivatives (run the discretisation pass first)")
        init_only = [f"%{i} ({n.op.value})" for i, n in enumerate(step.nodes) if n.op in INIT_ONLY]
        if init_only:
            raise BackendError(f"the step graph holds initialisation-only nodes: {', '.join(init_only)}")
        missing = [v.name for v in program.params if v.name not in params]
        if missing:
            raise BackendError(f"no value given for parameters {', '.join(missing)}")
        weights = []
        for v in program.params:
            value = params[v.name]
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(np.array(np.broadcast_to(value, v.shape), dtype=v.dtype.numpy))
            weights.append((v, *_register(self, v, value)))

        consts: dict[str, np.ndarray] = {}
        plastic = frozenset(s.name for s in program.states if s.plastic)
        step_plan = compile_plan(step, consts, local_results=plastic)
        prepare(step_plan)
        next_nodes = {s.name: step.result(s.name, "next").node for s in program.states}
        output_nodes = {o.name: step.result(o.name, "output").node for o in program.outputs}
        # Results a run can return or record by name; an output wins over a value of the same name.
        result_nodes = {r.name: r.node for r in step.results if r.kind == "value"}
        result_nodes.update({r.name: r.node for r in step.results if r.kind == "output"})
        init_plans = self._init_plans(program, consts)
        holder = nn.Module()
        for name, value in consts.items():
            holder.register_buffer(name, torch.from_numpy(np.array(value)), persistent=False)
        self._nspec_consts = holder
        self._nspec = _Lowered(program, step_plan, tuple(weights), init_plans, {}, next_nodes, output_nodes,
                               result_nodes, plastic, program.seed if seed is None else int(seed), dict(options))

    # -- dimensions bound by data (``auto`` hyperparameters): rebuilt as a LazyLinear materialises
    def _respecialise(self, data: DataShapes, keep: bool) -> None:
        """Rebuild for the sizes ``data`` gives the program's data-bound dimensions, if they change:
        with ``keep`` the current weights stay where their shapes do (the same ``Parameter``
        objects, so an optimiser holding them goes on); the others start from their initial values."""
        program = self._nspec.program
        if not changed(program, data):
            return
        new = self._nspec_rebuild(data)
        device = self._device()
        old = {external_name(v): getattr(module, leaf) for v, module, leaf in self._nspec.weights} if keep else {}
        from nspec.runtime.reference import initialize

        fresh = initialize(new, 1, self._nspec.seed)[0]
        params = {v.name: old[external_name(v)] if external_name(v) in old
                  and tuple(old[external_name(v)].shape) == v.shape else fresh[v.name] for v in new.params}
        for name in list(self._modules):
            del self._modules[name]
        self._parameters.clear()
        self._buffers.clear()
        self._build(new, params)
        self.to(device)

    @staticmethod
    def _rebind_to_state_dict(module, state_dict, prefix, *_):
        """Before ``load_state_dict``: the state_dict's shapes bind the data-bound dimensions."""
        shapes = {k[len(prefix):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith(prefix)}
        module._respecialise(DataShapes(weights=shapes, weights_from="the state_dict"), keep=False)

    @staticmethod
    def _init_plans(program: Program, consts) -> dict[str, tuple[Plan, int]]:
        """Plans for states whose initial value is computed from constants and parameters only.

        Those are evaluated in torch from the current (raw) parameters, so a learned start state
        gets gradients and follows ``load_state_dict``; states with random draws come from the
        reference ``initialize`` instead (per trial, with the module's seed).
        """
        init = program.init
        params = {v.name for v in program.params}
        plans = {}
        for v in program.states:
            r = init.result(v.name, "value")
            if r is None:
                continue
            cone = init.reachable([r.node])
            nodes = [init.nodes[i] for i in cone]
            if any(n.op not in RULES or (n.op is Op.ARG and n.attr("name") not in params) for n in nodes):
                continue
            plan = compile_plan(init, consts, frozenset(init.args()), f"i{len(plans)}_", roots=[r.node])
            plans[v.name] = (plan, r.node)
        return plans

    # -- values
    def weight_of(self, name: str) -> torch.Tensor:
        """The stored (raw) tensor of the parameter with path ``name``."""
        for v, module, leaf in self._nspec.weights:
            if v.name == name:
                return getattr(module, leaf)
        raise KeyError(name)

    def param_values(self) -> dict[str, torch.Tensor]:
        """Every parameter's stored (raw) tensor, by path: what the step graph's ARGs read."""
        return {v.name: getattr(module, leaf) for v, module, leaf in self._nspec.weights}

    def _device(self) -> torch.device:
        for t in self._nspec_consts.buffers():
            return t.device
        for _, module, leaf in self._nspec.weights:
            return getattr(module, leaf).device
        return torch.device("cpu")

    def _frame(self, args, batch) -> Frame:
        o = self._nspec.options
        return Frame(args, dict(self._nspec_consts.named_buffers()), batch, o["plasticity_grad"], o["propagate"],
                     run=run)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Every state's initial value as [batch, *shape]."""
        low = self._nspec
        raw = self.param_values()
        out = self._random_initial_state(batch)
        for v in low.program.states:
            if v.name in low.init_plans:
                plan, node = low.init_plans[v.name]
                value = execute(plan, self._frame(raw, None))[node].to(TORCH_DTYPES[v.dtype])
                out[v.name] = value.expand(v.shape).expand((batch,) + v.shape)
        return out

    @torch.compiler.disable
    def _random_initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        low = self._nspec
        wanted = [v for v in low.program.states if v.name not in low.init_plans]
        if not wanted:
            return {}
        if batch not in low.init_cache:
            from nspec.runtime.reference import initialize  # the host draws every backend's random init
            low.init_cache[batch] = initialize(low.program, batch, low.seed)[1]
        device = self._device()
        return {v.name: torch.as_tensor(low.init_cache[batch][v.name], device=device) for v in wanted}

    # -- running
    def step(self, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], cache: dict | None = None):
        """One step: ``state`` and ``inputs`` as [B, *shape] -> ``(next_state, results)``.

        ``results`` holds every output and ``value`` result of the step graph as [B, *shape].
        ``cache`` (a dict kept across the steps of one run) saves work that depends on parameters
        only.  For long runs under ``torch.compile``, compile this function rather than the
        module, whose time loop would be unrolled (``simulate(..., step=torch.compile(m.step))``).
        """
        low = self._nspec
        batch = _batch_of(state, inputs)
        cache = {} if cache is None else cache
        if "parameters" not in cache:  # module lookups are slow next to a small step: once per run
            cache["parameters"] = self.param_values()
            cache["constants"] = dict(self._nspec_consts.named_buffers())
        o = low.options
        frame = Frame({**cache["parameters"], **state, **inputs}, cache["constants"], batch, o["plasticity_grad"],
                      o["propagate"], cache, run)
        vals = execute(low.step, frame)
        flags = low.step.flags
        results = {name: vals[node] if flags[node] else _batched(vals[node], False, batch)
                   for name, node in low.result_nodes.items()}
        new = {name: vals[node] if flags[node] else _batched(vals[node], False, batch)
               for name, node in low.next_nodes.items()}
        if low.plastic and not o["plasticity_grad"]:
            new.update({name: new[name].detach() for name in low.plastic})
        return new, results

    def simulate(self, state: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], steps: int,
                 record: tuple[tuple[str, int], ...] = (), step: Callable | None = None):
        """Run ``steps`` steps from ``state`` ([B, *shape]) with ``inputs`` ([B, T, *shape]).

        Returns ``(outputs, state, records)``: outputs [B, steps, *shape], the final state, and for
        each ``(name, every)`` the recorded values [steps // every, B, *shape] (a state before its
        update at that step, a step result that step's value).  ``step`` replaces ``self.step``
        (e.g. a compiled one, which then gets no cache: its inputs must keep their structure).
        """
        low = self._nspec
        program = low.program
        batch = _batch_of(state, inputs)
        states = {s.name for s in program.states}
        for name, _ in record:
            if name not in states and name not in low.result_nodes:
                raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        cache = {} if step is None else None
        step = self.step if step is None else step
        outputs: dict[str, list] = {name: [] for name in low.output_nodes}
        records: dict[str, list] = {name: [] for name, _ in record}
        steps_of = {name: x.unbind(1) for name, x in inputs.items()}  # one view per step, made at once
        for t in range(steps):
            new, results = step(state, {name: xs[t] for name, xs in steps_of.items()}, cache)
            for name, every in record:
                if t % every == 0 and t // every < steps // every:
                    records[name].append(state[name] if name in states else results[name])
            for name, out in outputs.items():
                out.append(results[name])
            state = new
        # one step (a whole sequence as one step, say): its outputs as views, not stacked copies
        out = {name: vs[0].unsqueeze(1) if len(vs) == 1 else _stack(vs, 1, (batch, 0) + program.var(name).shape)
               for name, vs in outputs.items()}
        recs = {}
        for name, _ in record:
            shape = state[name].shape if name in states else (batch,) + program.step.nodes[low.result_nodes[name]].shape
            recs[name] = _stack(records[name], 0, (0,) + tuple(shape))
        return out, state, recs

    def forward(self, steps: int | None = None, state: dict[str, Any] | None = None,
                return_state: bool | None = None, batch: int | None = None, **inputs):
        """Run the program over its inputs ([B, T, *shape] each, or [B, *shape]: one step); see the class docstring."""
        if self._nspec_rebuild is not None and self._nspec.program.data_dims and inputs:
            weights = {external_name(v): tuple(v.shape) for v, _, _ in self._nspec.weights}
            self._respecialise(DataShapes(weights, {k: tuple(np.shape(x)) for k, x in inputs.items()},
                                          "the module's weights", "the inputs given to forward"), keep=True)
        program = self._nspec.program
        unknown = sorted(set(inputs) - {v.name for v in program.inputs})
        missing = [v.name for v in program.inputs if v.name not in inputs]
        if unknown or missing:
            raise BackendError(f"inputs: unknown {unknown}, missing {missing}")
        device = self._device()
        xs = {v.name: torch.as_tensor(inputs[v.name], device=device).to(TORCH_DTYPES[v.dtype]) for v in program.inputs}
        one_step = _one_step(program, xs)
        if one_step:
            if steps not in (None, 1):
                raise BackendError(f"inputs without a time axis are one data step, but steps={steps} was asked "
                                   "for: give the inputs as [B, T, *shape] to run several steps")
            xs = {k: x[:, None] for k, x in xs.items()}
        given = {k: torch.as_tensor(v, device=device) for k, v in (state or {}).items()}
        strays = sorted(set(given) - {s.name for s in program.states})
        if strays:
            raise BackendError(f"state: unknown {strays}; the states are {[s.name for s in program.states]}")
        leading = [x.shape[0] for x in list(xs.values()) + list(given.values())]
        if batch is None:
            batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"inputs and state disagree on the batch size: {sorted(set(leading + [batch]))}")
        if steps is None:
            lengths = [x.shape[1] for x in xs.values()]
            steps = min(lengths) if lengths else program.duration_steps
            if steps is None:
                raise BackendError(f"{program.name} has no inputs: give the number of steps")
        short = [n for n, x in xs.items() if x.shape[1] < steps]
        if short:
            raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")
        init = self.initial_state(batch) if set(given) != {s.name for s in program.states} else {}
        start = {s.name: given[s.name].to(TORCH_DTYPES[s.dtype]) if s.name in given else init[s.name]
                 for s in program.states}
        outputs, final, _ = self.simulate(start, xs, int(steps))
        if one_step:  # [B, 1, *shape] -> [B, *shape], the batch moved to the port's `batch_axis`
            outputs = {k: y[:, 0].movedim(0, program.var(k).batch_axis or 0) for k, y in outputs.items()}
        if self._nspec.options["return_state"] if return_state is None else return_state:
            outputs.update({f"state/{k}": v for k, v in final.items()})
        return outputs


def _one_step(program: Program, xs: dict[str, torch.Tensor]) -> bool:
    """Whether the inputs come without a time axis ([B, *shape]: one data step) rather than with
    one ([B, T, *shape]); a rank that fits neither layout, or inputs that disagree, is an error."""
    layouts = {}
    for v in program.inputs:
        rank, shape = xs[v.name].dim(), list(xs[v.name].shape)
        if rank not in (len(v.shape) + 1, len(v.shape) + 2):
            raise BackendError(f"input {v.name!r} has shape {shape}; its port is {list(v.shape)}, so give it as "
                               f"[B, T, {', '.join(map(str, v.shape))}] (a sequence of steps) or "
                               f"[B, {', '.join(map(str, v.shape))}] (one data step)".replace(", ]", "]"))
        layouts[v.name] = rank == len(v.shape) + 1
    if len(set(layouts.values())) > 1:
        timeless = sorted(k for k, one in layouts.items() if one)
        timed = sorted(k for k, one in layouts.items() if not one)
        raise BackendError(f"inputs mix the two layouts: {', '.join(timeless)} without a time axis ([B, *shape], "
                           f"one data step), {', '.join(timed)} with one ([B, T, *shape]); give all of them one way")
    return any(layouts.values())


def _batch_of(state: dict, inputs: dict) -> int:
    """The batch size: the leading axis of any state or input (1 when there are none)."""
    for x in state.values():
        return x.shape[0]
    for x in inputs.values():
        return x.shape[0]
    return 1


def _batched(v: torch.Tensor, b: bool, batch: int) -> torch.Tensor:
    return v if b else v.expand((batch,) + tuple(v.shape))


def _stack(vs: list, dim: int, empty_shape) -> torch.Tensor:
    return torch.stack(vs, dim=dim) if vs else torch.zeros(empty_shape)


def to_module(program: Program, params: dict[str, Any] | None = None, *, seed: int | None = None,
              plasticity_grad: bool = False, return_state: bool = False, propagate: str = "auto",
              rebuild: Callable[[DataShapes], Program] | None = None) -> ProgramModule:
    """A trainable torch module for ``program``.

    ``params`` (by path) default to the reference ``initialize`` with ``seed`` (default: the
    program's), so every backend starts from the same values.  ``plasticity_grad`` lets gradients
    flow through local plasticity updates; ``propagate`` picks PROPAGATE's algorithm ("auto": event-
    driven when no gradient is needed, dense otherwise).  ``rebuild`` compiles the spec again for
    the shapes of new data: with it, a program with data-bound dimensions is rebuilt when
    ``load_state_dict`` or ``forward`` gets data of other sizes (``Model.to_torch`` passes it).
    """
    if params is None:
        from nspec.runtime.reference import initialize
        params = initialize(program, 1, program.seed if seed is None else int(seed))[0]
    return ProgramModule(program, params, seed=seed, plasticity_grad=plasticity_grad,
                         return_state=return_state, propagate=propagate, rebuild=rebuild)


# ---------------------------------------------------------------- the executor
class TorchExecutor:
    """The executor protocol on torch: ``device`` "cpu" or "cuda", ``compile=True`` for torch.compile."""

    name = "torch"

    def __init__(self, program: Program, device: str = "cpu", compile: bool = False, propagate: str = "auto",
                 **options):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("the torch backend was asked for CUDA, but torch sees no CUDA device")
        zeros = {v.name: np.zeros(v.shape, v.dtype.numpy) for v in program.params}
        self.program = program
        self.module = ProgramModule(program, zeros, propagate=propagate).to(device).eval()
        # Compile one step, not the run: a compiled time loop would be unrolled over every step.
        self._step = torch.compile(self.module.step) if compile else None
        self.options = options

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps; see ``runtime/executor.py`` for the array conventions."""
        p = self.program
        require_values(p, request)
        steps = int(request.steps)
        device = self.module._device()
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        if leading and any(n != leading[0] for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")

        def tensor(value, var):
            return torch.as_tensor(np.asarray(value, var.dtype.numpy), device=device)

        with torch.no_grad():
            for v, module, leaf in self.module._nspec.weights:
                getattr(module, leaf).copy_(tensor(request.params[v.name], v).expand(v.shape))
            state = {v.name: tensor(request.state[v.name], v) for v in p.states}
            inputs = {v.name: tensor(request.inputs[v.name], v) for v in p.inputs}
            short = [n for n, x in inputs.items() if x.shape[1] < steps]
            if short:
                raise BackendError(f"inputs {', '.join(short)} have fewer than {steps} steps")
            outputs, state, records = self.module.simulate(state, inputs, steps, tuple(request.record), self._step)
        return RunResult({k: _numpy(v) for k, v in state.items()}, {k: _numpy(v) for k, v in outputs.items()},
                         {k: _numpy(v) for k, v in records.items()})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


# The interpreter's names (torch_rules.py) are re-exported: callers import them from here.
__all__ = ["RULES", "SURROGATES", "TORCH_DTYPES", "TORCH_UNTIL", "Frame", "Site", "Plan", "Loop", "compile_plan",
           "execute", "evaluate", "external_name", "ProgramModule", "to_module", "TorchExecutor"]
