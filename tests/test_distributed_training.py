"""Data-parallel training (``train(..., workers=N)``, ``nspec train --workers N``, torchrun).

The oracle is one process: N workers, each computing a contiguous share of every global batch,
must reach the weights and the loss curve one process reaches with the whole batch, up to float
rounding (measured: at most 2e-7 of a tensor's largest entry after 5 Adam steps).  Shares of
different sizes, a rank left without a sample in a short last batch, a summed loss, checkpoints
written by rank 0 alone, resumption, torchrun's launch and the user errors are checked too.
The workers are local CPU processes over gloo; NCCL on GPUs cannot run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nspec.cli import main
from nspec.runtime.distributed import Group
from nspec.runtime.model import load
from nspec.runtime.train import CHECKPOINT_FILES, TrainError, train

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = ROOT / "specs" / "train" / "spiking_classifier.nspec"
SETTINGS = {"loss": "cross_entropy:logits:label", "lr": 0.02, "seed": 5, "progress": False}
TOLERANCE = 1e-6  # relative to each tensor's largest entry

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small_task(n: int, steps: int = 8, n_in: int = 20, seed: int = 3):
    """Poisson spike trains of three classes (rates 0.1, or 0.25 on a class's half of the inputs)."""
    rng = np.random.default_rng(seed)
    rates = 0.1 + 0.15 * (rng.random((3, n_in)) < 0.5)
    labels = rng.integers(0, 3, size=n)
    x = (rng.random((n, steps, n_in)) < rates[labels][:, None, :]).astype(np.float32)
    return {"x": x, "label": labels}


def assert_same_weights(one: dict, many: dict) -> float:
    """The largest difference relative to the tensor's scale; fails above ``TOLERANCE``."""
    assert one.keys() == many.keys()
    worst = max(float((one[k] - many[k]).abs().max() / one[k].abs().max()) for k in one)
    assert worst <= TOLERANCE, worst
    return worst


class SummedSquares:
    """A callable loss that sums (not averages) over the batch: each worker's share is weighted by 1."""

    reduction = "sum"

    def __call__(self, outputs, batch):
        logits = outputs["logits"][:, -1]
        onehot = torch.nn.functional.one_hot(batch["label"].long(), logits.shape[-1]).to(logits.dtype)
        return ((logits - onehot) ** 2).sum()


class FailsOnRankOne:
    """A mean loss that raises in worker 1 only, at its second step."""

    reduction = "mean"

    def __init__(self):
        self.calls = 0

    def __call__(self, outputs, batch):
        self.calls += 1
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1 and self.calls > 2:
            raise ValueError("rank one cannot go on")
        return torch.nn.functional.cross_entropy(outputs["logits"][:, -1], batch["label"].long())


# ---------------------------------------------------------------- the same result as one process
def test_two_workers_with_half_the_batch_each_equal_one_worker():
    data = small_task(48)
    one = train(CLASSIFIER, data, steps=5, batch_size=16, **SETTINGS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random draws in this model: nothing to warn about
        two = train(CLASSIFIER, data, steps=5, batch_size=16, workers=2, **SETTINGS)
    assert two.step == 5 and two.start == 0
    assert_same_weights(one.module.state_dict(), two.module.state_dict())
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-6)  # the global batch's loss, all-reduced
    assert not np.allclose(one.losses[0], one.losses[-1])  # the weights did move


def test_a_module_is_trained_in_place_and_a_model_gets_its_weights():
    data, settings = small_task(32), {**SETTINGS, "steps": 3, "batch_size": 16}
    one, two = load(CLASSIFIER).to_torch(), load(CLASSIFIER).to_torch()
    train(one, data, **settings)
    assert train(two, data, workers=2, **settings).module is two
    assert_same_weights(one.state_dict(), two.state_dict())
    model = load(CLASSIFIER)
    history = train(model, data, workers=2, **settings)
    for name, value in history.module.param_values().items():
        np.testing.assert_array_equal(model.params[name], value.detach().numpy())


@pytest.mark.parametrize("samples, batch, workers, loss", [
    (10, 4, 2, SETTINGS["loss"]),   # batches 4, 4, 2: the last one is a sample per worker
    (10, 4, 3, SETTINGS["loss"]),   # shares 2+1+1, and 1+1+0 in the last batch: worker 2 has none
    (10, 4, 3, SummedSquares()),    # a summed loss, with the same empty share
])
def test_an_uneven_last_batch_and_an_empty_share_keep_the_full_batch_gradient(samples, batch, workers, loss):
    data = small_task(samples)
    # SGD: a wrongly weighted share shows in the step (Adam's normalisation would hide much of it)
    settings = {**SETTINGS, "loss": loss, "optimizer": "sgd", "lr": 0.01}
    one = train(CLASSIFIER, data, steps=5, batch_size=batch, **settings)
    many = train(CLASSIFIER, data, steps=5, batch_size=batch, workers=workers, **settings)
    assert_same_weights(one.module.state_dict(), many.module.state_dict())
    np.testing.assert_allclose(many.losses, one.losses, rtol=1e-6)


def test_each_rank_takes_a_contiguous_chunk_of_the_global_batch():
    rows = np.array([7, 3, 9, 0, 5, 1, 8, 2, 6, 4])
    assert [Group(r, 3, r).share(rows).tolist() for r in range(3)] == [[7, 3, 9, 0], [5, 1, 8], [2, 6, 4]]
    assert [Group(r, 3, r).share(rows[:2]).tolist() for r in range(3)] == [[7], [3], []]


def test_a_model_with_noise_warns_that_workers_change_its_draws(tmp_path):
    noisy = tmp_path / "noisy.nspec"
    text = CLASSIFIER.read_text().replace("next v = beta * v + x @ W", "next v = beta * v + x @ W + 0.01 * rand()")
    noisy.write_text(text.replace("module train.spiking_classifier", "module train.noisy"))
    with pytest.warns(UserWarning, match="draws random numbers per sample .* with 2 workers they differ"):
        train(noisy, small_task(8), steps=1, batch_size=4, workers=2, **SETTINGS)


# ---------------------------------------------------------------- the command line: checkpoints and resumption
def cli_args(tmp_path: Path, checkpoint: Path, *extra: str, quiet: bool = True) -> list[str]:
    return ["train", str(CLASSIFIER), "--data", str(tmp_path / "train.npz"), "--loss", SETTINGS["loss"],
            "--lr", "0.02", "--batch-size", "16", "--seed", "5", "--checkpoint", str(checkpoint),
            *(["-q"] if quiet else []), *extra]


def test_cli_workers_checkpoint_from_rank_zero_and_resume_exactly(tmp_path, monkeypatch):
    import nspec.runtime.train as training

    writes, save = tmp_path / "writes.txt", training.save_checkpoint

    def logged_save(directory, module, optimizer, info):  # the forked workers inherit this
        with open(writes, "a", encoding="utf-8") as log:
            log.write(f"rank {torch.distributed.get_rank()} step {info['step']}\n")
        save(directory, module, optimizer, info)

    np.savez(tmp_path / "train.npz", **small_task(48))
    assert main(cli_args(tmp_path, tmp_path / "one", "--epochs", "3")) == 0
    monkeypatch.setattr(training, "save_checkpoint", logged_save)
    assert main(cli_args(tmp_path, tmp_path / "two", "--epochs", "2", "--workers", "2")) == 0
    # one complete set of files, written by rank 0 alone after each epoch
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(CHECKPOINT_FILES)
    assert writes.read_text().splitlines() == ["rank 0 step 3", "rank 0 step 6"]
    assert json.loads((tmp_path / "two" / "trainer.json").read_text())["step"] == 6
    assert main(cli_args(tmp_path, tmp_path / "two", "--epochs", "3", "--workers", "2", "--resume")) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(CHECKPOINT_FILES)
    assert writes.read_text().splitlines()[2:] == ["rank 0 step 9"]
    from safetensors.torch import load_file

    straight, resumed = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "two"))
    assert_same_weights(straight, resumed)
    losses = [json.loads((tmp_path / d / "trainer.json").read_text())["losses"] for d in ("one", "two")]
    assert len(losses[1]) == 9
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_resuming_with_workers_equals_workers_straight_through(tmp_path):
    """Every rank continues from rank 0's checkpoint: optimiser state and step included."""
    data = small_task(48)
    straight = train(CLASSIFIER, data, epochs=2, batch_size=16, workers=2, **SETTINGS)
    train(CLASSIFIER, data, steps=4, batch_size=16, workers=2, checkpoint_dir=tmp_path, **SETTINGS)  # mid-epoch
    resumed = train(CLASSIFIER, data, epochs=2, batch_size=16, workers=2, checkpoint_dir=tmp_path, resume=True,
                    **SETTINGS)
    assert resumed.start == 4 and resumed.losses == straight.losses
    for key, value in straight.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[key], value), key


# ---------------------------------------------------------------- torchrun
def test_torchrun_launch_joins_its_group_and_equals_one_worker(tmp_path):
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 -m nspec train ...``, offline."""
    np.savez(tmp_path / "train.npz", **small_task(48))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "nspec",
               *cli_args(tmp_path, tmp_path / "run", "--epochs", "2", quiet=False)]  # rank 0 alone reports
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained SpikingClassifier: 6 steps") == 1, done.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(CHECKPOINT_FILES)
    assert main(cli_args(tmp_path, tmp_path / "one", "--epochs", "2")) == 0
    from safetensors.torch import load_file

    one, run = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("one", "run"))
    assert_same_weights(one, run)


def test_a_group_the_caller_opened_is_joined_and_left_open(monkeypatch):
    """A script that opened its process group itself (one process here) trains in it."""
    import socket

    data = small_task(32)
    one = train(CLASSIFIER, data, steps=3, batch_size=16, **SETTINGS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        joined = train(CLASSIFIER, data, steps=3, batch_size=16, **SETTINGS)
        assert torch.distributed.is_initialized()
    finally:
        torch.distributed.destroy_process_group()
    assert_same_weights(one.module.state_dict(), joined.module.state_dict())
    assert joined.losses == pytest.approx(one.losses, rel=1e-6)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "workers must be a positive integer, got 0"),
    ({"workers": 2.5}, "workers must be a positive integer"),
    ({"workers": 5, "batch_size": 4}, "5 workers need a batch of at least 5 samples"),
    ({"workers": 2, "loss": lambda out, batch: out["logits"].sum()}, "reduction = 'mean'"),
])
def test_bad_worker_settings_are_user_errors(kwargs, message):
    with pytest.raises(TrainError, match=message):
        train(CLASSIFIER, small_task(8), steps=1, **{**SETTINGS, "batch_size": 4, **kwargs})


@pytest.mark.parametrize("env, workers, message", [
    ({"RANK": "0"}, None, "sets RANK but not WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}, None,
     r"RANK=2, WORLD_SIZE=2.*0 <= RANK < WORLD_SIZE"),
    ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}, None,
     "must be integers"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}, 3,
     "workers=3, but the launcher .* WORLD_SIZE=2"),
])
def test_an_inconsistent_launcher_environment_is_a_user_error(monkeypatch, env, workers, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrainError, match=message):
        train(CLASSIFIER, small_task(8), steps=1, batch_size=4, workers=workers, **SETTINGS)


def test_spawned_workers_need_a_picklable_loss(monkeypatch):
    """Under the "spawn" start method (CUDA's) the job is pickled: a lambda is refused before any start."""
    import nspec.runtime.distributed as distributed

    monkeypatch.setattr(distributed, "start_method", lambda device: "spawn")
    loss = lambda outputs, batch: outputs["logits"].mean()  # noqa: E731
    loss.reduction = "mean"
    with pytest.raises(TrainError, match="sends the loss to each worker process, but it cannot be pickled"):
        train(CLASSIFIER, small_task(8), steps=1, batch_size=4, workers=2, **{**SETTINGS, "loss": loss})


def test_a_failing_worker_fails_the_run_with_its_message():
    with pytest.raises(TrainError, match="worker 1 failed: rank one cannot go on"):
        train(CLASSIFIER, small_task(16), steps=3, batch_size=4, workers=2, **{**SETTINGS, "loss": FailsOnRankOne()})


def test_cli_worker_errors_exit_1_with_the_message(tmp_path, capsys):
    data = small_task(16)
    data["label"] = np.repeat(data["label"][:, None], 3, axis=1)  # a target shape the loss finds in the workers
    np.savez(tmp_path / "train.npz", **data)
    assert main(cli_args(tmp_path, tmp_path / "ck", "--workers", "2", "--epochs", "1")) == 1
    err = capsys.readouterr().err
    assert re.search(r"worker [01] failed: loss cross_entropy:logits:label: target 'label' has shape \[1, 3\]", err)
    assert "Traceback" not in err
    assert not (tmp_path / "ck").exists()  # nothing written
    assert main(cli_args(tmp_path, tmp_path / "ck", "--workers", "0")) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(cli_args(tmp_path, tmp_path / "ck", "--workers", "17")) == 1
    assert "17 workers need a batch of at least 17 samples" in capsys.readouterr().err


def test_cli_inconsistent_launcher_environment_exits_1(tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "train.npz", **small_task(16))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(cli_args(tmp_path, tmp_path / "ck")) == 1
    err = capsys.readouterr().err
    assert "sets WORLD_SIZE but not RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT" in err and "Traceback" not in err
