"""Whole-function emission for the TVM backend: a Program's step graph, with the whole time loop
around it, as one TIR PrimFunc.

The function's shape::

    main(params..., states[B,..], inputs[B,T,..], outputs[B,T,..], records[R,B,..], consts..,
         workspaces.., steps, every..)
      for b in parallel(B):            # CUDA: one thread block per trial
        for t in range(steps):         # the whole time loop in compiled code
          record states; levels (kernels, loop nests); outputs, records; copy next states

A state whose next value is computed in a loop nest after every read of the old value is updated
in place; otherwise its next value goes to a buffer copied back at the end of the step.  In fast
mode the program first goes through ``TVM_PASSES`` (``compiler/pipeline.py``):
``add(x, propagate(...))`` becomes a PROPAGATE accumulating into ``x``, so CUBA's step is one
vector pass over the neurons plus the event scan.  A recorded spike vector (a value PROPAGATE
reads as a mask) is written as an event list, not a dense [steps, B, N] array.  Intermediate
buffers live in per-dtype workspaces ([B * stride], one slice per trial) that the executor
allocates; their layout is found by emitting the function twice (the first emission only
collects the buffers' sizes).

On CUDA every loop nest is a block-strided loop over the flattened shape, each level ends with a
``__syncthreads``, and PROPAGATE adds with ``atomicAdd``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from nspec.compiler.ir import Op, Program, batched
from nspec.compiler.pipeline import TVM_PASSES, run_passes
from nspec.lowering.tvm.emitter import Emitter
from nspec.lowering.tvm.graphs import all_graphs
from nspec.lowering.tvm.rules import FUSIBLE
from nspec.lowering.tvm.schedule import in_place_ok, plan_graph
from nspec.lowering.tvm.tir import (ALIGN_BYTES, LOGICAL, STORAGE, STRICT_CUDA, LoweringError, Options, Ref, cast,
                                    imm, tvm_modules)


@dataclass(frozen=True, slots=True)
class Arg:
    """One buffer argument of the generated function: ``kind`` in {param, state, input, output,
    record, events, event_values, event_counts, const, workspace}; ``dtype`` its storage dtype;
    ``shape`` per sample."""

    kind: str
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    """The generated function's arguments: ``args`` (buffers, in order), then ``steps`` and one
    ``every`` per record; ``workspace`` gives each workspace dtype's per-trial size."""

    args: tuple[Arg, ...]
    records: tuple[str, ...]
    workspace: tuple[tuple[str, int], ...]
    consts: tuple[np.ndarray, ...]


def backend_program(program: Program, strict: bool) -> Program:
    """The program the TVM backend emits: in fast mode, after ``TVM_PASSES`` (strict mode keeps
    the reference's additions, so its spike trains stay the reference's)."""
    return program if strict else run_passes(program, TVM_PASSES)


def sanitize(name: str) -> str:
    """``name`` with every character but ASCII letters and digits replaced by ``_``."""
    return "".join(c if c in string.ascii_letters + string.digits else "_" for c in name)


def _record_node(program: Program, name: str) -> int | None:
    if any(s.name == name for s in program.states):
        return None
    r = program.step.result(name, "output") or program.step.result(name, "value")
    if r is None:
        raise LoweringError(f"cannot record {name!r}: it is neither a state nor a step result")
    return r.node


def _emit(program: Program, opts: Options, layout: dict | None):
    """One emission of the whole function; returns (PrimFunc, Signature, workspace sizes)."""
    _, tirx, IRBuilder, T = tvm_modules()
    step = program.step
    em = Emitter(program, opts, layout)
    args: list[Arg] = []
    flags = batched(step)
    rec_nodes = {name: _record_node(program, name) for name in opts.records}
    with IRBuilder() as ib:
        with T.prim_func():
            T.func_name("main")
            B = tirx.Var("B", "int32")
            Tn = tirx.Var("T", "int32")
            bufs = {}

            def arg(kind, name, dtype, shape, lead=()):
                buf = T.arg(f"{kind}_{sanitize(name)}", T.Buffer(tuple(lead) + tuple(shape), dtype))
                args.append(Arg(kind, name, dtype, tuple(shape)))
                bufs[(kind, name)] = buf
                return buf

            for v in program.params:
                arg("param", v.name, STORAGE[v.dtype], v.shape)
            for v in program.states:
                arg("state", v.name, STORAGE[v.dtype], v.shape, (B,))
            for v in program.inputs:
                arg("input", v.name, STORAGE[v.dtype], v.shape, (B, Tn))
            for v in program.outputs:
                arg("output", v.name, STORAGE[v.dtype], v.shape, (B, Tn))
            em.events = _event_records(program, opts, rec_nodes, flags)
            for name, node in rec_nodes.items():
                var = program.var(name) if node is None else None
                dtype, shape = (var.dtype, var.shape) if node is None else (step.nodes[node].dtype, step.nodes[node].shape)
                if name in em.events:
                    cap = tirx.Var(f"C_{sanitize(name)}", "int32")
                    arg("events", name, "int32", (), (B, cap))
                    arg("event_values", name, LOGICAL[dtype], (), (B, cap))
                    arg("event_counts", name, "int64", (), (B,))
                else:
                    arg("record", name, LOGICAL[dtype], shape, (tirx.Var(f"R_{sanitize(name)}", "int32"), B))
            for graph in all_graphs(step):
                for n in graph.nodes:
                    if n.op is Op.CONST and np.asarray(n.attrs.value).size != 1:
                        em.const_bufs[id(n)] = arg("const", f"c{len(em.consts)}", STORAGE[n.dtype], n.shape)
                        em.consts.append(np.ascontiguousarray(n.attrs.value, STORAGE[n.dtype]))
            for st in ("float32", "float64", "int32", "int64", "int8"):
                em.ws[st] = arg("workspace", st, st, (tirx.Var(f"W_{st}", "int32"),))
            steps = T.arg("steps", T.int32())
            every = [T.arg(f"every_{sanitize(name)}", T.int32()) for name in rec_nodes]

            def body(b):
                em.b = b
                with T.serial(0, steps) as t:
                    _emit_step(em, program, bufs, rec_nodes, every, flags, b, t)

            if opts.device == "cuda":
                bx = T.env_thread("blockIdx.x")
                tx = T.env_thread("threadIdx.x")
                with T.launch_thread(bx, B):
                    with T.launch_thread(tx, opts.threads):
                        em.tx = tx
                        body(bx)
            else:
                em.tx = None
                loop = T.parallel if opts.parallel else T.serial
                with loop(0, B) as b:
                    body(b)
    sig = Signature(tuple(args), tuple(rec_nodes), (), tuple(em.consts))
    return ib.get(), sig, dict(em.used)


def const_arrays(program: Program) -> list[np.ndarray]:
    """The constant arrays passed as arguments, in argument order (one-element constants become
    immediates; empty ones are still arguments, so every CONST has a value)."""
    return [np.ascontiguousarray(n.attrs.value, STORAGE[n.dtype]) for g in all_graphs(program.step)
            for n in g.nodes if n.op is Op.CONST and np.asarray(n.attrs.value).size != 1]


def _event_records(program: Program, opts: Options, rec_nodes: dict, flags) -> frozenset[str]:
    """Recorded values kept as event lists: on CPU, 1-D values that PROPAGATE already reads as
    byte masks (spike vectors).  A dense record of CUBA's spikes writes 160 MB per simulated
    second; the events of one are ~20,000 pairs.  The executor expands them to the dense array."""
    if opts.device != "cpu":
        return frozenset()
    step = program.step
    roots = [r.node for r in step.results if r.kind in ("next", "output")]
    roots += [n for n in rec_nodes.values() if n is not None]
    plan = plan_graph(step, roots, flags)
    return frozenset(name for name, node in rec_nodes.items()
                     if node is not None and node in plan.masks and step.nodes[node].op in FUSIBLE
                     and len(step.nodes[node].shape) == 1)


def _record_events(em: Emitter, n: int, value, mask, idx_buf, val_buf, count_buf, slot_t, b):
    """Append (step * n + neuron, value) for every set mask byte, eight bytes per compare."""
    _, tirx, _, T = tvm_modules()
    cap = idx_buf.shape[1]
    with T.serial(0, -(-n // 8)) as w:
        word = T.reinterpret("int64", mask.buf[tirx.Ramp(w * 8, 1, 8)])
        with T.If(tirx.NE(word, imm(0, "int64"))):
            with T.Then():
                with T.serial(0, 8) as lane:
                    i = w * 8 + lane
                    with T.If(tirx.And(i < n, mask.load((i,)))):
                        with T.Then():
                            slot = T.bind(cast(count_buf[b], "int32"))
                            with T.If(slot < cap):
                                with T.Then():
                                    T.buffer_store(idx_buf, slot_t * n + i, [b, slot])
                                    T.buffer_store(val_buf, cast(value.load((i,)), str(val_buf.dtype)), [b, slot])
                            T.buffer_store(count_buf, count_buf[b] + imm(1, "int64"), [b])


def _emit_step(em: Emitter, program: Program, bufs, rec_nodes, every, flags, b, t):
    _, tirx, _, T = tvm_modules()
    step = program.step
    env = {}
    for v in program.params:
        env[v.name] = Ref(bufs[("param", v.name)], (), LOGICAL[v.dtype])
    for v in program.states:
        env[v.name] = Ref(bufs[("state", v.name)], (b,), LOGICAL[v.dtype])
    for v in program.inputs:
        env[v.name] = Ref(bufs[("input", v.name)], (b, t), LOGICAL[v.dtype])
    for (name, node), ev in zip(rec_nodes.items(), every):
        if node is None:
            rec = bufs[("record", name)]
            with T.If(tirx.And(tirx.EQ(tirx.floormod(t, ev), 0), tirx.floordiv(t, ev) < rec.shape[0])):
                with T.Then():
                    em.copy(Ref(rec, (tirx.floordiv(t, ev), b), rec.dtype), env[name], program.var(name).shape)
    em.sync()
    next_nodes = {}
    for s in program.states:
        r = step.result(s.name, "next")
        if r is None:
            raise LoweringError(f"state {s.name!r} has no next value (is the program discretised?)")
        next_nodes[s.name] = r.node
    out_nodes = {o.name: step.result(o.name, "output").node for o in program.outputs}
    value_nodes = [n for n in rec_nodes.values() if n is not None]
    roots = list(next_nodes.values()) + list(out_nodes.values()) + value_nodes
    plan = plan_graph(step, roots, flags)
    args = step.args()
    end_readers = set(out_nodes.values()) | set(value_nodes)
    inplace = {}
    for name, k in next_nodes.items():
        a = args.get(name)
        if k in inplace or (a is not None and k == a):
            continue
        if a is None or in_place_ok(step, plan, a, k, end_readers):
            inplace[k] = env[name]
    vals = em.emit_graph(step, env, roots, flags, inplace)
    for name, k in out_nodes.items():
        em.copy(Ref(bufs[("output", name)], (b, t), LOGICAL[step.nodes[k].dtype]), vals[k], step.nodes[k].shape)
    for (name, node), ev in zip(rec_nodes.items(), every):
        if name in em.events:
            with T.If(tirx.EQ(tirx.floormod(t, ev), 0)):
                with T.Then():
                    _record_events(em, step.nodes[node].shape[0], vals[node], em.masks[node][0],
                                   bufs[("events", name)], bufs[("event_values", name)],
                                   bufs[("event_counts", name)], tirx.floordiv(t, ev), b)
        elif node is not None:
            rec = bufs[("record", name)]
            with T.If(tirx.And(tirx.EQ(tirx.floormod(t, ev), 0), tirx.floordiv(t, ev) < rec.shape[0])):
                with T.Then():
                    em.copy(Ref(rec, (tirx.floordiv(t, ev), b), rec.dtype), vals[node], step.nodes[node].shape)
    for name, k in next_nodes.items():
        if k == args.get(name) or inplace.get(k) is env[name]:
            continue
        em.copy(env[name], vals[k], program.var(name).shape)
    em.sync()


def build_primfunc(program: Program, opts: Options):
    """The TIR PrimFunc running ``program`` for ``steps`` steps, and its calling signature (fast
    mode emits the program after ``TVM_PASSES``: see ``backend_program``)."""
    program = backend_program(program, opts.strict)
    token = STRICT_CUDA.set(opts.strict and opts.device == "cuda")
    try:
        _, _, used = _emit(program, opts, None)
        per = {st: -(-n // (ALIGN_BYTES // np.dtype(st).itemsize)) * (ALIGN_BYTES // np.dtype(st).itemsize)
               for st, n in used.items()}
        layout = {st: max(per.get(st, 0), 1) for st in ("float32", "float64", "int32", "int64", "int8")}
        func, sig, _ = _emit(program, opts, layout)
    finally:
        STRICT_CUDA.reset(token)
    return func, Signature(sig.args, sig.records, tuple(sorted(layout.items())), sig.consts)


def tir_text(program: Program, opts: Options) -> str:
    """The TVMScript text of the IRModule the backend compiles (``nspec compile --emit tir``)."""
    func, _ = build_primfunc(program, opts)
    return tvm_modules().tvm.IRModule({"main": func}).script()


__all__ = ["Arg", "Signature", "backend_program", "build_primfunc", "const_arrays", "tir_text", "sanitize"]
