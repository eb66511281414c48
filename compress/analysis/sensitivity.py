"""Per-layer pruning sensitivity: how much each layer alone tolerates magnitude pruning.

Each prunable layer is pruned on its own at a list of levels and the model is evaluated
without fine-tuning, so the table shows which layers are fragile and which are
redundant. `amounts_for_target` turns that table into per-layer amounts for
`method.layers` of `method=prune`, giving tolerant layers more of the sparsity budget
than a single global amount would.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
import yaml
from torch import nn

from compress.analysis.base import AnalysisConfig, AnalysisContext, AnalysisResult
from compress.config import from_mapping, require
from compress.data import DataBundle, Split
from compress.errors import ConfigError
from compress.methods.masks import keep_top, prunable_weights
from compress.train.loop import accuracy

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
CRITERIA = ("magnitude",)


@dataclass(frozen=True)
class SensitivityConfig(AnalysisConfig):
    """What to measure: the pruning levels, on which split, and an optional overall target."""

    name = "sensitivity"

    levels: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    #: Validation by default: choosing per-layer amounts on the test split would leak it
    #: into the result that is later reported on that same split.
    split: str = "val"
    target: float | None = None
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        require(
            len(levels) > 0,
            "sensitivity.levels must not be empty; give pruning levels in [0, 1), e.g. [0.5, 0.9]",
        )
        require(
            all(_is_fraction(level) for level in levels),
            f"sensitivity.levels must be numbers in [0, 1), got {list(levels)}",
        )
        # Sorted and unique so the CSV, the plot and the amount search read in level order.
        object.__setattr__(self, "levels", tuple(sorted({float(level) for level in levels})))
        require(
            self.split in SPLITS,
            f"sensitivity.split '{self.split}' unknown; choose one of: {', '.join(SPLITS)}",
        )
        require(
            self.target is None or _is_fraction(self.target),
            f"sensitivity.target must be in [0, 1) or null, got {self.target}",
        )
        require(
            self.criterion in CRITERIA,
            f"sensitivity.criterion '{self.criterion}' unknown; "
            f"choose one of: {', '.join(CRITERIA)}",
        )

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, where: str = "sensitivity") -> Self:
        """From a plain config section; unknown keys and wrong types are ConfigErrors."""
        return from_mapping(cls, values, where)

    def run(self, context: AnalysisContext) -> AnalysisResult:
        """The table and plot; with a target, the per-layer amounts that reach it (written
        to layer_amounts.yaml and offered to the method as `layers`)."""
        dense_acc, rows = layer_sensitivity(
            context.model, context.data, self, context.eval_batch_size
        )
        files = [
            write_csv(dense_acc, rows, context.folder / "sensitivity.csv"),
            plot(dense_acc, rows, context.folder / "sensitivity.png"),
        ]
        log.info("sensitivity: table %s, plot %s", *files)
        if self.target is None:
            return AnalysisResult(files)
        amounts = amounts_for_target(dense_acc, rows, self.target)
        path = context.folder / "layer_amounts.yaml"
        path.write_text(yaml.safe_dump({"layers": amounts}, sort_keys=False))
        log.info("sensitivity: per-layer amounts for %.0f%% in %s", 100 * self.target, path)
        return AnalysisResult([*files, path], {"layers": amounts})


@dataclass(frozen=True)
class Row:
    """Accuracy with only `layer` pruned at `level`; `weights` is that layer's weight count."""

    layer: str
    level: float
    acc: float
    weights: int


def layer_sensitivity(
    model: nn.Module, data: DataBundle, config: SensitivityConfig, batch_size: int = 1024
) -> tuple[float, list[Row]]:
    """Dense accuracy and one row per (layer, level), each layer pruned alone.

    No fine-tuning happens between pruning and evaluation: the point is to see what
    each layer loses on its own, cheaply. Every layer's weights are restored exactly
    after its levels, so the model leaves as it came.
    """
    weights = prunable_weights(model)
    require(bool(weights), "sensitivity: the model has no conv or linear layer to prune")
    split = _eval_split(data, config.split)
    dense = accuracy(model, split, batch_size)
    log.info("sensitivity: dense accuracy %.4f on %d samples", dense, len(split))
    rows: list[Row] = []
    for path, weight in weights.items():
        original = weight.detach().clone()
        scores = original.abs()
        try:
            for level in config.levels:
                with torch.no_grad():
                    weight.copy_(original).masked_fill_(~keep_top(scores, level), 0)
                rows.append(Row(path, level, accuracy(model, split, batch_size), weight.numel()))
        finally:
            with torch.no_grad():
                weight.copy_(original)
        log.info(
            "sensitivity: %s (%d weights): %s",
            path,
            weight.numel(),
            ", ".join(f"{r.level:g}->{r.acc:.4f}" for r in rows if r.layer == path),
        )
    return dense, rows


def amounts_for_target(dense_acc: float, rows: Sequence[Row], target: float) -> dict[str, float]:
    """Per-layer amounts (each a tested level or 0) reaching overall sparsity `target`.

    Finds the smallest accuracy-drop tolerance at which giving every layer its largest
    level within that tolerance reaches the target. Keys are exact module paths, ready
    for `method.layers`; every layer is listed (0 for those left dense) so that no layer
    falls back to `method.amount`.
    """
    require(_is_fraction(target), f"sensitivity.target must be in [0, 1), got {target}")
    require(len(rows) > 0, "sensitivity: no measurements to choose per-layer amounts from")
    layers: dict[str, list[Row]] = {}
    for row in rows:
        layers.setdefault(row.layer, []).append(row)
    total = sum(group[0].weights for group in layers.values())

    def assign(tolerance: float) -> dict[str, float]:
        return {
            layer: max((r.level for r in group if dense_acc - r.acc <= tolerance), default=0.0)
            for layer, group in layers.items()
        }

    def sparsity(amounts: Mapping[str, float]) -> float:
        # Rounded per layer exactly as keep_top rounds, so the promise holds for real masks.
        return sum(round(a * layers[p][0].weights) for p, a in amounts.items()) / total

    most = assign(math.inf)
    reachable = sparsity(most)
    if reachable < target:
        raise ConfigError(
            f"sensitivity.target {target} is unreachable: every layer at its largest tested "
            f"level gives overall sparsity {reachable:.4f}; lower the target or test higher levels"
        )
    # Assignments only grow with the tolerance, so the first one that reaches the target
    # costs the least accuracy; a negative drop (pruning helped) counts as no drop.
    for tolerance in sorted({max(0.0, dense_acc - r.acc) for r in rows}):
        amounts = assign(tolerance)
        reached = sparsity(amounts)
        if reached >= target:
            log.info(
                "sensitivity: target %.4f reached (%.4f) with per-layer accuracy drops <= %.4f",
                target,
                reached,
                tolerance,
            )
            return amounts
    return most


def write_csv(dense_acc: float, rows: Sequence[Row], path: Path) -> Path:
    """The table as CSV (layer, weights, level, acc, drop), one line per measurement."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "weights", "level", "acc", "drop"])
        for r in rows:
            writer.writerow(
                [r.layer, r.weights, r.level, f"{r.acc:.6f}", f"{dense_acc - r.acc:.6f}"]
            )
    return path


def plot(
    dense_acc: float,
    rows: Sequence[Row],
    path: Path,
    *,
    title: str = "Per-layer pruning sensitivity (no fine-tuning)",
) -> Path:
    """PNG of accuracy against pruning level, one line per layer, dense accuracy dashed."""
    # Imported here: plotting is optional work, and a bare Figure with the Agg canvas
    # needs no display and leaves pyplot's global state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    layers: dict[str, list[Row]] = {}
    for row in rows:
        layers.setdefault(row.layer, []).append(row)
    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (layer, group) in enumerate(layers.items()):
        group = sorted(group, key=lambda r: r.level)
        ax.plot(
            [r.level for r in group],
            [r.acc for r in group],
            # The default cycle has 10 colours; a new line style per 10 layers keeps
            # lines of deep models apart (dashed is taken by the dense line).
            linestyle=("-", "-.", ":")[i // 10 % 3],
            marker="o",
            markersize=3,
            label=f"{layer} ({group[0].weights:,} w)",
        )
    ax.axhline(
        dense_acc, color="black", linestyle="--", linewidth=1, label=f"dense {dense_acc:.3f}"
    )
    ax.set_xlabel("share of the layer's weights pruned (other layers dense)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    many = len(layers) > 12
    ax.legend(
        fontsize="small",
        loc="upper left" if many else "lower left",
        bbox_to_anchor=(1.01, 1.0) if many else None,
        ncols=2 if len(layers) > 30 else 1,
    )
    fig.savefig(path)
    return path


def _eval_split(data: DataBundle, name: str) -> Split:
    """The split accuracy is measured on; an empty validation split falls back to test."""
    split = data.val if name == "val" else data.test
    if name == "val" and len(split) == 0:
        log.warning(
            "sensitivity: the validation split is empty (dataset.val_fraction=0); "
            "measuring on the test split, which then also picks the per-layer amounts"
        )
        split = data.test
    require(len(split) > 0, f"sensitivity: the {name} split has no samples to evaluate on")
    return split


def _is_fraction(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 1
    )
