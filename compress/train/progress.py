"""A rich progress bar for training, driven as a training callback: steps, loss, val acc."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from compress.train.callbacks import EpochStats


class Progress:
    """One bar per call of `fit`, advancing in optimizer steps (drawn only on a terminal)."""

    def __init__(self, enabled: bool = True) -> None:
        console = Console(stderr=True)
        self._bar = RichProgress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("{task.fields[reading]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )
        self._task: TaskID | None = None
        self._steps_per_epoch = 1
        self._epoch = 0

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def fit_started(self, phase: str, label: str, epochs: int, steps_per_epoch: int) -> None:
        self._steps_per_epoch, self._epoch = steps_per_epoch, 0
        self._task = self._bar.add_task(
            label, total=epochs * steps_per_epoch, epoch=0, epochs=epochs, reading=""
        )

    def step_done(self, step: int, running_loss: float) -> None:
        if self._task is not None:
            completed = self._epoch * self._steps_per_epoch + step
            self._bar.update(self._task, completed=completed, reading=self._reading(running_loss))

    def epoch_done(self, stats: EpochStats) -> None:
        if self._task is None:
            return
        self._epoch += 1
        self._bar.update(
            self._task,
            completed=self._epoch * self._steps_per_epoch,
            epoch=self._epoch,
            reading=self._reading(stats.loss, stats.val_acc),
        )

    def fit_done(self) -> None:
        self._bar.refresh()
        self._task = None

    @staticmethod
    def _reading(loss: float, val_acc: float | None = None) -> str:
        text = f"loss {loss:.4f}"
        return text if val_acc is None or val_acc != val_acc else f"{text}  val acc {val_acc:.2%}"
