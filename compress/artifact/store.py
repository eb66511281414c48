"""The saved model artifact: what a user ships, and what `ratio/size` measures.

Each tensor is stored in the smallest exact encoding we have for it
(`compress.artifact.encodings`): dense, sparse (bitmask or CSR), or, for weights a method
quantized, N-bit codes with scales or a weight-sharing codebook. The file is a
`torch.save` archive of plain containers, so it loads with `weights_only=True`; all its
tensors live in one byte blob (`one_storage`), so small artifacts are not mostly zip
headers.

Formats: `compress.artifact/1` holds a model exactly as `build_model` makes it from its
config. A model whose modules were shrunk (structured pruning removed channels) is
written as `compress.artifact/2`, which adds `structure`: the shape-defining attributes
of every module that differs from a fresh build (see `compress.artifact.module_shapes`), applied
before the weights load. A model converted to integer kernels (int8 quantization) is
`compress.artifact/4` (`compress.artifact.converted`: the float model's structure, the
conversion recipe naming its backend, the converted model's tensors and the releases that
wrote it); `/3` is the torch.ao FX int8 format of before. Readers of an older format alone
reject newer files instead of failing on a mismatch; this reader loads all four.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.artifact.converted import (
    CONVERTED_FORMAT,
    LEGACY_INT8_FORMAT,
    converted_payload,
    load_converted,
)
from compress.artifact.encodings import (
    Entry,
    decode,
    encode,
    smallest,
)
from compress.artifact.module_shapes import changed_structure, reshape
from compress.models import build_model

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from compress.methods.base import Conversion

FORMAT = "compress.artifact/1"
RESHAPED_FORMAT = "compress.artifact/2"
FORMATS = (FORMAT, RESHAPED_FORMAT, LEGACY_INT8_FORMAT, CONVERTED_FORMAT)


def save_artifact(
    model: nn.Module,
    path: Path,
    *,
    model_config: Mapping[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    encodings: Mapping[str, Entry] | None = None,
    conversion: Conversion | None = None,
) -> int:
    """Write `model` to `path` (atomically) and return the file's size in bytes.

    `encodings` are a method's exact compact forms of some of the state's tensors (used
    where smaller than the generic ones); `conversion` says how a converted int8 model
    is rebuilt (format /3).
    """
    spec = {
        "config": dict(model_config),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
    }
    fresh = _fresh_shapes(model_config, tuple(input_shape), num_classes)
    if conversion is not None:
        payload: dict[str, Any] = {
            **converted_payload(model, conversion.recipe, conversion.float_model, fresh),
            "model": spec,
        }
    else:
        changes = changed_structure(model, fresh)
        payload = {"format": RESHAPED_FORMAT if changes else FORMAT, "model": spec}
        if changes:
            payload["structure"] = changes
        payload["tensors"] = _encode_state(model.state_dict(), encodings or {})
    atomic_torch_save(one_storage(payload), path)
    return path.stat().st_size


#: Byte alignment of each tensor in the blob (so that any dtype can view it there).
_ALIGN = 8
_REF = "blob_ref"


def one_storage(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every tensor moved into one byte buffer, `payload["blob"]`, and
    replaced by a reference (offset, dtype, shape) to its bytes there.

    `torch.save` writes each storage as its own zip record (~150 bytes of headers and
    padding each); an artifact of a few kilobytes made of dozens of small tensors would
    otherwise be largely overhead.
    """
    parts: list[torch.Tensor] = []
    size = 0

    def place(value: Any) -> Any:
        nonlocal size
        if isinstance(value, torch.Tensor) and not value.is_quantized:
            raw = value.detach().cpu().contiguous().flatten().view(torch.uint8)
            ref = {
                _REF: size,
                "dtype": str(value.dtype).removeprefix("torch."),
                "shape": list(value.shape),
            }
            padded = -(-raw.numel() // _ALIGN) * _ALIGN
            parts.append(torch.cat([raw, raw.new_zeros(padded - raw.numel())]))
            size += padded
            return ref
        if isinstance(value, Mapping):
            return {k: place(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(place(v) for v in value)
        return value

    placed = place(payload)
    placed["blob"] = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
    return placed


def from_one_storage(payload: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `one_storage` (a payload without a blob is returned as it is)."""
    if "blob" not in payload:
        return payload
    blob = payload.pop("blob")

    def restore(value: Any) -> Any:
        if isinstance(value, Mapping) and _REF in value:
            dtype = getattr(torch, value["dtype"])
            count = math.prod(value["shape"]) * torch.empty(0, dtype=dtype).element_size()
            start = value[_REF]
            return blob[start : start + count].view(dtype).view(value["shape"]).clone()
        if isinstance(value, Mapping):
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(restore(v) for v in value)
        return value

    return restore(payload)


def _encode_state(state: Mapping[str, torch.Tensor], given: Mapping[str, Entry]) -> dict:
    """Each tensor in its smallest encoding; a method's entry must decode to the tensor."""
    unknown = set(given) - set(state)
    if unknown:
        raise ValueError(f"encodings given for tensors the model lacks: {sorted(unknown)}")
    entries = {}
    for name, tensor in state.items():
        entry = encode(tensor)
        if name in given:
            if torch.equal(decode(given[name]), tensor.detach().cpu()):
                entry = smallest(given[name], entry)
            else:  # changed after the method encoded it (a later stage of a stack)
                log.warning("'%s' no longer matches its method's encoding; stored as is", name)
        entries[name] = entry
    return entries


def _fresh_shapes(
    config: Mapping[str, Any], input_shape: tuple[int, ...], classes: int
) -> nn.Module:
    """The model as its config builds it, for its shapes only: on the meta device (no
    memory, no weights drawn, and no forward: meta kernels of ops like GELU import
    seconds of torch's Python decompositions), or on the CPU with the caller's RNG state
    restored after."""
    try:
        with torch.device("meta"):
            return build_model(config, input_shape, classes, check_forward=False)
    except Exception:  # a forward that needs real values; build it for real
        with torch.random.fork_rng(devices=[]):
            return build_model(config, input_shape, classes)


def load_artifact(path: Path) -> nn.Module:
    """Rebuild the model saved at `path` (on CPU, eval mode)."""
    payload = from_one_storage(torch.load(path, map_location="cpu", weights_only=True))
    if payload.get("format") not in FORMATS:
        raise ValueError(f"{path} is not a compress artifact (one of {', '.join(FORMATS)})")
    spec = payload["model"]
    input_shape = tuple(spec["input_shape"])
    model = build_model(spec["config"], input_shape, spec["num_classes"])
    if payload["format"] in (LEGACY_INT8_FORMAT, CONVERTED_FORMAT):
        return load_converted(payload, model, path)
    state = {name: decode(e) for name, e in payload["tensors"].items()}
    reshape(model, payload.get("structure", {}), state)
    model.load_state_dict(state)
    return model.eval()


def read_payload(path: Path) -> dict[str, Any]:
    """The artifact's contents as plain containers and tensors (no model built)."""
    return from_one_storage(torch.load(path, map_location="cpu", weights_only=True))


def encodings(path: Path) -> dict[str, str]:
    """Which encoding each tensor of the artifact at `path` uses."""
    payload = read_payload(path)
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
