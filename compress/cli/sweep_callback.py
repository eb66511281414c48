"""Hydra multirun sweeps in MLflow: one parent run per sweep, one child run per job.

`ParentRun` is a Hydra callback (registered in conf/config.yaml). At the start of a
multirun it creates the experiment and the parent run once, in the launching process,
and hands the parent's id to the jobs in `COMPRESS_PARENT_RUN_ID` — not `MLFLOW_RUN_ID`,
which would make the first job write into the parent itself. Each job's run is then a
child (`mlflow.parentRunId`) tagged with the sweep's name, so the MLflow UI nests and
filters a sweep at a glance. When the sweep ends, its report (`compress.reporting.report`: accuracy
against `report_axis`, Pareto front, failures) is written to the sweep folder and logged to
the parent, which is then closed (FINISHED); a failed job is a FAILED child with its error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from compress.tracking.run import PARENT_ENV, SWEEP_ENV

log = logging.getLogger(__name__)


class ParentRun(Callback):
    """Holds only plain values: launchers (joblib) pickle callbacks to their workers."""

    def __init__(self, report_axis: str | None = "ratio/size") -> None:
        self.report_axis = report_axis
        self.run_id: str | None = None
        self.uri: str | None = None
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from compress.config import from_mapping
        from compress.tracking.config import TrackingConfig
        from compress.tracking.run import Run

        # Hydra sets its config for jobs only; the default paths (`${hydra:runtime.cwd}`)
        # resolve here, in the launching process, once it is set for the sweep too.
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
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
        self.sweep_dir = str(sweep_dir)
        os.environ[PARENT_ENV] = self.run_id or ""
        os.environ[SWEEP_ENV] = name
        log.info("mlflow: sweep parent run %s (%s)", self.run_id, name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None or self.uri is None:
            return
        from compress.tracking.config import TrackingConfig
        from compress.tracking.run import Run

        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_ENV, None)
        if self.report_axis:
            self._report(self.uri, self.run_id, self.report_axis)
        Run.attach(TrackingConfig(uri=self.uri), self.run_id).end("FINISHED")
        self.run_id = None

    def _report(self, uri: str, run_id: str, axis: str) -> None:
        """The sweep's report beside it and on the parent run; a sweep whose report cannot
        be drawn (every job failed) still ends, with the reason in the log."""
        from compress.reporting.report import report_for_parent

        try:
            path = report_for_parent(uri, run_id, axis, Path(self.sweep_dir or "."))
        except Exception as error:
            log.warning("sweep report not written: %s", error)
            return
        log.info("sweep report: %s", path)
