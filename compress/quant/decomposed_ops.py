"""The quantize/dequantize ops an int8 PT2E graph is made of, wherever torch keeps them.

A converted graph calls `torch.ops.quantized_decomposed.*`. Today torch registers that op
library in `torch.ao.quantization.fx._decomposed` (Inductor's own int8 lowering imports
it from there too). When that module is gone or cannot be imported, `ensure` registers
the same four ops with the same schemas and the same affine arithmetic, so a saved int8
graph still loads and computes the same values (in eager mode; the fast path is
Inductor's, which needs torch's library).
"""

from __future__ import annotations

import torch

NAMESPACE = "quantized_decomposed"
_SCHEMAS = {
    "quantize_per_tensor": "(Tensor input, float scale, int zero_point, int quant_min, "
    "int quant_max, ScalarType dtype) -> Tensor",
    "dequantize_per_tensor": "(Tensor input, float scale, int zero_point, int quant_min, "
    "int quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) -> Tensor",
    "quantize_per_channel": "(Tensor input, Tensor scales, Tensor zero_points, int axis, "
    "int quant_min, int quant_max, ScalarType dtype) -> Tensor",
    "dequantize_per_channel": "(Tensor input, Tensor scales, Tensor? zero_points, int axis, "
    "int quant_min, int quant_max, ScalarType dtype, *, ScalarType? out_dtype=None) -> Tensor",
}
_library: torch.library.Library | None = None


def available() -> bool:
    return hasattr(getattr(torch.ops, NAMESPACE), "dequantize_per_channel")


def ensure() -> str:
    """Make the ops callable; returns who provides them ('torch' or 'compress')."""
    if _library is not None:
        return "compress"
    if available():
        return "torch"
    try:
        import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the library)

        return "torch"
    except ImportError:
        pass
    _register()
    return "compress"


def _channel_view(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


Dtype = torch.dtype | None


def _quantize_per_tensor(
    x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int, dtype: torch.dtype
) -> torch.Tensor:
    q = torch.round(x.float() * (1.0 / scale)) + zero_point
    return torch.clamp(q, qmin, qmax).to(dtype)


def _dequantize_per_tensor(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
    *,
    out_dtype: Dtype = None,
) -> torch.Tensor:
    return (x.to(out_dtype or torch.float32) - zero_point) * scale


def _quantize_per_channel(
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    q = torch.round(x.float() * _channel_view(1.0 / scales, axis, x.dim()))
    q = q + _channel_view(zero_points, axis, x.dim())
    return torch.clamp(q, qmin, qmax).to(dtype)


def _dequantize_per_channel(
    x: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    axis: int,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
    *,
    out_dtype: Dtype = None,
) -> torch.Tensor:
    values = x.to(torch.float32)
    if zero_points is not None:
        values = values - _channel_view(zero_points, axis, x.dim())
    return (values * _channel_view(scales, axis, x.dim())).to(out_dtype or torch.float32)


def _register() -> None:
    global _library
    _library = torch.library.Library(NAMESPACE, "DEF")
    implementations = {
        "quantize_per_tensor": _quantize_per_tensor,
        "dequantize_per_tensor": _dequantize_per_tensor,
        "quantize_per_channel": _quantize_per_channel,
        "dequantize_per_channel": _dequantize_per_channel,
    }
    for name, schema in _SCHEMAS.items():
        _library.define(name + schema)
        _library.impl(name, implementations[name], "CompositeExplicitAutograd")
