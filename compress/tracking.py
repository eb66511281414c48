"""One MLflow run per job: params once, metrics and their histories, artifacts, status.

The run ends FINISHED only when the job succeeds; any exception ends it FAILED with the
error as a tag and the traceback as an artifact. mlflow is imported on first use.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from compress.config import TrackingConfig

log = logging.getLogger(__name__)

_PARAM_LIMIT = 6000  # MLflow's limit on one param value

T = TypeVar("T")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`; lists become JSON, None becomes "null"."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Run:
    """An open MLflow run (or a no-op stand-in when tracking is disabled)."""

    def __init__(self, config: TrackingConfig, tags: Mapping[str, str]) -> None:
        self.config = config
        self.tags = dict(tags)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: Any = None

    def __enter__(self) -> Run:
        if not self.config.enabled:
            return self
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=self.config.uri)
        self.experiment_id = self._experiment_id()
        run = self._client.create_run(
            self.experiment_id, run_name=self.config.run_name, tags=self.tags
        )
        self.run_id = run.info.run_id
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
            self._client.set_terminated(self.run_id, status="FINISHED")
            return
        try:
            self.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text("".join(traceback.format_exception(exc_type, error, tb)))
                self.log_artifact(path)
        finally:
            self._client.set_terminated(self.run_id, status="FAILED")

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.config.experiment
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = self.config.artifact_location
        try:
            return self._client.create_experiment(
                name, artifact_location=Path(location).as_uri() if location else None
            )
        except MlflowException:  # created meanwhile by a concurrent job
            return self._client.get_experiment_by_name(name).experiment_id

    @property
    def active(self) -> bool:
        return self._client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        entries = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in params.items()]
        for chunk in _chunks(entries, 100):
            self._client.log_batch(self.run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_histories({name: [(step, value)] for name, value in metrics.items()})

    def log_histories(self, histories: Mapping[str, Iterable[tuple[int, float]]]) -> None:
        """Log each metric's (step, value) points in as few requests as the limits allow."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [
            Metric(name, float(value), now, step)
            for name, points in histories.items()
            for step, value in points
        ]
        for chunk in _chunks(entries, 1000):
            self._client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.active:
            self._client.log_artifact(self.run_id, str(path), folder)

    def describe(self) -> str:
        """Where to find this run, for the summary printed at the end."""
        if not self.active:
            return "tracking disabled"
        return (
            f"mlflow run {self.run_id} (experiment '{self.config.experiment}', "
            f"id {self.experiment_id}) at {self.config.uri}"
        )
