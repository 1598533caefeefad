"""The TVM backend's executor (backend name "tvm"): the whole run is one call of the compiled
TIR function, with NumPy arrays as its buffers (see ``build.py`` for the library and ``emit.py``
for the function's signature)."""

from __future__ import annotations

import time

import numpy as np

from nspec.compiler.ir import Program
from nspec.lowering.tvm.build import compile_program, monitored, target_spec
from nspec.lowering.tvm.tir import tvm_modules
from nspec.runtime.executor import BackendError, RunRequest, RunResult

ALIGN = 64  # bytes: TVM's default data alignment for buffer arguments


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
        self._kept: dict[tuple, np.ndarray] = {}  # per-run copies no caller sees, reused (see _reused)
        self._get(monitored(program))

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

    def _reused(self, key: tuple, shape, dtype, value=None) -> np.ndarray:
        """An aligned array kept from run to run: for the copies of parameters and inputs and for
        the workspace, which the compiled function reads or overwrites and no caller sees (states,
        outputs and records are returned, so each run gets new ones).  A fresh multi-megabyte
        array costs a page fault per 4 KiB page on first touch: a fifth of BDH's forward pass."""
        arr = self._kept.get(key)
        if arr is None or arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
            arr = self._kept[key] = self._aligned(shape, dtype)
        if value is not None:
            arr[...] = value
        return arr

    def _array(self, x: np.ndarray):
        """A host array as the compiled function takes it: NumPy itself on CPU (no copies, no
        TVM import on a warm start), a device tensor on CUDA."""
        if self.target != "cuda":
            return x
        tvm = tvm_modules().tvm
        return tvm.runtime.tensor(x, tvm.cuda(0))

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
                # a copy: states are updated in place (and returned); parameters and inputs are only read
                arr = self._aligned(src.shape, a.dtype, src) if a.kind == "state" else \
                    self._reused((a.kind, a.name), src.shape, a.dtype, src)
            elif a.kind == "output":
                arr = self._aligned((batch, steps) + a.shape, a.dtype)
            elif a.kind == "record":
                arr = self._aligned((steps // every[a.name], batch) + a.shape, a.dtype)
            elif a.kind in ("events", "event_values"):
                arr = self._aligned((batch, self._event_cap(a.name, steps // every[a.name], batch)), a.dtype)
            elif a.kind == "event_counts":
                arr = self._aligned((batch,), a.dtype, 0)
            else:
                arr = self._reused((a.kind, a.name), (batch * dict(sig.workspace)[a.name],), a.dtype)
            host[(a.kind, a.name)] = arr
            args.append(self._array(arr))
        t0 = time.perf_counter()
        func(*args, steps, *[int(every[n]) for n in sig.records])
        if self.target == "cuda":
            tvm_modules().tvm.cuda(0).sync()  # kernel launches return before the kernel ends
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


__all__ = ["TvmExecutor", "ALIGN"]
