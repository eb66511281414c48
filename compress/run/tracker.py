"""Every tracking call of a job, in one place: the pipeline's steps report here.

The `Tracker` owns the job's MLflow run, named by what the job is (`prune amount=0.9`:
`compress.tracking.names`). It is also a training callback, so each epoch's
loss, accuracies and learning rate are logged as the epoch ends (a long run shows its
curves while it trains, and a crash keeps them), under the phase that trained it
(`baseline/loss`, `finetune/val_acc`, ...). A resumed job is skipped before its run opens;
a job refused before its run opened still leaves a FAILED run in a sweep.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
import yaml
from torch import nn

from compress.analysis import AnalysisResult
from compress.config import from_mapping
from compress.data import DataBundle
from compress.distributed import World, backend
from compress.errors import AlreadyFinished, CompressError
from compress.run.baseline import Baseline
from compress.run.plan import Plan
from compress.tracking.config import TrackingConfig
from compress.tracking.names import run_name
from compress.tracking.params import PARAM_LIMIT, split_internal
from compress.tracking.provenance import provenance
from compress.tracking.run import Run, finished_run, flatten, sweep_tags, tag_run
from compress.train.callbacks import EpochStats

log = logging.getLogger(__name__)

HISTORY = ("loss", "train_acc", "val_acc", "lr")
#: The param that says how many processes trained the job data-parallel (1: one).
WORLD_SIZE = "runtime.world_size"


class Tracker:
    """The job's run, opened on entry; FINISHED on a clean exit, FAILED on an error."""

    def __init__(self, plan: Plan, tags: Mapping[str, str]) -> None:
        self.plan = plan
        self.tags = dict(tags)
        name = plan.tracking.run_name or run_name(self.tags)
        self._run = Run(dataclasses.replace(plan.tracking, run_name=name), self.tags)
        self._phase = "train"
        self._epochs: dict[str, int] = {}
        self._params: dict[str, str] = {}
        self._metrics: list[str] = []

    def __enter__(self) -> Tracker:
        self._run.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run.__exit__(exc_type, error, tb)

    @property
    def run_id(self) -> str | None:
        return self._run.run_id

    def describe(self) -> str:
        return self._run.describe()

    # -- the steps report

    def started(
        self, cfg: Mapping[str, Any], data: DataBundle, device: torch.device, world: World
    ) -> None:
        """The config (params, but for where it writes and tracks: tags; and config.yaml as an
        artifact), the data's own record (see `data_tags`) and where the job runs: on which
        device, and on how many processes (`runtime.world_size`)."""
        params, internal = split_internal(flatten(cfg))
        params[WORLD_SIZE] = world.size
        self._params = {k: str(v)[:PARAM_LIMIT] for k, v in params.items()}
        self._run.log_params(params)
        self._run.set_tags({**internal, **data_tags(data), "device": device.type, **provenance()})
        path = self.plan.run_dir / "config.yaml"
        path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
        self._run.log_artifact(path)

    def baseline(self, cache: Baseline, key: str) -> None:
        """Where the baseline came from; a cached one's training curves, logged anew."""
        self._run.set_tags({"baseline.cached": str(cache.cached).lower(), "baseline.key": key})
        if cache.cached:
            self._run.log_histories(
                {
                    f"baseline/{n}": [(h.epoch, getattr(h, n)) for h in cache.history]
                    for n in HISTORY
                }
            )

    def distributed(self, world: World, device: torch.device, checked: Mapping[str, int]) -> None:
        """How the job was spread: the backend its tensors went through (NCCL on GPUs, gloo
        on CPUs), and which tensors were found alike on every process before the compressed
        model was saved (`distributed.alike`)."""
        groups = ", ".join(f"{group} {count}" for group, count in checked.items())
        alike = f"{sum(checked.values())} tensors identical on {world.size} processes ({groups})"
        self._run.set_tags({"distributed.backend": backend(device), "distributed.alike": alike})

    def analysed(self, result: AnalysisResult) -> None:
        for path in result.files:
            self._run.log_artifact(path)

    def finished(
        self,
        metrics: Mapping[str, float],
        sparsity: list[tuple[int, float]],
        tags: Mapping[str, str],
        files: list[tuple[Path, str | None]],
        summary: Mapping[str, Any],
    ) -> None:
        """The job's figures, its tables and files, its summary.json and its artifact."""
        self._run.set_tags(tags)
        self._metrics = list(metrics)
        self._run.log_histories({"finetune/sparsity": sparsity})
        self._run.log_metrics(metrics)
        path = self.plan.run_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        for file, folder in [*files, (path, None)]:
            self._run.log_artifact(file, folder)

    def log_model(self, model: nn.Module, data: DataBundle, converted: bool) -> None:
        """The compressed model (as loaded back from the artifact) also as an MLflow model:
        listed under the run's logged models, loadable and registrable; two test inputs are
        its input example."""
        if not self.plan.tracking.log_model or self.run_id is None:
            return
        example = next(iter(data.test.loader(2))).x
        name = self.tags.get("method") or str(self._params.get("method.name", "model"))
        norm = data.normalization
        description = (
            f"The compressed model of run `{self.run_id}`, as measured (its real compressed "
            "bytes are the run's artifact `model/model.pt`). Inputs are normalised: "
            f"(x - {[round(v, 4) for v in norm.mean]}) / {[round(v, 4) for v in norm.std]} "
            f"per channel ({norm.mode})."
        )
        self._run.log_model(
            model,
            example,
            name=name,
            converted=converted,
            params=self._params,
            metrics=self._metrics,
            description=description,
        )

    # -- a training callback

    def fit_started(self, phase: str, label: str, epochs: int, steps_per_epoch: int) -> None:
        self._phase = phase

    def step_done(self, step: int, running_loss: float) -> None:
        pass

    def epoch_done(self, stats: EpochStats) -> None:
        epoch = self._epochs.get(self._phase, 0)
        self._epochs[self._phase] = epoch + 1
        self._run.log_metrics({f"{self._phase}/{n}": getattr(stats, n) for n in HISTORY}, epoch)

    def fit_done(self) -> None:
        pass


# -- the data's record: what the config alone does not say


#: MLflow keeps tag values up to 8000 characters; a long class list is cut below that.
_TAG_LIMIT = 5000


def data_tags(data: DataBundle) -> dict[str, str]:
    """Fingerprint, the normalisation really applied (auto's computed mean and std) and the
    class names (label i is the i-th), as `data.*` tags."""
    norm = data.normalization
    names = json.dumps(list(data.class_names))
    if len(names) > _TAG_LIMIT:
        names = names[: _TAG_LIMIT - 3] + "..."
    return {
        "data.fingerprint": data.fingerprint,
        "data.normalize": norm.mode,
        "data.normalize.mean": json.dumps([round(v, 6) for v in norm.mean]),
        "data.normalize.std": json.dumps([round(v, 6) for v in norm.std]),
        "data.num_classes": str(data.num_classes),
        "data.class_names": names,
        "data.input_shape": json.dumps(list(data.input_shape)),
        "data.streamed": str(data.train.streamed).lower(),
    }


def skip_if_finished(tracking: TrackingConfig, digest: str) -> None:
    """Resume: raise AlreadyFinished when this exact config already FINISHED. In a sweep the
    earlier run is named on the sweep's parent (`resumed.<hash>`), so the sweep's report
    still counts it."""
    parent = sweep_tags().get("mlflow.parentRunId")
    if not tracking.resumes(in_sweep=parent is not None):
        return
    previous = finished_run(tracking, {"config.hash": digest})
    if previous is None:
        return
    log.info("skipped: identical config already finished as run %s", previous["run_id"])
    if parent is not None:
        tag_run(tracking, parent, {f"resumed.{digest}": previous["run_id"]})
    raise AlreadyFinished(previous["run_id"], previous["metrics"])


def record_failure(cfg: Mapping[str, Any], error: BaseException, tags: Mapping[str, str]) -> None:
    """A FAILED tracking run holding `error`, for a job of a sweep refused before its run
    opened (bad input): the sweep goes on, and its failures stay visible beside the rest.
    An error raised inside the job's run (a diverging loss) already failed that run."""
    if getattr(error, "tracked_run_id", None):
        return
    try:
        tracking = from_mapping(TrackingConfig, cfg.get("tracking"), "tracking")
    except CompressError:
        return  # the tracking section itself is what is wrong: nowhere to record it
    try:
        params, internal = split_internal(flatten(cfg))
        named = dataclasses.replace(tracking, run_name=tracking.run_name or run_name(tags))
        with Run(named, {**tags, **internal, **provenance()}) as run:
            run.log_params(params)
            raise error
    except CompressError:
        pass
