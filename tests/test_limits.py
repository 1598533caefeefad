"""Limits before allocation: sizes are estimated from the program before anything big is built,
and a spec or run over the limit is a located error that states the estimate and the limit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

import nspec
from nspec.cli import main
from nspec.compiler import limits
from nspec.compiler.driver import check_files
from nspec.dsl.diagnostics import NspecError
from nspec.runtime.model import LimitExceeded

NEURON = """
neuron LIF {
  param taum = 20 ms
  state v: mV = 0 mV
  dv/dt = -v / taum
  spike when v > 1 mV; reset { v = 0 mV }
}
"""


def _spec(tmp_path, body: str, name: str = "spec.nspec"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _errors(path, **kw) -> list[str]:
    diags, sources = check_files([path], **kw)
    return [d.render(sources) for d in diags if d.severity == "error"]


# Run in a child process: the exit code, stderr, the child's peak resident memory and its time.
CHILD = """
import json, resource, sys, time
from nspec.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"code": code, "peak": peak, "seconds": time.perf_counter() - t}))
"""


def _child(*argv, timeout: float = 120) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# ---------------------------------------------------------------- sizes before allocation
def test_check_of_a_billion_neurons_refuses_without_allocating(tmp_path):
    path = _spec(tmp_path, NEURON + "network N {\n  population P: LIF[1000000000]\n}\nsimulate N for 1 ms, dt = 0.1 ms\n")
    small, _ = _child("check", _spec(tmp_path, NEURON + "network N {\n  population P: LIF[10]\n}\n", "small.nspec"))
    result, err = _child("check", path)
    assert result["code"] == 1, err
    assert "population 'P' of 1,000,000,000 neurons" in err and "over the memory limit" in err
    assert "spec.nspec:9:21" in err  # the size, where the user wrote it
    assert "internal error" not in err
    # no gigabytes: the refused check stays within 100 MiB of checking a 10-neuron population
    assert result["peak"] < small["peak"] + (100 << 20), (result["peak"], small["peak"])


def test_all_to_all_probability_between_two_large_populations_is_refused(tmp_path):
    path = _spec(tmp_path, NEURON + """
network N {
  population P: LIF[100000]
  population Q: LIF[100000]
  projection e: P -> Q { connect p = 1; on_pre { v += 1 mV } }
}
""")
    t = time.perf_counter()
    (message,) = _errors(path)
    assert time.perf_counter() - t < 30
    assert "projection 'e' (100,000 -> 100,000 neurons, about 10,000,000,000 synapses)" in message
    assert "298 GiB" in message and "connect p = 1" in message


@pytest.mark.parametrize("change, quoted", [
    ("ticks 1000000000", "the number of ticks is 1,000,000,000"),
    ("until c > 1e30 max 1000000000", "the bound of 'until' is 1,000,000,000"),
])
def test_huge_loop_counts_are_located_errors_not_hangs(tmp_path, change, quoted):
    path = _spec(tmp_path, f"""
system S {{
  in x: f32
  out y: f32
  state c: f32 = 0
  let c_new = c + x
  y = c_new
  next c = c_new
  {change}
}}
simulate S for 2 s, dt = 1 s
""")
    t = time.perf_counter()
    (message,) = _errors(path)
    assert time.perf_counter() - t < 30
    assert quoted in message and "iterations per step" in message and "spec.nspec:9:" in message


@pytest.mark.parametrize("count, quoted", [
    ("2^62", "repeat 4611686018427387904 makes 4,611,686,018,427,387,904 copies at compile time, over the limit of 10,000"),
    ("2^63", "integer overflow: 2 ^ 63 = 9223372036854775808 is outside the range of i64"),  # it wrapped to -2^63
])
def test_repeat_2_to_the_63_is_refused_quickly(tmp_path, count, quoted):
    path = _spec(tmp_path, """
system Acc {
  in x: f32
  out y: f32
  y = x + 1
}
composite Tied {
  in x: f32
  out y: f32
  box layers: Acc repeat COUNT shared
  wire x -> layers.x
  wire layers.y -> y
}
simulate Tied for 1 s, dt = 1 s
""".replace("COUNT", count))
    result, err = _child("check", path, timeout=60)  # it hung before
    assert result["code"] == 1 and result["seconds"] < 30
    assert quoted in err and "spec.nspec:10:26" in err


def test_replication_and_for_loops_count_their_copies(tmp_path):
    path = _spec(tmp_path, """
system Acc {
  in x: f32
  out y: f32
  y = x + 1
}
composite Wide {
  in x: f32[20000]
  out y: f32[20000]
  box b: Acc[20000]
  wire x -> b.x
  wire b.y -> y
}
system Loop {
  out y: f32
  let h[0] = 0
  for i in range(20000) {
    let h[i + 1] = h[i] + 1
  }
  y = h[20000]
}
""")
    messages = _errors(path)
    assert any("replication makes 20,000 copies" in m and "spec.nspec:10:" in m for m in messages), messages
    assert any("this 'for' loop makes 20,000 copies" in m and "spec.nspec:17:" in m for m in messages), messages


def test_a_huge_declared_tensor_is_refused_at_its_declaration(tmp_path):
    path = _spec(tmp_path, """
system Big {
  out y: f32
  state w: f32[100000, 100000] = 0
  y = 1
  next w = w
}
""")
    message = _errors(path)[0]  # at the declared type, before anything of that shape is built
    assert "a tensor of shape [100000, 100000] (10,000,000,000 values)" in message and "spec.nspec:4:12" in message


# ---------------------------------------------------------------- the limit is the user's to set
def test_max_memory_lowers_and_raises_the_limit(tmp_path):
    spec = "specs/cuba.nspec"
    assert _errors(spec) == []
    messages = _errors(spec, limits=limits.limits_for("100KB"))
    assert "population 'P' of 4,000 neurons with 3 state variable(s) needs an estimated 375 KiB, over the memory " \
           "limit of 100 KiB" in messages[0]
    with pytest.raises(NspecError, match="over the memory limit of 100 KiB"):
        nspec.load(spec, max_memory="100KB")
    assert main(["check", spec, "--max-memory", "100KB"]) == 1
    assert main(["check", spec, "--max-memory", "8GB"]) == 0
    # a population refused by default is accepted under a higher limit (the estimate, not the check, is checked)
    assert limits.check_population("P", 10**9, 1, limits.limits_for("64GB")) is None
    assert limits.check_population("P", 10**9, 1, limits.limits_for("16GB")) is not None


def test_max_memory_values(capsys):
    assert limits.parse_memory("8GB") == 8 << 30
    assert limits.parse_memory("512 MiB") == 512 << 20
    assert limits.parse_memory("1.5G") == int(1.5 * (1 << 30))
    assert limits.parse_memory(4096) == 4096
    for bad in ("lots", "-1GB", "0", "1e400GB", "8 parsecs", True):
        with pytest.raises(ValueError):
            limits.parse_memory(bad)
    assert main(["check", "specs/cuba.nspec", "--max-memory", "lots"]) == 2
    assert "a memory size is a number" in capsys.readouterr().err
    assert limits.default_limits().max_bytes == int(limits.physical_memory() * limits.MEMORY_FRACTION)


def test_recorded_values_of_a_long_run_are_estimated_before_it_starts(tmp_path, capsys):
    model = nspec.load("specs/cuba.nspec")
    t = time.perf_counter()
    with pytest.raises(LimitExceeded) as info:
        model.run(steps=10**9)
    assert time.perf_counter() - t < 10
    message = str(info.value)
    assert "recording 1,000,000,000 steps" in message and "over the memory limit" in message
    with pytest.raises(LimitExceeded, match="over the memory limit of 1 KiB"):
        model.run(steps=10, max_memory="1KB")
    assert model.run(steps=10, max_memory="1GB")["spikes.i"].ndim == 1
    assert main(["run", "specs/cuba.nspec", "--steps", "1000000000", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error: recording 1,000,000,000 steps" in err and "internal" not in err
