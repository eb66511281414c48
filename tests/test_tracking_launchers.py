"""Sweeps beyond one process: the SLURM, Ray and joblib launcher configs compose into what
their plugins take, hand the sweep's parent run to the jobs, and a real submitit sweep
nests its jobs, each a process of its own, under one MLflow parent run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from compress.cli.config_dir import CONFIG_DIR
from compress.tracking.names import SWEPT_ENV
from compress.tracking.run import PARENT_ENV, SWEEP_ENV
from tests.support import QUICK, mlflow_runs

COMPRESS = str(Path(sys.executable).with_name("compress"))

#: Launcher option -> its plugin's class and fields we rely on (ours: slurm, ray).
LAUNCHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "slurm": (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        {"tasks_per_node": 1, "nodes": 1, "partition": None, "max_num_timeout": 0},
    ),
    "ray": (
        "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
        {"ray": {"init": {"address": None}, "remote": {"num_gpus": 0, "max_retries": 0}}},
    ),
    "joblib": (
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        {"n_jobs": -1, "prefer": "processes"},
    ),
    "submitit_local": (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        {"tasks_per_node": 1},
    ),
}
#: The Ray plugin stays out of our lock (it pins cloudpickle < 3): added with `uv run --with`.
NOT_INSTALLED = {"ray"}


def launcher_config(outputs: Path, launcher: str, *overrides: str) -> DictConfig:
    """`hydra.launcher` as a multirun with these overrides would instantiate it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"paths.outputs={outputs}", f"hydra/launcher={launcher}", *overrides],
            return_hydra_config=True,
        )
    return cfg.hydra.launcher


def contains(tree: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(
        contains(tree[k], v) if isinstance(v, dict) else tree.get(k, object()) == v
        for k, v in expected.items()
    )


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_composes_to_its_plugin(tmp_path: Path, launcher: str) -> None:
    target, fields = LAUNCHERS[launcher]
    node = OmegaConf.to_container(launcher_config(tmp_path, launcher), resolve=True)
    assert node["_target_"] == target
    assert contains(node, fields), node
    if launcher not in NOT_INSTALLED:
        get_class(target)  # the plugin really provides it


def test_slurm_jobs_get_our_resources_and_the_parent_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The launcher is built after the sweep's parent run exists (Hydra: callbacks first).
    monkeypatch.setenv(PARENT_ENV, "0123abcd")
    monkeypatch.setenv(SWEEP_ENV, "sweep 2026-01-02 03-04-05-000006")
    monkeypatch.setenv(SWEPT_ENV, "method.amount seed")
    node = launcher_config(tmp_path, "slurm", "hydra.launcher.partition=gpu")
    params = instantiate(node).params  # the real SlurmLauncher, holding what it submits with
    folder = Path(params["submitit_folder"])
    assert folder.parent.name == ".submitit" and folder.is_relative_to(tmp_path / "multirun")
    # What submitit writes to sbatch for an array of 2 jobs. SlurmExecutor itself refuses to
    # exist without `srun`, so its own renderer is called with the names it maps ours to.
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    names = SlurmExecutor._equivalence_dict()
    sbatch = {
        names.get(key, key): value
        for key, value in params.items()
        if key not in {"submitit_folder", "max_num_timeout"}  # executor settings, not sbatch
    }
    sbatch["mem"] = f"{sbatch['mem']}GB"
    script = _make_sbatch_string(command="python -m job", folder=folder, map_count=2, **sbatch)
    lines = script.splitlines()
    for flag in (
        "--time=240",
        "--cpus-per-task=4",
        "--gpus-per-node=1",
        "--mem=16GB",
        "--ntasks-per-node=1",
        "--partition=gpu",
        "--job-name=compress",
        "--array=0-1%2",
    ):
        assert f"#SBATCH {flag}" in lines
    assert not any(line.startswith("#SBATCH --account") for line in lines)
    exports = [
        "export COMPRESS_PARENT_RUN_ID='0123abcd'",
        "export COMPRESS_SWEEP='sweep 2026-01-02 03-04-05-000006'",
        "export COMPRESS_SWEPT='method.amount seed'",
    ]
    assert all(lines.index(e) < lines.index("export SUBMITIT_EXECUTOR=slurm") for e in exports)


def test_ray_jobs_get_the_parent_run_in_their_runtime_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PARENT_ENV, "0123abcd")
    monkeypatch.setenv(SWEEP_ENV, "sweep x")
    monkeypatch.setenv(SWEPT_ENV, "method.amount")
    init = OmegaConf.to_container(launcher_config(tmp_path, "ray").ray.init, resolve=True)
    assert init["runtime_env"]["env_vars"] == {
        PARENT_ENV: "0123abcd", SWEEP_ENV: "sweep x", SWEPT_ENV: "method.amount"
    }  # fmt: skip
    # Outside a tracked sweep: empty strings (Ray takes only strings; empty = no parent).
    for name in (PARENT_ENV, SWEEP_ENV, SWEPT_ENV):
        monkeypatch.delenv(name)
    init = OmegaConf.to_container(launcher_config(tmp_path, "ray").ray.init, resolve=True)
    assert init["runtime_env"]["env_vars"] == {PARENT_ENV: "", SWEEP_ENV: "", SWEPT_ENV: ""}


@pytest.mark.slow  # ~100 s on 2 busy cores: each job a fresh process importing torch and mlflow
def test_submitit_sweep_nests_its_jobs_under_one_parent_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            COMPRESS,
            "--multirun",
            "hydra/launcher=submitit_local",
            f"paths.outputs={tmp_path}",
            f"paths.data={tmp_path / 'data'}",
            *QUICK,
            "method.amount=0.5,0.7",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert done.returncode == 0, done.stderr
    runs = mlflow_runs(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert sorted((r.data.params["method.amount"], r.info.status) for r in children) == [
        ("0.5", "FINISHED"),
        ("0.7", "FINISHED"),
    ]
    assert parent.info.status == "FINISHED"
    for child in children:  # COMPRESS_PARENT_RUN_ID reached the submitit processes
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["sweep"] == parent.data.tags["sweep"]
        assert {"acc", "ratio/size"} <= set(child.data.metrics)
    # Each job ran in a process of its own (submitit's logs), yet they trained one baseline.
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    assert len(list(sweep_dir.glob(".submitit/*/*_log.out"))) == 2
    assert sorted(r.data.tags["baseline.cached"] for r in children) == ["false", "true"]
