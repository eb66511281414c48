"""Bit-width sweep of the baseline: where does accuracy break as weights get fewer bits?

Each bit width rounds every conv/linear weight of a copy of the baseline to its grid
(`method=quantize_weights`, no fine-tuning), then measures accuracy and the bytes of the
artifact that model would save as. Writes bit_sweep.csv and bit_sweep.png. For the same
sweep with fine-tuning or QAT at each point, run a Hydra multirun over method.bits.
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compress.analysis.base import AnalysisConfig, AnalysisContext, AnalysisResult
from compress.config import require
from compress.data import DataBundle
from compress.methods.base import Stage
from compress.methods.weights import GRANULARITIES, WeightGridStage, WeightQuantization
from compress.quant.grid import MAX_BITS, MIN_BITS
from compress.train.loop import accuracy

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


@dataclass(frozen=True)
class BitSweepConfig(AnalysisConfig):
    """Bit widths to round the baseline's weights to, on their grid settings."""

    name = "bits"
    bits: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2)
    granularity: str = "channel"
    group_size: int = 32
    symmetric: bool = True
    split: str = "test"

    def __post_init__(self) -> None:
        bits = tuple(self.bits)
        require(len(bits) > 0, "analysis.bits must list at least one bit width")
        require(
            all(isinstance(b, int) and MIN_BITS <= b <= MAX_BITS for b in bits),
            f"analysis.bits must be integers in {MIN_BITS}..{MAX_BITS}, got {list(bits)}",
        )
        object.__setattr__(self, "bits", tuple(sorted(set(bits), reverse=True)))
        require(
            self.granularity in GRANULARITIES,
            f"analysis.granularity '{self.granularity}' unknown; "
            f"choose one of: {', '.join(GRANULARITIES)}",
        )
        require(
            self.split in SPLITS,
            f"analysis.split '{self.split}' unknown; choose one of: {', '.join(SPLITS)}",
        )

    def run(self, context: AnalysisContext) -> AnalysisResult:
        """bit_sweep.csv and bit_sweep.png: accuracy and artifact bytes at each bit width."""
        dense_acc, points = bit_sweep(
            context.model, context.data, self, context.saved_size, context.eval_batch_size
        )
        table = write_csv(
            dense_acc, context.baseline_bytes, points, context.folder / "bit_sweep.csv"
        )
        figure = plot(dense_acc, context.baseline_bytes, points, context.folder / "bit_sweep.png")
        log.info("bit sweep: table %s, plot %s", table, figure)
        return AnalysisResult([table, figure])


@dataclass(frozen=True)
class Point:
    bits: int
    acc: float
    bytes: int


def bit_sweep(
    model: nn.Module,
    data: DataBundle,
    config: BitSweepConfig,
    artifact_bytes: Callable[[nn.Module, Stage], int],
    batch_size: int = 1024,
) -> tuple[float, list[Point]]:
    """Float accuracy and one point per bit width (round to nearest, no fine-tuning)."""
    split = data.val if config.split == "val" and len(data.val) else data.test
    dense = accuracy(model, split, batch_size)
    points = []
    for bits in config.bits:
        method = WeightQuantization(
            bits=bits,
            granularity=config.granularity,
            group_size=config.group_size,
            symmetric=config.symmetric,
        )
        rounded = copy.deepcopy(model)
        stage = WeightGridStage(rounded, method)
        stage.update(1.0)
        rounded = stage.finalize(rounded)
        points.append(
            Point(bits, accuracy(rounded, split, batch_size), artifact_bytes(rounded, stage))
        )
        log.info("bit sweep: %d bits -> accuracy %.4f", bits, points[-1].acc)
    return dense, points


def write_csv(dense_acc: float, dense_bytes: int, points: Sequence[Point], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bits", "acc", "drop", "bytes", "ratio_size"])
        writer.writerow([32, f"{dense_acc:.6f}", "0.000000", dense_bytes, "1.00"])
        for p in points:
            writer.writerow(
                [
                    p.bits,
                    f"{p.acc:.6f}",
                    f"{dense_acc - p.acc:.6f}",
                    p.bytes,
                    f"{dense_bytes / p.bytes:.2f}",
                ]
            )
    return path


def plot(dense_acc: float, dense_bytes: int, points: Sequence[Point], path: Path) -> Path:
    """Accuracy (left axis) and artifact size ratio (right axis) against weight bits."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bits = [p.bits for p in points]
    ax.plot(bits, [p.acc for p in points], marker="o", label="accuracy (no fine-tuning)")
    ax.axhline(
        dense_acc, color="black", linestyle="--", linewidth=1, label=f"float32 {dense_acc:.3f}"
    )
    ax.set_xlabel("weight bits (per-channel grid)")
    ax.set_ylabel("accuracy")
    ax.invert_xaxis()
    ax.grid(True, alpha=0.3)
    size = ax.twinx()
    size.plot(
        bits,
        [dense_bytes / p.bytes for p in points],
        color="tab:orange",
        marker="s",
        linestyle=":",
        label="artifact size ratio",
    )
    size.set_ylabel("float32 artifact / quantized artifact")
    lines = ax.get_legend_handles_labels()
    more = size.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left", fontsize="small")
    ax.set_title("Bit-width sweep: where accuracy breaks")
    fig.savefig(path)
    return path
