"""Fixed-width bit packing of unsigned integer codes.

Codes are laid out back to back in flattened order, each written MSB first, so the stream
is a plain big-endian bit string; the final byte is padded with zero bits. Both directions
are vectorised with numpy (`unpackbits` / `packbits`), which keeps a million codes in the
tens of milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MAX_BITS = 16


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")


def packed_size(count: int, bits: int) -> int:
    """Bytes that `count` codes of `bits` bits each take once packed."""
    _check_bits(bits)
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    return math.ceil(count * bits / 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer `codes` (each in [0, 2**bits)) into a 1-D uint8 tensor, MSB first.

    The result holds exactly `packed_size(codes.numel(), bits)` bytes.
    """
    _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    flat = codes.detach().reshape(-1).cpu().numpy()
    if flat.size == 0:
        return torch.empty(0, dtype=torch.uint8)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= 1 << bits:
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits} bits, got [{low}, {high}]")
    # Each code as two big-endian bytes -> 16 bits; keep the low `bits` columns.
    as_bytes = flat.astype(">u2").view(np.uint8).reshape(-1, 2)
    bit_matrix = np.unpackbits(as_bytes, axis=1)[:, MAX_BITS - bits :]
    return torch.from_numpy(np.packbits(bit_matrix.reshape(-1)))


def unpack_bits(data: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_bits`: read `count` codes of `bits` bits from `data` as int64."""
    _check_bits(bits)
    need = packed_size(count, bits)
    raw = data.detach().reshape(-1).cpu()
    if raw.dtype != torch.uint8:
        raise ValueError(f"data must be a uint8 tensor, got {raw.dtype}")
    if raw.numel() < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, got {raw.numel()}")
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    stream = np.unpackbits(raw.numpy()[:need])[: count * bits].reshape(count, bits)
    padded = np.zeros((count, MAX_BITS), dtype=np.uint8)
    padded[:, MAX_BITS - bits :] = stream
    values = np.packbits(padded, axis=1).view(">u2").reshape(-1)
    return torch.from_numpy(values.astype(np.int64))
