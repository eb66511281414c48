"""What `compress-search` searches and where its study is kept, checked before training.

`SearchSettings` is the `search:` section, validated; `Space` holds the model's searched
layers and turns one Optuna trial into the job's method: a stack prune -> quantize_weights
with the trial's per-layer amounts and bits. `Space.setup` is what a study answers to
(model, data, schedule, tolerance, space): `resume` refuses a study run with another
setup, whose old trials would not measure against the new ones, and fails the trials a
stopped search left RUNNING.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from compress.config import from_mapping, require
from compress.errors import ConfigError
from compress.quant.grid import MAX_BITS, MIN_BITS

log = logging.getLogger(__name__)

#: Options of the stages that the trial sets itself.
TRIAL_OPTIONS = ("name", "layers")


@dataclass(frozen=True)
class SearchSettings:
    """The `search:` section of conf/search.yaml (see there for each option)."""

    storage: str
    study: str
    trials: int
    delta: float
    amounts: tuple[float, ...] = (0.0, 0.95)
    amount_step: float | None = 0.05
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    layers: tuple[str | int, ...] | None = None
    seed: int = 0
    startup_trials: int = 10
    prune: dict[str, Any] = field(default_factory=dict)
    quantize_weights: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.storage), "search.storage must name an Optuna RDB URL")
        require(bool(self.study), "search.study must not be empty")
        require(self.trials >= 1, f"search.trials must be >= 1, got {self.trials}")
        require(
            math.isfinite(self.delta) and 0 <= self.delta <= 100,
            f"search.delta (allowed drop, in points) must be in [0, 100], got {self.delta}",
        )
        require(
            len(self.amounts) == 2 and 0 <= self.amounts[0] <= self.amounts[1] < 1,
            f"search.amounts must be [low, high] with 0 <= low <= high < 1, got "
            f"{list(self.amounts)}",
        )
        step, (low, high) = self.amount_step, self.amounts
        require(step is None or step > 0, f"search.amount_step must be > 0 or null, got {step}")
        if step is not None and high > low:
            steps = (high - low) / step
            require(
                abs(steps - round(steps)) < 1e-6,
                f"search.amounts [{low}, {high}] must span whole steps of search.amount_step "
                f"({step}); or set search.amount_step=null for any amount in the range",
            )
        require(len(self.bits) > 0, "search.bits must list at least one bit width")
        for bits in self.bits:
            require(
                MIN_BITS <= bits <= MAX_BITS,
                f"search.bits must be integers in {MIN_BITS}..{MAX_BITS}, got {list(self.bits)}",
            )
        require(
            self.layers is None or len(self.layers) > 0,
            "search.layers is empty; list module-path globs, or null for every conv/linear layer",
        )
        require(
            self.startup_trials >= 0,
            f"search.startup_trials must be >= 0, got {self.startup_trials}",
        )
        for stage in ("prune", "quantize_weights"):
            taken = sorted(set(getattr(self, stage)) & set(TRIAL_OPTIONS))
            require(not taken, f"search.{stage}: {', '.join(taken)} is set by each trial")

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> SearchSettings:
        require(section is not None, "the config has no 'search' section (conf/search.yaml)")
        values = dict(section or {})
        for key in ("prune", "quantize_weights"):
            values[key] = dict(values.get(key) or {})
        return from_mapping(cls, values, "search")

    def violation(self, acc: float, baseline_acc: float) -> float:
        """Points by which `acc` falls below the allowed floor (<= 0: feasible)."""
        return 100 * (baseline_acc - acc) - self.delta


@dataclass(frozen=True)
class Space:
    """The layers searched, and the per-layer amount and bits each trial draws for them."""

    settings: SearchSettings
    layers: tuple[str, ...]

    @classmethod
    def for_config(cls, settings: SearchSettings, cfg: Mapping[str, Any]) -> Space:
        """The searched layers of the model `cfg` names, built untrained for their paths."""
        from compress.data import load_dataset
        from compress.methods.masks import prunable_weights
        from compress.models import build_model

        data = load_dataset(cfg["dataset"], "cpu")
        model = build_model(cfg["model"], data.input_shape, data.num_classes)
        paths = list(prunable_weights(model))
        require(bool(paths), f"model '{cfg['model'].get('name')}' has no conv or linear layer")
        return cls.for_paths(settings, paths)

    @classmethod
    def for_paths(cls, settings: SearchSettings, paths: list[str]) -> Space:
        """`settings.layers` globs expanded against the model's conv/linear `paths`."""
        from compress.methods.masks import matching

        if settings.layers is None:
            return cls(settings, tuple(paths))
        chosen = {p for g in settings.layers for p in matching(paths, str(g), "search.layers")}
        return cls(settings, tuple(p for p in paths if p in chosen))

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, float], dict[str, int]]:
        low, high = self.settings.amounts
        step = self.settings.amount_step if high > low else None
        amounts = {
            layer: round(trial.suggest_float(f"amount/{layer}", low, high, step=step), 6)
            for layer in self.layers
        }
        bits = {
            layer: int(trial.suggest_categorical(f"bits/{layer}", list(self.settings.bits)))
            for layer in self.layers
        }
        return amounts, bits

    def method(self, amounts: Mapping[str, float], bits: Mapping[str, int]) -> dict[str, Any]:
        """The job's `method` section for one trial."""
        return {
            "name": "stack",
            "stages": {
                "prune": {**self.settings.prune, "layers": dict(amounts)},
                "quantize_weights": {**self.settings.quantize_weights, "layers": dict(bits)},
            },
        }

    def sample_method(self) -> dict[str, Any]:
        """A method with the space's first corner, to check the stages' options up front."""
        low = self.settings.amounts[0]
        return self.method(dict.fromkeys(self.layers, low), dict.fromkeys(self.layers, 8))

    def setup(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What the study's figures depend on; stored with it and compared on resume."""
        dataset = {k: v for k, v in cfg["dataset"].items() if k not in ("root", "download")}
        s = self.settings
        plain = {
            "model": cfg["model"],
            "dataset": dataset,
            "schedule": cfg["schedule"],
            "distill": cfg.get("distill"),
            "seed": cfg.get("seed"),
            "delta": s.delta,
            "layers": list(self.layers),
            "amounts": [*s.amounts, s.amount_step],
            "bits": sorted(set(s.bits)),
            "prune": s.prune,
            "quantize_weights": s.quantize_weights,
        }
        return json.loads(json.dumps(plain, sort_keys=True, default=str))


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys of `setup` whose values differ between a stored study and this command."""
    return sorted(k for k in {*stored, *current} if stored.get(k) != current.get(k))


def open_storage(url: str) -> RDBStorage:
    """The study's RDB store (a SQLite file's folder is created); a bad URL is one line."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return RDBStorage(url)
    except Exception as error:  # SQLAlchemy's URL, driver and connection errors alike
        raise ConfigError(f"search.storage '{url}' cannot be opened: {error}") from error


def resume(storage: RDBStorage, settings: SearchSettings, setup: dict[str, Any]) -> int:
    """For a study that exists: refuse another setup, fail the trials a stopped search left
    RUNNING; return how many trials it holds (0 for a new study)."""
    try:
        study_id = storage.get_study_id_from_name(settings.study)
    except KeyError:
        return 0
    stored = storage.get_study_user_attrs(study_id).get("setup")
    if stored is not None and (changed := differences(stored, setup)):
        raise ConfigError(
            f"study '{settings.study}' in {settings.storage} was run with another "
            f"{', '.join(changed)}; resume it unchanged or name a new search.study"
        )
    trials = storage.get_all_trials(study_id, deepcopy=False)
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "error", "left RUNNING by a stopped search")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            log.warning("trial %d was left RUNNING by a stopped search: failed", trial.number)
    return len(trials)
