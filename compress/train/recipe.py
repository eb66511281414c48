"""The training recipe (epochs, optimizer, learning rate) and where tensors run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from compress.config import from_mapping, require
from compress.data.augment import AugmentConfig, NoAugment

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class TrainRecipe:
    """How one training phase runs: the baseline's training or a fine-tune."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    #: Epochs over which the rate ramps up linearly to `lr` before `lr_schedule` runs on
    #: the rest (a transformer trained with AdamW from scratch wants a few); a shorter
    #: training (a smoke run) only ramps.
    warmup_epochs: int = 0
    step_epochs: int = 10
    gamma: float = 0.1
    #: With `lr_schedule: step`: the epochs at which the rate is multiplied by `gamma` (He et
    #: al.'s [80, 120]); None: every `step_epochs` epochs.
    milestones: list[int] | None = None
    label_smoothing: float = 0.0
    #: Network slimming (Liu et al. 2017): L1 penalty on batch-norm scales (gamma),
    #: pushing unimportant channels toward zero so `bn_scale` importance can remove them.
    bn_l1: float = 0.0
    #: Training-batch augmentation: the top-level `augment` group (set by `Plan`).
    augment: AugmentConfig = field(default_factory=NoAugment)
    where: str = field(default="schedule", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        require(
            isinstance(self.epochs, int) and self.epochs >= 0,
            f"{w}.epochs must be >= 0, got {self.epochs}",
        )
        require(self.batch_size >= 1, f"{w}.batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"{w}.lr must be > 0, got {self.lr}")
        require(
            self.optimizer in OPTIMIZERS,
            f"{w}.optimizer '{self.optimizer}' unknown; choose one of: {', '.join(OPTIMIZERS)}",
        )
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"{w}.lr_schedule '{self.lr_schedule}' unknown; "
            f"choose one of: {', '.join(LR_SCHEDULES)}",
        )
        require(
            isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0,
            f"{w}.warmup_epochs must be an integer >= 0, got {self.warmup_epochs}",
        )
        require(0 <= self.momentum < 1, f"{w}.momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"{w}.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.step_epochs >= 1, f"{w}.step_epochs must be >= 1, got {self.step_epochs}")
        require(0 < self.gamma <= 1, f"{w}.gamma must be in (0, 1], got {self.gamma}")
        require(
            self.milestones is None
            or (
                all(m >= 1 for m in self.milestones)
                and list(self.milestones) == sorted(set(self.milestones))
            ),
            f"{w}.milestones must be increasing epochs >= 1, got {self.milestones}",
        )
        require(self.bn_l1 >= 0, f"{w}.bn_l1 must be >= 0, got {self.bn_l1}")
        require(
            0 <= self.label_smoothing < 1,
            f"{w}.label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, where: str) -> Self:
        values = dict(values or {})
        require("epochs" in values, f"{where}.epochs is required")
        require(
            "augment" not in values,
            f"{where}.augment: augmentation is the top-level augment group (augment=shift)",
        )
        return from_mapping(cls, {**values, "where": where}, where)

    def key(self) -> dict[str, Any]:
        """The fields that determine the trained weights (for cache keys); `augment`,
        `milestones` and `warmup_epochs` only when set, so that keys of runs without them
        stay as they were."""
        key = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.compare and f.name != "augment"
        }
        if self.milestones is None:
            del key["milestones"]  # keys of runs from before the option stay
        if not self.warmup_epochs:
            del key["warmup_epochs"]
        if self.augment.enabled:
            key["augment"] = self.augment.key()
        return key


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how tensors run; none of this changes what is being compressed."""

    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    progress: bool = True
    #: In a data-parallel job: BatchNorm normalises with the statistics of the whole batch
    #: (SyncBatchNorm, GPUs only) while training; a model without BatchNorm is unaffected.
    sync_bn: bool = False

    def __post_init__(self) -> None:
        require(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            f"runtime.device must be auto, cpu, cuda[:N] or mps, got '{self.device}'",
        )
        require(
            self.threads is None or self.threads >= 1,
            f"runtime.threads must be >= 1 or null, got {self.threads}",
        )
