"""Read a `.safetensors` file without the `safetensors` package.

The format is fixed and small (https://huggingface.co/docs/safetensors): an 8-byte
little-endian header length, a JSON header naming each tensor's dtype, shape and byte
range, then the raw little-endian bytes. Reading it here keeps a dependency out of the lab;
nothing in the file is executed, unlike a pickle.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip

_MAX_HEADER = 100_000_000


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the file by name; ValueError when the file is not safetensors."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise ValueError("its header length is not that of a safetensors file")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise ValueError("its header is not a mapping")
    body = memoryview(data)[8 + size :]
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None
        if dtype is None:
            raise ValueError(f"tensor {name!r} has an unknown dtype {entry!r}")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if end - begin != math.prod(shape) * dtype.itemsize or end > len(body):
            raise ValueError(f"tensor {name!r}: its byte range does not match its shape")
        raw = bytearray(body[begin:end])  # a copy: the tensor owns writable memory
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors
