"""Weights users hand us, as a state dict: `.pt`/`.pth` files read with
`torch.load(weights_only=True)` (nothing in them runs), `.safetensors` files, and
checkpoints holding the state under `state_dict`, `model` or `model_state_dict`."""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from compress.errors import ConfigError

#: Where checkpoints (Lightning, plain training scripts) keep the model's state.
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")

_SHOWN = 5


def weights_path(path: str) -> Path:
    """The existing file `path` names (relative to the working directory)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights: no file '{path}' (looked at {file.absolute()})")
    return file


def file_digest(path: str) -> str:
    """A hash of the file's bytes, for cache keys: other weights, another baseline."""
    digest = hashlib.sha256()
    with weights_path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]


def read_state(path: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in the file at `path`, with `prefix` stripped from its keys."""
    file = weights_path(path)
    where = f"model.weights '{path}'"
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            payload: Any = load_file(file)
        except (SafetensorError, OSError) as error:
            raise ConfigError(f"{where} is not a safetensors file ({error})") from error
    else:
        payload = _torch_load(file, where)
    return strip_prefix(unwrap(payload, where), prefix, where)


def _torch_load(file: Path, where: str) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            needs = f" (it needs {found.group(1)})" if found else ""
            raise ConfigError(
                f"{where} is a pickle that needs code to load{needs}, which "
                "torch.load(weights_only=True) refuses; save model.state_dict() instead, "
                "or a .safetensors file"
            ) from error
        raise ConfigError(f"{where} is not a torch file ({_first_line(error)})") from error
    except Exception as error:  # zip/pickle errors of a file that is not torch's at all
        raise ConfigError(f"{where} is not a torch file ({_first_line(error)})") from error


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unwrap(payload: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict itself, or the one a checkpoint holds under a known key."""
    if _is_state(payload):
        return dict(payload)
    if isinstance(payload, Mapping):
        for key in CHECKPOINT_KEYS:
            if _is_state(payload.get(key)):
                return dict(payload[key])
        keys = ", ".join(map(str, list(payload)[:_SHOWN]))
        raise ConfigError(
            f"{where} is not a state dict: a mapping of {keys} "
            f"with no state dict under {', '.join(CHECKPOINT_KEYS)}"
        )
    raise ConfigError(f"{where} is not a state dict: it holds a {type(payload).__name__}")


def _is_state(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def strip_prefix(
    state: dict[str, torch.Tensor], prefix: str | None, where: str
) -> dict[str, torch.Tensor]:
    """The keys that start with `prefix`, without it (other keys belong to something else)."""
    if not prefix:
        return state
    kept = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not kept:
        seen = ", ".join(list(state)[:_SHOWN])
        raise ConfigError(f"{where}: no key starts with weights_prefix '{prefix}' (keys: {seen})")
    return kept
