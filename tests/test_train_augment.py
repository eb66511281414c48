"""Training-batch augmentation: seeded, on the device, in training only."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from compress.data import DataBundle
from compress.data.augment import AugmentConfig, NoAugment, parse_augment
from compress.errors import ConfigError
from compress.models import build_model
from compress.run.baseline import baseline_key
from compress.run.pipeline import Plan, run
from compress.run.plan import config_hash
from compress.train.loop import accuracy, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = ("none", "flip_crop", "shift")
RUNTIME = RuntimeConfig(progress=False)


def images(n: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 10, 12, generator=torch.Generator().manual_seed(1)).to(dtype)


def test_the_registry_matches_the_config_files() -> None:
    assert set(AugmentConfig.registry.names()) == set(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_and_device_are_kept(option: str, dtype: torch.dtype) -> None:
    x = images(dtype=dtype)
    out = parse_augment({"name": option}).apply(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def test_shift_moves_content_by_at_most_two_pixels() -> None:
    x = images(64)
    out = parse_augment({"name": "shift"}).apply(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    h, w = x.shape[-2:]
    moved = 0
    for i in range(len(x)):
        offsets = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert offsets, f"image {i} is not a translation of up to 2 pixels"
        moved += offsets[0] != (2, 2)
    assert moved > len(x) // 2  # most images really move


def test_flip_crop_is_a_flip_of_a_crop_of_the_padded_input() -> None:
    x = images(64)
    out = parse_augment({"name": "flip_crop"}).apply(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (4, 4, 4, 4))
    h, w = x.shape[-2:]
    flipped = 0
    for i in range(len(x)):
        found = set()
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy : dy + h, dx : dx + w]
                if torch.equal(out[i], crop):
                    found.add(False)
                if torch.equal(out[i], crop.flip(-1)):
                    found.add(True)
        assert found, f"image {i} is not a (flipped) crop of the padded input"
        flipped += True in found and False not in found
    assert 0 < flipped < len(x)


@pytest.mark.parametrize("option", ["flip_crop", "shift"])
def test_the_same_seed_gives_the_same_batch(option: str) -> None:
    augment, x = parse_augment({"name": option}), images()
    first = augment.apply(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment.apply(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment.apply(x, torch.Generator().manual_seed(4)))


def trained(data: DataBundle, augment: AugmentConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"}, data.input_shape, data.num_classes)
    recipe = TrainRecipe(epochs=1, batch_size=64, augment=augment)
    fit(model, data, recipe, RUNTIME, seed=seed, label="t")
    return model


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_augmentation_changes_training_not_evaluation(data: DataBundle) -> None:
    rows = data.train.x.clone()
    plain = trained(data, NoAugment())
    shifted = trained(data, parse_augment({"name": "shift"}))
    again = trained(data, parse_augment({"name": "shift"}))
    assert not torch.equal(weights(plain), weights(shifted))
    assert torch.equal(weights(shifted), weights(again))  # seeded
    assert torch.equal(data.train.x, rows)  # the split itself is never changed


@pytest.mark.parametrize("option", OPTIONS)
def test_validation_accuracy_is_measured_unaugmented(data: DataBundle, option: str) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"}, data.input_shape, data.num_classes)
    recipe = TrainRecipe(epochs=1, batch_size=64, augment=parse_augment({"name": option}))
    stats = fit(model, data, recipe, RUNTIME, seed=0, label="t")
    # The epoch's validation accuracy is the plain accuracy of the model it ended with.
    assert stats[-1].val_acc == accuracy(model, data.val)


def test_baseline_key_changes_with_augment_only_when_on(data: DataBundle) -> None:
    def key(recipe: TrainRecipe) -> str:
        return baseline_key({"name": "mlp"}, data, recipe, 0, RUNTIME, torch.device("cpu"))

    base = TrainRecipe(epochs=2)
    assert key(dataclasses.replace(base, augment=NoAugment())) == key(base)
    assert "augment" not in base.key()
    shift = dataclasses.replace(base, augment=parse_augment({"name": "shift"}))
    wider = dataclasses.replace(base, augment=parse_augment({"name": "shift", "pixels": 3}))
    assert len({key(base), key(shift), key(wider)}) == 3


def test_config_hash_is_unchanged_for_none(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path)
    before = {k: v for k, v in cfg.items() if k != "augment"}
    assert config_hash(cfg) == config_hash(before)
    assert config_hash(compose_config(tmp_path, "augment=shift")) != config_hash(cfg)


def test_plan_carries_augment_to_both_recipes(tmp_path: Path) -> None:
    plan = Plan.from_config(compose_config(tmp_path, "augment=flip_crop", "augment.padding=2"))
    assert plan.augment == plan.train.augment == plan.finetune.augment
    assert plan.augment.key() == {"name": "flip_crop", "padding": 2, "flip": True}
    assert not Plan.from_config(compose_config(tmp_path)).train.augment.enabled


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.name=blur", r"unknown augment 'blur'; choose one of: .*shift"),
        ("+augment.size=3", r"augment: unknown option\(s\) size"),
        ("augment.pixels=-1", r"augment.pixels must be >= 0"),
        ("+schedule.train.augment=shift", r"schedule.train.augment: .*augment group"),
    ],
)
def test_bad_augment_is_one_line(tmp_path: Path, override: str, message: str) -> None:
    overrides = ["augment=shift", override]
    with pytest.raises(ConfigError, match=message) as error:
        Plan.from_config(compose_config(tmp_path, *overrides))
    assert "\n" not in str(error.value)


def test_non_image_data_is_refused_in_one_line() -> None:
    # Built-in datasets are images; a user's own (a custom Dataset) need not be.
    with pytest.raises(ConfigError, match=r"augment=shift needs image batches"):
        parse_augment({"name": "shift"}).check((10, 64))
    parse_augment({"name": "none"}).check((10, 64))


def test_pipeline_end_to_end_with_shift_on_digits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_config(
        tmp_path, *QUICK, "tracking=none", "augment=shift", "distill=kd",
        "schedule.train.epochs=2", "schedule.finetune.epochs=1",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="compress.run.steps"):
        result = run(cfg)
    assert result.metrics["acc"] > 0.3
    assert "cache_teacher is off" in caplog.text


def test_channels_last_sets_the_strides_of_one_channel_batches_too() -> None:
    from compress.train.loop import prepare_inputs

    for channels in (1, 3):
        x = torch.randn(4, channels, 5, 6)
        out = prepare_inputs(x, RuntimeConfig(channels_last=True))
        assert torch.equal(out, x) and out.stride(1) == 1
        assert out.is_contiguous(memory_format=torch.channels_last)
