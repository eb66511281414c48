"""One MLflow run per job: params once, metrics and their histories, artifacts, status.

The run ends FINISHED only when the job succeeds; any exception ends it FAILED with the
error as a tag and the traceback as an artifact. The MLflow client itself lives in a
worker process (`compress.tracking.worker`), started early by `warm_up` so that its
slow import overlaps the job's own start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from compress.tracking.config import TrackingConfig

log = logging.getLogger(__name__)

_PARAM_LIMIT = 6000  # MLflow's limit on one param value
_BATCH = {"params": 100, "metrics": 1000}  # MLflow's limits per log_batch request

T = TypeVar("T")

#: A sweep's parent run id and name, handed to its jobs (not through MLFLOW_RUN_ID, which
#: would make the first job write into the parent itself).
PARENT_ENV = "COMPRESS_PARENT_RUN_ID"
SWEEP_ENV = "COMPRESS_SWEEP"


def sweep_tags() -> dict[str, str]:
    """Tags that make the current job's run a child of its sweep's parent (none outside)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return {}
    return {"mlflow.parentRunId": parent, "sweep": os.environ.get(SWEEP_ENV, "")}


#: The characters MLflow accepts in a param name.
_PARAM_NAME = re.compile(r"^[/\w.\- :]*$")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`; lists become JSON, None becomes "null".

    A mapping whose keys MLflow would refuse as names (module-path globs such as
    `layer1.*.conv1`) stays whole, one JSON param under its own name.
    """
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and all(_PARAM_NAME.match(str(k)) for k in value):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, Mapping):
            flat[name] = json.dumps(value, sort_keys=True)
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrackingError(RuntimeError):
    """The MLflow worker refused a call or stopped."""


class Worker:
    """A `compress.tracking.worker` process bound to one tracking URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        # Lives as long as the worker (closed in `close`); read back only to explain a crash.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, "-m", "compress.tracking.worker", uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def call(self, op: str, **args: Any) -> Any:
        try:
            self._process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise TrackingError(f"the MLflow worker for {self.uri} stopped: {self._last_error()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise TrackingError(f"mlflow {op}: {reply['error']}")
        return reply["result"]

    def _last_error(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self._process.poll()}"

    def close(self, wait: bool = True) -> None:
        """End the worker: it marks any run left open KILLED and exits.

        Every call has been answered by then, so nothing is lost by not waiting; the
        process's exit does not (a worker still starting up exits by itself once
        ready, and holds none of our pipes).
        """
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        if wait:
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._stderr.close()


_worker: Worker | None = None


def worker_for(uri: str) -> Worker:
    """The worker for `uri`, started on first use and reused by later jobs in the process."""
    global _worker
    if _worker is None or _worker.uri != uri or not _worker.alive:
        if _worker is not None:
            _worker.close()
        _worker = Worker(uri)
    return _worker


@atexit.register
def _close_worker() -> None:
    if _worker is not None:
        _worker.close(wait=False)


def warm_up(tracking: Mapping[str, Any] | None) -> None:
    """Start the MLflow worker now (before torch is imported) if tracking is enabled."""
    if tracking and tracking.get("enabled", True) and tracking.get("uri"):
        worker_for(str(tracking["uri"]))


def finished_run(config: TrackingConfig, tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The newest FINISHED run of the experiment holding `tags`: its id and metrics."""
    worker = worker_for(str(config.uri))
    location = config.artifact_location
    experiment = worker.call(
        "experiment",
        name=config.experiment,
        artifact_location=Path(location).as_uri() if location else None,
    )
    return worker.call("finished_run", experiment_id=experiment, tags=dict(tags))


def tag_run(config: TrackingConfig, run_id: str, tags: Mapping[str, str]) -> None:
    """Set `tags` on an existing run (a sweep's parent, from one of its jobs)."""
    worker_for(str(config.uri)).call(
        "log_batch", run_id=run_id, tags=[[k, str(v)] for k, v in tags.items()]
    )


class Run:
    """An open MLflow run (or a no-op stand-in when tracking is disabled)."""

    def __init__(self, config: TrackingConfig, tags: Mapping[str, str]) -> None:
        self.config = config
        self.tags = dict(tags)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._worker: Worker | None = None

    def __enter__(self) -> Run:
        if not self.config.enabled:
            return self
        worker = worker_for(self.config.uri)
        location = self.config.artifact_location
        self.experiment_id = worker.call(
            "experiment",
            name=self.config.experiment,
            artifact_location=Path(location).as_uri() if location else None,
        )
        self.run_id = worker.call(
            "create_run",
            experiment_id=self.experiment_id,
            run_name=self.config.run_name,
            tags={**sweep_tags(), **self.tags},
        )
        self._worker = worker
        log.info("mlflow: run %s in experiment '%s'", self.run_id, self.config.experiment)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._worker is None:
            return
        if error is None:
            self._worker.call("set_terminated", run_id=self.run_id, status="FINISHED")
            return
        with contextlib.suppress(AttributeError):  # the run that holds it, for the caller
            error.tracked_run_id = self.run_id  # type: ignore[union-attr]
        try:
            self.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text("".join(traceback.format_exception(exc_type, error, tb)))
                self.log_artifact(path)
        finally:
            self._worker.call("set_terminated", run_id=self.run_id, status="FAILED")

    def log_params(self, params: Mapping[str, Any]) -> None:
        entries = [[k, str(v)[:_PARAM_LIMIT]] for k, v in params.items()]
        for chunk in _chunks(entries, _BATCH["params"]):
            self._log_batch(params=chunk)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._log_batch(tags=[[k, str(v)] for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_histories({name: [(step, value)] for name, value in metrics.items()})

    def log_histories(self, histories: Mapping[str, Iterable[tuple[int, float]]]) -> None:
        """Log each metric's (step, value) points in as few requests as the limits allow."""
        now = int(time.time() * 1000)
        entries = [
            [name, float(value), now, step]
            for name, points in histories.items()
            for step, value in points
        ]
        for chunk in _chunks(entries, _BATCH["metrics"]):
            self._log_batch(metrics=chunk)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self._worker is not None:
            self._worker.call("log_artifact", run_id=self.run_id, path=str(path), folder=folder)

    def _log_batch(self, **entries: list[list[Any]]) -> None:
        if self._worker is not None:
            self._worker.call("log_batch", run_id=self.run_id, **entries)

    def describe(self) -> str:
        """Where to find this run, for the summary printed at the end."""
        if self._worker is None:
            return "tracking disabled"
        return (
            f"mlflow run {self.run_id} (experiment '{self.config.experiment}', "
            f"id {self.experiment_id}) at {self.config.uri}"
        )
