"""A content-addressed cache of compiled TVM libraries.

An entry is a directory ``<root>/<key>/`` holding ``lib.so`` (``export_library``) and
``manifest.json`` (the key's inputs, the library's size and sha256, the calling signature).  The
key is the sha256 of everything that changes the compiled code: the printed program, the
hyperparameters, the lowering options and target, and the nspec, TVM and tvm-ffi versions.

An entry is trusted only if its manifest parses, names the same key, and the library's size and
sha256 match; a library that then fails to load is treated the same way: the entry is deleted and
rebuilt, never used blindly.  Writes go to a temporary directory renamed into place, so a crash
mid-write leaves no half entry.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata as md
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nspec

log = logging.getLogger("nspec.tvm")

MANIFEST = "manifest.json"
LIBRARY = "lib.so"


def cache_root() -> Path:
    """``$NSPEC_CACHE_DIR``, else ``~/.cache/nspec``; TVM libraries go under ``tvm/``."""
    base = os.environ.get("NSPEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nspec")
    return Path(base) / "tvm"


def versions() -> dict[str, str]:
    """The versions of nspec, TVM and tvm-ffi, part of every cache key."""
    out = {"nspec": nspec.__version__}
    for dist in ("apache-tvm", "apache-tvm-ffi"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def cache_key(parts: dict) -> str:
    """The sha256 of the JSON form of ``parts`` (sorted keys, so the key is stable)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """A verified cache entry: the library's path and the manifest's ``meta`` dict."""

    path: Path
    meta: dict


def lookup(root: Path, key: str) -> Entry | None:
    """The verified entry for ``key``, or None (a broken entry is removed)."""
    d = root / key
    if not d.exists():
        return None
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        lib = d / LIBRARY
        ok = (manifest.get("key") == key and lib.stat().st_size == manifest.get("size")
              and _sha256(lib) == manifest.get("sha256"))
    except (OSError, ValueError):
        ok = False
    if not ok:
        log.warning("nspec tvm cache: entry %s is corrupted or stale; rebuilding", key[:12])
        shutil.rmtree(d, ignore_errors=True)
        return None
    return Entry(lib, manifest.get("meta", {}))


def store(root: Path, key: str, parts: dict, meta: dict, write_library: Callable[[str], None]) -> Entry:
    """Write a new entry: ``write_library(path)`` exports the library; then the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    try:
        write_library(str(tmp / LIBRARY))
        lib = tmp / LIBRARY
        manifest = {"key": key, "inputs": parts, "size": lib.stat().st_size, "sha256": _sha256(lib), "meta": meta}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        final = root / key
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Entry(final / LIBRARY, meta)


def import_tvm_ffi():
    """``tvm_ffi``, imported with torch hidden unless torch is already loaded.

    tvm_ffi imports torch whenever it is installed (a workaround for a Windows symbol clash),
    which costs 3-10 s here; this backend passes NumPy arrays only, so a warm start need not pay
    for it.  ``import tvm`` afterwards reuses this tvm_ffi."""
    if "tvm_ffi" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError inside tvm_ffi
        try:  # imported here, not at the top: the point is to control when and how (see above)
            import tvm_ffi  # noqa: F401
        finally:
            del sys.modules["torch"]
    import tvm_ffi

    return tvm_ffi


def load_library(path: Path):
    """The ``main`` function of an exported library, loaded with tvm_ffi and TVM's runtime
    library only (no ``import tvm``: a warm start stays well under a second)."""
    tvm_ffi = import_tvm_ffi()
    spec = importlib.util.find_spec("tvm")
    runtime = Path(spec.submodule_search_locations[0]) / "lib" / "libtvm_runtime.so"
    ctypes.CDLL(str(runtime), ctypes.RTLD_GLOBAL)  # the library calls TVMBackend* from it
    return tvm_ffi.load_module(str(path))["main"]


def drop(root: Path, key: str) -> None:
    """Remove an entry (used when a verified library still fails to load)."""
    shutil.rmtree(root / key, ignore_errors=True)


__all__ = ["cache_root", "cache_key", "versions", "lookup", "store", "drop", "Entry", "MANIFEST", "LIBRARY",
           "import_tvm_ffi", "load_library"]
