"""compress-report: the Pareto front, statistics over seeds, and reports of real MLflow runs."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compress.cli.report import main
from compress.reporting.aggregate import configurations, override_tokens
from compress.reporting.pareto import group_by, mean_std, pareto_front
from compress.reporting.records import Job
from compress.reporting.report import report_for_parent
from tests.support import QUICK

REPORT = str(Path(sys.executable).with_name("compress-report"))
COMPRESS = str(Path(sys.executable).with_name("compress"))
NAN = math.nan

# -- the front and the statistics, by hand


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(1, 1), (2, 2)], [False, True]),  # dominated on both axes
        ([(1, 3), (2, 2), (3, 1), (1, 1)], [True, True, True, False]),  # a trade-off
        ([(2, 1), (2, 3)], [False, True]),  # a tie on x, better on y
        ([(2, 2), (2, 2), (1, 1)], [True, True, False]),  # duplicates both stay
        ([(NAN, 5), (1, NAN), (1, 1)], [False, False, True]),  # NaN never on the front
        ([(NAN, 10), (1, 1)], [False, True]),  # ... and dominates nothing
        ([(0.5, 0.5)], [True]),
        ([], []),
    ],
)
def test_pareto_front(points: list[tuple[float, float]], front: list[bool]) -> None:
    assert pareto_front(points) == front


def test_mean_and_sample_std_over_seeds() -> None:
    assert mean_std([0.98, 0.96]) == pytest.approx((0.97, 0.02 / math.sqrt(2)))
    assert mean_std([1, 2, 3, 4]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    assert mean_std([5.0]) == (5.0, 0.0)  # one seed: no spread
    assert all(math.isnan(v) for v in mean_std([1.0, NAN]))  # a missing figure is not hidden
    with pytest.raises(ValueError):
        mean_std([])


def test_group_by_keeps_first_seen_order() -> None:
    groups = group_by([3, 1, 4, 1, 5, 9, 2, 6], lambda n: n % 3)
    assert groups == {0: [3, 9, 6], 1: [1, 4, 1], 2: [5, 2]}


def test_override_tokens_leave_out_seeds_and_paths() -> None:
    text = (
        "paths.outputs=/x seed=1 dataset.seed=3 method.amount=0.5 "
        "+method.stages={prune: {amount: 0.8}} ~distill.hints tracking=none runtime.progress=false"
    )
    assert override_tokens(text) == [
        "method.amount=0.5",
        "+method.stages={prune: {amount: 0.8}}",
        "~distill.hints",
    ]


def job(run_id: str, seed: int, amount: str, acc: float, start: int, **tags: str) -> Job:
    params = {
        "seed": str(seed),
        "dataset.seed": str(seed + 10),
        "method.name": "prune",
        "method.amount": amount,
        "paths.run_dir": f"/runs/{run_id}",
        "tracking.uri": f"sqlite:///{run_id}.db",
        "runtime.progress": str(seed % 2 == 0).lower(),
    }
    status = tags.pop("status", "FINISHED")
    metrics = {"acc": acc, "ratio/size": 1 / (1 - float(amount))}
    return Job(run_id, status, start, params, metrics, {"method": "prune", **tags})


def test_configurations_group_seeds_and_keep_the_newest_of_a_repeated_seed() -> None:
    jobs = [
        job("a", 0, "0.5", 0.90, 1, overrides="method.amount=0.5 seed=0"),
        job("b", 1, "0.5", 0.80, 2, overrides="method.amount=0.5 seed=1"),
        job("c", 0, "0.5", 0.70, 3, overrides="method.amount=0.5 seed=0"),  # seed 0 again
        job("d", 0, "0.8", 0.60, 4, overrides="method.amount=0.8"),
        job("e", 1, "0.8", 0.50, 5, overrides="method.amount=0.8", status="FAILED"),
    ]
    half, most = configurations(jobs, "ratio/size")  # sorted by the axis
    assert (half.label, most.label) == ("method.amount=0.5", "method.amount=0.8")
    assert sorted(half.run_ids) == ["b", "c"] and half.n_seeds == 2
    assert (half.acc_mean, half.acc_std) == pytest.approx((0.75, 0.1 / math.sqrt(2)))
    assert (half.axis_mean, half.axis_std) == pytest.approx((2.0, 0.0))
    assert most.run_ids == ["d"] and most.acc_std == 0.0
    assert half.pareto and most.pareto  # a trade-off: both on the front


def test_configurations_without_overrides_are_labelled_by_the_params_that_differ() -> None:
    jobs = [job("a", 0, "0.5", 0.9, 1), job("b", 0, "0.8", 0.95, 2)]
    low, high = configurations(jobs, "ratio/size")
    assert (low.label, high.label) == ("method.amount=0.5", "method.amount=0.8")
    assert (low.pareto, high.pareto) == (False, True)  # 0.8 is smaller and more accurate


# -- reports of runs logged for real in a SQLite store


@dataclass(frozen=True)
class Spec:
    method: str
    setting: str
    seed: int
    acc: float
    size: float
    params: float


SWEEP = [
    Spec("prune", "method.amount=0.5", 0, 0.98, 2.0, 2.0),
    Spec("prune", "method.amount=0.5", 1, 0.96, 2.2, 2.0),
    Spec("prune", "method.amount=0.8", 0, 0.96, 5.0, 5.0),
    Spec("prune", "method.amount=0.8", 1, 0.96, 5.0, 5.0),
    Spec("prune", "method.amount=0.8", 2, 0.96, 5.0, 5.0),
    Spec("prune", "method.amount=0.9", 0, 0.90, 10.0, 10.0),
    Spec("quantize_weights", "method.bits=8", 0, 0.975, 4.0, 1.0),
    Spec("quantize_weights", "method.bits=8", 1, 0.975, 4.0, 1.0),
    Spec("quantize_weights", "method.bits=4", 0, 0.955, 4.5, 1.0),
    Spec("quantize_weights", "method.bits=4", 1, 0.935, 4.5, 1.0),
]
#: Seed 1 of amount 0.9 finished in an earlier sweep; the re-launched one skipped it.
RESUMED = Spec("prune", "method.amount=0.9", 1, 0.92, 10.0, 10.0)
#: Outside the sweep, in the same experiment.
LONE = Spec("none", "", 0, 0.99, 1.0, 1.0)
BAD = Spec("prune", "method.amount=1.5", 0, NAN, NAN, NAN)
GONE = "0" * 32  # a resumed run id that the store no longer holds
ERROR = "ConfigError: method.amount must be in [0, 1), got 1.5"


@dataclass(frozen=True)
class Store:
    root: Path
    uri: str
    parent: str
    sweep_dir: Path
    resumed: str
    failed: str
    job: str


def _log_job(client: Any, experiment: str, root: Path, spec: Spec, status: str, **tags: str) -> str:
    from mlflow.entities import Metric, Param

    choice = f"method={spec.method}"
    setting = f"{choice} {spec.setting}".strip()
    key, _, value = spec.setting.partition("=")
    run = client.create_run(
        experiment,
        tags={
            "method": spec.method,
            "model": "small_cnn",
            "dataset": "digits",
            "schedule": "oneshot",
            "overrides": f"paths.outputs={root} schedule.train.epochs=3 {setting} seed={spec.seed}",
            "config.hash": f"{spec.method}-{value}-{spec.seed}",
            **tags,
        },
    )
    run_id = run.info.run_id
    params = {
        "seed": spec.seed,
        "dataset.seed": spec.seed,
        "model.name": "small_cnn",
        "method.name": spec.method,
        **({key: value} if key else {}),
        "schedule.train.epochs": 3,
        "paths.outputs": root,
        "paths.run_dir": root / "multirun" / run_id,
        "tracking.uri": f"sqlite:///{root}/mlflow.db",
        "runtime.progress": spec.seed % 2 == 0,
    }
    metrics = {
        "acc": spec.acc,
        "baseline/acc": 0.99,
        "ratio/size": spec.size,
        "ratio/params": spec.params,
        "ratio/macs": spec.params,
        "speedup/latency": 1.0,
        "bytes": 1000 / spec.size,
        "params": 24058,
    }
    if status == "FINISHED":
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
    else:
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.set_tag(run_id, "error", ERROR)
    client.set_terminated(run_id, status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """An experiment as `compress` leaves it: an earlier run, a lone run, a re-launched sweep
    (parent, children over two methods and several seeds, one failed, one resumed)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(
        "compress", artifact_location=(root / "mlartifacts").as_uri()
    )
    resumed = _log_job(client, experiment, root, RESUMED, "FINISHED")
    lone = _log_job(client, experiment, root, LONE, "FINISHED")
    sweep_dir = root / "multirun" / "2026-11-23" / "10-00-00"
    sweep_dir.mkdir(parents=True)
    name = "sweep 2026-11-23 10-00-00"
    parent = client.create_run(
        experiment,
        run_name=name,
        tags={
            "sweep": name,
            "sweep.dir": str(sweep_dir),
            "overrides": "method.amount=0.5,0.8,0.9,1.5",
            f"resumed.{RESUMED.method}-0.9-1": resumed,
            "resumed.deleted-since": GONE,
        },
    ).info.run_id
    child = {"mlflow.parentRunId": parent, "sweep": name}
    for spec in SWEEP:
        _log_job(client, experiment, root, spec, "FINISHED", **child)
    failed = _log_job(client, experiment, root, BAD, "FAILED", **child)
    client.create_run(experiment, tags={**child, "method": "prune"})  # a job still running
    client.set_terminated(parent, "FINISHED")
    return Store(root, uri, parent, sweep_dir, resumed, failed, lone)


def read_rows(path: Path, baselines: bool = False) -> dict[str, dict[str, str]]:
    """The configurations' rows of report.csv by label (the baselines' rows alone, if asked)."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {r["label"]: r for r in rows if (r["method"] == "baseline") == baselines}


def test_report_of_a_sweep_parent(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([store.parent, "--uri", store.uri, "--out", str(out)]) == 0
    rows = read_rows(out / "report.csv")
    half, most = rows["method=prune method.amount=0.5"], rows["method=prune method.amount=0.8"]
    nine = rows["method=prune method.amount=0.9"]
    eight = rows["method=quantize_weights method.bits=8"]
    four = rows["method=quantize_weights method.bits=4"]
    assert len(rows) == 5  # the failed job and the lone run are not points
    assert (half["method"], half["n_seeds"], half["axis"]) == ("prune", "2", "ratio/size")
    assert float(half["acc_mean"]) == pytest.approx(0.97)
    assert float(half["acc_std"]) == pytest.approx(0.02 / math.sqrt(2))
    assert float(half["axis_mean"]) == pytest.approx(2.1)
    assert float(half["axis_std"]) == pytest.approx(0.2 / math.sqrt(2))
    assert (most["n_seeds"], float(most["acc_std"])) == ("3", 0.0)
    # The resumed run is a member of the sweep: amount 0.9 has its two seeds.
    assert nine["n_seeds"] == "2" and store.resumed in nine["run_ids"].split()
    assert float(nine["acc_mean"]) == pytest.approx(0.91)
    assert float(four["acc_mean"]) == pytest.approx(0.945) and four["method"] == "quantize_weights"
    # bits=8 (0.975 at 4x) beats amount=0.5 (0.97 at 2.1x); amount=0.8 beats bits=4.
    front = {label for label, row in rows.items() if row["pareto"] == "true"}
    assert front == {eight["label"], most["label"], nine["label"]}
    assert list(rows) == [
        half["label"],
        eight["label"],
        four["label"],
        most["label"],
        nine["label"],
    ]

    text = (out / "report.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| prune")]
    assert len(table) == 3 and "**front**" in table[1] and "**front**" not in table[0]
    assert "| `method=prune method.amount=0.5` | 2 | 97.00 ± 1.41 | 2.10x ± 0.14 |" in table[0]
    failures = text.split("## Failures")[1]
    assert store.failed in failures and ERROR in failures and "method.amount=1.5" in failures
    assert f"Resumed run `{GONE}` is no longer in the store." in text
    assert "1 run(s) not ended yet" in text
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| method | configuration |" in printed and f"wrote {out / 'report.csv'}" in printed

    from mlflow import MlflowClient

    logged = MlflowClient(tracking_uri=store.uri).list_artifacts(store.parent, "report")
    assert sorted(f.path for f in logged) == [
        "report/report.csv",
        "report/report.md",
        "report/report.png",
    ]


@pytest.mark.slow  # long (a sweep or kill of whole processes): `pytest -m slow`
def test_console_script_writes_into_the_sweep_folder_on_another_axis(store: Store) -> None:
    done = subprocess.run(
        [REPORT, store.parent, "--uri", store.uri, "--axis", "ratio/params"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = read_rows(store.sweep_dir / "report.csv")
    assert {row["axis"] for row in rows.values()} == {"ratio/params"}
    # On weights kept, quantization removes none: only bits=4 (behind bits=8) is off the front.
    off = [label for label, row in rows.items() if row["pareto"] == "false"]
    assert off == ["method=quantize_weights method.bits=4"]
    assert "| ratio/params |" in done.stdout
    assert f"wrote {store.sweep_dir / 'report.md'}" in done.stdout


def test_report_for_parent_is_what_the_sweep_callback_calls(store: Store, tmp_path: Path) -> None:
    path = report_for_parent(store.uri, store.parent, "ratio/macs", tmp_path)
    assert path == tmp_path / "report.md" and "| ratio/macs |" in path.read_text()
    assert {row["axis"] for row in read_rows(tmp_path / "report.csv").values()} == {"ratio/macs"}


def test_report_of_an_experiment_counts_every_job_but_no_parent(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compress", "--uri", store.uri]) == 0
    out = store.root / "reports" / "compress"  # beside the store: outputs/reports/<experiment>
    rows = read_rows(out / "report.csv")
    # The five sweep configurations, the lone run, and no row for the parent run.
    assert len(rows) == 6
    lone = rows["method=none"]
    assert (lone["method"], lone["n_seeds"], lone["pareto"]) == ("none", "1", "true")
    assert store.parent not in " ".join(row["run_ids"] for row in rows.values())
    assert rows["method=prune method.amount=0.9"]["n_seeds"] == "2"
    assert store.failed in (out / "report.md").read_text()
    assert "logged to run" not in capsys.readouterr().out  # an experiment has no run to log to


def test_a_report_with_no_failures_says_so(store: Store, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
    experiment = client.create_experiment("clean")
    _log_job(client, experiment, store.root, SWEEP[0], "FINISHED")
    assert main(["clean", "--uri", store.uri, "--out", str(tmp_path)]) == 0
    assert "## Failures\n\nNone: every run finished." in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def only_failed(store: Store) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
    _log_job(client, client.create_experiment("broken"), store.root, BAD, "FAILED")
    return "broken"


BAD_INPUTS = {
    "unknown experiment": "no run or experiment named 'nope'",
    "unknown axis": "axis 'ratio/bogus' unknown; choose one of: ratio/params, ratio/size",
    "missing store": "no MLflow store at",
    "not a tracking database": "is not an MLflow tracking database",
    "no finished runs": "no FINISHED runs in experiment 'broken' (1 failed)",
    "a job, not a sweep": "is not the parent run of a sweep",
}


def _bad_command(case: str, store: Store, only_failed: str, tmp_path: Path) -> list[str]:
    target, uri, axis = "compress", store.uri, "ratio/size"
    if case == "unknown experiment":
        target = "nope"
    elif case == "unknown axis":
        axis = "ratio/bogus"
    elif case == "missing store":
        uri = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    elif case == "not a tracking database":
        (tmp_path / "notes.db").write_text("not a database\n")
        uri = f"sqlite:///{tmp_path / 'notes.db'}"
    elif case == "no finished runs":
        target = only_failed
    else:
        target = store.job
    return [target, "--uri", uri, "--axis", axis, "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    store: Store, only_failed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    assert main(_bad_command(case, store, only_failed, tmp_path)) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("compress-report: error: ") and BAD_INPUTS[case] in printed.err
    assert len(printed.err.strip().splitlines()) == 1 and printed.out == ""
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "elsewhere").exists()  # no empty store created
    if case == "not a tracking database":  # left as it was, not made into a store
        assert (tmp_path / "notes.db").read_text() == "not a database\n"


def test_console_script_error_is_one_line_on_stderr(
    store: Store, only_failed: str, tmp_path: Path
) -> None:
    """What the user sees: no MLflow log lines or traceback around our one line."""
    done = subprocess.run(
        [REPORT, *_bad_command("unknown experiment", store, only_failed, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr
        == f"compress-report: error: {BAD_INPUTS['unknown experiment']} in {store.uri}\n"
    )
    assert not (tmp_path / "out").exists()


SWEPT = ["seed=0,1", "method.amount=0.5,0.9"]


@pytest.mark.slow
def test_report_of_a_real_sweep(tmp_path: Path) -> None:
    done = subprocess.run(
        [COMPRESS, "--multirun", f"paths.outputs={tmp_path}", *QUICK, *SWEPT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = [r for r in client.search_runs(["1"]) if "sweep.dir" in r.data.tags]
    out = tmp_path / "report"
    report = [parent.info.run_id, "--uri", f"sqlite:///{tmp_path}/mlflow.db", "--out", str(out)]
    assert main(report) == 0
    rows = read_rows(out / "report.csv")
    assert sorted(rows) == ["method.amount=0.5", "method.amount=0.9"]
    assert {row["n_seeds"] for row in rows.values()} == {"2"}
    assert float(rows["method.amount=0.9"]["axis_mean"]) > float(
        rows["method.amount=0.5"]["axis_mean"]
    )
