"""Whole attention heads (and dims within heads) for `method=prune_channels`.

Torch-Pruning removes heads from attention modules of timm's form: one `qkv` Linear whose
outputs are laid out (3, heads, head_dim), and `num_heads` / `head_dim` attributes it can
rewrite (compress.models.vit's `Attention`). `nn.MultiheadAttention` packs its projection in
`in_proj_weight`, which it leaves alone, so such models are refused in one line.

Every attention module loses the same share of heads (`heads`) and of each head's dims
(`head_dims`); both must come to whole numbers in every module, and at least one head and
one dim must stay. After each pruning step the modules' attributes are set to what was
removed, and the artifact records them (compress.artifact.module_shapes).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import ConfigError

#: Slack for float shares that should come to whole counts (0.5 * 4 heads).
_WHOLE = 1e-6


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules Torch-Pruning can remove heads from: a `qkv` Linear plus int `num_heads`
    and `head_dim`, by path."""
    return {
        path: module
        for path, module in model.named_modules()
        if isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
        and isinstance(getattr(module, "head_dim", None), int)
        and not isinstance(module, nn.MultiheadAttention)
    }


def _whole(share: float, count: int, option: str, path: str, what: str, left: str) -> int:
    """How many of `count` a `share` removes: a whole number that leaves at least one."""
    removed = share * count
    if abs(removed - round(removed)) > _WHOLE:
        raise ConfigError(
            f"method.{option} {share:g} removes {removed:g} of the {count} {what} of {path}, "
            f"which leaves a non-integer {left}; choose a multiple of 1/{count}"
        )
    if round(removed) >= count:
        raise ConfigError(
            f"method.{option} {share:g} removes all {count} {what} of {path}; "
            f"at least one must stay"
        )
    return round(removed)


@dataclass
class HeadPlan:
    """What head pruning will do to each attention module, checked before training."""

    modules: dict[str, nn.Module]
    heads: float
    head_dims: float
    #: Heads each module loses in all, by path.
    heads_removed: dict[str, int]
    #: (heads, head dim) of every module before any pruning, by path.
    original: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, model: nn.Module, heads: float, head_dims: float, scope: str) -> HeadPlan:
        modules = attention_modules(model)
        if heads > 0 or head_dims > 0:
            option = "heads" if heads > 0 else "head_dims"
            packed = [p for p, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
            if packed:
                raise ConfigError(
                    f"method.{option}: '{packed[0]}' is an nn.MultiheadAttention, whose packed "
                    "in_proj_weight Torch-Pruning cannot remove heads from; use attention with "
                    "one qkv Linear and num_heads/head_dim attributes (as model=vit does)"
                )
            if not modules:
                raise ConfigError(
                    f"method.{option} removes attention heads, but the model has no attention "
                    "module (one with a qkv Linear and num_heads/head_dim attributes)"
                )
            if scope != "uniform":
                raise ConfigError(
                    f"method.{option} is a share of every attention module's heads; "
                    f"scope '{scope}' ranks across layers: use scope uniform"
                )
        removed = {
            p: _whole(heads, m.num_heads, "heads", p, "heads", "head count")
            for p, m in modules.items()
        }
        for path, module in modules.items():
            _whole(head_dims, module.head_dim, "head_dims", path, "dims", "head dim")
        original = {p: (m.num_heads, m.head_dim) for p, m in modules.items()}
        return cls(modules, heads, head_dims, removed, original)

    @property
    def active(self) -> bool:
        return self.heads > 0 or self.head_dims > 0

    def untouched(self) -> list[nn.Module]:
        """Layers to leave whole: without head pruning, `amount` must not cut into heads."""
        return [] if self.active else [m.qkv for m in self.modules.values()]

    def pruner_options(self) -> dict[str, Any]:
        """Torch-Pruning's keyword arguments for this plan."""
        if not self.active:
            return {}
        qkvs = [m.qkv for m in self.modules.values()]
        # Torch-Pruning removes heads only in a step where the qkv group also has a width
        # share to cut; without head_dims that share only has to be positive (no dims go,
        # as prune_head_dims is off).
        width = self.head_dims if self.head_dims > 0 else self.heads
        return {
            "num_heads": {m.qkv: m.num_heads for m in self.modules.values()},
            "prune_num_heads": self.heads > 0,
            "prune_head_dims": self.head_dims > 0,
            "head_pruning_ratio": self.heads,
            "pruning_ratio_dict": dict.fromkeys(qkvs, width),
        }

    def follow(self, pruner: Any, stage: Any) -> None:
        """Give the pruner a head ratio per module that removes whole heads at each step
        in proportion to the stage's progress (its own ratio would compound over steps)."""
        for path, module in self.modules.items():
            initial = self.original[path][0]
            ramp = _HeadRamp(pruner, module.qkv, initial, self.heads_removed[path], stage)
            pruner.head_pruning_ratio_dict[module.qkv] = ramp

    def update(self, pruner: Any) -> None:
        """Set each module's head count and head dim to what is left of them."""
        if not self.active:
            return
        for module in self.modules.values():
            module.num_heads = pruner.num_heads[module.qkv]
            module.head_dim = module.qkv.out_features // (3 * module.num_heads)

    def kept(self) -> dict[str, tuple[int, int]]:
        """(heads, head dim) of every attention module now."""
        return {p: (m.num_heads, m.head_dim) for p, m in self.modules.items()}

    def removed_share(self) -> float:
        """Share of all the attention modules' original heads that are gone."""
        total = sum(heads for heads, _ in self.original.values())
        return 1 - sum(heads for heads, _ in self.kept().values()) / total

    def write(self, path: Path) -> Path:
        """Per-module CSV: attention module, heads and head dim before and after."""
        kept = self.kept()
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["module", "heads", "heads_kept", "head_dim", "head_dim_kept"])
            for module, (heads, dim) in self.original.items():
                writer.writerow([module, heads, kept[module][0], dim, kept[module][1]])
        return path


@dataclass
class _HeadRamp:
    """The share of its CURRENT heads Torch-Pruning should remove from one module now.

    Torch-Pruning removes ceil(ratio x current heads) per step; this gives the ratio that
    brings the module to `removed x progress` heads removed of its `initial` ones.
    """

    pruner: Any
    qkv: nn.Module
    initial: int
    removed: int
    stage: Any

    def __getitem__(self, step: int) -> float:
        now = self.pruner.num_heads[self.qkv]
        wanted = math.floor(self.removed * self.stage.progress + _WHOLE)
        due = wanted - (self.initial - now)
        return (due - 0.5) / now if due > 0 else 0.0
