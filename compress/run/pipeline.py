"""The one path an experiment takes: data, baseline, compress, fine-tune, finalize, measure,
track (the seven steps of DESIGN.md, in order, below).

`run` takes a plain, resolved config (a dict, as Hydra composes it) and works without
Hydra. Everything that can be checked is checked before the MLflow run opens, so bad
input costs one line and leaves no run behind.

Started by torchrun (or as several SLURM tasks), every process runs this path: all of
them train the baseline and every fine-tune data-parallel (`compress.distributed`); rank
0 alone analyses, measures, saves and logs, so a job is one MLflow run whatever its size.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compress.analysis import AnalysisContext
from compress.artifact.store import load_artifact
from compress.data import DataBundle, load_dataset
from compress.distributed import World, batch_norms, check_alike, join, launched
from compress.errors import AlreadyFinished, ConfigError
from compress.measure import ProbeContext, compare, measure_models, run_probes, write_layer_macs
from compress.methods import MethodContext, Stage
from compress.models import build_model, parse_model
from compress.run.plan import Plan, Result, config_hash
from compress.run.steps import (
    check_plan,
    compress,
    prepare_teacher,
    save,
    trained_baseline,
)
from compress.run.tracker import Tracker, record_failure, skip_if_finished
from compress.train.callbacks import observing
from compress.train.progress import Progress

__all__ = ["Plan", "Result", "record_failure", "run"]


def run(cfg: Mapping[str, Any], *, tags: Mapping[str, str] | None = None) -> Result | None:
    """Run one experiment described by the resolved config `cfg`; return what was measured
    (None on the processes of a data-parallel job other than rank 0)."""
    world = launched()
    plan = Plan.from_config(cfg).on_rank(world)
    device = plan.device(world)
    if plan.runtime.threads:
        torch.set_num_threads(plan.runtime.threads)

    # 1. data, as the model's weights expect it where they say (torchvision's transforms)
    data = load_dataset(plan.dataset, device, parse_model(plan.model).preprocessing())
    # 2. the baseline's architecture, and a dry run of everything that could refuse the config
    torch.manual_seed(plan.seed)
    model = build_model(plan.model, data.input_shape, data.num_classes, load_weights=True)
    context = MethodContext(data.input_shape, data, plan.finetune.batch_size)
    check_plan(plan, model, data, context)
    _check_sync_bn(plan, model, device, world)
    model = model.to(device)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    if plan.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    digest = config_hash(cfg)
    join(world)
    _skip_if_finished(plan, digest, world)
    if world.main:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    run_tags = {**plan.tags(), **(tags or {}), "config.hash": digest}

    progress = Progress(enabled=plan.runtime.progress)
    with progress, Tracker(plan, run_tags) as tracker, observing(progress, tracker):
        tracker.started(cfg, data, device, world)
        # 2. the baseline, trained or from the cache, and what analyses find in it
        with observing(phase="baseline"):
            baseline = trained_baseline(model, plan, data, device)
        tracker.baseline(baseline.cache, baseline.key)
        patch = None
        if world.main:  # what analyses find changes the method on every process alike
            analysis = plan.analysis.run(
                AnalysisContext(
                    model=model,
                    data=data,
                    folder=plan.run_dir,
                    eval_batch_size=plan.measure.eval_batch_size,
                    baseline_bytes=baseline.bytes,
                    saved_size=lambda rounded, stage: _scratch_size(rounded, stage, plan, data),
                )
            )
            tracker.analysed(analysis)
            patch = analysis.patch
        method = plan.method.patched(world.broadcast(patch))
        teacher, teacher_metrics = None, {}
        if plan.distill is not None:
            teacher, teacher_metrics = prepare_teacher(plan, model, baseline.bytes, data, device)

        # 3-4. compress and fine-tune on the schedule; 5. finalize: the real model, saved
        with observing(phase="finetune"):
            compressed, stage, finetune = compress(
                model, method, plan, data, context, initial_state, teacher
            )
        alike = {"model": compressed.state_dict(), "masks": stage.decisions()}
        checked = check_alike(world, alike, "the compressed model")
        if not world.main:
            return None
        if world.parallel:
            tracker.distributed(world, device, checked)
        artifact = plan.run_dir / "model.pt"
        artifact_bytes = save(compressed, artifact, plan, data, stage)

        # 6. measure what the user gets: the artifact loaded back, not the object in memory.
        # Int8 kernels run on the CPU: a converted model and its baseline are timed there.
        conversion = stage.conversion()
        on = torch.device("cpu") if conversion is not None else device
        returned = load_artifact(artifact).to(on)
        base, ours = measure_models(
            [(copy.deepcopy(model).to(on), baseline.bytes), (returned, artifact_bytes)],
            data,
            plan.measure,
            on,
        )
        layer_table = write_layer_macs(
            plan.run_dir / "layer_macs.csv", base.layer_macs, ours.layer_macs
        )
        metrics = {**compare(base, ours), **stage.summary(), **teacher_metrics}
        converted = conversion is not None
        probed = run_probes(
            plan.measure.probes,
            ProbeContext(
                model,
                returned,
                data,
                plan.measure,
                on,
                converted,
                plan.run_dir,
                float_model=conversion.float_model if conversion else None,
                calibration=conversion.calibration if conversion else None,
            ),
        )
        metrics |= probed.metrics
        compile_seconds = getattr(returned, "compile_seconds", None)  # a lowered int8 model
        if compile_seconds is not None:
            metrics["quant/compile_s"] = compile_seconds

        # 7. track
        tracker.finished(
            metrics,
            finetune.sparsity,
            probed.tags,
            [
                *((p, None) for p in stage.artifacts(plan.run_dir)),
                *probed.files,
                (layer_table, None),
                (artifact, "model"),
            ],
            {
                "metrics": metrics,
                "baseline": base.figures(),
                "compressed": ours.figures(),
                "tags": run_tags,
                "baseline_cached": baseline.cache.cached,
                "baseline_artifact": str(baseline.artifact),
                "artifact": str(artifact),
            },
        )
        tracker.log_model(returned, data, converted)
        return Result(
            metrics=metrics,
            baseline=base,
            compressed=ours,
            artifact=artifact,
            run_dir=plan.run_dir,
            tracking=tracker.describe(),
            tracking_uri=plan.tracking.uri if plan.tracking.enabled else None,
            baseline_cached=baseline.cache.cached,
            run_id=tracker.run_id,
            baseline_origin=plan.baseline_origin(baseline.cache.cached),
        )


def _check_sync_bn(plan: Plan, model: nn.Module, device: torch.device, world: World) -> None:
    """SyncBatchNorm runs on GPUs only: refused on another device, before any training."""
    layers = batch_norms(model) if world.parallel and plan.runtime.sync_bn else []
    if layers and device.type != "cuda":
        raise ConfigError(
            f"runtime.sync_bn=true: SyncBatchNorm runs on CUDA GPUs only, and this job trains "
            f"on {device.type} ({len(layers)} BatchNorm layers, e.g. {layers[0]}); set "
            "runtime.sync_bn=false (each process then normalises with its own shard's statistics)"
        )


def _skip_if_finished(plan: Plan, digest: str, world: World) -> None:
    """Resume: rank 0 looks the config up; every process learns what it found."""
    found = None
    if world.main:
        try:
            skip_if_finished(plan.tracking, digest)
        except AlreadyFinished as done:
            found = (done.run_id, done.metrics)
    found = world.broadcast(found)
    if found is not None:
        raise AlreadyFinished(*found)


def _scratch_size(model: nn.Module, stage: Stage, plan: Plan, data: DataBundle) -> int:
    """The bytes `model` saves as (an analysis's candidate), written and removed again."""
    scratch = plan.run_dir / ".scratch.pt"
    try:
        return save(model, scratch, plan, data, stage)
    finally:
        scratch.unlink(missing_ok=True)
