"""Training: a standard gradient loop over a spec's torch module, for the API and ``nspec train``.

``train(spec_or_model, data, loss, ...)`` lowers the spec with ``nspec.lowering.to_torch``, draws
mini-batches from named arrays (the model's inputs and the loss's targets), backpropagates through
the time loop (surrogate gradients at spikes) and steps a torch optimiser.  The loss is written in
the spec's terms: ``"cross_entropy:logits:targets"`` is the cross-entropy of the output ``logits``
(classes on its last axis) against the array ``targets``; ``"cross_entropy:predictions[:, -1]:y"``
first indexes each sample's output (here: the last internal tick of a stacked output).

Time alignment follows the target's rank: a target with a time axis is compared with the output at
every step (next-token prediction), a target without one with the output of the last step (a
classifier reading out after the whole input).

Checkpoints (a directory): ``model.safetensors`` (``module.state_dict()``, keyed by the weights'
external names, so the reference loaders read them), ``optimizer.pt`` (the optimiser's
``state_dict``, loadable with ``torch.load(..., weights_only=True)``) and ``trainer.json`` (the
step, the epoch, the settings and the loss history).  Mini-batch order is a pure function of
``(seed, epoch)``, so a resumed run takes exactly the steps an uninterrupted run would.

The losses, the data and the batch order are ``train_data.py``; several workers, ``distributed.py``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch

from .files import write_atomic
from .train_data import (LOSSES, Dataset, Loss, TrainError, batch_order, make_dataset, parse_loss,
                         read_data)

if TYPE_CHECKING:
    from .distributed import Group

CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "trainer.json")
FORMAT = "nspec-train/1"


# ---------------------------------------------------------------- optimisers
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd),
}


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(directory: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    info: Mapping[str, Any]) -> None:
    """Write the three checkpoint files; ``trainer.json`` goes last, so it names a complete step."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    write_atomic(d / "model.safetensors", lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    write_atomic(d / "optimizer.pt", lambda p: torch.save(optimizer.state_dict(), p))
    text = json.dumps(dict(info), indent=1) + "\n"
    write_atomic(d / "trainer.json", lambda p: p.write_text(text, encoding="utf-8"))


def load_checkpoint(directory: str | Path, module: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load weights (strictly, by external name) and optimiser state; returns ``trainer.json``."""
    from safetensors.torch import load_file

    d = Path(directory)
    absent = [f for f in CHECKPOINT_FILES if not (d / f).is_file()]
    if absent:
        raise TrainError(f"{d} holds no complete checkpoint (missing {', '.join(absent)})")
    try:
        info = json.loads((d / "trainer.json").read_text(encoding="utf-8"))
        weights = load_file(str(d / "model.safetensors"))
        opt_state = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file surfaces as whatever its reader raises
        raise TrainError(f"cannot read the checkpoint in {d}: {exc}") from None
    if info.get("format") != FORMAT:
        raise TrainError(f"{d / 'trainer.json'} is not an nspec training checkpoint ({FORMAT})")
    try:
        module.load_state_dict(weights, strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainError(f"the checkpoint in {d} does not fit this model: {exc}") from None
    return info


# ---------------------------------------------------------------- the loop
@dataclass(frozen=True, slots=True)
class History:
    """What a training run did: the loss of every optimiser step since the first (a resumed run
    includes the checkpoint's), the mean loss of every completed epoch, the trained module, the
    optimiser steps taken in all and the step this run started from (0 unless resumed)."""

    losses: tuple[float, ...]
    epoch_losses: tuple[float, ...]
    module: torch.nn.Module
    step: int
    start: int = 0


def _module_of(model_or_spec, hyper: Mapping[str, Any], seed: int, target: str | None,
               arrays: Mapping[str, np.ndarray]):
    """``(torch module, Model or None)`` for a spec path (its data-bound dimensions bound by the
    training ``arrays``), a ``Model`` or a module."""
    from nspec.lowering.to_torch import ProgramModule, to_module

    from .model import Model, load

    if isinstance(model_or_spec, ProgramModule):
        if hyper:
            raise TrainError("hyperparameters apply to a spec; this model is already compiled")
        return model_or_spec, None
    if isinstance(model_or_spec, (str, Path)):
        model_or_spec = load(model_or_spec, target=target, inputs=arrays, **dict(hyper))
    elif hyper:
        raise TrainError("hyperparameters apply to a spec; this model is already compiled")
    if not isinstance(model_or_spec, Model):
        raise TrainError(f"cannot train a {type(model_or_spec).__name__}: give a spec path, a Model or a ProgramModule")
    return to_module(model_or_spec.program, model_or_spec.params, seed=seed), model_or_spec


def _settings(loss, optimizer: str, lr: float, weight_decay: float, batch_size: int, seed: int,
              dataset: Dataset, clip: float | None) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint."""
    return {"loss": str(loss) if isinstance(loss, Loss) else "custom", "optimizer": optimizer, "lr": lr,
            "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed, "samples": dataset.size,
            "time_steps": dataset.steps, "grad_clip": clip}


def _check_checkpoint(ckpt: Path | None, resume: bool, force: bool) -> None:
    """Refuse to resume nothing and to overwrite a checkpoint unasked, before any work."""
    if ckpt is not None:
        present = [f for f in CHECKPOINT_FILES if (ckpt / f).exists()]
        if resume and not present:
            raise TrainError(f"nothing to resume: {ckpt} holds no checkpoint")
        if present and not resume and not force:
            raise TrainError(f"{ckpt} already holds a checkpoint ({', '.join(present)}); resume it or pass "
                             "force to overwrite it")
        if ckpt.exists() and not ckpt.is_dir():
            raise TrainError(f"{ckpt} is a file, not a checkpoint directory")
    elif resume:
        raise TrainError("resume needs a checkpoint directory")


@dataclass(slots=True)
class _Run:
    """A training run set up and checked: the module and its optimiser, the data, the loss, the
    step count.  ``losses`` grows by one per optimiser step (a resumed run starts with the checkpoint's)."""

    module: Any
    model: Any
    dataset: Dataset
    loss: Any
    params: list
    opt: torch.optim.Optimizer
    settings: dict[str, Any]
    per_epoch: int
    total: int
    hyper: dict[str, Any]
    losses: list[float]


def _set_up(model_or_spec, arrays: Mapping[str, np.ndarray], loss, *, optimizer: str, lr: float,
            weight_decay: float, epochs: int | None, steps: int | None, batch_size: int, seed: int,
            time_steps: int | None, grad_clip: float | None, hyper: Mapping[str, Any] | None, target: str | None,
            device: str) -> _Run:
    module, model = _module_of(model_or_spec, hyper or {}, seed, target, arrays)
    module = module.to(device)
    program = module._nspec.program
    if isinstance(loss, Loss):
        known = {v.name for v in program.outputs}
        if loss.output not in known:
            raise TrainError(f"loss {loss}: the model has no output '{loss.output}'; its outputs are "
                             f"{', '.join(sorted(known)) or 'none'}")
        targets = (loss.target,)
    else:  # a callable loss gets every array that is not a model input
        targets = tuple(sorted(set(arrays) - {v.name for v in program.inputs}))
    dataset = make_dataset(program, arrays, targets, time_steps)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainError(f"{program.name} has no learnable parameters")
    opt = OPTIMIZERS[optimizer](params, float(lr), float(weight_decay))
    settings = _settings(loss, optimizer, float(lr), float(weight_decay), int(batch_size), int(seed), dataset,
                         grad_clip)
    per_epoch = math.ceil(dataset.size / batch_size)
    total = steps if steps is not None else per_epoch * (epochs or 1)
    if steps is not None and epochs is not None:
        total = min(steps, per_epoch * epochs)
    return _Run(module, model, dataset, loss, params, opt, settings, per_epoch, total,
                dict(model.hyper if model is not None else hyper or {}), [])


def _resume(run: _Run, ckpt: Path) -> None:
    """Load the checkpoint into ``run`` after checking it was made with the same settings."""
    info = load_checkpoint(ckpt, run.module, run.opt)
    saved = info.get("settings", {})
    changed = {k: (saved.get(k), v) for k, v in run.settings.items() if saved.get(k) != v}
    if changed:
        raise TrainError(f"the checkpoint in {ckpt} was trained with other settings (checkpoint, now): "
                         + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in sorted(changed.items()))
                         + "; exact resumption needs the same ones")
    run.losses[:] = [float(x) for x in info["losses"]]


def _fit(run: _Run, group: Group | None, *, ckpt: Path | None, resume: bool, force: bool, seed: int,
         batch_size: int, grad_clip: float | None, device: str, progress: bool) -> int:
    """The optimiser steps from the checkpoint's (or 0) up to ``run.total``; returns the first one.

    ``group`` None is one process.  With a group, rank 0 checks and loads the checkpoint and hands
    it to the others, every rank computes its share of each global batch (``_share_loss``), DDP
    averages the gradients over the ranks, and only rank 0 writes checkpoints and shows progress."""
    module, opt, dataset, per_epoch, total = run.module, run.opt, run.dataset, run.per_epoch, run.total
    net = module
    if group is None:
        if resume:
            _resume(run, ckpt)
    else:
        net, used = _replicate(run, group, ckpt=ckpt, resume=resume, force=force, device=device)
    losses = run.losses
    start = len(losses)
    writer = group is None or group.rank == 0

    def checkpoint(step: int) -> None:
        if ckpt is not None and writer:
            save_checkpoint(ckpt, module, opt, {"format": FORMAT, "step": step, "epoch": step / per_epoch,
                                                "steps_per_epoch": per_epoch, "settings": run.settings,
                                                "spec": getattr(run.model, "path", None), "hyper": run.hyper,
                                                "losses": losses})

    from tqdm import tqdm

    module.train()
    bar = tqdm(total=total, initial=min(start, total), disable=not (progress and writer), unit="step", desc="train",
               dynamic_ncols=True)
    order, order_epoch = None, -1
    try:
        for step in range(start, total):
            epoch, k = divmod(step, per_epoch)
            if epoch != order_epoch:
                order, order_epoch = batch_order(seed, epoch, dataset.size), epoch
            rows = order[k * batch_size:(k + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            if group is None:
                xs, ts = dataset.batch(rows, device)
                value = shown = run.loss(module(steps=dataset.steps, **xs), ts)
            else:
                value, shown = _share_loss(run, net, group, rows, used, device)
            if not torch.isfinite(shown):
                raise TrainError(f"the loss is {shown.item()} at step {step} (epoch {epoch}); lower the learning "
                                 "rate or add grad_clip")
            value.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(run.params, grad_clip)
            opt.step()
            losses.append(float(shown.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}", epoch=epoch)
            if k == per_epoch - 1 and step + 1 < total:
                checkpoint(step + 1)
    finally:
        bar.close()
    if start < total:
        checkpoint(total)
    module.eval()
    return start


def _history(run: _Run, start: int) -> History:
    """The run's ``History``; a ``Model`` gets the trained weights (``model.params``)."""
    if run.model is not None:
        run.model.params = {name: t.detach().cpu().numpy().copy() for name, t in run.module.param_values().items()}
    losses, per_epoch = run.losses, run.per_epoch
    epoch_losses = tuple(float(np.mean(losses[e * per_epoch:(e + 1) * per_epoch]))
                         for e in range(len(losses) // per_epoch))
    return History(tuple(losses), epoch_losses, run.module, len(losses), start)


# ---------------------------------------------------------------- several workers
def _replicate(run: _Run, group: Group, *, ckpt: Path | None, resume: bool, force: bool, device: str):
    """``(DDP-wrapped module, the parameters the loss reaches)``, every rank starting where rank 0 does.

    Rank 0 alone reads the checkpoint directory (the others may run on machines that do not see
    it) and sends the loss history and the optimiser state; DDP's constructor sends rank 0's
    weights.  Parameters the loss never reaches are left out of DDP, so their gradient stays None,
    as in one process (an optimiser skips them), instead of stalling DDP's reduction."""
    import io

    from torch.nn.parallel import DistributedDataParallel

    outcome: tuple = ("ok", [], None)
    if group.rank == 0:
        try:
            _check_checkpoint(ckpt, resume, force)
            if resume:
                _resume(run, ckpt)
                buffer = io.BytesIO()
                torch.save(run.opt.state_dict(), buffer)
                outcome = ("ok", run.losses, buffer.getvalue())
        except TrainError as exc:
            outcome = ("error", str(exc), None)
    status, losses, opt_state = group.broadcast(outcome)
    if status == "error":
        raise TrainError(losses)
    if group.rank != 0 and opt_state is not None:
        run.losses[:] = losses
        run.opt.load_state_dict(torch.load(io.BytesIO(opt_state), map_location="cpu", weights_only=True))

    xs, ts = run.dataset.batch(np.arange(1), device)  # one sample shows which parameters the loss reaches
    grads = torch.autograd.grad(run.loss(run.module(steps=run.dataset.steps, **xs), ts), run.params,
                                allow_unused=True)
    used = [p for p, g in zip(run.params, grads) if g is not None]
    reached = {id(p) for p in used}
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        run.module, [name for name, p in run.module.named_parameters() if p.requires_grad and id(p) not in reached])
    net = DistributedDataParallel(run.module, device_ids=[torch.device(device).index] if device != "cpu" else None,
                                  forward_sync_buffers=False)  # constants: equal on every rank
    return net, used


def _share_loss(run: _Run, net, group: Group, rows: np.ndarray, used: list, device: str):
    """``(this rank's loss to backpropagate, the global batch's loss)`` for the global batch ``rows``.

    The rank takes its contiguous chunk (``Group.share``).  DDP averages the ranks' gradients, so a
    mean loss over ``n_r`` of the batch's ``n`` samples is scaled by ``n_r * world / n``: the average
    is then ``sum_r (n_r / n) grad L_r``, the full batch's gradient (a sum loss by ``world``).  A rank
    with no sample still runs DDP's forward and backward, which every rank must: the forward on one
    sample of the batch, its output unused, and a loss of zero times the reached parameters, whose
    gradients are exactly zero whatever the model computes."""
    mine = group.share(rows)
    mean = getattr(run.loss, "reduction", None) == "mean"
    if len(mine):
        xs, ts = run.dataset.batch(mine, device)
        value = run.loss(net(steps=run.dataset.steps, **xs), ts)
        fraction = len(mine) / len(rows) if mean else 1.0
        shown = group.all_sum(value.detach().to(torch.float64) * fraction)
        return value * (fraction * group.world), shown
    xs, _ = run.dataset.batch(rows[:1], device)
    net(steps=run.dataset.steps, **xs)
    shown = group.all_sum(torch.zeros((), dtype=torch.float64, device=device))
    return sum(p.sum() for p in used) * 0.0, shown


def _draws_per_sample(program) -> bool:
    """Whether a run of ``program`` draws random numbers per sample (noise in its step, random
    initial states): both follow a sample's position in its batch, which a worker's chunk changes."""
    from nspec.compiler.ops import STEP_DRAWS, Op

    if any(n.op in STEP_DRAWS for n in program.step.nodes):
        return True
    init = program.init
    roots = {v.name: r.node for group in (program.params, program.states)
             for v in group if (r := init.result(v.name, "value")) is not None}
    params = init.reachable([roots[v.name] for v in program.params if v.name in roots])
    states = init.reachable([roots[v.name] for v in program.states if v.name in roots]) - params
    return any(init.nodes[i].op is Op.RANDOM for i in states)  # a parameter's draw is every sample's


def _warn_if_draws(run: _Run, world: int) -> None:
    if _draws_per_sample(run.module._nspec.program):
        warnings.warn(f"{run.module._nspec.program.name} draws random numbers per sample (noise or random initial "
                      f"states), by the sample's position in a worker's share of the batch: with {world} workers "
                      "they differ from one process's, so the training does too (in distribution it is the same)",
                      UserWarning, stacklevel=3)


def _train_worker(group: Group, device: str, job: dict[str, Any]) -> dict[str, Any]:
    """One spawned worker (``distributed.spawn``): set up as the caller did, train its share; rank 0
    returns the trained weights and the losses."""
    run = _set_up(job["model"], read_data(job["data"]), job["loss"], device=device, **job["setup"])
    start = _fit(run, group, device=device, **job["fit"])
    return {"state": {k: v.detach().cpu() for k, v in run.module.state_dict().items()}, "losses": run.losses,
            "start": start}


def _world(workers: int | None, batch_size: int, loss) -> tuple[int, Group | None]:
    """``(number of processes, the launcher's group or None)``, checked: ``workers`` must agree with
    a launcher's ``WORLD_SIZE``, fit in the batch, and a callable loss must say how it reduces."""
    from .distributed import DistributedError, check_workers, torchrun_group

    try:
        if workers is not None:
            check_workers(workers)
        launched = torchrun_group()
    except DistributedError as exc:
        raise TrainError(str(exc)) from None
    if launched is not None and workers is not None and workers != launched.world:
        raise TrainError(f"workers={workers}, but the launcher (torchrun) started WORLD_SIZE={launched.world} "
                         "processes: leave workers out under a launcher, or give the same number")
    world = launched.world if launched is not None else int(workers or 1)
    if world > batch_size:
        raise TrainError(f"{world} workers need a batch of at least {world} samples (one each), got "
                         f"batch_size={batch_size}")
    if world > 1 and getattr(loss, "reduction", None) not in ("mean", "sum"):
        raise TrainError("with several workers a callable loss must say how it reduces a batch: give it the "
                         "attribute reduction = 'mean' (a mean over samples, as the built-in losses) or 'sum', "
                         "so each worker's share can be weighted to give the full batch's gradient")
    return world, launched


def train(model_or_spec, data, loss: str | Loss | Callable, *,
          optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, epochs: int | None = None,
          steps: int | None = None, batch_size: int = 32, seed: int = 0, time_steps: int | None = None,
          grad_clip: float | None = None, hyper: Mapping[str, Any] | None = None, target: str | None = None,
          checkpoint_dir: str | Path | None = None, resume: bool = False, force: bool = False,
          device: str = "cpu", progress: bool = True, workers: int | None = None) -> History:
    """Train ``model_or_spec`` (a spec path compiled with ``hyper``, a ``Model`` or a ``ProgramModule``).

    ``data``: an ``.npz`` path or a mapping of arrays with N samples on the first axis: every model
    input (``[N, T, *shape]``, or ``[N, *shape]`` held over ``time_steps`` steps) and the loss's
    targets.  ``loss``: ``"KIND:OUTPUT:TARGET"`` (see ``parse_loss``; kinds in ``LOSSES``), a
    ``Loss``, or a callable ``(outputs, targets) -> scalar tensor``.  ``epochs`` and ``steps`` are
    totals counted from the start of training (a resumed run continues up to them); without either,
    one epoch.  ``seed`` draws the initial weights of a spec and the mini-batch order.

    With ``checkpoint_dir``, a checkpoint is written after every epoch and at the end; an existing
    checkpoint there is continued with ``resume=True`` and replaced only with ``force=True``.  A
    ``ProgramModule`` is trained in place; a ``Model`` gets the trained weights back
    (``model.params``), so ``model.run`` uses them on any backend.

    ``workers=N`` (N > 1) trains data-parallel in N local processes (``runtime/distributed.py``;
    DistributedDataParallel, gloo on CPU, NCCL and one GPU each with ``device="cuda"``): the global
    batches are the ones one process takes, each worker computes a contiguous chunk of each
    (``Group.share``), and the gradient is the full batch's, so the weights and the losses equal
    one process's up to float rounding.  A callable loss then needs ``reduction = "mean"`` or
    ``"sum"``.  Random draws inside the model (noise, random initial states) are made per sample
    position in a worker's chunk, so they differ from one process's (a warning says so).  Under ``torchrun`` (its
    variables in the environment) every process calls ``train`` and they join the launcher's group;
    ``workers`` may then be left out.  The model and loss are pickled to spawned workers.
    """
    if isinstance(loss, str):
        loss = parse_loss(loss)
    if not (isinstance(loss, Loss) or callable(loss)):
        raise TrainError(f"loss must be a 'KIND:OUTPUT:TARGET' string, a Loss or a callable, not {loss!r}")
    if optimizer not in OPTIMIZERS:
        raise TrainError(f"unknown optimizer {optimizer!r}; use {', '.join(OPTIMIZERS)}")
    for name, value in (("epochs", epochs), ("steps", steps), ("batch_size", batch_size), ("time_steps", time_steps)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
            raise TrainError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise TrainError(f"lr must be a positive number, got {lr!r}")
    world, launched = _world(workers, batch_size, loss)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if launched is None:  # under a launcher, rank 0 checks (the others may not see the directory)
        _check_checkpoint(ckpt, resume, force)
    elif resume and ckpt is None:
        raise TrainError("resume needs a checkpoint directory")

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {device!r} was asked for, but torch sees no CUDA device")

    setup = {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "epochs": epochs, "steps": steps,
             "batch_size": batch_size, "seed": seed, "time_steps": time_steps, "grad_clip": grad_clip,
             "hyper": hyper, "target": target}
    fit = {"ckpt": ckpt, "resume": resume, "force": force, "seed": seed, "batch_size": batch_size,
           "grad_clip": grad_clip, "progress": progress}
    if world == 1 and launched is None:
        run = _set_up(model_or_spec, read_data(data), loss, device=device, **setup)
        return _history(run, _fit(run, None, device=device, **fit))
    from .distributed import DistributedError, WorkerError, device_of, joined, spawn, start_method

    try:
        if launched is not None:
            device = device_of(device, launched)
            with joined(launched, device):
                run = _set_up(model_or_spec, read_data(data), loss, device=device, **setup)
                if launched.rank == 0:
                    _warn_if_draws(run, world)
                return _history(run, _fit(run, launched, device=device, **fit))
        job = {"model": model_or_spec, "data": data if isinstance(data, (str, Path)) else read_data(data),
               "loss": loss, "setup": setup, "fit": fit}
        if start_method(device) == "spawn":
            _check_picklable(job)
        run = _set_up(model_or_spec, read_data(data), loss, device="cpu", **setup)  # checks, and gets the result
        _warn_if_draws(run, world)
        result = spawn(world, _train_worker, job, device)
    except DistributedError as exc:
        raise TrainError(str(exc)) from None
    except WorkerError as exc:  # a user error stays one; a bug in a worker is an internal error here too
        raise (TrainError if exc.user else RuntimeError)(str(exc)) from None
    run.module.load_state_dict(result["state"])
    run.losses[:] = result["losses"]
    run.module.eval()
    return _history(run, result["start"])


def _check_picklable(job: Mapping[str, Any]) -> None:
    import pickle

    for what, value in (("the model", job["model"]), ("the loss", job["loss"])):
        try:
            pickle.dumps(value)
        except Exception as exc:  # whatever pickling raises for this object
            raise TrainError(f"workers > 1 sends {what} to each worker process, but it cannot be pickled ({exc}); "
                             "give a spec path, or define a callable loss at module level") from None


def predict(module: torch.nn.Module, data, batch_size: int = 256, time_steps: int | None = None,
            device: str | None = None) -> dict[str, np.ndarray]:
    """Every output of ``module`` over the inputs in ``data`` (other arrays are ignored), [N, T, ...]."""
    program = module._nspec.program
    arrays = {k: v for k, v in read_data(data).items() if k in {p.name for p in program.inputs}}
    dataset = make_dataset(program, arrays, (), time_steps)
    device = device or module._device()
    chunks: dict[str, list] = {}
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for lo in range(0, dataset.size, batch_size):
            xs, _ = dataset.batch(np.arange(lo, min(lo + batch_size, dataset.size)), device)
            for name, value in module(steps=dataset.steps, **xs).items():
                chunks.setdefault(name, []).append(value.cpu().numpy())
    module.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


__all__ = ["train", "predict", "History", "Loss", "LOSSES", "OPTIMIZERS", "parse_loss", "read_data", "make_dataset",
           "batch_order", "save_checkpoint", "load_checkpoint", "TrainError", "CHECKPOINT_FILES"]
