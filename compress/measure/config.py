"""How figures are measured: threads, batch sizes, repeats, and which probes run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compress.config import require
from compress.measure.probes.base import ProbeConfig, parse_probes


@dataclass(frozen=True)
class MeasureConfig:
    """How latency and accuracy are measured (fixed threads, warm-up, median of repeats)."""

    threads: int = 1
    batch_sizes: tuple[int, ...] = (1, 256)
    warmup: int = 3
    repeats: int = 30
    max_seconds: float = 2.0
    eval_batch_size: int = 1024
    #: Extra views beside the eager figures (compress/measure/probes/), by name or as a
    #: mapping with options; stored parsed, as a tuple of ProbeConfigs.
    probes: Sequence[ProbeConfig | str | Mapping[str, Any]] = ("compiled", "onnx")

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        object.__setattr__(self, "probes", parse_probes(self.probes, "measure.probes"))
        require(self.threads >= 1, f"measure.threads must be >= 1, got {self.threads}")
        require(
            len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes),
            f"measure.batch_sizes must be a non-empty list of sizes >= 1, got {self.batch_sizes}",
        )
        require(self.warmup >= 0, f"measure.warmup must be >= 0, got {self.warmup}")
        require(self.repeats >= 1, f"measure.repeats must be >= 1, got {self.repeats}")
        require(self.max_seconds > 0, f"measure.max_seconds must be > 0, got {self.max_seconds}")
        require(
            self.eval_batch_size >= 1,
            f"measure.eval_batch_size must be >= 1, got {self.eval_batch_size}",
        )
