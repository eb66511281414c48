"""Keeping the processes of a data-parallel job alike, and checking that they are.

Every process computes masks, schedules and stage updates itself, from weights that DDP
keeps identical: deterministic, so alike, and checked rather than assumed. `check_alike`
compares a digest of every tensor across processes and fails the job naming what differs.
BatchNorm's running statistics are each process's own between steps (DDP hands rank 0's
to the others at every forward): `adopt_main_buffers` makes them rank 0's for good.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from compress.distributed.world import World
from compress.errors import JobFailedError


class RanksDisagree(JobFailedError):
    """Processes of one data-parallel job hold different tensors where they must agree."""


def digest(value: Any) -> str:
    """A hash of `value`'s exact content (a tensor's dtype, shape and bytes)."""
    hasher = hashlib.sha256()
    plain = type(value) in (torch.Tensor, nn.Parameter)
    if plain and value.layout == torch.strided and not value.is_quantized:
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    else:  # quantized, sparse or subclass (torchao) tensors, packed int8 weights: as saved
        buffer = io.BytesIO()
        torch.save(value.cpu() if isinstance(value, torch.Tensor) else value, buffer)
        hasher.update(buffer.getvalue())
    return hasher.hexdigest()


def check_alike(world: World, groups: Mapping[str, Mapping[str, Any]], what: str) -> dict[str, int]:
    """Fail unless every process holds the same tensors in `groups` (a name, e.g. `model`
    or `masks`, to that group's named tensors); how many tensors of each group agree."""
    counts = {group: len(values) for group, values in groups.items()}
    if not world.parallel:
        return counts
    mine = {
        f"{group}:{name}": digest(value)
        for group, values in groups.items()
        for name, value in values.items()
    }
    everyone = world.gather(mine)
    reference = everyone[0]
    names = set().union(*everyone)
    differ = sorted(name for name in names if len({held.get(name) for held in everyone}) > 1)
    if differ:
        ranks = [rank for rank, held in enumerate(everyone) if held != reference]
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise RanksDisagree(
            f"{what}: rank(s) {', '.join(map(str, ranks))} hold other values than rank 0 "
            f"for {shown}; the processes of a data-parallel job must stay identical"
        )
    return counts


@torch.no_grad()
def adopt_main_buffers(model: nn.Module, world: World) -> None:
    """Every buffer of `model` (running statistics) set to rank 0's."""
    if not world.parallel:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
