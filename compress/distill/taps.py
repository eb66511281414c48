"""Taps: intermediate outputs of a model, named by module path, recorded during a forward."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from compress.distill.config import LOGITS
from compress.errors import ConfigError


def resolve(model: nn.Module, pattern: str, role: str) -> str:
    """The one module path of `model` that `pattern` names (`logits`: the output)."""
    if pattern == LOGITS:
        return LOGITS
    paths = [path for path, _ in model.named_modules() if path]
    found = [path for path in paths if fnmatch.fnmatchcase(path, pattern)]
    if len(found) != 1:
        what = "matches no module" if not found else f"matches {len(found)} modules"
        raise ConfigError(
            f"distill: {role} tap '{pattern}' {what}; module paths: {', '.join(paths)}, {LOGITS}"
        )
    return found[0]


@contextlib.contextmanager
def recording(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of `model` stores the outputs of `paths` (module
    paths; `logits` is left to the caller) in the yielded dict. The paths of a model
    trained data-parallel are those of the module DistributedDataParallel wraps."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for path in dict.fromkeys(paths):
        if path == LOGITS:
            continue

        def store(module: nn.Module, args: object, output: torch.Tensor, path: str = path) -> None:
            outputs[path] = output

        handles.append(model.get_submodule(path).register_forward_hook(store))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
