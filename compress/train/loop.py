"""Training and evaluation: one loop over the batches of a split, in memory or streamed."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import torch
from torch import nn

from compress.data import DataBundle, Split
from compress.distributed import Replicas, World, current
from compress.errors import TrainingDivergedError
from compress.models.eval_mode import eval_mode, model_device
from compress.train.callbacks import EpochStats, active
from compress.train.recipe import RuntimeConfig, TrainRecipe

log = logging.getLogger(__name__)

#: How often (in steps) the running loss is read back: a device sync, a NaN check and
#: a progress-bar update.
CHECK_EVERY = 25


class Objective(Protocol):
    """A training loss other than cross-entropy (e.g. distillation from a teacher)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of `model` on the batch `x, y` = rows `idx` of the train split."""

    def parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the objective trains beside the model's (e.g. hint adapters)."""


def make_optimizer(
    model: nn.Module, recipe: TrainRecipe, extra: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad] + list(extra)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0,
            weight_decay=recipe.weight_decay,
        )
    kind = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(recipe: TrainRecipe, epoch: int) -> float:
    """Multiplier of the base learning rate during `epoch` (0-based): a linear warm-up
    over `warmup_epochs`, then the schedule (cosine over the epochs after the warm-up;
    step milestones stay absolute epochs)."""
    warmup = recipe.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if recipe.lr_schedule == "cosine":
        done = (epoch - warmup) / max(recipe.epochs - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * done))
    if recipe.lr_schedule == "step" and recipe.milestones is not None:
        return recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.lr_schedule == "step":
        return recipe.gamma ** (epoch // recipe.step_epochs)
    return 1.0


def autocast(runtime: RuntimeConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if runtime.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_inputs(x: torch.Tensor, runtime: RuntimeConfig) -> torch.Tensor:
    """`x` in channels-last layout when asked. One channel is already laid out alike, but
    torch only picks channels-last kernels from the strides, so those are set too (free)."""
    if not (runtime.channels_last and x.dim() == 4):
        return x
    if x.shape[1] == 1 and x.is_contiguous():
        return x.as_strided(x.shape, (x.stride(0), 1, x.shape[3], 1))
    return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every row of `x`, in eval mode; each module's mode is restored after."""
    where = model_device(model)
    with eval_mode(model):
        parts = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]
        return torch.cat([model(part.to(where)).to(x.device) for part in parts])


@torch.inference_mode()
def accuracy(
    model: nn.Module, split: Split, batch_size: int = 1024, world: World | None = None
) -> float:
    """Top-1 accuracy of `model` on `split`, in [0, 1]; each module's mode is restored.
    With a data-parallel `world`, each process counts its shard of every batch."""
    if len(split) == 0:
        return float("nan")
    world = world or World()
    where = model_device(model)
    counts = torch.zeros(2, dtype=torch.long, device=split.device)  # correct, seen
    with eval_mode(model):
        for x, y, _ in split.loader(batch_size, shard=world.shard):
            counts[0] += model(x.to(where)).argmax(1).to(y.device).eq(y).sum()
            counts[1] += len(y)
    correct, seen = world.sum(counts).tolist()
    return correct / seen


def fit(
    model: nn.Module,
    data: DataBundle,
    recipe: TrainRecipe,
    runtime: RuntimeConfig,
    *,
    seed: int,
    label: str,
    after_step: Callable[[], bool | None] | None = None,
    stop_after: int | None = None,
    objective: Objective | None = None,
) -> list[EpochStats]:
    """Train `model` in place on `data.train` with `recipe`; return per-epoch statistics.

    Seeded from `seed` alone (shuffling and dropout), so the same call gives the same
    weights whatever ran before it in the process. `after_step` runs after every
    optimizer step; when it returns True the parameters were replaced (channels
    removed) and the optimizer is rebuilt over the new ones. `stop_after` ends training
    after that many epochs of the recipe (its learning-rate schedule unchanged).
    `objective` replaces cross-entropy (its own parameters are trained too). The recipe's
    `augment` transforms each training batch (seeded from `seed` too). Progress is
    reported to the callbacks active here (`compress.train.callbacks.observing`).

    In a data-parallel job (`compress.distributed`) every process calls `fit` alike: each
    trains on its shard of every batch of `recipe.batch_size` (the batch of the whole job),
    DDP averages the gradients, and the statistics are the whole job's.
    """
    torch.manual_seed(seed)
    world = current()
    device = data.train.device
    augment = recipe.augment if recipe.augment.enabled else None
    if augment is not None:
        augment.check((len(data.train), *data.train.image_shape))
    loader = data.train.loader(recipe.batch_size, seed=seed, augment=augment, shard=world.shard)
    extra = list(objective.parameters()) if objective is not None else []
    replicas = Replicas(model, world, runtime.sync_bn, extra) if world.parallel else None
    step_model = _step_model(replicas.step_model if replicas else model, runtime)
    optimizer = make_optimizer(model, recipe, extra)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    history: list[EpochStats] = []
    epochs = min(recipe.epochs, stop_after or recipe.epochs)
    callbacks, phase = active()
    for callback in callbacks:
        callback.fit_started(phase, label, epochs, len(loader))
    model.train()
    for epoch in range(epochs):
        started = time.perf_counter()
        lr = recipe.lr * lr_factor(recipe, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # the loss summed over rows, the rows classified right, the rows seen
        totals = torch.zeros(3, device=device)
        for step, (x, y, idx) in enumerate(loader, start=1):
            x = prepare_inputs(x, runtime)
            with autocast(runtime, device):
                if objective is None:
                    logits = step_model(x)
                    loss = loss_fn(logits, y)
                else:
                    loss, logits = objective(step_model, x, y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if replicas is not None:
                replicas.average_extra_gradients()
            if recipe.bn_l1:
                add_bn_l1_subgradient(model, recipe.bn_l1)
            optimizer.step()
            if after_step is not None and after_step():
                optimizer = make_optimizer(model, recipe, extra)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if replicas is not None:  # DDP over the new parameters
                    step_model = _step_model(replicas.wrap(), runtime)
            totals[0] += loss.detach() * len(idx)
            totals[1] += logits.detach().argmax(1).eq(y).sum()
            totals[2] += len(idx)
            if step % CHECK_EVERY == 0:
                running = _finite_loss(world.sum(totals), label, epoch)
                for callback in callbacks:
                    callback.step_done(step, running)
        epoch_totals = world.sum(totals)
        mean_loss = _finite_loss(epoch_totals, label, epoch)
        stats = EpochStats(
            epoch=epoch,
            loss=mean_loss,
            train_acc=epoch_totals[1].item() / max(epoch_totals[2].item(), 1),
            val_acc=accuracy(model, data.val, world=world),
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        history.append(stats)
        for callback in callbacks:
            callback.epoch_done(stats)
        log.debug("%s epoch %d: %s", label, epoch + 1, stats)
    if replicas is not None:
        replicas.finish(label)
    for callback in callbacks:
        callback.fit_done()
    return history


def _step_model(model: nn.Module, runtime: RuntimeConfig) -> nn.Module:
    return torch.compile(model) if runtime.compile else model


@torch.no_grad()
def add_bn_l1_subgradient(model: nn.Module, strength: float) -> None:
    """Add the subgradient of `strength * |gamma|` to every batch-norm scale's gradient."""
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        scale = module.weight
        if scale is not None and scale.grad is not None:
            scale.grad.add_(torch.sign(scale), alpha=strength)


def _finite_loss(totals: torch.Tensor, label: str, epoch: int) -> float:
    """The mean loss of the rows `totals` counts (loss sum, correct, rows), if finite."""
    loss_sum, _, count = totals.tolist()
    value = loss_sum / max(count, 1)
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{label}: loss became {value} in epoch {epoch + 1}; "
            "lower the learning rate or check the data"
        )
    return value
