"""What a sweep runs: the grid of hyperparameters and the seeds (``--grid``, ``--seeds``), its trials,
and the metrics of a trial (``--metric``, expressions of spec tests' ``expect``), for
``runtime/sweep.py``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from nspec.dsl import ast as A
from nspec.dsl.diagnostics import SourceMap
from nspec.dsl.parser import parse


class SweepError(ValueError):
    """A mistake in how a sweep is asked for (grid syntax, seeds, an output of another sweep)."""


# ---------------------------------------------------------------- the grid
def split_values(text: str) -> list[str]:
    """``1.62mV,2.0mV`` -> its values, split at commas outside brackets (``[1, 2],[3]`` is two)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[(" and 1 or (-1 if ch in "])" else 0)
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [v.strip() for v in out]


def grid_value(raw: str) -> object:
    """A grid value read as ``--param`` reads one: a JSON literal that is not a number (``true``,
    ``[1, 2]``), else the text (``1.62mV``, ``2``: the compiler reads a quantity, so a bare number
    for a hyperparameter with a unit is refused)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return raw if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def parse_grid(text: str) -> tuple[str, tuple[object, ...]]:
    """``NAME=v1,v2,...`` -> (NAME, values)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name or not all(part.isidentifier() for part in name.split(".")):
        raise SweepError(f"--grid {text}: expected NAME=v1,v2,... (or MODULE.NAME=...)")
    values = split_values(raw)
    if any(v == "" for v in values):
        raise SweepError(f"--grid {text}: an empty value; separate values with single commas")
    if len(set(values)) != len(values):
        raise SweepError(f"--grid {text}: a value is given twice")
    return name, tuple(grid_value(v) for v in values)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0:16`` (16 seeds, 0 to 15), ``3,5,9`` or ``7``."""
    def one(word: str) -> int:
        try:
            value = int(word)
        except ValueError:
            raise SweepError(f"--seeds {text}: {word.strip()!r} is not an integer seed") from None
        if not 0 <= value < 2**63:
            raise SweepError(f"--seeds {text}: a seed is an integer from 0 to 2**63 - 1, got {value}")
        return value

    if ":" in text:
        start, _, stop = text.partition(":")
        a, b = one(start), one(stop)
        if b <= a:
            raise SweepError(f"--seeds {text}: A:B runs seeds A to B - 1, so B must exceed A")
        return tuple(range(a, b))
    seeds = tuple(one(w) for w in text.split(","))
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text}: a seed is given twice")
    return seeds


def si_value(value: object) -> float | None:
    """The SI magnitude of a grid value with a unit (``1.62mV`` -> 0.00162), else None."""
    from nspec.compiler import units as U
    from .spec_eval import Evaluator, Q

    if not isinstance(value, str):
        return None
    module, diags = parse(f"let v = {value}", "<grid>")
    if diags or module is None or not isinstance(module.items[0], A.Const):
        return None
    try:
        q = Evaluator(SourceMap()).eval(module.items[0].value)
    except Exception:  # not a quantity: a name, a string
        return None
    if not isinstance(q, Q) or q.dim is None or q.dim == U.DIMENSIONLESS or np.ndim(q.mag) != 0:
        return None
    return float(q.mag)


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: a grid point (name -> value, in grid order) and a seed (None: the spec's)."""

    point: tuple[tuple[str, object], ...]
    seed: int | None

    @property
    def key(self) -> str:
        """A short, stable name of the trial (its outputs' file name, its row in a resumed table)."""
        return _digest([list(map(list, self.point)), self.seed])[:16]


def expand(grid: Mapping[str, Sequence[object]], seeds: Sequence[int | None]) -> list[Trial]:
    """Every grid point times every seed, the first grid name varying slowest, seeds fastest."""
    points: list[tuple[tuple[str, object], ...]] = [()]
    for name, values in grid.items():
        points = [p + ((name, v),) for p in points for v in values]
    return [Trial(p, s) for p in points for s in seeds]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    """A ``--metric``: its column name and expression (a spec test's ``expect`` language)."""

    name: str
    text: str

    def expr(self) -> A.Expr:
        module, diags = parse(f"let m = {self.text}", "<metric>")
        if diags or module is None or len(module.items) != 1 or not isinstance(module.items[0], A.Const):
            raise SweepError(f"--metric {self.text}: not an expression (write one as in a spec test's expect, "
                             "e.g. mean_rate(P))")
        return module.items[0].value


def parse_metric(text: str) -> Metric:
    """``mean_rate(P)`` (column ``mean_rate(P)``) or ``rate=mean_rate(P)`` (column ``rate``)."""
    name, sep, expr = text.partition("=")
    named = sep and name.strip().isidentifier() and not expr.startswith("=")
    metric = Metric(name.strip(), expr.strip()) if named else Metric(text.strip(), text.strip())
    metric.expr()  # a syntax error is the sweep's mistake, found before any trial runs
    return metric


def evaluate_metrics(model, results: dict, metrics: Sequence[Metric]) -> dict[str, float]:
    """Each metric's value on one run, a scalar in SI units (the evaluator of spec tests)."""
    from .spec_eval import Evaluator, Q, RunData, SpecFailure, fmt

    run = RunData.from_model(model, results)
    out = {}
    for m in metrics:
        try:
            value = Evaluator(SourceMap(), run).eval(m.expr())
        except SpecFailure as exc:
            raise SweepError(f"--metric {m.text}: {exc.message}") from None
        if not isinstance(value, Q) or np.ndim(value.mag) != 0:
            raise SweepError(f"--metric {m.text}: a metric is one number; this is {fmt(value)}")
        out[m.name] = float(value.mag)
    return out


__all__ = ["SweepError", "split_values", "grid_value", "parse_grid", "parse_seeds", "si_value", "Trial", "expand", "Metric", "parse_metric", "evaluate_metrics"]
