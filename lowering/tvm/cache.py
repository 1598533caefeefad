"""A content-addressed cache of compiled TVM libraries.

An entry is a directory ``<root>/<key>/`` holding ``lib.so`` (``export_library``) and
``manifest.json`` (the key's inputs, the library's size and sha256, the calling signature).  The
key is the sha256 of everything that changes the compiled code: the printed program, the
hyperparameters, the lowering options and target, and the nspec, TVM and tvm-ffi versions.

Nothing is trusted that has not been hashed: the manifest carries the sha256 of its own canonical
JSON (``digest``, over every other field, the calling signature included) and of the library, and
an entry is used only if both match, it names the same key and its signature has the expected form.
Any mismatch (a changed workspace size, a dropped argument, a truncated library, invalid JSON)
deletes the entry and rebuilds it; a library that verifies but fails to load is treated the same way.

Writes go to a temporary directory renamed into place (``os.replace``), so a crash mid-write leaves
no half entry and readers never see one.  Under concurrency, the first process to rename wins; a
later one finds the entry in place, keeps it if it verifies (it holds the same library: same key)
and discards its own copy, or moves a broken one aside and retries.
"""

from __future__ import annotations

import contextlib
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

from nspec.version import __version__

log = logging.getLogger("nspec.tvm")

MANIFEST = "manifest.json"
LIBRARY = "lib.so"


def cache_root() -> Path:
    """``$NSPEC_CACHE_DIR``, else ``~/.cache/nspec``; TVM libraries go under ``tvm/``."""
    base = os.environ.get("NSPEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nspec")
    return Path(base) / "tvm"


def versions() -> dict[str, str]:
    """The versions of nspec, TVM and tvm-ffi, part of every cache key."""
    out = {"nspec": __version__}
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


def manifest_digest(manifest: dict) -> str:
    """The sha256 of a manifest's canonical JSON, without its ``digest`` field."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _is_signature(meta) -> bool:
    """The form of a calling signature (``build.signature_json``): args, records, workspace sizes."""
    try:
        return (all(isinstance(k, str) and isinstance(n, str) and isinstance(d, str)
                    and all(isinstance(x, str) or (isinstance(x, int) and x >= 0) for x in shape)
                    for k, n, d, shape in meta["args"])
                and all(isinstance(r, str) for r in meta["records"])
                and all(isinstance(d, str) and isinstance(n, int) and n >= 0 for d, n in meta["workspace"]))
    except (KeyError, TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Entry:
    """A verified cache entry: the library's path and the manifest's ``meta`` dict."""

    path: Path
    meta: dict


def verify(d: Path, key: str) -> Entry | None:
    """The entry in folder ``d`` if every byte that will be loaded matches its hash, else None."""
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        lib = d / LIBRARY
        ok = (isinstance(manifest, dict) and manifest.get("digest") == manifest_digest(manifest)
              and manifest.get("key") == key and lib.stat().st_size == manifest.get("size")
              and _sha256(lib) == manifest.get("sha256") and _is_signature(manifest.get("meta")))
    except (OSError, ValueError, RecursionError):
        ok = False
    return Entry(d / LIBRARY, manifest["meta"]) if ok else None


def lookup(root: Path, key: str) -> Entry | None:
    """The verified entry for ``key``, or None (a broken entry is removed)."""
    d = root / key
    if not d.exists():
        return None
    entry = verify(d, key)
    if entry is None:
        log.warning("nspec tvm cache: entry %s is corrupted or stale; rebuilding", key[:12])
        _remove(root, d)
    return entry


def store(root: Path, key: str, parts: dict, meta: dict, write_library: Callable[[str], None]) -> Entry:
    """Write a new entry: ``write_library(path)`` exports the library; then the manifest; then one
    atomic rename.  Safe when several processes store the same key at once (see the module's text)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    final = root / key
    try:
        write_library(str(tmp / LIBRARY))
        lib = tmp / LIBRARY
        manifest = {"key": key, "inputs": parts, "size": lib.stat().st_size, "sha256": _sha256(lib), "meta": meta}
        manifest["digest"] = manifest_digest(json.loads(json.dumps(manifest, default=str)))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        for _ in range(3):
            try:
                os.replace(tmp, final)
                return Entry(final / LIBRARY, meta)
            except OSError:  # the folder exists: another process stored it first, or a broken one is there
                existing = verify(final, key)
                if existing is not None:
                    return existing  # the same key, so the same library: keep the winner's
                _remove(root, final)
        raise OSError(f"nspec tvm cache: cannot store entry {key[:12]} in {root}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove(root: Path, d: Path) -> None:
    """Remove an entry folder: first renamed aside (atomic: no reader sees it half deleted), then deleted."""
    aside = root / f".trash-{d.name[:12]}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.replace(d, aside)
    except OSError:
        return  # already gone (another process removed or replaced it)
    shutil.rmtree(aside, ignore_errors=True)


# Optional packages that tvm_ffi and tvm import when installed, for features this backend does not
# use (torch tensors, bfloat16 and float8 arrays), at a cost of 1-3 s a process: ~1 s for torch,
# ~0.6 s for ml_dtypes' extension.  Both packages catch the ImportError and go on without them.
OPTIONAL_IMPORTS = ("torch", "ml_dtypes")


@contextlib.contextmanager
def without_optional_imports():
    """Within the block, ``import torch`` and ``import ml_dtypes`` raise ImportError, unless the
    package is loaded already; afterwards both import normally."""
    hidden = [name for name in OPTIONAL_IMPORTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # the import system's "not available" mark
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def import_tvm_ffi():
    """``tvm_ffi``, imported without its optional packages unless they are loaded already.

    tvm_ffi imports torch whenever it is installed (a workaround for a Windows symbol clash) and
    ml_dtypes for bfloat16; this backend passes float32/float64/integer NumPy arrays only, so a
    warm start need not pay for either.  ``import tvm`` afterwards reuses this tvm_ffi."""
    if "tvm_ffi" not in sys.modules:
        with without_optional_imports():  # imported here, not at the top: the point is to control how
            import tvm_ffi  # noqa: F401
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
    _remove(root, root / key)


__all__ = ["cache_root", "cache_key", "versions", "manifest_digest", "verify", "lookup", "store", "drop", "Entry",
           "MANIFEST", "LIBRARY",
           "import_tvm_ffi", "load_library", "without_optional_imports"]
