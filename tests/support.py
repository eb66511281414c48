"""Shared test helpers: compose the real Hydra config into the plain dict the pipeline takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compress.cli.config_dir import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST10K_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist10k"
MNIST10K = MNIST10K_DIR if (MNIST10K_DIR / "MNIST" / "raw").is_dir() else None
needs_mnist10k = pytest.mark.skipif(
    MNIST10K is None, reason="real MNIST-10k files not found (../shared/data/mnist10k)"
)

#: Small, fast training settings for end-to-end runs on digits or fake data.
QUICK = [
    "schedule.train.epochs=3",
    "schedule.finetune.epochs=2",
    "measure.repeats=3",
    "measure.warmup=1",
    "measure.max_seconds=0.2",
    "measure.probes=[]",
    "runtime.progress=false",
]


def compose_config(outputs: Path, *overrides: str, run_dir: Path | None = None) -> dict[str, Any]:
    """The resolved config `compress` would run with, writing under `outputs`."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"paths.outputs={outputs}",
                f"paths.data={outputs / 'data'}",
                f"paths.run_dir={run_dir or outputs / 'run'}",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def mlflow_runs(outputs: Path) -> list[Any]:
    """All runs in the SQLite store under `outputs` (empty when no store exists)."""
    db = outputs / "mlflow.db"
    if not db.exists():
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments)) if experiments else []


def run_cli(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """A command's entry function run in this process as the shell would run it (`argv`
    after the program name): its exit code, stdout and stderr. Saves a subprocess's ~10 s
    of imports where the exit-code contract itself is not what is tested."""
    import sys

    argv_before = sys.argv
    sys.argv = [getattr(main, "__module__", "compress"), *argv]
    capsys.readouterr()
    try:
        returned = main()
        code = returned if isinstance(returned, int) else 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv_before
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], message: str
) -> None:
    """`run` on fake data with `overrides` raises a one-line ConfigError holding `message`,
    trains no baseline, writes no run folder or cache and leaves no FINISHED run."""
    from compress.errors import ConfigError
    from compress.run.pipeline import run

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the baseline was trained")

    monkeypatch.setattr("compress.run.steps.load_or_train", no_training)
    cfg = compose_config(tmp_path, *QUICK, "dataset=fake", *overrides)
    with pytest.raises(ConfigError) as error:
        run(cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))


def log_run(
    client: Any,
    experiment_id: str,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    start: int,
    status: str = "FINISHED",
) -> str:
    """One run in a real MLflow store, as `compress` leaves it: its params, metrics and tags,
    started at `start` (ms: the order reports read "newest" by), ended with `status`."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, start_time=start, tags=tags).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), start, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run_id, status)
    return run_id
