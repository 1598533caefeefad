"""Where a CUBA step's time goes on the TVM backend: the step's work, the share of this core's vector
throughput it reaches, and perf samples of the compiled kernel by loop.

    python bench/cuba_profile.py [--reps 40] [--freq 20000]

1. Compiles ``specs/cuba.nspec`` (4000 LIF, the workload of ``bench/cuba.py``) with the TVM backend into a
   fresh cache and times its main loop (median of 5 runs of 1 s, spikes recorded as events).
2. Counts a step's work from the IR: elementwise float arithmetic and compare/select operations per
   neuron, and the synaptic events per step from the run's spikes.
3. Measures this core's vector peak as single-thread sgemm (torch, 1024^3, best of 5) and states the
   step's arithmetic rate as a fraction of it.
4. Runs the kernel ``--reps`` times under ``perf record -e cpu-clock`` (a software clock: this VM's perf
   has no hardware counters, so no IPC or cache-miss counts), maps each sample in the library to its
   instruction (``objdump -d``) and its innermost loop (the span of a backward branch), and prints each
   hot loop's share with its instruction mix: 512/256-bit vector, scalar float, integer divisions,
   vector stores, instructions in all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuba  # noqa: E402  (the workload and its runner, shared with bench/cuba.py)

ARITH = {"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "NEG", "EXP", "FMA"}
SELECT = {"GT", "GE", "LT", "LE", "EQ", "NE", "WHERE", "NOT", "CAST", "SPIKE"}


def step_work(program) -> dict:
    """Elementwise operations of one step, per neuron, from the step graph."""
    n = program.states[0].shape[0]
    arith = select = 0
    for node in program.step.nodes:
        op = node.op.name
        size = int(np.prod(node.shape)) if node.shape else 1
        if size != n:
            continue
        arith += op in ARITH
        select += op in SELECT
    return {"neurons": n, "arith_per_neuron": arith, "select_per_neuron": select}


def sgemm_peak() -> float:
    """Single-thread sgemm GFLOP/s (torch, 1024^3, best of 5): this core's practical vector peak."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(6):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024 ** 3 / best / 1e9


def child(reps: int) -> None:
    """Run 1 s of CUBA ``reps`` times from the cache; print the kernel times (run under perf)."""
    from nspec.lowering.tvm.executor import TvmExecutor

    program = cuba.load_program(4000)
    ex = TvmExecutor(program, progress=False)
    runs = [cuba.nspec_run(ex, program, 1) for _ in range(reps)]
    print(json.dumps({"kernel_s": [r["kernel_s"] for r in runs], "spikes": runs[0]["spikes"]}))


def disassemble(library: Path) -> dict[int, str]:
    """Address -> 'mnemonic operands' of every instruction in the library."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(.*)", line)
        if m:
            out[int(m[1], 16)] = m[2].strip()
    return out


def loops(asm: dict[int, str]) -> list[tuple[int, int]]:
    """(start, end) of every backward branch's span: the loops of the machine code."""
    spans = []
    for addr, ins in asm.items():
        m = re.match(r"j\w+\s+([0-9a-f]+)\b", ins)
        if m and int(m[1], 16) <= addr:
            spans.append((int(m[1], 16), addr))
    return spans


def mix(asm: dict[int, str], lo: int, hi: int) -> dict:
    """The instruction mix of the addresses [lo, hi]."""
    ins = [v for a, v in asm.items() if lo <= a <= hi]
    return {"instructions": len(ins), "zmm": sum("zmm" in i for i in ins), "ymm": sum("ymm" in i for i in ins),
            "scalar_float": sum(bool(re.match(r"v?\w+s[sd]\s", i)) and "xmm" in i and "zmm" not in i for i in ins),
            "idiv": sum(i.startswith(("idiv", "div")) for i in ins),
            "vector_stores": sum(i.startswith(("vmovaps", "vmovups", "vmovdqa", "vmovdqu")) and i.endswith(")")
                                 for i in ins)}


def perf_samples(data: Path, library: Path) -> Counter:
    """Samples per address inside ``library`` (addresses as objdump shows them)."""
    text = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "-F", "sample,dso,sym",
                           "--stdio"], capture_output=True, text=True).stdout
    out = Counter()
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+\[\.\]\s+0x([0-9a-f]+)", line)
        if m and m[2] == library.name:
            out[int(m[3], 16)] += int(m[1])
    total = sum(int(m[1]) for m in re.finditer(r"^\s*(\d+)\s+\S", text, re.M))
    out["__total__"] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40, help="1 s runs under perf (default 40)")
    ap.add_argument("--freq", type=int, default=20000, help="perf sampling frequency in Hz")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    cache = tempfile.mkdtemp(prefix="nspec-cache-")
    os.environ["NSPEC_CACHE_DIR"] = cache
    from nspec.lowering.tvm.executor import TvmExecutor

    program = cuba.load_program(4000)
    ex = TvmExecutor(program, progress=False)
    runs = [cuba.nspec_run(ex, program, 1) for _ in range(5)]
    loop_s = statistics.median(r["kernel_s"] for r in runs)
    steps = program.duration_steps or 10000
    work = step_work(program)
    peak = sgemm_peak()
    step_us = loop_s / steps * 1e6
    n = work["neurons"]
    flops = n * work["arith_per_neuron"]
    events = runs[0]["spikes"] / steps
    print(f"CUBA 4000 LIF on tvm: main loop {loop_s:.4f} s for {steps} steps = {step_us:.2f} us per step "
          f"(median of 5; spikes {runs[0]['spikes']}, {events:.2f} spikes per step, ~{events * 80:.0f} synaptic adds)")
    print(f"step work from the IR: {work['arith_per_neuron']} float arithmetic + {work['select_per_neuron']} "
          f"compare/select/cast operations per neuron = {flops / 1e3:.0f} kflop "
          f"(+{n * work['select_per_neuron'] / 1e3:.0f} k other elementwise)")
    rate = flops / (step_us * 1e-6) / 1e9
    ops_rate = n * (work["arith_per_neuron"] + work["select_per_neuron"]) / (step_us * 1e-6) / 1e9
    print(f"this core's single-thread sgemm: {peak:.1f} GFLOP/s; the step's arithmetic runs at {rate:.1f} GFLOP/s = "
          f"{rate / peak:.1%} of it ({ops_rate:.1f} G elementwise ops/s counting compares and selects: "
          f"{ops_rate / peak:.1%}).")

    data = Path(cache) / "perf.data"
    rec = subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", str(a.freq), "-o", str(data), sys.executable,
                          __file__, "--child", str(a.reps)], capture_output=True, text=True)
    if rec.returncode:
        print(f"perf record failed ({rec.returncode}): {rec.stderr[-800:]}")
        return
    out = json.loads([ln for ln in rec.stdout.splitlines() if ln.startswith("{")][-1])
    library = next(Path(cache, "tvm").glob("*/lib.so"))
    asm = disassemble(library)
    samples = perf_samples(data, library)
    total = samples.pop("__total__")
    in_kernel = sum(samples.values())
    print(f"\nperf: {total} samples in the process, {in_kernel} ({in_kernel / max(total, 1):.1%}) in the kernel "
          f"library ({a.reps} runs of 1 s, main loop {statistics.median(out['kernel_s']):.4f} s each under perf; "
          f"the rest is Python start-up, spec compilation and the spike record's arrays)")
    spans = loops(asm)
    by_loop: Counter = Counter()
    for addr, k in samples.items():
        inner = min((s for s in spans if s[0] <= addr <= s[1]), key=lambda s: s[1] - s[0], default=None)
        by_loop[inner] += k
    print(f"{'loop (library addresses)':28}{'kernel %':>9}{'instrs':>8}{'zmm':>6}{'ymm':>6}{'scalar fp':>10}"
          f"{'idiv':>6}{'vec stores':>11}")
    for span, k in by_loop.most_common(8):
        if span is None:
            print(f"{'outside any loop':28}{k / in_kernel:>9.1%}")
            continue
        m = mix(asm, *span)
        print(f"{f'{span[0]:#x}-{span[1]:#x}':28}{k / in_kernel:>9.1%}{m['instructions']:>8}{m['zmm']:>6}"
              f"{m['ymm']:>6}{m['scalar_float']:>10}{m['idiv']:>6}{m['vector_stores']:>11}")
    hot = sorted(samples.items(), key=lambda kv: -kv[1])[:6]
    print("hottest instructions: " + "; ".join(f"{a_:#x} {asm.get(a_, '?')} ({k / in_kernel:.1%})" for a_, k in hot))


if __name__ == "__main__":
    main()
