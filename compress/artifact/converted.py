"""Artifacts of models converted to integer kernels (int8), by backend.

`compress.artifact/4`: the float model's structure (module shapes, as for a shrunk
model), the conversion recipe (plain values; its `backend` names the codec in
`compress.quant.codecs` that saved the model and rebuilds it), the converted model's
tensors in the store's encodings, the backend's plain extras (a PT2E model's graph), and
`writer`: the releases of compress, torch and torchao that wrote it.

`compress.artifact/3` (compress before the torchao flow) holds a torch.ao FX int8 model;
it loads while torch still ships `torch.ao.quantization`'s FX API, and is refused in one
line once it does not.
"""

from __future__ import annotations

import importlib.metadata
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.artifact.encodings import decode_value, encode_value
from compress.artifact.module_shapes import changed_structure, reshape
from compress.quant.codecs import codec

CONVERTED_FORMAT = "compress.artifact/4"
LEGACY_INT8_FORMAT = "compress.artifact/3"


def writer() -> dict[str, str]:
    """The releases that write an artifact now."""
    versions = {}
    for package in ("compress", "torch", "torchao"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def converted_payload(
    model: nn.Module, recipe: Mapping[str, Any], float_model: nn.Module, fresh: nn.Module
) -> dict[str, Any]:
    """The `/4` payload (without its `model` spec) of `model`, converted from `float_model`."""
    tensors, extra = codec(recipe["backend"]).portable_state(model)
    structure = changed_structure(float_model, fresh)
    # The float model's shapes matter to a reader only where its structure was changed.
    shapes = {n: list(t.shape) for n, t in float_model.state_dict().items()} if structure else {}
    return {
        "format": CONVERTED_FORMAT,
        "structure": structure,
        "float_shapes": shapes,
        "conversion": dict(recipe),
        "tensors": {name: encode_value(value) for name, value in tensors.items()},
        "extra": extra,
        "writer": writer(),
    }


def load_converted(payload: Mapping[str, Any], model: nn.Module, path: Path) -> nn.Module:
    """The converted model of a `/3` or `/4` payload; `model` is a fresh float build."""
    shapes = {n: torch.empty(s, device="meta") for n, s in payload["float_shapes"].items()}
    reshape(model, payload["structure"], shapes)
    input_shape = tuple(payload["model"]["input_shape"])
    if payload["format"] == LEGACY_INT8_FORMAT:
        return _load_legacy(payload, model, input_shape, path)
    recipe = payload["conversion"]
    tensors = {name: decode_value(entry) for name, entry in payload["tensors"].items()}
    try:
        backend = codec(recipe.get("backend", "?"))
    except ValueError as error:
        raise ValueError(f"{path}: {error}; written by {_releases(payload)}") from error
    return backend.rebuild(model, recipe, tensors, payload["extra"], input_shape).eval()


def _releases(payload: Mapping[str, Any]) -> str:
    written = payload.get("writer") or {}
    return ", ".join(f"{k} {v}" for k, v in written.items()) or "an unrecorded release"


def _load_legacy(
    payload: Mapping[str, Any], model: nn.Module, input_shape: tuple[int, ...], path: Path
) -> nn.Module:
    try:
        from compress.quant.fx_legacy import load_portable_state, rebuild
    except ImportError as error:
        raise ValueError(
            f"{path} is a torch.ao FX int8 artifact ({LEGACY_INT8_FORMAT}, written by compress "
            f"before its torchao flow) and this torch has no torch.ao.quantization to rebuild "
            f"it: re-run its experiment (compress-rerun) to write it as {CONVERTED_FORMAT}"
        ) from error
    converted = rebuild(model, payload["conversion"], input_shape)
    state = OrderedDict((n, decode_value(e)) for n, e in payload["tensors"].items())
    state._metadata = OrderedDict(payload["versions"])  # type: ignore[attr-defined]
    load_portable_state(converted, state)
    return converted.eval()
