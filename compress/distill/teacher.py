"""The teacher: a frozen model whose outputs on the train split are computed once.

Without augmentation the teacher sees the same train images in every epoch, in memory or
streamed; its logits (and the features its taps record) are computed once, kept on the
device, and looked up by row. `forward_batches` counts the batches the teacher
actually ran, so a cache that is not used shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from compress.data import Split
from compress.distill.config import LOGITS
from compress.distill.taps import recording
from compress.models.eval_mode import model_device

log = logging.getLogger(__name__)

#: Features larger than this are recomputed each step instead of cached.
CACHE_LIMIT_BYTES = 2 * 1024**3


class Teacher:
    def __init__(self, model: nn.Module, *, batch_size: int = 1024) -> None:
        self.model = model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.taps: list[str] = []
        self.batch_size = batch_size
        self.forward_batches = 0
        self.cache: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None

    def use_taps(self, taps: Sequence[str]) -> None:
        """Record these module paths from now on (a cache made for other taps is dropped)."""
        taps = [t for t in dict.fromkeys(taps) if t != LOGITS]
        if taps != self.taps:
            self.taps, self.cache = taps, None

    def cache_train(self, split: Split) -> None:
        """Compute the outputs on every train row once (if they fit in memory); only for
        deterministic batches (no augmentation), which the caller checks."""
        if self.cache is None:
            self.cache = self._cached(split)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and tap outputs of the teacher on the batch `x` (eval mode, no grad)."""
        self.forward_batches += 1
        with recording(self.model, self.taps) as features:
            logits = self.model(x.to(model_device(self.model))).float()
        return logits.to(x.device), {k: _moved(v, x.device) for k, v in features.items()}

    def outputs(
        self, x: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's outputs for rows `idx` of the train split (the batch `x`)."""
        if self.cache is None:
            return self.run(x)
        logits, features = self.cache
        idx = idx.to(logits.device)
        return logits[idx], {k: v[idx] for k, v in features.items()}

    def _cached(self, split: Split) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        batches = iter(split.loader(self.batch_size))
        first = next(batches)
        parts = [self.run(first.x)]
        per_row = sum(f[0].numel() * 4 for f in parts[0][1].values()) + parts[0][0][0].numel() * 4
        if per_row * len(split) > CACHE_LIMIT_BYTES:
            log.info(
                "teacher: outputs too large to cache (%d MB); recomputed each step",
                per_row * len(split) // 2**20,
            )
            return None
        parts += [self.run(batch.x) for batch in batches]
        logits = torch.cat([p[0] for p in parts])
        features = {t: torch.cat([p[1][t] for p in parts]) for t in self.taps}
        log.info("teacher: outputs on %d train rows computed once and cached", len(split))
        return logits, features


def _moved(output: Any, device: torch.device) -> Any:
    """A tensor tap's output as float32 on `device`; anything else as it came (the objective's
    probe refuses it in one line, naming what it is)."""
    return output.float().to(device) if isinstance(output, torch.Tensor) else output
