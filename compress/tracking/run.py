"""One MLflow run per job: params once, metrics as they come, artifacts, status.

The run ends FINISHED only when the job succeeds; any exception ends it FAILED with the
error as a tag and the traceback as an artifact. The maintained `MlflowClient` works in
this process (`compress.tracking.store.open_client`); every run carries its owner's host,
pid and start time, so a process killed outright leaves a run that the next compress
command on the store marks KILLED (`compress.tracking.reaper`). A run still open when the
interpreter exits is ended KILLED here.

`Run.log_metrics(metrics, step=epoch)` only queues the points for a background writer
(`compress.tracking.writer`): cheap enough to call at the end of every epoch, so a long
run shows its curves while it trains. Ending the run waits for every queued point first.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from compress.errors import Terminated
from compress.tracking.config import TrackingConfig
from compress.tracking.params import PARAM_LIMIT, flatten
from compress.tracking.process import Owner
from compress.tracking.retry import retrying
from compress.tracking.store import experiment_id, open_client
from compress.tracking.writer import writer

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient
    from torch import nn

__all__ = [
    "PARENT_ENV",
    "SWEEP_ENV",
    "Run",
    "TrackingError",
    "finished_run",
    "flatten",
    "sweep_tags",
    "tag_run",
]

log = logging.getLogger(__name__)

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


class TrackingError(RuntimeError):
    """The MLflow store refused a call."""


def _call(what: str, call: Callable[[], T]) -> T:
    """`call()`, retried while the store is locked; a refusal becomes a TrackingError."""
    try:
        return retrying(call, what)
    except Exception as error:
        raise TrackingError(f"mlflow {what}: {type(error).__name__}: {error}") from error


def finished_run(config: TrackingConfig, tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The newest FINISHED run of the experiment holding `tags`: its id and metrics."""
    client = open_client(str(config.uri))
    experiment = experiment_id(client, config.experiment, config.artifact_location)
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = _call(
        "search_runs",
        lambda: client.search_runs(
            [experiment],
            filter_string=f"{where} and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        ),
    )
    if not found:
        return None
    return {"run_id": found[0].info.run_id, "metrics": found[0].data.metrics}


def tag_run(config: TrackingConfig, run_id: str, tags: Mapping[str, str]) -> None:
    """Set `tags` on an existing run (a sweep's parent, from one of its jobs)."""
    Run.attach(config, run_id).set_tags(tags)


#: Runs this process opened and has not ended: run id -> the client that opened it.
_open_runs: dict[str, MlflowClient] = {}


@atexit.register
def _end_open_runs() -> None:
    """A run left open at exit (a sweep whose launcher raised) ends KILLED, not RUNNING."""
    if not _open_runs:
        return
    with contextlib.suppress(Exception):
        writer().flush()
    for run_id, client in list(_open_runs.items()):
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, status="KILLED")


class Run:
    """An open MLflow run (or a no-op stand-in when tracking is disabled)."""

    def __init__(self, config: TrackingConfig, tags: Mapping[str, str]) -> None:
        self.config = config
        self.tags = dict(tags)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: MlflowClient | None = None

    @classmethod
    def attach(cls, config: TrackingConfig, run_id: str) -> Run:
        """An existing run (a sweep's or a search's parent), to log to or `end`."""
        run = cls(config, {})
        if config.enabled:
            run._client, run.run_id = open_client(str(config.uri)), run_id
        return run

    def __enter__(self) -> Run:
        if not self.config.enabled:
            return self
        client = open_client(str(self.config.uri))
        location = self.config.artifact_location
        self.experiment_id = experiment_id(client, self.config.experiment, location)
        tags = {**sweep_tags(), **self.tags, **Owner.current().tags()}
        created = _call(
            "create_run",
            lambda: client.create_run(
                str(self.experiment_id), run_name=self.config.run_name, tags=tags
            ),
        )
        self.run_id, self._client = created.info.run_id, client
        _open_runs[self.run_id] = client
        log.info("mlflow: run %s in experiment '%s'", self.run_id, self.config.experiment)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is None:
            return
        if error is None:
            try:
                self.flush()
            except TrackingError as failed:  # metrics lost: the job did not fully succeed
                self._end_failed(TrackingError, failed, failed.__traceback__)
                raise
            self._terminate("FINISHED")
            return
        self._end_failed(exc_type, error, tb)

    def _end_failed(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(AttributeError):  # the run that holds it, for the caller
            error.tracked_run_id = self.run_id  # type: ignore[attr-defined]
        try:
            try:
                self.flush()
            except TrackingError as lost:
                log.warning("%s", lost)
            self.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text("".join(traceback.format_exception(exc_type, error, tb)))
                self.log_artifact(path)
        finally:  # told to stop (Ctrl-C, SIGTERM): KILLED, as MLflow names it; else FAILED
            stopped = isinstance(error, KeyboardInterrupt | Terminated)
            self._terminate("KILLED" if stopped else "FAILED")

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` once every queued metric is written."""
        if self._client is None:
            return
        try:
            self.flush()
        finally:
            self._terminate(status)

    def _terminate(self, status: str) -> None:
        client, run_id = self._client, str(self.run_id)
        assert client is not None
        _call("set_terminated", lambda: client.set_terminated(run_id, status=status))
        _open_runs.pop(run_id, None)

    def flush(self) -> None:
        """Wait until the queued metrics are written; a TrackingError if some were refused."""
        if self._client is None:
            return
        try:
            writer().flush(self.run_id)
        except Exception as error:
            raise TrackingError(f"mlflow log_batch: {type(error).__name__}: {error}") from error

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(k, str(v)[:PARAM_LIMIT]) for k, v in params.items()]
        self._log_batch("log_params", params=entries)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._log_batch("set_tags", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Queue `metrics` at `step` (an epoch, say): returns at once, written in the
        background, all of them before the run ends."""
        self.log_histories({name: [(step, value)] for name, value in metrics.items()})

    def log_histories(self, histories: Mapping[str, Iterable[tuple[int, float]]]) -> None:
        """Queue each metric's (step, value) points; MLflow splits them into requests."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [
            Metric(name, float(value), now, int(step))
            for name, history in histories.items()
            for step, value in history
        ]
        if not points:
            return
        try:
            writer().submit(self._client, str(self.run_id), points)
        except Exception as error:  # an earlier write of this run was refused
            raise TrackingError(f"mlflow log_batch: {type(error).__name__}: {error}") from error

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        client, run_id = self._client, str(self.run_id)
        if client is not None:
            _call("log_artifact", lambda: client.log_artifact(run_id, str(path), folder))

    def log_model(self, model: nn.Module, example: torch.Tensor, **how: Any) -> str | None:
        """`model` as an MLflow model of this run (`compress.tracking.model.log_model`, which
        takes `how`); its id."""
        if self._client is None:
            return None
        from compress.tracking.model import log_model

        self.flush()  # the run's final metrics are linked to the model: all stored first
        where = (str(self.config.uri), str(self.experiment_id), str(self.run_id))
        return log_model(self._client, *where, model, example, **how)

    def _log_batch(self, what: str, **entries: list[Any]) -> None:
        client, run_id = self._client, str(self.run_id)
        if client is not None:
            _call(what, lambda: client.log_batch(run_id, **entries))

    def describe(self) -> str:
        """Where to find this run, for the summary printed at the end."""
        if self._client is None:
            return "tracking disabled"
        return (
            f"mlflow run {self.run_id} (experiment '{self.config.experiment}', "
            f"id {self.experiment_id}) at {self.config.uri}"
        )
