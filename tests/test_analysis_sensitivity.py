"""Per-layer pruning sensitivity: the measurement, restoring the model, amounts, files."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from torch import nn

from compress.analysis.sensitivity import (
    Row,
    SensitivityConfig,
    amounts_for_target,
    layer_sensitivity,
    plot,
    write_csv,
)
from compress.data import DataBundle, load_dataset
from compress.errors import ConfigError
from compress.methods.masks import keep_top, layer_amounts, prunable_weights
from compress.models import build_model
from compress.train.loop import accuracy, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe

LEVELS = (0.0, 0.5, 0.9, 0.999)


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return load_dataset({"name": "fake", "num_train": 512, "num_test": 256, "noise": 1.0})


@pytest.fixture(scope="module")
def trained(data: DataBundle) -> nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [32, 16]}, data.input_shape, data.num_classes)
    fit(
        model,
        data,
        TrainRecipe(epochs=4, batch_size=64, lr=0.05),
        RuntimeConfig(progress=False),
        seed=0,
        label="sensitivity-test",
    )
    return model


@pytest.fixture(scope="module")
def measured(trained: nn.Module, data: DataBundle) -> tuple[float, list[Row]]:
    return layer_sensitivity(trained, data, SensitivityConfig(levels=LEVELS))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weighted_sparsity(amounts: dict[str, float], rows: list[Row]) -> float:
    sizes = {r.layer: r.weights for r in rows}
    return sum(round(a * sizes[p]) for p, a in amounts.items()) / sum(sizes.values())


def test_one_row_per_layer_and_level_and_model_restored_exactly(
    trained: nn.Module, data: DataBundle
) -> None:
    before = _state(trained)
    trained.train()
    dense, rows = layer_sensitivity(trained, data, SensitivityConfig(levels=LEVELS))

    weights = prunable_weights(trained)
    assert [(r.layer, r.level) for r in rows] == [(p, lv) for p in weights for lv in LEVELS]
    assert all(r.weights == weights[r.layer].numel() for r in rows)
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trained.training  # eval mode was only for the measurement
    assert dense == accuracy(trained, data.val) > 0.5
    assert all(0 <= r.acc <= 1 for r in rows)


def test_level_zero_is_dense_and_pruning_really_happens(
    trained: nn.Module, data: DataBundle, measured: tuple[float, list[Row]]
) -> None:
    dense, rows = measured
    assert all(r.acc == dense for r in rows if r.level == 0)
    # 0.999 of the output layer's 170 weights rounds to all of them: only its bias is
    # left, so every sample gets the bias's class.
    head = list(prunable_weights(trained))[-1]
    bias = dict(trained.named_modules())[head].bias
    chance = (data.val.y == bias.argmax()).float().mean().item()
    (emptied,) = [r for r in rows if r.layer == head and r.level == 0.999]
    assert emptied.acc == pytest.approx(chance)
    assert emptied.acc < dense


def test_empty_validation_split_falls_back_to_test(
    trained: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    no_val = load_dataset({"name": "fake", "num_train": 128, "num_test": 64, "val_fraction": 0})
    assert len(no_val.val) == 0
    with caplog.at_level(logging.WARNING, logger="compress.analysis.sensitivity"):
        dense, rows = layer_sensitivity(trained, no_val, SensitivityConfig(levels=(0.5,)))
    assert dense == accuracy(trained, no_val.test)
    assert len(rows) == len(prunable_weights(trained))
    assert any("validation split is empty" in m for m in caplog.messages)


def test_test_split_is_measured_when_asked(trained: nn.Module, data: DataBundle) -> None:
    dense, _ = layer_sensitivity(trained, data, SensitivityConfig(levels=(0.5,), split="test"))
    assert dense == accuracy(trained, data.test)


def test_amounts_prefer_the_tolerant_layer() -> None:
    rows = [
        Row("tolerant", 0.5, 0.90, 1000),
        Row("tolerant", 0.9, 0.89, 1000),
        Row("fragile", 0.5, 0.80, 1000),
        Row("fragile", 0.9, 0.50, 1000),
    ]
    assert amounts_for_target(0.90, rows, 0.2) == {"tolerant": 0.5, "fragile": 0.0}
    assert amounts_for_target(0.90, rows, 0.45) == {"tolerant": 0.9, "fragile": 0.0}
    assert amounts_for_target(0.90, rows, 0.6) == {"tolerant": 0.9, "fragile": 0.5}
    assert amounts_for_target(0.90, rows, 0.85) == {"tolerant": 0.9, "fragile": 0.9}


def test_amounts_weigh_layers_by_their_size() -> None:
    # Sparsity counts weights, not layers: 0.8 of the big layer alone is 0.72 overall,
    # so the fragile small layer stays dense; with equal drops both are pruned alike.
    rows = [Row("big", 0.8, 0.85, 9000), Row("small", 0.8, 0.85, 1000)]
    assert amounts_for_target(0.9, rows, 0.7) == {"big": 0.8, "small": 0.8}
    rows = [Row("big", 0.8, 0.88, 9000), Row("small", 0.8, 0.80, 1000)]
    assert amounts_for_target(0.9, rows, 0.7) == {"big": 0.8, "small": 0.0}


@pytest.mark.parametrize("target", [0.0, 0.3, 0.6, 0.85])
def test_amounts_reach_the_target_on_a_real_table(
    trained: nn.Module, measured: tuple[float, list[Row]], target: float
) -> None:
    dense, rows = measured
    amounts = amounts_for_target(dense, rows, target)
    weights = prunable_weights(trained)
    assert list(amounts) == list(weights)
    assert all(a in (0.0, *LEVELS) for a in amounts.values())
    assert _weighted_sparsity(amounts, rows) >= target
    # They plug into method.layers: every layer has its own amount, none is left to the
    # pool, and masks made with them reach the target.
    own, pool = layer_amounts(list(weights), 0.8, amounts, ())
    assert pool == []
    pruned = sum(int((~keep_top(weights[p].detach().abs(), a)).sum()) for p, a in own.items())
    assert pruned / sum(w.numel() for w in weights.values()) >= target


def test_unreachable_target_names_the_maximum() -> None:
    rows = [Row("a", 0.5, 0.8, 300), Row("a", 0.9, 0.7, 300), Row("b", 0.5, 0.8, 100)]
    with pytest.raises(ConfigError, match=r"unreachable.*0\.8000") as err:
        amounts_for_target(0.9, rows, 0.85)  # (0.9 * 300 + 0.5 * 100) / 400 = 0.8
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("target", [1.0, -0.1, float("nan")])
def test_bad_target_for_amounts(target: float) -> None:
    with pytest.raises(ConfigError, match="target"):
        amounts_for_target(0.9, [Row("a", 0.5, 0.8, 10)], target)


def test_levels_are_sorted_and_unique() -> None:
    config = SensitivityConfig(levels=[0.9, 0.5, 0.5, 0])  # type: ignore[arg-type]
    assert config.levels == (0.0, 0.5, 0.9)
    assert SensitivityConfig.parse({"levels": [0.7, 0.3], "target": 0.5}).levels == (0.3, 0.7)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"levels": ()}, "sensitivity.levels must not be empty"),
        ({"levels": (0.5, 1.0)}, r"sensitivity.levels must be numbers in \[0, 1\)"),
        ({"levels": (-0.1,)}, r"sensitivity.levels must be numbers in \[0, 1\)"),
        ({"levels": (True,)}, r"sensitivity.levels must be numbers"),
        ({"split": "train"}, "sensitivity.split 'train' unknown; choose one of: val, test"),
        ({"target": 1.0}, r"sensitivity.target must be in \[0, 1\)"),
        ({"criterion": "random"}, "sensitivity.criterion 'random' unknown"),
    ],
)
def test_bad_config_is_a_one_line_error(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        SensitivityConfig(**values)
    assert "\n" not in str(err.value)


def test_parse_rejects_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        SensitivityConfig.parse({"levles": [0.5]})
    with pytest.raises(ConfigError, match=r"sensitivity\.levels"):
        SensitivityConfig.parse({"levels": ["high"]})


def test_model_without_prunable_layers_is_a_config_error(data: DataBundle) -> None:
    with pytest.raises(ConfigError, match="no conv or linear layer"):
        layer_sensitivity(nn.Flatten(), data, SensitivityConfig())


def test_csv_table(tmp_path, measured: tuple[float, list[Row]]) -> None:
    dense, rows = measured
    path = write_csv(dense, rows, tmp_path / "sensitivity.csv")
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["layer", "weights", "level", "acc", "drop"]
    assert len(table) == 1 + len(rows)
    for line, row in zip(table[1:], rows, strict=True):
        assert line[0] == row.layer and int(line[1]) == row.weights
        assert float(line[2]) == row.level
        assert float(line[3]) == pytest.approx(row.acc, abs=1e-6)
        assert float(line[4]) == pytest.approx(dense - row.acc, abs=1e-6)


def test_plot_is_a_png(tmp_path, measured: tuple[float, list[Row]]) -> None:
    dense, rows = measured
    path = plot(dense, rows, tmp_path / "sensitivity.png")
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(content) > 10_000
