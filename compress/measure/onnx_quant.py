"""ONNX Runtime's own int8: static quantization of the exported fp32 model, a second path.

Our int8 model exported to ONNX is one way to deploy int8; the other is to hand ONNX
Runtime the fp32 graph and let its quantizer (`onnxruntime.quantization.quantize_static`)
calibrate activation ranges and insert QuantizeLinear/DequantizeLinear pairs, which its CPU
kernels fuse into int8 convolutions and matrix products. `quantize_onnx` does that from the
same calibration batches our static int8 used, so the two int8 files compare like for like.
onnx and onnxruntime are imported only when used.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.measure.onnx_runtime import (
    INPUT_NAME,
    ExportUnsupported,
    export_onnx,
    one_line_reason,
    onnx_predict,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BatchReader", "OrtInt8", "QuantizationFailed", "ort_int8_options", "quantize_onnx"]

# The seeded batch the quantized file is checked at: not a calibration batch size.
_CHECK_BATCH = 3


class QuantizationFailed(Exception):
    """ONNX Runtime could not quantize the model; the message says why, in one line."""


@dataclass(frozen=True)
class OrtInt8:
    """The quantized file, and how many batches and samples calibrated it."""

    path: Path
    batches: int
    samples: int


class BatchReader:
    """Feeds ORT's calibrator `batches`, each once, in order, as float32 CPU arrays.

    ORT's `CalibrationDataReader` counts any class with a `get_next` as its own (its
    `__subclasshook__`), so this needs no onnxruntime import. `batches` and `samples`
    count what was fed: the record of what calibrated the file.
    """

    def __init__(self, batches: Iterable[torch.Tensor], input_name: str = INPUT_NAME) -> None:
        self.input_name = input_name
        self.batches = 0
        self.samples = 0
        self._pending: Iterator[torch.Tensor] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._pending, None)
        if x is None:
            return None
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        self.batches += 1
        self.samples += len(array)
        return {self.input_name: array}


def ort_int8_options() -> dict[str, Any]:
    """The `quantize_static` settings that make int8 fast and accurate on this x86 CPU.

    - QDQ format: ORT's CPU kernels are tuned for QDQ graphs since 1.11 (QOperator is the
      legacy form); its graph optimizer fuses each DQ -> Conv/MatMul -> Q into one int8 op.
    - Activations QUInt8, weights QInt8 (U8S8): the pair MLAS's x86 int8 kernels
      (AVX2, AVX-VNNI, AVX512-VNNI, AMX) are written for; weights symmetric (ORT's default).
    - Per-channel weights: one scale per output channel keeps small-range filters exact,
      as our own static int8 does; the cost on CPU is small.
    - `reduce_range` (7-bit weights) only on x86 without VNNI, as ORT's guidance says:
      there the u8*s8 pair products are summed in saturating int16 (vpmaddubsw); VNNI
      sums in int32 and needs no narrower range.
    - MinMax calibration: the range of what was seen, fast on a few batches (entropy and
      percentile calibration histogram every tensor and take far longer).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "reduce_range": _x86_without_vnni(),
        "calibrate_method": CalibrationMethod.MinMax,
    }


def quantize_onnx(
    float_model: nn.Module,
    input_shape: tuple[int, ...],
    batches: Iterable[torch.Tensor],
    path: Path,
) -> OrtInt8:
    """Export `float_model` to fp32 ONNX, quantize it with ORT from `batches`, write `path`.

    The fp32 file goes through ORT's `quant_pre_process` first (shape inference and graph
    optimization, which folds batch norms into convolutions), as ORT's docs recommend. The
    result is kept only if it holds quantized operators and runs at a batch size other than
    the calibration ones. Raises QuantizationFailed, with a one-line reason, otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        fp32, prepared, quantized = (Path(scratch) / n for n in ("fp32", "pre", "int8"))
        try:
            export_onnx(float_model, input_shape, fp32)
        except ExportUnsupported as error:
            raise QuantizationFailed(f"the float model: {error}") from None
        reader = BatchReader(batches)
        try:
            _quantize(fp32, prepared, quantized, reader)
        except Exception as exc:
            raise QuantizationFailed(
                f"ONNX Runtime quantization failed ({one_line_reason(exc)})"
            ) from None
        _check(quantized, input_shape)
        os.replace(quantized, path)
    return OrtInt8(path, reader.batches, reader.samples)


def _quantize(fp32: Path, prepared: Path, out: Path, reader: BatchReader) -> None:
    from onnxruntime.quantization import quant_pre_process, quantize_static

    quant_pre_process(fp32, prepared)
    quantize_static(prepared, out, reader, **ort_int8_options())


def _check(path: Path, input_shape: tuple[int, ...]) -> None:
    """Raise QuantizationFailed unless `path` is an int8 graph that runs in ORT."""
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    if "DequantizeLinear" not in ops:
        raise QuantizationFailed(
            f"ONNX Runtime quantized no operator (ops: {', '.join(sorted(ops))})"
        )
    x = torch.randn((_CHECK_BATCH, *input_shape), generator=torch.Generator().manual_seed(1))
    try:
        out = onnx_predict(path, x)
    except Exception as exc:
        raise QuantizationFailed(
            f"the quantized graph fails in ONNX Runtime ({one_line_reason(exc)})"
        ) from None
    if len(out) != _CHECK_BATCH or not bool(torch.isfinite(out).all()):
        raise QuantizationFailed(
            f"the quantized graph gives {tuple(out.shape)} outputs, not all finite, "
            f"for a batch of {_CHECK_BATCH}"
        )


def _x86_without_vnni() -> bool:
    """True on an x86 CPU whose int8 dot products lack VNNI (AVX512-VNNI or AVX-VNNI)."""
    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686"}:
        return False
    capabilities = torch.cpu.get_capabilities()
    return not (capabilities.get("avx512_vnni") or capabilities.get("avx_vnni"))
