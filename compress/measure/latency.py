"""Latency: median wall time of a forward pass after warm-up, with a fixed thread count."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from compress.measure.config import MeasureConfig
from compress.models.eval_mode import eval_mode


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with exactly `threads` intra-op threads, then restore the old count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def paired_latency_ms(
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Median milliseconds of one forward pass of a `batch_size` batch, for each model.

    The models take turns within every repeat, so a change in machine load between
    them lands on all alike and their ratio stays fair. Repeats stop at
    `settings.repeats` or once `settings.max_seconds` per model have been spent (at
    least three repeats), so large models still finish in bounded time.
    """
    device = torch.device(device)
    x = torch.randn((batch_size, *input_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    times: list[list[float]] = [[] for _ in models]
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(eval_mode(model))
        stack.enter_context(torch_threads(settings.threads))
        for model in models:
            for _ in range(settings.warmup):
                model(x)
        _sync(device)
        budget_end = time.perf_counter() + settings.max_seconds * len(models)
        for repeat in range(1, settings.repeats + 1):
            for model, samples in zip(models, times, strict=True):
                start = time.perf_counter()
                model(x)
                _sync(device)
                samples.append(time.perf_counter() - start)
            if repeat >= 3 and time.perf_counter() > budget_end:
                break
    return [1000 * statistics.median(samples) for samples in times]


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> float:
    """Median milliseconds of one forward pass of `model` (see `paired_latency_ms`)."""
    return paired_latency_ms([model], input_shape, batch_size, settings, device)[0]
