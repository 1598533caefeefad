"""TIR vocabulary shared by the TVM backend's modules: the lazy TVM import, lowering options,
scalar-expression helpers (immediates, casts, NumPy's promotion) and the four kinds of value a
node can have while a function is emitted (a stored ``Ref``, an ``Imm``, a ``Lazy`` inline
expression, a ``Bound`` loop-body variable).

TVM is imported on first use only: ``nspec check`` and a warm start from the compile cache never
pay for TVM's compiler.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from nspec.compiler.ir import DType
from nspec.lowering.tvm.cache import import_tvm_ffi, without_optional_imports


class LoweringError(Exception):
    """The program cannot be lowered to TIR (an unsupported pattern); names the node."""


STORAGE = {DType.f32: "float32", DType.f64: "float64", DType.i32: "int32", DType.i64: "int64", DType.bool: "int8"}
LOGICAL = {DType.f32: "float32", DType.f64: "float64", DType.i32: "int32", DType.i64: "int64", DType.bool: "bool"}
ALIGN_BYTES = 64
VECTOR_LANES = 16  # two AVX2 registers of 32-bit lanes per iteration

# Strict CUDA code must not let nvcc/NVRTC contract a*b+c into an FMA (there is no flag to pass
# through TVM 0.27), so its float arithmetic uses the round-to-nearest intrinsics, which are never
# contracted.  Set while a strict CUDA function is emitted.
STRICT_CUDA = contextvars.ContextVar("nspec_strict_cuda", default=False)


@dataclass(frozen=True, slots=True)
class Options:
    """How to lower: ``device`` "cpu" or "cuda"; ``records`` names recorded each run; ``threads``
    per CUDA block; ``parallel`` runs trials on CPU threads; ``tile_vectors``: VECTOR_LANES-wide
    column vectors per CPU einsum register tile (``einsum_tiles.tiles``; the CPU's register file
    decides, see ``build.cpu_tile_vectors``)."""

    device: str = "cpu"
    strict: bool = False
    records: tuple[str, ...] = ()
    threads: int = 256
    parallel: bool = True
    tile_vectors: int = 1


class TvmModules(NamedTuple):
    """The TVM modules the emitter uses: ``tvm``, ``tirx``, ``IRBuilder`` and the builder ``T``."""

    tvm: Any
    tirx: Any
    IRBuilder: Any
    T: Any


@functools.cache
def tvm_modules() -> TvmModules:
    """TVM, imported on first use, after tvm_ffi and like it without torch and ml_dtypes unless
    they are loaded already (see ``cache.without_optional_imports``; ~2 s of a cold compile)."""
    import_tvm_ffi()
    # imported here, not at the top: a warm start and `nspec check` must not import TVM's compiler
    with without_optional_imports():
        import tvm
        from tvm import tirx
        from tvm.script.ir_builder import IRBuilder
        from tvm.script.ir_builder import tirx as T

    return TvmModules(tvm, tirx, IRBuilder, T)


# ---------------------------------------------------------------- scalar expressions
def imm(value, dtype: str):
    """A TIR constant of ``dtype``."""
    _, tirx, _, _ = tvm_modules()
    if dtype == "bool":
        return tirx.const(bool(value), "bool")
    if dtype.startswith("float"):
        return tirx.const(float(np.asarray(value, dtype)), dtype)
    return tirx.const(int(value), dtype)


def dtype_of(x) -> str:
    """The dtype of a TIR expression (or of a Python scalar used as one)."""
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int32"
    return str(x.ty)


def cast(x, dtype: str):
    """``x`` as ``dtype`` (to bool: ``x != 0``)."""
    _, tirx, _, _ = tvm_modules()
    if isinstance(x, (int, float)):
        return imm(x, dtype)
    if dtype_of(x) == dtype:
        return x
    if dtype == "bool":
        return tirx.NE(x, imm(0, dtype_of(x)))
    return tirx.Cast(dtype, x)


def promote(a, b):
    """NumPy's promotion of two operand dtypes (comparisons run on the operands' own dtypes)."""
    dt = np.result_type(np.dtype(dtype_of(a)), np.dtype(dtype_of(b)))
    name = "bool" if dt == np.bool_ else str(dt)
    return cast(a, name), cast(b, name)


def is_float(dtype: str) -> bool:
    return dtype.startswith("float")


# ---------------------------------------------------------------- indexes
def unflatten(flat, shape) -> tuple:
    """The index of ``shape`` (row-major) whose flat position is ``flat``."""
    _, tirx, _, _ = tvm_modules()
    out = []
    for d in reversed(shape):
        out.append(tirx.floormod(flat, d) if d != 1 else 0)
        flat = tirx.floordiv(flat, d)
    return tuple(reversed(out))


def flatten(idx, shape):
    """The row-major flat position of index ``idx`` of ``shape``."""
    flat = 0
    for i, d in zip(idx, shape):
        flat = flat * d + i
    return flat


def broadcast_index(idx, in_shape, out_shape) -> tuple:
    """NumPy broadcasting: the input's index for output index ``idx`` (axes aligned right)."""
    k = len(out_shape) - len(in_shape)
    return tuple(0 if s == 1 and out_shape[k + d] != 1 else idx[k + d] for d, s in enumerate(in_shape))


# ---------------------------------------------------------------- values
class Ref:
    """A stored value: ``buf`` indexed by ``prefix + idx``; bool values are stored as int8."""

    def __init__(self, buf, prefix: tuple, logical: str):
        self.buf, self.prefix, self.logical = buf, tuple(prefix), logical

    def _index(self, idx) -> list:
        full = list(self.prefix) + list(idx)
        return full + [0] * (len(self.buf.shape) - len(full))  # scalars live in 1-element buffers

    def load(self, idx):
        _, tirx, _, _ = tvm_modules()
        x = tirx.BufferLoad(self.buf, self._index(idx))
        return cast(x, self.logical) if self.logical == "bool" else x

    def store(self, idx, value):
        _, _, _, T = tvm_modules()
        value = cast(value, self.logical)
        if str(self.buf.dtype) != dtype_of(value):
            value = cast(value, self.buf.dtype)
        T.buffer_store(self.buf, value, self._index(idx))


class Imm:
    """A constant scalar, readable at any index."""

    def __init__(self, value, logical: str):
        self.value, self.logical = value, logical

    def load(self, idx):
        return imm(self.value, self.logical)


class Lazy:
    """An inline expression of other values, recomputed at each index it is read."""

    def __init__(self, fn, logical: str):
        self.fn, self.logical = fn, logical

    def load(self, idx):
        return self.fn(idx)


class Bound:
    """A value bound to a local variable inside the current loop body (read at that index only)."""

    def __init__(self, var, logical: str):
        self.var, self.logical = var, logical

    def load(self, idx):
        return self.var


__all__ = ["LoweringError", "STORAGE", "LOGICAL", "ALIGN_BYTES", "VECTOR_LANES", "STRICT_CUDA", "Options",
           "TvmModules", "tvm_modules", "imm", "dtype_of", "cast", "promote", "is_float", "unflatten", "flatten",
           "broadcast_index", "Ref", "Imm", "Lazy", "Bound"]
