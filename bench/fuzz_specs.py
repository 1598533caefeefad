"""The mutant fuzz: mutate the specs of ``specs/``, and for each mutant run check, compile and three
steps on the reference backend in a worker process with a per-mutant timeout; classify the outcome.

    python bench/fuzz_specs.py --mutants 2000 [--seed S] [--timeout 20] [--report fuzz.json]

Mutations are ``tests/test_fuzz.py``'s (a token deleted, duplicated, swapped or substituted, the text
cut short, bytes inserted, a number replaced by a huge one), drawn with ``--seed`` so a run can be
replayed.  Outcomes:

* ``clean``: checks without errors, compiles, and runs three steps;
* ``located``: a located diagnostic (``path:line:col``) from check or compile, or a run-time error the
  runtime reports as the user's (NaN named with its spec line, a limit, an input that does not fit);
* ``unlocated``: a diagnostic without a valid location, or one that does not render;
* ``internal``: any other exception (a bug in nspec);
* ``hang``: the mutant took longer than ``--timeout`` seconds (the worker is killed and replaced).

The report lists the counts and, for every class but clean and located, each mutant (its mutation,
replayable with ``Mutation(...).apply()``) and its message.  One worker runs at a time, so the fuzz
shares a machine politely; a mutant never runs in the parent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the mutators and seeded inputs live with the tests

from snapshot_reference import seeded_inputs  # noqa: E402
from test_fuzz import SMALL, SPECS, SPECS_ROOT, TOKEN_KINDS, Mutation, assert_diagnostics_located  # noqa: E402

KINDS = TOKEN_KINDS * 3 + ("truncate", "insert_bytes", "huge")  # token edits weigh most, as in the suite
PAYLOADS = (b"\x00", b"\xff", b"{", b"}", b"(", b"\\", b'"', "\u03c4".encode(), b"\r")
STEPS = 3


def draw(rng: random.Random) -> Mutation:
    kind = rng.choice(KINDS)
    payload = rng.choice(PAYLOADS) if kind == "insert_bytes" else b""
    return Mutation(rng.choice(SPECS), kind, rng.randrange(2**20), rng.randrange(2**20), payload)


def classify(path: Path, mutation: Mutation) -> tuple[str, str]:
    """(outcome, message) of one mutant: check, compile, three reference steps (in the worker)."""
    import nspec
    from nspec.compiler.driver import check_files
    from nspec.dsl import NspecError
    from nspec.runtime import model as runtime_model

    user_errors = (runtime_model.NonFiniteError, runtime_model.LimitExceeded, runtime_model.InputError,
                   runtime_model.WeightsError)
    try:
        diags, sources = check_files([path])
        try:
            assert_diagnostics_located(diags, sources, path)
        except AssertionError as exc:
            return "unlocated", f"check: {exc}"
        if any(d.severity == "error" for d in diags):
            return "located", diags[0].message
        try:
            model = nspec.load(path, **SMALL.get(mutation.spec, {}))
        except NspecError as exc:
            try:
                assert_diagnostics_located(exc.diagnostics, exc.sources, path)
            except AssertionError as bad:
                return "unlocated", f"compile: {bad}"
            return "located", f"compile: {exc.diagnostics[0].message}"
        record = sorted(r.name for r in model.program.step.results if r.kind == "value")
        try:
            model.run(inputs=seeded_inputs(model, STEPS), steps=STEPS, record=record, batch=None)
        except user_errors as exc:
            return "located", f"run: {type(exc).__name__}: {exc}"
        return "clean", ""
    except Exception:
        return "internal", traceback.format_exc(limit=-6)


def worker(conn, mirror: str) -> None:
    """Classifies the mutants it is sent until it receives None."""
    warnings.simplefilter("ignore")  # a mutant may overflow or divide by zero; outcomes are what count
    while (job := conn.recv()) is not None:
        index, mutation = job
        rel = mutation.spec.relative_to(SPECS_ROOT)
        path = Path(mirror) / rel.parent / f"{rel.stem}.fuzz{index}.nspec"
        path.write_bytes(mutation.apply())
        try:
            conn.send(classify(path, mutation))
        finally:
            path.unlink(missing_ok=True)


class Pool:
    """One worker process, replaced when a mutant hangs it (or kills it)."""

    def __init__(self, mirror: Path):
        self.mirror = mirror
        self.ctx = multiprocessing.get_context("fork")
        self.proc = None

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker, args=(child, str(self.mirror)), daemon=True)
        self.proc.start()

    def run(self, index: int, mutation: Mutation, timeout: float) -> tuple[str, str]:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send((index, mutation))
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        if self.proc.is_alive():
            self.stop(kill=True)
            return "hang", f"no answer in {timeout:g} s"
        code = self.proc.exitcode
        self.proc = None
        return "internal", f"the worker died (exit code {code}: a crash of the process)"

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.conn.send(None)
        self.proc.join(timeout=10)
        self.proc = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per mutant before it counts as a hang")
    ap.add_argument("--report", default=None, help="write the counts and the findings as JSON")
    ap.add_argument("--kinds", default=None, help="only these mutation kinds (comma-separated)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    kinds = tuple(args.kinds.split(",")) if args.kinds else None
    with tempfile.TemporaryDirectory(prefix="nspec-fuzz-") as tmp:
        project = Path(tmp)
        (project / "nspec.toml").write_text("")  # a project root, like the repository's
        mirror = project / "specs"
        shutil.copytree(SPECS_ROOT, mirror, ignore=shutil.ignore_patterns("errors"))
        pool = Pool(mirror)
        counts: Counter = Counter()
        findings = []
        start = time.perf_counter()
        for index in range(args.mutants):
            mutation = draw(rng)
            while kinds and mutation.kind not in kinds:
                mutation = draw(rng)
            outcome, message = pool.run(index, mutation, args.timeout)
            counts[outcome] += 1
            if outcome not in ("clean", "located"):
                findings.append({"outcome": outcome, "mutation": repr(mutation), "message": message})
                print(f"[{index}] {outcome}: {mutation!r}\n{message}", file=sys.stderr, flush=True)
            if (index + 1) % 100 == 0:
                print(f"{index + 1} mutants in {time.perf_counter() - start:.0f} s: {dict(counts)}", flush=True)
        pool.stop()
    summary = {"mutants": args.mutants, "seed": args.seed, "timeout_s": args.timeout,
               "seconds": round(time.perf_counter() - start, 1), "counts": dict(counts), "findings": findings}
    print(json.dumps({k: v for k, v in summary.items() if k != "findings"}))
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
