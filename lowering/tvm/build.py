"""Building the TVM backend's library: the target, the compile cache's key, ``tvm.compile``, and
``export`` for ``nspec compile``.

``compile_program`` turns a Program into a callable ``main`` (``emit.build_primfunc``, then
``tvm.compile`` for the host CPU, ``{"kind": "llvm", "mcpu": <host>}``, or CUDA, ``{"kind":
"cuda", "arch": "sm_90"}``) through the content-addressed cache of ``cache.py``.

Strict mode compiles for the host CPU without FMA (``mattr: -fma``; CUDA code uses the
non-contracting ``__fmul_rn``/``__fadd_rn`` intrinsics) so that every multiply and add rounds as
in the reference interpreter; with PROPAGATE's CSR order this makes spike trains identical to
the reference's.  Fast mode lets LLVM contract multiply-adds into FMAs and lets PROPAGATE add
into the synaptic state directly (``fuse-accumulations``), so long chaotic runs drift apart
spike by spike while their statistics agree.

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
from nspec.compiler.passes import fuse_accumulations
from nspec.lowering.tvm import cache as compile_cache
from nspec.lowering.tvm.emit import Arg, Signature, build_primfunc, const_arrays
from nspec.lowering.tvm.graphs import all_graphs
from nspec.lowering.tvm.tir import LoweringError, Options, tvm_modules
from nspec.runtime.executor import BackendError

log = logging.getLogger("nspec.tvm")

CUDA_ARCH = "sm_90"


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
    path = compile_cache.cache_root() / "host-cpu.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fingerprint and saved.get("mcpu"):
            return str(saved["mcpu"])
    except (OSError, ValueError):
        pass
    tvm_modules()
    # imported here, not at the top: a warm start reads the answer from the cache directory
    from tvm.target import codegen

    mcpu = str(codegen.llvm_get_system_cpu())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint, "mcpu": mcpu}))
    return mcpu


def cpu_tile_vectors() -> int:
    """VECTOR_LANES-wide column vectors per CPU einsum register tile (``Options.tile_vectors``):
    with AVX-512's 32 vector registers a 6 x 2 tile of 16 floats (12 accumulators) runs at
    90-100 GFLOP/s on a Zen 4 core, near its sgemm peak; with AVX2's 16 registers, where 16 floats
    take two, one vector per row (the 6 x 1 tile already takes 12) keeps it from spilling."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return 2 if "avx512f" in flags.split() else 1


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


def program_digest(program: Program) -> str:
    """sha256 of the printed program and of every constant's bytes (the printer elides arrays)."""
    h = hashlib.sha256(ir.print_program(program).encode())
    for g in all_graphs(program.step):
        for n in g.nodes:
            if n.op is Op.CONST:
                h.update(np.ascontiguousarray(n.attrs.value).tobytes())
    return h.hexdigest()


def signature_json(sig: Signature) -> dict:
    """The JSON form of a Signature (the cache manifest's and ``export``'s)."""
    return {"args": [[a.kind, a.name, a.dtype, list(a.shape)] for a in sig.args], "records": list(sig.records),
            "workspace": [list(w) for w in sig.workspace]}


def signature_from_json(meta: dict, program: Program) -> Signature:
    """The Signature a manifest records, with ``program``'s constants."""
    args = tuple(Arg(k, n, d, tuple(s)) for k, n, d, s in meta["args"])
    return Signature(args, tuple(meta["records"]), tuple((d, int(n)) for d, n in meta["workspace"]),
                     tuple(const_arrays(program)))


def cache_parts(program: Program, target: str, strict: bool, records: tuple[str, ...], threads: int) -> dict:
    """Everything the compiled library depends on (the cache key is their hash)."""
    spec = target_spec(target, strict)
    return {"program": program_digest(program), "hyper": repr(program.hyper), "target": spec,
            "strict": strict, "records": list(records), "threads": threads, "tile_vectors": cpu_tile_vectors(),
            "versions": compile_cache.versions(),
            "lowering": _lowering_digest()}


def _lowering_digest() -> str:
    """sha256 of the lowering's own source (every module of this package, and the fast-mode
    pass): a changed code generator invalidates old entries."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")) + [Path(fuse_accumulations.__file__)]:
        h.update(path.read_bytes())
    return h.hexdigest()


def build(program: Program, target: str, strict: bool, records: tuple[str, ...], threads: int):
    """Compile ``program`` with ``tvm.compile``: (the executable module, its Signature)."""
    tvm = tvm_modules().tvm
    opts = Options(device="cuda" if target == "cuda" else "cpu", strict=strict, records=records, threads=threads,
                   tile_vectors=cpu_tile_vectors())
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
    key = compile_cache.cache_key(parts)
    root = compile_cache.cache_root()
    if cache:
        entry = compile_cache.lookup(root, key)
        if entry is not None:
            try:
                func = _load(entry.path, target)
                sig = signature_from_json(entry.meta, program)
                return func, sig, {"cache": "hit", "seconds": time.perf_counter() - t0, "key": key}
            except Exception as exc:  # a library that verifies but does not load is rebuilt
                log.warning("nspec tvm cache: entry %s failed to load (%s); rebuilding", key[:12], exc)
                compile_cache.drop(root, key)
    if progress:
        print(f"nspec: compiling {program.name} with TVM for {target}{' (strict)' if strict else ''} ...",
              file=sys.stderr, flush=True)
    try:
        ex, sig = build(program, target, strict, records, threads)
    except LoweringError as exc:
        raise BackendError(f"the TVM backend cannot lower {program.name}: {exc}") from exc
    if cache:  # load what was stored: ex["main"] would generate the machine code a second time (JIT)
        with compile_cache.without_optional_imports():  # export_library imports ml_dtypes (0.6 s) otherwise
            entry = compile_cache.store(root, key, parts, signature_json(sig), ex.export_library)
        func = _load(entry.path, target)
    else:
        func = ex["main"]
    seconds = time.perf_counter() - t0
    if progress:
        print(f"nspec: compiled {program.name} in {seconds:.2f} s", file=sys.stderr, flush=True)
    return func, sig, {"cache": "miss", "seconds": seconds, "key": key}


def _load(path: Path, target: str):
    """The ``main`` of a stored library: with tvm_ffi alone on the CPU; a CUDA library needs TVM's
    CUDA runtime to load its kernels."""
    if target != "cuda":
        return compile_cache.load_library(path)
    return tvm_modules().tvm.runtime.load_module(str(path))["main"]


def monitored(program: Program) -> tuple[str, ...]:
    """The variables the program's monitors record, each once, in order."""
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
    records = monitored(program)
    try:
        ex, sig = build(program, kinds[target], strict, records, 256)
    except LoweringError as exc:
        raise BackendError(f"the TVM backend cannot lower {program.name}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    with compile_cache.without_optional_imports():
        ex.export_library(str(path))
    parts = cache_parts(program, kinds[target], strict, records, 256)
    manifest.write_text(json.dumps({"inputs": parts, "signature": signature_json(sig), "entry": "main",
                                    "call": "main(*buffers, steps, *every)"}, indent=1, sort_keys=True,
                                   default=str))
    return path


__all__ = ["CUDA_ARCH", "host_cpu", "cpu_tile_vectors", "target_spec", "signature_json", "signature_from_json", "program_digest",
           "cache_parts", "build", "compile_program", "monitored", "export"]
