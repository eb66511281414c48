"""A sweep through Hydra's real launcher, in this process: its parent run named by what it
sweeps and holding the sweep's summary, its jobs named by their values, its report table
printed, and a sweep with a failed job ending with one line and exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from compress.cli.main import main
from tests.support import QUICK, mlflow_runs, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_sweep_with_a_failed_job_says_so_in_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "-m",
        f"paths.outputs={tmp_path}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *QUICK,
        "dataset=fake",
        "method.amount=0.5,1.5,0.8",
    ]
    code, out, err = run_cli(main, argv, capsys)
    assert code == 1, err
    # The line comes last, after every job has returned and the report is written.
    assert err.splitlines()[-1] == "compress: 1 of 3 jobs failed: prune amount=1.5"
    # The report's table is printed, not only its path.
    assert f"sweep report (ratio/size): {tmp_path}/sweep/report.md" in out
    assert "| method | configuration | seeds | accuracy % | ratio/size | front | runs |" in out
    assert "| prune | `method.amount=0.8` | 1 |" in out

    runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r is not parent}
    # Names say what a run is; the full overrides stay in a tag.
    assert parent.info.run_name == "sweep method.amount=0.5,1.5,0.8"
    # A link that opens the sweep in the UI's model-training view (not on GenAI traces).
    ui = f"http://127.0.0.1:5000/#/experiments/1/runs/{parent.info.run_id}"
    assert f"sweep in the MLflow UI: {ui}?workflowType=machine_learning" in out
    assert sorted(children) == ["prune amount=0.5", "prune amount=0.8", "prune amount=1.5"]
    assert children["prune amount=1.5"].info.status == "FAILED"
    assert "method.amount=1.5" in children["prune amount=1.5"].data.tags["overrides"]
    # The parent holds the sweep: what it swept, its summary, a description, the report.
    assert parent.info.status == "FINISHED"
    assert parent.data.params["method.amount"] == "0.5,1.5,0.8"
    assert parent.data.params["schedule.train.epochs"] == "3"
    assert "paths.outputs" not in parent.data.params
    assert parent.data.tags["sweep.swept"] == "method.amount"
    metrics = parent.data.metrics
    assert metrics["sweep/jobs_total"] == 3 and metrics["sweep/jobs_failed"] == 1
    finished = [children[n].data.metrics for n in ("prune amount=0.5", "prune amount=0.8")]
    assert metrics["sweep/best_acc"] == max(m["acc"] for m in finished)
    close = [m["ratio/size"] for m in finished if m["acc_drop"] <= 0.01]
    assert metrics.get("sweep/best_ratio_size_1pt") == (max(close) if close else None)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Sweep** of `method.amount=0.5,1.5,0.8`: 3 jobs, 2 finished")
    assert "Failed: `prune amount=1.5`: ConfigError: method.amount must be in [0, 1)" in note
    assert "| prune | `method.amount=0.8` | 1 |" in note
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    listed = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert listed == {"report/report.csv", "report/report.md", "report/report.png"}
