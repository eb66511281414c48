"""What reaches MLflow: the config flattened into params MLflow accepts, written for real."""

from __future__ import annotations

import json
from pathlib import Path

from compress.tracking.config import TrackingConfig
from compress.tracking.run import Run, flatten
from tests.support import mlflow_runs


def test_flatten_names_nested_keys_and_keeps_glob_keyed_maps_whole() -> None:
    config = {
        "seed": 0,
        "method": {"amount": 0.5, "layers": {"layer1.*.conv1": 0.6, "fc?1": 0.2}, "skip": None},
        "measure": {"batch_sizes": [1, 256]},
    }
    flat = flatten(config)
    assert flat["seed"] == "0"
    assert flat["method.amount"] == "0.5" and flat["method.skip"] == "null"
    assert flat["measure.batch_sizes"] == "[1, 256]"
    assert json.loads(flat["method.layers"]) == {"layer1.*.conv1": 0.6, "fc?1": 0.2}


def test_glob_keyed_params_are_logged_to_a_real_store(tmp_path: Path) -> None:
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t")
    config = {"method": {"layers": {"layer3.*": 0.3, "fc1": 0.9}}, "other": {"fc1": 1}}
    with Run(tracking, {}) as run:
        run.log_params(flatten(config))
    (logged,) = mlflow_runs(tmp_path)
    assert logged.info.status == "FINISHED"
    assert json.loads(logged.data.params["method.layers"]) == {"fc1": 0.9, "layer3.*": 0.3}
    assert logged.data.params["other.fc1"] == "1"
