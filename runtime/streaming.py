"""Runs in chunks of steps, and an ``.npz`` written chunk by chunk.

A long run is cut into chunks (``chunk_size``): each chunk runs on the backend from the state the
previous one left, is checked for non-finite values (``Model.run``'s NaN check), and its monitors
either join the result in memory or go to an ``NpzStreamWriter``, which keeps each chunk's arrays
as ``.npy`` files in a scratch folder beside the output and assembles the final ``.npz`` at the end
by copying them, a bounded buffer at a time.  The file is the one ``np.savez`` writes for the same
arrays (stored, uncompressed members ``<name>.npy``), so readers cannot tell the two apart.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .executor import RunRequest, RunResult

CHUNK_BYTES = 64 << 20  # recorded bytes one chunk may hold in memory
MAX_CHUNK_STEPS = 1000  # the NaN check runs at least this often
COPY_BYTES = 16 << 20  # the buffer that assembles the final file


def chunk_size(steps: int, period: int, bytes_per_step: int, budget: int | None = None) -> int:
    """Steps per chunk: a multiple of ``period`` (every monitor's interval divides it), at most
    ``MAX_CHUNK_STEPS`` rounded up to the period, and within ``budget`` recorded bytes where the period allows."""
    by_memory = max(1, (CHUNK_BYTES if budget is None else budget) // max(bytes_per_step, 1))
    size = min(steps, by_memory, MAX_CHUNK_STEPS)
    return max(period, size // period * period)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a run: its first step, its length, the request it ran and what it returned."""

    start: int
    steps: int
    request: RunRequest
    result: RunResult


def run_chunks(ex, request: RunRequest, size: int) -> Iterator[Chunk]:
    """The run of ``request`` on executor ``ex``, ``size`` steps at a time, carrying the state across."""
    state = request.state
    for start in range(0, request.steps, size):
        n = min(size, request.steps - start)
        inputs = {k: v[:, start:start + n] for k, v in request.inputs.items()}
        part = RunRequest(request.params, state, inputs, n, request.record)
        result = ex.run(part)
        state = result.state
        yield Chunk(start, n, part, result)


def concatenate(pieces: list[dict[str, tuple[np.ndarray, int]]]) -> dict[str, np.ndarray]:
    """Collected chunks (name -> (array, axis along which chunks follow)) joined into whole arrays."""
    if len(pieces) == 1:
        return {k: a for k, (a, _) in pieces[0].items()}
    return {k: np.concatenate([p[k][0] for p in pieces], axis=axis) for k, (_, axis) in pieces[0].items()}


class NpzStreamWriter:
    """Writes an ``.npz`` whose arrays arrive in chunks along one axis each, in bounded memory.

    ``append`` saves each chunk's arrays to a scratch folder; ``close`` writes the archive to a
    temporary file beside ``path`` and renames it into place (``os.replace``), so an interrupted
    run never leaves half a file; ``discard`` removes everything.  ``shapes`` gives the final shape
    of every array written so far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self.parts: dict[str, list[Path]] = {}
        self.axes: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}

    def append(self, arrays: dict[str, tuple[np.ndarray, int]]) -> None:
        for name, (arr, axis) in arrays.items():
            arr = np.asarray(arr)
            if arr.ndim == 0:  # a scalar (one step of timeless inputs) arrives whole, in one chunk
                if name in self.parts:
                    raise ValueError(f"'{name}' is a scalar; it cannot arrive in several chunks")
                part = self.scratch / f"{len(self.parts)}-0.npy"
                np.save(part, arr, allow_pickle=False)
                self.parts[name], self.axes[name], self.dtypes[name], self.shapes[name] = [part], 0, arr.dtype, ()
                continue
            if name not in self.parts:
                self.parts[name], self.axes[name], self.dtypes[name] = [], axis, arr.dtype
                self.shapes[name] = arr.shape[:axis] + (0,) + arr.shape[axis + 1:]
            known = self.shapes[name]
            if arr.dtype != self.dtypes[name] or arr.shape[:axis] + arr.shape[axis + 1:] != known[:axis] + known[axis + 1:]:
                raise ValueError(f"chunk of '{name}' is {arr.dtype}{list(arr.shape)}; earlier chunks are "
                                 f"{self.dtypes[name]}{list(known)} along axis {axis}")
            part = self.scratch / f"{list(self.parts).index(name)}-{len(self.parts[name])}.npy"
            np.save(part, arr, allow_pickle=False)
            self.parts[name].append(part)
            self.shapes[name] = known[:axis] + (known[axis] + arr.shape[axis],) + known[axis + 1:]

    def close(self, replace_existing: bool = True) -> dict[str, tuple[int, ...]]:
        """Assemble the archive at ``path``; returns every array's shape.  With
        ``replace_existing=False`` a file that appeared at ``path`` meanwhile is an error."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name in self.parts:
                    self._write_member(archive, name)
            if self.path.exists() and not replace_existing:
                raise FileExistsError(f"{self.path} appeared during the run; pass --force to overwrite it")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self.discard()
        return dict(self.shapes)

    def discard(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _write_member(self, archive: zipfile.ZipFile, name: str) -> None:
        shape, axis, dtype = self.shapes[name], self.axes[name], self.dtypes[name]
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
            if len(repr(header)) < 65000:  # as np.save decides between format 1.0 and 2.0
                np.lib.format.write_array_header_1_0(out, header)
            else:
                np.lib.format.write_array_header_2_0(out, header)
            if shape == ():
                out.write(np.load(self.parts[name][0], allow_pickle=False).tobytes())
                return
            for lead in np.ndindex(*shape[:axis]):  # C order: each leading index, then the chunks in turn
                for part in self.parts[name]:
                    block = _open(part)[lead]  # mapped, and unmapped once copied: resident memory stays bounded
                    rows = max(1, COPY_BYTES // max(block[0:1].nbytes, 1))
                    for i in range(0, block.shape[0], rows):
                        out.write(np.ascontiguousarray(block[i:i + rows]).tobytes())
                    del block


def _open(path: Path) -> np.ndarray:
    """A saved chunk, memory-mapped (an empty one cannot be mapped, and needs no memory)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return np.load(path, allow_pickle=False)


def record_bytes_per_step(entries: list[tuple[tuple[int, ...], np.dtype, int]], batch: int) -> int:
    """Recorded bytes per step: (per-sample shape, dtype, every) of each recorded value, for ``batch`` trials."""
    return int(sum(math.prod(shape) * np.dtype(dt).itemsize * batch / every for shape, dt, every in entries))


__all__ = ["CHUNK_BYTES", "MAX_CHUNK_STEPS", "chunk_size", "Chunk", "run_chunks", "concatenate", "NpzStreamWriter",
           "record_bytes_per_step"]
