"""Both models exported to ONNX and timed in ONNX Runtime on the CPU: the deployment view.

The compressed model's file is kept (logged beside its artifact, in `model/`); a model that
cannot be exported gets the tag `onnx.error` saying why, and no ONNX figure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from compress.measure.onnx_runtime import (
    ExportUnsupported,
    export_onnx,
    onnx_accuracy,
    onnx_latency_ms,
)
from compress.measure.probes.base import ProbeConfig, ProbeContext, ProbeResult

log = logging.getLogger(__name__)
# The ONNX exporter's passes log every rewrite at INFO, which Hydra's logging shows.
for _chatty in ("onnxscript", "onnx_ir"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)

#: The file name of each role's export in the run folder.
FILES = {"baseline": "baseline.onnx", "compressed": "model.onnx"}


@dataclass(frozen=True)
class OnnxRuntime(ProbeConfig):
    """ONNX Runtime latency of both models, and accuracy of the compressed one's file."""

    name = "onnx"

    def measure(self, context: ProbeContext) -> ProbeResult:
        data, settings = context.data, context.settings
        files: dict[str, Path] = {}
        models = {"baseline": context.baseline, "compressed": context.compressed}
        for role, model in models.items():
            try:
                files[role] = export_onnx(model, data.input_shape, context.folder / FILES[role])
            except ExportUnsupported as error:
                log.warning("%s: %s; no ONNX figures logged", role, error)
                for written in files.values():
                    written.unlink(missing_ok=True)
                return ProbeResult(tags={"onnx.error": f"{role}: {error}"})
        latency = {
            role: onnx_latency_ms(
                path,
                data.input_shape,
                settings.batch_sizes,
                threads=settings.threads,
                warmup=settings.warmup,
                repeats=settings.repeats,
                max_seconds=settings.max_seconds,
            )
            for role, path in files.items()
        }
        metrics: dict[str, float] = {}
        for batch, ms in latency["compressed"].items():
            metrics[f"onnx/latency_ms/b{batch}"] = ms
            metrics[f"baseline/onnx/latency_ms/b{batch}"] = latency["baseline"][batch]
            metrics[f"speedup/onnx/b{batch}"] = latency["baseline"][batch] / ms
        test = data.test.loader(settings.eval_batch_size)
        metrics["onnx/acc"] = onnx_accuracy(files["compressed"], test)
        files["baseline"].unlink(missing_ok=True)
        return ProbeResult(metrics=metrics, files=[(files["compressed"], "model")])
