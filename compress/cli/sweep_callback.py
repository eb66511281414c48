"""Hydra multirun sweeps in MLflow: one parent run per sweep, one child run per job.

`ParentRun` is a Hydra callback (registered in conf/config.yaml). At the start of a
multirun it creates the experiment and the parent run once, in the launching process,
and hands the parent's id to the jobs in `COMPRESS_PARENT_RUN_ID` — not `MLFLOW_RUN_ID`,
which would make the first job write into the parent itself — and the keys it sweeps in
`COMPRESS_SWEPT`, which name each job's run (`prune amount=0.9`). The parent is named by
what it sweeps (`sweep method.amount=0.5,0.8,0.9`) and holds the swept overrides as params.
Each job's run is a child (`mlflow.parentRunId`) tagged with the sweep's (unique) `sweep`
name, so the MLflow UI nests and filters a sweep at a glance.

When every job has returned, the sweep's report (`compress.reporting.report`: accuracy
against `report_axis`, Pareto front, failures) is written to the sweep folder, logged to
the parent and its table printed; the parent gets the sweep's summary (`sweep/*` metrics,
a description) and ends FINISHED. A sweep with failed jobs then prints one line naming
them and exits 1 (Hydra calls this callback last and lets SystemExit through), so scripts
and CI see it; a failed job is a FAILED child run with its error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from compress.tracking.names import SWEPT_ENV, override_pairs, sweep_name
from compress.tracking.run import PARENT_ENV, SWEEP_ENV

log = logging.getLogger(__name__)


def swept_overrides(config: DictConfig) -> list[str]:
    """The overrides a multirun sweeps, as written (`method.amount=0.5,0.8,0.9`): the
    sweeper's `params` (an experiment's) and the command line's, which win over them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    texts = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    found: dict[str, str | None] = {}
    for text, parsed in zip(texts, OverridesParser.create().parse_overrides(texts), strict=True):
        found[parsed.key_or_group] = text if parsed.is_sweep_override() else None
    return [text for text in found.values() if text]


class ParentRun(Callback):
    """Holds only plain values: launchers (joblib) pickle callbacks to their workers."""

    def __init__(self, report_axis: str | None = "ratio/size") -> None:
        self.report_axis = report_axis
        self.run_id: str | None = None
        self.uri: str | None = None
        self.sweep_dir: str | None = None
        self.swept = ""
        self.command = ""
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from compress.config import from_mapping
        from compress.distributed import launched
        from compress.tracking.config import TrackingConfig
        from compress.tracking.run import Run

        # Hydra sets its config for jobs only; the default paths (`${hydra:runtime.cwd}`)
        # resolve here, in the launching process, once it is set for the sweep too.
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        section = OmegaConf.to_container(config.get("tracking"), resolve=True)
        tracking = from_mapping(TrackingConfig, section, "tracking")  # type: ignore[arg-type]
        if not tracking.enabled or not launched().main:  # one parent, rank 0's, under torchrun
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        unique = f"sweep {sweep_dir.parent.name} {sweep_dir.name}"
        swept = swept_overrides(config)
        keys = [key for key, _ in override_pairs(" ".join(swept))]
        overrides = " ".join(config.hydra.overrides.task)
        tags = {"sweep": unique, "sweep.dir": str(sweep_dir), "overrides": overrides[:5000]}
        run = Run(
            dataclasses.replace(tracking, run_name=sweep_name(swept, fallback=unique)),
            {**tags, "sweep.swept": " ".join(keys)},
        ).__enter__()
        # What the sweep sets, as params: the swept keys hold their lists (`0.5,0.8,0.9`).
        run.log_params(dict(override_pairs(" ".join([*swept, overrides]))))
        self.run_id, self.uri, self.sweep_dir = run.run_id, tracking.uri, str(sweep_dir)
        self.experiment_id = run.experiment_id
        self.swept = " ".join(swept)
        self.command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:2000]
        os.environ[PARENT_ENV] = self.run_id or ""
        os.environ[SWEEP_ENV] = unique
        os.environ[SWEPT_ENV] = " ".join(keys)
        log.info("mlflow: sweep parent run %s (%s)", self.run_id, unique)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None or self.uri is None:
            return
        from compress.cli.exits import FAILED
        from compress.tracking.config import TrackingConfig
        from compress.tracking.run import Run
        from compress.tracking.store import ui_url

        for name in (PARENT_ENV, SWEEP_ENV, SWEPT_ENV):
            os.environ.pop(name, None)
        table = self._report(self.uri, self.run_id, self.report_axis) if self.report_axis else ""
        failed = self._summarise(self.uri, self.run_id, table)
        Run.attach(TrackingConfig(uri=self.uri), self.run_id).end("FINISHED")
        if self.experiment_id is not None:
            print(f"sweep in the MLflow UI: {ui_url(self.uri, self.experiment_id, self.run_id)}")
        self.run_id = None
        if failed:
            print(f"compress: {failed}", file=sys.stderr, flush=True)
            sys.exit(FAILED)

    def _report(self, uri: str, run_id: str, axis: str) -> str:
        """The sweep's report beside it and on the parent run, its table printed (and
        returned); a sweep whose report cannot be drawn (every job failed) still ends,
        with the reason in the log."""
        from compress.reporting.report import report_for_parent

        try:
            path = report_for_parent(uri, run_id, axis, Path(self.sweep_dir or "."))
        except Exception as error:
            log.warning("sweep report not written: %s", error)
            return ""
        log.info("sweep report: %s", path)
        table = "\n".join(line for line in path.read_text().splitlines() if line.startswith("|"))
        print(f"\nsweep report ({axis}): {path}\n{table}", flush=True)
        return table

    def _summarise(self, uri: str, run_id: str, table: str) -> str | None:
        """The sweep's metrics and description on its parent; the line naming its failed
        jobs (None when all finished, or when the store could not say)."""
        from compress.reporting.report import read_sweep
        from compress.tracking.config import TrackingConfig
        from compress.tracking.run import Run
        from compress.tracking.sweep import NOTE_TAG, note, outcome

        try:
            found = outcome(read_sweep(uri, run_id).jobs)
            parent = Run.attach(TrackingConfig(uri=uri), run_id)
            parent.log_metrics(found.metrics())
            parent.set_tags({NOTE_TAG: note(found, self.swept, self.command, table)})
        except Exception as error:
            log.warning("sweep summary not logged to run %s: %s", run_id, error)
            return None
        return found.failure_line()
