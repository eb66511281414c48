"""Canonical Huffman coding of non-negative integer symbols, and mask <-> gap conversion.

Deep Compression entropy-codes the weight-sharing cluster indices and the gaps between
nonzero positions; this module supplies both pieces. An encoded entry is a dict of plain
values and tensors (it loads with `torch.load(weights_only=True)`):

- `symbols`: the distinct symbols used, ascending, in the narrowest unsigned dtype that fits;
- `lengths`: their code lengths (uint8), aligned with `symbols`;
- `count`: how many symbols were encoded;
- `data`: the bit stream (uint8), codes back to back, MSB first, zero-padded to a byte.

Codes are canonical: ordered by (length, symbol), so the lengths alone define them and no
tree is stored. Code lengths are limited to `MAX_CODE_LENGTH` bits. Decoding works on whole
arrays: the code length starting at every bit position is computed at once with numpy, a
tight loop follows the chain of code starts, and the symbols at those starts are looked up
at once again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

MAX_CODE_LENGTH = 32
_ENCODE_CHUNK = 1 << 18  # symbols per chunk when writing the bit stream
_DECODE_CHUNK = 1 << 21  # bit positions per chunk when measuring code lengths


def _narrowest_uint(max_value: int) -> torch.dtype:
    for dtype, limit in ((torch.uint8, 1 << 8), (torch.uint16, 1 << 16), (torch.uint32, 1 << 32)):
        if max_value < limit:
            return dtype
    return torch.int64


def _as_int64(values: torch.Tensor, what: str) -> np.ndarray:
    dtype = values.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(f"{what} must be an integer tensor, got {dtype}")
    return values.detach().reshape(-1).cpu().numpy().astype(np.int64, copy=False)


def _tree_depths(weights: np.ndarray) -> np.ndarray:
    """Leaf depths of a Huffman tree over `weights` (two-queue construction, no limit)."""
    k = weights.size
    order = np.argsort(weights, kind="stable")
    leaf = weights[order].tolist()
    merged: list[int] = []  # weights of internal nodes, created in non-decreasing order
    parent = [0] * (2 * k - 1)
    i = j = 0

    def take() -> tuple[int, int]:
        nonlocal i, j
        if i < k and (j >= len(merged) or leaf[i] <= merged[j]):
            i += 1
            return i - 1, leaf[i - 1]
        j += 1
        return k + j - 1, merged[j - 1]

    for node in range(k, 2 * k - 1):
        a, wa = take()
        b, wb = take()
        parent[a] = parent[b] = node
        merged.append(wa + wb)
    depth = [0] * (2 * k - 1)
    for node in range(2 * k - 3, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths = np.empty(k, dtype=np.int64)
    lengths[order] = depth[:k]
    return lengths


def huffman_code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8) for positive symbol `counts`, each at most `max_length`.

    A single symbol gets length 1. When the optimal tree is deeper than `max_length`, the
    counts are halved (rounding up) until it fits, which costs little for such skews.
    """
    weights = np.asarray(counts, dtype=np.int64).reshape(-1)
    k = weights.size
    if k == 0:
        return np.empty(0, dtype=np.uint8)
    if weights.min() < 1:
        raise ValueError("symbol counts must be positive")
    if not 1 <= max_length <= MAX_CODE_LENGTH or k > 1 << max_length:
        raise ValueError(f"cannot code {k} symbols with lengths of at most {max_length} bits")
    if k == 1:
        return np.ones(1, dtype=np.uint8)
    while True:
        lengths = _tree_depths(weights)
        if lengths.max() <= max_length:
            return lengths.astype(np.uint8)
        weights = (weights + 1) // 2


def _canonical(lengths: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Canonical order of the alphabet and each code left-justified to the longest length.

    Returns (order, starts, width): `order` sorts the alphabet by (length, symbol); in that
    order code i, padded on the right to `width` bits, is `starts[i]`.
    """
    order = np.lexsort((symbols, lengths))
    sorted_lengths = lengths[order].astype(np.int64)
    width = int(sorted_lengths[-1])
    spans = np.left_shift(np.int64(1), width - sorted_lengths)
    starts = np.cumsum(spans) - spans
    return order, starts, width


def _emit(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate `codes` (each `lengths` bits, at most 32) into a packed MSB-first stream."""
    columns = np.arange(32)
    pieces = []
    for begin in range(0, codes.size, _ENCODE_CHUNK):
        part = codes[begin : begin + _ENCODE_CHUNK].astype(">u4").view(np.uint8)
        bits = np.unpackbits(part.reshape(-1, 4), axis=1)
        keep = columns[None, :] >= 32 - lengths[begin : begin + _ENCODE_CHUNK, None]
        pieces.append(bits[keep])
    return np.packbits(np.concatenate(pieces))


def huffman_encode(symbols: torch.Tensor) -> dict[str, Any]:
    """Huffman-code the non-negative integers in `symbols` (flattened) into an entry dict."""
    flat = _as_int64(symbols, "symbols")
    if flat.size == 0:
        return {
            "symbols": torch.empty(0, dtype=torch.uint8),
            "lengths": torch.empty(0, dtype=torch.uint8),
            "count": 0,
            "data": torch.empty(0, dtype=torch.uint8),
        }
    if flat.min() < 0:
        raise ValueError(f"symbols must be non-negative, got {int(flat.min())}")
    alphabet, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    lengths = huffman_code_lengths(counts)
    order, starts, width = _canonical(lengths, alphabet)
    codes = np.empty(alphabet.size, dtype=np.int64)
    codes[order] = starts >> (width - lengths[order].astype(np.int64))
    inverse = inverse.reshape(-1)
    data = _emit(codes[inverse], lengths[inverse].astype(np.int64))
    return {
        "symbols": torch.from_numpy(alphabet).to(_narrowest_uint(int(alphabet[-1]))),
        "lengths": torch.from_numpy(lengths),
        "count": int(flat.size),
        "data": torch.from_numpy(data),
    }


def _windows(padded: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """The `width` bits of the stream starting at each bit position, as int64 values."""
    nbytes = (width + 7 + 7) // 8
    byte = positions >> 3
    word = np.zeros(positions.size, dtype=np.int64)
    for j in range(nbytes):
        word = (word << 8) | padded[byte + j]
    return (word >> (8 * nbytes - width - (positions & 7))) & ((1 << width) - 1)


def _byte_windows(padded: np.ndarray, width: int) -> np.ndarray:
    """`_windows` at every bit position of `padded` except its last 8 bytes (padding)."""
    nbytes = (width + 7 + 7) // 8
    size = padded.size - 8
    word = np.zeros(size, dtype=np.int64)
    for j in range(nbytes):
        word = (word << 8) | padded[j : j + size]
    shifts = 8 * nbytes - width - np.arange(8)
    return ((word[:, None] >> shifts) & ((1 << width) - 1)).reshape(-1)


def huffman_decode(entry: Mapping[str, Any]) -> torch.Tensor:
    """Decode an entry made by `huffman_encode` back into a 1-D int64 tensor."""
    count = int(entry["count"])
    symbols = _as_int64(entry["symbols"], "symbols")
    lengths = _as_int64(entry["lengths"], "lengths")
    data = entry["data"].detach().reshape(-1).cpu().numpy()
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    if symbols.size == 0 or symbols.size != lengths.size or data.dtype != np.uint8:
        raise ValueError("malformed Huffman entry: symbols, lengths and data do not match")
    if lengths.min() < 1 or lengths.max() > MAX_CODE_LENGTH:
        raise ValueError(f"code lengths must lie in [1, {MAX_CODE_LENGTH}]")
    order, starts, width = _canonical(lengths, symbols)
    sorted_lengths = lengths[order].astype(np.uint8)
    kraft = int(starts[-1]) + (1 << (width - int(sorted_lengths[-1])))
    if kraft > 1 << width:
        raise ValueError("malformed Huffman entry: code lengths violate the Kraft inequality")

    # Code length starting at every bit position; positions holding no valid code get 1.
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)]).astype(np.int64)
    step = np.empty(data.size * 8, dtype=np.uint8)
    chunk = _DECODE_CHUNK // 8
    for begin in range(0, data.size, chunk):
        values = _byte_windows(padded[begin : min(begin + chunk, data.size) + 8], width)
        index = np.searchsorted(starts, values, side="right") - 1
        step[8 * begin : 8 * begin + values.size] = np.where(
            values < kraft, sorted_lengths[index], 1
        )

    # Follow the chain of code starts; this is the only per-symbol Python work.
    jumps = step.tobytes()
    chain = [0] * count
    position = 0
    try:
        for i in range(count):
            chain[i] = position
            position += jumps[position]
    except IndexError:
        raise ValueError("malformed Huffman entry: the bit stream is too short") from None
    if (position + 7) // 8 != data.size:
        raise ValueError("malformed Huffman entry: the bit stream length does not match count")

    code_starts = np.asarray(chain, dtype=np.int64)
    values = _windows(padded, code_starts, width)
    if values.max() >= kraft:
        raise ValueError("malformed Huffman entry: the bit stream holds an invalid code")
    index = np.searchsorted(starts, values, side="right") - 1
    return torch.from_numpy(symbols[order][index])


def encoded_bytes(entry: Mapping[str, Any]) -> int:
    """Payload bytes of an encoded entry: its `data`, `symbols` and `lengths` tensors."""
    return sum(
        entry[key].numel() * entry[key].element_size() for key in ("data", "symbols", "lengths")
    )


def gaps_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions of True in the flattened `mask` as gaps: the first position, then the
    number of False entries between consecutive True ones (int64)."""
    positions = np.flatnonzero(mask.detach().reshape(-1).cpu().numpy())
    return torch.from_numpy(np.diff(positions, prepend=-1) - 1)


def mask_from_gaps(gaps: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `gaps_from_mask`: a flat bool mask of length `numel`."""
    values = _as_int64(gaps, "gaps")
    mask = np.zeros(numel, dtype=bool)
    if values.size:
        if values.min() < 0:
            raise ValueError("gaps must be non-negative")
        positions = np.cumsum(values + 1) - 1
        if positions[-1] >= numel:
            raise ValueError(f"gaps reach position {int(positions[-1])}, beyond numel {numel}")
        mask[positions] = True
    return torch.from_numpy(mask)
