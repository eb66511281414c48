"""The wheel `uv build` makes, installed in a fresh virtual environment outside the checkout:
it carries every config, and `compress` runs from it as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT, mlflow_runs

pytestmark = pytest.mark.slow

UV = shutil.which("uv")

#: A model config of the user's own, in a folder of theirs (`--config-dir`).
USER_MODEL = "name: mlp\nhidden: [12]\ndropout: 0.0\nbatch_norm: false\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the wheel, the venv's bin folder, a work folder outside the checkout)."""
    if UV is None:
        pytest.skip("uv is not on PATH")
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [UV, "build", "--out-dir", str(root / "dist")], cwd=REPO_ROOT, check=True, timeout=600
    )  # sdist first, then the wheel from the sdist: both targets' file lists are exercised
    (wheel,) = (root / "dist").glob("*.whl")
    venv = root / "venv"
    subprocess.run([UV, "venv", "--quiet", str(venv)], check=True, timeout=120)
    install = [UV, "pip", "install", "--quiet", "--python", str(venv), str(wheel)]
    subprocess.run(install, check=True, timeout=900)
    work = root / "work"
    work.mkdir()
    return wheel, venv / "bin", work


def _env() -> dict[str, str]:
    """The environment without the checkout's own venv or import path."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(bin_dir: Path, work: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "compress"), *args],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wheel_ships_every_config_once_as_real_files(installed) -> None:
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        shipped = {n for n in names if n.startswith("compress/conf/")}
        experiment = archive.read("compress/conf/experiment/fitnets.yaml")
    assert len(names) == len(set(names))
    expected = {
        f"compress/conf/{p.relative_to(REPO_ROOT / 'conf')}"
        for p in (REPO_ROOT / "conf").rglob("*.yaml")
        if "experiment" not in p.relative_to(REPO_ROOT / "conf").parts
    } | {f"compress/conf/experiment/{p.name}" for p in (REPO_ROOT / "experiments").glob("*.yaml")}
    assert shipped == expected
    assert experiment == (REPO_ROOT / "experiments" / "fitnets.yaml").read_bytes()


def test_installed_compress_reads_its_packaged_configs(installed) -> None:
    _, bin_dir, work = installed
    probe = "import compress, compress.cli.config_dir as c; print(compress.__file__, c.CONFIG_DIR)"
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", probe],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    venv = bin_dir.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(venv) for p in where), where
    assert where[1].endswith(os.path.join("compress", "conf"))


def test_cfg_job_composes_the_shipped_config_and_an_experiment(installed) -> None:
    _, bin_dir, work = installed
    job = _run(bin_dir, work, "--cfg", "job", timeout=300)
    assert job.returncode == 0, job.stderr
    assert "name: small_cnn" in job.stdout and "name: digits" in job.stdout
    assert "probes:" in job.stdout
    study = _run(bin_dir, work, "+experiment=fitnets", "--cfg", "job", timeout=300)
    assert study.returncode == 0, study.stderr
    composed = yaml.safe_load(study.stdout)
    assert composed["model"]["hidden"] == [1200, 1200]  # the experiment's, not mlp's default
    assert composed["study"]["paper"].startswith("Romero et al. 2015")


def test_default_job_runs_from_the_wheel(installed) -> None:
    _, bin_dir, work = installed
    outputs = work / "default"
    done = _run(bin_dir, work, f"paths.outputs={outputs}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "top-1 accuracy" in done.stdout and "tracking: mlflow run" in done.stdout
    (summary,) = outputs.glob("runs/*/*/summary.json")
    metrics = json.loads(summary.read_text())["metrics"]
    assert metrics["acc"] > 0.8 and metrics["ratio/params"] > 3
    assert metrics["onnx/acc"] > 0.8  # the default probes ran from the wheel too
    (run,) = mlflow_runs(outputs)
    assert run.info.status == "FINISHED"
    # Outside a checkout there is no git history of this code: said, not guessed.
    assert run.data.tags["git.commit"] == "unknown"


def test_a_users_own_config_dir_adds_a_model(installed) -> None:
    _, bin_dir, work = installed
    configs = work / "my_configs"
    (configs / "model").mkdir(parents=True)
    (configs / "model" / "tiny_mlp.yaml").write_text(USER_MODEL)
    outputs = work / "user"
    done = _run(
        bin_dir,
        work,
        "--config-dir",
        str(configs),
        "model=tiny_mlp",
        "schedule.train.epochs=1",
        "schedule.finetune.epochs=1",
        "measure.probes=[]",
        "tracking=none",
        f"paths.outputs={outputs}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (config,) = outputs.glob("runs/*/*/config.yaml")
    assert yaml.safe_load(config.read_text())["model"] == yaml.safe_load(USER_MODEL)
    (summary,) = outputs.glob("runs/*/*/summary.json")
    result = json.loads(summary.read_text())
    assert result["baseline"]["params"] == 64 * 12 + 12 + 12 * 10 + 10  # 8x8 digits, 10 classes
    missing = _run(bin_dir, work, "model=tiny_mlp", "--cfg", "job", timeout=300)
    assert missing.returncode != 0  # without --config-dir the user's model is not known
