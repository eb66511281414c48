"""A model trained data-parallel: DistributedDataParallel around it for one call of `fit`.

DDP averages the gradients of the model's parameters over the processes during backward;
parameters a training objective adds beside the model's (distillation's hint adapters)
are averaged here after it. Channel removal replaces parameters mid-training: the wrapper
is then built again over the new ones (DDP checks their shapes agree on every process).
With `runtime.sync_bn`, BatchNorm layers normalise with the statistics of the whole batch
(SyncBatchNorm) while the model trains, and are BatchNorm again after: pruning, fusing
and saving see the layers they know.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from compress.distributed.alike import adopt_main_buffers, check_alike
from compress.distributed.world import World

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batch_norms(model: nn.Module) -> list[str]:
    """Paths of `model`'s BatchNorm layers (those SyncBatchNorm can stand in for)."""
    return [path for path, m in model.named_modules() if path and type(m) in _BATCH_NORMS]


class Replicas:
    """`model` on every process of `world`; `step_model` is what the training step calls."""

    def __init__(
        self, model: nn.Module, world: World, sync_bn: bool, extra: Iterable[nn.Parameter] = ()
    ) -> None:
        self.model, self.world, self.extra = model, world, list(extra)
        self._originals = to_sync_batch_norm(model) if sync_bn else {}
        self.step_model = self.wrap()

    def wrap(self) -> nn.Module:
        """DDP around the model's current parameters (again after they were replaced)."""
        where = next(self.model.parameters()).device
        ids = [where] if where.type == "cuda" else None
        self.step_model = DistributedDataParallel(self.model, device_ids=ids)
        return self.step_model

    @torch.no_grad()
    def average_extra_gradients(self) -> None:
        """The objective's own parameters' gradients averaged, as DDP did the model's."""
        for parameter in self.extra:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad.div_(self.world.size)

    def finish(self, label: str) -> dict[str, int]:
        """Back to plain BatchNorm, rank 0's running statistics on every process, and the
        weights checked alike; how many tensors were compared."""
        from_sync_batch_norm(self.model, self._originals)
        adopt_main_buffers(self.model, self.world)
        state = {"model": self.model.state_dict(), "objective": dict(enumerate(self.extra))}
        return check_alike(self.world, state, f"{label}: after training")


def to_sync_batch_norm(model: nn.Module) -> dict[str, type[_BatchNorm]]:
    """Swap each BatchNorm for a SyncBatchNorm holding the very same parameters and
    statistics (an optimizer built before still steps them); the swapped layers' paths and
    types, for `from_sync_batch_norm`."""
    swapped = {}
    for path in batch_norms(model):
        module = model.get_submodule(path)
        sync = nn.SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        _share_state(module, sync)
        _replace(model, path, sync)
        swapped[path] = type(module)
    return swapped


def from_sync_batch_norm(model: nn.Module, originals: dict[str, type[_BatchNorm]]) -> None:
    """The layers `to_sync_batch_norm` swapped, plain BatchNorm again, holding what the
    SyncBatchNorm layers hold now (parameters replaced by channel removal included)."""
    for path, kind in originals.items():
        sync = model.get_submodule(path)
        plain = kind(
            sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats
        )
        _share_state(sync, plain)
        _replace(model, path, plain)


def _share_state(source: nn.Module, target: nn.Module) -> None:
    """`target` holds `source`'s very parameters and buffers (the optimizer's stay valid)."""
    target._parameters = dict(source._parameters)
    target._buffers = dict(source._buffers)
    target.train(source.training)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)
