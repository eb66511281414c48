"""What every measurement probe is: a config that decides whether it applies, then measures.

`measure.probes` lists probes by name (`[compiled, onnx]`) or as mappings with options
(`[{name: compiled, when: always}]`); `parse_probes` turns that list into validated
`ProbeConfig`s through the one plugin registry. The pipeline hands all of them one
`ProbeContext` through `run_probes` and logs the merged `ProbeResult`, so a new probe is
one module here and one name in the list, with nothing in the pipeline to edit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from compress.config import require
from compress.data import DataBundle
from compress.plugins import TARGET, Plugin, Registry

if TYPE_CHECKING:
    from compress.measure.config import MeasureConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may look at: both models as they will be timed, and where to write."""

    baseline: nn.Module
    compressed: nn.Module  # the artifact loaded back, on `device`
    data: DataBundle
    settings: MeasureConfig
    device: torch.device  # where the compressed model runs (the CPU for int8 models)
    converted: bool  # the compressed model was converted to int8 kernels
    folder: Path  # the run folder: files a probe keeps go here
    #: For an int8 run: the float model just before conversion, and the input batches
    #: static quantization calibrated on (None where it did not calibrate, e.g. QAT).
    float_model: nn.Module | None = None
    calibration: Callable[[], Iterable[torch.Tensor]] | None = None


@dataclass
class ProbeResult:
    """What probes found: metrics, tags, and files to log as (file, artifact folder)."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, other: ProbeResult) -> None:
        self.metrics |= other.metrics
        self.tags |= other.tags
        self.files += other.files


@dataclass(frozen=True)
class ProbeConfig(Plugin):
    """Base of every probe: subclasses set `name` and implement `measure`."""

    registry: ClassVar[Registry[ProbeConfig]] = Registry("probe", "compress.measure.probes")

    def applies(self, context: ProbeContext) -> bool:
        """Whether this run is one the probe has something to say about (default: all)."""
        return True

    def measure(self, context: ProbeContext) -> ProbeResult:
        raise NotImplementedError(f"probe {type(self).__qualname__} does not measure")


def run_probes(probes: Sequence[ProbeConfig], context: ProbeContext) -> ProbeResult:
    """Run each probe that applies, in the listed order; later metrics win on a clash."""
    result = ProbeResult()
    for probe in probes:
        if probe.applies(context):
            log.info("probe %s", _label(probe))
            result.add(probe.measure(context))
    return result


def parse_probes(entries: Any, where: str = "measure.probes") -> tuple[ProbeConfig, ...]:
    """The probes `entries` lists (names, mappings with a name or `_target_`, or configs)."""
    registry = ProbeConfig.registry
    choices = ", ".join(registry.names())
    require(
        isinstance(entries, Sequence) and not isinstance(entries, str | bytes),
        f"{where} must be a list of probe names (choose from: {choices}), got {entries!r}",
    )
    probes = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if isinstance(entry, ProbeConfig):
            probes.append(entry)
            continue
        section = {"name": entry} if isinstance(entry, str) else entry
        require(
            isinstance(section, Mapping),
            f"{at} must be a probe name or a mapping with a name, got {entry!r}",
        )
        name = section.get("name")
        require(
            TARGET in section or name in registry.names(),
            f"{at}: unknown probe '{name}'; choose one of: {choices}",
        )
        probes.append(registry.parse(section, at))
    labels = [_label(p) for p in probes]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    require(not twice, f"{where} lists {', '.join(twice)} more than once")
    return tuple(probes)


def _label(probe: ProbeConfig) -> str:
    return getattr(type(probe), "name", type(probe).__qualname__)
