"""`compress-search`: a persistent Optuna study that resumes, marks infeasible and failed
trials, nests its trials under one MLflow parent run, and refuses bad input in one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from compress.cli import search as search_cli
from compress.cli.config_dir import CONFIG_DIR
from compress.search.space import SearchSettings, Space
from tests.support import QUICK, mlflow_runs

SEARCH = str(Path(sys.executable).with_name("compress-search"))

#: A small MLP on digits (layers "1" and "3"), one thread, one batch size timed.
FAST = [
    *QUICK,
    "model=mlp",
    "model.hidden=[32]",
    "schedule.train.epochs=2",
    "schedule.finetune.epochs=1",
    "runtime.threads=1",
    "measure.batch_sizes=[1]",
    "measure.repeats=1",
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One outputs folder for the module: its tests share one cached baseline."""
    return tmp_path_factory.mktemp("search")


def args(outputs: Path, *overrides: str) -> list[str]:
    return [f"paths.outputs={outputs}", f"paths.data={outputs / 'data'}", *FAST, *overrides]


def in_process(monkeypatch: pytest.MonkeyPatch, outputs: Path, *overrides: str) -> int | str | None:
    """`compress-search` run as Hydra runs it, in this process; its exit code (None: 0)."""
    monkeypatch.setattr(sys, "argv", ["compress-search", *args(outputs, *overrides)])
    try:
        search_cli.main()
    except SystemExit as done:
        return done.code
    return None


def study(outputs: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{outputs / 'optuna.db'}")


def trials(outputs: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return study(outputs, name).get_trials()


@pytest.mark.slow  # long (a sweep or kill of whole processes): `pytest -m slow`
def test_a_study_resumes_with_only_the_missing_trials(
    outputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert in_process(monkeypatch, outputs, "search.study=resume", "search.trials=2") is None
    assert "search 'resume': 2 trials complete" in capsys.readouterr().out
    assert [t.state for t in trials(outputs, "resume")] == [TrialState.COMPLETE] * 2
    study(outputs, "resume").ask()  # a search killed mid-trial leaves its trial RUNNING

    assert in_process(monkeypatch, outputs, "search.study=resume", "search.trials=3") is None
    out = capsys.readouterr().out
    assert "3 trials complete" in out and "1 failed; 1 run now" in out
    held = trials(outputs, "resume")
    states = [t.state for t in held]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert "left RUNNING" in held[2].user_attrs["error"]
    complete = [t for t in held if t.state == TrialState.COMPLETE]
    for trial in complete:
        assert {"acc", "baseline/acc", "bytes", "ratio/size", "run_id"} <= set(trial.user_attrs)
        assert trial.value == trial.user_attrs["bytes"]
        drop = 100 * (trial.user_attrs["baseline/acc"] - trial.user_attrs["acc"])
        assert trial.constraints == {"accuracy": pytest.approx(drop - 0.5)}  # delta: 0.5 pt
        assert set(trial.params) == {"amount/1", "bits/1", "amount/3", "bits/3"}

    # One parent run for the study (across both commands), one child per trial that ran.
    runs = mlflow_runs(outputs)
    (parent,) = [r for r in runs if "search.storage" in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_id for r in children) == sorted(
        t.user_attrs["run_id"] for t in complete
    )
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.params["method.name"] for r in children} == {"stack"}
    assert parent.data.metrics["search/complete"] == 3
    assert "search.storage" not in parent.data.params  # where, not what: a tag
    assert parent.data.tags["mlflow.note.content"].startswith("**Search** `resume`: 3 complete")
    assert sorted(r.info.run_name for r in children) == [
        f"stack trial {t.number}" for t in complete
    ]

    table = Path(out.split("all trials: ")[-1].strip())
    assert table.parent.name and (table.parent / "trial_3").is_dir()
    rows = list(csv.DictReader(table.open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert [r["run_id"] for r in rows] == [t.user_attrs.get("run_id", "") for t in held]
    logged = {r.info.run_id: r.data.metrics for r in children}
    for row in rows:
        if row["run_id"]:
            assert float(row["bytes"]) == logged[row["run_id"]]["bytes"]

    # The figures shown are those the trials' MLflow runs hold, read as every report reads
    # runs: a figure logged to a run since shows in the next table.
    from mlflow import MlflowClient

    first = complete[0]
    MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}").log_metric(
        first.user_attrs["run_id"], "acc", 0.125, step=1
    )
    assert in_process(monkeypatch, outputs, "search.study=resume", "search.trials=3") is None
    out = capsys.readouterr().out
    assert "3 trials complete" in out and "0 run now" in out
    table = Path(out.split("all trials: ")[-1].strip())
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert float(rows[first.number]["acc"]) == 0.125
    assert float(rows[complete[1].number]["acc"]) == complete[1].user_attrs["acc"]


def test_infeasible_trials_are_marked_and_the_best_is_none(
    outputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nearly every weight pruned and the rest on 2 bits, no fine-tune: far below the floor.
    code = in_process(
        monkeypatch,
        outputs,
        "search.study=infeasible",
        "search.trials=2",
        "search.delta=0",
        "search.amounts=[0.97,0.99]",
        "search.amount_step=null",
        "search.bits=[2]",
        "schedule.finetune.epochs=0",
        "tracking=none",
    )
    assert code in (None, 0)
    held = trials(outputs, "infeasible")
    assert [t.state for t in held] == [TrialState.COMPLETE] * 2
    for trial in held:
        (violation,) = trial.constraints.values()
        assert violation > 0
        assert violation == pytest.approx(
            100 * (trial.user_attrs["baseline/acc"] - trial.user_attrs["acc"])
        )
    with pytest.raises(ValueError, match="feasible"):  # Optuna knows: no best trial
        _ = study(outputs, "infeasible").best_trial
    out = capsys.readouterr().out
    assert "2 trials complete (0 feasible, 2 infeasible), 0 failed" in out
    assert "no feasible trial" in out
    table = Path(out.split("all trials: ")[-1].strip())
    assert [r["feasible"] for r in csv.DictReader(table.open())] == ["false", "false"]


def test_a_failing_job_fails_its_trial_and_the_search_goes_on(
    outputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fine-tune rate this large turns the loss infinite: the job stops with a CompressError.
    code = in_process(
        monkeypatch,
        outputs,
        "search.study=diverges",
        "search.trials=2",
        "schedule.finetune.lr=1e30",
        "tracking=none",
    )
    assert code in (None, 0)
    held = trials(outputs, "diverges")
    assert [t.state for t in held] == [TrialState.FAIL] * 2
    assert all("TrainingDivergedError" in t.user_attrs["error"] for t in held)
    assert "0 trials complete (0 feasible, 0 infeasible), 2 failed" in capsys.readouterr().out


BAD_INPUTS = {
    "negative delta": (["search.delta=-0.5"], "search.delta (allowed drop, in points)"),
    "no layers": (["search.layers=[]"], "search.layers is empty"),
    "unmatched layer": (["search.layers=[nope]"], "pattern 'nope' matches no prunable layer"),
    "bits too low": (["search.bits=[1,4]"], "search.bits must be integers in 2..8"),
    "bits too high": (["search.bits=[9]"], "search.bits must be integers in 2..8"),
    "amount of 1": (["search.amounts=[0.5,1.0]"], "search.amounts must be [low, high]"),
    "uneven steps": (["search.amounts=[0.1,0.27]"], "must span whole steps of search.amount_"),
    "no trials": (["search.trials=0"], "search.trials must be >= 1"),
    "another method": (["method=prune"], "method=prune is not used"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_and_no_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    overrides, message = BAD_INPUTS[case]
    assert (
        in_process(monkeypatch, tmp_path, *overrides, "tracking=none") == 2
    )  # bad input (compress.cli.exits)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert errors == [errors[0]] and errors[0].startswith("compress-search: error: ")
    assert message in errors[0]
    assert not (tmp_path / "optuna.db").exists()  # no study, not even its store
    assert not (tmp_path / "cache").exists()  # nothing trained


def test_the_console_script_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [SEARCH, *args(tmp_path, "search.delta=-1")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert done.returncode == 2  # bad input (compress.cli.exits)
    assert done.stderr.splitlines() == [
        "compress-search: error: search.delta (allowed drop, in points) must be in [0, 100], got -1"
    ]
    assert not (tmp_path / "optuna.db").exists()
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))


def test_a_study_is_not_resumed_with_another_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("search", overrides=[*args(tmp_path), f"paths.run_dir={tmp_path / 'r'}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    space = Space.for_config(SearchSettings.parse(plain["search"]), plain)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    held = optuna.create_study(storage=storage, study_name=plain["search"]["study"])
    held.set_user_attr("setup", space.setup(plain) | {"delta": 2.0})
    held.ask()  # left RUNNING: a refused command must not touch it either
    capsys.readouterr()

    assert in_process(monkeypatch, tmp_path, "tracking=none") == 2  # bad input (compress.cli.exits)
    (error,) = capsys.readouterr().err.splitlines()
    assert "was run with another delta; resume it unchanged or name a new" in error
    assert [t.state for t in held.get_trials()] == [TrialState.RUNNING]
    assert not (tmp_path / "cache").exists()
