"""Everything we report about one model, and the ratios between the baseline and ours."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.data import DataBundle
from compress.measure.config import MeasureConfig
from compress.measure.footprint import Footprint
from compress.measure.latency import paired_latency_ms
from compress.measure.macs import Macs
from compress.train.loop import accuracy


@dataclass(frozen=True)
class Measurement:
    """Everything measured on one model: accuracy, size, work and time."""

    acc: float
    params: int
    nonzeros: int
    macs: int
    macs_nonzero: int
    bytes: int
    latency_ms: dict[int, float]
    #: `macs` and `macs_nonzero` module by module (they sum to those), for layer_macs.csv.
    layer_macs: Mapping[str, Macs] = field(default_factory=dict, repr=False, compare=False)

    def figures(self) -> dict[str, Any]:
        """The figures as summary.json keeps them (the per-module MACs are their own file)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "layer_macs"}


def measure_models(
    models: Sequence[tuple[nn.Module, int]],
    data: DataBundle,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> list[Measurement]:
    """Measure each `(model, bytes of its saved artifact)`; latencies are timed in turns."""
    latencies = {
        batch: paired_latency_ms([m for m, _ in models], data.input_shape, batch, settings, device)
        for batch in settings.batch_sizes
    }
    measurements = []
    for index, (model, artifact_bytes) in enumerate(models):
        footprint = Footprint.of(model, data.input_shape)
        measurements.append(
            Measurement(
                acc=accuracy(model, data.test, settings.eval_batch_size),
                params=footprint.params,
                nonzeros=footprint.nonzeros,
                macs=footprint.macs.dense,
                macs_nonzero=footprint.macs.nonzero,
                bytes=artifact_bytes,
                latency_ms={batch: ms[index] for batch, ms in latencies.items()},
                layer_macs=footprint.layer_macs,
            )
        )
    return measurements


def measure_model(
    model: nn.Module,
    data: DataBundle,
    artifact_bytes: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> Measurement:
    """Measure one model (already on `device`) whose saved artifact takes `artifact_bytes`."""
    return measure_models([(model, artifact_bytes)], data, settings, device)[0]


def compare(base: Measurement, ours: Measurement) -> dict[str, float]:
    """The metrics we log, ratios named by their axis (dense figure / compressed figure).

    `speedup/latency` is taken at the largest measured batch size; each batch size also
    has its own `speedup/latency/b<N>`.
    """
    metrics: dict[str, float] = {
        "baseline/acc": base.acc,
        "acc": ours.acc,
        "acc_drop": base.acc - ours.acc,
        "baseline/params": base.params,
        "params": ours.params,
        "nonzeros": ours.nonzeros,
        "baseline/macs": base.macs,
        "macs": ours.macs,
        "macs/nonzero": ours.macs_nonzero,
        "baseline/bytes": base.bytes,
        "bytes": ours.bytes,
        "ratio/params": base.params / max(ours.nonzeros, 1),
        "ratio/size": base.bytes / ours.bytes,
        "ratio/macs": base.macs / max(ours.macs_nonzero, 1),
    }
    for batch, ms in ours.latency_ms.items():
        metrics[f"baseline/latency_ms/b{batch}"] = base.latency_ms[batch]
        metrics[f"latency_ms/b{batch}"] = ms
        metrics[f"speedup/latency/b{batch}"] = base.latency_ms[batch] / ms
    largest = max(ours.latency_ms)
    metrics["speedup/latency"] = metrics[f"speedup/latency/b{largest}"]
    return metrics
