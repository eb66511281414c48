"""The one path an experiment takes: data, baseline, compress, fine-tune, finalize, measure, log.

`run` takes a plain, resolved config (a dict, as Hydra composes it) and works without
Hydra. Everything that can be checked is checked before the MLflow run opens, so bad
input costs one line and leaves no run behind.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from compress.analysis.bit_sweep import BitSweepConfig, bit_sweep
from compress.analysis.bit_sweep import plot as plot_bits
from compress.analysis.bit_sweep import write_csv as write_bits_csv
from compress.analysis.sensitivity import (
    SensitivityConfig,
    amounts_for_target,
    layer_sensitivity,
    plot,
    write_csv,
)
from compress.artifact.store import load_artifact, save_artifact
from compress.config import from_mapping, require
from compress.data import DataBundle, load_dataset
from compress.distill.config import DistillConfig
from compress.distill.objective import DistillObjective
from compress.distill.setup import check_distill, teacher_from_artifact
from compress.distill.teacher import Teacher
from compress.errors import AlreadyFinished, CompressError
from compress.measure import (
    Measurement,
    ProbeContext,
    compare,
    count_params,
    measure_models,
    run_probes,
)
from compress.measure.config import MeasureConfig
from compress.methods import MethodConfig, MethodContext, Stage, apply_method, parse_method
from compress.methods.prune import UnstructuredPruning
from compress.methods.stack import Stack, StackStage, Step
from compress.models import build_model
from compress.run.baseline import Baseline, baseline_key, load_or_train
from compress.schedules.base import (
    Finetune,
    LotteryTicket,
    OneShot,
    ScheduleConfig,
    parse_schedule,
    run_schedule,
)
from compress.tracking.config import TrackingConfig
from compress.tracking.provenance import provenance
from compress.tracking.run import Run, finished_run, flatten, sweep_tags, tag_run
from compress.train.loop import EpochStats, accuracy, fit
from compress.train.progress import Progress
from compress.train.recipe import RuntimeConfig, TrainRecipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """The validated experiment: every section typed and checked."""

    seed: int
    model: dict[str, Any]
    dataset: dict[str, Any]
    method: MethodConfig
    schedule: ScheduleConfig
    train: TrainRecipe
    finetune: TrainRecipe
    runtime: RuntimeConfig
    measure: MeasureConfig
    tracking: TrackingConfig
    outputs: Path
    run_dir: Path
    analysis: SensitivityConfig | BitSweepConfig | None = None
    distill: DistillConfig | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Plan:
        for section in ("model", "dataset", "method", "schedule", "paths"):
            require(section in cfg, f"config has no '{section}' section")
        schedule = dict(cfg["schedule"])
        paths = {k: Path(v) for k, v in cfg["paths"].items()}
        for key in ("outputs", "run_dir"):
            require(key in paths, f"paths.{key} is required")
            require(paths[key].is_absolute(), f"paths.{key} must be absolute, got {paths[key]}")
        return cls(
            seed=int(cfg.get("seed", 0)),
            model=dict(cfg["model"]),
            dataset=dict(cfg["dataset"]),
            method=parse_method(cfg["method"]),
            schedule=parse_schedule(schedule),
            train=TrainRecipe.parse(schedule.get("train"), "schedule.train"),
            finetune=TrainRecipe.parse(schedule.get("finetune"), "schedule.finetune"),
            runtime=from_mapping(RuntimeConfig, cfg.get("runtime"), "runtime"),
            measure=from_mapping(MeasureConfig, cfg.get("measure"), "measure"),
            tracking=from_mapping(TrackingConfig, cfg.get("tracking"), "tracking"),
            outputs=paths["outputs"],
            run_dir=paths["run_dir"],
            analysis=_parse_analysis(cfg.get("analysis")),
            distill=DistillConfig.parse(cfg.get("distill")),
        )

    def tags(self) -> dict[str, str]:
        return {
            "model": str(self.model.get("name")),
            "dataset": str(self.dataset.get("name")),
            "method": self.method.name,
            "schedule": self.schedule.name,
        }


@dataclass(frozen=True)
class Result:
    metrics: dict[str, float]
    baseline: Measurement
    compressed: Measurement
    artifact: Path
    run_dir: Path
    tracking: str
    tracking_uri: str | None
    baseline_cached: bool
    run_id: str | None = None  # the MLflow run, when tracking is enabled


def select_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.device != "auto":
        return torch.device(runtime.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(cfg: Mapping[str, Any], *, tags: Mapping[str, str] | None = None) -> Result:
    """Run one experiment described by the resolved config `cfg`; return what was measured."""
    plan = Plan.from_config(cfg)
    device = select_device(plan.runtime)
    if plan.runtime.threads:
        torch.set_num_threads(plan.runtime.threads)
    data = load_dataset(plan.dataset, device)
    torch.manual_seed(plan.seed)
    model = build_model(plan.model, data.input_shape, data.num_classes)
    context = MethodContext(data.input_shape, data, plan.finetune.batch_size)
    # Dry run of the method at its full target on a throwaway copy, and of the schedule
    # against the fine-tune: their config errors surface before any training.
    dry_model = copy.deepcopy(model)
    dry_stage = apply_method(dry_model, plan.method, context)
    dry_stage.update(1.0)
    plan.method.check(plan.finetune.epochs)
    if plan.distill is not None:
        check_distill(plan.distill, plan.method, dry_stage, dry_model, model, data)
    steps_per_epoch = math.ceil(len(data.train) / plan.finetune.batch_size)
    plan.schedule.check(plan.method, plan.finetune, steps_per_epoch)
    model = model.to(device)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    if plan.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)

    identity = {"config.hash": config_hash(cfg)}
    _skip_if_finished(plan.tracking, identity["config.hash"])
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    run_tags = {**plan.tags(), **(tags or {}), **identity}
    with Progress(enabled=plan.runtime.progress) as progress, Run(plan.tracking, run_tags) as run:
        run.log_params(flatten(cfg))
        run.set_tags({"data.fingerprint": data.fingerprint, "device": device.type, **provenance()})
        config_path = plan.run_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
        run.log_artifact(config_path)

        baseline, key, baseline_artifact, baseline_bytes = _trained(
            model, plan, data, device, progress
        )
        run.set_tags({"baseline.cached": str(baseline.cached).lower(), "baseline.key": key})

        if plan.analysis is not None:
            plan = _analyse(plan, model, data, run, baseline_bytes)
        teacher, teacher_metrics = None, {}
        if plan.distill is not None:
            teacher, teacher_metrics = _teacher(plan, model, baseline_bytes, data, device, progress)
        compressed, stage, finetune = _compress(
            model, plan, data, context, progress, initial_state, teacher
        )
        artifact = plan.run_dir / "model.pt"
        artifact_bytes = _save(compressed, artifact, plan, data, stage)
        # Measure what the user gets: the artifact loaded back, not the object in memory.
        # Int8 kernels run on the CPU: a converted model and its baseline are timed there.
        on = torch.device("cpu") if stage.conversion() is not None else device
        returned = load_artifact(artifact).to(on)
        base, ours = measure_models(
            [(copy.deepcopy(model).to(on), baseline_bytes), (returned, artifact_bytes)],
            data,
            plan.measure,
            on,
        )
        metrics = {**compare(base, ours), **stage.summary(), **teacher_metrics}
        converted = stage.conversion() is not None
        probed = run_probes(
            plan.measure.probes,
            ProbeContext(model, returned, data, plan.measure, on, converted, plan.run_dir),
        )
        metrics |= probed.metrics
        run.set_tags(probed.tags)
        for file, folder in probed.files:
            run.log_artifact(file, folder)

        run.log_histories(
            _histories(baseline.history, "baseline")
            | _histories(finetune.history, "finetune")
            | {"finetune/sparsity": finetune.sparsity}
        )
        run.log_metrics(metrics)
        for table in stage.artifacts(plan.run_dir):
            run.log_artifact(table)
        summary_path = plan.run_dir / "summary.json"
        summary = {
            "metrics": metrics,
            "baseline": dataclasses.asdict(base),
            "compressed": dataclasses.asdict(ours),
            "tags": run_tags,
            "baseline_cached": baseline.cached,
            "baseline_artifact": str(baseline_artifact),
            "artifact": str(artifact),
        }
        summary_path.write_text(json.dumps(summary, indent=2))
        run.log_artifact(summary_path)
        run.log_artifact(artifact, "model")
        return Result(
            metrics=metrics,
            baseline=base,
            compressed=ours,
            artifact=artifact,
            run_dir=plan.run_dir,
            tracking=run.describe(),
            tracking_uri=plan.tracking.uri if plan.tracking.enabled else None,
            baseline_cached=baseline.cached,
            run_id=run.run_id,
        )


ANALYSES = ("none", "sensitivity", "bits")


def _parse_analysis(
    section: Mapping[str, Any] | None,
) -> SensitivityConfig | BitSweepConfig | None:
    values = dict(section or {"name": "none"})
    name = values.pop("name", None)
    require(name in ANALYSES, f"unknown analysis '{name}'; choose one of: {', '.join(ANALYSES)}")
    if name == "sensitivity":
        return SensitivityConfig.parse(values, "analysis")
    if name == "bits":
        return from_mapping(BitSweepConfig, values, "analysis")
    return None


def _analyse(plan: Plan, model: nn.Module, data: DataBundle, run: Run, baseline_bytes: int) -> Plan:
    """Analyses of the baseline, logged: pruning sensitivity per layer (with a target, the
    per-layer amounts that reach it replace those of `method=prune`), or a bit sweep."""
    config = plan.analysis
    if isinstance(config, BitSweepConfig):
        scratch = plan.run_dir / ".bit_sweep.pt"

        def size(rounded: nn.Module, stage: Stage) -> int:
            return _save(rounded, scratch, plan, data, stage)

        dense_acc, points = bit_sweep(model, data, config, size, plan.measure.eval_batch_size)
        scratch.unlink(missing_ok=True)
        csv_path = plan.run_dir / "bit_sweep.csv"
        run.log_artifact(write_bits_csv(dense_acc, baseline_bytes, points, csv_path))
        run.log_artifact(
            plot_bits(dense_acc, baseline_bytes, points, plan.run_dir / "bit_sweep.png")
        )
        return plan
    assert isinstance(config, SensitivityConfig)
    dense_acc, rows = layer_sensitivity(model, data, config, plan.measure.eval_batch_size)
    run.log_artifact(write_csv(dense_acc, rows, plan.run_dir / "sensitivity.csv"))
    run.log_artifact(plot(dense_acc, rows, plan.run_dir / "sensitivity.png"))
    if config.target is None:
        return plan
    amounts = amounts_for_target(dense_acc, rows, config.target)
    path = plan.run_dir / "layer_amounts.yaml"
    path.write_text(yaml.safe_dump({"layers": amounts}, sort_keys=False))
    run.log_artifact(path)
    if not isinstance(plan.method, UnstructuredPruning):
        log.info(
            "sensitivity: amounts written to %s (method '%s' does not use them)",
            path,
            plan.method.name,
        )
        return plan
    log.info("sensitivity: pruning with per-layer amounts %s", amounts)
    return dataclasses.replace(plan, method=dataclasses.replace(plan.method, layers=amounts))


def _compress(
    baseline: nn.Module,
    plan: Plan,
    data: DataBundle,
    context: MethodContext,
    progress: Progress,
    initial_state: dict[str, torch.Tensor],
    teacher: Teacher | None = None,
) -> tuple[nn.Module, Stage, Finetune]:
    """Compress a copy of the baseline, stage by stage (one stage unless the method is a
    stack), each on its schedule with its fine-tune (distilled from `teacher` when the
    run distills); make it real."""
    model = copy.deepcopy(baseline)
    method = plan.method
    steps = method.steps() if isinstance(method, Stack) else [Step(method.name, method, None)]
    stages: list[Stage] = []
    finetune = Finetune()
    for index, step in enumerate(steps):
        stage = apply_method(model, step.config, context)
        recipe = plan.finetune
        if step.epochs is not None:
            recipe = dataclasses.replace(recipe, epochs=step.epochs)
        if step.config.finetunes and recipe.epochs > 0:
            objective = None
            if teacher is not None and plan.distill is not None:
                if not step.config.gradual:
                    stage.update(1.0)  # the module to distill into exists from here on
                objective = DistillObjective(
                    plan.distill,
                    teacher,
                    stage.training_module(model),
                    data.input_shape,
                    recipe.label_smoothing,
                )
                if plan.distill.cache_teacher:
                    teacher.cache_train(data.train.x)
            part = run_schedule(
                plan.schedule if index == 0 else OneShot(),
                stage,
                model,
                data,
                recipe,
                plan.runtime,
                seed=plan.seed + 1 + index,
                progress=progress,
                rewind=_rewinder(plan, data, initial_state, progress),
                objective=objective,
            )
            finetune.extend(part)
        else:
            stage.update(1.0)
        model = stage.finalize(model)
        stages.append(stage)
    return model, stages[0] if len(stages) == 1 else StackStage(stages), finetune


def _trained(
    model: nn.Module, plan: Plan, data: DataBundle, device: torch.device, progress: Progress
) -> tuple[Baseline, str, Path, int]:
    """Fill `model` (built from `plan.model`) with its trained weights, from the cache or by
    training; return the cache entry, its key, its artifact and the artifact's bytes. The
    artifact is saved once per cache entry, not into every run folder."""
    key = baseline_key(plan.model, data, plan.train, plan.seed, plan.runtime, device)
    baseline = load_or_train(
        model,
        data,
        plan.train,
        plan.runtime,
        seed=plan.seed,
        key=key,
        cache_dir=plan.outputs / "cache" / "baselines",
        progress=progress,
    )
    artifact = plan.outputs / "cache" / "baseline_artifacts" / f"{key}.pt"
    if baseline.cached and artifact.exists():
        return baseline, key, artifact, artifact.stat().st_size
    return baseline, key, artifact, _save(model, artifact, plan, data)


def _teacher(
    plan: Plan,
    baseline: nn.Module,
    baseline_bytes: int,
    data: DataBundle,
    device: torch.device,
    progress: Progress,
) -> tuple[Teacher, dict[str, float]]:
    """The teacher (the baseline, a teacher model trained and cached like a baseline, or a
    saved artifact) and its figures: accuracy, params, artifact bytes."""
    config = plan.distill
    assert config is not None
    if config.teacher_artifact is not None:
        model = teacher_from_artifact(config.teacher_artifact, data).to(device)
        size = Path(config.teacher_artifact).stat().st_size
    elif config.teacher is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(plan.seed)
            model = build_model(config.teacher, data.input_shape, data.num_classes).to(device)
        teacher_plan = dataclasses.replace(plan, model=dict(config.teacher))
        size = _trained(model, teacher_plan, data, device, progress)[3]
    else:
        model, size = copy.deepcopy(baseline), baseline_bytes
    metrics = {
        "teacher/acc": accuracy(model, data.test, plan.measure.eval_batch_size),
        "teacher/params": float(count_params(model)),
        "teacher/bytes": float(size),
    }
    return Teacher(model, batch_size=plan.measure.eval_batch_size), metrics


def _rewinder(
    plan: Plan, data: DataBundle, initial: dict[str, torch.Tensor], progress: Progress
) -> Callable[[], dict[str, torch.Tensor]]:
    """The lottery's rewind target: computed once, or drawn anew each round (reinit)."""
    state = functools.partial(_rewind_state, plan, data, initial, progress)
    reinit = isinstance(plan.schedule, LotteryTicket) and plan.schedule.reinit
    return state if reinit else functools.cache(state)


def _rewind_state(
    plan: Plan, data: DataBundle, initial: dict[str, torch.Tensor], progress: Progress
) -> dict[str, torch.Tensor]:
    """Weights a lottery ticket restarts from: the initial ones, those of epoch k of the
    baseline's training (retrained deterministically), or a fresh random init (control)."""
    schedule = plan.schedule
    assert isinstance(schedule, LotteryTicket)
    model = build_model(plan.model, data.input_shape, data.num_classes)
    if schedule.reinit:
        return model.state_dict()  # drawn from the RNG's current state: a new init each round
    model.load_state_dict(initial)
    model = model.to(data.train.x.device)
    if schedule.rewind_epoch > 0:
        fit(
            model,
            data,
            plan.train,
            plan.runtime,
            seed=plan.seed,
            label="rewind",
            progress=progress,
            stop_after=schedule.rewind_epoch,
        )
    return model.state_dict()


def _save(
    model: nn.Module, path: Path, plan: Plan, data: DataBundle, stage: Stage | None = None
) -> int:
    """Save `model` as an artifact at `path` (in the encodings `stage` made for it, as the
    conversion `stage` made); return its size in bytes."""
    return save_artifact(
        model,
        path,
        model_config=(stage.model_config() if stage else None) or plan.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        encodings=stage.encodings() if stage else None,
        conversion=stage.conversion() if stage else None,
    )


def _histories(history: list[EpochStats], phase: str) -> dict[str, list[tuple[int, float]]]:
    return {
        f"{phase}/{name}": [(h.epoch, getattr(h, name)) for h in history]
        for name in ("loss", "train_acc", "val_acc", "lr")
    }


def _skip_if_finished(tracking: TrackingConfig, digest: str) -> None:
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


def config_hash(cfg: Mapping[str, Any]) -> str:
    """What identifies an experiment: its resolved config without the run's own folder."""
    plain = {k: v for k, v in cfg.items() if k != "paths"}
    plain["paths"] = {k: v for k, v in dict(cfg.get("paths", {})).items() if k != "run_dir"}
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


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
        with Run(tracking, {**tags, **provenance()}) as run:
            run.log_params(flatten(cfg))
            raise error
    except CompressError:
        pass
