"""The Apache TVM backend: lower a Program to TIR with the whole time loop compiled, and run it.

``lower(program, target, strict, records)`` builds one TIR PrimFunc (``tvm_tir``) that loops over
trials and steps; ``compile_program`` compiles it with ``tvm.compile`` for the host CPU
(``{"kind": "llvm", "mcpu": <host>}``) or CUDA (``{"kind": "cuda", "arch": "sm_90"}``) through
the content-addressed cache of ``tvm_cache``; ``TvmExecutor`` (backend name "tvm") runs it under
the executor protocol, and ``export`` writes a library and manifest for ``nspec compile``.

Why TIR and not Relax functions for the step: the Relax VM has no loop construct, and a recursive
Relax function crashed at depth 10,000 (TVM 0.27) — a 1 s CUBA run is 10,000 steps.  Dense ops
therefore use templated TIR loop nests (``tvm_tir.KERNEL_RULES``) inside the same compiled time
loop; the module is still an ``IRModule`` compiled by ``tvm.compile``.

Strict mode compiles for the host CPU without FMA (``mattr: -fma``) so that every multiply and add
rounds as in the reference interpreter; together with PROPAGATE's CSR order this makes spike
trains identical to the reference's.  Fast mode lets LLVM contract multiply-adds into FMAs, so
long chaotic runs drift apart spike by spike while their statistics agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from nspec.compiler import ir
from nspec.compiler.ir import Op, Program
from nspec.lowering import tvm_cache
from nspec.lowering.tvm_tir import (EXPR_RULES, INDEX_RULES, KERNEL_RULES, LEAF_RULES, Arg,
                                    LoweringError, Options, Signature, build_primfunc, const_arrays)
from nspec.runtime.executor import BackendError, RunRequest, RunResult

log = logging.getLogger("nspec.tvm")

# One rule per op: a scalar TIR expression (fused into loop nests), an index rule, a leaf, or a
# templated kernel.  A test checks that every op outside ir.INIT_ONLY is here.
RULES: dict[Op, object] = {**EXPR_RULES, **INDEX_RULES, **LEAF_RULES, **KERNEL_RULES}

CUDA_ARCH = "sm_90"


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (``mcpu``): vectorised code needs it."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def target_spec(target: str, strict: bool) -> dict:
    """The TVM target dict for "llvm" or "cuda" (CUDA code runs under an LLVM host)."""
    host = {"kind": "llvm", "mcpu": host_cpu()}
    if strict:
        host["mattr"] = ["-fma"]  # no contraction of a*b+c: the reference rounds twice
    if target == "llvm":
        return host
    if target == "cuda":
        return {"kind": "cuda", "arch": CUDA_ARCH, "host": host}
    raise BackendError(f"unknown TVM target {target!r}; choose llvm or cuda")


def _program_digest(program: Program) -> str:
    """sha256 of the printed program and of every constant's bytes (the printer elides arrays)."""
    h = hashlib.sha256(ir.print_program(program).encode())
    for g in _all_graphs(program.step):
        for n in g.nodes:
            if n.op is Op.CONST:
                h.update(np.ascontiguousarray(n.attr("value")).tobytes())
    return h.hexdigest()


def _all_graphs(graph):
    yield graph
    for n in graph.nodes:
        if n.op is Op.LOOP:
            yield from _all_graphs(n.attr("body"))


def _sig_to_json(sig: Signature) -> dict:
    return {"args": [[a.kind, a.name, a.dtype, list(a.shape)] for a in sig.args], "records": list(sig.records),
            "workspace": [list(w) for w in sig.workspace]}


def _sig_from_json(meta: dict, program: Program) -> Signature:
    args = tuple(Arg(k, n, d, tuple(s)) for k, n, d, s in meta["args"])
    return Signature(args, tuple(meta["records"]), tuple((d, int(n)) for d, n in meta["workspace"]),
                     tuple(const_arrays(program)))


def cache_parts(program: Program, target: str, strict: bool, records: tuple[str, ...], threads: int) -> dict:
    """Everything the compiled library depends on (the cache key is their hash)."""
    spec = target_spec(target, strict)
    return {"program": _program_digest(program), "hyper": repr(program.hyper), "target": spec,
            "strict": strict, "records": list(records), "threads": threads, "versions": tvm_cache.versions(),
            "lowering": _lowering_digest()}


def _lowering_digest() -> str:
    """sha256 of the lowering's own source: a changed code generator invalidates old entries."""
    from nspec.lowering import tvm_tir

    h = hashlib.sha256()
    for mod in (tvm_tir, sys.modules[__name__]):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def _build(program: Program, target: str, strict: bool, records: tuple[str, ...], threads: int):
    import tvm

    opts = Options(device="cuda" if target == "cuda" else "cpu", strict=strict, records=records, threads=threads)
    func, sig = build_primfunc(program, opts)
    spec = dict(target_spec(target, strict))
    host = spec.pop("host", None)
    tgt = tvm.target.Target(spec, host=host) if host else tvm.target.Target(spec)
    return tvm.compile(tvm.IRModule({"main": func}), target=tgt), sig


def compile_program(program: Program, target: str = "llvm", strict: bool = False, records: tuple[str, ...] = (),
                    threads: int = 256, cache: bool = True, progress: bool = True):
    """A callable ``main`` and its Signature, from the cache when a verified entry exists.

    Returns ``(function, signature, info)``; ``info`` says whether the cache was hit and how long
    compiling or loading took."""
    import tvm

    t0 = time.perf_counter()
    parts = cache_parts(program, target, strict, records, threads)
    key = tvm_cache.cache_key(parts)
    root = tvm_cache.cache_root()
    if cache:
        entry = tvm_cache.lookup(root, key)
        if entry is not None:
            try:
                mod = tvm.runtime.load_module(str(entry.path))
                sig = _sig_from_json(entry.meta, program)
                return mod["main"], sig, {"cache": "hit", "seconds": time.perf_counter() - t0, "key": key}
            except Exception as exc:  # a library that verifies but does not load is rebuilt
                log.warning("nspec tvm cache: entry %s failed to load (%s); rebuilding", key[:12], exc)
                tvm_cache.drop(root, key)
    if progress:
        print(f"nspec: compiling {program.name} with TVM for {target}{' (strict)' if strict else ''} ...",
              file=sys.stderr, flush=True)
    try:
        ex, sig = _build(program, target, strict, records, threads)
    except LoweringError as exc:
        raise BackendError(f"the TVM backend cannot lower {program.name}: {exc}") from exc
    func = ex["main"]
    if cache:
        tvm_cache.store(root, key, parts, _sig_to_json(sig), ex.export_library)
    seconds = time.perf_counter() - t0
    if progress:
        print(f"nspec: compiled {program.name} in {seconds:.2f} s", file=sys.stderr, flush=True)
    return func, sig, {"cache": "miss", "seconds": seconds, "key": key}


def _monitored(program: Program) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for m in program.monitors for v in m.variables))


def export(program: Program, path, target: str = "tvm-llvm", force: bool = False, strict: bool = False) -> Path:
    """Write the compiled library to ``path`` and its manifest to ``path + '.json'``.

    ``target`` is "tvm-llvm" or "tvm-cuda"; CUDA code generation needs nvcc but no GPU.  An
    existing file is never overwritten unless ``force``.  Records the program's monitors."""
    path = Path(path)
    manifest = path.with_name(path.name + ".json")
    if not force and (path.exists() or manifest.exists()):
        raise BackendError(f"{path} exists; pass force=True (nspec compile --force) to overwrite it")
    kinds = {"tvm-llvm": "llvm", "tvm-cuda": "cuda"}
    if target not in kinds:
        raise BackendError(f"unknown export target {target!r}; choose {' or '.join(kinds)}")
    records = _monitored(program)
    try:
        ex, sig = _build(program, kinds[target], strict, records, 256)
    except LoweringError as exc:
        raise BackendError(f"the TVM backend cannot lower {program.name}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    ex.export_library(str(path))
    parts = cache_parts(program, kinds[target], strict, records, 256)
    manifest.write_text(json.dumps({"inputs": parts, "signature": _sig_to_json(sig), "entry": "main",
                                    "call": "main(*buffers, steps, *every)"}, indent=1, sort_keys=True,
                                   default=str))
    return path


class TvmExecutor:
    """Backend "tvm": the whole run is one call of a compiled TIR function.

    Options: ``target`` ("llvm", default, or "cuda"), ``strict`` (no FMA; spike trains equal the
    reference's), ``cache`` (use the compile cache, default True), ``threads`` (CUDA block size),
    ``progress`` (print a line while compiling)."""

    name = "tvm"

    def __init__(self, program: Program, **options):
        derivs = [r.name for r in program.step.results if r.kind == "deriv"]
        if derivs:
            raise BackendError(f"the TVM backend needs a discretised program; {', '.join(derivs)} still have derivatives")
        unknown = set(options) - {"target", "strict", "cache", "threads", "progress"}
        if unknown:
            raise BackendError(f"unknown TVM backend options: {', '.join(sorted(unknown))}")
        self.program = program
        self.target = options.get("target", "llvm")
        self.strict = bool(options.get("strict", False))
        self.cache = bool(options.get("cache", True))
        self.threads = int(options.get("threads", 256))
        self.progress = bool(options.get("progress", True))
        target_spec(self.target, self.strict)
        self._compiled: dict[tuple[str, ...], tuple] = {}
        self.info: dict = {}
        self.last_kernel_s = 0.0
        self._get(_monitored(program))

    def _get(self, records: tuple[str, ...]):
        if records not in self._compiled:
            func, sig, info = compile_program(self.program, self.target, self.strict, records, self.threads,
                                              self.cache, self.progress)
            self.info = info
            self._compiled[records] = (func, sig, None)
        return self._compiled[records]

    def _device(self):
        import tvm

        return tvm.cuda(0) if self.target == "cuda" else tvm.cpu(0)

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps in one call; see ``runtime/executor.py`` for the arrays."""
        import tvm

        p = self.program
        steps = int(request.steps)
        names = tuple(name for name, _ in request.record)
        func, sig, consts = self._get(names)
        dev = self._device()
        if consts is None:
            consts = [tvm.runtime.tensor(c, dev) for c in sig.consts]
            self._compiled[names] = (func, sig, consts)
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")
        every = dict(request.record)
        tensors, kept = [], {}
        const_iter = iter(consts)
        for a in sig.args:
            if a.kind == "param":
                arr = np.asarray(request.params[a.name])
            elif a.kind == "state":
                arr = np.asarray(request.state[a.name])
            elif a.kind == "input":
                arr = np.asarray(request.inputs[a.name])
                if arr.shape[1] < steps:
                    raise BackendError(f"input {a.name} has fewer than {steps} steps")
            elif a.kind == "output":
                arr = np.empty((batch, steps) + a.shape, a.dtype)
            elif a.kind == "record":
                arr = np.empty((steps // every[a.name], batch) + a.shape, a.dtype)
            elif a.kind == "const":
                tensors.append(next(const_iter))
                continue
            else:
                size = dict(sig.workspace)[a.name]
                tensors.append(tvm.runtime.empty((batch * size,), a.dtype, dev))
                continue
            t = tvm.runtime.tensor(np.ascontiguousarray(arr, a.dtype), dev)
            tensors.append(t)
            kept[(a.kind, a.name)] = t
        t0 = time.perf_counter()
        func(*tensors, steps, *[int(every[n]) for n in sig.records])
        dev.sync()  # CUDA launches return before the kernel ends
        self.last_kernel_s = time.perf_counter() - t0  # the compiled time loop alone

        def back(kind, name, dtype):
            x = kept[(kind, name)].numpy()
            return x.astype(dtype.numpy) if x.dtype != dtype.numpy else x

        state = {v.name: back("state", v.name, v.dtype) for v in p.states}
        outputs = {v.name: back("output", v.name, v.dtype) for v in p.outputs}
        records = {}
        for name in sig.records:
            var = p.var(name)
            dtype = var.dtype if var is not None and any(s.name == name for s in p.states) else \
                p.step.nodes[(p.step.result(name, "output") or p.step.result(name, "value")).node].dtype
            records[name] = back("record", name, dtype)
        return RunResult(state, outputs, records)


__all__ = ["RULES", "TvmExecutor", "export", "compile_program", "target_spec", "host_cpu", "cache_parts"]
