"""A rich progress bar for training, driven as a training callback.

It counts optimizer steps (and says which epoch), shows the loss and validation accuracy
once there is a reading (never a placeholder `nan`), and an ETA from the average time per
step so far (rich's own estimate forgets samples older than 30 s, so a slow epoch leaves
it blank). While the bar is drawn, log handlers that write to the terminal print through
the bar's console, above the bar, instead of breaking into the line it redraws.
"""

from __future__ import annotations

import datetime
import io
import logging

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from compress.train.callbacks import EpochStats


class LogLines(io.TextIOBase):
    """A stream for a log handler while the bar is drawn: each whole line is printed through
    the bar's console (above the bar), unwrapped, so the terminal folds it as it would any
    line and a long path stays one line to copy."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._console.print(Text(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._console.print(Text(self._pending), soft_wrap=True)
            self._pending = ""


class EtaColumn(ProgressColumn):
    """Time left at the mean pace of the task so far; `eta -:--:--` before the first step."""

    def render(self, task: Task) -> Text:
        elapsed, done, total = task.elapsed, task.completed, task.total
        if task.finished:
            return Text("done", style="progress.remaining")
        if not elapsed or not done or total is None:
            return Text("eta -:--:--", style="progress.remaining")
        left = round(elapsed / done * (total - done))
        return Text(f"eta {datetime.timedelta(seconds=left)}", style="progress.remaining")


def _reading(loss: float | None, val_acc: float | None = None) -> str:
    """`loss 0.1234  val acc 97.22%`, leaving out what is not known (yet)."""
    parts = []
    if loss is not None and loss == loss:
        parts.append(f"loss {loss:.4f}")
    if val_acc is not None and val_acc == val_acc:
        parts.append(f"val acc {val_acc:.2%}")
    return "  ".join(parts)


class Progress:
    """One bar per call of `fit`, advancing in optimizer steps (drawn only on a terminal).

    `console`: where the bar is drawn (stderr by default); tests pass one writing to a buffer.
    """

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self._bar = RichProgress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            TextColumn("step {task.completed:>{task.fields[width]}.0f}/{task.total:.0f}"),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            TextColumn("{task.fields[reading]}"),
            TimeElapsedColumn(),
            EtaColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )
        self._task: TaskID | None = None
        self._steps_per_epoch = 1
        self._epoch = 0
        self._rerouted: list[tuple[logging.StreamHandler, object]] = []

    @property
    def console(self) -> Console:
        return self._bar.console

    def __enter__(self) -> Progress:
        self._bar.start()
        if not self._bar.disable:
            self._reroute_logging()
        return self

    def __exit__(self, *exc: object) -> None:
        for handler, stream in self._rerouted:
            handler.setStream(stream)  # type: ignore[arg-type]
        self._rerouted.clear()
        self._bar.stop()

    def _reroute_logging(self) -> None:
        """Handlers writing where the bar is drawn (a terminal, or the console's own file)
        print through the console instead, so each log line lands whole above the bar."""
        target = self.console.file
        for handler in _handlers():
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.FileHandler) or stream is None:
                continue
            if not isinstance(handler, logging.StreamHandler):
                continue
            if stream is not target and not _is_tty(stream):
                continue
            try:
                before = handler.setStream(LogLines(self.console))
            except AttributeError:  # bound to sys.stderr itself (logging.lastResort)
                continue
            self._rerouted.append((handler, before))

    def fit_started(self, phase: str, label: str, epochs: int, steps_per_epoch: int) -> None:
        self._steps_per_epoch, self._epoch = steps_per_epoch, 0
        total = epochs * steps_per_epoch
        self._task = self._bar.add_task(
            label, total=total, epoch=0, epochs=epochs, reading="", width=len(str(total))
        )

    def step_done(self, step: int, running_loss: float) -> None:
        if self._task is not None:
            completed = self._epoch * self._steps_per_epoch + step
            self._bar.update(self._task, completed=completed, reading=_reading(running_loss))

    def epoch_done(self, stats: EpochStats) -> None:
        if self._task is None:
            return
        self._epoch += 1
        self._bar.update(
            self._task,
            completed=self._epoch * self._steps_per_epoch,
            epoch=self._epoch,
            reading=_reading(stats.loss, stats.val_acc),
        )

    def fit_done(self) -> None:
        self._bar.refresh()
        self._task = None


def _handlers() -> list[logging.Handler]:
    """Every handler of every logger, once each (Hydra attaches them to the root)."""
    loggers = [logging.root, *logging.root.manager.loggerDict.values()]
    found = [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]
    return list({id(h): h for h in found}.values())


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False
