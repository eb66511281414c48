"""Many small tensors as one flat tensor per dtype, and plain values as deflated JSON.

An artifact pays bookkeeping for every tensor it holds (its name, its encoding entry, a
reference into the file's one buffer: about a hundred bytes each). A converted model of
many small layers holds dozens of small tensors (a ViT's biases, norms and per-channel
scales: ~100), which made its int8 file ~7% bookkeeping; joined per dtype, they pay it
once per dtype. The codecs of `compress.quant.codecs` store their state through here.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from typing import Any

import torch

#: [name, dtype, shape] of each joined tensor, in the order they lie in the flat ones.
Layout = list[list[Any]]


def join(tensors: Mapping[str, torch.Tensor], prefix: str = "") -> tuple[dict[str, Any], Layout]:
    """One flat tensor per dtype, keyed `prefix + dtype` (`int8`, `float32`), and where
    each of `tensors` lies in them."""
    flat: dict[str, list[torch.Tensor]] = {}
    layout: Layout = []
    for name, tensor in tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        layout.append([name, dtype, list(tensor.shape)])
        flat.setdefault(dtype, []).append(tensor.detach().cpu().reshape(-1))
    return {prefix + dtype: torch.cat(parts) for dtype, parts in flat.items()}, layout


def split(
    joined: Mapping[str, torch.Tensor], layout: Layout, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The tensors `join` was given, by name, cut back out of the flat ones."""
    offsets: dict[str, int] = {}
    named = {}
    for name, dtype, shape in layout:
        count, start = math.prod(shape), offsets.get(dtype, 0)
        named[name] = joined[prefix + dtype][start : start + count].reshape(shape).clone()
        offsets[dtype] = start + count
    return named


def pack(values: Any) -> torch.Tensor:
    """Plain values (JSON's kinds) as a deflated byte tensor: an artifact's pickle would
    spell every key and string of a long list out."""
    text = json.dumps(values, separators=(",", ":")).encode()
    return torch.frombuffer(bytearray(zlib.compress(text, 9)), dtype=torch.uint8)


def unpack(packed: torch.Tensor) -> Any:
    return json.loads(zlib.decompress(packed.numpy().tobytes()))
