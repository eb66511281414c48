"""What watches training (a progress bar, the tracker's per-epoch metrics), kept out of
the signatures of the code that trains.

`fit` reports to every callback active where it runs; the pipeline makes callbacks active
for a phase of its work with `observing(...)`, so a schedule, a distillation objective or
a lottery's rewinding trains without being handed them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_acc: float
    val_acc: float
    lr: float
    seconds: float


class TrainCallback(Protocol):
    """Hooks of one call of `fit`; `phase` names the pipeline's step (baseline, finetune)."""

    def fit_started(self, phase: str, label: str, epochs: int, steps_per_epoch: int) -> None: ...

    def step_done(self, step: int, running_loss: float) -> None:
        """Every few optimizer steps (the running loss costs a device sync)."""

    def epoch_done(self, stats: EpochStats) -> None: ...

    def fit_done(self) -> None: ...


_ACTIVE: ContextVar[tuple[TrainCallback, ...]] = ContextVar("train_callbacks", default=())
_PHASE: ContextVar[str] = ContextVar("train_phase", default="train")


@contextlib.contextmanager
def observing(*callbacks: TrainCallback, phase: str | None = None) -> Iterator[None]:
    """Inside the block, `fit` reports to `callbacks` too, as part of `phase`."""
    tokens = [_ACTIVE.set(_ACTIVE.get() + callbacks)]
    phase_token = _PHASE.set(phase) if phase is not None else None
    try:
        yield
    finally:
        if phase_token is not None:
            _PHASE.reset(phase_token)
        for token in tokens:
            _ACTIVE.reset(token)


def active() -> tuple[tuple[TrainCallback, ...], str]:
    """The callbacks `fit` reports to here, and the phase they belong to."""
    return _ACTIVE.get(), _PHASE.get()
