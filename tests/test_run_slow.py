"""Longer end-to-end runs kept out of the default test run (`uv run pytest -m slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.artifact.store import load_artifact
from compress.run.pipeline import run
from tests.support import MNIST10K, QUICK, compose_config, needs_mnist10k

pytestmark = pytest.mark.slow


def test_compiled_channels_last_training_runs_end_to_end(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path, *QUICK, "runtime.compile=true", "runtime.channels_last=true", "tracking=none"
    )
    m = run(cfg).metrics
    assert m["baseline/acc"] > 0.7
    assert m["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_torchvision_model_on_rgb_data(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path,
        *QUICK,
        "model=torchvision",
        "model.arch=mobilenet_v2",
        "dataset=fake",
        "dataset.shape=[3,32,32]",
        "schedule.train.epochs=1",
        "schedule.finetune.epochs=1",
        "tracking=none",
    )
    result = run(cfg)
    assert result.metrics["ratio/size"] > 3
    assert type(load_artifact(result.artifact)).__name__ == "MobileNetV2"


@needs_mnist10k
def test_lenet5_on_real_mnist(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path,
        *QUICK,
        "model=lenet5",
        "dataset=mnist",
        f"dataset.root={MNIST10K}",
        "method.amount=0.9",
        "tracking=none",
    )
    m = run(cfg).metrics
    assert m["baseline/acc"] > 0.95 and m["acc"] > 0.95
    assert m["ratio/params"] > 9
