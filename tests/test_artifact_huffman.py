"""Bit packing and canonical Huffman coding: exact round trips, sizes and bit layout."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from compress.artifact.bitpack import pack_bits, packed_size, unpack_bits
from compress.artifact.huffman import (
    MAX_CODE_LENGTH,
    encoded_bytes,
    gaps_from_mask,
    huffman_code_lengths,
    huffman_decode,
    huffman_encode,
    mask_from_gaps,
)


def bits_to_bytes(bits: str) -> torch.Tensor:
    bits += "0" * (-len(bits) % 8)
    return torch.tensor(
        [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)], dtype=torch.uint8
    )


def reference_codes(symbols: list[int], lengths: list[int]) -> dict[int, str]:
    """Canonical codes written out the textbook way: sorted by (length, symbol)."""
    pairs = sorted(zip(lengths, symbols, strict=True))
    codes: dict[int, str] = {}
    code, previous = 0, pairs[0][0]
    for i, (length, symbol) in enumerate(pairs):
        if i:
            code = (code + 1) << (length - previous)
        codes[symbol] = format(code, f"0{length}b")
        previous = length
    return codes


def empirical_entropy(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def table_bytes(entry: dict) -> int:
    return sum(entry[k].numel() * entry[k].element_size() for k in ("symbols", "lengths"))


# --- bit packing -------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_round_trip_every_width(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for count in (0, 1, 7, 8, 9, 13, 1003):
        codes = torch.from_numpy(rng.integers(0, 1 << bits, count))
        if count:
            codes[0] = (1 << bits) - 1  # the largest code must fit
        packed = pack_bits(codes, bits)
        assert packed.dtype == torch.uint8 and packed.ndim == 1
        assert packed.numel() == packed_size(count, bits) == math.ceil(count * bits / 8)
        assert torch.equal(unpack_bits(packed, bits, count), codes)


def test_pack_layout_is_msb_first_and_flattened() -> None:
    codes = torch.tensor([[5, 0], [7, 1]], dtype=torch.int32)
    expected = "".join(format(v, "03b") for v in (5, 0, 7, 1))
    assert torch.equal(pack_bits(codes, 3), bits_to_bytes(expected))
    out = unpack_bits(pack_bits(codes, 3), 3, 4)
    assert out.dtype == torch.int64 and out.tolist() == [5, 0, 7, 1]


def test_pack_accepts_narrow_dtypes() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(codes, 8), 8, 256), codes.long())
    assert pack_bits(codes, 8).tolist() == list(range(256))


@pytest.mark.parametrize(
    ("codes", "bits"),
    [
        (torch.tensor([0, 8]), 3),
        (torch.tensor([-1, 2]), 3),
        (torch.tensor([1 << 16]), 16),
        (torch.tensor([0.5]), 4),
        (torch.tensor([1]), 0),
        (torch.tensor([1]), 17),
    ],
)
def test_pack_rejects_bad_input(codes: torch.Tensor, bits: int) -> None:
    with pytest.raises(ValueError):
        pack_bits(codes, bits)


def test_unpack_rejects_short_data() -> None:
    with pytest.raises(ValueError):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 5, 4)


# --- Huffman coding ----------------------------------------------------------------------


def round_trip(values: torch.Tensor) -> dict:
    entry = huffman_encode(values)
    decoded = huffman_decode(entry)
    assert decoded.dtype == torch.int64 and decoded.ndim == 1
    assert torch.equal(decoded, values.reshape(-1).long())
    assert entry["count"] == values.numel()
    assert entry["lengths"].dtype == torch.uint8
    assert entry["lengths"].numel() == entry["symbols"].numel()
    return entry


def sparse_mask(numel: int, density: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(numel) < density)


def test_round_trip_gaps_of_sparse_mask() -> None:
    mask = sparse_mask(400_000, 0.08, seed=0)
    gaps = gaps_from_mask(mask)
    entry = round_trip(gaps)
    assert torch.equal(mask_from_gaps(huffman_decode(entry), mask.numel()), mask)


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_distributions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    round_trip(torch.from_numpy(rng.integers(0, 256, 50_000)))  # uniform cluster codes
    round_trip(torch.from_numpy(rng.integers(0, 16, (37, 41)).astype(np.uint8)))
    round_trip(torch.from_numpy(rng.zipf(1.3, 20_000) % 5000))  # heavy skew, long codes
    round_trip(torch.from_numpy(rng.integers(0, 2, 777)))
    round_trip(torch.from_numpy(rng.integers(0, 3000, rng.integers(1, 50))))


def test_round_trip_edge_cases() -> None:
    empty = round_trip(torch.empty(0, dtype=torch.int64))
    assert empty["count"] == 0 and encoded_bytes(empty) == 0
    for count in (1, 9, 1000):
        single = round_trip(torch.full((count,), 42))
        assert single["lengths"].tolist() == [1]
        assert single["data"].numel() == math.ceil(count / 8)
    big = round_trip(torch.tensor([0, 2**40, 2**40, 7]))
    assert big["symbols"].dtype == torch.int64


def test_symbol_dtype_is_narrowest() -> None:
    for top, dtype in ((255, torch.uint8), (256, torch.uint16), (70_000, torch.uint32)):
        entry = huffman_encode(torch.tensor([0, top, top]))
        assert entry["symbols"].dtype == dtype
        assert entry["symbols"].tolist() == [0, top]


def test_bit_stream_is_canonical() -> None:
    values = [3, 3, 3, 3, 1, 1, 9, 200, 3, 1]
    entry = huffman_encode(torch.tensor(values))
    symbols, lengths = entry["symbols"].tolist(), entry["lengths"].tolist()
    assert sorted(symbols) == symbols == [1, 3, 9, 200]
    codes = reference_codes(symbols, lengths)
    assert torch.equal(entry["data"], bits_to_bytes("".join(codes[v] for v in values)))


def test_decodes_longest_codes() -> None:
    # A hand-made complete code with lengths 1, 2, ..., 32, 32: the deepest the coder allows.
    lengths = [*range(1, MAX_CODE_LENGTH + 1), MAX_CODE_LENGTH]
    symbols = list(range(100, 100 + len(lengths)))
    codes = reference_codes(symbols, lengths)
    rng = np.random.default_rng(5)
    values = [int(v) for v in rng.choice(symbols, 500)] + [symbols[-1], symbols[-2], symbols[0]]
    entry = {
        "symbols": torch.tensor(symbols, dtype=torch.uint8),
        "lengths": torch.tensor(lengths, dtype=torch.uint8),
        "count": len(values),
        "data": bits_to_bytes("".join(codes[v] for v in values)),
    }
    assert huffman_decode(entry).tolist() == values


def test_code_lengths_are_optimal_and_limited() -> None:
    assert huffman_code_lengths(np.array([4, 1, 2, 1])).tolist() == [1, 3, 2, 3]
    fibonacci = [1, 1]
    while len(fibonacci) < 45:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    counts = np.array(fibonacci)
    assert int(huffman_code_lengths(counts, max_length=32).max()) <= 32
    limited = huffman_code_lengths(counts, max_length=12).astype(np.int64)
    assert limited.max() <= 12
    assert np.sum(2.0**-limited) == 1.0  # still a complete prefix code


def test_huffman_beats_fixed_width_on_skewed_codes() -> None:
    rng = np.random.default_rng(1)
    values = np.minimum(rng.geometric(0.3, 100_000) - 1, 255)
    entry = round_trip(torch.from_numpy(values))
    fixed = packed_size(values.size, int(values.max()).bit_length())
    assert encoded_bytes(entry) < 0.75 * fixed
    entropy_bits = values.size * empirical_entropy(values)
    payload_bits = 8 * entry["data"].numel()
    assert entropy_bits <= payload_bits <= entropy_bits + values.size + 8
    assert 8 * encoded_bytes(entry) <= entropy_bits + values.size + 8 * (table_bytes(entry) + 1)


def test_entry_survives_weights_only_load() -> None:
    values = torch.from_numpy(np.random.default_rng(2).integers(0, 70_000, 3000))
    entry = huffman_encode(values)
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(huffman_decode(loaded), values)


def test_huffman_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        huffman_encode(torch.tensor([1, -2]))
    with pytest.raises(ValueError):
        huffman_encode(torch.tensor([1.0, 2.0]))
    entry = huffman_encode(torch.from_numpy(np.random.default_rng(3).integers(0, 50, 1000)))
    with pytest.raises(ValueError):
        huffman_decode({**entry, "data": entry["data"][:-10]})
    with pytest.raises(ValueError):
        huffman_decode({**entry, "count": entry["count"] + 500})


# --- gaps --------------------------------------------------------------------------------


def test_gaps_round_trip_and_values() -> None:
    mask = torch.tensor([[False, True, True], [False, False, True]])
    gaps = gaps_from_mask(mask)
    assert gaps.dtype == torch.int64 and gaps.tolist() == [1, 0, 2]
    assert torch.equal(mask_from_gaps(gaps, 6), mask.reshape(-1))
    for m in (torch.zeros(10, dtype=torch.bool), torch.ones(10, dtype=torch.bool)):
        assert torch.equal(mask_from_gaps(gaps_from_mask(m), 10), m)
    assert gaps_from_mask(torch.zeros(0, dtype=torch.bool)).numel() == 0
    mask = sparse_mask(10_000, 0.08, seed=4)
    assert torch.equal(mask_from_gaps(gaps_from_mask(mask), 10_000), mask)


def test_mask_from_gaps_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        mask_from_gaps(torch.tensor([3, 5]), 9)
    with pytest.raises(ValueError):
        mask_from_gaps(torch.tensor([-1]), 9)
