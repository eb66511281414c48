"""Latency figures beside the eager PyTorch one, so a speedup is credited to its cause.

- compiled fp32: the baseline under `torch.compile`, timed in turns with the compressed
  model. A quantized model that beats eager fp32 but not compiled fp32 owes its speedup
  to compilation, not to quantization.
- ONNX Runtime: both models exported to ONNX and timed there (the deployment view); the
  compressed model's file is kept beside its artifact.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from compress.data import DataBundle
from compress.measure.config import MeasureConfig
from compress.measure.footprint import paired_latency_ms

log = logging.getLogger(__name__)
# The ONNX exporter's passes log every rewrite at INFO, which Hydra's logging shows.
for _chatty in ("onnxscript", "onnx_ir"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)


def compiled_baseline_metrics(
    baseline: nn.Module,
    compressed: nn.Module,
    input_shape: tuple[int, ...],
    settings: MeasureConfig,
    device: torch.device,
) -> dict[str, float]:
    """The fp32 baseline compiled, timed in turns with `compressed`, at each batch size."""
    compiled = torch.compile(copy.deepcopy(baseline).eval())
    metrics = {}
    for batch in settings.batch_sizes:
        fp32_ms, ours_ms = paired_latency_ms(
            [compiled, compressed], input_shape, batch, settings, device
        )
        metrics[f"baseline/latency_ms_compiled/b{batch}"] = fp32_ms
        metrics[f"speedup/latency_vs_compiled/b{batch}"] = fp32_ms / ours_ms
    largest = max(settings.batch_sizes)
    metrics["speedup/latency_vs_compiled"] = metrics[f"speedup/latency_vs_compiled/b{largest}"]
    return metrics


def onnx_metrics(
    baseline: nn.Module,
    compressed: nn.Module,
    data: DataBundle,
    settings: MeasureConfig,
    folder: Path,
) -> tuple[dict[str, float], dict[str, str], Path | None]:
    """ONNX Runtime latency of both models and accuracy of the compressed one's file.

    Returns metrics, tags (`onnx.error` when a model cannot be exported: the message says
    why, and no ONNX figure is logged for it) and the compressed model's .onnx file.
    """
    from compress.measure.onnx_runtime import (
        ExportUnsupported,
        export_onnx,
        onnx_latency_ms,
        onnx_predict,
    )

    timing = {
        "threads": settings.threads,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "max_seconds": settings.max_seconds,
    }
    metrics: dict[str, float] = {}
    files: dict[str, Path] = {}
    for role, model in (("baseline", baseline), ("compressed", compressed)):
        path = folder / ("model.onnx" if role == "compressed" else "baseline.onnx")
        try:
            files[role] = export_onnx(model, data.input_shape, path)
        except ExportUnsupported as error:
            log.warning("%s: %s; no ONNX figures logged", role, error)
            for written in files.values():
                written.unlink(missing_ok=True)
            return metrics, {"onnx.error": f"{role}: {error}"}, None
    latency = {
        role: onnx_latency_ms(path, data.input_shape, settings.batch_sizes, **timing)
        for role, path in files.items()
    }
    for batch, ms in latency["compressed"].items():
        metrics[f"onnx/latency_ms/b{batch}"] = ms
        metrics[f"baseline/onnx/latency_ms/b{batch}"] = latency["baseline"][batch]
        metrics[f"speedup/onnx/b{batch}"] = latency["baseline"][batch] / ms
    logits = onnx_predict(files["compressed"], data.test.x.cpu())
    metrics["onnx/acc"] = logits.argmax(1).eq(data.test.y.cpu()).float().mean().item()
    files["baseline"].unlink(missing_ok=True)
    return metrics, {}, files["compressed"]
