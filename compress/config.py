"""Typed, self-validating views of the plain config sections the pipeline reads.

Hydra composes YAML; these dataclasses turn each section into a value that is
known to be usable, so bad input fails in one line before any training starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from compress.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step")

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass `cls` from `values`; unknown keys and wrong types are ConfigErrors."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not matches(value, hints[name]):
            raise ConfigError(f"{where}.{name} must be {describe(hints[name])}, got {value!r}")
    return cls(**values)


def matches(value: Any, hint: Any) -> bool:
    """Whether a config value fits a field annotation (bool is not a number here)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (hint is float or isinstance(value, int))
        )
    if origin in (tuple, list):
        return isinstance(value, list | tuple) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(
            matches(k, args[0]) and matches(v, args[1]) for k, v in value.items()
        )
    return hint is Any or not isinstance(hint, type) or isinstance(value, hint)


def describe(hint: Any) -> str:
    """`int | None` -> 'an int or null', for error messages."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {describe(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    if typing.get_origin(hint) is dict:
        key, value = (describe(a).split(" ", 1)[-1] for a in typing.get_args(hint))
        return f"a mapping of {key} to {value}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def require(condition: bool, message: str) -> None:
    """Raise a one-line ConfigError unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainRecipe:
    """How one training phase runs: the baseline's training or a fine-tune."""

    epochs: int
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    step_epochs: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    #: Network slimming (Liu et al. 2017): L1 penalty on batch-norm scales (gamma),
    #: pushing unimportant channels toward zero so `bn_scale` importance can remove them.
    bn_l1: float = 0.0
    where: str = field(default="schedule", compare=False, repr=False)

    def __post_init__(self) -> None:
        w = self.where
        require(
            isinstance(self.epochs, int) and self.epochs >= 0,
            f"{w}.epochs must be >= 0, got {self.epochs}",
        )
        require(self.batch_size >= 1, f"{w}.batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"{w}.lr must be > 0, got {self.lr}")
        require(
            self.optimizer in OPTIMIZERS,
            f"{w}.optimizer '{self.optimizer}' unknown; choose one of: {', '.join(OPTIMIZERS)}",
        )
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"{w}.lr_schedule '{self.lr_schedule}' unknown; "
            f"choose one of: {', '.join(LR_SCHEDULES)}",
        )
        require(0 <= self.momentum < 1, f"{w}.momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"{w}.weight_decay must be >= 0, got {self.weight_decay}")
        require(self.step_epochs >= 1, f"{w}.step_epochs must be >= 1, got {self.step_epochs}")
        require(0 < self.gamma <= 1, f"{w}.gamma must be in (0, 1], got {self.gamma}")
        require(self.bn_l1 >= 0, f"{w}.bn_l1 must be >= 0, got {self.bn_l1}")
        require(
            0 <= self.label_smoothing < 1,
            f"{w}.label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )

    @classmethod
    def parse(cls, values: Mapping[str, Any] | None, where: str) -> Self:
        values = dict(values or {})
        require("epochs" in values, f"{where}.epochs is required")
        return from_mapping(cls, {**values, "where": where}, where)

    def key(self) -> dict[str, Any]:
        """The fields that determine the trained weights (for cache keys)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how tensors run; none of this changes what is being compressed."""

    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        require(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            f"runtime.device must be auto, cpu, cuda[:N] or mps, got '{self.device}'",
        )
        require(
            self.threads is None or self.threads >= 1,
            f"runtime.threads must be >= 1 or null, got {self.threads}",
        )


@dataclass(frozen=True)
class MeasureConfig:
    """How latency and accuracy are measured (fixed threads, warm-up, median of repeats)."""

    threads: int = 1
    batch_sizes: tuple[int, ...] = (1, 256)
    warmup: int = 3
    repeats: int = 30
    max_seconds: float = 2.0
    eval_batch_size: int = 1024
    #: Also time the fp32 baseline under torch.compile; auto: when the model is converted
    #: to int8, so that a speedup from compilation is not credited to quantization.
    compiled_baseline: bool | str = "auto"
    #: Also export both models to ONNX and time them with ONNX Runtime.
    onnx: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        require(self.threads >= 1, f"measure.threads must be >= 1, got {self.threads}")
        require(
            len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes),
            f"measure.batch_sizes must be a non-empty list of sizes >= 1, got {self.batch_sizes}",
        )
        require(self.warmup >= 0, f"measure.warmup must be >= 0, got {self.warmup}")
        require(self.repeats >= 1, f"measure.repeats must be >= 1, got {self.repeats}")
        require(self.max_seconds > 0, f"measure.max_seconds must be > 0, got {self.max_seconds}")
        require(
            self.eval_batch_size >= 1,
            f"measure.eval_batch_size must be >= 1, got {self.eval_batch_size}",
        )
        require(
            isinstance(self.compiled_baseline, bool) or self.compiled_baseline == "auto",
            f"measure.compiled_baseline must be auto, true or false, got {self.compiled_baseline}",
        )


@dataclass(frozen=True)
class TrackingConfig:
    """Where the MLflow run goes; `uri` must be absolute so every job of a sweep shares it."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "compress"
    run_name: str | None = None
    artifact_location: str | None = None
    #: Skip a job whose exact config already FINISHED in this experiment, so that a
    #: re-launched sweep runs only what is missing, failed or was killed. auto: in sweeps
    #: (a multirun's jobs), not for a single run, which a user re-runs on purpose.
    resume: bool | str = "auto"

    def __post_init__(self) -> None:
        require(
            not self.enabled or bool(self.uri),
            "tracking.uri must be set when tracking is enabled",
        )
        require(bool(self.experiment), "tracking.experiment must not be empty")
        require(
            isinstance(self.resume, bool) or self.resume == "auto",
            f"tracking.resume must be auto, true or false, got {self.resume}",
        )

    def resumes(self, in_sweep: bool) -> bool:
        """Whether a job whose exact config already finished is skipped."""
        return self.enabled and (self.resume is True or (self.resume == "auto" and in_sweep))
