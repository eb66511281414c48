"""The training progress bar as a terminal shows it: steps, an ETA, no `nan`, whole log lines."""

from __future__ import annotations

import io
import logging
import math
import re
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from compress.train.callbacks import EpochStats
from compress.train.progress import Progress

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> Console:
    """The terminal the bar draws on (its default console, stderr, replaced by a buffer)."""
    console = Console(file=io.StringIO(), force_terminal=True, width=160, color_system=None)
    monkeypatch.setattr("compress.train.progress.Console", lambda **kwargs: console)
    return console


def screen(console: Console) -> list[str]:
    """The lines a terminal would show last, each as it stands after its last redraw."""
    text = _CONTROL.sub("", console.file.getvalue())  # type: ignore[attr-defined]
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]


def bar_line(progress: Progress, tty: Console, phase: str = "baseline") -> str:
    progress._bar.refresh()
    return [line for line in screen(tty) if line.startswith(phase)][-1]


def stats(epoch: int, loss: float, val_acc: float) -> EpochStats:
    return EpochStats(epoch, loss, 0.9, val_acc, 0.1, 1.0)


@pytest.fixture
def progress(tty: Console) -> Iterator[Progress]:
    with Progress() as bar:
        yield bar


def test_before_a_reading_steps_and_a_blank_eta_but_no_nan(
    progress: Progress, tty: Console
) -> None:
    progress.fit_started("baseline", "baseline", epochs=20, steps_per_epoch=21)
    line = bar_line(progress, tty)
    assert "step   0/420" in line and "epoch 0/20" in line
    assert "eta -:--:--" in line
    assert "nan" not in line.lower() and "loss" not in line


def test_counts_steps_with_an_eta_from_the_first_reading(progress: Progress, tty: Console) -> None:
    progress.fit_started("baseline", "baseline", epochs=2, steps_per_epoch=100)
    time.sleep(0.05)
    progress.step_done(25, 1.25)
    line = bar_line(progress, tty)
    assert "step  25/200" in line and "epoch 0/2" in line and "loss 1.2500" in line
    assert re.search(r"eta 0:00:\d\d", line), line
    progress.epoch_done(stats(0, 0.5, 0.875))
    line = bar_line(progress, tty)
    assert "step 100/200" in line and "epoch 1/2" in line and "val acc 87.50%" in line


def test_no_nan_when_there_is_no_validation_split(progress: Progress, tty: Console) -> None:
    progress.fit_started("finetune", "finetune", epochs=1, steps_per_epoch=4)
    progress.epoch_done(stats(0, 0.25, math.nan))
    line = bar_line(progress, tty, "finetune")
    assert "loss 0.2500" in line and "nan" not in line.lower() and "val acc" not in line


def test_a_log_line_printed_mid_bar_appears_whole_above_it(tty: Console) -> None:
    """A handler writing to the terminal the bar is drawn on (Hydra's console handler); a
    line wider than the terminal stays one line (the terminal folds it, paths copy whole)."""
    console = tty
    handler = logging.StreamHandler(console.file)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    log = logging.getLogger("compress.test_progress")
    log.addHandler(handler)
    log.propagate, level = False, log.level
    log.setLevel(logging.INFO)
    folder = "/work/outputs/runs/2026-12-01/12-41-30-111446" * 3  # wider than the terminal
    message = f"bit sweep: table {folder}/bit_sweep.csv, plot {folder}/bit_sweep.png"
    try:
        with Progress() as progress:
            progress.fit_started("baseline", "baseline", epochs=2, steps_per_epoch=25)
            progress.step_done(25, 0.5)
            progress._bar.refresh()
            log.info(message)
            progress.epoch_done(stats(0, 0.5, 0.9))
            inside = handler.stream
        after = handler.stream
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = True, level
    lines = screen(console)
    assert f"[compress.test_progress][INFO] - {message}" in lines
    assert any(line.startswith("baseline") and "step 25/50" in line for line in lines)
    assert inside is not console.file and after is console.file  # handed back at the end


def test_not_drawn_off_a_terminal_and_log_handlers_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    monkeypatch.setattr("compress.train.progress.Console", lambda **kwargs: console)
    handler = logging.StreamHandler(console.file)
    logging.getLogger().addHandler(handler)
    try:
        with Progress() as progress:
            progress.fit_started("baseline", "baseline", epochs=1, steps_per_epoch=1)
            progress.epoch_done(stats(0, 0.5, 0.9))
            assert handler.stream is console.file
    finally:
        logging.getLogger().removeHandler(handler)
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]
