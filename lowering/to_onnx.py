"""Lower an nspec Program to ONNX and run it on ONNX Runtime.

The lowering is an interpreter over the IR (``lower_graph``) with one rule per op
(``RULES``, in ``onnx_rules``; PROPAGATE in ``onnx_propagate``, whose docstring gives the
dense/sparse rule).  It lowers the batched form: values that ``ir.batched`` marks carry a
leading batch axis (symbolic dim ``B``); per-sample axes of batched values shift by one.

Two models:

* ``step_model(program)``: one step.  Inputs: every param (per-sample shape), state
  ``[B, ...]`` and input ``[B, ...]`` under its IR name.  Outputs: ``next/<state>``,
  ``output/<name>`` and ``record/<name>`` for requested record values.
* ``run_model(program, steps, record)``: the whole run as one graph.  The time loop is an ONNX
  ``Loop`` (states are loop-carried, outputs and records are scan outputs); inputs are
  ``[B, T, ...]`` and sliced per step; outputs come back ``[B, steps, ...]``, records
  ``[steps // every, B, ...]`` (the executor protocol's conventions).  Everything unbatched
  (depends only on params and constants, e.g. a dense weight matrix built from CSR) is
  lowered outside the Loop, so it runs once per run.  With ``steps=None`` the trip count is a
  scalar int64 input ``steps``.

Data-bound dimensions (``hyper n: int = auto``).  Given ``symbolic`` (``symbolic_for``: the
program with its data-bound sizes as ``Dim``s, ``compiler/symbolic_dims.py``), both models lower
that program: graph inputs name those axes, and every shape, bound or value that is a ``Dim`` is
computed from the source input's ``Shape`` (``Builder.size``, read by ``Emit.i64``/``scalar``/
``zeros``), so the file runs at other sizes.  Without it (the executor, which recompiles for new
data anyway) the graph is for the compiled sizes and its inputs declare them as numbers.

ONNX node names carry the IR node and its span (``add_12@cuba.nspec:10:3``), doc strings the
span; model metadata (``nspec.*`` keys) records the I/O signature, the nspec version, the
sha256 of ``ir.print_program(program)``, the hyperparameters and the lowering options.

Numerics against the reference interpreter (float32).  Elementwise ops agree to rtol 1e-5,
atol 1e-6 (ORT's exp/tanh/sigmoid/softplus are vectorised approximations a few ulp from
numpy's).  Contractions and reductions (einsum, matmul, sum, mean, softmax, layernorm) add in
another order, so their difference scales with the summed terms rather than the result (the
ELM seed's memory state differs by 6e-5 relative after three steps of 1378-term einsums).

Spikes.  On ``specs/cuba.nspec`` (4000 neurons, 10,000 steps, 23,395 spikes) ORT with every
graph optimisation on (ORT_ENABLE_ALL) and event-driven PROPAGATE reproduced every spike (and,
on a hand-built CUBA over 2,000 steps, v bit for bit): ORT's CPU kernels did not contract the IR's
separate Mul and Add into an FMA, and no fusion changed the arithmetic of these graphs.  Dense
PROPAGATE (one MatMul; MLAS adds with FMA in its own order) changed v from step 36 on, by up to
2.2e-8 V, without flipping a spike in 10,000 steps; a longer or more chaotic run may.
``strict=True`` makes identity a guarantee rather than an observation: ORT_DISABLE_ALL (no
fusion, no constant folding, no layout rewrite: ORT runs exactly the emitted nodes) and
event-driven PROPAGATE whatever the density, whose ScatterElements(add) adds in the
reference's order.  ``tests/test_onnx_lowering.py`` checks spike identity in both modes.

Devices: the executor uses CUDAExecutionProvider when the installed onnxruntime has it (the
``gpu`` extra, onnxruntime-gpu), binding outputs and the per-step state on the device; only the
CPU provider has been exercised so far.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nspec.compiler import ir
from nspec.compiler.ir import DType
from nspec.compiler.symbolic_dims import Symbolic, analyse, has_dim
from nspec.dsl.diagnostics import UNKNOWN_SPAN, NspecError, error
from nspec.lowering.onnx_builder import ONNX_DTYPE, Builder, Emit, Scope, Val, dim_names, value_info
from nspec.lowering.onnx_rules import RULES, symbolic_problem
from nspec.runtime.executor import BackendError, RunRequest, RunResult, require_values
from nspec.version import __version__

OPSET = 21
IR_VERSION = 10


@dataclass(frozen=True, slots=True)
class Options:
    """How to lower: ``propagate`` in {auto, dense, sparse}; ``strict`` keeps the reference's operation order."""

    propagate: str = "auto"
    strict: bool = False


# ---------------------------------------------------------------- the interpreter
def lower_graph(scope: Scope, graph: ir.Graph, env: dict[str, Val], flags: list[bool], options: Options,
                static: Scope | None = None) -> list:
    """Lower every node of ``graph`` into ``scope``; returns the lowered value of each node.

    ``env`` maps ARG names to values.  Unbatched nodes go to ``static`` (the main graph when
    ``scope`` is the time loop's body), so they run once rather than every step.
    """
    static = static or scope

    def lower(sub: Scope, body: ir.Graph, body_env: dict[str, Val], body_flags: list[bool]) -> list:
        return lower_graph(sub, body, body_env, body_flags, options)

    vals: list = []
    for i, n in enumerate(graph.nodes):
        rule = RULES.get(n.op)
        if rule is None:
            raise NspecError([error(n.span, f"the onnxruntime backend cannot lower '{n.op.value}'")])
        e = Emit(scope if flags[i] else static, f"{n.op.value}_{i}", n.span, options, lower, static, env)
        vals.append(rule(e, n, [vals[j] for j in n.inputs], flags[i]))
    return vals


# ---------------------------------------------------------------- shared pieces of both models
def _require_discrete(program: ir.Program) -> None:
    missing = [s for s in program.states if program.step.result(s.name, "next") is None]
    if missing:
        raise NspecError([error(s.span, f"state '{s.name}' has a derivative but no update rule; discretise the "
                                        "program before lowering it to ONNX") for s in missing])


# The whole-run model's trip count; "@" keeps it apart from every spec name (paths are identifiers).
STEPS_INPUT = "@steps"

def _record_pairs(record) -> tuple[tuple[str, int], ...]:
    """Accept names or (name, every) pairs; names must be unique (they name graph outputs)."""
    pairs = tuple((r, 1) if isinstance(r, str) else (str(r[0]), int(r[1])) for r in record)
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise BackendError(f"record names must be unique, got {names}")
    if any(every < 1 for _, every in pairs):
        raise BackendError(f"record intervals must be >= 1, got {pairs}")
    return pairs


def _step_results(program: ir.Program, vals: list, env: dict[str, Val], record: list[str]):
    """(role, name, value, dtype) of every graph result: next states, outputs, then records."""
    out = []
    for s in program.states:
        out.append(("next", s.name, vals[program.step.result(s.name, "next").node], s.dtype))
    for o in program.outputs:
        out.append(("output", o.name, vals[program.step.result(o.name, "output").node], o.dtype))
    states = {s.name for s in program.states}
    for name in record:
        if name in states:  # a state records its value before the step's update
            out.append(("record", name, env[name], env[name].dtype))
            continue
        r = program.step.result(name, "output") or program.step.result(name, "value")
        if r is None:
            raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        out.append(("record", name, vals[r.node], program.step.nodes[r.node].dtype))
    return out


def _batch_dim(main: Scope, program: ir.Program) -> str:
    """``[B]`` read off the first state or input (a program with neither runs one sample)."""
    e = Emit(main, "batch", UNKNOWN_SPAN)
    first = (program.states + program.inputs)[:1]
    return e.op("Shape", first[0].name, start=0, end=1) if first else e.i64([1])


def _model(graph, program: ir.Program, mode: str, signature: dict, options: Options,
           symbolic: Symbolic | None) -> onnx.ModelProto:
    graph.doc_string = f"nspec program {program.name} ({mode})"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="nspec", producer_version=__version__,
                              doc_string=f"{program.name}: {mode} model lowered by nspec {__version__}")
    props = {
        "nspec.version": __version__,
        "nspec.program": program.name,
        "nspec.program_sha256": hashlib.sha256(ir.print_program(program).encode()).hexdigest(),
        "nspec.mode": mode,
        "nspec.signature": json.dumps(signature),
        "nspec.hyper": json.dumps(dict(program.hyper), default=str, sort_keys=True),
        # the dimensions bound by data: their values here, what gave them (compiler/data_dims.py), and
        # whether the graph follows other values (symbolic) or why it is built for this one
        "nspec.data_dims": json.dumps({d.name: {"value": d.value, "source": d.source, **_symbolic_entry(d.name, symbolic)}
                                       for d in program.data_dims}, sort_keys=True),
        # parameters to feed at other sizes: their shape or initial value follows a symbolic dimension
        "nspec.data_dim_params": json.dumps(_refeed(program, symbolic)),
        "nspec.dt": repr(program.dt),
        "nspec.lowering": json.dumps(asdict(options)),
    }
    helper.set_model_props(model, props)
    return model


def _sig(name: str, role: str, dtype: DType, dims, every: int | None = None) -> dict:
    entry = {"name": name, "role": role, "dtype": dtype.value, "shape": dim_names(dims)}
    if every is not None:
        entry["every"] = every
    return entry


NOT_ANALYSED = "the graph was lowered for the compiled sizes (no way to recompile the spec was given)"


def _symbolic_entry(name: str, symbolic: Symbolic | None) -> dict:
    if symbolic is None:
        return {"symbolic": False, "fixed_by": NOT_ANALYSED}
    if name in symbolic.fixed:
        return {"symbolic": False, "fixed_by": symbolic.fixed[name]}
    return {"symbolic": True}


def _refeed(program: ir.Program, symbolic: Symbolic | None) -> list[str]:
    """The parameters whose shape or initial value follows a symbolic dimension (graph inputs, with
    the compiled values as defaults when the export stores parameters)."""
    if symbolic is None:
        return []
    return [v.name for v in symbolic.program.params if has_dim(v.shape) or v.name in symbolic.dependent_params]


def _declare_inputs(b: Builder, program: ir.Program, time_axis: bool, bind: dict | None,
                    symbolic: Symbolic | None):
    """Graph inputs, their signature entries, and the ARG environment.

    Parameters named in ``bind`` become initializers instead of inputs: rules then fold them on
    the host (a CSR becomes padded gather tables once), and ``export`` can store them as
    external data.  With ``symbolic``, the parameters that a symbolic dimension sizes or sets
    (``_refeed``) stay graph inputs whose initializer is only the default (ONNX Runtime lets a feed
    replace it), and each symbolic dimension is read off the shape of its source input.
    """
    infos, sig, env = [], [], {}
    refeed = set(_refeed(program, symbolic))
    for v in program.params:
        if v.name in (bind or {}):
            value = np.asarray(bind[v.name], dtype=v.dtype.numpy)
            shape = symbolic.at(v.shape) if symbolic else v.shape
            if value.shape != shape:
                raise BackendError(f"parameter {v.name!r} has shape {value.shape}, expected {shape}")
            if v.name in refeed:  # a default, not a constant: nothing folds it
                b.initializers.append(numpy_helper.from_array(value, v.name))
            else:
                env[v.name] = Val(b.const(value, v.name), v.dtype, v.shape, False)
    unbound = tuple(v for v in program.params if v.name not in env)
    roles = {}
    for role, group, batched in (("param", unbound, False), ("state", program.states, True),
                                 ("input", program.inputs, True)):
        for v in group:
            extra = ("T",) if time_axis and role == "input" else ()
            b.used.add(v.name)
            infos.append(value_info(v.name, v.dtype, v.shape, batched, extra))
            sig.append(_sig(v.name, role, v.dtype, (["B"] if batched else []) + list(extra) + list(v.shape)))
            env[v.name] = Val(v.name, v.dtype, v.shape, batched)
            roles[v.name] = int(batched) + len(extra)
    for dim, (var, axis) in (symbolic.sources.items() if symbolic else ()):
        b.dim_sources[dim] = (var, roles[var] + axis)
    return infos, sig, env


def symbolic_for(program: ir.Program, compile_at) -> Symbolic | None:
    """The analysis that keeps ``program``'s data-bound dimensions symbolic in ONNX
    (``compiler/symbolic_dims.py``; ``compile_at(dims)`` compiles the spec at those values), with a
    warning naming each dimension that stays fixed and the spec location that fixes it."""
    if compile_at is None or not program.data_dims:
        return None
    symbolic = analyse(program, compile_at, symbolic_problem)
    for name, why in symbolic.fixed.items():
        warnings.warn(f"the ONNX export keeps '{name}' at {symbolic.values[name]}: {why}", SymbolicDimWarning,
                      stacklevel=3)
    return symbolic


class SymbolicDimWarning(UserWarning):
    """A data-bound dimension that an ONNX export cannot keep symbolic."""


# ---------------------------------------------------------------- the two models
def step_model(program: ir.Program, record=(), options: Options = Options(), bind: dict | None = None,
               symbolic: Symbolic | None = None) -> onnx.ModelProto:
    """One step ``(P, S_t, X_t) -> (S_{t+1}, Y_t, records)`` as an ONNX model (``bind``, ``symbolic``: see
    ``_declare_inputs``)."""
    _require_discrete(program)
    base, program = program, symbolic.program if symbolic else program
    names = [n for n, _ in _record_pairs(record)]
    b = Builder()
    main = b.main = Scope(b)
    infos, sig_in, env = _declare_inputs(b, program, False, bind, symbolic)
    b.batch_dim = _batch_dim(main, program)
    vals = lower_graph(main, program.step, env, ir.batched(program.step), options)
    outs, sig_out = [], []
    for role, name, val, dtype in _step_results(program, vals, env, names):
        e = Emit(main, role, program.var(name).span if program.var(name) else UNKNOWN_SPAN)
        out_name = f"{role}/{name}"
        b.used.add(out_name)
        e.op("Identity", e.to_batch(e.cast(val, dtype)).name, out_name=out_name)
        outs.append(value_info(out_name, dtype, val.shape, True))
        sig_out.append(_sig(out_name, role, dtype, ["B", *val.shape]))
    nodes, inits = b.finish(main.nodes, [o.name for o in outs])
    graph = helper.make_graph(nodes, program.name, infos, outs, initializer=inits)
    return _model(graph, base, "step", {"inputs": sig_in, "outputs": sig_out}, options, symbolic)


def run_model(program: ir.Program, steps: int | None = None, record=(), options: Options = Options(),
              bind: dict | None = None, symbolic: Symbolic | None = None) -> onnx.ModelProto:
    """The whole run as one graph: an ONNX ``Loop`` over ``steps`` (an input when None; ``bind``,
    ``symbolic``: see ``_declare_inputs``)."""
    _require_discrete(program)
    base, program = program, symbolic.program if symbolic else program
    pairs = _record_pairs(record)
    b = Builder()
    main = b.main = Scope(b)
    infos, sig_in, outer = _declare_inputs(b, program, True, bind, symbolic)
    if steps is None:
        b.used.add(STEPS_INPUT)
        infos.append(value_info(STEPS_INPUT, DType.i64, (), False))
        sig_in.append(_sig(STEPS_INPUT, "steps", DType.i64, []))
    b.batch_dim = _batch_dim(main, program)

    body = main.child("step/")
    t, cond = b.fresh("step/t"), b.fresh("step/cond")
    body_in = [value_info(t, DType.i64, (), False), value_info(cond, DType.bool, (), False)]
    env = {p.name: outer[p.name] for p in program.params}
    for s in program.states:
        env[s.name] = Val(b.fresh(f"step/{s.name}"), s.dtype, s.shape, True)
        body_in.append(value_info(env[s.name].name, s.dtype, s.shape, True))
    used = set(program.step.args())
    for x in program.inputs:
        if x.name in used:  # x[:, t]
            env[x.name] = Val(Emit(body, "input", x.span).op("Gather", x.name, t, axis=1), x.dtype, x.shape, True)
    vals = lower_graph(body, program.step, env, ir.batched(program.step), options, static=main)

    e = Emit(body, "step", UNKNOWN_SPAN)
    results = _step_results(program, vals, env, [n for n, _ in pairs])
    body_out = [e.op("Identity", cond)]
    body_infos = [value_info(body_out[0], DType.bool, (), False)]
    for _, _, val, dtype in results:
        body_out.append(e.op("Identity", e.to_batch(e.cast(val, dtype)).name))
        body_infos.append(value_info(body_out[-1], dtype, val.shape, True))
    loop_body = helper.make_graph(body.nodes, "time_step", body_in, body_infos)

    m = Emit(main, "time_loop", UNKNOWN_SPAN)
    trip = STEPS_INPUT if steps is None else m.const(np.asarray(steps, dtype=np.int64))
    loop = m.op("Loop", trip, m.const(np.asarray(True)), *(s.name for s in program.states),
                outputs=len(results), body=loop_body)
    loop = loop if isinstance(loop, list) else [loop]
    n_steps = "S" if steps is None else steps
    outs, sig_out = [], []
    every_of = dict(pairs)
    for (role, name, val, dtype), seq in zip(results, loop):
        out_name = f"{role}/{name}"
        b.used.add(out_name)
        if role == "next":
            m.op("Identity", seq, out_name=out_name)
            dims = ["B", *val.shape]
        elif role == "output":  # [S, B, ...] -> [B, S, ...]
            m.op("Transpose", seq, perm=[1, 0, *range(2, len(val.shape) + 2)], out_name=out_name)
            dims = ["B", n_steps, *val.shape]
        else:  # the values at steps 0, every, 2*every, ...: [steps // every, B, ...]
            every = every_of[name]
            count = steps // every if steps is not None else f"S//{every}"
            stop = m.i64([count * every]) if steps is not None else m.op(
                "Reshape", m.op("Mul", m.op("Div", STEPS_INPUT, m.const(np.int64(every))), m.const(np.int64(every))),
                m.i64([1]))
            m.op("Slice", seq, m.i64([0]), stop, m.i64([0]), m.i64([every]), out_name=out_name)
            dims = [count, "B", *val.shape]
        outs.append(helper.make_tensor_value_info(out_name, ONNX_DTYPE[dtype], dim_names(dims)))
        sig_out.append(_sig(out_name, role, dtype, dims, every_of.get(name) if role == "record" else None))
    nodes, inits = b.finish(main.nodes, [o.name for o in outs])
    graph = helper.make_graph(nodes, program.name, infos, outs, initializer=inits)
    return _model(graph, base, "whole-run", {"inputs": sig_in, "outputs": sig_out}, options, symbolic)


# ---------------------------------------------------------------- files
def export(program: ir.Program, path, mode: str = "whole-run", steps: int | None = None, external_data: bool = False,
           force: bool = False, record=(), params: dict | None = None, options: Options = Options(),
           compile_at=None) -> Path:
    """Write the program's ONNX model to ``path`` (never over an existing file unless ``force``).

    ``mode`` is "whole-run" (``run_model``; ``steps=None`` makes the step count an input) or
    "step" (``step_model``).  ``params`` (name -> array) are stored in the model as constants
    instead of being inputs.  With ``external_data`` the initializers go to ``<path>.data``
    beside the model (for large weight sets; ONNX protobufs stop at 2 GB).  ``compile_at``
    ({dimension: value} -> Program, the spec compiled at those values) keeps the program's
    data-bound dimensions symbolic (``symbolic_for``); without it the graph runs at the compiled
    sizes only.
    """
    path = Path(path)
    if mode not in ("whole-run", "step"):
        raise BackendError(f"unknown ONNX export mode {mode!r}; choose 'whole-run' or 'step'")
    data = path.with_name(path.name + ".data")
    for target in (path, data) if external_data else (path,):
        if target.exists() and not force:
            raise FileExistsError(f"{target} exists; pass force=True to overwrite it")
    symbolic = symbolic_for(program, compile_at)
    if mode == "step":
        model = step_model(program, record, options, params, symbolic)
    else:
        model = run_model(program, steps, record, options, params, symbolic)
    if external_data:
        if data.exists():
            data.unlink()  # save_model appends to an existing data file
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return path


# ---------------------------------------------------------------- the executor
def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def session(model: onnx.ModelProto, strict: bool = False, threads: int | None = None, provider_list=None):
    """An ``InferenceSession`` for ``model``; ``strict`` disables every graph optimisation (no fusion)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if strict
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=provider_list or default_providers())


def _fingerprint(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class OnnxExecutor:
    """The "onnxruntime" backend: the whole run as one ``Loop`` model (default) or one call per step.

    ``mode="step"`` runs ``step_model`` once per step with IO binding and keeps the state on the
    device between calls (``reset`` then ``step`` stream one step at a time; ``run`` loops).
    Parameters are bound into the model as constants (``bind_params``, default on) so that
    connectivity tables are folded on the host; sessions are cached per parameter values.
    Options: ``strict`` (see the module docstring), ``propagate`` ("auto" | "dense" | "sparse"),
    ``threads`` (ORT intra-op threads), ``providers``.
    """

    name = "onnxruntime"

    def __init__(self, program: ir.Program, mode: str = "whole-run", strict: bool = False, propagate: str = "auto",
                 threads: int | None = None, providers: list[str] | None = None, bind_params: bool = True,
                 **unknown):
        if unknown:
            raise BackendError(f"unknown onnxruntime option(s) {', '.join(sorted(unknown))}; the options are mode, "
                               "strict, propagate, threads, providers, bind_params")
        if mode not in ("whole-run", "step"):
            raise BackendError(f"unknown onnxruntime mode {mode!r}; choose 'whole-run' or 'step'")
        if propagate not in ("auto", "dense", "sparse"):
            raise BackendError(f"unknown propagate form {propagate!r}; choose 'auto', 'dense' or 'sparse'")
        _require_discrete(program)
        self.program = program
        self.mode = mode
        self.strict = strict
        self.options = Options(propagate=propagate, strict=strict)
        self.threads = threads
        self.bind_params = bind_params
        self.providers = providers or default_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self._sessions: dict = {}
        self._params: dict[str, np.ndarray] = {}
        self._fingerprint: str | None = None
        self._state: dict = {}

    def _session(self, kind: str, params: dict, record, fingerprint: str | None = None):
        bound = params if self.bind_params else None
        key = (kind, record, (fingerprint or _fingerprint(params)) if bound else None)
        if key not in self._sessions:
            if kind == "step":
                model = step_model(self.program, record, self.options, bound)
            else:
                model = run_model(self.program, None, record, self.options, bound)
            if len(self._sessions) >= 4:  # a few parameter sets at most (each session holds its weights)
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = session(model, self.strict, self.threads, self.providers)
        return self._sessions[key]

    def _bind(self, io, sess, feeds: dict) -> list[str]:
        wanted = {i.name for i in sess.get_inputs()}
        for name, value in feeds.items():
            if name in wanted:
                if isinstance(value, np.ndarray):
                    io.bind_cpu_input(name, np.asarray(value, order="C"))  # keeps a scalar 0-d
                else:  # an OrtValue already on the device (the state kept between steps)
                    io.bind_ortvalue_input(name, value)
        names = [o.name for o in sess.get_outputs()]
        for name in names:
            io.bind_output(name, self.device)
        return names

    def _check(self, request: RunRequest) -> None:
        p = self.program
        require_values(p, request)
        short = [v.name for v in p.inputs if np.shape(request.inputs[v.name])[1] < request.steps]
        if short:
            raise BackendError(f"inputs {', '.join(short)} have fewer than {request.steps} steps")

    def _typed(self, values: dict, group) -> dict[str, np.ndarray]:
        return {v.name: np.asarray(values[v.name], dtype=v.dtype.numpy, order="C") for v in group}

    # -- whole run
    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps from ``request.state``; see ``runtime/executor.py`` for shapes."""
        self._check(request)
        pairs = _record_pairs(request.record)
        if self.mode == "step":
            return self._run_steps(request, pairs)
        p = self.program
        params, state = self._typed(request.params, p.params), self._typed(request.state, p.states)
        if request.steps == 0:
            return self._result({f"next/{k}": v for k, v in state.items()}, pairs, self._batch(state, request.inputs),
                                0, {})
        sess = self._session("run", params, pairs)
        io = sess.io_binding()
        feeds = {**params, **state, **self._typed(request.inputs, p.inputs),
                 STEPS_INPUT: np.asarray(request.steps, dtype=np.int64)}
        names = self._bind(io, sess, feeds)
        sess.run_with_iobinding(io)
        return self._result(dict(zip(names, io.copy_outputs_to_cpu())), pairs, 0, request.steps, {})

    def _batch(self, state: dict, inputs: dict) -> int:
        leading = [np.shape(a)[0] for a in list(state.values()) + list(inputs.values())]
        return leading[0] if leading else 1

    def _result(self, got: dict, pairs, batch: int, steps: int, stacked: dict) -> RunResult:
        """A RunResult from graph outputs (``got``) or per-step lists (``stacked``); empty when steps == 0."""
        p = self.program
        outputs, records = {}, {}
        for o in p.outputs:
            key = f"output/{o.name}"
            outputs[o.name] = (np.stack(stacked[key], axis=1) if key in stacked else got[key]) if steps else \
                np.zeros((batch, 0, *o.shape), o.dtype.numpy)
        for name, _ in pairs:
            key = f"record/{name}"
            if key in got or (key in stacked and stacked[key]):
                records[name] = got[key] if key in got else np.stack(stacked[key])
            else:
                shape, dtype = self._record_type(name)
                records[name] = np.zeros((0, batch, *shape), dtype.numpy)
        return RunResult({s.name: got[f"next/{s.name}"] for s in p.states}, outputs, records)

    def _record_type(self, name: str):
        v = next((v for v in self.program.states if v.name == name), None)
        if v is not None:
            return v.shape, v.dtype
        r = next((r for r in self.program.step.results if r.name == name and r.kind in ("output", "value")), None)
        if r is None:
            raise BackendError(f"cannot record {name!r}: it is neither a state nor a step result")
        node = self.program.step.nodes[r.node]
        return node.shape, node.dtype

    # -- one call per step
    def reset(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Load parameters and state onto the device for ``step``."""
        import onnxruntime as ort

        p = self.program
        self._params = self._typed(params, p.params)
        self._fingerprint = _fingerprint(self._params)
        self._state = {k: ort.OrtValue.ortvalue_from_numpy(v, self.device, 0)
                       for k, v in self._typed(state, p.states).items()}

    def step(self, inputs: dict[str, np.ndarray], record: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Advance the kept state one step; returns this step's outputs and ``record`` values (host arrays)."""
        sess = self._session("step", self._params, tuple(record), self._fingerprint)
        io = sess.io_binding()
        names = self._bind(io, sess, {**self._params, **self._state, **self._typed(inputs, self.program.inputs)})
        sess.run_with_iobinding(io)
        got = dict(zip(names, io.get_outputs()))
        self._state = {s.name: got[f"next/{s.name}"] for s in self.program.states}
        return {k: v.numpy() for k, v in got.items() if not k.startswith("next/")}

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The kept state, copied to the host."""
        return {k: v.numpy() for k, v in self._state.items()}

    def _run_steps(self, request: RunRequest, pairs) -> RunResult:
        self.reset(request.params, request.state)
        names = tuple(n for n, _ in pairs)
        stacked: dict[str, list] = {f"output/{o.name}": [] for o in self.program.outputs}
        stacked.update({f"record/{n}": [] for n in names})
        for t in range(request.steps):
            got = self.step({k: request.inputs[k][:, t] for k in self._input_names()}, names)
            for o in self.program.outputs:
                stacked[f"output/{o.name}"].append(got[f"output/{o.name}"])
            for n, every in pairs:
                if t % every == 0 and t // every < request.steps // every:
                    stacked[f"record/{n}"].append(got[f"record/{n}"])
        state = self.state
        got = {f"next/{k}": v for k, v in state.items()}
        return self._result(got, pairs, self._batch(state, request.inputs), request.steps, stacked)

    def _input_names(self) -> list[str]:
        return [x.name for x in self.program.inputs]


__all__ = ["RULES", "Options", "lower_graph", "step_model", "run_model", "export", "symbolic_for", "SymbolicDimWarning",
           "session", "default_providers", "OnnxExecutor"]
