"""The `compress` command as a user runs it: a summary on success, one line on bad input."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compress.cli.main import main
from compress.tracking.store import open_client
from tests.support import QUICK, mlflow_runs, run_cli

COMPRESS = str(Path(sys.executable).with_name("compress"))


def compress(
    outputs: Path, *overrides: str, multirun: bool = False
) -> subprocess.CompletedProcess[str]:
    flags = ["--multirun"] if multirun else []
    return subprocess.run(
        [
            COMPRESS,
            *flags,
            f"paths.outputs={outputs}",
            f"paths.data={outputs / 'data'}",
            *overrides,
        ],
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
    assert {"model.pt", "summary.json", "config.yaml", "compress.log"} <= {
        p.name for p in run_dirs[0].iterdir()
    }
    (baseline_artifact,) = tmp_path.glob("cache/baseline_artifacts/*.pt")
    assert baseline_artifact.stat().st_size == mlrun.data.metrics["baseline/bytes"]
    # Where the run came from: code, overrides, packages, machine.
    tags = mlrun.data.tags
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert "schedule.train.epochs=3" in tags["overrides"]
    assert tags["version.torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert tags["cpu"] and tags["python"] == platform.python_version()


@pytest.mark.slow  # long (a sweep of whole processes): `pytest -m slow`
def test_a_sweep_is_a_parent_run_and_a_bad_job_fails_alone(tmp_path: Path) -> None:
    # The default paths (under the working directory), as a user's first sweep has them.
    done = subprocess.run(
        [COMPRESS, "-m", *QUICK, "method.amount=0.5,1.5,0.7"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr  # the sweep ran, one of its jobs failed
    assert "compress: error: method.amount must be in [0, 1), got 1.5" in done.stderr
    assert done.stderr.splitlines()[-1] == "compress: 1 of 3 jobs failed: prune amount=1.5"
    assert "Warning" not in done.stderr, done.stderr  # Hydra's warning when a callback fails
    runs = mlflow_runs(tmp_path / "outputs")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    statuses = sorted((r.data.params.get("method.amount"), r.info.status) for r in children)
    assert statuses == [("0.5", "FINISHED"), ("0.7", "FINISHED"), ("1.5", "FAILED")]
    (failed,) = [r for r in children if r.info.status == "FAILED"]
    assert "method.amount must be in [0, 1)" in failed.data.tags["error"]
    # One parent run for the sweep, each job a child tagged with the sweep's name.
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep"].startswith("sweep ")
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["sweep"] == parent.data.tags["sweep"]


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
def test_bad_input_fails_in_one_line_before_training(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    overrides, message = BAD_INPUTS[case]
    code, out, err = run_cli(
        main, [f"paths.outputs={tmp_path}", f"paths.data={tmp_path / 'data'}", *overrides], capsys
    )
    assert message in err
    errors = [line for line in err.splitlines() if line.strip()]
    assert errors == [errors[0]] and errors[0].startswith("compress: error: ")
    assert code == 2  # bad input (compress.cli.exits)
    assert "baseline" not in out + err  # nothing trained
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
    assert not (tmp_path / "cache").exists()


def test_bad_input_exit_code_from_the_shell(tmp_path: Path) -> None:
    """The contract as a script sees it: one line on stderr, exit code 2, nothing run."""
    done = compress(tmp_path, "method.amount=1.0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["compress: error: method.amount must be in [0, 1), got 1.0"]
    assert not (tmp_path / "cache").exists()


# Slow: it waits on the clock for training to start (tests/test_distributed.py ends jobs by
# SIGKILL and SIGTERM deterministically, from inside training, in the default run).
@pytest.mark.slow
def test_killed_job_leaves_a_killed_run_and_no_cache(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    with log.open("w") as out:
        job = subprocess.Popen(
            [COMPRESS, f"paths.outputs={tmp_path}", "schedule.train.epochs=500"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while "mlflow: run" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # inside baseline training
        job.send_signal(signal.SIGKILL)
        job.wait()
    # The next compress command on the store (any of them opens it this way) ends the run.
    open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not list(tmp_path.glob("cache/baselines/*.pt"))


@pytest.mark.slow  # long (a sweep or kill of whole processes): `pytest -m slow`
def test_parallel_sweep_on_one_sqlite_store_loses_nothing(tmp_path: Path) -> None:
    done = compress(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *QUICK,
        "method.amount=0.5,0.6,0.7,0.8",
        multirun=True,
    )
    assert done.returncode == 0, done.stderr
    runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert sorted(r.data.params["method.amount"] for r in children) == ["0.5", "0.6", "0.7", "0.8"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    # The jobs shared one baseline: trained by one of them, loaded by the others.
    assert sorted(r.data.tags["baseline.cached"] for r in children) == [
        "false", "true", "true", "true"
    ]  # fmt: skip
    assert len(list((tmp_path / "cache" / "baselines").glob("*.pt"))) == 1


@pytest.mark.slow  # long (a sweep or kill of whole processes): `pytest -m slow`
def test_a_killed_sweep_relaunched_runs_only_what_did_not_finish(tmp_path: Path) -> None:
    sweep = [*QUICK, "schedule.finetune.epochs=8", "method.amount=0.5,0.6"]
    paths = [f"paths.outputs={tmp_path}", f"paths.data={tmp_path / 'data'}"]  # as `compress` sets
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        first = subprocess.Popen(
            [COMPRESS, "-m", *paths, f"hydra.sweep.dir={tmp_path}/s1", *sweep],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        opened = "[compress.tracking.run][INFO] - mlflow: run "
        while log.read_text().count(opened) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the second job has opened its run
        time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert log.read_text().count(opened) == 2, log.read_text()

    done = compress(tmp_path, f"hydra.sweep.dir={tmp_path}/s2", *sweep, multirun=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("compress: skipped") == 1  # job 0 had finished
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if "sweep.dir" in r.data.tags]
    old_parent, new_parent = sorted(parents, key=lambda r: r.info.start_time)
    jobs = {p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") ==
                            p.info.run_id] for p in parents}  # fmt: skip
    # The killed sweep: its parent and its second job were marked KILLED by the relaunch.
    assert old_parent.info.status == "KILLED"
    assert sorted(r.info.status for r in jobs[old_parent.info.run_id]) == ["FINISHED", "KILLED"]
    (finished,) = [r for r in jobs[old_parent.info.run_id] if r.info.status == "FINISHED"]
    # The relaunch ran only the killed job, on the cached baseline, and names the skipped one.
    (rerun,) = jobs[new_parent.info.run_id]
    assert rerun.info.status == "FINISHED" and new_parent.info.status == "FINISHED"
    assert rerun.data.params["method.amount"] == "0.6"
    assert rerun.data.tags["baseline.cached"] == "true"
    digest = finished.data.tags["config.hash"]
    assert new_parent.data.tags[f"resumed.{digest}"] == finished.info.run_id
    assert len(list((tmp_path / "cache" / "baselines").glob("*.pt"))) == 1
