"""One job on several processes: torchrun on gloo, shards of every batch, one MLflow run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compress.artifact.store import load_artifact
from compress.cli.main import main
from compress.data import Shard, load_dataset
from compress.distributed import launched
from compress.train.loop import accuracy
from tests.support import (
    QUICK,
    REPO_ROOT,
    assert_refused_before_training,
    compose_config,
    mlflow_runs,
    run_cli,
)

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
#: A small job on the digits: an MLP (no BatchNorm, so sync_bn has nothing to swap).
JOB = [*QUICK, "model=mlp", "schedule.train.epochs=4", "runtime.sync_bn=true"]
#: Enough training to tell processes that drift apart.
FEW_EPOCHS = ["schedule.train.epochs=1", "schedule.finetune.epochs=1"]
#: What torchrun and submitit export: cleared for the tests that set their own.
LAUNCH_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip


def torchrun(outputs: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc-per-node=2 -m compress` on the CPU (gloo), writing under `outputs`."""
    return subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "compress",
            f"paths.outputs={outputs}",
            "runtime.device=cpu",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=outputs.parent,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.usefixtures("one_thread")
def test_two_processes_train_one_job_logged_as_one_run(tmp_path: Path) -> None:
    done = torchrun(tmp_path / "two", *JOB, "tracking.log_model=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("top-1 accuracy") == 1  # rank 0 alone prints the summary
    (two,) = mlflow_runs(tmp_path / "two")
    assert two.info.status == "FINISHED"
    assert two.data.params["runtime.world_size"] == "2"
    assert two.data.tags["distributed.backend"] == "gloo"
    # Checked in the job: the weights and the pruning masks of both processes were identical.
    alike = re.search(r"\(model (\d+), masks (\d+)\)", two.data.tags["distributed.alike"])
    assert alike is not None and int(alike[1]) > 0 and int(alike[2]) > 0
    (run_dir,) = (tmp_path / "two" / "runs").glob("*/*")  # one folder, shared
    assert {"model.pt", "summary.json", "compress.log"} <= {p.name for p in run_dir.iterdir()}

    # The same job on one process (untracked here): the same accuracy within a point.
    from compress.run.pipeline import run

    one = run(compose_config(tmp_path / "one", *JOB, "tracking.enabled=false"))
    assert one is not None
    assert abs(two.data.metrics["acc"] - one.metrics["acc"]) <= 0.01

    # The artifact reloads, and is the model that was measured.
    data = load_dataset({"name": "digits"})
    model = load_artifact(run_dir / "model.pt")
    assert accuracy(model, data.test) == pytest.approx(two.data.metrics["acc"])
    # Its baseline is its own: trained by two processes, it is not one process's.
    (cached,) = (tmp_path / "two" / "cache" / "baselines").glob("*.pt")
    (alone,) = (tmp_path / "one" / "cache" / "baselines").glob("*.pt")
    assert cached.stem == two.data.tags["baseline.key"] != alone.stem


# Slow: a torchrun start-up of its own (the in-process SIGTERM test below covers how a
# stopped job ends its run in the default run).
@pytest.mark.slow
def test_a_process_that_dies_fails_the_job_and_its_run(tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    done = torchrun(
        outputs,
        *QUICK,
        "model=custom",
        "model._target_=tests.dying_model.DiesInTraining",
        "+model.at=5",
        "schedule.train.epochs=50",
    )
    assert done.returncode != 0
    (run,) = mlflow_runs(outputs)  # read without reaping: the job itself ended its run
    assert run.info.status in ("FAILED", "KILLED")
    # No baseline entry, whole or half-written: only the lock file may be there.
    left = [p.name for p in (outputs / "cache").rglob("*") if p.is_file()]
    assert [name for name in left if not name.endswith(".lock")] == []


def test_sigterm_ends_a_job_killed_with_no_cache_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    dies = ["model._target_=tests.dying_model.DiesInTraining", "+model.signal=SIGTERM"]
    job = [f"paths.outputs={tmp_path}", *QUICK, "model=custom", *dies, "+model.rank=0"]
    code, _, err = run_cli(main, [*job, "schedule.train.epochs=50"], capsys)
    assert (code, err.splitlines()[-1]) == (1, "compress: error: stopped by SIGTERM")
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert not list((tmp_path / "cache").rglob("*.pt"))


def _job_as_rank(rank: int, cfg: dict, port: int) -> None:
    """Process `rank` of two (forked from the test: no second start-up), running `cfg`."""
    from compress.distributed import leave
    from compress.run.pipeline import run

    world = {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": 2}
    os.environ.update({k: str(v) for k, v in world.items()})
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        run(cfg)
    finally:
        leave()


def test_distillation_adapters_train_alike_on_two_processes(tmp_path: Path) -> None:
    """FitNets' hint adapters (a thinner student's) are the objective's, not the model's:
    DDP does not average their gradients, the job does; else the check after training
    fails the job, naming them."""
    import socket

    import torch._dynamo  # DDP imports it: once here, not in each process

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thin = ["method=student", "~method.model", "+method.model={name:small_cnn,channels:[8,16,32]}"]
    job = [*QUICK, *FEW_EPOCHS, *thin, "distill=fitnets", "runtime.device=cpu"]
    cfg = compose_config(tmp_path, *job, "runtime.threads=1", "tracking.enabled=false")
    torch.multiprocessing.start_processes(
        _job_as_rank, args=(cfg, port), nprocs=2, start_method="fork"
    )  # raises what a process raised
    assert load_artifact(tmp_path / "run" / "model.pt") is not None  # rank 0 saved it


@pytest.fixture
def two_ranks_on_this_node(monkeypatch: pytest.MonkeyPatch) -> int:
    """The environment of rank 0 of two on this node, as torchrun sets it; how many
    processes that says run here (one more than its GPUs)."""
    processes = (torch.cuda.device_count() if torch.cuda.is_available() else 0) + 1
    for name, value in {
        "RANK": "0", "WORLD_SIZE": str(max(processes, 2)), "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return processes


def test_more_processes_than_gpus_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_ranks_on_this_node: int
) -> None:
    assert_refused_before_training(
        tmp_path, monkeypatch, ["runtime.device=cuda"], "CUDA GPU(s) are visible here"
    )


def test_sync_bn_off_the_gpu_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_ranks_on_this_node: int
) -> None:
    assert_refused_before_training(
        tmp_path,
        monkeypatch,
        ["model=small_cnn", "runtime.device=cpu", "runtime.sync_bn=true"],
        "SyncBatchNorm runs on CUDA GPUs only",
    )


@pytest.mark.parametrize("streamed", [False, True])
def test_shards_of_each_batch_make_the_batches_of_one_process(streamed: bool) -> None:
    data = load_dataset(
        {"name": "fake", "num_train": 203, "val_fraction": 0, "in_memory": not streamed,
         "workers": 0}
    )  # fmt: skip
    whole = list(data.train.loader(100, seed=3))  # 100, 100 and 3 rows
    shards = [list(data.train.loader(100, seed=3, shard=Shard(i, 3))) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    for step, batch in enumerate(whole):
        parts = [shard[step] for shard in shards]
        assert torch.equal(torch.cat([p.idx for p in parts]), batch.idx)
        assert torch.equal(torch.cat([p.x for p in parts]), batch.x)
        assert torch.equal(torch.cat([p.y for p in parts]), batch.y)
    # A last batch smaller than the processes is left out on every one of them.
    four = [data.train.loader(100, seed=3, shard=Shard(i, 4)) for i in range(4)]
    assert [len(loader) for loader in four] == [2, 2, 2, 2]
    assert [len(list(loader)) for loader in four] == [2, 2, 2, 2]


def test_sync_batch_norm_stands_in_while_training_and_hands_back_what_it_learned() -> None:
    from compress.distributed.replicas import from_sync_batch_norm, to_sync_batch_norm
    from compress.models import build_model

    model = build_model({"name": "small_cnn"}, (1, 8, 8), 10)
    before = {name: id(p) for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    swapped = to_sync_batch_norm(model)
    assert len(swapped) == 3
    assert all(isinstance(model.get_submodule(path), torch.nn.SyncBatchNorm) for path in swapped)
    assert {name: id(p) for name, p in model.named_parameters()} == before
    # One process with no group: SyncBatchNorm normalises as BatchNorm does (on any device).
    model(torch.randn(16, 1, 8, 8)).sum().backward()
    optimizer.step()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    from_sync_batch_norm(model, swapped)
    assert {type(model.get_submodule(path)) for path in swapped} == {torch.nn.BatchNorm2d}
    assert {name: id(p) for name, p in model.named_parameters()} == before
    after = model.state_dict()
    assert after.keys() == stats.keys()
    assert all(torch.equal(after[k], stats[k]) for k in stats)
    assert int(after["features.0.1.num_batches_tracked"]) == 1


def test_slurm_tasks_make_the_world_torchrun_would(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_VARIABLES:  # recorded, so that what the call exports is undone
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
    }  # fmt: skip
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    world = launched()
    assert (world.rank, world.size, world.local_rank, world.local_size) == (3, 4, 1, 2)
    assert os.environ["MASTER_ADDR"] == "gpu07"
    port = os.environ["MASTER_PORT"]
    monkeypatch.setenv("SLURM_PROCID", "0")  # another task of the same job
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name)
    assert launched().rank == 0 and os.environ["MASTER_PORT"] == port  # every task agrees


@pytest.mark.slow  # a real submitit launch of 2 tasks: `pytest -m slow`
def test_submitit_tasks_per_node_train_one_job(tmp_path: Path) -> None:
    compress = str(Path(sys.executable).with_name("compress"))
    done = subprocess.run(
        [
            compress,
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=2",
            f"paths.outputs={tmp_path}",
            "runtime.device=cpu",
            *JOB,
            "method.amount=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = mlflow_runs(tmp_path)
    (job,) = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert job.data.params["runtime.world_size"] == "2"
