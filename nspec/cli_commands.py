"""The commands of the ``nspec`` command line (check, compile, run, sweep, test, train) and their helpers.

Each ``cmd_*`` takes the parsed arguments (``cli_parser.build_parser``) and returns an exit code
(``nspec.compiler.driver``); a mistake it finds itself is a ``CliError``.  Heavy modules (numpy,
pint, the backends, torch, tvm, matplotlib) are imported inside the command that needs them, so
``nspec --help`` and ``nspec check`` start fast.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from nspec.compiler.driver import EXIT_INTERNAL, EXIT_OK, EXIT_USER_ERROR
from nspec.dsl.diagnostics import SourceMap


# Folders never searched for specs when a directory is given.
_SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist"}
_PLOT_SUFFIXES = (".png", ".pdf", ".svg")

# What an internal error tells the user (by the command line, and by `nspec test` per test).
REPORT_HINT = ("this is a bug in nspec, not in your spec: please report it with the command and the spec "
               "(run with --debug or NSPEC_DEBUG=1 to see the traceback)")


class CliError(Exception):
    """A user error the command line finds itself (an existing output file, a missing backend)."""

    code = EXIT_USER_ERROR


def _hyper(pairs) -> dict:
    hyper: dict = {}
    for key, value in pairs or ():
        if key in hyper:
            raise CliError(f"--param {key} is given twice")
        hyper[key] = value
    return hyper


def _given(args):
    """The command line as typed, so a mistake in a --param is located in it."""
    from nspec.compiler.overrides import command_line

    return command_line(getattr(args, "argv", None) or sys.argv[1:])


# ---------------------------------------------------------------- files
def spec_paths(args: list[str]) -> list[Path]:
    """Spec files named on the command line; a directory stands for every ``*.nspec`` below
    it, except hidden folders and the deliberately broken ``specs/errors/``."""
    out: list[Path] = []
    for arg in args:
        root = Path(arg)
        if not root.is_dir():
            out.append(root)  # a missing file is reported by the checker, with its name
            continue
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                             and not (d == "errors" and Path(folder).name == "specs"))
            found.extend(Path(folder) / f for f in files if f.endswith(".nspec"))
        if not found:
            raise CliError(f"no .nspec files in {arg}")
        out.extend(sorted(found))
    return out


def _refuse_overwrite(path: Path, force: bool, flag: str) -> None:
    """Check an output path before any work, so a long run is never wasted."""
    if path.exists() and not force:
        raise CliError(f"{path} already exists; pass --force to overwrite it ({flag})")
    if path.exists() and path.is_dir():
        raise CliError(f"{path} is a directory ({flag})")
    if not path.parent.is_dir():
        raise CliError(f"the folder {path.parent} does not exist ({flag})")


def _lowering(module: str, function: str):
    """``nspec.lowering.<module>.<function>``, or a user-facing 'backend not available' error."""
    name = f"nspec.lowering.{module}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise CliError(f"backend not available: {name} is not part of this installation") from None
        if exc.name and exc.name.split(".")[0] == "nspec":
            raise
        raise CliError(f"backend not available: the package {exc.name!r} is not installed") from None
    fn = getattr(mod, function, None)
    if fn is None:
        raise CliError(f"backend not available: {name} has no {function}()")
    return fn


# ---------------------------------------------------------------- check
def cmd_check(args) -> int:
    from nspec.compiler.driver import check_files

    paths = spec_paths(args.paths)
    diags, sources = check_files(paths, _hyper(args.param), given=_given(args))
    for d in diags:
        print(d.render(sources), file=sys.stderr)
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        files = len({d.span.path for d in errors})
        print(f"{len(errors)} error{'s' * (len(errors) != 1)} in {files} file{'s' * (files != 1)}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"ok: {len(paths)} file{'s' * (len(paths) != 1)}")
    return EXIT_OK


# ---------------------------------------------------------------- compile
def _out_path(out: str | None, spec: Path, suffix: str) -> Path:
    if out is None:
        return Path(spec.stem + suffix)
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out) / (spec.stem + suffix)
    return Path(out)


def _export_onnx(program, path: Path, args) -> None:
    export = _lowering("to_onnx", "export")
    from nspec.compiler.driver import compile_file
    from nspec.runtime.reference import initialize

    params, _ = initialize(program, 1, program.seed)  # stored in the file, so it runs on its own
    hyper = _hyper(args.param)
    # compiles at other values of the data-bound dimensions, which the export keeps symbolic
    compile_at = lambda dims: compile_file(args.spec, {**hyper, **dims}, args.entry)  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:  # a dimension the file keeps fixed, and why
        warnings.simplefilter("always", _lowering("to_onnx", "SymbolicDimWarning"))
        export(program, str(path), mode="step" if args.step else "whole-run", steps=args.steps, force=args.force,
               params=params, compile_at=compile_at)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def _export_tvm(program, path: Path, args) -> None:
    export = _lowering("tvm.build", "export")
    export(program, str(path), target=args.target, force=args.force)


def _export_torch(model, path: Path, args) -> list[Path]:
    """One step as a ``torch.export`` program, its initial state and manifest beside it (lowering/torch_export.py)."""
    return _lowering("torch_export", "export")(model, path, batch=args.batch or 1)


def _export_nir(model, path: Path, args) -> list[Path]:
    """The model's NIR graph (``Model.to_nir``: a composite of std/nir.nspec boxes, docs/nir.md)."""
    from nspec.runtime.nir_import import require_nir

    require_nir().write(str(path), model.to_nir())
    return [path]


# --target -> (file suffix, exporter); torch and nir export a loaded Model (weights and all)
TARGETS = {
    "onnx": (".onnx", _export_onnx),
    "tvm-llvm": (".so", _export_tvm),
    "tvm-cuda": (".so", _export_tvm),
    "torch": (".pt2", _export_torch),
    "nir": (".nir", _export_nir),
}


MODEL_TARGETS = ("torch", "nir")


def _emit_onnx(program, args) -> str:
    from onnx import printer

    if args.step:
        model = _lowering("to_onnx", "step_model")(program)
    else:
        model = _lowering("to_onnx", "run_model")(program, args.steps)
    return printer.to_text(model)


def _emit_tir(program, args) -> str:
    # the TVM backend lowers the whole time loop to one TIR function of an IRModule
    text, options = _lowering("tvm.emit", "tir_text"), _lowering("tvm.tir", "Options")
    return text(program, options(device="cuda" if args.target == "tvm-cuda" else "cpu"))


IR_STAGES = ("ast", "ir", "ir-opt", "passes")
EMIT_STAGES = IR_STAGES + ("onnx", "tir", "relax", "diagram")
DIAGRAM_SUFFIXES = (".dot", ".gv", ".svg", ".png", ".pdf")  # DOT text, or what Graphviz's `dot` draws from it


def _check_emit(stage: str | None) -> None:
    from nspec.compiler.pipeline import pass_names

    if stage is None or stage in EMIT_STAGES:
        return
    names = pass_names()
    if stage.startswith("after="):
        if stage.removeprefix("after=") in names:
            return
        raise CliError(f"--emit {stage}: no pass named '{stage.removeprefix('after=')}'; "
                       f"the passes are {', '.join(names)} (see --emit passes)")
    raise CliError(f"--emit {stage}: unknown stage; use one of {', '.join(EMIT_STAGES)}, or after=PASS "
                   f"with PASS one of {', '.join(names)}")


def cmd_compile(args) -> int:
    from nspec.compiler import driver

    _check_emit(args.emit)
    if args.emit == "passes":
        print(driver.describe_passes())
        return EXIT_OK
    if args.spec is None:
        raise CliError("compile needs a SPEC file (only --emit passes works without one)")
    hyper = _hyper(args.param)
    spec = Path(args.spec)
    if args.emit is not None and (args.emit in IR_STAGES or args.emit.startswith("after=")):
        print(driver.emit(spec, args.emit, hyper, args.entry, given=_given(args)))
        return EXIT_OK
    if args.emit == "diagram":
        return _emit_diagram(spec, hyper, args)
    if args.emit == "onnx" and args.target not in (None, "onnx"):
        raise CliError("--emit onnx shows the ONNX lowering; drop --target or use --target onnx")
    if args.emit == "relax":  # the old name: the module holds TIR, not Relax functions
        print("warning: --emit relax is deprecated; use --emit tir", file=sys.stderr)
        args.emit = "tir"
    if args.emit == "tir" and args.target not in (None, "tvm-llvm", "tvm-cuda"):
        raise CliError("--emit tir needs --target tvm-llvm or tvm-cuda")
    if args.target not in MODEL_TARGETS and args.weights:
        raise CliError("--weights is read by --target torch and --target nir only")
    if args.target != "torch" and args.batch:
        raise CliError("--batch is read by --target torch only")
    if args.target == "torch" and (args.step or args.steps):
        raise CliError("--target torch exports one step (state in, state out) with no time loop: "
                       "drop --step and --steps")
    if args.weights is not None and not Path(args.weights).is_file():
        raise CliError(f"--weights: no such file: {args.weights}")
    path = None
    if args.target and not args.emit:
        path = _out_path(args.output, spec, TARGETS[args.target][0])
        _refuse_overwrite(path, args.force, "-o")
        if args.target == "torch":
            base = path.name.removesuffix(".pt2")
            for beside in (path.with_name(base + ".state0.pt"), path.with_name(base + ".json")):
                _refuse_overwrite(beside, args.force, "-o")
    if args.target in MODEL_TARGETS and not args.emit:
        from nspec.runtime.model import load

        model = load(spec, target=args.entry, given=_given(args), weights=args.weights, **hyper)
        print("wrote " + ", ".join(map(str, TARGETS[args.target][1](model, path, args))))
        return EXIT_OK
    program = driver.compile_file(spec, hyper, args.entry, given=_given(args))
    if args.emit:
        print((_emit_onnx if args.emit == "onnx" else _emit_tir)(program, args))
        return EXIT_OK
    if path is None:
        print(f"ok: {program.name}: {len(program.params)} params, {len(program.states)} states, "
              f"{len(program.inputs)} inputs, {len(program.outputs)} outputs, {len(program.step.nodes)} step nodes")
        return EXIT_OK
    TARGETS[args.target][1](program, path, args)
    print(f"wrote {path}")
    return EXIT_OK


def _emit_diagram(spec: Path, hyper: dict, args) -> int:
    """The wiring diagram as DOT: printed, written to a .dot file, or drawn by Graphviz's ``dot``
    into .svg/.png/.pdf (the .dot beside it is written in any case, so it can be drawn later)."""
    import shutil
    import subprocess

    from nspec.compiler import driver
    from nspec.compiler.diagram import diagram

    if args.target is not None:
        raise CliError("--emit diagram draws the spec's wiring, whatever the backend; drop --target")
    out = Path(args.output) if args.output is not None else None
    if out is not None and out.suffix.lower() not in DIAGRAM_SUFFIXES:
        raise CliError(f"--emit diagram writes {', '.join(DIAGRAM_SUFFIXES)} files, not {out}")
    dot_path = out.with_suffix(".dot") if out is not None and out.suffix.lower() not in (".dot", ".gv") else out
    for path in {p for p in (out, dot_path) if p is not None}:
        _refuse_overwrite(path, args.force, "-o")
    driver.compile_file(spec, hyper, args.entry, given=_given(args))  # every mistake, located, before drawing
    text = diagram(spec, hyper, args.entry, given=_given(args))
    if out is None:
        print(text, end="")
        return EXIT_OK
    dot_path.write_text(text, encoding="utf-8")
    print(f"wrote {dot_path}")
    if out == dot_path:
        return EXIT_OK
    fmt = out.suffix.lower().lstrip(".")
    render = f"dot -T{fmt} {dot_path} -o {out}"
    if shutil.which("dot") is None:
        print(f"note: Graphviz's 'dot' program is not on PATH, so {out} was not drawn; the diagram is in "
              f"{dot_path}: install Graphviz (apt install graphviz, brew install graphviz) and run: {render}",
              file=sys.stderr)
        return EXIT_OK
    done = subprocess.run(["dot", f"-T{fmt}", str(dot_path), "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise CliError(f"Graphviz's dot could not draw {dot_path} ({done.stderr.strip() or done.returncode}); "
                       f"the DOT text is in {dot_path}")
    print(f"wrote {out}")
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
    hyper = _hyper(args.param)
    outputs = [(args.output, "--output"), (args.plot, "--plot"), (args.timing_json, "--timing-json")]
    for path, flag in outputs:
        if path is not None:
            _refuse_overwrite(Path(path), args.force, flag)
    if args.plot is not None and Path(args.plot).suffix.lower() not in _PLOT_SUFFIXES:
        raise CliError(f"--plot writes {', '.join(_PLOT_SUFFIXES)} files, not {args.plot}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise CliError(f"--weights: no such file: {args.weights}")
    inputs = _load_inputs(args.inputs) if args.inputs else None

    import numpy as np

    from nspec.runtime.model import load

    start = time.perf_counter()
    # the weights and inputs also bind the spec's data-bound (`auto`) dimensions
    model = load(args.spec, target=args.entry, given=_given(args), weights=args.weights, inputs=args.inputs,
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
                        backend=args.backend, metrics=args.metric or (), params=_hyper(args.param),
                        target=args.entry, address=args.address, force=args.force, retries=args.retries,
                        progress=not args.quiet, given=_given(args))
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

    hyper = _hyper(args.param)
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

        model = load(args.spec, target=args.entry, given=_given(args), **hyper)
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
        _refuse_overwrite(path, args.force, "-o")
    imported = translate(args.graph, args.dt, args.method)
    spec.write_text(imported.source)
    save_file(imported.weights, str(weights))
    print(f"wrote {spec} and {weights}; run: nspec run {spec} --weights {weights} --inputs IN.npz --output OUT.npz"
          " (IN.npz holds each input as [batch, time, *shape]; docs/nir.md)")
    return EXIT_OK
