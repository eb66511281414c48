"""`build_model(cfg, input_shape, num_classes)`: the one way every part of the lab gets a model.

It validates the config, then dry-runs a forward pass, so that a model that does not fit
the data fails at start-up with one clear line, not mid-training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from compress.errors import ConfigError
from compress.models.base import parse_model
from compress.models.eval_mode import eval_mode
from compress.models.load_state import load_into

log = logging.getLogger(__name__)

_DRY_BATCH = 2


def build_model(
    cfg: Mapping[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    load_weights: bool = False,
    check_forward: bool = True,
) -> nn.Module:
    """Build the model `cfg` names (`name` or `_target_`, the rest its options), on CPU,
    in train mode.

    Weights come from torch's global RNG, so the caller's seed makes the build reproducible;
    with `load_weights` the config's `weights` (if any) replace them. Rebuilding a saved
    artifact does not load them: its own state follows. `check_forward=False` skips the
    forward on zeros that proves the model fits its inputs (for a build of shapes only).
    """
    config = parse_model(cfg)
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    name = config.label()
    model = config.build(shape, num_classes)
    if load_weights:
        state = config.pretrained_state()
        if state is not None:
            where = f"model.weights '{config.weights}'"
            load_into(
                model, state, num_classes=num_classes, reset_head=config.reset_head, where=where
            )
    if check_forward or any(is_lazy(p) for p in model.parameters()):  # lazies need it
        _dry_run(name, model, shape, num_classes)
    log.debug(
        "built model %s for input %s: %d parameters",
        name,
        shape,
        sum(p.numel() for p in model.parameters()),
    )
    return model


def weights_key(cfg: Mapping[str, Any]) -> str | None:
    """What identifies the weights `cfg` loads (a hash of the file), for cache keys."""
    return parse_model(cfg).weights_identity()


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
