"""The saved model artifact: what a user ships, and what `ratio/size` measures.

Each tensor is stored in whichever encoding is smallest for it: dense, a bitmask of
nonzeros plus their values, or CSR (row pointers, column indices, values) over the
tensor viewed as (rows, -1). Index dtypes are the narrowest that fit. The file is a
`torch.save` archive of plain containers, so it loads with `weights_only=True`.

Formats: `compress.artifact/1` holds a model exactly as `build_model` makes it from its
config. A model whose modules were shrunk (structured pruning removed channels) is
written as `compress.artifact/2`, which adds `structure`: the shape-defining attributes
of every module that differs from a fresh build (see `compress.reshape`), applied
before the weights load. Readers of /1 alone reject /2 files instead of failing on a
shape mismatch; this reader loads both.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.models import build_model
from compress.reshape import changed_structure, reshape

FORMAT = "compress.artifact/1"
RESHAPED_FORMAT = "compress.artifact/2"


def narrowest_uint(max_value: int) -> torch.dtype:
    for dtype, limit in ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.uint32, 2**32)):
        if max_value < limit:
            return dtype
    return torch.int64


def encoded_sizes(tensor: torch.Tensor) -> dict[str, int]:
    """Payload bytes of each encoding for `tensor` (what `encode` chooses between)."""
    n, nnz, item = tensor.numel(), int(tensor.count_nonzero()), tensor.element_size()
    sizes = {"dense": n * item}
    if tensor.is_floating_point() and n > 0:
        sizes["bitmask"] = math.ceil(n / 8) + nnz * item
        if tensor.dim() >= 2:
            rows, cols = tensor.shape[0], n // tensor.shape[0]
            ptr = narrowest_uint(nnz).itemsize
            idx = narrowest_uint(max(cols - 1, 0)).itemsize
            sizes["csr"] = (rows + 1) * ptr + nnz * (idx + item)
    return sizes


def encode(tensor: torch.Tensor) -> dict[str, Any]:
    """The smallest encoding of `tensor` as a dict of plain values and tensors."""
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
    """Inverse of `encode`: the exact original tensor."""
    kind = entry["encoding"]
    if kind == "dense":
        return entry["data"]
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


def save_artifact(
    model: nn.Module,
    path: Path,
    *,
    model_config: Mapping[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
) -> int:
    """Write `model` to `path` (atomically) and return the file's size in bytes."""
    spec = {
        "config": dict(model_config),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
    }
    changes = changed_structure(model, _fresh_shapes(model_config, tuple(input_shape), num_classes))
    payload: dict[str, Any] = {"format": RESHAPED_FORMAT if changes else FORMAT, "model": spec}
    if changes:
        payload["structure"] = changes
    payload["tensors"] = {name: encode(t) for name, t in model.state_dict().items()}
    atomic_torch_save(payload, path)
    return path.stat().st_size


def _fresh_shapes(
    config: Mapping[str, Any], input_shape: tuple[int, ...], classes: int
) -> nn.Module:
    """The model as its config builds it, for its shapes only: on the meta device (no
    memory, no weights drawn), or on the CPU with the caller's RNG state restored after."""
    try:
        with torch.device("meta"):
            return build_model(config, input_shape, classes)
    except Exception:  # a forward that needs real values; build it for real
        with torch.random.fork_rng(devices=[]):
            return build_model(config, input_shape, classes)


def load_artifact(path: Path) -> nn.Module:
    """Rebuild the model saved at `path` (on CPU, eval mode)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") not in (FORMAT, RESHAPED_FORMAT):
        raise ValueError(f"{path} is not a {FORMAT} file (nor a {RESHAPED_FORMAT} one)")
    spec = payload["model"]
    model = build_model(spec["config"], tuple(spec["input_shape"]), spec["num_classes"])
    state = {name: decode(e) for name, e in payload["tensors"].items()}
    reshape(model, payload.get("structure", {}), state)
    model.load_state_dict(state)
    return model.eval()


def encodings(path: Path) -> dict[str, str]:
    """Which encoding each tensor of the artifact at `path` uses."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return {name: e["encoding"] for name, e in payload["tensors"].items()}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename: never half a file.

    The file gets the permissions a plain write would (mkstemp alone makes it 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
