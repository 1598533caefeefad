"""The ``nspec`` command line's argument parser: the argument types and every subcommand's flags.

Each subcommand's parser names its handler (``cmd_*`` of ``cli_commands.py``) as ``args.handler``.
"""

from __future__ import annotations

import argparse
import json

from nspec import __version__
from nspec.compiler.limits import parse_memory
from nspec.cli_commands import TARGETS, cmd_check, cmd_compile, cmd_run, cmd_import, cmd_sweep, cmd_test, cmd_train


# ---------------------------------------------------------------- argument types
def param(text: str) -> tuple[str, object]:
    """``k=v`` with ``v`` read as a JSON literal where it is one (``true``, ``[1, 2]``, ``"text"``)
    and as a string otherwise (``routing=neuronio``, ``tau=20 ms``).  A number stays text
    (``2``, ``1e-3``): the compiler reads it as a quantity, so that a bare number for a
    hyperparameter with a unit is refused instead of read in SI units."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not all(part.isidentifier() for part in key.split(".")):  # `tau`, or `cells.tau` (its module's)
        raise argparse.ArgumentTypeError(f"expected name=value or module.name=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return key, raw.strip() if is_number else value


def duration(text: str) -> float:
    """A positive time with a unit (``1s``, ``200ms``, ``0.5 s``), in seconds; a bare number is refused."""
    from nspec.compiler.units import parse_duration  # pint loads only when a duration is given

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**64) (NumPy's and the backends' seeds are unsigned)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"a seed is an integer from 0 to 2**64 - 1, got {value}")
    return value


def memory_size(text: str) -> int:
    """A memory limit: ``8GB``, ``512MB``, ``1.5 GiB`` or a number of bytes."""
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the Python traceback of an internal error")
    hyper = argparse.ArgumentParser(add_help=False)
    hyper.add_argument("--param", "-p", action="append", type=param, metavar="NAME=VALUE",
                       help="set a hyperparameter (JSON literal or string); an imported file's "
                            "as MODULE.NAME=VALUE; repeatable")
    limit = argparse.ArgumentParser(add_help=False)
    limit.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                       help="refuse a spec or run whose estimated memory exceeds SIZE (8GB, 512MB; "
                            "default: half the machine's physical memory)")

    parser = argparse.ArgumentParser(prog="nspec", description="A declarative graph compiler for brain-inspired "
                                     "neural models.", parents=[common])
    parser.add_argument("--version", action="version", version=f"nspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", parents=[common, hyper, limit], help="report every diagnostic of the given specs",
                       description="Check specs: parse, resolve and elaborate every declaration. Exit 1 on errors.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="spec files, or folders searched for *.nspec")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("compile", parents=[common, hyper, limit], help="compile a spec and show a stage or export it",
                       description="Compile a spec's run target. --emit shows a stage; --target exports it.")
    p.add_argument("spec", metavar="SPEC", nargs="?")
    p.add_argument("--entry", metavar="NAME", help="the declaration to compile (default: the simulate target)")
    p.add_argument("--emit", metavar="STAGE",
                   help="print this stage to stdout: ast, ir (after the required passes), ir-opt (after all), "
                        "after=PASS (after one pass), passes (the pass list), onnx, tir (the TVM IRModule, the "
                        "whole time loop as one TIR function; relax: a deprecated alias of tir), diagram (the "
                        "wiring as Graphviz DOT; with -o FILE.svg|png|pdf also drawn by Graphviz's dot if installed)")
    p.add_argument("--target", choices=list(TARGETS), help="export for this backend")
    p.add_argument("-o", "--output", metavar="OUT", help="output file, or a folder ending in '/'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--whole-run", action="store_true", help="ONNX: the whole time loop in one graph (default)")
    mode.add_argument("--step", action="store_true", help="ONNX: one step per call, state in and out")
    p.add_argument("--steps", type=positive_int, metavar="N", help="ONNX whole-run: a fixed number of steps")
    p.add_argument("--weights", metavar="FILE", help="torch, nir: the weights stored in the export (.safetensors, "
                   ".npz or a torch state_dict; default: the spec's initial values)")
    p.add_argument("--batch", type=positive_int, metavar="B", help="torch: the batch size the step is exported "
                   "for (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser("run", parents=[common, hyper, limit], help="run a spec and save its results",
                       description="Run a spec's default simulation (or --entry) and save outputs and monitors.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--entry", metavar="NAME", help="the declaration to run (default: the simulate target)")
    p.add_argument("--weights", metavar="FILE", help="weights: .safetensors, .npz or a torch state_dict")
    p.add_argument("--inputs", metavar="FILE.npz", help="named input arrays")
    p.add_argument("--output", "-o", metavar="FILE.npz", help="save outputs and monitors, streamed to the file "
                   "chunk by chunk so they need not fit in memory (never overwrites without --force)")
    p.add_argument("--backend", default="reference", metavar="NAME",
                   help="reference (default), onnxruntime, tvm or torch")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--duration", type=duration, metavar="TIME", help="model time to run: 1s, 200ms, 0.5 s")
    when.add_argument("--steps", type=positive_int, metavar="N", help="number of steps to run")
    p.add_argument("--seed", type=seed, help="seed for initial values and every step's random draws (default: the "
                   "spec's simulate seed)")
    p.add_argument("--batch", type=positive_int, metavar="B", help="run B samples at once")
    p.add_argument("--plot", metavar="FILE.png", help="draw a spike raster or state traces")
    p.add_argument("--plot-kind", choices=["auto", "raster", "traces"], default="auto",
                   help="raster of the first spike monitor or traces of the first state monitor "
                        "(default: raster if the model records spikes)")
    p.add_argument("--timing-json", metavar="FILE", help="write {backend, compile_s, run_s, steps} as JSON: "
                   "compile_s covers the spec and the backend, run_s the main loop alone (which then runs "
                   "without a progress bar)")
    p.add_argument("--no-parallel-form", dest="parallel_form", action="store_false",
                   help="step a sequence token by token even where the parallel-form pass applies (a state that "
                        "is a sum of outer products read linearly, as BDH's: by default a whole sequence runs as "
                        "masked matmuls over chunks of 256 tokens)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="split the network by neuron ranges over N Ray workers that exchange spike indices every "
                        "minimum-delay interval (reference interpreter; same spikes as one process; a local Ray is "
                        "started unless RAY_ADDRESS names a cluster; spiking networks without ports only)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--nan-check", choices=["error", "warn", "off"], default="error",
                   help="the state is checked after every chunk of at most 1000 steps; on NaN or Inf: stop at once "
                        "with an error naming the state, the first step and the spec line (default), warn once, or "
                        "say nothing")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("sweep", parents=[common, hyper, limit], help="run a spec over a grid of hyperparameters "
                       "and seeds on Ray", description="Run a spec for every point of a hyperparameter grid and "
                       "every seed, one Ray task per trial, into one Parquet table (a row per trial: parameters, "
                       "seed, metrics, the trial's outputs). Rerunning the same command resumes it. Needs pip "
                       "install nspec[distributed].")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--grid", "-g", action="append", required=True, metavar="NAME=V1,V2,...",
                   help="a hyperparameter and its values, each read as a --param value (we=1.62mV,2.0mV); "
                        "repeatable: the grid is every combination")
    p.add_argument("--seeds", metavar="A:B|S1,S2,...", help="the seeds of every grid point: A:B runs A to B - 1 "
                   "(0:16), or a list (default: the spec's simulate seed)")
    p.add_argument("--output", "-o", required=True, metavar="TABLE.parquet",
                   help="the table; each trial's outputs go to TABLE.parquet.d/trial-KEY.npz")
    p.add_argument("--entry", metavar="NAME", help="the declaration to run (default: the simulate target)")
    p.add_argument("--backend", default="reference", metavar="NAME",
                   help="reference (default), onnxruntime, tvm or torch")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--duration", type=duration, metavar="TIME", help="model time per trial: 1s, 200ms")
    when.add_argument("--steps", type=positive_int, metavar="N", help="steps per trial")
    p.add_argument("--metric", "-m", action="append", metavar="[NAME=]EXPR",
                   help="a column computed from each trial's run, an expression of spec tests' expect "
                        "(mean_rate(P), count(P)), in SI units; named by its text or NAME; repeatable")
    p.add_argument("--address", metavar="HOST:PORT|auto", help="join this Ray cluster (auto: the one that "
                   "ray start began on this machine); default: start a local Ray for this sweep")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="how often Ray reruns a trial whose worker process died (default 3)")
    p.add_argument("--force", action="store_true", help="replace a table that another sweep wrote (a rerun "
                   "of the same sweep resumes it without --force)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("test", parents=[common], help="run the spec-level test blocks",
                       description="Run the `test` blocks of specs; prints PASS/FAIL and 'N passed, M failed'.")
    p.add_argument("paths", nargs="*", metavar="FILE|DIR", help="spec files or folders (default: .)")
    p.add_argument("-k", metavar="TEXT", help="only tests whose name contains TEXT")
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("train", parents=[common, hyper], help="train a spec's parameters by gradient descent",
                       description="Train a spec on named arrays (model inputs and targets, N samples on the first "
                       "axis) with a loss on its outputs; checkpoints hold safetensors weights by external name.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--entry", metavar="NAME", help="the declaration to train (default: the simulate target)")
    p.add_argument("--data", required=True, metavar="FILE.npz",
                   help="model inputs ([N, T, *shape] or [N, *shape]) and targets by name")
    p.add_argument("--loss", required=True, metavar="KIND:OUTPUT:TARGET",
                   help="cross_entropy, mse or bce of an output against a data array, e.g. "
                        "cross_entropy:logits:targets or cross_entropy:predictions[:, -1]:labels; a target "
                        "without a time axis is compared with the last step")
    p.add_argument("--weights", metavar="FILE", help="initial weights: .safetensors, .npz or a torch state_dict")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, metavar="N", help="total epochs (default 1)")
    length.add_argument("--max-steps", type=positive_int, metavar="N", help="total optimizer steps instead of epochs")
    p.add_argument("--time-steps", type=positive_int, metavar="T",
                   help="run length for inputs given without a time axis (default: the spec's simulate)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="samples per step (default 32)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="WD")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm")
    p.add_argument("--seed", type=seed, default=0, help="initial weights and batch order (default 0)")
    p.add_argument("--checkpoint", metavar="DIR", help="write model.safetensors, optimizer.pt and trainer.json here "
                   "after every epoch")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --checkpoint DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="data-parallel training in N local processes (DistributedDataParallel; gloo on cpu, one GPU "
                        "each with cuda), each computing a contiguous share of every batch, with the same result as "
                        "one process; under torchrun the processes join its group and N, if given, must equal its "
                        "WORLD_SIZE (default 1, or torchrun's WORLD_SIZE)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("import-nir", aliases=["import"], parents=[common],
                       help="write a NIR graph as a spec and its weights (alias: import)",
                       description="Import a NIR file (nir 1.0.8): write its spec (a composite of std/nir.nspec "
                       "boxes) and its weights (.weights.safetensors beside it). Needs pip install nspec[nir].")
    p.add_argument("graph", metavar="MODEL.nir")
    p.add_argument("--output", "-o", metavar="MODEL.nspec", help="the spec to write (default: MODEL.nspec)")
    p.add_argument("--dt", default="0.1 ms", metavar="TIME", help="the step (default 0.1 ms: snnTorch's export)")
    p.add_argument("--method", default="euler", help="integration method (default euler: what exporters assume)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(handler=cmd_import)
    return parser


__all__ = ["build_parser", "param", "duration", "positive_int", "seed"]
