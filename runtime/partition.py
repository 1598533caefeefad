"""One spiking network over several workers: ``run_partitioned(model, workers=N, steps=...)``.

``compiler/partition.py`` splits the compiled network by neuron ranges; here each worker (a Ray
actor) holds its part's state and runs the part's step graph with the reference interpreter's
plans (the same oracle rules as ``Model.run``), and the workers exchange the indices of the neurons
that spiked (int32) every minimum-delay interval, NEST's scheme:

* **interval mode** (every propagation of exchanged spikes only pushes into a delay FIFO of
  ``d >= 1`` steps): a worker runs ``D = min d`` steps with no remote spikes, pushing zero rows, then
  sends the interval's spikes; at the start of the next interval it computes each buffered step's
  increments from the gathered spikes and writes them into the FIFO rows they would have been pushed
  to (``d - r + j`` after ``r`` steps, for the ``j``-th step), before anything reads them;
* **step mode** (a projection without delay: its increment lands in the next state, a one-step
  delay): every step, the worker computes what does not depend on remote spikes (its own spikes
  among it), sends, and finishes the step when the spikes of all workers have arrived.

The exchange is an all-gather through Ray's object store: each interval, every worker is called
with the object references of every worker's previous result, so the payloads travel worker to
worker and the driver only queues calls.  The spikes recorded are the single process's, bit for
bit (``tests/test_partition.py``), as the worker's floats are computed by the same rules in the
same order.  Payload bytes (the int32 indices, ``4 x spikes x (workers - 1)`` per exchange) are
counted; Ray's own framing is not.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from nspec.compiler.interpret import Context, Plan
from nspec.compiler.ir import Graph, Op
from nspec.compiler.ops import STEP_DRAWS
from nspec.compiler.partition import Part, Partition, PartitionError, build_part, partition
from nspec.runtime.ray_start import start_ray

__all__ = ["run_partitioned", "PartitionError", "PartitionedRun"]

_NEVER = 1 << 30  # the interval of parts that exchange nothing


def _fifos(step: Graph, late: set[int]) -> dict[str, tuple[int, int]] | None:
    """When every value computed from exchanged spikes only enters delay FIFOs: state -> (row node, d),
    the row each step pushes; else None.  ``late`` is everything computed from the exchanged spikes."""
    args = step.args()
    rows = {}
    for r in step.results:
        if r.node not in late:
            continue
        n = step.nodes[r.node]
        if r.kind != "next" or n.op is not Op.CONCAT or n.attr("axis") != 0 or r.name not in args:
            return None
        d = step.nodes[args[r.name]].shape[0]
        *rest, row = n.inputs
        if rest:
            head = step.nodes[rest[0]]
            if (len(rest) != 1 or head.op is not Op.SLICE or head.inputs[0] != args[r.name]
                    or head.attr("starts")[0] != 1 or head.attr("stops")[0] != d):
                return None
        if step.nodes[row].shape[0] != 1 or any(r.node in step.nodes[i].inputs for i in range(len(step.nodes))):
            return None
        # a row may read only the exchange and constants: it is computed after the steps it belongs to
        for i in step.reachable([row]) - late:
            m = step.nodes[i]
            if m.op in STEP_DRAWS or (m.op is Op.ARG and m.attr("role").value != "param"):
                return None
        rows[r.name] = (row, d)
    return rows


@dataclass
class _Records:
    """What a worker records: spikes as (step, index) pairs per recorded value, states as sampled rows."""

    spikes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    states: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)


class Worker:
    """One worker: its part of the network's state, stepped by the reference interpreter's plans.

    ``advance(steps, *incoming)`` first applies the spikes gathered from every worker's previous
    call (``incoming``: their results, in worker order), then runs the next ``steps`` steps (one in
    step mode) and returns this worker's spikes of them; ``finish(*incoming)`` applies the last ones
    and returns the records, the local state and the bytes sent."""

    def __init__(self, part: Partition, w: int, params: dict, state: dict, spike_names: tuple[str, ...],
                 state_records: tuple[tuple[str, int], ...]):
        self.args = (part, w, params, state, spike_names, state_records)

    def ready(self) -> int:
        """Build the part (in the worker, in parallel); returns the interval (steps between exchanges)
        it allows."""
        self._build(*self.args)
        del self.args
        return self.interval

    def _build(self, part: Partition, w: int, params: dict, state: dict, spike_names: tuple[str, ...],
               state_records: tuple[tuple[str, int], ...]) -> None:
        self.p: Part = build_part(part, w)
        self.workers = part.workers
        program = part.program
        self.params = {k: v[tuple(slice(a, b) for a, b in self.p.cuts[k])] for k, v in params.items()}
        self.state = {k: np.ascontiguousarray(v[(slice(None),) + tuple(slice(a, b) for a, b in self.p.cuts[k])])
                      for k, v in state.items()}
        step = self.p.step
        self.plan = Plan(step)
        self.next_nodes = {s.name: step.result(s.name, "next").node for s in program.states}
        args = step.args()
        self.exchange_args = {e.node: (e.arg, e.size, step.nodes[args[e.arg]].dtype.numpy)
                              for e, _, _ in self.p.sends if e.arg in args}
        late = set()
        for i, n in enumerate(step.nodes):
            if (n.op is Op.ARG and n.attr("name").startswith("exchange/")) or any(j in late for j in n.inputs):
                late.add(i)
        self.fifos = _fifos(step, late) if late else {}
        recorded = {step.result(n, "value").node for n in spike_names if step.result(n, "value")}
        if self.fifos is None and recorded & late:
            raise PartitionError(step.nodes[min(recorded & late)].span, "a recorded value depends on spikes in flight")
        # no exchange at all: the parts never need each other's spikes
        self.interval = 1 if self.fifos is None else min((d for _, d in self.fifos.values()), default=_NEVER)
        early = set(range(len(step.nodes))) - late
        self.plan_early = Plan(step, only=early) if self.fifos is None else None
        self.plan_late = Plan(step, only=late) if self.fifos is None else None
        self.plan_rows = Plan(step, only=step.reachable([r for r, _ in self.fifos.values()])) if self.fifos else None
        self.spike_nodes = {n: step.result(n, "value").node for n in spike_names if step.result(n, "value")}
        self.state_records = state_records
        self.records = _Records({n: [] for n in self.spike_nodes}, {r: [] for r in state_records})
        self.t = 0
        self.pending: tuple[int, object] | None = None  # (steps buffered, step mode: the early values)
        self.sent_bytes = 0
        self.sent_spikes = 0

    # ------------------------------------------------------------ stepping
    def _context(self, exchange: dict[str, np.ndarray] | None) -> Context:
        env = dict(self.params)
        env.update(self.state)
        for node, (name, size, dtype) in self.exchange_args.items():
            env[name] = exchange[name] if exchange is not None else np.zeros((1, size), dtype)
        return Context(env, 1, None, {}, False)

    def _gathered(self, incoming: tuple, j: int) -> dict[str, np.ndarray]:
        """The global event vectors of buffered step ``j`` from every worker's indices."""
        out = {}
        for node, (name, size, dtype) in self.exchange_args.items():
            vec = np.zeros((1, size), dtype)
            for sent in incoming:
                vec[0, sent[node][j]] = 1
            out[name] = vec
        return out

    def _record_and_send(self, vals: list) -> dict[int, np.ndarray]:
        t = self.t
        for name, node in self.spike_nodes.items():
            idx = np.flatnonzero(vals[node][0])
            if idx.size:
                self.records.spikes[name].append((np.full(idx.size, t, np.int64), idx + (self.p.starts[name] or 0)))
        for name, every in self.state_records:
            if t % every == 0:
                self.records.states[(name, every)].append(np.array(self.state[name][0]))
        sent = {}
        for e, node, start in self.p.sends:
            v = vals[node][0]
            idx = np.flatnonzero(v)
            if np.any(v[idx] != 1):
                raise PartitionError(self.p.step.nodes[node].span, "the spikes a projection sends must be 0 or 1 "
                                                                   "(only the indices of the events are exchanged)")
            sent[e.node] = (idx + start).astype(np.int32)
            self.sent_spikes += idx.size
            self.sent_bytes += sent[e.node].nbytes * (self.workers - 1)
        return sent

    def _update(self, vals: list) -> None:
        flags = self.plan.flags
        self.state = {name: vals[node] if flags[node] else np.broadcast_to(vals[node], self.state[name].shape)
                      for name, node in self.next_nodes.items()}

    def _deliver(self, incoming: tuple) -> None:
        if self.pending is None:
            return
        steps, early = self.pending
        self.pending = None
        if self.fifos is None:  # step mode: finish the step with every worker's spikes
            vals = self.plan_late.run(self._context(self._gathered(incoming, 0)), early)
            self._update(vals)
            return
        for j in range(steps if self.fifos else 0):
            vals = self.plan_rows.run(self._context(self._gathered(incoming, j)))
            for name, (row, d) in self.fifos.items():
                self.state[name] = np.array(self.state[name])
                self.state[name][:, d - steps + j] = vals[row][:, 0]

    def advance(self, steps: int, *incoming) -> dict[int, list[np.ndarray]]:
        self._deliver(incoming)
        out: dict[int, list[np.ndarray]] = {e.node: [] for e, _, _ in self.p.sends}
        if self.fifos is None:
            early = self.plan_early.run(self._context(None))
            sent = self._record_and_send(early)
            self.pending = (1, {i: v for i, v in enumerate(early) if v is not None})
            self.t += 1
            return {k: [v] for k, v in sent.items()}
        for _ in range(steps):
            vals = self.plan.run(self._context(None))  # remote spikes arrive after the interval
            for k, v in self._record_and_send(vals).items():
                out[k].append(v)
            self._update(vals)
            self.t += 1
        self.pending = (steps, None)
        return out

    def finish(self, *incoming) -> dict:
        self._deliver(incoming)
        spikes = {n: (np.concatenate([t for t, _ in r]) if r else np.zeros(0, np.int64),
                      np.concatenate([i for _, i in r]) if r else np.zeros(0, np.int64))
                  for n, r in self.records.spikes.items()}
        states = {k: np.stack(v) if v else None for k, v in self.records.states.items()}
        return {"spikes": spikes, "states": states, "state": self.state, "starts": self.p.starts,
                "cuts": self.p.cuts, "sent_bytes": self.sent_bytes, "sent_spikes": self.sent_spikes}


@dataclass
class PartitionedRun:
    """A partitioned run's measurements: steps, workers, the exchange interval, exchanges made,
    spikes sent, payload bytes exchanged (indices x 4 x (workers - 1)) and wall seconds of the loop."""

    steps: int
    workers: int
    interval: int
    exchanges: int
    spikes: int
    bytes: int
    run_s: float
    populations: dict = field(default_factory=dict)


def _ray(workers: int):
    """Ray, started here if no one has (a local instance, or the cluster ``RAY_ADDRESS`` names); whether it
    was started here; the CPUs each worker asks for (fewer cores than workers: they share them)."""
    import ray

    started = not ray.is_initialized()
    if started and os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    elif started:
        start_ray(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return ray, started, min(1.0, cpus / workers)


def run_partitioned(model, workers: int, steps: int | None = None, seed: int | None = None,
                    ranges: dict[str, list[tuple[int, int]]] | None = None, stats: dict | None = None) -> dict:
    """Run ``model`` (an ``nspec.load``ed spiking network) split over ``workers`` Ray actors.

    Returns the monitor arrays ``Model.run`` returns for the same ``steps`` and ``seed`` (spike
    monitors ``name.i``, ``name.t``; state monitors ``name.<var>``, ``name.t``), the same values.
    ``ranges`` gives a population's neuron ranges (``{"P": [(0, 1500), (1500, 4000)]}``); by default
    each population is cut into equal contiguous parts.  Ray is started (and stopped after the run)
    unless it already runs: a local instance, or the cluster that ``RAY_ADDRESS`` names (or call
    ``ray.init(address=...)`` first).  Each worker asks Ray for one CPU, or its share when the cluster
    has fewer CPUs than workers.  ``stats``, if given, receives the run's
    ``PartitionedRun`` under ``"run"``.  A network the partitioner cannot split raises
    ``PartitionError`` naming the spec line (see ``compiler/partition.py`` for what it accepts)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    program = model.program
    steps = int(steps if steps is not None else (program.duration_steps or 0))
    if steps < 1:
        raise ValueError("a partitioned run needs steps= (the spec has no simulate duration)")
    plan = partition(program, workers, ranges)
    seed = program.seed if seed is None else seed
    params, state = model.initial(1, seed)
    wanted = _wanted(model)
    spike_names = tuple(v for m in program.monitors if m.kind == "spikes" for v in m.variables)
    state_records = tuple(sorted({(v, m.every) for m in program.monitors if m.kind == "state" for v in m.variables}))
    ray, started, cpus = _ray(workers)
    try:
        results, run = _run(ray, cpus, plan, params, state, steps, spike_names, state_records)
    finally:
        if started:
            ray.shutdown()
    if stats is not None:
        stats["run"] = run
    model.last_timing = {"run_s": run.run_s, "steps": steps, "compile_s": 0.0}
    return _collect(model, results, steps, wanted)


def _run(ray, cpus: float, plan: Partition, params: dict, state: dict, steps: int, spike_names: tuple,
         state_records: tuple) -> tuple[list[dict], PartitionedRun]:
    """Start the workers, queue their calls interval by interval (each given the previous results of
    all, the all-gather) and collect their records."""
    workers = plan.workers
    actor = ray.remote(Worker).options(num_cpus=cpus)
    refs = [ray.put(x) for x in (plan, params, state)]
    pool = [actor.remote(*refs[:1], w, *refs[1:], spike_names, state_records) for w in range(workers)]
    try:
        try:
            interval = min(ray.get([a.ready.remote() for a in pool]))  # the parts have one structure: one value
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PartitionError):
                raise exc.cause from None
            raise
        start = time.perf_counter()
        sent, done, calls = None, 0, 0
        while done < steps:
            n = min(interval, steps - done)
            sent = [a.advance.remote(n, *(sent or ())) for a in pool]
            done, calls = done + n, calls + 1
            if calls % 64 == 0:  # bound the queue of pending calls
                ray.wait(sent, num_returns=len(sent))
        results = ray.get([a.finish.remote(*sent) for a in pool])
        run_s = time.perf_counter() - start
    finally:
        for a in pool:
            ray.kill(a)
    run = PartitionedRun(steps, workers, interval, calls, sum(r["sent_spikes"] for r in results),
                         sum(r["sent_bytes"] for r in results), run_s,
                         {p.name: p.ranges for p in plan.populations})
    return results, run


def _wanted(model) -> dict[str, int]:
    """Each recorded variable's sampling interval, as ``Model.run`` records it (the gcd of its monitors')."""
    wanted: dict[str, int] = {}
    for m in model.program.monitors:
        for v in m.variables:
            wanted[v] = math.gcd(wanted.get(v, m.every), m.every)
    return wanted


def _collect(model, results: list[dict], steps: int, wanted: dict[str, int]) -> dict[str, np.ndarray]:
    """The workers' records as ``Model.run``'s monitor arrays (``Model._collect`` with no batch axis)."""
    out = {}
    dt = model.dt
    for m in model.program.monitors:
        var = m.variables[0]
        if m.kind == "spikes":
            t = np.concatenate([r["spikes"][var][0] for r in results])
            i = np.concatenate([r["spikes"][var][1] for r in results])
            every = wanted[var]
            keep = (t % every == 0) & (t // every < steps // every)  # Model.run keeps steps // every samples
            t, i = t[keep] // every, i[keep]
            if m.indices is not None:
                where = {n: k for k, n in enumerate(m.indices)}
                sel = np.array([n in where for n in i.tolist()], bool)
                t, i = t[sel], np.array([where[n] for n in i[sel].tolist()], np.int64)
            order = np.lexsort((i, t))
            out[f"{m.name}.i"] = i[order].astype(np.int64)
            out[f"{m.name}.t"] = t[order] * dt
            continue
        for v in m.variables:
            parts = [r["states"][(v, m.every)] for r in results]  # [samples, *local shape]
            full = model.program.var(v).shape
            split = [k for k, (a, b) in enumerate(results[0]["cuts"][v]) if (a, b) != (0, full[k])]
            rec = np.concatenate(parts, axis=split[0] + 1) if split else parts[0]
            g = wanted[v]  # Model.run samples every g steps, steps // g of them, then every m.every // g-th
            rec = rec[:len(range(0, steps // g, m.every // g))]
            if m.indices is not None:
                rec = rec[..., list(m.indices)]
            out[f"{m.name}.{v.rsplit('/', 1)[-1]}"] = rec
        n = len(range(0, steps, m.every))
        out[f"{m.name}.t"] = np.arange(n) * m.every * dt
    return out
