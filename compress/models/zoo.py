"""Any torchvision classification model by name, randomly initialised.

torchvision is imported inside the builder only: it adds seconds to start-up, and most runs
use the small built-in models.
"""

from __future__ import annotations

import difflib

from torch import nn

from compress.errors import ConfigError
from compress.models.registry import register

_LIST_HINT = "python -c 'import torchvision.models as m; print(m.list_models(module=m))'"


@register("torchvision")
def torchvision_model(
    input_shape: tuple[int, ...], num_classes: int, arch: str = "resnet18", weights: None = None
) -> nn.Module:
    """torchvision ``get_model(arch, weights=None, num_classes=...)``.

    Pretrained weights are refused: there is no download here, and a checkpoint's classifier
    would not match ``num_classes`` anyway.
    """
    if weights is not None:
        raise ConfigError(
            f"model 'torchvision': weights={weights!r} is not supported; pretrained weights "
            "cannot be downloaded here, set weights: null"
        )
    import torchvision.models  # lazy on purpose, see module docstring

    names = torchvision.models.list_models(module=torchvision.models)
    if not isinstance(arch, str) or arch not in names:
        close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}; " if close else ""
        raise ConfigError(f"unknown torchvision arch {arch!r}; {hint}list all with: {_LIST_HINT}")
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
