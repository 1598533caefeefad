"""The process group of data-parallel training (``train(..., workers=N)``, ``nspec train --workers N``).

Two ways in.  ``spawn(n, fn, payload, device)`` starts ``n`` local processes with
``torch.multiprocessing.spawn``, each joining a group at a free port on localhost, and returns what
rank 0's ``fn(group, payload)`` returned; a worker that raises ends the others (``spawn`` kills
them) and its message comes back as a ``WorkerError`` (the first error in time, not a peer's lost
connection to it).  Under ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment, on one
machine or several) ``torchrun_group`` reads this process's place and ``joined`` joins that group
(``env://``) instead.  Either way gloo runs the CPU collectives and NCCL the CUDA ones, one GPU per
process, picked by its local rank.  Every group is made with ``TIMEOUT``, so a peer that never
arrives or never answers fails the run instead of hanging it.

A ``Group`` is what the training loop sees: its rank, the world size, and the three collectives
it needs (a sum, a broadcast from rank 0, and the share of a global batch this rank computes).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist

TIMEOUT = timedelta(minutes=5)  # longest wait for a peer: the group's start and every collective
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(ValueError):
    """A launch that cannot work: a bad worker count, an inconsistent torchrun environment, no GPU per rank."""


class WorkerError(Exception):
    """A worker process raised: ``rank`` and its message (``user``: a user error, not a bug in nspec)."""

    def __init__(self, rank: int, kind: str, message: str, user: bool):
        super().__init__(f"worker {rank} failed: {message}" if user else f"worker {rank} raised {kind}: {message}")
        self.rank, self.kind, self.user = rank, kind, user


@dataclass(frozen=True, slots=True)
class Group:
    """This process's place among ``world`` training processes (rank 0 writes checkpoints and prints)."""

    rank: int
    world: int
    local_rank: int

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous chunk of a global batch: ``np.array_split`` into ``world`` chunks, so
        the first ``len(rows) % world`` ranks hold one sample more and a short batch leaves the last
        ranks none."""
        return np.array_split(rows, self.world)[self.rank]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the ranks (a new tensor; ``value`` is left as it is)."""
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small things such as an optimiser state)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def check_workers(workers: Any) -> None:
    """A worker count is a positive integer (not a bool, not a float that happens to be whole)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise DistributedError(f"workers must be a positive integer, got {workers!r}")


def torchrun_group(environ: Mapping[str, str] = os.environ) -> Group | None:
    """This process's ``Group`` when a launcher such as ``torchrun`` set the group's variables, else None.

    Any of ``TORCHRUN_ENV`` present means a launcher started this process, so all of them must be
    there and agree (``0 <= RANK < WORLD_SIZE``, ``0 <= LOCAL_RANK``)."""
    present = [k for k in TORCHRUN_ENV if k in environ]
    if not present:
        return None
    missing = [k for k in TORCHRUN_ENV if k not in environ]
    if missing:
        raise DistributedError(f"the environment sets {', '.join(present)} but not {', '.join(missing)}: a launcher "
                               "such as torchrun sets all of them; unset them to train in this one process")
    try:
        rank, world, local = (int(environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        int(environ["MASTER_PORT"])
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE, LOCAL_RANK and MASTER_PORT must be integers, got "
                               + ", ".join(f"{k}={environ[k]!r}" for k in TORCHRUN_ENV if k != "MASTER_ADDR")) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, "
                               f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0)")
    return Group(rank, world, local)


def device_of(device: str, group: Group) -> str:
    """The device of ``group``'s rank: "cpu", or one CUDA device per process by its local rank."""
    if not str(device).startswith("cuda"):
        return "cpu"
    if device != "cuda":
        raise DistributedError(f"with several workers give --device cuda, not {device!r}: each process takes the GPU "
                               "of its local rank")
    if not torch.cuda.is_available() or torch.cuda.device_count() <= group.local_rank:
        raise DistributedError(f"worker {group.rank} needs GPU {group.local_rank} (one per process on a machine), but "
                               f"torch sees {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{group.local_rank}"


def _start(group: Group, device: str, init_method: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method=init_method,
                            rank=group.rank, world_size=group.world, timeout=TIMEOUT)


@contextlib.contextmanager
def joined(group: Group, device: str) -> Iterator[None]:
    """Inside: this process is in the launcher's group (``MASTER_ADDR:MASTER_PORT``).  A group the
    caller made already is used as it is and left open; one made here is closed on the way out."""
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (group.rank, group.world):
            raise DistributedError(f"the open process group has rank {dist.get_rank()} of {dist.get_world_size()}, "
                                   f"but the environment says RANK={group.rank}, WORLD_SIZE={group.world}")
        if device.startswith("cuda"):  # NCCL's collectives run on the current device
            torch.cuda.set_device(torch.device(device))
        yield
        return
    _start(group, device, "env://")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, payload: Any, device: str, folder: str) -> None:
    """One spawned process: join the group, run ``fn``, keep rank 0's result (or this rank's error) in ``folder``."""
    group = Group(rank, world, rank)
    try:
        if device == "cpu":  # the workers share the machine's cores instead of each taking all of them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        device = device_of(device, group)
        _start(group, device, f"tcp://127.0.0.1:{port}")
        try:
            result = fn(group, device, payload)
        finally:
            dist.destroy_process_group()
        if rank == 0:
            torch.save(result, Path(folder) / "result.pt")
    except BaseException as exc:
        record = {"kind": type(exc).__name__, "message": str(exc), "user": isinstance(exc, ValueError),
                  "time": time.time()}
        (Path(folder) / f"error{rank}.json").write_text(json.dumps(record), encoding="utf-8")
        raise


def start_method(device: str) -> str:
    """How local workers start: forked on Linux CPUs (they inherit the imported modules and the
    data: no second start-up of torch and nspec, measured at 10 s a process on a busy machine),
    spawned afresh elsewhere, and always for CUDA, which cannot be used in a forked child."""
    return "fork" if device == "cpu" and sys.platform == "linux" else "spawn"


def spawn(n: int, fn: Callable, payload: Any, device: str) -> Any:
    """Run ``fn(group, device, payload)`` in ``n`` new local processes; returns rank 0's result.

    Under the "spawn" start method ``fn`` and ``payload`` are pickled to the processes (``fn`` by
    name: a module-level function).  The first worker to fail ends the run (the others are
    killed): its error is raised here as a ``WorkerError``."""
    import torch.multiprocessing as mp

    check_workers(n)
    if device != "cpu":
        device_of(device, Group(n - 1, n, n - 1))  # every rank's GPU exists, checked before any process starts
    with tempfile.TemporaryDirectory(prefix="nspec-workers-") as folder:
        try:
            mp.start_processes(_worker, args=(n, _free_port(), fn, payload, device, folder), nprocs=n, join=True,
                               start_method=start_method(device))
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            # the first error is the cause: the others are peers losing their connection to it
            records = [(json.loads(path.read_text(encoding="utf-8")), int(path.stem[len("error"):]))
                       for path in Path(folder).glob("error*.json")]
            if not records:  # killed from outside (a signal, out of memory): nothing was recorded
                raise WorkerError(exc.error_index, "exit", str(exc), user=False) from None
            info, rank = min(records, key=lambda record: record[0]["time"])
            raise WorkerError(rank, info["kind"], info["message"], info["user"]) from None
        return torch.load(Path(folder) / "result.pt", weights_only=False)


__all__ = ["Group", "DistributedError", "WorkerError", "TIMEOUT", "TORCHRUN_ENV", "check_workers", "torchrun_group",
           "device_of", "joined", "spawn", "start_method"]
