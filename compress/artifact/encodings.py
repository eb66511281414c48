"""How each tensor of an artifact is stored: the smallest exact encoding we know for it.

Generic encodings (any tensor): `dense`; `bitmask` of nonzeros plus their values; `csr`
(row pointers, column indices, values) over the tensor viewed as (rows, -1). Index dtypes
are the narrowest that fit.

Encodings that methods hand over for the weights they quantized (`Stage.encodings`):
- `packed`: N-bit codes on an affine grid with float16 scales per channel or group
  (`compress.quant.grid`): 4-bit weights take 4 bits;
- `codebook`: weight sharing, a table of centroids and one code per weight.
Both store the codes either at a fixed width or Huffman-coded, and, for sparse tensors,
only the nonzeros, their positions as a bitmask or as Huffman-coded gaps (Deep
Compression's relative indices) — whichever is smaller.

State values of converted int8 models (`encode_value`): quantized tensors keep their
integer codes (themselves encoded as above, so sparse int8 stays sparse) and their
scales and zero points; tuples (packed parameters) and plain values pass through.

Every entry is a dict of plain values and tensors, so artifacts load with
`weights_only=True`; `payload_bytes` is what an entry costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from compress.artifact.bitpack import pack_bits, unpack_bits
from compress.artifact.huffman import gaps_from_mask, huffman_decode, huffman_encode, mask_from_gaps
from compress.quant.grid import Grid, dequantize
from compress.quant.kmeans import shared_weights

Entry = dict[str, Any]


def narrowest_uint(max_value: int) -> torch.dtype:
    for dtype, limit in ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.uint32, 2**32)):
        if max_value < limit:
            return dtype
    return torch.int64


def payload_bytes(entry: Any) -> int:
    """Bytes of tensor data an entry holds (nested entries included)."""
    if isinstance(entry, torch.Tensor):
        return entry.numel() * entry.element_size()
    if isinstance(entry, Mapping):
        return sum(payload_bytes(v) for v in entry.values())
    if isinstance(entry, list | tuple):
        return sum(payload_bytes(v) for v in entry)
    return 0


def encoded_sizes(tensor: torch.Tensor) -> dict[str, int]:
    """Payload bytes of each generic encoding for `tensor` (what `encode` chooses between)."""
    n, nnz, item = tensor.numel(), int(tensor.count_nonzero()), tensor.element_size()
    sizes = {"dense": n * item}
    if tensor.dtype != torch.bool and n > 0:
        sizes["bitmask"] = math.ceil(n / 8) + nnz * item
        if tensor.dim() >= 2:
            rows, cols = tensor.shape[0], n // tensor.shape[0]
            ptr = narrowest_uint(nnz).itemsize
            idx = narrowest_uint(max(cols - 1, 0)).itemsize
            sizes["csr"] = (rows + 1) * ptr + nnz * (idx + item)
    return sizes


def encode(tensor: torch.Tensor) -> Entry:
    """The smallest generic encoding of `tensor`."""
    tensor = tensor.detach().cpu().contiguous()
    sizes = encoded_sizes(tensor)
    kind = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    shape = list(tensor.shape)
    if kind == "dense":
        return {"encoding": "dense", "data": tensor}
    flat = tensor.flatten()
    if kind == "bitmask":
        nonzero = flat != 0
        bits = torch.from_numpy(np.packbits(nonzero.numpy()))
        return {"encoding": "bitmask", "shape": shape, "bits": bits, "values": flat[nonzero]}
    matrix = tensor.reshape(shape[0], -1)
    rows, cols = matrix.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=matrix.shape[0])
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return {
        "encoding": "csr",
        "shape": shape,
        "row_ptr": row_ptr.to(narrowest_uint(int(row_ptr[-1]))),
        "cols": cols.to(narrowest_uint(max(matrix.shape[1] - 1, 0))),
        "values": matrix[rows, cols],
    }


def decode(entry: Mapping[str, Any]) -> torch.Tensor:
    """Inverse of `encode` and of the method encodings: the exact original tensor."""
    kind = entry["encoding"]
    if kind == "dense":
        return entry["data"]
    if kind in ("packed", "codebook"):
        return _decode_coded(entry)
    values = entry["values"]
    shape = entry["shape"]
    if kind == "bitmask":
        n = math.prod(shape)
        nonzero = torch.from_numpy(np.unpackbits(entry["bits"].numpy(), count=n).astype(bool))
        flat = torch.zeros(n, dtype=values.dtype)
        flat[nonzero] = values
        return flat.view(shape)
    if kind == "csr":
        row_ptr = entry["row_ptr"].to(torch.long)
        matrix = torch.zeros(shape[0], math.prod(shape[1:]), dtype=values.dtype)
        rows = torch.repeat_interleave(torch.arange(shape[0]), row_ptr.diff())
        matrix[rows, entry["cols"].to(torch.long)] = values
        return matrix.view(shape)
    raise ValueError(f"unknown tensor encoding '{kind}'")


def smallest(*entries: Entry) -> Entry:
    """The entry with the fewest payload bytes (the first among equals)."""
    return min(entries, key=payload_bytes)


# --- codes and positions: the parts shared by `packed` and `codebook` -------------------


def encode_codes(codes: torch.Tensor, bits: int) -> Entry:
    """Unsigned codes (1-D) at a fixed width of `bits`, or Huffman-coded if smaller."""
    codes = codes.flatten()
    fixed = {"kind": "fixed", "bits": bits, "count": codes.numel(), "data": pack_bits(codes, bits)}
    return smallest(fixed, {"kind": "huffman", **huffman_encode(codes)})


def decode_codes(entry: Mapping[str, Any]) -> torch.Tensor:
    if entry["kind"] == "fixed":
        return unpack_bits(entry["data"], entry["bits"], entry["count"])
    return huffman_decode(entry)


def encode_positions(mask: torch.Tensor) -> Entry:
    """Where the stored values go: a bitmask, or Huffman-coded gaps, whichever is smaller."""
    flat = mask.flatten().cpu()
    bitmask = {"kind": "bitmask", "bits": torch.from_numpy(np.packbits(flat.numpy()))}
    return smallest(bitmask, {"kind": "gaps", **huffman_encode(gaps_from_mask(flat))})


def decode_positions(entry: Mapping[str, Any], numel: int) -> torch.Tensor:
    if entry["kind"] == "bitmask":
        return torch.from_numpy(np.unpackbits(entry["bits"].numpy(), count=numel).astype(bool))
    return mask_from_gaps(huffman_decode(entry), numel)


def _with_positions(header: Entry, codes: torch.Tensor, bits: int, keep: torch.Tensor) -> Entry:
    """`header` plus the codes: all of them, or only those at `keep` with their positions."""
    full = {**header, "positions": None, "codes": encode_codes(codes, bits)}
    if bool(keep.all()):
        return full
    sparse = {
        **header,
        "positions": encode_positions(keep),
        "codes": encode_codes(codes.flatten()[keep.flatten()], bits),
    }
    return smallest(full, sparse)


def packed_entry(grid: Grid) -> Entry:
    """A tensor on an N-bit grid: codes (zeros, c == z, may be left out) and scales."""
    header: Entry = {
        "encoding": "packed",
        "shape": list(grid.shape),
        "bits": grid.bits,
        "group_size": grid.codes.shape[1],
        "scale": grid.scale.cpu(),
        "zero": None if grid.symmetric else grid.zero.cpu(),
    }
    keep = grid.codes != grid.zero[:, None]
    return _with_positions(header, grid.codes.cpu(), grid.bits, keep.cpu())


def codebook_entry(centroids: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> Entry:
    """Weight sharing: `codes` (one per True of `mask`) index `centroids`; zeros elsewhere."""
    bits = max(1, math.ceil(math.log2(max(centroids.numel(), 2))))
    mask = mask.cpu()
    return {
        "encoding": "codebook",
        "shape": list(mask.shape),
        "bits": bits,
        "centroids": centroids.detach().float().cpu(),
        "positions": None if bool(mask.all()) else encode_positions(mask),
        "codes": encode_codes(codes.cpu(), bits),
    }


def _decode_coded(entry: Mapping[str, Any]) -> torch.Tensor:
    shape = entry["shape"]
    numel = math.prod(shape)
    codes = decode_codes(entry["codes"])
    if entry["encoding"] == "codebook":
        positions = entry["positions"]
        if positions is None:
            mask = torch.ones(shape, dtype=torch.bool)
        else:
            mask = decode_positions(positions, numel).view(shape)
        return shared_weights(entry["centroids"], codes, mask)
    groups = numel // entry["group_size"]
    scale = entry["scale"]
    zero = entry["zero"]
    if zero is None:
        zero = torch.full((groups,), 2 ** (entry["bits"] - 1), dtype=torch.uint8)
    if entry["positions"] is not None:
        full = zero.to(torch.int64).repeat_interleave(entry["group_size"])
        full[decode_positions(entry["positions"], numel)] = codes
        codes = full
    return dequantize(codes.view(groups, -1), scale, zero).view(shape)


# --- state values of converted (int8) models --------------------------------------------


def encode_value(value: Any) -> Entry:
    """Any value of a converted model's state dict (see the module docstring)."""
    if isinstance(value, torch.Tensor) and value.is_quantized:
        return _encode_qtensor(value)
    if isinstance(value, torch.Tensor):
        return encode(value)
    if isinstance(value, tuple | list):
        return {"encoding": "tuple", "items": [encode_value(v) for v in value]}
    return {"encoding": "raw", "value": value}


def decode_value(entry: Mapping[str, Any]) -> Any:
    kind = entry["encoding"]
    if kind == "qtensor":
        return _decode_qtensor(entry)
    if kind == "tuple":
        return tuple(decode_value(e) for e in entry["items"])
    if kind == "raw":
        return entry["value"]
    return decode(entry)


def _compact(values: torch.Tensor) -> torch.Tensor:
    """float64 scales as float32 and int64 zero points as int32 when that loses nothing."""
    narrow = values.float() if values.is_floating_point() else values.to(torch.int32)
    return narrow if torch.equal(narrow.to(values.dtype), values) else values


def _encode_qtensor(tensor: torch.Tensor) -> Entry:
    tensor = tensor.detach().cpu()
    entry: Entry = {"encoding": "qtensor", "dtype": str(tensor.dtype).removeprefix("torch.")}
    entry["int"] = encode(tensor.int_repr())
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        entry |= {"scheme": "tensor", "scale": tensor.q_scale(), "zero": tensor.q_zero_point()}
    else:
        entry |= {
            "scheme": "channel",
            "scale": _compact(tensor.q_per_channel_scales()),
            "zero": _compact(tensor.q_per_channel_zero_points()),
            "axis": tensor.q_per_channel_axis(),
        }
    return entry


def _decode_qtensor(entry: Mapping[str, Any]) -> torch.Tensor:
    codes = decode(entry["int"])
    if entry["scheme"] == "tensor":
        return torch._make_per_tensor_quantized_tensor(codes, entry["scale"], entry["zero"])
    return torch._make_per_channel_quantized_tensor(
        codes, entry["scale"].double(), entry["zero"].long(), entry["axis"]
    )
