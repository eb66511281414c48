"""The `compress` command as a user runs it: a summary on success, one line on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import QUICK, mlflow_runs

COMPRESS = str(Path(sys.executable).with_name("compress"))


def compress(outputs: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMPRESS, f"paths.outputs={outputs}", f"paths.data={outputs / 'data'}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def test_main_job_prints_a_summary_and_logs_a_run(tmp_path: Path) -> None:
    done = compress(tmp_path, *QUICK)
    assert done.returncode == 0, done.stderr
    for row in ("top-1 accuracy", "nonzero params", "MACs", "artifact bytes", "latency, batch 256"):
        assert row in done.stdout
    assert "mlflow run" in done.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db\n" in done.stdout
    (mlrun,) = mlflow_runs(tmp_path)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["tracking"] == "mlflow"  # Hydra's group choices become tags
    run_dirs = list((tmp_path / "runs").glob("*/*"))
    assert len(run_dirs) == 1
    assert {"model.pt", "baseline.pt", "summary.json", "config.yaml"} <= {
        p.name for p in run_dirs[0].iterdir()
    }


BAD_INPUTS = {
    "unknown group option": (["model=nope"], "Could not find 'model/nope'"),
    "unknown model name": (["model.name=nope"], "unknown model 'nope'"),
    "amount of 1": (["method.amount=1.0"], "method.amount must be in [0, 1)"),
    "negative amount": (["method.amount=-0.2"], "method.amount must be in [0, 1)"),
    "negative epochs": (["schedule.train.epochs=-1"], "schedule.train.epochs must be >= 0"),
    "zero lr": (["schedule.finetune.lr=0"], "schedule.finetune.lr must be > 0"),
    "missing dataset files": (["dataset=mnist"], "MNIST/raw"),
    "input shape does not fit": (["model=lenet5"], "does not fit input shape (1, 8, 8)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_fails_in_one_line_before_training(tmp_path: Path, case: str) -> None:
    overrides, message = BAD_INPUTS[case]
    done = compress(tmp_path, *overrides)
    assert done.returncode != 0
    assert message in done.stderr
    if case != "unknown group option":  # Hydra's own message lists the valid options
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert errors == [errors[0]] and errors[0].startswith("compress: error: ")
    assert "baseline" not in done.stdout + done.stderr  # nothing trained
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
    assert not (tmp_path / "cache").exists()
