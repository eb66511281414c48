"""A rich progress bar for training phases: epochs, samples, loss and validation accuracy."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """One bar per training phase; advances in samples, shows loss and val accuracy."""

    def __init__(self, enabled: bool = True) -> None:
        console = Console(stderr=True)
        self._bar = RichProgress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("val acc {task.fields[val_acc]:.2%}"),
            TimeElapsedColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )
        self._epoch_samples: dict[TaskID, int] = {}
        self._epoch: dict[TaskID, int] = {}

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, label: str, epochs: int, samples_per_epoch: int) -> TaskID:
        task = self._bar.add_task(
            label,
            total=epochs * samples_per_epoch,
            epoch=0,
            epochs=epochs,
            loss=float("nan"),
            val_acc=float("nan"),
        )
        self._epoch_samples[task] = samples_per_epoch
        self._epoch[task] = 0
        return task

    def advance(self, task: TaskID, seen_this_epoch: int, loss: float) -> None:
        epoch = self._epoch[task]
        self._bar.update(
            task, completed=epoch * self._epoch_samples[task] + seen_this_epoch, loss=loss
        )

    def end_epoch(self, task: TaskID, loss: float, val_acc: float) -> None:
        epoch = self._epoch[task] = self._epoch[task] + 1
        self._bar.update(
            task,
            completed=epoch * self._epoch_samples[task],
            epoch=epoch,
            loss=loss,
            val_acc=val_acc,
        )

    def finish(self, task: TaskID) -> None:
        self._bar.refresh()
