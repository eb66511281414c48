"""Any torchvision classification model by name, randomly initialised or pretrained.

`weights` is a file (as for every model) or a weight name of the arch (`DEFAULT`,
`IMAGENET1K_V1`, `ResNet18_Weights.IMAGENET1K_V1`), read through torchvision's own cache
(`$TORCH_HOME/hub/checkpoints`). torchvision is imported only when such a config is made: it
adds seconds to start-up, and most runs use the small built-in models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compress.downloads import socket_timeout
from compress.errors import ConfigError
from compress.models.base import ModelConfig, Preprocessing

_LIST_HINT = "python -c 'import torchvision.models as m; print(m.list_models(module=m))'"
_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")
# Seconds a socket may stall while torchvision downloads weights, before it counts as offline.
_DOWNLOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TorchvisionConfig(ModelConfig):
    """torchvision `get_model(arch, weights=None, num_classes=...)`, then the weights."""

    name: ClassVar[str] = "torchvision"

    arch: str = "resnet18"

    def __post_init__(self) -> None:
        import torchvision.models  # lazy on purpose, see module docstring

        names = torchvision.models.list_models(module=torchvision.models)
        if not isinstance(self.arch, str) or self.arch not in names:
            close = difflib.get_close_matches(str(self.arch), names, n=5, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}; " if close else ""
            raise ConfigError(
                f"unknown torchvision arch {self.arch!r}; {hint}list all with: {_LIST_HINT}"
            )
        self._named_weights()  # a bad weight name fails here, before anything is built

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        import torchvision.models

        return torchvision.models.get_model(self.arch, weights=None, num_classes=num_classes)

    def _named_weights(self) -> Any:
        """The torchvision weight enum member `weights` names, or None for a file."""
        value = self.weights
        if value is None or Path(value).expanduser().exists() or "/" in value:
            return None
        if value.endswith(_FILE_SUFFIXES):
            return None  # a file that is not there: the file check says so
        import torchvision.models

        try:
            enum = torchvision.models.get_model_weights(self.arch)
        except (KeyError, ValueError):
            enum = None
        choices = ["DEFAULT", *(member.name for member in enum or ())]
        member = value.rpartition(".")[2]
        if enum is None or member not in choices:
            known = ", ".join(choices) if enum else "none"
            raise ConfigError(
                f"model 'torchvision': weights {value!r} is neither a file nor a weight of "
                f"{self.arch} (its weights: {known})"
            )
        return enum[member]

    def pretrained_state(self) -> dict[str, torch.Tensor] | None:
        weights = self._named_weights()
        if weights is None:
            return super().pretrained_state()
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        file = weights.url.rpartition("/")[2]
        try:
            with socket_timeout(_DOWNLOAD_TIMEOUT_S):
                return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
        except Exception as error:  # offline, a proxy, a corrupt cached file
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"model 'torchvision': weights {weights} are not in torchvision's cache and "
                f"could not be downloaded ({detail}); put {file} (from {weights.url}) in "
                f"{folder} (that is $TORCH_HOME/hub/checkpoints)"
            ) from error

    def weights_identity(self) -> str | None:
        weights = self._named_weights()
        if weights is None:
            return super().weights_identity()
        return f"torchvision:{weights}:{weights.url.rpartition('/')[2]}"

    def preprocessing(self) -> Preprocessing | None:
        weights = self._named_weights()
        if weights is None:
            return None
        transform = weights.transforms()
        return Preprocessing(
            mean=tuple(float(v) for v in transform.mean),
            std=tuple(float(v) for v in transform.std),
            resize=tuple(int(v) for v in transform.resize_size),
            crop=tuple(int(v) for v in transform.crop_size),
        )
