"""Opening an MLflow store: the one door every compress command goes through.

`open_client` gives the maintained `MlflowClient`, in this process, for a tracking URI. On
the way it creates (or migrates) a SQLite store's tables and reaps the runs of this host
whose process died (`compress.tracking.reaper`), so that any command on the store (a job,
a sweep, compress-report, compress-rerun, compress-search) leaves no dead run RUNNING.

Every experiment a compress command uses is marked as model training (MLflow's
`mlflow.experimentKind` tag), so that MLflow 3's UI treats it as such rather than as a
GenAI experiment; one created before this tag existed gets it when next used.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.tracking.reaper import reap
from compress.tracking.retry import QuietLockErrors, retrying

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: MLflow's experiment-kind tag and its value for model training (the UI's "Machine
#: learning" kind; without it MLflow 3 opens an experiment on GenAI traces).
KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


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
        _mark_model_training(client, found)
        return found.experiment_id
    location = Path(artifact_location).as_uri() if artifact_location else None
    kind = {KIND_TAG: MODEL_TRAINING}
    try:
        return retrying(
            lambda: client.create_experiment(name, location, tags=kind), "create_experiment"
        )
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _mark_model_training(client: MlflowClient, experiment: Any) -> None:
    """An experiment without a kind (made by an older compress, or by hand) marked as model
    training; a kind someone chose is left alone. A store that refuses the write still runs."""
    if experiment.tags.get(KIND_TAG):
        return
    experiment_id = experiment.experiment_id
    try:
        retrying(
            lambda: client.set_experiment_tag(experiment_id, KIND_TAG, MODEL_TRAINING),
            "set_experiment_tag",
        )
    except Exception as error:
        log.warning("mlflow: experiment %s not marked as model training: %s", experiment_id, error)


#: Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run (or of the experiment's runs) for tracking URI `uri`:
    the server itself, or `mlflow ui`'s default address for a local store. It asks for the
    UI's model-training view: MLflow 3.17's UI picks its view from a per-browser switch
    (GenAI by default), not from the experiment's kind tag, so a plain link opens an
    experiment on GenAI traces."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"
