"""Models: `build_model(cfg, input_shape, num_classes)` for every model in the lab.

Each model is a `ModelConfig` subclass in a module of this package (found by its `name`
without any import list), or anywhere else through `_target_`.
"""

from compress.models.base import ModelConfig, Preprocessing, model_names, parse_model
from compress.models.build import build_model, weights_key

__all__ = [
    "ModelConfig",
    "Preprocessing",
    "build_model",
    "model_names",
    "parse_model",
    "weights_key",
]
