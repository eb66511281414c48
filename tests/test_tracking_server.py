"""A shared MLflow tracking server, started for real: a sweep logs to it over HTTP, and what
it holds is read back over its REST API (plain urllib, not the mlflow client): one parent,
its children with their metrics, and artifacts stored and served by the server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import QUICK, compose_config

BIN = Path(sys.executable).parent
STARTUP_SECONDS = 180


@dataclass(frozen=True)
class Server:
    url: str
    artifacts: Path  # the server's --artifacts-destination


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlflow server` with a SQLite database and an artifact folder of its own, stopped
    (its whole process group) at the end whatever happened."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: uvicorn workers go with it
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server never answered on {url}:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Server(url, root / "artifacts")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def get(url: str, **query: str) -> bytes:
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}", timeout=30) as reply:
        return reply.read()


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def by_key(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {entry["key"]: entry["value"] for entry in entries}


def test_the_server_config_leaves_artifacts_to_the_server(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, "tracking=server", "tracking.uri=http://mlflow.lab:5000")
    assert cfg["tracking"]["uri"] == "http://mlflow.lab:5000"
    assert cfg["tracking"]["enabled"] and cfg["tracking"]["artifact_location"] is None


@pytest.mark.slow  # the server takes 30-90 s to answer, the sweep ~2 min, on 2 busy cores
def test_a_sweep_logs_to_the_server_and_reads_back_over_rest(
    server: Server, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            str(BIN / "compress"),
            "--multirun",
            f"paths.outputs={tmp_path}",
            f"paths.data={tmp_path / 'data'}",
            "tracking=server",
            f"tracking.uri={server.url}",
            *QUICK,
            "method.amount=0.5,0.7",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    api = f"{server.url}/api/2.0/mlflow"
    experiment = json.loads(get(f"{api}/experiments/get-by-name", experiment_name="compress"))
    experiment_id = experiment["experiment"]["experiment_id"]
    # The server chose where artifacts live: its own store, served over HTTP.
    assert experiment["experiment"]["artifact_location"] == f"mlflow-artifacts:/{experiment_id}"
    runs = post(f"{api}/runs/search", {"experiment_ids": [experiment_id]})["runs"]
    tags = {run["info"]["run_id"]: by_key(run["data"].get("tags", [])) for run in runs}
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in tags[run["info"]["run_id"]]]
    children = [run for run in runs if run is not parent]
    assert parent["info"]["status"] == "FINISHED"
    assert sorted(by_key(c["data"]["params"])["method.amount"] for c in children) == ["0.5", "0.7"]
    for child in children:
        run_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED"
        assert tags[run_id]["mlflow.parentRunId"] == parent["info"]["run_id"]
        assert {"acc", "ratio/size"} <= set(by_key(child["data"]["metrics"]))
    # A child's artifacts, listed and downloaded through the server, are the run folder's files.
    child = children[0]
    run_id = child["info"]["run_id"]
    run_dir = Path(tags[run_id]["paths.run_dir"])
    listed = json.loads(get(f"{api}/artifacts/list", run_id=run_id))["files"]
    assert {"config.yaml", "model"} <= {f["path"] for f in listed}
    listed = json.loads(get(f"{api}/artifacts/list", run_id=run_id, path="model"))["files"]
    assert [f["path"] for f in listed] == ["model/model.pt"]
    model = get(f"{server.url}/get-artifact", path="model/model.pt", run_uuid=run_id)
    assert model == (run_dir / "model.pt").read_bytes()
    config = get(
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}"
        "/artifacts/config.yaml"
    )
    assert config == (run_dir / "config.yaml").read_bytes()
    # Stored on the server's side; the client kept no store of its own.
    stored = server.artifacts / experiment_id / run_id / "artifacts" / "model" / "model.pt"
    assert stored.read_bytes() == model
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
