"""The fp32 baseline under `torch.compile`, timed in turns with the compressed model.

A quantized model that beats eager fp32 but not compiled fp32 owes its speedup to
compilation, not to quantization; this probe shows which.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from compress.config import require
from compress.measure.latency import paired_latency_ms
from compress.measure.probes.base import ProbeConfig, ProbeContext, ProbeResult

WHEN = ("converted", "always")


@dataclass(frozen=True)
class CompiledBaseline(ProbeConfig):
    """Time fp32 compiled beside ours. `when: converted` (default) only for int8 models,
    where the question arises and the compile is worth its seconds; `always` for all."""

    name = "compiled"
    when: str = "converted"

    def __post_init__(self) -> None:
        require(
            self.when in WHEN,
            f"measure.probes: compiled.when must be one of {', '.join(WHEN)}, got {self.when!r}",
        )

    def applies(self, context: ProbeContext) -> bool:
        return self.when == "always" or context.converted

    def measure(self, context: ProbeContext) -> ProbeResult:
        settings, device = context.settings, context.device
        baseline = copy.deepcopy(context.baseline).to(device).eval()
        compiled = torch.compile(baseline)
        metrics = {}
        for batch in settings.batch_sizes:
            fp32_ms, ours_ms = paired_latency_ms(
                [compiled, context.compressed], context.data.input_shape, batch, settings, device
            )
            metrics[f"baseline/latency_ms_compiled/b{batch}"] = fp32_ms
            metrics[f"speedup/latency_vs_compiled/b{batch}"] = fp32_ms / ours_ms
        largest = max(settings.batch_sizes)
        metrics["speedup/latency_vs_compiled"] = metrics[f"speedup/latency_vs_compiled/b{largest}"]
        return ProbeResult(metrics=metrics)
