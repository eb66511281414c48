"""Metrics written to MLflow from a background thread, so that training never waits on it.

A SQLite write costs the caller ~5 ms; handed to this thread, `Run.log_metrics` costs
microseconds, so it can be called once per epoch. Writes keep their order (one thread, one
queue), are retried while another job holds the store's lock, and `flush` waits for them
all and raises the first that failed for a run: a run is ended only after that.

MLflow's own asynchronous logging (`log_batch(synchronous=False)`) was measured here and
not used: ending a run after it waits for its polling thread (~0.9 s per run, every job of
a sweep), it saves ~3 ms of the 5 per call, and its failures come back as one message,
without the exception chain that tells a lock refusal from a real error.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress.tracking.retry import retrying

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class MetricWriter:
    """One daemon thread per process, started with the first write."""

    _queue: queue.Queue[tuple[MlflowClient, str, list[Any]]] = field(default_factory=queue.Queue)
    _errors: dict[str, BaseException] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, client: MlflowClient, run_id: str, metrics: list[Any]) -> None:
        """Queue `metrics` (MLflow `Metric`s) for `run_id`; raises an earlier failure of it."""
        self.raise_failure(run_id)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="compress-mlflow-writer", daemon=True
                )
                self._thread.start()
        self._queue.put((client, run_id, metrics))

    def flush(self, run_id: str | None = None) -> None:
        """Wait until every queued write is done; raise the first failure of `run_id`."""
        self._queue.join()
        if run_id is not None:
            self.raise_failure(run_id)

    def raise_failure(self, run_id: str) -> None:
        error = self._errors.pop(run_id, None)
        if error is not None:
            raise error

    def _drain(self) -> None:
        while True:
            client, run_id, metrics = self._queue.get()
            try:
                if run_id not in self._errors:  # once one failed, the run's later points go
                    write = functools.partial(client.log_batch, run_id, metrics=metrics)
                    retrying(write, "log_batch")
            except Exception as error:
                self._errors[run_id] = error
            finally:
                self._queue.task_done()


_writer = MetricWriter()


def writer() -> MetricWriter:
    """This process's writer."""
    return _writer


def _forget_in_child() -> None:
    """A forked child (a data loader worker) gets a fresh writer, not a copy of the
    parent's whose thread and locks did not come along."""
    global _writer
    _writer = MetricWriter()


os.register_at_fork(after_in_child=_forget_in_child)
