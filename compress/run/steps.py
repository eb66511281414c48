"""The pipeline's steps that need more than one call: checking, the baseline, the teacher,
compressing with fine-tunes, and saving artifacts. Each takes the `Plan` and returns what
it made; none of them logs to tracking (the pipeline reports to its `Tracker`)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.artifact.cache_entry import Untrusted, discard, exclusive, read_entry, write_entry
from compress.artifact.store import save_artifact
from compress.data import DataBundle
from compress.distill.objective import DistillObjective
from compress.distill.setup import check_distill, teacher_from_artifact
from compress.distill.teacher import Teacher
from compress.distributed import current
from compress.measure import count_params
from compress.methods import MethodConfig, MethodContext, Stage, Step, apply_steps
from compress.models import build_model, weights_key
from compress.run.baseline import Baseline, baseline_key, load_or_train
from compress.run.plan import Plan
from compress.schedules import Finetune, ScheduleContext, parse_schedule
from compress.train.callbacks import observing
from compress.train.loop import accuracy

log = logging.getLogger(__name__)


def check_plan(plan: Plan, model: nn.Module, data: DataBundle, context: MethodContext) -> None:
    """Dry-run the method at its full target on a throwaway copy of `model`, and check
    the schedule and distillation against it: config errors surface before any training."""
    # The checks of plain values first: they cost nothing, the dry run may cost seconds.
    plan.method.check(plan.finetune.epochs)
    steps_per_epoch = math.ceil(len(data.train) / plan.finetune.batch_size)
    plan.schedule.check(plan.method, plan.finetune, steps_per_epoch)
    plan.augment.check((len(data.train), *data.input_shape))
    dry = dataclasses.replace(context, dry_run=True)
    dry_model, dry_stage = apply_steps(copy.deepcopy(model), plan.method, dry)
    if plan.distill is not None:
        check_distill(plan.distill, plan.method, dry_stage, dry_model, model, data)


def save(
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


@dataclass(frozen=True)
class TrainedBaseline:
    """The baseline's cache entry, its key, and its artifact (saved once per entry)."""

    cache: Baseline
    key: str
    artifact: Path
    bytes: int


def trained_baseline(
    model: nn.Module, plan: Plan, data: DataBundle, device: torch.device
) -> TrainedBaseline:
    """Fill `model` (built from `plan.model`, with its `weights` loaded) with its trained
    weights, from the cache or by training on from those it holds."""
    world = current()
    key = baseline_key(
        plan.model, data, plan.train, plan.seed, plan.runtime, device, weights_key(plan.model),
        world,
    )  # fmt: skip
    cache = load_or_train(
        model,
        data,
        plan.train,
        plan.runtime,
        seed=plan.seed,
        key=key,
        cache_dir=plan.outputs / "cache" / "baselines",
    )
    artifact = plan.outputs / "cache" / "baseline_artifacts" / f"{key}.pt"
    size = None
    if world.main:  # the others do not save: rank 0 measures
        with exclusive(artifact.with_name(f".{key}.lock")):
            size = _cached_size(artifact) if cache.cached else None
            if size is None:  # a retrained baseline, or no artifact to trust: save it (again)
                size = write_entry(artifact, lambda tmp: save(model, tmp, plan, data))
    return TrainedBaseline(cache, key, artifact, world.broadcast(size))


def _cached_size(artifact: Path) -> int | None:
    """The bytes of the cached baseline artifact once verified; None where there is none
    or it is not trusted (then discarded, with a warning). One written before records
    existed is saved again too: that costs a save, and gives the bytes this version writes."""
    try:
        entry = read_entry(artifact)
    except Untrusted as why:
        log.warning("baseline artifact %s is not used (%s); saving it again", artifact, why)
        discard(artifact)
        return None
    return None if entry is None else len(entry.data)


def prepare_teacher(
    plan: Plan, baseline: nn.Module, baseline_bytes: int, data: DataBundle, device: torch.device
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
            model = build_model(
                config.teacher, data.input_shape, data.num_classes, load_weights=True
            ).to(device)
        with observing(phase="teacher"):
            size = trained_baseline(
                model, dataclasses.replace(plan, model=dict(config.teacher)), data, device
            ).bytes
    else:
        model, size = copy.deepcopy(baseline), baseline_bytes
    metrics = {
        "teacher/acc": accuracy(model, data.test, plan.measure.eval_batch_size),
        "teacher/params": float(count_params(model)),
        "teacher/bytes": float(size),
    }
    return Teacher(model, batch_size=plan.measure.eval_batch_size), metrics


def compress(
    baseline: nn.Module,
    method: MethodConfig,
    plan: Plan,
    data: DataBundle,
    context: MethodContext,
    initial_state: dict[str, torch.Tensor],
    teacher: Teacher | None = None,
) -> tuple[nn.Module, Stage, Finetune]:
    """Compress a copy of the baseline step by step (one step unless the method is a
    stack), each on its schedule with its fine-tune (distilled from `teacher` when the
    run distills), and make it real."""
    finetune = Finetune()

    def fine_tune(index: int, step: Step, stage: Stage, model: nn.Module) -> None:
        recipe = plan.finetune
        if step.epochs is not None:
            recipe = dataclasses.replace(recipe, epochs=step.epochs)
        if not (step.config.finetunes and recipe.epochs > 0):
            stage.update(1.0)
            return
        objective = None
        if teacher is not None and plan.distill is not None:
            if not step.config.gradual:
                stage.update(1.0)  # the module to distill into exists from here on
            objective = DistillObjective(
                plan.distill, teacher, stage.training_module(model), data.input_shape,
                recipe.label_smoothing,
            )  # fmt: skip
            if plan.distill.cache_teacher and recipe.augment.enabled:
                log.info(
                    "distill.cache_teacher is off: augment=%s changes every training batch, "
                    "so the teacher runs on the augmented batch",
                    recipe.augment.name,
                )
            elif plan.distill.cache_teacher:
                teacher.cache_train(data.train)
        # The configured schedule drives the first step; later ones are one-shot.
        schedule = plan.schedule if index == 0 else parse_schedule({"name": "oneshot"})
        schedule_context = ScheduleContext(
            data=data,
            recipe=recipe,
            runtime=plan.runtime,
            seed=plan.seed + 1 + index,
            objective=objective,
            initial_state=initial_state,
            baseline_recipe=plan.train,
            baseline_seed=plan.seed,
            new_model=lambda: build_model(plan.model, data.input_shape, data.num_classes),
        )
        finetune.extend(schedule.run(stage, model, schedule_context))

    model, stage = apply_steps(copy.deepcopy(baseline), method, context, fine_tune)
    return model, stage, finetune
