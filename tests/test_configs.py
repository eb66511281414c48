"""Every option of every config group composes, resolves and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.cli.config_dir import CONFIG_DIR
from compress.data import dataset_names
from compress.errors import ConfigError
from compress.methods import method_names
from compress.models import build_model, model_names
from compress.run.pipeline import Plan
from compress.tracking.config import TrackingConfig
from tests.support import compose_config

GROUPS = (
    "model", "dataset", "method", "schedule", "tracking", "analysis", "distill", "augment",
)  # fmt: skip

#: An input shape each model is meant for.
TYPICAL_INPUT = {
    "mlp": (1, 8, 8),
    "lenet300": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "small_cnn": (1, 8, 8),
    "resnet20": (3, 32, 32),
    "resnet56": (3, 32, 32),
    "torchvision": (3, 32, 32),
    "rnn": (1, 8, 8),
    "vit": (1, 28, 28),
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


ALL_CHOICES = [(group, option) for group in GROUPS for option in options(group)]


@pytest.mark.parametrize(("group", "option"), ALL_CHOICES, ids=[f"{g}={o}" for g, o in ALL_CHOICES])
def test_every_option_composes_and_validates(tmp_path: Path, group: str, option: str) -> None:
    cfg = compose_config(tmp_path, f"{group}={option}")
    plan = Plan.from_config(cfg)
    assert plan.run_dir.is_absolute() and plan.outputs.is_absolute()
    if group == "model" and option == "custom":  # the user names the class
        with pytest.raises(ConfigError, match=r"model\._target_=pkg\.module\.Class"):
            build_model(cfg["model"], (1, 8, 8), 10)
    elif group == "model":
        model = build_model(cfg["model"], TYPICAL_INPUT[option], 10)
        assert sum(p.numel() for p in model.parameters()) > 0
    if group == "tracking" and plan.tracking.enabled and plan.tracking.uri.startswith("sqlite"):
        assert plan.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db"


def compose_method_name(option: str) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"method={option}"]).method.name


def test_config_options_match_the_registries() -> None:
    assert set(options("model")) == set(model_names())
    assert set(options("dataset")) == set(dataset_names())
    method_options = {o: compose_method_name(o) for o in options("method")}
    assert set(method_options.values()) == set(method_names())


def test_finetune_inherits_the_training_recipe(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, "schedule.train.batch_size=32")
    assert cfg["schedule"]["finetune"]["batch_size"] == 32


@pytest.mark.parametrize(
    ("resume", "in_sweep", "skips"),
    [("auto", True, True), ("auto", False, False), (True, False, True), (False, True, False)],
)
def test_resume_auto_skips_finished_configs_only_in_sweeps(
    resume: bool | str, in_sweep: bool, skips: bool
) -> None:
    tracking = TrackingConfig(uri="sqlite:///x.db", resume=resume)
    assert tracking.resumes(in_sweep=in_sweep) is skips
    assert TrackingConfig(enabled=False, resume=True).resumes(in_sweep=True) is False


def test_resume_takes_only_auto_or_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"tracking\.resume must be auto, true or false"):
        TrackingConfig(uri="sqlite:///x.db", resume="always")
