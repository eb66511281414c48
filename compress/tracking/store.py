"""Opening an MLflow store: the one door every compress command goes through.

`open_client` gives the maintained `MlflowClient`, in this process, for a tracking URI. On
the way it creates (or migrates) a SQLite store's tables and reaps the runs of this host
whose process died (`compress.tracking.reaper`), so that any command on the store (a job,
a sweep, compress-report, compress-rerun, compress-search) leaves no dead run RUNNING.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from compress.tracking.reaper import reap
from compress.tracking.retry import QuietLockErrors, retrying

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@functools.cache
def _quiet_store_log() -> None:
    """The job's log stays as it was with the worker: MLflow's notes on creating its tables
    go, and so do its tracebacks of refused writes, which `retrying` handles."""
    store_log = logging.getLogger("mlflow.store.db.utils")
    store_log.setLevel(logging.WARNING)
    store_log.addFilter(QuietLockErrors())


@functools.cache
def _client(uri: str) -> MlflowClient:
    """One client per URI and process (MLflow caches the store behind it too)."""
    from mlflow import MlflowClient

    _quiet_store_log()
    return MlflowClient(tracking_uri=uri)


def open_client(uri: str) -> MlflowClient:
    """The client for `uri`, its tables created, this host's dead runs marked KILLED.

    Reaping is housekeeping: a store that refuses it (read-only, a server that forbids
    writes) still opens, with a warning.
    """
    client = _client(uri)
    try:
        retrying(lambda: reap(client), "reap")
    except Exception as error:
        log.warning("mlflow: runs of dead processes not checked in %s: %s", uri, error)
    return client


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_location`) if new;
    a concurrent job creating it first is no error."""
    from mlflow.exceptions import MlflowException

    found = retrying(lambda: client.get_experiment_by_name(name), "get_experiment")
    if found is not None:
        return found.experiment_id
    location = Path(artifact_location).as_uri() if artifact_location else None
    try:
        return retrying(lambda: client.create_experiment(name, location), "create_experiment")
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
