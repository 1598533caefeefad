"""The Apache TVM backend: lower a Program to TIR with the whole time loop compiled, and run it.

``tvm_tir.build_primfunc`` turns the step graph into one TIR PrimFunc that loops over trials and
steps; ``compile_program`` compiles it with ``tvm.compile`` for the host CPU
(``{"kind": "llvm", "mcpu": <host>}``) or CUDA (``{"kind": "cuda", "arch": "sm_90"}``) through
the content-addressed cache of ``tvm_cache``; ``TvmExecutor`` (backend name "tvm") runs it under
the executor protocol, and ``export`` writes a library and manifest for ``nspec compile``.

Why TIR and not Relax functions for the step: the Relax VM has no loop construct, and a recursive
Relax function crashed at depth 10,000 (TVM 0.27) — a 1 s CUBA run is 10,000 steps.  Dense ops
therefore use templated TIR loop nests (``tvm_tir.KERNEL_RULES``) inside the same compiled time
loop; the module is still an ``IRModule`` compiled by ``tvm.compile``.

Strict mode compiles for the host CPU without FMA (``mattr: -fma``; CUDA code uses the
non-contracting ``__fmul_rn``/``__fadd_rn`` intrinsics) so that every multiply and add rounds as
in the reference interpreter; with PROPAGATE's CSR order this makes spike trains identical to
the reference's.  Fast mode lets LLVM contract multiply-adds into FMAs and lets PROPAGATE add
into the synaptic state directly, so long chaotic runs drift apart spike by spike while their
statistics agree.

A warm start (cache hit) imports neither TVM's compiler nor torch: the library is loaded with
tvm_ffi and called with NumPy arrays (64-byte aligned, as TVM's generated code requires).
"""

from __future__ import annotations

import functools
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
ALIGN = 64  # bytes: TVM's default data alignment for buffer arguments


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """LLVM's name for this machine's CPU (``mcpu``): vectorised code needs it.

    Asking LLVM needs ``import tvm`` (3-10 s, it imports torch), so the answer is kept in the cache
    directory under a fingerprint of /proc/cpuinfo and a warm start reads it from there."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    lines = sorted({ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "vendor_id"))})
    fingerprint = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    path = tvm_cache.cache_root() / "host-cpu.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fingerprint and saved.get("mcpu"):
            return str(saved["mcpu"])
    except (OSError, ValueError):
        pass
    tvm_cache.import_tvm_ffi()
    from tvm.target import codegen

    mcpu = str(codegen.llvm_get_system_cpu())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint, "mcpu": mcpu}))
    return mcpu


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
    compiling or loading took.  A hit loads the library without importing TVM's compiler."""
    t0 = time.perf_counter()
    parts = cache_parts(program, target, strict, records, threads)
    key = tvm_cache.cache_key(parts)
    root = tvm_cache.cache_root()
    if cache:
        entry = tvm_cache.lookup(root, key)
        if entry is not None:
            try:
                func = tvm_cache.load_library(entry.path) if target != "cuda" else _load_with_tvm(entry.path)
                sig = _sig_from_json(entry.meta, program)
                return func, sig, {"cache": "hit", "seconds": time.perf_counter() - t0, "key": key}
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


def _tvm_module():
    """TVM itself, imported lazily (a warm CPU start never needs it) after its FFI library."""
    tvm_cache.import_tvm_ffi()
    import tvm

    return tvm


def _load_with_tvm(path: Path):
    """A CUDA library needs TVM's CUDA runtime to load its kernels (the warm CPU path does not)."""
    return _tvm_module().runtime.load_module(str(path))["main"]


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
        self._caps: dict[str, int] = {}  # event-record capacities that proved necessary
        self._get(_monitored(program))

    def _get(self, records: tuple[str, ...]):
        if records not in self._compiled:
            func, sig, info = compile_program(self.program, self.target, self.strict, records, self.threads,
                                              self.cache, self.progress)
            self.info = info
            self._compiled[records] = (func, sig, None)
        return self._compiled[records]

    def _event_cap(self, name: str, slots: int, batch: int) -> int:
        # room for a 25 Hz mean rate at dt 0.1 ms; a run that needs more is repeated with room
        step = self.program.step
        shape = step.nodes[(step.result(name, "output") or step.result(name, "value")).node].shape
        return max(self._caps.get(name, 0), 1024, slots * int(np.prod(shape)) // 400)

    @staticmethod
    def _expand(host, name, slots, batch, shape, dtype) -> np.ndarray:
        """The dense record ``[slots, B, n]`` from the kernel's event lists."""
        n = int(np.prod(shape))
        out = np.zeros((slots, batch, n), dtype)
        for b in range(batch):
            k = int(host[("event_counts", name)][b])
            ids = host[("events", name)][b, :k].astype(np.int64)
            keep = ids // n < slots
            out[ids[keep] // n, b, ids[keep] % n] = host[("event_values", name)][b, :k][keep]
        return out.reshape((slots, batch) + tuple(shape))

    @staticmethod
    def _aligned(shape, dtype, value=None) -> np.ndarray:
        """A C-contiguous array whose data is 64-byte aligned: TVM's generated code assumes its
        buffer arguments are (it uses aligned vector loads), and NumPy only guarantees 16."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        raw = np.empty(size + ALIGN, np.uint8)
        start = -raw.ctypes.data % ALIGN
        arr = raw[start:start + size].view(dtype).reshape(shape)
        if value is not None:
            arr[...] = value
        return arr

    def _array(self, x: np.ndarray):
        """A host array as the compiled function takes it: NumPy itself on CPU (no copies, no
        TVM import on a warm start), a device tensor on CUDA."""
        if self.target != "cuda":
            return x
        return _tvm_module().runtime.tensor(x, _tvm_module().cuda(0))

    def run(self, request: RunRequest) -> RunResult:
        """Run ``request.steps`` steps in one call; see ``runtime/executor.py`` for the arrays."""
        p = self.program
        steps = int(request.steps)
        names = tuple(name for name, _ in request.record)
        func, sig, consts = self._get(names)
        if consts is None:
            consts = [self._array(self._aligned(c.shape, c.dtype, c)) for c in sig.consts]
            self._compiled[names] = (func, sig, consts)
        leading = [np.shape(request.state[v.name])[0] for v in p.states]
        leading += [np.shape(request.inputs[v.name])[0] for v in p.inputs]
        batch = leading[0] if leading else 1
        if any(n != batch for n in leading):
            raise BackendError(f"state and inputs disagree on the batch size: {sorted(set(leading))}")
        every = dict(request.record)
        missing = [a.name for a in sig.args if a.kind == "record" and a.name not in every]
        if missing:
            raise BackendError(f"no record interval given for {', '.join(missing)}")
        host, args = {}, []
        const_iter = iter(consts)
        for a in sig.args:
            if a.kind == "const":
                args.append(next(const_iter))
                continue
            if a.kind in ("param", "state", "input"):
                src = np.asarray({"param": request.params, "state": request.state, "input": request.inputs}[a.kind][a.name])
                if a.kind == "input" and src.shape[1] < steps:
                    raise BackendError(f"input {a.name} has fewer than {steps} steps")
                arr = self._aligned(src.shape, a.dtype, src)  # a copy: states are updated in place
            elif a.kind == "output":
                arr = self._aligned((batch, steps) + a.shape, a.dtype)
            elif a.kind == "record":
                arr = self._aligned((steps // every[a.name], batch) + a.shape, a.dtype)
            elif a.kind in ("events", "event_values"):
                arr = self._aligned((batch, self._event_cap(a.name, steps // every[a.name], batch)), a.dtype)
            elif a.kind == "event_counts":
                arr = self._aligned((batch,), a.dtype, 0)
            else:
                arr = self._aligned((batch * dict(sig.workspace)[a.name],), a.dtype)
            host[(a.kind, a.name)] = arr
            args.append(self._array(arr))
        t0 = time.perf_counter()
        func(*args, steps, *[int(every[n]) for n in sig.records])
        if self.target == "cuda":
            _tvm_module().cuda(0).sync()  # kernel launches return before the kernel ends
        self.last_kernel_s = time.perf_counter() - t0  # the compiled time loop alone

        for a in sig.args:
            if a.kind == "event_counts":
                need = int(host[(a.kind, a.name)].max(initial=0))
                cap = host[("events", a.name)].shape[1]
                if need > cap:  # more events than room: run again (from the same state) with room
                    self._caps[a.name] = need
                    return self.run(request)

        def back(kind, name, dtype):
            arr = host[(kind, name)]
            if self.target == "cuda":
                arr = args[[(a.kind, a.name) for a in sig.args].index((kind, name))].numpy()
            return arr.astype(dtype.numpy) if arr.dtype != dtype.numpy else arr

        state = {v.name: back("state", v.name, v.dtype) for v in p.states}
        outputs = {v.name: back("output", v.name, v.dtype) for v in p.outputs}
        records = {}
        for name in sig.records:
            is_state = any(s.name == name for s in p.states)
            node = None if is_state else (p.step.result(name, "output") or p.step.result(name, "value")).node
            dtype = p.var(name).dtype if is_state else p.step.nodes[node].dtype
            if ("events", name) in host:
                records[name] = self._expand(host, name, steps // every[name], batch, p.step.nodes[node].shape,
                                             dtype.numpy)
            else:
                records[name] = back("record", name, dtype)
        return RunResult(state, outputs, records)


__all__ = ["RULES", "TvmExecutor", "export", "compile_program", "target_spec", "host_cpu", "cache_parts"]
