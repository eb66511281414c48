"""Model registry: ``build_model(cfg, input_shape, num_classes)`` for every model in the lab.

A model is one function decorated with ``@register("name")`` in a module imported below;
``build_model`` validates the options against its signature and dry-runs a forward pass so that
a model that does not fit the data fails at start-up with one clear line, not mid-training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compress.errors import ConfigError
from compress.models.eval_mode import eval_mode
from compress.models.registry import REGISTRY, check_options

# Imported for their @register side effect; this order is the order of MODEL_NAMES.
# isort: off
from compress.models import mlp, lenet, small_cnn, resnet_cifar, rnn, zoo  # noqa: F401
# isort: on

__all__ = ["MODEL_NAMES", "build_model"]

log = logging.getLogger(__name__)

MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)

_DRY_BATCH = 2


def build_model(
    cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build the model ``cfg["name"]`` with the remaining keys as options, on CPU, train mode.

    Weights come from torch's global RNG, so the caller's seed makes the build reproducible.
    """
    options = dict(cfg)
    name = options.pop("name", None)
    if not isinstance(name, str) or name not in REGISTRY:
        what = "model config has no 'name'" if name is None else f"unknown model {name!r}"
        raise ConfigError(f"{what}; choose one of: {', '.join(REGISTRY)}")
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    builder = REGISTRY[name]
    check_options(name, builder, options)
    model = builder(shape, num_classes, **options)
    _dry_run(name, model, shape, num_classes)
    log.debug(
        "built model %s for input %s: %d parameters",
        name,
        shape,
        sum(p.numel() for p in model.parameters()),
    )
    return model


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ConfigError(f"input shape must be positive integers, got {shape}")
    return shape


def _dry_run(name: str, model: nn.Module, shape: tuple[int, ...], num_classes: int) -> None:
    """One no-grad eval-mode forward on zeros; eval mode leaves BN running stats untouched."""
    prefix = f"model {name!r} does not fit input shape {shape}"
    try:
        with eval_mode(model), torch.no_grad():
            out = model(torch.zeros(_DRY_BATCH, *shape))
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[0] if lines else type(exc).__name__
        raise ConfigError(f"{prefix}: {detail}") from exc
    expected = (_DRY_BATCH, num_classes)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{prefix}: output is {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != expected:
        raise ConfigError(f"{prefix}: output shape {tuple(out.shape)}, expected {expected}")
