"""A run whose process died is never left RUNNING: the next compress command on the store
marks it KILLED. Real processes, a real SQLite store, real kills."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from compress.cli.report import main as report_main
from compress.tracking.process import Owner, process_start
from compress.tracking.reaper import REAPED_TAG
from compress.tracking.store import open_client
from tests.support import mlflow_runs

COMPRESS = str(Path(sys.executable).with_name("compress"))
LIVE_SECONDS = 300  # generous: a job takes ~15 s to open its run on a busy 2-core machine


def _stat_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def dead_owner() -> Owner:
    """The owner tags of a process that ran and has exited (seen as a zombie first)."""
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    alive = process_start(child.pid)
    assert alive
    assert child.stdin is not None
    child.stdin.close()  # it exits; not waited for yet, it stays a zombie
    deadline = time.monotonic() + LIVE_SECONDS
    while _stat_state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_start(child.pid) is None  # dead, though its pid is still taken
    child.wait()
    me = Owner.current()
    return Owner(me.host, child.pid, alive, me.namespace)


def _run(client: Any, experiment: str, owner: Owner | None) -> str:
    tags = owner.tags() if owner else {}
    return client.create_run(experiment, tags=tags).info.run_id


def test_the_reaper_kills_runs_of_dead_processes_of_this_host_only(
    tmp_path: Path, dead_owner: Owner
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    experiment = client.create_experiment("t")
    me = Owner.current()
    runs = {
        "dead": _run(client, experiment, dead_owner),
        "live": _run(client, experiment, me),
        "pid reused": _run(client, experiment, Owner(me.host, me.pid, "1", me.namespace)),
        "other host": _run(client, experiment, Owner(f"not-{socket.gethostname()}", 1, "", "")),
        "other namespace": _run(client, experiment, Owner(me.host, dead_owner.pid, "", "pid:[0]")),
        "untagged": _run(client, experiment, None),
    }
    open_client(uri)  # any command opening the store reaps
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {
        "dead": "KILLED",
        "live": "RUNNING",
        "pid reused": "KILLED",
        "other host": "RUNNING",
        "other namespace": "RUNNING",
        "untagged": "RUNNING",
    }
    why = client.get_run(runs["dead"]).data.tags[REAPED_TAG]
    assert f"process {dead_owner.pid} on {me.host} died" in why


def test_a_run_left_open_at_exit_ends_killed(tmp_path: Path) -> None:
    script = (
        "from compress.tracking.config import TrackingConfig\n"
        "from compress.tracking.run import Run\n"
        f"tracking = TrackingConfig(uri='sqlite:///{tmp_path / 'mlflow.db'}', experiment='t')\n"
        "Run(tracking, {}).__enter__().log_metrics({'m': 1.0}, step=3)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    (run,) = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.metrics == {"m": 1.0}  # queued before exit, written before the end
    assert REAPED_TAG not in run.data.tags  # ended by its own process, not reaped


@pytest.mark.slow  # long (a sweep or kill of whole processes): `pytest -m slow`
def test_kill_9_of_a_jobs_process_group_then_a_report_leaves_the_run_killed(
    tmp_path: Path,
) -> None:
    log = tmp_path / "job.log"
    with log.open("w") as out:
        job = subprocess.Popen(
            [
                COMPRESS,
                f"paths.outputs={tmp_path}",
                f"paths.data={tmp_path / 'data'}",
                "schedule.train.epochs=5000",  # still training when killed
                "runtime.progress=false",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a batch scheduler runs it
        )
    try:
        deadline = time.monotonic() + LIVE_SECONDS
        running: list[Any] = []
        while not running and time.monotonic() < deadline and job.poll() is None:
            if "mlflow: run " in log.read_text():  # the store exists and holds the run
                running = [r for r in mlflow_runs(tmp_path) if r.info.status == "RUNNING"]
            time.sleep(0.2)
        assert running, log.read_text()[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    (before,) = mlflow_runs(tmp_path)
    assert before.info.status == "RUNNING"  # nobody ended it: its process died at once
    assert before.data.tags["compress.pid"] == str(job.pid)

    report_main(["compress", "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])

    (after,) = mlflow_runs(tmp_path)
    assert after.info.run_id == before.info.run_id
    assert after.info.status == "KILLED"
    assert f"process {job.pid} on" in after.data.tags[REAPED_TAG]
