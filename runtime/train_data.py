"""What ``nspec train`` trains on: the losses in the spec's terms (``"cross_entropy:logits:targets"``),
the named arrays of a data file, the mini-batches drawn from them, and the epoch's sample order,
a pure function of ``(seed, epoch)`` so a resumed run takes the steps an uninterrupted one would.
``runtime/train.py`` is the loop."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F


class TrainError(ValueError):
    """A training request that cannot work: bad data, an unknown loss or output, a checkpoint clash."""


# ---------------------------------------------------------------- losses
def _cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.dtype.is_floating_point:
        raise TrainError("cross_entropy needs integer class indices as its target, got floats "
                         "(use mse or bce for real-valued targets)")
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1).long())


@dataclass(frozen=True, slots=True)
class LossKind:
    """A built-in loss: ``fn(prediction, target)`` (mean over every element) and how many trailing
    axes of a prediction a target does not have (1 for the classes of a cross-entropy)."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reduced_axes: int
    doc: str


LOSSES: dict[str, LossKind] = {
    "cross_entropy": LossKind(_cross_entropy, 1, "softmax cross-entropy over the output's last axis; "
                                                 "integer class targets"),
    "mse": LossKind(lambda p, t: F.mse_loss(p, t.to(p.dtype)), 0, "mean squared error"),
    "bce": LossKind(lambda p, t: F.binary_cross_entropy_with_logits(p, t.to(p.dtype)), 0,
                    "binary cross-entropy of the output read as logits; targets in [0, 1]"),
}

_LOSS_TEXT = re.compile(r"^\s*(\w+)\s*:\s*([\w/.]+)\s*(\[[^\]]*\])?\s*:\s*([\w/.]+)\s*$")


@dataclass(frozen=True, slots=True)
class Loss:
    """``kind`` applied to the output ``output`` (indexed per sample by ``index``) and the data
    array ``target``.  ``index`` holds ints, ``slice(None)`` and ``Ellipsis``."""

    kind: str
    output: str
    target: str
    index: tuple = ()
    reduction: ClassVar[str] = "mean"  # every built-in loss is a mean over the samples (data parallelism weighs by it)

    def __str__(self) -> str:
        sub = ", ".join("..." if i is Ellipsis else ":" if isinstance(i, slice) else str(i) for i in self.index)
        return f"{self.kind}:{self.output}{f'[{sub}]' if self.index else ''}:{self.target}"

    def prediction(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The output aligned with ``target``: indexed per sample, then every step or the last one."""
        pred = outputs[self.output]
        if self.index:
            try:
                pred = pred[(slice(None), slice(None)) + self.index]
            except IndexError as exc:
                raise TrainError(f"loss {self}: the subscript does not fit the output '{self.output}', which is "
                                 f"{list(pred.shape[2:])} per sample and step ({exc})") from None
        extra = LOSSES[self.kind].reduced_axes
        if target.dim() == pred.dim() - extra:              # [B, T, ...]: every step
            aligned = pred
        elif target.dim() == pred.dim() - extra - 1:        # [B, ...]: the last step
            aligned = pred[:, -1]
        else:
            aligned = None
        if aligned is None or tuple(aligned.shape[:aligned.dim() - extra]) != tuple(target.shape):
            per_sample = list(pred.shape[2:])
            raise TrainError(f"loss {self}: target '{self.target}' has shape {list(target.shape)} per batch, but the "
                             f"output '{self.output}' is {per_sample} per sample and step; give the target as "
                             f"{list(pred.shape[:2]) + per_sample[:len(per_sample) - extra]} (every step) or "
                             f"{[pred.shape[0]] + per_sample[:len(per_sample) - extra]} (the last step)")
        return aligned

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        target = batch[self.target]
        return LOSSES[self.kind].fn(self.prediction(outputs, target), target)


def parse_loss(text: str) -> Loss:
    """``KIND:OUTPUT:TARGET`` -> ``Loss``; OUTPUT may carry a per-sample subscript such as
    ``predictions[:, -1]`` (ints, ``:`` and ``...``)."""
    m = _LOSS_TEXT.match(text)
    if m is None:
        raise TrainError(f"cannot read the loss {text!r}: write KIND:OUTPUT:TARGET, e.g. cross_entropy:logits:targets "
                         "or cross_entropy:predictions[:, -1]:labels")
    kind, output, sub, target = m.groups()
    if kind not in LOSSES:
        known = "; ".join(f"{name} ({k.doc})" for name, k in LOSSES.items())
        raise TrainError(f"unknown loss {kind!r}; the built-in losses are {known}")
    index = []
    for item in (sub[1:-1].split(",") if sub else ()):
        item = item.strip()
        if item == ":":
            index.append(slice(None))
        elif item == "...":
            index.append(Ellipsis)
        elif re.fullmatch(r"-?\d+", item):
            index.append(int(item))
        else:
            raise TrainError(f"loss {text!r}: the subscript takes integers, ':' and '...', not {item!r}")
    return Loss(kind, output, target, tuple(index))


# ---------------------------------------------------------------- data
def read_data(data: str | Path | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Named arrays from an ``.npz`` file or a mapping."""
    if isinstance(data, Mapping):
        return {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in data.items()}
    path = Path(data)
    if not path.is_file():
        raise TrainError(f"no such data file: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path} is not a readable .npz file ({exc})") from None


@dataclass(frozen=True, slots=True)
class Dataset:
    """Model inputs as ``[N, T, *shape]`` (a timeless input as ``[N, 1, *shape]``, expanded over the
    run) and targets as given; ``steps`` is the length of every run."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    size: int
    steps: int

    def batch(self, rows: np.ndarray, device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        xs = {}
        for name, arr in self.inputs.items():
            x = torch.from_numpy(np.ascontiguousarray(arr[rows])).to(device)
            xs[name] = x.expand((x.shape[0], self.steps) + x.shape[2:]) if x.shape[1] == 1 else x
        ts = {name: torch.from_numpy(np.ascontiguousarray(arr[rows])).to(device) for name, arr in self.targets.items()}
        return xs, ts


def make_dataset(program, arrays: Mapping[str, np.ndarray], targets: tuple[str, ...],
                 time_steps: int | None = None) -> Dataset:
    """Check ``arrays`` against the program's input ports and the loss's targets."""
    ports = {v.name: v for v in program.inputs}
    missing = [n for n in list(ports) + list(targets) if n not in arrays]
    unused = sorted(set(arrays) - set(ports) - set(targets))
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"missing array(s) {', '.join(missing)}")
        if unused:
            parts.append(f"array(s) {', '.join(unused)} are neither model inputs nor loss targets")
        raise TrainError(f"the data do not fit: {'; '.join(parts)} (model inputs: {', '.join(ports) or 'none'}; "
                         f"targets: {', '.join(targets) or 'none'})")
    sizes = {n: np.shape(a)[0] if np.ndim(a) else None for n, a in arrays.items()}
    if any(s is None for s in sizes.values()) or len(set(sizes.values())) != 1:
        raise TrainError(f"every data array needs the same number of samples on its first axis: {sizes}")
    size = next(iter(sizes.values()))
    if size == 0:
        raise TrainError("the data hold no samples")
    inputs, lengths = {}, set()
    for name, var in ports.items():
        arr = np.asarray(arrays[name])
        lead = arr.ndim - len(var.shape)
        if lead not in (1, 2) or tuple(arr.shape[lead:]) != tuple(var.shape):
            raise TrainError(f"input '{name}' has shape {list(arr.shape)}; the port is {var.dtype.value}"
                             f"{list(var.shape)}, so give [N, T, *shape] or [N, *shape]")
        if lead == 2:
            lengths.add(arr.shape[1])
        else:
            arr = arr[:, None]
        if arr.dtype.kind == "f" and np.dtype(var.dtype.numpy).kind in "iub":
            raise TrainError(f"input '{name}' holds floats; the port is {var.dtype.value}")
        inputs[name] = arr.astype(var.dtype.numpy, copy=False)
    if len(lengths) > 1:
        raise TrainError(f"inputs with a time axis disagree on its length: {sorted(lengths)}")
    if time_steps is None:
        time_steps = lengths.pop() if lengths else (program.duration_steps or 1)
    elif lengths and min(lengths) < time_steps:
        raise TrainError(f"the inputs cover {min(lengths)} steps; the run needs {time_steps}")
    targets_out = {n: np.asarray(arrays[n]) for n in targets}
    return Dataset(inputs, targets_out, int(size), int(time_steps))


def batch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The sample order of one epoch: a function of ``(seed, epoch)`` only, so resuming is exact."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(size)


__all__ = ["LOSSES", "TrainError", "LossKind", "Loss", "parse_loss", "read_data", "Dataset", "make_dataset", "batch_order"]
