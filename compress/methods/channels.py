"""Structured pruning: `method=prune_channels` removes whole conv filters and linear neurons.

Unlike the masks of `method=prune`, the removed channels are physically cut out of the
tensors (with torch-pruning), so the saved model is smaller and runs fewer MACs on any
kernel. torch-pruning's dependency graph finds which layers must lose the same channels
(a conv and its batch norm, the next layer's inputs, the layers joined by a residual
add, a depthwise conv and its producer); such a coupled group is pruned as one unit.

Importance criteria: `l1` / `l2` (group magnitude of the weights), `taylor` (|w * dL/dw|
from a few training batches, taken before every pruning step), `bn_scale` (|gamma| of
the batch norms: network slimming; train with `schedule.train.bn_l1 > 0` so that the L1
penalty drives unneeded gammas to zero first) and `random` (the control).

Attention heads: `heads` removes that share of every attention module's heads, whole,
and `head_dims` that share of each head's dims (compress.methods.heads); without them the
attention projections keep their heads and `amount` cuts MLP units and conv/linear channels.
`method=prune_heads` is the preset for transformers (the residual width left whole).

The layer producing the class logits is never pruned: it has num_classes outputs.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods.base import MethodConfig, MethodContext, Stage, StageBase
from compress.methods.channel_layers import (
    classifier,
    importance,
    out_channels,
    taylor_gradients,
    untraceable,
    write_table,
)
from compress.methods.heads import HeadPlan
from compress.methods.masks import PRUNABLE_TYPES, matching
from compress.models.eval_mode import eval_mode

log = logging.getLogger(__name__)

IMPORTANCES = ("l1", "l2", "taylor", "bn_scale", "random")
SCOPES = ("uniform", "global")

#: torch-pruning counts steps up to `iterative_steps`; progress, not a step count,
#: decides our ratios, so the bound only has to be out of reach.
_UNBOUNDED_STEPS = 2**31
_NUDGE = 1e-9


@dataclass(frozen=True)
class ChannelPruning(MethodConfig):
    """Remove the `amount` share of output channels of every prunable conv/linear layer.

    `scope: global` ranks all channels together instead, so `amount` is the share of
    all channels and layers lose different shares. `layers` gives some layers an amount
    of their own (glob patterns on module paths); `ignore` leaves layers whole (and the
    layers coupled to them). `round_to` keeps channel counts multiples of that number.
    """

    name = "prune_channels"
    structured = True
    amount: float = 0.5
    importance: str = "l1"
    scope: str = "uniform"
    layers: dict[str, float] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    round_to: int | None = None
    heads: float = 0.0
    head_dims: float = 0.0
    taylor_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        require(0 <= self.amount < 1, f"method.amount must be in [0, 1), got {self.amount}")
        require(
            self.importance in IMPORTANCES,
            f"method.importance '{self.importance}' unknown; "
            f"choose one of: {', '.join(IMPORTANCES)}",
        )
        require(
            self.scope in SCOPES,
            f"method.scope '{self.scope}' unknown; choose one of: {', '.join(SCOPES)}",
        )
        for pattern, amount in self.layers.items():
            require(0 <= amount < 1, f"method.layers['{pattern}'] must be in [0, 1), got {amount}")
        for option in ("heads", "head_dims"):
            share = getattr(self, option)
            require(0 <= share < 1, f"method.{option} must be in [0, 1), got {share}")
        require(
            self.round_to is None or self.round_to >= 1,
            f"method.round_to must be >= 1 or null, got {self.round_to}",
        )
        require(
            self.taylor_batches >= 1,
            f"method.taylor_batches must be >= 1, got {self.taylor_batches}",
        )

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return prune_channels(model, self, context)


class _Ramp:
    """torch-pruning's per-step ratio list, read as `target x the stage's progress`.

    The pruner records every scope's channel count at its first step and removes
    `now - int(initial * (1 - ratio))` channels at each step, so a ratio that grows with
    progress always means a share of the ORIGINAL channels, whatever was removed before.
    """

    def __init__(self, target: float, stage: ChannelStage) -> None:
        self.target = target
        self.stage = stage

    def __getitem__(self, step: int) -> float:
        # The pruner keeps int(initial * (1 - ratio)) channels; the nudge stops float error
        # from flooring an exact count one below (50 * (1 - 0.8) = 9.999999999999998).
        return max(self.target * self.stage.progress - _NUDGE, 0.0)


class ChannelStage(StageBase):
    """Removes channels at each `update`; the model's parameters are replaced each time."""

    def __init__(self, model: nn.Module, config: ChannelPruning, context: MethodContext) -> None:
        self.model = model
        self.config = config
        self.context = context
        self.progress = 0.0
        device = next(model.parameters()).device
        example = torch.zeros((2, *context.input_shape), device=device)
        #: Every conv/linear layer by path, and its output channels before any pruning.
        self.layers = {p: m for p, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
        self.classifier = classifier(model, example)
        self.classifier_path = next(p for p, m in self.layers.items() if m is self.classifier)
        self.original = {p: out_channels(m) for p, m in self.layers.items()}
        #: Layers that may lose channels, in model order (narrowed once the graph is known).
        self.prunable = [p for p, m in self.layers.items() if m is not self.classifier]
        self.heads = HeadPlan.of(model, config.heads, config.head_dims, config.scope)
        ignored = self._ignored()
        ratios = self._layer_amounts(ignored)
        options = self.heads.pruner_options()
        rank = importance(config.importance, config.seed, model, context.data is not None)
        ratio_dict = options.pop("pruning_ratio_dict", {}) | {
            self.layers[p]: a for p, a in ratios.items()
        }
        with eval_mode(model), warnings.catch_warnings():  # BN statistics must not move
            # The class token and positions are parameters outside any layer; Torch-Pruning
            # cuts their last dim with the width, which is what they need, and warns so.
            warnings.filterwarnings("ignore", "Unwrapped parameters detected")
            self.pruner = tp.pruner.BasePruner(
                model,
                example,
                importance=rank,
                global_pruning=config.scope == "global",
                pruning_ratio=config.amount,
                pruning_ratio_dict=ratio_dict,
                iterative_steps=_UNBOUNDED_STEPS,
                iterative_pruning_ratio_scheduler=lambda ratio, _: _Ramp(ratio, self),
                ignored_layers=[
                    self.classifier,
                    *(self.layers[p] for p in ignored),
                    *self.heads.untouched(),
                ],
                round_to=config.round_to,
                **options,
            )
        self.heads.follow(self.pruner, self)
        self.prunable = self._shrinkable()
        for path in ratios:
            if path not in self.prunable:
                raise ConfigError(
                    f"method.layers: {path} cannot be structurally pruned: its output "
                    "channels are tied to the classifier's or the model's output"
                )

    def _shrinkable(self) -> list[str]:
        """Layers whose output channels some dependency group can remove (the classifier
        and whatever is coupled to it cannot lose any)."""
        graph = self.pruner.DG
        names = {m: path for path, m in self.layers.items()}
        found = {
            names.get(dep.target.module)
            for group in graph.get_all_groups(ignored_layers=[self.classifier])
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
        }
        return [p for p in self.prunable if p in found]

    def _ignored(self) -> set[str]:
        ignored = set()
        for pattern in self.config.ignore:
            # Naming the classifier is harmless: it is always left whole.
            if self.classifier_path in fnmatch.filter(self.layers, pattern):
                ignored.update(fnmatch.filter(self.prunable, pattern))
            else:
                ignored.update(matching(self.prunable, pattern, "method.ignore"))
        return ignored

    def _layer_amounts(self, ignored: set[str]) -> dict[str, float]:
        """Each overridden layer's amount (the last matching pattern wins), ignored ones out."""
        own: dict[str, float] = {}
        for pattern, amount in self.config.layers.items():
            option = f"method.layers['{pattern}']"
            if self.classifier_path in fnmatch.filter(self.layers, pattern):
                raise ConfigError(
                    f"{option}: pattern '{pattern}' matches {self.classifier_path}, which "
                    f"cannot be structurally pruned: it produces the "
                    f"{self.original[self.classifier_path]} class logits, which must all stay"
                )
            for path in matching(self.prunable, pattern, option):
                own[path] = amount
        return {p: a for p, a in own.items() if p not in ignored}

    def update(self, progress: float) -> bool:
        progress = min(max(float(progress), 0.0), 1.0)
        if progress <= self.progress:
            return False
        self.progress = progress
        before = self.kept()
        if self.config.importance == "taylor":
            seed = self.config.seed + self.pruner.current_step
            train = self.context.data.train  # type: ignore[union-attr]  (checked before)
            taylor_gradients(
                self.model, train, self.context.batch_size, self.config.taylor_batches, seed
            )
        heads_before = self.heads.kept()
        self.pruner.step()
        self.heads.update(self.pruner)
        self.model.zero_grad(set_to_none=True)
        removed = self.kept() != before or self.heads.kept() != heads_before
        if removed:
            log.debug(
                "prune_channels at %.3f of the target: %.1f%% of channels removed",
                progress,
                100 * self.channels_removed(),
            )
        return removed

    def after_step(self) -> None:
        pass  # removed channels are gone: nothing to hold at zero

    def finalize(self, model: nn.Module) -> nn.Module:
        model.zero_grad(set_to_none=True)
        return model

    def kept(self) -> dict[str, int]:
        """Output channels each conv/linear layer has now."""
        return {p: out_channels(m) for p, m in self.layers.items()}

    def channels_removed(self) -> float:
        """Share of the prunable layers' original output channels that are gone."""
        kept = self.kept()
        total = sum(self.original[p] for p in self.prunable)
        return 1 - sum(kept[p] for p in self.prunable) / total if total else 0.0

    def removed_shares(self) -> dict[str, float]:
        """Share of its original output channels each prunable layer has lost."""
        kept = self.kept()
        return {p: 1 - kept[p] / self.original[p] for p in self.prunable}

    def summary(self) -> dict[str, float]:
        found = {"channels_removed": self.channels_removed()}
        if self.heads.active:
            found["heads_removed"] = self.heads.removed_share()
        return found

    def artifacts(self, folder: Path) -> list[Path]:
        files = [write_table(folder / "layer_channels.csv", self.original, self.kept())]
        if self.heads.active:
            files.append(self.heads.write(folder / "attention_heads.csv"))
        return files


def prune_channels(
    model: nn.Module, config: ChannelPruning, context: MethodContext
) -> ChannelStage:
    try:
        return ChannelStage(model, config, context)
    except ConfigError:
        raise
    except Exception as error:  # Torch-Pruning could not follow the model's graph
        raise untraceable(model, error) from error
