"""Where the teacher comes from, and checking a distillation config before training."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from compress.data import DataBundle
from compress.distill.config import DistillConfig
from compress.distill.objective import DistillObjective
from compress.distill.teacher import Teacher
from compress.errors import ConfigError
from compress.methods.base import MethodConfig, Stage
from compress.models import build_model
from compress.models.eval_mode import model_device


def teacher_from_artifact(path: str, data: DataBundle) -> nn.Module:
    """A saved artifact as the teacher; it must take the data's inputs and classes."""
    from compress.artifact.store import FORMATS, load_artifact, read_payload

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"distill.teacher_artifact: no file at {file}")
    try:
        payload = read_payload(file)
    except Exception as error:  # torch.load's own message runs over many lines
        raise ConfigError(
            f"distill.teacher_artifact {file} cannot be read as a compress artifact "
            f"({type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        raise ConfigError(
            f"distill.teacher_artifact {file} is not a compress artifact (a model.pt that "
            "compress saved)"
        )
    spec = payload["model"]
    model = load_artifact(file)
    if spec["num_classes"] != data.num_classes:
        raise ConfigError(
            f"distill: the teacher predicts {spec['num_classes']} classes, the student "
            f"{data.num_classes} (dataset '{data.name}'): train the teacher on the same classes"
        )
    if tuple(spec["input_shape"]) != data.input_shape:
        raise ConfigError(
            f"distill: the teacher takes inputs {tuple(spec['input_shape'])}, the dataset "
            f"'{data.name}' gives {data.input_shape}"
        )
    return model


def untrained_teacher(config: DistillConfig, baseline: nn.Module, data: DataBundle) -> nn.Module:
    """The teacher's architecture, for checks before anything is trained."""
    if config.teacher_artifact is not None:
        return teacher_from_artifact(config.teacher_artifact, data)
    if config.teacher is not None:
        return build_model(config.teacher, data.input_shape, data.num_classes)
    return copy.deepcopy(baseline)


def check_distill(
    config: DistillConfig,
    method: MethodConfig,
    dry_stage: Stage,
    dry_model: nn.Module,
    baseline: nn.Module,
    data: DataBundle,
) -> None:
    """Resolve every tap and size every adapter now, on untrained models: a wrong path or
    shape is a one-line error before any training."""
    if method.structured and config.hint_weight > 0:
        raise ConfigError(
            f"distill.hints with method '{method.name}': channels removed during the fine-tune "
            "change the student's feature shapes under the hint adapters; use attention or "
            "response distillation with structured pruning"
        )
    student = dry_stage.training_module(dry_model)
    teacher = Teacher(untrained_teacher(config, baseline, data).to(model_device(student)))
    DistillObjective(config, teacher, student, data.input_shape)
