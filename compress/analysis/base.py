"""Analyses of the trained baseline, run before it is compressed (one `Plugin` each).

An analysis writes its files (tables, plots) and may hand the method options it found
(`patch`, e.g. sensitivity's per-layer amounts): the method takes them where it declares
it accepts them (`MethodConfig.accepts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from compress.data import DataBundle
from compress.methods import Stage
from compress.plugins import Plugin, Registry

#: The bytes `model` would save as, with the encodings and conversion of `stage`.
SaveSize = Callable[[nn.Module, Stage], int]


@dataclass(frozen=True)
class AnalysisContext:
    model: nn.Module  # the trained baseline (left as it is)
    data: DataBundle
    folder: Path  # where its files go (the run folder)
    eval_batch_size: int
    baseline_bytes: int
    saved_size: SaveSize


@dataclass(frozen=True)
class AnalysisResult:
    files: list[Path] = field(default_factory=list)
    patch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisConfig(Plugin):
    registry: ClassVar[Registry[AnalysisConfig]] = Registry("analysis", "compress.analysis")

    def run(self, context: AnalysisContext) -> AnalysisResult:
        raise NotImplementedError


@dataclass(frozen=True)
class NoAnalysis(AnalysisConfig):
    """`analysis=none`: train, compress, fine-tune, measure."""

    name = "none"

    def run(self, context: AnalysisContext) -> AnalysisResult:
        return AnalysisResult()


def parse_analysis(section: dict[str, Any] | None) -> AnalysisConfig:
    return AnalysisConfig.registry.parse(section or {"name": "none"}, "analysis")
