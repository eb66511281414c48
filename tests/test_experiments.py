"""experiments/: every recipe composes into a valid plan (each point of its sweep too), says
its command and claim up front, and the table generator aggregates and writes rows; the
slow tests run every recipe's smoke version end to end."""

from __future__ import annotations

import importlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from compress.errors import DatasetMissingError
from compress.run.pipeline import Plan, run
from tests.support import REPO_ROOT, compose_config

EXPERIMENTS = REPO_ROOT / "experiments"


def _import(name: str) -> ModuleType:
    """A module of experiments/ (scripts that import their siblings, as run from there)."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


results = _import("results")
reproduce = _import("reproduce")
STUDIES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def _recipe(study: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / f"{study}.yaml").read_text())


def _sweep_points(study: str) -> list[list[str]]:
    """Override lists for every combination of the study's sweep, seeds left out (a seed
    changes no structure); one empty list for a study that is not a sweep."""
    params = ((_recipe(study).get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    axes = [
        [f"{key}={value.strip()}" for value in str(values).split(",")]
        for key, values in params.items()
        if key != "seed"
    ]
    return [list(combo) for combo in itertools.product(*axes)]


def test_the_experiment_group_is_this_folder() -> None:
    link = REPO_ROOT / "conf" / "experiment"
    assert link.resolve() == EXPERIMENTS.resolve()
    assert len(STUDIES) >= 11


@pytest.mark.parametrize("study", STUDIES)
def test_recipe_composes_into_a_valid_plan_at_every_point(study: str, tmp_path: Path) -> None:
    for overrides in _sweep_points(study):
        cfg = compose_config(
            tmp_path, f"+experiment={study}", f"dataset.root={tmp_path / 'data'}", *overrides
        )
        plan = Plan.from_config(cfg)  # every section parses: method, schedule, distill ...
        assert cfg["study"]["paper"] and plan.dataset["name"] == cfg["dataset"]["name"]
        for override in overrides:
            key, value = override.split("=", 1)
            if "." not in key:  # a group chosen by the sweep, e.g. schedule=agp
                assert cfg[key]["name"] in (value, "stack", "distill")


def test_recipe_without_its_data_stops_with_where_to_put_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    cfg = compose_config(tmp_path, "+experiment=han2015_lenet300", f"dataset.root={missing}")
    with pytest.raises(DatasetMissingError) as error:
        run(cfg)
    message = str(error.value)
    assert str(missing / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "\n" not in message


def test_smoke_overrides_let_the_study_and_the_user_win() -> None:
    study = results.Study.load("han2015_lenet5")
    cmd = reproduce.command(study, Path("/s"), Path("/o"), True, ["runtime.threads=2"])
    assert "dataset=fake" in cmd and "dataset=digits" not in cmd
    assert "schedule.finetune.epochs=4" in cmd and "schedule.finetune.epochs=2" not in cmd
    assert "runtime.threads=2" in cmd and "runtime.threads=1" not in cmd
    assert cmd[1:3] == ["-m", "+experiment=han2015_lenet5"]
    assert "hydra.sweep.dir=/s" in cmd and "paths.outputs=/o" in cmd
    full = reproduce.command(study, Path("/s"), Path("/o"), False, [])
    assert not any(o.startswith("dataset=") for o in full), "a full run keeps the recipe's data"


# --- the table generator on hand-made MLflow runs -------------------------------------


@dataclass(frozen=True)
class Sweep:
    """A study's sweep as `compress -m` leaves it in MLflow: a parent run tagged with the
    sweep folder, one child run per job."""

    folder: Path
    uri: str
    parent: str

    @classmethod
    def start(cls, folder: Path, outputs: Path) -> Sweep:
        from mlflow import MlflowClient

        folder.mkdir(parents=True)
        uri = f"sqlite:///{outputs / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name("compress")
        experiment = found.experiment_id if found else client.create_experiment("compress")
        tags = {"sweep": f"sweep {folder.name}", "sweep.dir": str(folder)}
        parent = client.create_run(experiment, tags=tags).info.run_id
        return cls(folder, uri, parent)

    def job(
        self,
        number: int,
        overrides: list[str],
        metrics: dict,
        dataset: dict,
        status: str = "FINISHED",
    ) -> str:
        """One job's run: params as the pipeline flattens its config, overrides as tagged."""
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        client = MlflowClient(tracking_uri=self.uri)
        parent = client.get_run(self.parent)
        tags = {"mlflow.parentRunId": self.parent, "overrides": " ".join(overrides)}
        run_id = client.create_run(parent.info.experiment_id, tags=tags).info.run_id
        params = {"paths.run_dir": str(self.folder / str(number))}
        params |= {f"dataset.{k}": str(v) for k, v in dataset.items()}
        for override in overrides:  # a recipe (`# @package _global_`) sets no key of its own
            key, value = override.lstrip("+~").split("=", 1)
            if key != "experiment":
                params[key if "." in key or key == "seed" else f"{key}.name"] = value
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run_id, status)
        return run_id

    def jobs(self) -> list:
        """The jobs read back, the parent found by the folder as `reproduce.py` finds it."""
        return results.collect(self.uri, results.find_parent(self.folder, self.uri))


MNIST10K_DATA = {"name": "mnist", "root": "/d/mnist10k"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module's sweeps (each found by its own folder)."""
    return tmp_path_factory.mktemp("store")


def _agp_sweep(folder: Path, outputs: Path) -> Sweep:
    """zhu_gupta_agp at two sparsities, two seeds: AGP ahead at 0.98, behind at 0.9."""
    sweep = Sweep.start(folder, outputs)
    accs = {("0.9", "oneshot"): (0.95, 0.96), ("0.9", "agp"): (0.94, 0.95)}
    accs |= {("0.98", "oneshot"): (0.90, 0.92), ("0.98", "agp"): (0.93, 0.93)}
    number = 0
    for (amount, schedule), values in accs.items():
        for seed, acc in enumerate(values):
            overrides = [f"schedule={schedule}", f"method.amount={amount}", f"seed={seed}"]
            metrics = {"acc": acc, "baseline/acc": 0.96, "ratio/params": 10.0}
            sweep.job(number, [*overrides, "+experiment=zhu_gupta_agp"], metrics, MNIST10K_DATA)
            number += 1
    return sweep


def test_aggregate_averages_seeds_per_arm_and_point(tmp_path: Path, store: Path) -> None:
    sweep = _agp_sweep(tmp_path / "sweep", store)
    study = results.Study.load("zhu_gupta_agp")
    points = {p.label: p for p in results.aggregate(study, sweep.jobs())}
    assert set(points) == {"90% sparse", "98% sparse"}
    low = points["90% sparse"].values
    assert low["oneshot.acc"].mean == pytest.approx(0.955)
    assert low["oneshot.acc"].std == pytest.approx(0.0070711, rel=1e-4)
    assert low["agp.n"] == 2 and low["agp.delta_pt"].mean == pytest.approx(-1.5)
    assert low["gain_pt"].mean == pytest.approx(-1.0)
    assert points["90% sparse"].failures and not points["98% sparse"].failures
    text = results.render(study.report, points["98% sparse"].values)
    assert text == "98% sparse: one-shot 91.00% ± 1.41%, AGP 93.00% (+2.00 pt)"


def test_failed_and_repeated_jobs_count_as_in_compress_report(tmp_path: Path, store: Path) -> None:
    """The groupby of compress-report: a failed job is no figure, a seed run twice counts
    once (its newest run), and jobs of another sweep in the store are not this one's."""
    sweep = _agp_sweep(tmp_path / "sweep", store)
    args = ["schedule=agp", "method.amount=0.98", "seed=1"]
    sweep.job(8, args, {"acc": 0.99, "baseline/acc": 0.96}, MNIST10K_DATA)  # seed 1 again
    sweep.job(9, ["schedule=agp", "method.amount=0.98", "seed=2"], {}, MNIST10K_DATA, "FAILED")
    other = Sweep.start(tmp_path / "other", store)
    other.job(0, args, {"acc": 0.10, "baseline/acc": 0.96}, MNIST10K_DATA)
    jobs = sweep.jobs()
    assert len(jobs) == 9 and all(j.status == "FINISHED" for j in jobs)
    study = results.Study.load("zhu_gupta_agp")
    points = {p.label: p for p in results.aggregate(study, jobs)}
    high = points["98% sparse"].values
    assert high["agp.n"] == 2 and high["agp.acc"].mean == pytest.approx((0.93 + 0.99) / 2)
    assert high["agp.delta_pt"].mean == pytest.approx(100 * ((0.93 + 0.99) / 2 - 0.96))


def test_a_folder_without_a_tracked_sweep_says_so(tmp_path: Path, store: Path) -> None:
    sweep = Sweep.start(tmp_path / "sweep", store)
    (tmp_path / "untracked").mkdir()
    uri = sweep.uri
    with pytest.raises(results.StudyError, match=r"no sweep run in .* \(was tracking off\?\)"):
        results.find_parent(tmp_path / "untracked", uri)
    with pytest.raises(results.StudyError, match="no MLflow store at"):
        results.find_parent(tmp_path / "sweep", f"sqlite:///{tmp_path / 'none.db'}")


def test_row_says_partly_and_names_the_miss(tmp_path: Path, store: Path) -> None:
    sweep = _agp_sweep(tmp_path / "sweep", store)
    study = results.Study.load("zhu_gupta_agp")
    row = results.make_row(study, sweep.jobs(), "2026-01-02", 600.0)
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert len(cells) == len(results.COLUMNS)
    assert cells[0] == "`zhu_gupta_agp`"
    assert cells[6].startswith("**partly (1 of 2 settings)**")
    assert "90% sparse: missed agp.acc >= oneshot.acc (0.945 vs 0.955)" in cells[6]
    assert cells[7] == "MNIST-10k (8k/2k)"
    assert cells[8] == "`uv run compress -m +experiment=zhu_gupta_agp`"
    assert cells[9] == "2026-01-02 (10 min)"


def test_single_job_row_meets_targets_and_names_digits(tmp_path: Path, store: Path) -> None:
    sweep = Sweep.start(tmp_path / "sweep", store)
    metrics = {"acc": 0.958, "baseline/acc": 0.958, "ratio/params": 12.1}
    sweep.job(0, ["seed=0"], metrics, {"name": "digits"})
    study = results.Study.load("han2015_lenet300")
    row = results.make_row(study, sweep.jobs(), "2026-01-02", None)
    assert "12.10x fewer weights; 95.80% → 95.80% (+0.00 pt, n=1)" in row
    assert "**yes**" in row and "| digits |" in row and "| 2026-01-02 |" in row


def test_boolean_arms_match_as_hydra_writes_them(tmp_path: Path, store: Path) -> None:
    """A swept `false,true` comes back from Hydra as False / True."""
    sweep = Sweep.start(tmp_path / "sweep", store)
    for number, (reinit, acc) in enumerate((("False", 0.96), ("True", 0.94))):
        overrides = [f"schedule.reinit={reinit}", "method.amount=0.968", "seed=0"]
        sweep.job(number, overrides, {"acc": acc, "baseline/acc": 0.96}, MNIST10K_DATA)
    study = results.Study.load("frankle_lottery_ticket")
    (point,) = results.aggregate(study, sweep.jobs())
    assert point.label == "3.6% kept" and not point.failures
    assert results.render(study.report, point.values) == (
        "3.6% kept: ticket 96.00% (+0.00 pt), re-init 94.00% (-2.00 pt)"
    )


def test_update_table_replaces_run_rows_and_keeps_the_others() -> None:
    head = "# t\n\n" + results.BEGIN + "\n| Study | x |\n|---|---|\n"
    text = head + "| `b` | old b |\n| `a` | old a |\n" + results.END + "\nclosing note\n"
    new = results.update_table(text, {"b": "| `b` | new b |", "c": "| `c` | c |"}, ["c", "a"])
    body = new.split(results.BEGIN)[1].split(results.END)[0]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert rows == ["| `c` | c |", "| `a` | old a |", "| `b` | new b |"]
    assert new.endswith("closing note\n") and new.startswith("# t")
    with pytest.raises(results.StudyError, match="markers"):
        results.update_table("no table here", {}, [])


def test_collect_mode_writes_the_row_into_the_readme(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "experiments" / "zhu_gupta_agp"
    _agp_sweep(runs / "2026-01-02_10-00-00", tmp_path)
    (runs / "2026-01-03_10-00-00").mkdir()  # newer, but its sweep never logged a job
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{results.BEGIN}\n{results.END}\n")
    code = reproduce.main(
        ["--collect", "zhu_gupta_agp", "--outputs", str(tmp_path), "--readme", str(readme)]
    )
    assert code == 0
    assert "| `zhu_gupta_agp` |" in readme.read_text()
    missing = reproduce.main(["--collect", "fitnets", "--outputs", str(tmp_path)])
    assert missing == 1 and "no finished run" in capsys.readouterr().err


def test_unknown_study_is_one_line(capsys) -> None:
    assert reproduce.main(["no_such_study"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reproduce: error: no study 'no_such_study'") and err.count("\n") == 1


def test_table_order_is_by_year() -> None:
    order = results.table_order()
    years = [results.Study.load(n).year for n in order]
    assert years == sorted(years) and set(order) == set(STUDIES)


# --- every recipe, tiny, end to end ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_smoke_version_runs_end_to_end(study: str, tmp_path: Path, capsys) -> None:
    assert reproduce.main(["--smoke", study, "--outputs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summaries = list((tmp_path / "experiments" / study).glob("smoke-*/*/summary.json"))
    assert summaries, out
    row = next(line for line in out.splitlines() if line.startswith(f"| `{study}` |"))
    assert "n/a" not in row and "not measured" not in row, row
