"""The TVM compile cache trusts nothing it has not hashed: a changed manifest or library rebuilds the
entry, and stores are atomic when several processes store the same entry at once."""

from __future__ import annotations

import json
import multiprocessing
import time

import numpy as np
import pytest

import nspec
from nspec.lowering.tvm import cache

SIGNATURE = {"args": [["state", "P/v", "float32", [20]], ["workspace", "float32", "float32", ["W_float32"]]],
             "records": ["P/spike"], "workspace": [["float32", 112], ["int8", 128]]}
KEY = "ab" * 32
LIBRARY_BYTES = bytes(range(256)) * 64


def _write(path: str) -> None:
    with open(path, "wb") as f:
        f.write(LIBRARY_BYTES)


def _stored(root):
    return cache.store(root, KEY, {"program": "p"}, SIGNATURE, _write)


def _edit_manifest(root, change) -> None:
    path = root / KEY / cache.MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))  # still valid JSON


def _drop_arg(m):
    m["meta"]["args"].pop()


def _shrink_workspace(m):
    m["meta"]["workspace"][0][1] = 1


def _no_digest(m):
    del m["digest"]


def _wrong_form(m):
    m["meta"]["workspace"] = [["float32", -5]]
    m["digest"] = cache.manifest_digest(m)  # a consistent digest does not make a bad signature usable


@pytest.mark.parametrize("change", [_shrink_workspace, _drop_arg, _no_digest, _wrong_form])
def test_a_valid_json_manifest_that_changed_is_not_trusted(tmp_path, change):
    _stored(tmp_path)
    assert cache.lookup(tmp_path, KEY).meta == SIGNATURE
    _edit_manifest(tmp_path, change)
    assert cache.lookup(tmp_path, KEY) is None
    assert not (tmp_path / KEY).exists()  # removed, so the next store rebuilds it
    assert _stored(tmp_path).meta == SIGNATURE and cache.lookup(tmp_path, KEY).meta == SIGNATURE


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: b[:-1] + b"x", lambda b: b""])
def test_a_damaged_library_is_not_trusted(tmp_path, damage):
    _stored(tmp_path)
    lib = tmp_path / KEY / cache.LIBRARY
    lib.write_bytes(damage(lib.read_bytes()))
    assert cache.lookup(tmp_path, KEY) is None


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]", "null", "", '{"key": 1}'])
def test_a_manifest_that_is_not_one_is_not_trusted(tmp_path, manifest):
    _stored(tmp_path)
    (tmp_path / KEY / cache.MANIFEST).write_text(manifest)
    assert cache.lookup(tmp_path, KEY) is None


def _store_at_once(root, start: float, queue) -> None:
    time.sleep(max(0.0, start - time.time()))  # every process stores at the same moment
    try:
        entry = cache.store(root, KEY, {"program": "p"}, SIGNATURE, _write)
        queue.put(("ok", entry.path.read_bytes() == LIBRARY_BYTES))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(("error", repr(exc)))


def test_several_processes_store_the_same_entry_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    for _round in range(3):
        start = time.time() + 0.5
        procs = [ctx.Process(target=_store_at_once, args=(tmp_path, start, queue)) for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcomes == [("ok", True)] * 6
        entry = cache.lookup(tmp_path, KEY)
        assert entry is not None and entry.meta == SIGNATURE
        assert [p.name for p in tmp_path.iterdir()] == [KEY]  # no temporary or trash folder left
    # a broken entry in place is replaced by the next store, not kept
    (tmp_path / KEY / cache.LIBRARY).write_bytes(b"truncated")
    _stored(tmp_path)
    assert cache.lookup(tmp_path, KEY) is not None


SMALL = """
neuron LIF {
  param taum = 10 ms
  state v: mV = uniform(0, 1) * 20 mV
  dv/dt = (25 mV - v) / taum
  spike when v > 20 mV;  reset { v = 0 mV }
}
network Net {
  population P: LIF[20]
  projection e: P -> P { connect p = 0.5; on_pre { v += 1 mV } }
  record spikes of P
}
simulate Net for 10 ms, dt = 0.1 ms
"""


def test_tvm_runs_rebuild_a_tampered_entry_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / "net.nspec"
    spec.write_text(SMALL)
    expected = nspec.load(spec).run()["spikes.i"]

    def run():
        model = nspec.load(spec)
        out = model.run(backend="tvm", progress=False)["spikes.i"]
        return model.executor("tvm").info["cache"], out

    status, first = run()
    assert status == "miss" and np.array_equal(first, expected)
    assert run()[0] == "hit"
    (entry,) = (tmp_path / "cache" / "tvm").glob("[0-9a-f]" * 64)
    root = entry.parent
    for change in (_shrink_workspace, _drop_arg):
        path = entry / cache.MANIFEST
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
        status, out = run()
        assert status == "miss" and np.array_equal(out, expected), change.__name__
    lib = entry / cache.LIBRARY
    lib.write_bytes(lib.read_bytes()[: lib.stat().st_size // 2])  # truncated
    status, out = run()
    assert status == "miss" and np.array_equal(out, expected)
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".json")) == [entry.name]
