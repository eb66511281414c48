"""Analyses say where their table and plot went (the terminal shows Hydra's INFO lines)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from compress.analysis.base import AnalysisConfig, AnalysisContext
from compress.analysis.bit_sweep import BitSweepConfig
from compress.analysis.sensitivity import SensitivityConfig
from compress.data import DataBundle, load_dataset
from compress.models import build_model


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return load_dataset({"name": "fake", "num_train": 128, "num_test": 64})


@pytest.mark.parametrize(
    ("config", "names"),
    [
        (BitSweepConfig(bits=(8, 4)), ["bit_sweep.csv", "bit_sweep.png"]),
        (
            SensitivityConfig(levels=(0.0, 0.5), target=0.5),
            ["sensitivity.csv", "sensitivity.png", "layer_amounts.yaml"],
        ),
    ],
    ids=["bits", "sensitivity"],
)
def test_analysis_logs_the_paths_of_its_files(
    config: AnalysisConfig,
    names: list[str],
    data: DataBundle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [16]}, data.input_shape, data.num_classes)
    context = AnalysisContext(model, data, tmp_path, 256, 1000, lambda rounded, stage: 500)
    with caplog.at_level(logging.INFO, logger="compress.analysis"):
        result = config.run(context)
    assert [p.name for p in result.files] == names
    said = "\n".join(caplog.messages)
    for path in result.files:
        assert path.is_file() and str(path) in said
