"""The validated experiment (`Plan`) and what a run returns (`Result`)."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.analysis import AnalysisConfig, parse_analysis
from compress.config import from_mapping, matches, require, require_finite
from compress.data.augment import AugmentConfig, NoAugment, parse_augment
from compress.distill.config import DistillConfig
from compress.distributed import World
from compress.errors import ConfigError
from compress.measure import Measurement
from compress.measure.config import MeasureConfig
from compress.methods import MethodConfig, parse_method
from compress.schedules import ScheduleConfig, parse_schedule
from compress.tracking.config import TrackingConfig
from compress.train.recipe import RuntimeConfig, TrainRecipe

log = logging.getLogger(__name__)

#: The top-level keys of a job's config: the sections conf/config.yaml composes, and
#: `study`, what an experiment recipe records of its paper (experiments/results.py reads it).
SECTIONS = (
    "analysis", "augment", "dataset", "distill", "measure", "method", "model", "paths",
    "runtime", "schedule", "seed", "study", "tracking",
)  # fmt: skip


def check_config(cfg: Mapping[str, Any], also: Iterable[str] = ()) -> None:
    """Refuse a top-level key no step reads (a misspelled `+sead=3` would run the whole job
    with seed 0) and any number that is not finite; `also`: keys the caller reads itself."""
    valid = sorted({*SECTIONS, *also})
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(key, valid, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(unknown)}{hint}; valid: {', '.join(valid)}"
        )
    require_finite(cfg)


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
    analysis: AnalysisConfig
    distill: DistillConfig | None = None
    #: Training-batch augmentation; `train` and `finetune` carry it to `fit`.
    augment: AugmentConfig = dataclasses.field(default_factory=NoAugment)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], also: Iterable[str] = ()) -> Plan:
        """The plan of `cfg`, every section checked (see `check_config` for `also`)."""
        check_config(cfg, also)
        seed = cfg.get("seed", 0)
        require(matches(seed, int), f"seed must be an integer, got {seed!r}")
        for section in ("model", "dataset", "method", "schedule", "paths"):
            require(section in cfg, f"config has no '{section}' section")
        schedule = dict(cfg["schedule"])
        paths = {k: Path(v) for k, v in cfg["paths"].items()}
        for key in ("outputs", "run_dir"):
            require(key in paths, f"paths.{key} is required")
            require(paths[key].is_absolute(), f"paths.{key} must be absolute, got {paths[key]}")
        augment = parse_augment(cfg.get("augment"))
        train = TrainRecipe.parse(schedule.get("train"), "schedule.train")
        finetune = TrainRecipe.parse(schedule.get("finetune"), "schedule.finetune")
        return cls(
            seed=seed,
            model=dict(cfg["model"]),
            dataset=dict(cfg["dataset"]),
            method=parse_method(cfg["method"]),
            schedule=parse_schedule(schedule),
            train=dataclasses.replace(train, augment=augment),
            finetune=dataclasses.replace(finetune, augment=augment),
            runtime=from_mapping(RuntimeConfig, cfg.get("runtime"), "runtime"),
            measure=from_mapping(MeasureConfig, cfg.get("measure"), "measure"),
            tracking=from_mapping(TrackingConfig, cfg.get("tracking"), "tracking"),
            outputs=paths["outputs"],
            run_dir=paths["run_dir"],
            analysis=parse_analysis(cfg.get("analysis")),
            distill=DistillConfig.parse(cfg.get("distill")),
            augment=augment,
        )

    def tags(self) -> dict[str, str]:
        return {
            "model": str(self.model.get("name")),
            "dataset": str(self.dataset.get("name")),
            "method": self.method.name,
            "schedule": self.schedule.name,
        }

    def baseline_origin(self, cached: bool) -> str:
        """Where the baseline's weights came from, in words for the summary."""
        if self.train.epochs == 0:
            weights = self.model.get("weights")
            return f"the weights of {weights}, not trained" if weights else "untrained (0 epochs)"
        return "reused from cache" if cached else "trained and cached"

    def on_rank(self, world: World) -> Plan:
        """The plan as process `world.rank` carries it out: beside rank 0, without tracking
        or a progress bar (rank 0 logs and draws for the job)."""
        if world.main:
            return self
        return dataclasses.replace(
            self,
            tracking=dataclasses.replace(self.tracking, enabled=False),
            runtime=dataclasses.replace(self.runtime, progress=False),
        )

    def device(self, world: World | None = None) -> torch.device:
        """Where the job runs; a device this machine lacks is refused here, before any data
        is loaded onto it. In a data-parallel `world` each process takes the GPU of its
        local rank."""
        world = world or World()
        if world.parallel:
            return self._rank_device(world)
        name = self.runtime.device
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"runtime.device '{name}' is not a device name") from None
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            require(
                count > 0, f"runtime.device={name}: no CUDA GPU is visible here (use auto or cpu)"
            )
            require(
                device.index is None or device.index < count,
                f"runtime.device={name}: only {count} CUDA GPU(s) here (cuda:0..cuda:{count - 1})",
            )
        if device.type == "mps":
            require(
                torch.backends.mps.is_available(),
                f"runtime.device={name}: MPS is not available here (use auto or cpu)",
            )
        return device

    def _rank_device(self, world: World) -> torch.device:
        name = self.runtime.device
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        here = f"this node runs {world.local_size} of the job's {world.size} processes"
        if name == "auto":
            name = "cuda" if gpus >= world.local_size else "cpu"
            if 0 < gpus < world.local_size:
                log.warning("runtime.device=auto: %s and %d GPU(s): on the CPU", here, gpus)
        require(
            name in ("cpu", "cuda"),
            f"runtime.device={name}: {here}; they take cuda (each its local rank's GPU) or cpu",
        )
        if name == "cpu":
            return torch.device("cpu")
        fewer = (
            f"start at most {gpus} per node (torchrun --nproc-per-node={gpus}) or " if gpus else ""
        )
        require(
            gpus >= world.local_size,
            f"runtime.device=cuda: {here}, but {gpus} CUDA GPU(s) are visible here; "
            f"{fewer}use runtime.device=cpu",
        )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        return device


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
    baseline_origin: str = ""  # where its weights came from, in words


#: Dataset keys that say how data is read, never what is computed (both paths give the same
#: batches): not part of an experiment's identity.
READING_KEYS = ("in_memory", "memory_limit_gb", "workers")


def config_hash(cfg: Mapping[str, Any]) -> str:
    """What identifies an experiment: its resolved config without the run's own folder and
    how its data is read. Options added later are left out at their old behaviour
    (`augment=none`, `dataset.normalize=auto`), so the hashes of earlier runs stay."""
    plain = {k: v for k, v in cfg.items() if k != "paths"}
    if dict(plain.get("augment") or {}).get("name", "none") == "none":
        plain.pop("augment", None)
    if "dataset" in plain:
        dataset = {k: v for k, v in dict(plain["dataset"]).items() if k not in READING_KEYS}
        if dataset.get("normalize") == "auto":
            dataset.pop("normalize")
        plain["dataset"] = dataset
    plain["paths"] = {k: v for k, v in dict(cfg.get("paths", {})).items() if k != "run_dir"}
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
