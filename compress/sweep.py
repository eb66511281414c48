"""Hydra multirun sweeps in MLflow: one parent run per sweep, one child run per job.

`ParentRun` is a Hydra callback (registered in conf/config.yaml). At the start of a
multirun it creates the experiment and the parent run once, in the launching process,
and hands the parent's id to the jobs in `COMPRESS_PARENT_RUN_ID` — not `MLFLOW_RUN_ID`,
which would make the first job write into the parent itself. Each job's run is then a
child (`mlflow.parentRunId`) tagged with the sweep's name, so the MLflow UI nests and
filters a sweep at a glance. The parent is closed (FINISHED) when the sweep ends; a
failed job is a FAILED child with its error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PARENT_ENV = "COMPRESS_PARENT_RUN_ID"
SWEEP_ENV = "COMPRESS_SWEEP"


def sweep_tags() -> dict[str, str]:
    """Tags that make the current job's run a child of its sweep's parent (none outside)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return {}
    return {"mlflow.parentRunId": parent, "sweep": os.environ.get(SWEEP_ENV, "")}


class ParentRun(Callback):
    """Holds only plain values: launchers (joblib) pickle callbacks to their workers."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from compress.config import TrackingConfig, from_mapping
        from compress.tracking import Run

        section = OmegaConf.to_container(config.get("tracking"), resolve=True)
        tracking = from_mapping(TrackingConfig, section, "tracking")  # type: ignore[arg-type]
        if not tracking.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        name = f"sweep {sweep_dir.parent.name} {sweep_dir.name}"
        overrides = " ".join(config.hydra.overrides.task)
        run = Run(
            dataclasses.replace(tracking, run_name=name),
            {"sweep": name, "sweep.dir": str(sweep_dir), "overrides": overrides},
        )
        self.run_id, self.uri = run.__enter__().run_id, tracking.uri
        os.environ[PARENT_ENV] = self.run_id or ""
        os.environ[SWEEP_ENV] = name
        log.info("mlflow: sweep parent run %s (%s)", self.run_id, name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None or self.uri is None:
            return
        from compress.tracking import worker_for

        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_ENV, None)
        worker_for(self.uri).call("set_terminated", run_id=self.run_id, status="FINISHED")
        self.run_id = None
