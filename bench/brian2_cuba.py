"""Brian2's CUBA example (examples/CUBA.py), timed; run inside the Brian2 venv by bench/cuba.py.

    python brian2_cuba.py --target cpp_standalone --n 4000 --dir /tmp/b2 [--duration 1.0] [--seed 42]
    python brian2_cuba.py --target cython --n 4000

Prints one JSON line: ``main_loop_s`` (cpp_standalone: the simulation loop as timed by the
generated binary, ``device._last_run_time``; cython: wall time of ``run`` after a one-step warm-up
that compiles every code object), ``build_s`` (code generation and compilation: cpp_standalone's
``device.build`` minus the main loop; cython: the warm-up), ``spikes``, ``rate_hz``, ``wall_s``
(this process from start to the end of the run).  Fixed in-degree 80: p = 80 / N (0.02 at 4000).
"""

import argparse
import json
import time

T_START = time.perf_counter()

import brian2 as b2  # noqa: E402  (timed from process start)


def network(n: int, seed: int):
    b2.seed(seed)
    taum, taue, taui = 20 * b2.ms, 5 * b2.ms, 10 * b2.ms
    vt, vr, el = -50 * b2.mV, -60 * b2.mV, -49 * b2.mV
    eqs = """
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    """
    ns = {"taum": taum, "taue": taue, "taui": taui, "Vt": vt, "Vr": vr, "El": el}
    P = b2.NeuronGroup(n, eqs, threshold="v>Vt", reset="v = Vr", refractory=5 * b2.ms, method="exact",
                       namespace=ns)
    P.v = "Vr + rand() * (Vt - Vr)"
    P.ge = 0 * b2.mV
    P.gi = 0 * b2.mV
    n_exc = int(0.8 * n)
    Ce = b2.Synapses(P, P, on_pre="ge += we", namespace={"we": 1.62 * b2.mV})
    Ci = b2.Synapses(P, P, on_pre="gi += wi", namespace={"wi": -9 * b2.mV})
    p = 80.0 / n
    Ce.connect(f"i<{n_exc}", p=p)
    Ci.connect(f"i>={n_exc}", p=p)
    return b2.Network(P, Ce, Ci, b2.SpikeMonitor(P)), P


def _monitor(net):
    return next(o for o in net.objects if isinstance(o, b2.SpikeMonitor))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=["cpp_standalone", "cython"], required=True)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dir", default="/tmp/nspec-brian2-cuba")
    a = ap.parse_args()
    b2.defaultclock.dt = 0.1 * b2.ms
    out = {"target": a.target, "n": a.n}
    if a.target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=a.dir, build_on_run=False)
        net, P = network(a.n, a.seed)
        mon = _monitor(net)
        net.run(a.duration * b2.second)
        t0 = time.perf_counter()
        b2.device.build(directory=a.dir, compile=True, run=True, debug=False)
        total = time.perf_counter() - t0
        out["main_loop_s"] = float(b2.device._last_run_time)
        out["build_s"] = total - out["main_loop_s"]
    else:
        b2.prefs.codegen.target = "cython"
        net, P = network(a.n, a.seed)
        mon = _monitor(net)
        t0 = time.perf_counter()
        net.run(b2.defaultclock.dt)  # compiles (or loads from Brian2's cache) every code object
        out["build_s"] = time.perf_counter() - t0
        before = mon.num_spikes
        t0 = time.perf_counter()
        net.run(a.duration * b2.second)
        out["main_loop_s"] = time.perf_counter() - t0
        out["spikes_warmup"] = int(before)
    out["spikes"] = int(mon.num_spikes)
    out["rate_hz"] = out["spikes"] / a.n / a.duration
    out["wall_s"] = time.perf_counter() - T_START
    print(json.dumps(out))


if __name__ == "__main__":
    main()
