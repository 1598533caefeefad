"""Parameter sweeps on Ray: ``nspec sweep`` and ``nspec.sweep``.

A sweep runs one spec for every point of a grid of hyperparameters and every seed, one Ray task
per trial, and collects one row per trial in a Parquet table (``pyarrow``).

* **What is compiled, and how often.**  A grid point binds hyperparameters, which are folded into
  the program as constants (``we`` of ``specs/cuba.nspec`` is the constant each excitatory spike
  adds); the run's seed is not: it sets the initial values and keys the random draws, which the
  program reads as data (connectivity is drawn at compile time from the spec's own ``simulate ...
  seed``, not from the run's).  So the structural variant of a trial is its compiled program, keyed
  by ``variant_key``, the digest of the printed program and of its constants' bytes (what the TVM
  compile cache hashes): two grid points whose programs are equal share a variant, every seed of a
  point shares it.  The driver compiles the spec once per grid point (to learn its variant) and
  builds the backend's artifact once per variant; ``Summary.compiled`` counts those builds.
* **What travels through the object store.**  The variant's ``Program`` (``ray.put``, pickled)
  and, for the TVM backend, the compiled library of the cache (``lib.so`` bytes and its manifest):
  a worker stores it into its own cache (``lowering/tvm/cache.py``) and loads it without compiling.
  The reference backend interprets the program and has nothing else to build.  ONNX Runtime and
  torch lower the program inside each worker process, once per variant (the ONNX model binds the
  run's parameters as constants; the torch module generates its code on first run): those builds
  are counted as ``Summary.worker_builds``.  For TVM a worker builds only when its machine differs
  from the driver's (another CPU or TVM version gives another cache key).
* **The table** (``results.parquet``): a column per grid name (the value as given, text) and
  ``NAME_si`` (float, SI units) for a name whose values have units; ``seed``; one float column per
  ``--metric`` (SI units, named by its expression or ``name=``); ``outputs`` (the trial's ``.npz``
  relative to the table's folder); ``status`` (``ok``/``error``), ``error``; ``attempts`` (how many
  times a worker began the trial: more than 1 when Ray retried it; a worker killed before it began,
  while it received its arguments, is not counted); ``wall_s``; ``worker`` (the node's address and
  process id of the worker that ran it); ``trial`` and ``variant`` (keys).  Each finished trial is
  written at once to ``<table>.d/rows/`` (and its outputs to ``<table>.d/trial-<key>.npz``); the
  table is rewritten from those, atomically, every few seconds and at the end, so a crash loses
  nothing finished.
* **Resume.**  ``<table>.d/sweep.json`` records what the sweep is (spec and its text's digest,
  grid, seeds, fixed hyperparameters, steps, backend, metrics).  Running the same sweep again skips
  every trial recorded ``ok`` and runs the others (errors included); a table of another sweep is
  refused unless ``force``, which starts afresh.
* **Faults.**  A trial that raises is a row with status ``error`` and its message (a spec error
  rendered with its location).  A worker process that dies is retried by Ray (``max_retries``); a
  trial is recorded once, when its task returns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


from nspec.compiler.ir import Program
from nspec.compiler.limits import current as current_limits
from nspec.compiler.overrides import Given, keywords
from nspec.dsl.diagnostics import NspecError

from .sweep_grid import (Metric, SweepError, Trial, evaluate_metrics, expand, grid_value, parse_grid, parse_metric,
                         parse_seeds, si_value, split_values)
from .ray_start import start_ray
from .sweep_table import Table, spec_digest

TABLE_SCHEMA_VERSION = 1
FLUSH_SECONDS = 5.0  # how often the consolidated table is rewritten while trials finish


# ---------------------------------------------------------------- variants
def variant_key(program: Program) -> str:
    """The digest of everything the compiled code depends on: the printed program and every
    constant's bytes (``build.program_digest``, what the TVM compile cache hashes)."""
    from nspec.lowering.tvm.build import program_digest

    return program_digest(program)


@dataclass
class Variant:
    """What a worker needs to run a variant's trials: its program and the backend's artifact."""

    key: str
    program: Program
    path: str
    target: str | None
    backend: str
    limits: Any = None            # the driver's memory limits (``compiler/limits.py``), in force for every run
    artifact: dict | None = None  # TVM: {"entries": [(key, parts, meta, library bytes)], "host_cpu": text}


def run_records(program: Program, extra: Sequence[str]) -> tuple[str, ...]:
    """The names a run records, as ``Model`` asks the backend for them: the monitors' and ``extra``, sorted."""
    return tuple(sorted({v for m in program.monitors for v in m.variables} | set(extra)))


def metric_records(model) -> list[str]:
    """What metrics read beyond the monitors: every population's spikes, as spec tests record them."""
    from .spec_eval import spike_key

    return [spike_key(pop) for pop in model.populations]


def tvm_artifact(program: Program, records: Iterable[tuple[str, ...]]) -> tuple[dict, int]:
    """The TVM libraries ``program`` runs with (one per recorded set), compiled here or found in the
    cache, as bytes to ship: (artifact, how many were compiled)."""
    from nspec.lowering.tvm import cache as compile_cache
    from nspec.lowering.tvm.build import compile_program, host_cpu

    entries, compiled = [], 0
    root = compile_cache.cache_root()
    for names in dict.fromkeys(records):
        _, _, info = compile_program(program, "llvm", records=names, progress=False)
        compiled += info["cache"] == "miss"
        entry = compile_cache.lookup(root, info["key"])
        if entry is None:
            raise SweepError(f"the TVM cache in {root} did not keep the library it built; set NSPEC_CACHE_DIR "
                             "to a writable folder")
        manifest = json.loads((entry.path.parent / compile_cache.MANIFEST).read_text())
        entries.append((info["key"], manifest["inputs"], manifest["meta"], entry.path.read_bytes()))
    host_cpu()  # written to the cache folder, shipped so a fresh worker need not ask LLVM
    host = (root / "host-cpu.json").read_text() if (root / "host-cpu.json").exists() else None
    return {"entries": entries, "host_cpu": host}, compiled


def install_tvm_artifact(artifact: dict) -> None:
    """Store shipped TVM libraries into this process's cache, where ``TvmExecutor`` finds them."""
    from nspec.lowering.tvm import cache as compile_cache

    root = compile_cache.cache_root()
    root.mkdir(parents=True, exist_ok=True)
    if artifact.get("host_cpu") and not (root / "host-cpu.json").exists():
        (root / "host-cpu.json").write_text(artifact["host_cpu"])
    for key, parts, meta, library in artifact["entries"]:
        if compile_cache.lookup(root, key) is None:
            compile_cache.store(root, key, parts, meta, lambda path, data=library: Path(path).write_bytes(data))


# ---------------------------------------------------------------- one trial, in a worker
_WORKER_MODELS: dict[tuple[str, str], Any] = {}  # (variant, backend) -> Model, kept for the process's next trials


def _worker_model(variant: Variant):
    """The variant's ``Model`` in this worker, built once per process; and whether this call built
    the backend's code here (a TVM cache miss, or ONNX Runtime's and torch's lowering)."""
    from .model import Model

    slot = (variant.key, variant.backend)
    if slot in _WORKER_MODELS:
        return _WORKER_MODELS[slot], False
    if variant.artifact is not None:
        install_tvm_artifact(variant.artifact)
    model = Model(variant.program, variant.path, dict(variant.program.hyper), None, variant.target)
    model.limits = variant.limits
    options = {"progress": False} if variant.backend == "tvm" else {}
    executor = model.executor(variant.backend, **options)
    built = executor.info.get("cache") == "miss" if variant.backend == "tvm" else variant.backend != "reference"
    _WORKER_MODELS[slot] = model
    return model, built


def run_trial(variant: Variant, trial: Trial, steps: int | None, metrics: tuple[Metric, ...], counter) -> dict:
    """One trial (the Ray task's body): its row's values and its outputs, or its error."""
    import ray

    attempt = ray.get(counter.start.remote(trial.key)) if counter is not None else 1
    t0 = time.perf_counter()
    row: dict = {"attempts": attempt, "built": False, "worker": f"{ray.util.get_node_ip_address()}:{os.getpid()}"}
    try:
        model, row["built"] = _worker_model(variant)
        extra = metric_records(model) if metrics else []
        options = {"progress": False} if variant.backend == "tvm" else {}
        results = model.run(steps=steps, seed=trial.seed, backend=variant.backend, record=extra or None,
                            nan_check="error", **options)
        row["metrics"] = evaluate_metrics(model, results, metrics)
        row["arrays"] = {k: v for k, v in results.items() if k not in extra}
        row["status"], row["error"] = "ok", None
    except Exception as exc:  # recorded in its row: a sweep never drops a trial
        row["status"], row["error"] = "error", describe_error(exc)
    row["seed"] = variant.program.seed if trial.seed is None else trial.seed
    row["wall_s"] = time.perf_counter() - t0
    return row


def describe_error(exc: BaseException) -> str:
    """A trial's error as its row holds it: a spec error rendered with its location, else the message."""
    if isinstance(exc, NspecError):
        return exc.render()
    return str(exc) if isinstance(exc, SweepError) else f"{type(exc).__name__}: {exc}"


def _attempts_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Attempts:
        """Counts the starts of each trial's task: a worker killed mid-trial makes Ray start it again."""

        def __init__(self):
            self.counts: dict[str, int] = {}

        def start(self, key: str) -> int:
            self.counts[key] = self.count(key) + 1
            return self.counts[key]

        def count(self, key: str) -> int:
            return self.counts.get(key, 0)

    return Attempts.remote()


# ---------------------------------------------------------------- the driver
@dataclass
class Summary:
    """What a sweep did: trials run, skipped and failed; what was compiled where; the table."""

    table: Path
    trials: int
    backend: str = "reference"
    ran: int = 0
    skipped: int = 0
    errors: int = 0
    rows: int = 0
    points: int = 0          # grid points whose spec the driver compiled (workers compile none)
    variants: int = 0        # distinct compiled programs among them (``variant_key``)
    compiled: int = 0        # TVM libraries the driver compiled: one per variant (and recorded set) not in the cache
    cached: int = 0          # TVM libraries the driver found in the compile cache instead
    worker_builds: int = 0   # backends that built code inside a worker (see the module's text)
    retried: int = 0         # trials whose task started more than once (a worker died)
    wall_s: float = 0.0

    def lines(self) -> list[str]:
        """The summary ``nspec sweep`` prints."""
        out = [f"swept {self.trials} trials in {self.wall_s:.3g} s: ran {self.ran}, skipped {self.skipped} finished "
               f"trial{'s' * (self.skipped != 1)}, {self.errors} error{'s' * (self.errors != 1)}"
               + (f", {self.retried} retried after a worker died" if self.retried else "")]
        if self.points:
            built = {"tvm": f"tvm: {self.compiled} librar{'ies' if self.compiled != 1 else 'y'} compiled and "
                            f"{self.cached} taken from the cache on the driver, shipped through the object store; "
                            f"{self.worker_builds} built in workers",
                     "reference": "reference: the shipped program is interpreted, nothing else is built"}.get(
                self.backend, f"{self.backend}: lowered in the workers, {self.worker_builds} builds (one per worker "
                              "process and variant)")
            out.append(f"  spec compiled on the driver for {self.points} grid point{'s' * (self.points != 1)}: "
                       f"{self.variants} variant{'s' * (self.variants != 1)}; {built}")
        out.append(f"wrote {self.table} ({self.rows} rows)")
        return out


def _load_point(spec: Path, target, fixed: dict, point, given: Given | None, max_memory):
    from .model import load

    hyper = {**fixed, **dict(point)}
    return load(spec, target=target, max_memory=max_memory, given=given or keywords("nspec.sweep", spec, hyper),
                **hyper)


def _variants(spec: Path, target, fixed: dict, points, backend: str, metrics, given, max_memory, counts: Summary):
    """Compile each grid point, group them by ``variant_key`` and build each variant's artifact once
    (counted in ``counts``): (point -> Variant or the point's error, variant key -> Variant)."""
    counts.points = len(points)
    by_point, by_key, first_error = {}, {}, None
    for point in points:
        try:
            model = _load_point(spec, target, fixed, point, given, max_memory)
        except NspecError as exc:
            by_point[point] = exc
            first_error = first_error or exc
            continue
        key = variant_key(model.program)
        if key not in by_key:
            artifact = None
            if backend == "tvm":
                from nspec.lowering.tvm.build import monitored

                # the library TvmExecutor builds first (the monitors'), and the one a trial's run asks for
                extra = metric_records(model) if metrics else []
                records = [monitored(model.program), run_records(model.program, extra)]
                artifact, compiled = tvm_artifact(model.program, records)
                counts.compiled += compiled
                counts.cached += len(artifact["entries"]) - compiled
            by_key[key] = Variant(key, model.program, str(spec), target, backend, model.limits or current_limits(),
                                  artifact)
        by_point[point] = by_key[key]
    if not by_key and first_error is not None:
        raise first_error  # no grid point compiles: the sweep itself is wrong (a misspelt name, say)
    counts.variants = len(by_key)
    return by_point, by_key


def _columns(grid: Mapping[str, Sequence[object]], metrics: Sequence[Metric]) -> tuple[dict[str, str], set[str]]:
    """The table's columns in order with their types, and the grid names that get an ``_si`` column."""
    with_si = {name for name, values in grid.items() if any(si_value(v) is not None for v in values)}
    cols: dict[str, str] = {}
    for name in grid:
        cols[name] = "string"
        if name in with_si:
            cols[f"{name}_si"] = "float64"
    cols["seed"] = "int64"
    cols.update({m.name: "float64" for m in metrics})
    cols.update(outputs="string", status="string", error="string", attempts="int64", wall_s="float64",
                worker="string", trial="string", variant="string")
    return cols, with_si


def _row(trial: Trial, variant_id: str, table: Table, with_si: set[str], metrics: Sequence[Metric],
         result: dict) -> dict:
    row: dict = {}
    for name, value in trial.point:
        row[name] = value if isinstance(value, str) else json.dumps(value)
        if name in with_si:
            row[f"{name}_si"] = si_value(value)
    row["seed"] = result["seed"]
    for m in metrics:
        row[m.name] = result.get("metrics", {}).get(m.name) if result["status"] == "ok" else None
    row["outputs"] = str(table.outputs(trial).relative_to(table.path.parent)) if result["status"] == "ok" else None
    for k in ("status", "error", "attempts", "wall_s", "worker"):
        row[k] = result.get(k)
    row["trial"], row["variant"] = trial.key, variant_id
    return row


def _start_ray(address: str | None):
    """Ray as asked: the running one, the cluster at ``address`` (``auto``, ``HOST:PORT``), or a local
    one started here (then shut down at the end): returns whether it was started here."""
    try:
        import ray
        import pyarrow  # noqa: F401  (the table's writer: fail now, not after the first trial)
    except ModuleNotFoundError as exc:
        raise SweepError(f"nspec sweep needs Ray and pyarrow ({exc.name} is not installed): "
                         "pip install 'nspec[distributed]'") from None
    if ray.is_initialized():
        return False
    try:  # "local": a new Ray of this machine's cores, never one that `ray start` left running
        start_ray(address=address or "local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise SweepError(f"--address {address}: cannot join a Ray cluster there ({exc})") from None
    return True


def sweep(spec: str | Path, grid: Mapping[str, Sequence[object]], output: str | Path,
          seeds: Sequence[int] | None = None, steps: int | None = None, duration: str | float | None = None,
          backend: str = "reference", metrics: Sequence[str] = (), params: Mapping[str, object] | None = None,
          target: str | None = None, address: str | None = None, force: bool = False, retries: int = 3,
          max_memory: str | int | None = None, progress: bool = True, given: Given | None = None) -> Summary:
    """Run ``spec`` for every point of ``grid`` (name -> values, as ``--param`` values: ``"1.62mV"``) and
    every seed, one Ray task per trial, writing one row per trial to the Parquet table ``output``.

    ``seeds`` default to the spec's own; ``steps`` or ``duration`` (``"1s"``) to its ``simulate``
    duration; ``metrics`` are expressions of spec tests (``"mean_rate(P)"``, ``"rate=mean_rate(P)"``);
    ``params`` are hyperparameters fixed for every trial.  ``address`` joins a Ray cluster (``"auto"``,
    ``"HOST:PORT"``); without it a running Ray (``ray.init`` already called) is used, else a local one
    is started and shut down at the end.  A rerun of the same sweep skips the finished trials; another
    sweep's table is replaced only with ``force``.  ``retries``: how often Ray restarts a trial whose
    worker died.  ``max_memory`` bounds compiling and every run as in ``nspec.load``.  Returns a
    ``Summary``; the module's text describes the table."""
    from nspec.compiler.units import parse_duration
    from .executor import executor_class

    spec, table = Path(spec), Table(Path(output))
    if not spec.is_file():
        raise SweepError(f"no such spec file: {spec}")
    if steps is not None and duration is not None:
        raise SweepError("give steps or duration, not both")
    if not grid:
        raise SweepError("a sweep needs at least one --grid NAME=v1,v2,...")
    executor_class(backend)  # an unknown backend is named before anything runs
    fixed = dict(params or {})
    both = sorted(set(fixed) & set(grid))
    if both:
        raise SweepError(f"{', '.join(both)} is given by --param and by --grid; give it once")
    grid = {name: tuple(values) for name, values in grid.items()}
    metric_list = tuple(parse_metric(m) for m in metrics)
    names = [m.name for m in metric_list]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & (set(grid) | set(_FIXED_COLUMNS))))
    if clash:
        raise SweepError(f"--metric: the column name {clash[0]!r} is taken; name the metric, as in rate={clash[0]}")
    seed_list: tuple = tuple(seeds) if seeds is not None else (None,)
    wrong = [s for s in seed_list if s is not None and (not isinstance(s, int) or isinstance(s, bool)
                                                         or not 0 <= s < 2**63)]
    if wrong or len(set(seed_list)) != len(seed_list) or not seed_list:
        raise SweepError(f"seeds are distinct integers from 0 to 2**63 - 1; got {list(seed_list)}")
    if not isinstance(retries, int) or retries < 0:
        raise SweepError(f"--retries is a number of reruns, 0 or more; got {retries}")
    trials = expand(grid, seed_list)
    identity = {"version": TABLE_SCHEMA_VERSION, "spec": str(spec.resolve()), "spec_sha256": spec_digest(spec),
                "target": target, "params": {k: str(v) for k, v in fixed.items()},
                "grid": {k: [str(v) for v in vs] for k, vs in grid.items()}, "seeds": list(seed_list),
                "steps": steps, "duration": str(duration) if duration is not None else None, "backend": backend,
                "metrics": [[m.name, m.text] for m in metric_list]}
    table.columns, with_si = _columns(grid, metric_list)
    recorded = table.existing(identity, force)
    order = [t.key for t in trials]
    start = time.perf_counter()
    todo = [t for t in trials if recorded.get(t.key, {}).get("status") != "ok"]
    summary = Summary(table.path, len(trials), backend, skipped=len(trials) - len(todo))
    if todo:  # every mistake a grid point shows is found before the output is touched
        by_point, by_key = _variants(spec, target, fixed, list(dict.fromkeys(t.point for t in todo)), backend,
                                     metric_list, given, max_memory, summary)
        if steps is None and duration is not None:
            dts = {v.program.dt for v in by_key.values()}
            if len(dts) != 1:
                raise SweepError("--duration: the grid points have different dt; give --steps")
            steps = max(round(parse_duration(duration) / dts.pop()), 1)
    started_here = _start_ray(address) if todo else False  # before the output is touched, too
    try:
        table.prepare(identity)
        if todo:
            _run(todo, by_point, by_key, steps, metric_list, table, with_si, order, retries, progress, summary)
    finally:
        if started_here:
            import ray

            ray.shutdown()
    summary.rows = table.consolidate(order)
    summary.errors = sum(r["status"] == "error" for r in table.recorded().values())
    summary.wall_s = time.perf_counter() - start
    return summary


_FIXED_COLUMNS = ("seed", "outputs", "status", "error", "attempts", "wall_s", "worker", "trial", "variant")


def _run(todo, by_point, by_key, steps, metrics, table, with_si, order, retries, progress, summary) -> None:
    """Submit one task per trial (the variants shipped once each) and write each result as it comes back."""
    import ray

    refs = {key: ray.put(v) for key, v in by_key.items()}  # each variant shipped once, whatever its trials
    task = ray.remote(max_retries=retries, retry_exceptions=False)(run_trial)
    counter = _attempts_actor()
    pending = {}
    bar = _bar(len(order), summary.skipped) if progress else None
    for trial in todo:
        found = by_point[trial.point]
        if isinstance(found, NspecError):  # the grid point's spec does not compile: its rows say why
            result = {"status": "error", "error": describe_error(found), "attempts": 0, "wall_s": 0.0,
                      "seed": trial.seed}
            table.write_row(_row(trial, "", table, with_si, metrics, result), None)
            summary.ran += 1
            if bar is not None:
                bar.update(1)
            continue
        pending[task.remote(refs[found.key], trial, steps, metrics, counter)] = (trial, found.key[:16])
    last_flush = time.monotonic()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=FLUSH_SECONDS)
            for ref in done:
                trial, variant_id = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker died more often than retries allow, say
                    result = {"status": "error", "error": f"the trial's Ray task failed: {exc}", "built": False,
                              "attempts": ray.get(counter.count.remote(trial.key)), "wall_s": None,
                              "seed": trial.seed}
                table.write_row(_row(trial, variant_id, table, with_si, metrics, result), result.get("arrays"))
                summary.ran += 1
                summary.worker_builds += bool(result["built"])
                summary.retried += result["attempts"] > 1
                if bar is not None:
                    bar.update(1)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                table.consolidate(order)
                last_flush = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        ray.kill(counter)


def _bar(total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="trial", desc="sweeping")


__all__ = ["sweep", "Summary", "SweepError", "Trial", "Metric", "Variant", "Table", "expand", "parse_grid",
           "parse_seeds", "parse_metric", "split_values", "grid_value", "si_value", "variant_key", "run_trial",
           "evaluate_metrics", "run_records", "tvm_artifact", "install_tvm_artifact", "spec_digest"]
