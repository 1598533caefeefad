"""Brian2's own runs of the classic models of ``specs/brian2/``; run inside the Brian2 venv.

    python bench/brian2_models.py MODEL --out FILE.npz [--duration S] [--seed K] [--dir BUILD]
                                  [--param NAME=VALUE ...]

MODEL is one of ``coba``, ``cobahh``, ``stdp_song``, ``brunel_hakim_1999``, ``brunel_2000``,
``ou_process``.  Each is written as Brian2's example writes it (``examples/COBAHH.py``,
``examples/frompapers/Brunel_Hakim_1999.py``, ``examples/frompapers/Brunel_2000.py``,
``examples/synapses/STDP.py``, ``examples/advanced/Ornstein_Uhlenbeck.py``; COBA is Brian's
Vogels-Abbott benchmark, the conductance-based twin of ``examples/CUBA.py``), with the sizes as
parameters so that ``bench/brian2_compare.py`` runs both simulators at the same size.  The models
run on the ``cpp_standalone`` device (the STDP run is 100 s of model time: 10^6 steps), with
``dt = 0.1 ms``.

The npz holds ``spikes.i`` and ``spikes.t`` (seconds) of every neuron, ``n`` (neurons), ``dt`` and
``duration``; ``stdp_song`` also the final weights ``w``, ``wmax`` and ``w.trace`` (the weights at
the start of every second, ``[seconds, synapses]``); ``ou_process`` the trace
``x`` of every unit sampled every ``--param every=`` seconds (``x.t``).  It prints one JSON line
with the wall time and spike count.  Brian2's own random streams are seeded with ``--seed``, so
its runs are reproducible but not the same draws as nspec's: the models compare by statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Callable

import brian2 as b2
import numpy as np
from brian2 import mV, ms, nS, second

DT = 0.1 * ms


@dataclass(frozen=True)
class Built:
    """A model's objects, the spike monitor to save and extra arrays to read after the run."""

    net: b2.Network
    spikes: b2.SpikeMonitor | None
    n: int
    extra: Callable[[], dict[str, np.ndarray]]


def coba(p: dict) -> Built:
    """Vogels & Abbott (2005) as Brette et al. (2007) benchmark 1: conductances in units of the leak."""
    n, prob = int(p.get("N", 4000)), float(p.get("p", 0.02))
    ne = int(n * 4 / 5)
    ns = {"taum": 20 * ms, "taue": 5 * ms, "taui": 10 * ms, "El": -60 * mV, "Vt": -50 * mV, "Vr": -60 * mV,
          "Ee": 0 * mV, "Ei": -80 * mV}
    eqs = """
    dv/dt = (El - v + ge * (Ee - v) + gi * (Ei - v)) / taum : volt (unless refractory)
    dge/dt = -ge / taue : 1
    dgi/dt = -gi / taui : 1
    """
    P = b2.NeuronGroup(n, eqs, threshold="v > Vt", reset="v = Vr", refractory=5 * ms, method="euler", namespace=ns)
    P.v = "El + (randn() * 5 - 5) * mV"
    P.ge = "randn() * 1.5 + 4"
    P.gi = "randn() * 12 + 20"
    Ce = b2.Synapses(P[:ne], P, on_pre="ge += 0.6")
    Ci = b2.Synapses(P[ne:], P, on_pre="gi += 6.7")
    Ce.connect(p=prob)
    Ci.connect(p=prob)
    mon = b2.SpikeMonitor(P)
    return Built(b2.Network(P, Ce, Ci, mon), mon, n, dict)


def cobahh(p: dict) -> Built:
    """Brette et al. (2007) benchmark 3: HH neurons with Traub-Miles kinetics, examples/COBAHH.py."""
    n, prob = int(p.get("N", 4000)), float(p.get("p", 0.02))
    ne = int(n * 4 / 5)
    area = 20000 * b2.umetre ** 2
    ns = {"area": area, "Cm": 1 * b2.ufarad * b2.cm ** -2 * area, "gl": 5e-5 * b2.siemens * b2.cm ** -2 * area,
          "El": -60 * mV, "EK": -90 * mV, "ENa": 50 * mV, "g_na": 100 * b2.msiemens * b2.cm ** -2 * area,
          "g_kd": 30 * b2.msiemens * b2.cm ** -2 * area, "VT": -63 * mV, "taue": 5 * ms, "taui": 10 * ms,
          "Ee": 0 * mV, "Ei": -80 * mV, "we": 6 * nS, "wi": 67 * nS}
    eqs = """
    dv/dt = (gl*(El-v)+ge*(Ee-v)+gi*(Ei-v)-g_na*(m*m*m)*h*(v-ENa)-g_kd*(n*n*n*n)*(v-EK))/Cm : volt
    dm/dt = alpha_m*(1-m)-beta_m*m : 1
    dn/dt = alpha_n*(1-n)-beta_n*n : 1
    dh/dt = alpha_h*(1-h)-beta_h*h : 1
    dge/dt = -ge*(1./taue) : siemens
    dgi/dt = -gi*(1./taui) : siemens
    alpha_m = 0.32*(mV**-1)*(13*mV-v+VT)/(exp((13*mV-v+VT)/(4*mV))-1.)/ms : Hz
    beta_m = 0.28*(mV**-1)*(v-VT-40*mV)/(exp((v-VT-40*mV)/(5*mV))-1)/ms : Hz
    alpha_h = 0.128*exp((17*mV-v+VT)/(18*mV))/ms : Hz
    beta_h = 4./(1+exp((40*mV-v+VT)/(5*mV)))/ms : Hz
    alpha_n = 0.032*(mV**-1)*(15*mV-v+VT)/(exp((15*mV-v+VT)/(5*mV))-1.)/ms : Hz
    beta_n = .5*exp((10*mV-v+VT)/(40*mV))/ms : Hz
    """
    P = b2.NeuronGroup(n, eqs, threshold="v>-20*mV", refractory=3 * ms, method="exponential_euler", namespace=ns)
    Ce = b2.Synapses(P[:ne], P, on_pre="ge+=we", namespace=ns)
    Ci = b2.Synapses(P[ne:], P, on_pre="gi+=wi", namespace=ns)
    Ce.connect(p=prob)
    Ci.connect(p=prob)
    P.v = "El + (randn() * 5 - 5)*mV"
    P.ge = "(randn() * 1.5 + 4) * 10.*nS"
    P.gi = "(randn() * 12 + 20) * 10.*nS"
    mon = b2.SpikeMonitor(P)
    return Built(b2.Network(P, Ce, Ci, mon), mon, n, dict)


def stdp_song(p: dict) -> Built:
    """Song, Miller & Abbott (2000), examples/synapses/STDP.py: 1000 Poisson inputs onto one neuron."""
    n_in = int(p.get("N", 1000))
    gmax, taupre = 0.01, 20 * ms
    ns = {"taum": 10 * ms, "taupre": taupre, "taupost": taupre, "Ee": 0 * mV, "vt": -54 * mV, "vr": -60 * mV,
          "El": -74 * mV, "taue": 5 * ms, "gmax": gmax, "dApre": 0.01 * gmax, "dApost": -0.01 * 1.05 * gmax}
    inputs = b2.PoissonGroup(n_in, rates=float(p.get("F", 15.0)) * b2.Hz)
    eqs = """
    dv/dt = (ge * (Ee-vr) + El - v) / taum : volt
    dge/dt = -ge / taue : 1
    """
    neuron = b2.NeuronGroup(1, eqs, threshold="v>vt", reset="v = vr", method="exact", namespace=ns)
    S = b2.Synapses(inputs, neuron,
                    """w : 1
                    dApre/dt = -Apre / taupre : 1 (event-driven)
                    dApost/dt = -Apost / taupost : 1 (event-driven)""",
                    on_pre="""ge += w
                    Apre += dApre
                    w = clip(w + Apost, 0, gmax)""",
                    on_post="""Apost += dApost
                    w = clip(w + Apre, 0, gmax)""", namespace=ns)
    S.connect()
    S.w = "rand() * gmax"
    mon = b2.SpikeMonitor(neuron)
    weights = b2.StateMonitor(S, "w", record=np.arange(n_in), dt=1 * second)  # as the spec: each whole second
    return Built(b2.Network(inputs, neuron, S, mon, weights), mon, 1,
                 lambda: {"w": np.asarray(S.w[:]), "wmax": gmax, "w.trace": np.asarray(weights.w[:]).T})


def brunel_hakim_1999(p: dict) -> Built:
    """Brunel & Hakim (1999), examples/frompapers/Brunel_Hakim_1999.py: sparse noisy inhibition."""
    n, c = int(p.get("N", 5000)), int(p.get("C", 1000))
    ns = {"Vr": 10 * mV, "theta": 20 * mV, "tau": 20 * ms, "J": float(p.get("J", 0.1)) * mV,
          "muext": float(p.get("muext", 25.0)) * mV, "sigmaext": float(p.get("sigmaext", 1.0)) * mV,
          "sparseness": c / n}
    eqs = "dV/dt = (-V+muext + sigmaext * sqrt(tau) * xi)/tau : volt"
    group = b2.NeuronGroup(n, eqs, threshold="V>theta", reset="V=Vr", refractory=2 * ms, method="euler",
                           namespace=ns)
    group.V = ns["Vr"]
    conn = b2.Synapses(group, group, on_pre="V += -J", delay=2 * ms, namespace=ns)
    conn.connect("rand()<sparseness")
    mon = b2.SpikeMonitor(group)
    return Built(b2.Network(group, conn, mon), mon, n, dict)


def brunel_2000(p: dict) -> Built:
    """Brunel (2000) Fig. 8, examples/frompapers/Brunel_2000.py; the asynchronous irregular regime (panel C: g = 5, nu = 2; panel B: g = 6, nu = 4)."""
    ne, ce = int(p.get("NE", 10000)), int(p.get("CE", 1000))
    ni = round(0.25 * ne)
    g, ratio = float(p.get("g", 5.0)), float(p.get("nu_ratio", 2.0))
    J, tau, theta = 0.1 * mV, 20 * ms, 20 * mV
    nu_thr = theta / (J * ce * tau)
    ns = {"tau": tau, "theta": theta, "V_r": 10 * mV, "J": J, "g": g}
    neurons = b2.NeuronGroup(ne + ni, "dv/dt = -v/tau : volt (unless refractory)", threshold="v > theta",
                             reset="v = V_r", refractory=2 * ms, method="exact", namespace=ns)
    exc = b2.Synapses(neurons[:ne], neurons, on_pre="v += J", delay=1.5 * ms, namespace=ns)
    exc.connect(p=ce / ne)
    inh = b2.Synapses(neurons[ne:], neurons, on_pre="v += -g*J", delay=1.5 * ms, namespace=ns)
    inh.connect(p=ce / ne)  # epsilon = C_E / N_E = C_I / N_I
    drive = b2.PoissonInput(neurons, "v", N=ce, rate=ratio * nu_thr, weight=J)
    mon = b2.SpikeMonitor(neurons)
    return Built(b2.Network(neurons, exc, inh, drive, mon), mon, ne + ni, dict)


def ou_process(p: dict) -> Built:
    """dx/dt = -x/tau + sqrt(2 sigma^2 / tau) xi (examples/advanced/Ornstein_Uhlenbeck.py), N units."""
    n = int(p.get("N", 1000))
    ns = {"tau": float(p.get("tau", 0.01)) * second, "sigma": float(p.get("sigma", 1.0))}
    group = b2.NeuronGroup(n, "dx/dt = -x/tau + sqrt(2*sigma**2/tau)*xi : 1", method="euler", namespace=ns)
    group.x = float(p.get("x0", 0.0))
    every = float(p.get("every", 0.001)) * second
    trace = b2.StateMonitor(group, "x", record=True, dt=every)
    return Built(b2.Network(group, trace), None, n,
                 lambda: {"x": np.asarray(trace.x[:]).T, "x.t": np.asarray(trace.t[:] / second)})


MODELS: dict[str, Callable[[dict], Built]] = {f.__name__: f for f in (
    coba, cobahh, stdp_song, brunel_hakim_1999, brunel_2000, ou_process)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds of model time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="cpp_standalone build folder")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args()
    params = dict(item.split("=", 1) for item in a.param)
    t0 = time.perf_counter()
    folder = a.dir or f"/tmp/nspec-brian2-{a.model}"
    b2.set_device("cpp_standalone", directory=folder, build_on_run=False)
    b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j2"]  # Brian2's default '-j' is unbounded
    b2.defaultclock.dt = DT
    b2.seed(a.seed)
    built = MODELS[a.model](params)
    built.net.run(a.duration * second)
    b2.device.build(directory=folder, compile=True, run=True, debug=False)
    out = {"n": built.n, "dt": float(DT / second), "duration": a.duration, **built.extra()}
    if built.spikes is not None:
        out["spikes.i"] = np.asarray(built.spikes.i[:], dtype=np.int64)
        out["spikes.t"] = np.asarray(built.spikes.t[:] / second)
    np.savez(a.out, **out)
    spikes = int(out["spikes.i"].size) if built.spikes is not None else 0
    print(json.dumps({"model": a.model, "spikes": spikes, "wall_s": time.perf_counter() - t0,
                      "main_loop_s": float(b2.device._last_run_time)}))


if __name__ == "__main__":
    main()
