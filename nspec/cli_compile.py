"""``nspec compile``: show a compiler stage (``--emit``) or export for a backend (``--target``)."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from nspec.cli_common import CliError, given_args, hyper_args, lowering, refuse_overwrite
from nspec.compiler.driver import EXIT_OK


def _out_path(out: str | None, spec: Path, suffix: str) -> Path:
    if out is None:
        return Path(spec.stem + suffix)
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        Path(out).mkdir(parents=True, exist_ok=True)
        return Path(out) / (spec.stem + suffix)
    return Path(out)


def _export_onnx(program, path: Path, args) -> None:
    export = lowering("to_onnx", "export")
    from nspec.compiler.driver import compile_file
    from nspec.runtime.reference import initialize

    params, _ = initialize(program, 1, program.seed)  # stored in the file, so it runs on its own
    hyper = hyper_args(args.param)
    # compiles at other values of the data-bound dimensions, which the export keeps symbolic
    compile_at = lambda dims: compile_file(args.spec, {**hyper, **dims}, args.entry)  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:  # a dimension the file keeps fixed, and why
        warnings.simplefilter("always", lowering("to_onnx", "SymbolicDimWarning"))
        export(program, str(path), mode="step" if args.step else "whole-run", steps=args.steps, force=args.force,
               params=params, compile_at=compile_at)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def _export_tvm(program, path: Path, args) -> None:
    export = lowering("tvm.build", "export")
    export(program, str(path), target=args.target, force=args.force)


def _export_torch(model, path: Path, args) -> list[Path]:
    """One step as a ``torch.export`` program, its initial state and manifest beside it (lowering/torch_export.py)."""
    return lowering("torch_export", "export")(model, path, batch=args.batch or 1)


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
        model = lowering("to_onnx", "step_model")(program)
    else:
        model = lowering("to_onnx", "run_model")(program, args.steps)
    return printer.to_text(model)


def _emit_tir(program, args) -> str:
    # the TVM backend lowers the whole time loop to one TIR function of an IRModule
    text, options = lowering("tvm.emit", "tir_text"), lowering("tvm.tir", "Options")
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
    hyper = hyper_args(args.param)
    spec = Path(args.spec)
    if args.emit is not None and (args.emit in IR_STAGES or args.emit.startswith("after=")):
        print(driver.emit(spec, args.emit, hyper, args.entry, given=given_args(args)))
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
        refuse_overwrite(path, args.force, "-o")
        if args.target == "torch":
            base = path.name.removesuffix(".pt2")
            for beside in (path.with_name(base + ".state0.pt"), path.with_name(base + ".json")):
                refuse_overwrite(beside, args.force, "-o")
    if args.target in MODEL_TARGETS and not args.emit:
        from nspec.runtime.model import load

        model = load(spec, target=args.entry, given=given_args(args), weights=args.weights, **hyper)
        print("wrote " + ", ".join(map(str, TARGETS[args.target][1](model, path, args))))
        return EXIT_OK
    program = driver.compile_file(spec, hyper, args.entry, given=given_args(args))
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
        refuse_overwrite(path, args.force, "-o")
    driver.compile_file(spec, hyper, args.entry, given=given_args(args))  # every mistake, located, before drawing
    text = diagram(spec, hyper, args.entry, given=given_args(args))
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


__all__ = ["cmd_compile", "TARGETS", "MODEL_TARGETS", "IR_STAGES", "EMIT_STAGES", "DIAGRAM_SUFFIXES"]
