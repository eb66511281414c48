"""N-bit affine grids for weights: codes, scales and zero points, per channel or per group.

A weight tensor is viewed as rows (output channels) of `cols` inputs; each row is cut
into groups of `group_size` consecutive inputs (a whole row for per-channel). Each group
has its own scale s (stored as float16, as N-bit formats usually do) and zero point z,
and every weight is w = (c - z) * s for an unsigned code c in [0, 2**bits). Zero is
always exactly representable (c = z), so pruned weights stay zero.

- symmetric: z = 2**(bits-1), s = max|w| / (2**(bits-1) - 1); z is implied, not stored.
- affine:    s = (max - min) / (2**bits - 1), z = round(-min / s), min <= 0 <= max.

`dequantize` is the single definition of the weights a code stands for: the model's
weights and the artifact's decoded tensors both come from it, so they are bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class Grid:
    """Codes of one tensor on its grid; `scale` and `zero` hold one entry per group."""

    codes: torch.Tensor  # uint8, shape (groups, group_size)
    scale: torch.Tensor  # float16, (groups,)
    zero: torch.Tensor  # uint8, (groups,)
    bits: int
    symmetric: bool
    shape: tuple[int, ...]


def group_view(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """`weight` as (groups, group_size); None means one group per output channel."""
    rows = weight.reshape(weight.shape[0], -1)
    size = rows.shape[1] if group_size is None else group_size
    if rows.shape[1] % size:
        raise ValueError(
            f"{rows.shape[1]} inputs per output channel do not split into groups of {size}"
        )
    return rows.reshape(-1, size)


def quantize(
    weight: torch.Tensor, bits: int, *, symmetric: bool = True, group_size: int | None = None
) -> Grid:
    """Round `weight` to the nearest point of its `bits`-bit grid."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    groups = group_view(weight.detach().float(), group_size)
    levels = 2**bits - 1
    if symmetric:
        half = 2 ** (bits - 1)
        scale = groups.abs().amax(1) / (half - 1)
        zero = torch.full_like(scale, half)
    else:
        low = groups.amin(1).clamp(max=0)
        high = groups.amax(1).clamp(min=0)
        scale = (high - low) / levels
        zero = None
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).half()
    if zero is None:
        zero = (-low / scale.float()).round().clamp(0, levels)
    codes = (groups / scale.float()[:, None]).round() + zero[:, None]
    return Grid(
        codes=codes.clamp(0, levels).to(torch.uint8),
        scale=scale,
        zero=zero.to(torch.uint8),
        bits=bits,
        symmetric=symmetric,
        shape=tuple(weight.shape),
    )


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The float32 weights that `codes` (groups, group_size) stand for."""
    centred = codes.to(torch.int16) - zero.to(torch.int16)[:, None]
    return centred.float() * scale.float()[:, None]


def grid_weights(grid: Grid) -> torch.Tensor:
    """The tensor `grid` represents, in its original shape."""
    return dequantize(grid.codes, grid.scale, grid.zero).reshape(grid.shape)


def fake_quantize(
    weight: torch.Tensor, bits: int, *, symmetric: bool = True, group_size: int | None = None
) -> torch.Tensor:
    """`weight` rounded to its grid in the forward pass, the identity in the backward pass
    (straight-through estimator), for quantization-aware training."""
    rounded = grid_weights(quantize(weight, bits, symmetric=symmetric, group_size=group_size))
    return weight + (rounded.to(weight.dtype) - weight).detach()
