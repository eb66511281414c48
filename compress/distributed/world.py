"""Which processes share one job, and how they talk.

A job runs on one process, or data-parallel on several started by `torchrun` (which
exports RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; on
SLURM without submitit, `srun torchrun ...` per node) or as the tasks of one submitit job
(Hydra's SLURM launcher with `tasks_per_node`), whose SLURM variables submitit's own
helper turns into torchrun's. `launched` reads that from the environment without
connecting anything; `join` connects the process group (gloo for CPU tensors, NCCL for
CUDA tensors: `backend`); `current` is the world of the connected group (one process when
none is).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from compress.data import Shard

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a collective waits for the slowest process (rank 0 measuring, saving, or
#: training a teacher the others wait for) before the job fails.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of its job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that measures, saves and logs."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.size)

    def broadcast(self, value: T) -> T:
        """Rank 0's `value`, on every process (any picklable value)."""
        if not self.parallel:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def gather(self, value: T) -> list[T]:
        """Every process's `value`, in rank order, on every process."""
        if not self.parallel:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the processes (a new tensor; `tensor` itself untouched)."""
        if not self.parallel:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()


def launched() -> World:
    """The world this process was started into, from its environment."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        _export_scheduler_tasks()
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
    return World(
        rank=rank,
        size=size,
        local_rank=int(env.get("LOCAL_RANK", rank)),
        local_size=int(env.get("LOCAL_WORLD_SIZE", size)),
    )


def _export_scheduler_tasks() -> None:
    """Inside a submitit job of several tasks (Hydra's SLURM launcher with tasks_per_node,
    or submitit's local stand-in), set torchrun's variables from the scheduler's with
    submitit's own helper: the master is the job's first node, its port drawn from the job
    id, so every task agrees without talking first."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def backend(device: torch.device) -> str:
    """The backend collectives on `device`'s tensors go through."""
    return "nccl" if device.type == "cuda" else "gloo"


def join(world: World | None = None) -> World:
    """Connect this process to the others of its world (once); a single process connects
    nothing. Returns the world."""
    world = world or launched()
    if world.parallel and not dist.is_initialized():
        kinds = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        backends = ",".join(f"{kind}:{backend(torch.device(kind))}" for kind in kinds)
        dist.init_process_group(
            backend=backends, rank=world.rank, world_size=world.size, timeout=TIMEOUT
        )
        log.info("rank %d of %d joined (%s)", world.rank, world.size, backends)
    return world


def current() -> World:
    """The world of the connected process group; one process when none is connected."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return launched()


def leave() -> None:
    """Disconnect the process group, if one is connected (at the end of the job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
