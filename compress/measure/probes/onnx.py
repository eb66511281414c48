"""Models exported to ONNX and timed in ONNX Runtime on the CPU: the deployment view.

Both models are exported and timed. An int8 run has a second int8 path beside its own:
ONNX Runtime's static quantization of the fp32 model as it was before conversion, from
the same calibration batches (`onnx_int8/*`). The compressed model's file and ORT's
int8 file are kept (logged beside the artifact, in `model/`). A model that cannot be
exported gets the tag `onnx.error`, a failed ORT quantization `onnx_int8.error`, saying
why; the figures that could still be measured are logged.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.measure.onnx_quant import QuantizationFailed, quantize_onnx
from compress.measure.onnx_runtime import (
    ExportUnsupported,
    export_onnx,
    onnx_accuracy,
    onnx_latency_ms,
)
from compress.measure.probes.base import ProbeConfig, ProbeContext, ProbeResult

log = logging.getLogger(__name__)
# The ONNX exporter's passes log every rewrite at INFO, which Hydra's logging shows.
for _chatty in ("onnxscript", "onnx_ir", "onnxruntime.quantization"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)

#: The file name of each role's ONNX file in the run folder.
FILES = {
    "baseline": "baseline.onnx",
    "compressed": "model.onnx",
    "ort_int8": "model.ort_int8.onnx",
}
#: The metric prefix of each timed file beside the baseline.
PREFIXES = {"compressed": "onnx", "ort_int8": "onnx_int8"}
#: What ORT calibrates on when the run did not (QAT, dynamic int8): the first train batches.
FALLBACK_BATCHES = 16
FALLBACK_BATCH_SIZE = 64


@dataclass(frozen=True)
class OnnxRuntime(ProbeConfig):
    """ONNX Runtime latency of both models (and of ORT's own int8, for int8 runs), and
    accuracy of the files deployed."""

    name = "onnx"

    def measure(self, context: ProbeContext) -> ProbeResult:
        result = ProbeResult()
        files: dict[str, Path] = {}
        for role, model in (("baseline", context.baseline), ("compressed", context.compressed)):
            try:
                files[role] = export_onnx(model, context.data.input_shape, _file(context, role))
            except ExportUnsupported as error:
                log.warning("%s: %s; no ONNX figures for it", role, error)
                result.tags["onnx.error"] = f"{role}: {error}"
                if role == "baseline":  # nothing to compare the others with
                    return result
        if context.converted:
            ort_int8, tags = _ort_int8(context)
            result.tags |= tags
            if ort_int8 is not None:
                files["ort_int8"] = ort_int8
        baseline = files.pop("baseline")
        try:
            if files:
                result.add(_figures(context, baseline, files))
        finally:
            baseline.unlink(missing_ok=True)
        return result


def _file(context: ProbeContext, role: str) -> Path:
    return context.folder / FILES[role]


def _ort_int8(context: ProbeContext) -> tuple[Path | None, dict[str, str]]:
    """ORT's int8 file made from the float model, and tags on what calibrated it or why
    there is none."""
    if context.float_model is None:
        return None, {"onnx_int8.error": "the run gave no float model to quantize"}
    shape = context.data.input_shape
    try:
        made = quantize_onnx(
            context.float_model, shape, _calibration(context), _file(context, "ort_int8")
        )
    except QuantizationFailed as error:
        log.warning("ONNX Runtime int8: %s; no onnx_int8 figures logged", error)
        return None, {"onnx_int8.error": str(error)}
    if context.calibration is not None:
        source = f"the run's {made.batches} calibration batches"
    else:
        source = (
            f"{made.batches} batches of {FALLBACK_BATCH_SIZE} from the train split "
            "(the run did not calibrate)"
        )
    return made.path, {"onnx_int8.calibration": source}


def _calibration(context: ProbeContext) -> Iterable[torch.Tensor]:
    """The batches our static int8 calibrated on; the first train batches where it did not."""
    if context.calibration is not None:
        return context.calibration()
    loader = context.data.train.loader(FALLBACK_BATCH_SIZE)
    return (batch.x for batch in itertools.islice(loader, FALLBACK_BATCHES))


def _figures(context: ProbeContext, baseline: Path, files: dict[str, Path]) -> ProbeResult:
    """Latency of the baseline's file and of each of `files`, with the same settings, and
    each file's test accuracy; `files` are the ones to log."""
    data, settings = context.data, context.settings

    def latency(path: Path) -> dict[int, float]:
        return onnx_latency_ms(
            path,
            data.input_shape,
            settings.batch_sizes,
            threads=settings.threads,
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
        )

    base = latency(baseline)
    metrics = {f"baseline/onnx/latency_ms/b{batch}": ms for batch, ms in base.items()}
    for role, path in files.items():
        prefix = PREFIXES[role]
        for batch, ms in latency(path).items():
            metrics[f"{prefix}/latency_ms/b{batch}"] = ms
            metrics[f"speedup/{prefix}/b{batch}"] = base[batch] / ms
        metrics[f"{prefix}/acc"] = onnx_accuracy(path, data.test.loader(settings.eval_batch_size))
    if "ort_int8" in files:
        metrics["onnx_int8/bytes"] = float(files["ort_int8"].stat().st_size)
    return ProbeResult(metrics=metrics, files=[(path, "model") for path in files.values()])
