"""What reaches MLflow: the config flattened into params MLflow accepts, metrics as they
come, the run's end and owner, and writes another job's lock refused, written for real."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from compress.tracking.config import TrackingConfig
from compress.tracking.process import process_start
from compress.tracking.retry import is_lock_error, retrying
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


def test_metrics_logged_each_epoch_are_all_stored_before_the_run_ends(tmp_path: Path) -> None:
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t")
    with Run(tracking, {"kind": "epochs"}) as run:
        for epoch in range(30):
            run.log_metrics({"train/loss": 1.0 / (epoch + 1), "val/acc": epoch / 30}, step=epoch)
    (logged,) = mlflow_runs(tmp_path)
    assert logged.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=tracking.uri)
    history = client.get_metric_history(logged.info.run_id, "val/acc")
    assert sorted(m.step for m in history) == list(range(30))
    assert logged.data.metrics["train/loss"] == 1.0 / 30  # the last epoch's point
    # Who owns it: what lets a later command tell whether its process still lives.
    owner = {k: v for k, v in logged.data.tags.items() if k.startswith("compress.")}
    assert owner["compress.host"] == socket.gethostname()
    assert owner["compress.pid"] == str(os.getpid())
    assert owner["compress.process_start"] == process_start(os.getpid())


def test_a_failing_job_ends_failed_with_its_error_and_traceback(tmp_path: Path) -> None:
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t")
    with pytest.raises(ValueError, match="diverged") as raised, Run(tracking, {}) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        raise ValueError("diverged")
    (logged,) = mlflow_runs(tmp_path)
    assert raised.value.tracked_run_id == logged.info.run_id  # type: ignore[attr-defined]
    assert logged.info.status == "FAILED"
    assert logged.data.tags["error"] == "ValueError: diverged"
    assert logged.data.metrics == {"loss": 2.0}
    client = MlflowClient(tracking_uri=tracking.uri)
    error_txt = Path(client.download_artifacts(logged.info.run_id, "error.txt", str(tmp_path)))
    assert "Traceback" in error_txt.read_text() and "diverged" in error_txt.read_text()


def _refused(tmp_path: Path, statement: str) -> BaseException:
    """What MLflow raises when SQLite refuses `statement` while another connection holds
    the write lock: MlflowException from SQLAlchemy's OperationalError from sqlite3's."""
    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table if not exists t (x)")
    holder.execute("begin immediate")  # the other job's write transaction
    engine = sqlalchemy.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(statement))
    except sqlalchemy.exc.OperationalError as error:
        try:
            raise MlflowException(f"SQLAlchemy error: {type(error).__name__}") from error
        except MlflowException as wrapped:
            return wrapped
    finally:
        holder.execute("rollback")
        holder.close()
        engine.dispose()
    raise AssertionError(f"{statement} was not refused")


def test_a_write_refused_for_another_jobs_lock_is_told_by_its_exception_chain(
    tmp_path: Path,
) -> None:
    locked = _refused(tmp_path, "insert into t values (1)")
    assert "locked" not in str(locked)  # the chain decides, not the wording
    assert is_lock_error(locked)
    assert not is_lock_error(_refused(tmp_path, "insert into missing values (1)"))
    assert not is_lock_error(ValueError("nothing to do with the store"))


def test_locked_writes_are_retried_other_errors_are_not(tmp_path: Path) -> None:
    locked = _refused(tmp_path, "insert into t values (1)")
    calls: list[str] = []

    def write_once_unlocked() -> int:
        calls.append("try")
        if len(calls) < 3:
            raise locked
        return 7

    assert retrying(write_once_unlocked) == 7 and len(calls) == 3

    def broken() -> None:
        calls.append("broken")
        raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value"):
        retrying(broken)
    assert calls.count("broken") == 1


def test_experiments_are_marked_model_training_old_ones_when_next_used(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old")  # as compress made them before: no kind
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "finetuning"})
    for name in ("new", "old", "chosen"):
        with Run(TrackingConfig(uri=uri, experiment=name), {}):
            pass
    # MLflow 3's UI opens an experiment without this tag on GenAI traces, not on its runs.
    kind = {e.name: e.tags.get("mlflow.experimentKind") for e in client.search_experiments()}
    assert kind["new"] == kind["old"] == "custom_model_development"
    assert kind["chosen"] == "finetuning"  # a kind someone set is theirs
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).name == "chosen"


def test_internal_config_keys_are_told_from_what_a_run_computed() -> None:
    from compress.tracking.params import split_internal

    flat = flatten(
        {
            "method": {"amount": 0.5},
            "paths": {"run_dir": "/r"},
            "tracking": {"uri": "sqlite:///x"},
            "runtime": {"progress": False, "device": "cpu"},
        }
    )
    params, tags = split_internal(flat)
    assert params == {"method.amount": "0.5", "runtime.device": "cpu"}
    assert tags == {
        "paths.run_dir": "/r",
        "tracking.uri": "sqlite:///x",
        "runtime.progress": "false",
    }


def test_run_names_say_what_the_run_is_and_fit_in_40_characters() -> None:
    from compress.tracking.names import job_name, run_name, sweep_name

    quick = "schedule.train.epochs=3 schedule.finetune.epochs=2 paths.outputs=/o"
    assert job_name("prune", f"method.amount=0.9 {quick}", ["method.amount"]) == (
        "prune amount=0.9"
    )
    # Alone: the method's own settings first, then the rest; keys as short as stays clear.
    assert job_name("prune", f"{quick} method.amount=0.9") == "prune amount=0.9 train.epochs=3 …"
    swept = ["method", "schedule.train.lr", "schedule.finetune.lr"]
    overrides = "method=qat schedule.train.lr=0.1 schedule.finetune.lr=0.01"
    assert job_name("qat", overrides, swept) == "qat train.lr=0.1 finetune.lr=0.01"
    assert job_name("prune", "paths.outputs=/o hydra.job.chdir=false") == "prune"
    assert run_name({"method": "stack", "search.trial": "7", "overrides": quick}) == (
        "stack trial 7"
    )
    assert sweep_name(["method.amount=0.5,0.8,0.9"], "x") == "sweep method.amount=0.5,0.8,0.9"
    long = ["method.amount=0.5,0.8,0.9", "seed=0,1,2", "schedule.finetune.lr=0.1,0.01"]
    assert sweep_name(long, "x") == "sweep amount=0.5,0.8,0.9 seed=0,1,2 …"
    assert sweep_name([], "sweep 2026-12-01 10-00-00") == "sweep 2026-12-01 10-00-00"
    for name in (job_name("m" * 60, ""), sweep_name([f"a.b={'1,' * 40}1"], "x")):
        assert len(name) <= 40 and name.endswith("…")


def test_ui_links_open_the_model_training_view() -> None:
    from compress.tracking.store import ui_url

    # MLflow 3.17's UI takes its view from this, not from the experiment's kind tag.
    assert ui_url("sqlite:////o/mlflow.db", "3", "abc") == (
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert ui_url("http://mlflow-host:5000/", "3") == (
        "http://mlflow-host:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
