"""End to end through `compress.run.pipeline.run` on digits and generated data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from compress.artifact.store import load_artifact
from compress.cli.rerun import main as rerun_main
from compress.data import load_dataset
from compress.errors import AlreadyFinished, TrainingDivergedError
from compress.methods.masks import prunable_weights
from compress.run.pipeline import run
from compress.tracking.store import open_client
from compress.train.loop import accuracy
from tests.support import QUICK, compose_config, mlflow_runs

#: Metrics that do not depend on timing: identical on a rerun.
EXACT = (
    "acc",
    "baseline/acc",
    "acc_drop",
    "params",
    "nonzeros",
    "macs",
    "macs/nonzero",
    "bytes",
    "baseline/bytes",
    "ratio/params",
    "ratio/size",
    "ratio/macs",
    "sparsity",
)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    outputs = tmp_path_factory.mktemp("outputs")
    cfg = compose_config(outputs, *QUICK, "method.amount=0.8", run_dir=outputs / "run1")
    return outputs, cfg, run(cfg)


def test_digits_prune_end_to_end(digits_run) -> None:
    _, _, result = digits_run
    m = result.metrics
    assert m["baseline/acc"] > 0.85 and m["acc"] > 0.8
    assert m["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert m["ratio/params"] > 3
    assert m["ratio/size"] > 2  # sparse weights are stored sparsely
    assert m["ratio/macs"] > 2
    assert m["macs"] == m["baseline/macs"]  # unstructured: dense kernels still run every MAC
    for batch in (1, 256):
        assert m[f"latency_ms/b{batch}"] > 0 and m[f"baseline/latency_ms/b{batch}"] > 0
    assert m["speedup/latency"] == m["speedup/latency/b256"]
    assert not result.baseline_cached


def test_reported_figures_are_those_of_the_saved_artifact(digits_run) -> None:
    _, cfg, result = digits_run
    model = load_artifact(result.artifact)
    data = load_dataset(cfg["dataset"])
    assert accuracy(model, data.test) == result.metrics["acc"]
    assert result.artifact.stat().st_size == result.metrics["bytes"]
    assert sum(int(p.count_nonzero()) for p in model.parameters()) == result.metrics["nonzeros"]


def test_layer_macs_table_holds_both_models_and_sums_to_their_totals(digits_run) -> None:
    _, _, result = digits_run
    with (result.run_dir / "layer_macs.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["module"] for row in rows] == [
        "features.0.0",
        "features.1.0",
        "features.3.0",
        "classifier",
    ]
    m = result.metrics
    columns = {
        "baseline_dense": m["baseline/macs"],
        "baseline_nonzero": result.baseline.macs_nonzero,
        "compressed_dense": m["macs"],
        "compressed_nonzero": m["macs/nonzero"],
    }
    for column, total in columns.items():
        assert sum(int(row[column]) for row in rows) == total, column
    # Pruned: every layer keeps its dense MACs, and runs fewer where weights are zero.
    assert all(row["compressed_dense"] == row["baseline_dense"] for row in rows)
    assert all(int(row["compressed_nonzero"]) <= int(row["baseline_nonzero"]) for row in rows)


def test_pruned_weights_stayed_zero_through_finetuning(digits_run) -> None:
    _, _, result = digits_run
    weights = prunable_weights(load_artifact(result.artifact))
    total = sum(w.numel() for w in weights.values())
    kept = sum(int(w.count_nonzero()) for w in weights.values())
    # Global pruning removed exactly round(0.8 * total); fine-tuning revived none of them.
    assert kept == total - round(0.8 * total)


def test_mlflow_run_holds_params_metrics_and_artifacts(digits_run) -> None:
    outputs, _, result = digits_run
    (mlrun,) = mlflow_runs(outputs)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_id in result.tracking
    params = mlrun.data.params
    assert params["method.amount"] == "0.8"
    assert params["model.name"] == "small_cnn"
    assert params["schedule.train.epochs"] == "3"
    tags = mlrun.data.tags
    assert (tags["model"], tags["dataset"], tags["method"]) == ("small_cnn", "digits", "prune")
    assert len(tags["data.fingerprint"]) == 16
    for name in ("acc", "baseline/acc", "acc_drop", "ratio/params", "ratio/size"):
        assert mlrun.data.metrics[name] == pytest.approx(result.metrics[name])
    for name in ("ratio/macs", "speedup/latency", "latency_ms/b1", "bytes", "nonzeros"):
        assert name in mlrun.data.metrics

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
    listed = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yaml", "summary.json", "layer_macs.csv", "model"} <= listed
    assert [a.path for a in client.list_artifacts(mlrun.info.run_id, "model")] == ["model/model.pt"]
    history = client.get_metric_history(mlrun.info.run_id, "baseline/loss")
    assert [h.step for h in history] == [0, 1, 2]
    # Artifacts live under outputs/, not in the working directory.
    assert Path(
        client.get_experiment(mlrun.info.experiment_id).artifact_location.removeprefix("file://")
    ).is_relative_to(outputs)


def test_rerun_gives_identical_metrics_from_the_cache(digits_run) -> None:
    outputs, cfg, first = digits_run
    cfg = {**cfg, "paths": {**cfg["paths"], "run_dir": str(outputs / "run2")}}
    second = run(cfg)
    assert second.baseline_cached
    assert {k: second.metrics[k] for k in EXACT} == {k: first.metrics[k] for k in EXACT}


def test_corrupt_cache_is_retrained_with_identical_result(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, *QUICK, "dataset=fake", "tracking=none")
    first = run(cfg)
    (cached,) = (tmp_path / "cache" / "baselines").glob("*.pt")
    cached.write_bytes(b"not a checkpoint")
    second = run(cfg)
    assert not second.baseline_cached
    assert {k: second.metrics[k] for k in EXACT} == {k: first.metrics[k] for k in EXACT}
    third = run(cfg)
    assert third.baseline_cached


def test_method_none_measures_the_baseline_itself(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, *QUICK, "dataset=fake", "method=none", "tracking=none")
    m = run(cfg).metrics
    assert m["acc_drop"] == 0
    assert m["ratio/size"] == 1 and m["ratio/params"] == 1
    assert m["acc"] > 0.5


def test_layer_scope_prunes_each_layer_alike(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path,
        *QUICK,
        "dataset=fake",
        "model=mlp",
        "method.scope=layer",
        "method.amount=0.5",
        "tracking=none",
    )
    result = run(cfg)
    for path, weight in prunable_weights(load_artifact(result.artifact)).items():
        assert int(weight.count_nonzero()) == weight.numel() - round(0.5 * weight.numel()), path


def test_diverging_loss_fails_the_run_with_its_error(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path,
        *QUICK,
        "dataset=fake",
        "model=mlp",
        "schedule.train.lr=1e30",
        "schedule.train.momentum=0",
    )
    with pytest.raises(TrainingDivergedError, match="loss became"):
        run(cfg)
    (mlrun,) = mlflow_runs(tmp_path)
    assert mlrun.info.status == "FAILED"
    assert "TrainingDivergedError" in mlrun.data.tags["error"]
    assert not list((tmp_path / "cache" / "baselines").glob("*.pt"))


def test_sensitivity_analysis_chooses_the_amounts_pruning_uses(tmp_path: Path) -> None:
    import csv

    import yaml

    cfg = compose_config(
        tmp_path, *QUICK, "dataset=fake", "model=mlp", "tracking=none",
        "analysis=sensitivity", "analysis.levels=[0.5,0.8,0.95]", "analysis.target=0.7",
    )  # fmt: skip
    result = run(cfg)
    rows = list(csv.DictReader((result.run_dir / "sensitivity.csv").open()))
    weights = prunable_weights(load_artifact(result.artifact))
    assert sorted((r["layer"], float(r["level"])) for r in rows) == sorted(
        (layer, level) for layer in weights for level in (0.5, 0.8, 0.95)
    )
    assert (result.run_dir / "sensitivity.png").read_bytes().startswith(b"\x89PNG")
    amounts = yaml.safe_load((result.run_dir / "layer_amounts.yaml").read_text())["layers"]
    for layer, weight in weights.items():
        removed = weight.numel() - int(weight.count_nonzero())
        assert removed == round(amounts[layer] * weight.numel()), layer
    assert result.metrics["sparsity"] >= 0.7


def test_empty_sensitivity_levels_fail_before_training(tmp_path: Path) -> None:
    from compress.errors import ConfigError

    cfg = compose_config(
        tmp_path, *QUICK, "dataset=fake", "analysis=sensitivity", "analysis.levels=[]"
    )
    with pytest.raises(ConfigError, match="levels"):
        run(cfg)
    assert not (tmp_path / "cache").exists()


def test_resume_skips_a_config_that_already_finished(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, *QUICK, "dataset=fake", "tracking.resume=true")
    first = run(cfg)
    with pytest.raises(AlreadyFinished) as skipped:
        run(cfg)
    (finished,) = mlflow_runs(tmp_path)  # nothing was run or logged again
    assert skipped.value.run_id == finished.info.run_id
    assert skipped.value.metrics["acc"] == first.metrics["acc"]
    # Another config is not the same experiment: it runs.
    other = run(compose_config(tmp_path, *QUICK, "dataset=fake", "tracking.resume=true",
                               "method.amount=0.5"))  # fmt: skip
    assert other.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert len(mlflow_runs(tmp_path)) == 2


def test_a_failed_run_is_not_skipped_on_resume(tmp_path: Path) -> None:
    bad = ["dataset=fake", "tracking.resume=true", "schedule.train.lr=1e6"]
    with pytest.raises(TrainingDivergedError):
        run(compose_config(tmp_path, *QUICK, *bad))
    with pytest.raises(TrainingDivergedError):  # run again, not skipped
        run(compose_config(tmp_path, *QUICK, *bad))
    assert [r.info.status for r in mlflow_runs(tmp_path)] == ["FAILED", "FAILED"]


def test_rerun_from_a_run_id_reproduces_every_figure_but_timings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(compose_config(tmp_path, *QUICK, "dataset=fake"))
    (logged,) = mlflow_runs(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(SystemExit) as done:
        rerun_main([logged.info.run_id, "--tracking-uri", uri])
    assert done.value.code == 0, capsys.readouterr().out
    assert "0 differ" in capsys.readouterr().out
    runs = mlflow_runs(tmp_path)
    (again,) = [r for r in runs if r.data.tags.get("rerun_of") == logged.info.run_id]
    for name in ("acc", "baseline/acc", "nonzeros", "bytes", "ratio/size", "sparsity"):
        assert again.data.metrics[name] == first.metrics[name], name


def test_rerun_of_an_unknown_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    open_client(uri)  # an empty store
    with pytest.raises(SystemExit) as done:
        rerun_main(["0123456789abcdef", "--tracking-uri", uri])
    assert done.value.code == 2  # bad input (compress.cli.exits)
    assert capsys.readouterr().err == f"compress-rerun: error: no run '0123456789abcdef' in {uri}\n"
