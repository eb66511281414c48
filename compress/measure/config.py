"""How figures are measured: threads, batch sizes, repeats."""

from __future__ import annotations

from dataclasses import dataclass

from compress.config import require


@dataclass(frozen=True)
class MeasureConfig:
    """How latency and accuracy are measured (fixed threads, warm-up, median of repeats)."""

    threads: int = 1
    batch_sizes: tuple[int, ...] = (1, 256)
    warmup: int = 3
    repeats: int = 30
    max_seconds: float = 2.0
    eval_batch_size: int = 1024
    #: Also time the fp32 baseline under torch.compile; auto: when the model is converted
    #: to int8, so that a speedup from compilation is not credited to quantization.
    compiled_baseline: bool | str = "auto"
    #: Also export both models to ONNX and time them with ONNX Runtime.
    onnx: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
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
        require(
            isinstance(self.compiled_baseline, bool) or self.compiled_baseline == "auto",
            f"measure.compiled_baseline must be auto, true or false, got {self.compiled_baseline}",
        )
