"""The commands of the ``nspec`` command line (check, run, sweep, test, train, import-nir); ``compile``
is ``cli_compile.py``, the helpers they share ``cli_common.py``.

Each ``cmd_*`` takes the parsed arguments (``cli_parser.build_parser``) and returns an exit code
(``nspec.compiler.driver``); a mistake it finds itself is a ``CliError``.  Heavy modules (numpy,
pint, the backends, torch, tvm, matplotlib) are imported inside the command that needs them, so
``nspec --help`` and ``nspec check`` start fast.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings
from pathlib import Path

from nspec.compiler.driver import EXIT_INTERNAL, EXIT_OK, EXIT_USER_ERROR
from nspec.dsl.diagnostics import SourceMap

from nspec.cli_common import (REPORT_HINT, CliError, given_args, hyper_args, refuse_overwrite,
                              spec_paths)
from nspec.cli_compile import EMIT_STAGES, IR_STAGES, TARGETS, cmd_compile

_PLOT_SUFFIXES = (".png", ".pdf", ".svg")


# ---------------------------------------------------------------- check
def cmd_check(args) -> int:
    from nspec.compiler.driver import check_files

    paths = spec_paths(args.paths)
    diags, sources = check_files(paths, hyper_args(args.param), given=given_args(args))
    for d in diags:
        print(d.render(sources), file=sys.stderr)
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        files = len({d.span.path for d in errors})
        print(f"{len(errors)} error{'s' * (len(errors) != 1)} in {files} file{'s' * (files != 1)}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"ok: {len(paths)} file{'s' * (len(paths) != 1)}")
    return EXIT_OK


# ---------------------------------------------------------------- run
def _load_inputs(path: str) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CliError(f"--inputs: no such file: {path}") from None
    except Exception as exc:  # a corrupt file surfaces as whatever its reader raises (BadZipFile, EOFError, ...)
        raise CliError(f"--inputs: {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _plot_kind(model, requested: str) -> str:
    kinds = {m.kind for m in model.monitors}
    kind = requested if requested != "auto" else ("raster" if "spikes" in kinds else "traces")
    needed = {"raster": ("spikes", "record spikes of P"), "traces": ("state", "record v of P[0:10] as trace")}[kind]
    if needed[0] not in kinds:
        raise CliError(f"--plot {kind}: the model records no {needed[0]}; add a monitor such as '{needed[1]}'")
    return kind


def _plot(path: Path, model, results: dict, kind: str, steps: int) -> None:
    from nspec.runtime.plots import save

    save(path, model, results, kind, steps * model.dt)


def _summary(model, shapes: dict, steps: int | None, backend: str, run_s: float, trials: int) -> list[str]:
    """The run's summary from the shapes of its results (they may be in a file, not in memory)."""
    seconds = steps * model.dt * trials if steps else None  # model time summed over the trials
    model_time = f" ({steps * model.dt:.6g} s of model time)" if steps and model.dt != 1.0 else ""
    when = (f"{steps} steps{model_time}" if steps else "done") + (f", {trials} trials" if trials > 1 else "")
    lines = [f"ran {model.program.name}: {when} on {backend} in {run_s:.3g} s"]
    for m in model.monitors:
        if m.kind != "spikes" or f"{m.name}.i" not in shapes:
            continue
        count = int(shapes[f"{m.name}.i"][0])
        size = len(m.indices) if m.indices is not None else model.populations.get(m.variables[0].rsplit("/", 1)[0])
        rate = f", mean rate {count / (size * seconds):.4g} Hz" if size and seconds else ""
        lines.append(f"  {m.name}: {count} spikes" + (f" from {size} neurons" if size else "") + rate)
    for v in model.program.outputs:
        if v.name in shapes:
            lines.append(f"  output {v.name}: shape {list(shapes[v.name])}")
    return lines


def cmd_run(args) -> int:
    hyper = hyper_args(args.param)
    outputs = [(args.output, "--output"), (args.plot, "--plot"), (args.timing_json, "--timing-json")]
    for path, flag in outputs:
        if path is not None:
            refuse_overwrite(Path(path), args.force, flag)
    if args.plot is not None and Path(args.plot).suffix.lower() not in _PLOT_SUFFIXES:
        raise CliError(f"--plot writes {', '.join(_PLOT_SUFFIXES)} files, not {args.plot}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise CliError(f"--weights: no such file: {args.weights}")
    inputs = _load_inputs(args.inputs) if args.inputs else None

    import numpy as np

    from nspec.runtime.model import load

    start = time.perf_counter()
    # the weights and inputs also bind the spec's data-bound (`auto`) dimensions
    model = load(args.spec, target=args.entry, given=given_args(args), weights=args.weights, inputs=args.inputs,
                 **hyper)
    load_s = time.perf_counter() - start
    kind = _plot_kind(model, args.plot_kind) if args.plot else None
    steps = args.steps if args.steps else (max(round(args.duration / model.dt), 1) if args.duration else None)

    # npz inputs use the reference layout: a leading batch axis always ([B, T, ...] or [B, ...])
    batch = args.batch
    if batch is None and inputs:
        batch = int(next(iter(inputs.values())).shape[0])
    # the progress bar costs time in the loop, so a timed run goes without it
    # with --output, monitors stream to the file chunk by chunk (memory stays bounded however long the run)
    options = dict(inputs=inputs, steps=steps, backend=args.backend, seed=args.seed, batch=batch,
                   progress=not (args.quiet or args.timing_json), nan_check=args.nan_check,
                   parallel_form=args.parallel_form)
    if args.workers is not None:
        return _run_partitioned(args, model, steps, load_s, kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if args.output is not None:
            try:
                shapes = model.stream(args.output, force=args.force, **options)
            except FileExistsError as exc:
                raise CliError(str(exc)) from None
        else:
            results = model.run(**options)
            shapes = {k: np.shape(v) for k, v in results.items()}
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    # Model.last_timing: the backend's compile and the main loop alone, timed inside run()
    timing = model.last_timing
    compile_s, run_s, steps = load_s + timing["compile_s"], timing["run_s"], timing["steps"]

    if args.plot is not None:
        if args.output is not None:
            with np.load(args.output, allow_pickle=False) as results:
                _plot(Path(args.plot), model, results, kind, steps)
        else:
            _plot(Path(args.plot), model, results, kind, steps)
    if args.timing_json is not None:
        record = {"backend": args.backend, "compile_s": compile_s, "run_s": run_s, "steps": steps}
        Path(args.timing_json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print("\n".join(_summary(model, shapes, steps, args.backend, run_s, batch or 1)))
        for path, flag in outputs:
            if path is not None:
                print(f"wrote {path}")
    return EXIT_OK


def _run_partitioned(args, model, steps: int | None, load_s: float, kind: str | None) -> int:
    """``nspec run --workers N``: the network split over N Ray workers (``runtime/partition.py``)."""
    import numpy as np

    from nspec.runtime.partition import PartitionError, run_partitioned
    from nspec.runtime.streaming import NpzStreamWriter

    for given, flag in ((args.inputs, "--inputs"), (args.batch, "--batch"), (args.backend != "reference", "--backend")):
        if given:
            raise CliError(f"--workers runs one trial of a network without inputs on the reference interpreter; "
                           f"it cannot take {flag}")
    if steps is None and not model.default_steps:
        raise CliError("--workers: give --steps or --duration (the spec has no simulate duration)")
    stats: dict = {}
    try:
        results = run_partitioned(model, args.workers, steps=steps, seed=args.seed, stats=stats)
    except PartitionError as exc:
        raise CliError(str(exc).replace(": error: ", ": ", 1)) from None
    except ValueError as exc:  # a population smaller than the number of workers
        raise CliError(f"--workers {args.workers}: {exc}") from None
    except ModuleNotFoundError as exc:
        raise CliError(f"--workers needs Ray ({exc}): pip install 'nspec[distributed]'") from None
    run = stats["run"]
    if args.output is not None:
        writer = NpzStreamWriter(args.output)
        writer.append({k: (v, 0) for k, v in results.items()})
        try:
            writer.close(replace_existing=args.force)
        except FileExistsError as exc:
            raise CliError(str(exc)) from None
    if args.plot is not None:
        _plot(Path(args.plot), model, results, kind, run.steps)
    if args.timing_json is not None:
        record = {"backend": "reference", "workers": run.workers, "compile_s": load_s, "run_s": run.run_s,
                  "steps": run.steps, "interval": run.interval, "exchanges": run.exchanges,
                  "spikes_sent": run.spikes, "bytes_exchanged": run.bytes}
        Path(args.timing_json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        shapes = {k: np.shape(v) for k, v in results.items()}
        print("\n".join(_summary(model, shapes, run.steps, f"reference x {run.workers} workers", run.run_s, 1)))
        print(f"  exchanged {run.spikes} spike indices ({run.bytes} bytes to the other workers) in {run.exchanges} "
              f"exchanges, one every {min(run.interval, run.steps)} steps")
        for path, flag in ((args.output, "--output"), (args.plot, "--plot"), (args.timing_json, "--timing-json")):
            if path is not None:
                print(f"wrote {path}")
    return EXIT_OK


# ---------------------------------------------------------------- sweep
def cmd_sweep(args) -> int:
    """``nspec sweep``: the grid and seeds read here, the sweep run by ``runtime/sweep.py`` on Ray."""
    from nspec.runtime.sweep import SweepError, parse_grid, parse_seeds, sweep

    try:
        grid: dict = {}
        for text in args.grid:
            name, values = parse_grid(text)
            if name in grid:
                raise SweepError(f"--grid {name} is given twice")
            grid[name] = values
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        summary = sweep(args.spec, grid, args.output, seeds=seeds, steps=args.steps, duration=args.duration,
                        backend=args.backend, metrics=args.metric or (), params=hyper_args(args.param),
                        target=args.entry, address=args.address, force=args.force, retries=args.retries,
                        progress=not args.quiet, given=given_args(args))
    except SweepError as exc:
        raise CliError(str(exc)) from None
    if not args.quiet:
        print("\n".join(summary.lines()))
    return EXIT_USER_ERROR if summary.errors else EXIT_OK


# ---------------------------------------------------------------- test
def cmd_test(args) -> int:
    from nspec.runtime.spectest import collect, run_test

    passed = failed = internal = 0
    for path in spec_paths(args.paths or ["."]):
        sources = SourceMap()
        tests, diags = collect(path, sources)
        if diags:
            print("\n".join(d.render(sources) for d in diags), file=sys.stderr)
            print(f"FAIL {path}: the spec does not parse, so its tests cannot run")
            failed += 1
            continue
        for test in tests:
            if args.k and args.k not in test.name:
                continue
            start = time.perf_counter()
            try:
                outcome = run_test(test, sources)
            except Exception as exc:  # a bug in nspec: report it and go on with the other tests
                if args.debug:
                    traceback.print_exc()
                print(f"FAIL {path}::{test.name}\n  {test.span}: internal error: {type(exc).__name__}: {exc}")
                failed += 1
                internal += 1
                continue
            took = time.perf_counter() - start
            if outcome.passed:
                passed += 1
                print(f"PASS {path}::{test.name} ({took:.2f} s)")
            else:
                failed += 1
                print(f"FAIL {path}::{test.name} ({took:.2f} s)")
                print("\n".join("  " + line for line in outcome.message.splitlines()))
    print(f"{passed} passed, {failed} failed")
    if internal:
        print(f"{internal} test{'s' * (internal != 1)} hit an internal error; {REPORT_HINT}", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_USER_ERROR if failed else EXIT_OK


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    from nspec.runtime.distributed import torchrun_group
    from nspec.runtime.train import CHECKPOINT_FILES, TrainError, parse_loss, read_data, train

    hyper = hyper_args(args.param)
    if args.resume and args.force:
        raise CliError("--resume continues the checkpoint and --force replaces it: give one of them")
    if args.resume and not args.checkpoint:
        raise CliError("--resume needs --checkpoint DIR")
    if args.checkpoint and not args.resume:
        present = [f for f in CHECKPOINT_FILES if (Path(args.checkpoint) / f).exists()]
        if present and not args.force:  # checked before any work, so a long run is never wasted
            raise CliError(f"{args.checkpoint} already holds a checkpoint ({', '.join(present)}); pass --resume "
                           "to continue it or --force to overwrite it")
    if args.weights is not None and not Path(args.weights).is_file():
        raise CliError(f"--weights: no such file: {args.weights}")
    try:
        loss = parse_loss(args.loss)
        data = read_data(args.data)
        from nspec.runtime.model import load

        model = load(args.spec, target=args.entry, given=given_args(args), **hyper)
        if args.weights is not None:
            model.load_weights(args.weights)
        history = train(model, data, loss, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                        epochs=args.epochs, steps=args.max_steps, batch_size=args.batch_size, seed=args.seed,
                        time_steps=args.time_steps, grad_clip=args.grad_clip, checkpoint_dir=args.checkpoint,
                        resume=args.resume, force=args.force, device=args.device, progress=not args.quiet,
                        workers=args.workers)
    except TrainError as exc:
        raise CliError(str(exc)) from None
    launched = torchrun_group()  # valid: train checked it
    if launched is not None and launched.rank != 0:
        return EXIT_OK  # under torchrun, rank 0 speaks for the run
    if not args.quiet and history.start == history.step:
        print(f"nothing to train: the checkpoint in {args.checkpoint} is already at step {history.step}")
    elif not args.quiet:
        losses = history.epoch_losses or history.losses
        first = f"{losses[0]:.4g} -> " if len(losses) > 1 else ""
        print(f"trained {model.program.name}: {history.step} steps, loss {first}{losses[-1]:.4g}"
              + ("" if history.epoch_losses else " (last step)"))
        print(f"wrote {args.checkpoint}" if args.checkpoint else
              "the trained weights were not saved (pass --checkpoint DIR to keep them)")
    return EXIT_OK




__all__ = ["CliError", "REPORT_HINT", "TARGETS", "IR_STAGES", "EMIT_STAGES", "spec_paths", "cmd_check", "cmd_compile",
           "cmd_run", "cmd_sweep", "cmd_test", "cmd_train", "cmd_import"]


def cmd_import(args) -> int:
    """``nspec import-nir model.nir -o model.nspec`` (``import``: its alias): the spec of a NIR graph
    and, beside it, its weights (``model.weights.safetensors``), to run with ``nspec run model.nspec
    --weights ...``."""
    from safetensors.numpy import save_file

    from nspec.runtime.nir_import import translate

    spec = Path(args.output) if args.output else Path(args.graph).with_suffix(".nspec")
    weights = spec.with_suffix(".weights.safetensors")
    for path in (spec, weights):
        refuse_overwrite(path, args.force, "-o")
    imported = translate(args.graph, args.dt, args.method)
    spec.write_text(imported.source)
    save_file(imported.weights, str(weights))
    print(f"wrote {spec} and {weights}; run: nspec run {spec} --weights {weights} --inputs IN.npz --output OUT.npz"
          " (IN.npz holds each input as [batch, time, *shape]; docs/nir.md)")
    return EXIT_OK
