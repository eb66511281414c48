"""Structured channel pruning: physical removal, criteria, schedules, artifacts, bad input."""

from __future__ import annotations

import copy
import csv
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.artifact.store import FORMAT, RESHAPED_FORMAT, load_artifact, save_artifact
from compress.data import load_dataset
from compress.errors import ConfigError
from compress.measure import count_macs, count_params, torch_threads
from compress.methods import MethodContext, apply_method, parse_method
from compress.methods.channels import ChannelPruning, ChannelStage
from compress.models import build_model
from compress.run.pipeline import run
from tests.support import QUICK, compose_config

CIFAR = (3, 32, 32)
MODELS = {
    "mlp": ({"name": "mlp"}, (1, 8, 8)),
    "lenet5": ({"name": "lenet5"}, (1, 28, 28)),
    "small_cnn": ({"name": "small_cnn"}, (1, 8, 8)),
    "resnet20": ({"name": "resnet20"}, CIFAR),
    "resnet56": ({"name": "resnet56"}, CIFAR),
    "resnet18": ({"name": "torchvision", "arch": "resnet18"}, CIFAR),
    "mobilenet_v2": ({"name": "torchvision", "arch": "mobilenet_v2"}, CIFAR),
}


@functools.cache
def _dense(name: str) -> nn.Module:
    cfg, shape = MODELS[name]
    torch.manual_seed(0)
    return build_model(cfg, shape, 10)


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A fresh copy of model `name` (each is built once per session: torchvision's are slow)."""
    return copy.deepcopy(_dense(name)), MODELS[name][1]


def stage_for(model: nn.Module, shape: tuple[int, ...], data=None, **options) -> ChannelStage:
    config = parse_method({"name": "prune_channels", **options})
    stage = apply_method(model, config, MethodContext(shape, data, batch_size=32))
    assert isinstance(stage, ChannelStage)
    return stage


def pruned(name: str, progress: float = 1.0, **options) -> tuple[nn.Module, ChannelStage]:
    model, shape = build(name)
    stage = stage_for(model, shape, **options)
    stage.update(progress)
    return model, stage


def move_bn_statistics(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Two training-mode forwards, so running statistics differ from their defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape))
    model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these models are small, and on a busy 2-core machine torch's
    spinning worker threads made this module ten times slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def fake_data():
    return load_dataset({"name": "fake", "shape": [1, 8, 8], "num_train": 128, "num_test": 32})


# --- every model really shrinks -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_shrinks_and_still_forwards(name: str) -> None:
    model, shape = build(name)
    params, macs = count_params(model), count_macs(model, shape).dense
    stage = stage_for(model, shape, amount=0.5)
    assert stage.update(1.0) is True

    kept = stage.kept()
    assert stage.prunable and stage.classifier_path not in stage.prunable
    for path in stage.prunable:
        # Half of every prunable layer's outputs are gone from the tensors themselves.
        assert kept[path] == stage.original[path] // 2
        assert stage.layers[path].weight.shape[0] == kept[path]
    assert stage.summary()["channels_removed"] == pytest.approx(0.5, abs=0.01)
    assert count_params(model) < params / 2.5
    assert count_macs(model, shape).dense < macs / 2.5
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_classifier_keeps_its_outputs_and_loses_inputs() -> None:
    model, stage = pruned("lenet5")
    assert stage.classifier_path == "classifier.2"
    assert (model.classifier[2].in_features, model.classifier[2].out_features) == (250, 10)
    assert model.classifier[0].in_features == 25 * 4 * 4  # flatten of the halved conv
    assert stage.removed_shares() == {"features.0": 0.5, "features.2": 0.5, "classifier.0": 0.5}


def test_apply_method_applies_nothing_before_update() -> None:
    model, shape = build("resnet20")
    move_bn_statistics(model, shape)
    model.train()
    before = copy.deepcopy(model.state_dict())
    stage = stage_for(model, shape)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert stage.summary() == {"channels_removed": 0.0}
    assert stage.update(0.0) is False
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# --- importance criteria ------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "bn_scale", "random"])
def test_each_importance_removes_half_the_channels(importance: str, fake_data) -> None:
    model, shape = build("small_cnn")
    move_bn_statistics(model, shape)
    stats = copy.deepcopy(model.features[0][1].running_mean)
    stage = stage_for(model, shape, fake_data, importance=importance)
    assert stage.update(1.0) is True
    assert stage.summary()["channels_removed"] == 0.5
    assert all(p.grad is None for p in model.parameters())  # Taylor's gradients are dropped
    kept_stats = model.features[0][1].running_mean
    assert set(kept_stats.tolist()) <= set(stats.tolist())  # survivors, not re-estimated
    with torch.no_grad():
        assert model(fake_data.test.x).shape == (32, 10)


def _silence_channels(model: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d, channels) -> None:
    with torch.no_grad():
        conv.weight[channels] *= 1e-3
        bn.weight[channels] = 1e-3


def test_magnitude_and_bn_scale_remove_the_weakest_channels() -> None:
    weak = list(range(0, 16, 2))
    for importance in ("l1", "l2", "bn_scale"):
        model, shape = build("small_cnn")
        conv, bn = model.features[0][0], model.features[0][1]
        with torch.no_grad():
            bn.weight.fill_(1.0)
        _silence_channels(model, conv, bn, weak)
        strong = conv.weight[1::2].detach().clone()
        stage_for(model, shape, importance=importance).update(1.0)
        assert torch.equal(conv.weight, strong), importance
        assert torch.all(bn.weight == 1.0), importance


def test_taylor_uses_gradients_of_the_data(fake_data) -> None:
    model, shape = build("small_cnn")
    # Channels that never reach the loss have zero gradient: Taylor removes them first.
    conv = model.features[0][0]
    with torch.no_grad():
        conv.weight[8:] = 0.0
    stage_for(model, shape, fake_data, importance="taylor").update(1.0)
    assert conv.weight.abs().sum(dim=(1, 2, 3)).gt(0).all()


def test_random_importance_follows_its_seed() -> None:
    def weights(seed: int) -> torch.Tensor:
        model, _ = pruned("small_cnn", importance="random", seed=seed)
        return model.features[0][0].weight.detach()

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


def test_taylor_without_data_is_a_config_error() -> None:
    model, shape = build("small_cnn")
    with pytest.raises(ConfigError, match=r"taylor.*no data"):
        stage_for(model, shape, importance="taylor")


def test_bn_scale_on_a_model_without_batch_norm_is_a_config_error() -> None:
    model, shape = build("lenet5")
    with pytest.raises(ConfigError, match=r"bn_scale.*no batch norm"):
        stage_for(model, shape, importance="bn_scale")


# --- scope, overrides, ignore, round_to ---------------------------------------------------------


def test_global_scope_prunes_layers_unevenly() -> None:
    model, shape = build("lenet5")
    conv0, conv1 = model.features[0], model.features[2]
    with torch.no_grad():  # 15 of conv0's 20 channels barely matter, on both sides
        conv0.weight[5:] *= 1e-3
        conv0.bias[5:] *= 1e-3
        conv1.weight[:, 5:] *= 1e-3
    stage = stage_for(model, shape, scope="global")
    stage.update(1.0)
    shares = stage.removed_shares()
    assert shares["features.0"] >= 0.75
    assert max(shares.values()) - min(shares.values()) > 0.2
    total = sum(stage.original[p] for p in stage.prunable)  # 20 + 50 + 500
    assert sum(stage.kept()[p] for p in stage.prunable) == total - total // 2


def test_layer_overrides_and_ignore() -> None:
    model, stage = pruned("lenet5", layers={"features.*": 0.8}, ignore=["features.0"])
    assert stage.kept() == {
        "features.0": 20,
        "features.2": 10,
        "classifier.0": 250,
        "classifier.2": 10,
    }
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_an_override_applies_to_the_whole_coupled_group() -> None:
    _, stage = pruned("resnet20", layers={"layer1.0.conv2": 0.25})
    kept = stage.kept()
    for path in ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"):
        assert kept[path] == 12  # added together by the residuals: 16 * 0.75
    assert kept["layer1.0.conv1"] == 8 and kept["layer2.0.conv2"] == 16


def test_ignoring_a_layer_keeps_the_layers_coupled_to_it() -> None:
    _, stage = pruned("resnet20", ignore=["layer1.0.conv2"])
    kept = stage.kept()
    # conv1 and every layer1 block output are added together: one group, left whole.
    for path in ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"):
        assert kept[path] == 16
    assert kept["layer1.0.conv1"] == 8 and kept["layer3.0.conv2"] == 32


def test_round_to_keeps_multiples() -> None:
    _, stage = pruned("small_cnn", amount=0.3, round_to=8)
    assert stage.kept() == {
        "features.0.0": 8,
        "features.1.0": 16,
        "features.3.0": 40,
        "classifier": 10,
    }


# --- progressive updates ------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [[0.5, 1.0], [0.25, 0.5, 0.75, 1.0]])
def test_progressive_updates_end_where_a_single_update_does(steps: list[float]) -> None:
    _, single = pruned("resnet20")
    model, shape = build("resnet20")
    stage = stage_for(model, shape)
    for progress in steps:
        assert stage.update(progress) is True
        # Each step is a share of the ORIGINAL channels: progress x amount of them gone.
        for path in stage.prunable:
            assert stage.kept()[path] == int(stage.original[path] * (1 - 0.5 * progress))
    assert stage.kept() == single.kept()


def test_progressive_global_updates_reach_the_same_total() -> None:
    # LeNet-5 has no coupled layers, so its layers' channels are the ranking's channels.
    _, single = pruned("lenet5", scope="global")
    model, shape = build("lenet5")
    stage = stage_for(model, shape, scope="global")
    stage.update(0.5)
    assert stage.summary()["channels_removed"] == pytest.approx(0.25, abs=1 / 570)
    stage.update(1.0)
    assert stage.summary()["channels_removed"] == single.summary()["channels_removed"]


def test_update_reports_whether_parameters_were_replaced() -> None:
    model, shape = build("small_cnn")
    stage = stage_for(model, shape)
    assert stage.update(0.0) is False
    assert stage.update(1.0) is True
    assert stage.update(1.0) is False
    assert stage.update(0.5) is False  # progress never goes back
    assert stage.finalize(model) is model


def test_layer_table(tmp_path: Path) -> None:
    _, stage = pruned("lenet5")
    (table,) = stage.artifacts(tmp_path)
    assert table.name == "layer_channels.csv"
    rows = list(csv.DictReader(table.open()))
    assert [r["layer"] for r in rows] == [
        "features.0",
        "features.2",
        "classifier.0",
        "classifier.2",
    ]
    assert rows[1] == {"layer": "features.2", "original": "50", "kept": "25", "removed": "0.500000"}
    assert rows[3]["kept"] == "10" and float(rows[3]["removed"]) == 0


# --- artifacts of shrunk models -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "lenet5"])
def test_artifact_round_trip_of_a_shrunk_model(name: str, tmp_path: Path) -> None:
    cfg, shape = MODELS[name]
    model, _ = build(name)
    kwargs = {"model_config": cfg, "input_shape": shape, "num_classes": 10}
    dense_size = save_artifact(model, tmp_path / "dense.pt", **kwargs)
    stage_for(model, shape).update(1.0)
    move_bn_statistics(model, shape)
    size = save_artifact(model, tmp_path / "shrunk.pt", **kwargs)
    assert size < dense_size / 2.5

    loaded = load_artifact(tmp_path / "shrunk.pt")
    x = torch.randn(8, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    state = model.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in loaded.state_dict().items())

    payload = torch.load(tmp_path / "shrunk.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == RESHAPED_FORMAT
    assert payload["structure"]  # only the modules that changed
    dense = torch.load(tmp_path / "dense.pt", map_location="cpu", weights_only=True)
    assert dense["format"] == FORMAT and "structure" not in dense


def test_saving_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    model, shape = build("small_cnn")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    save_artifact(
        model,
        tmp_path / "m.pt",
        model_config={"name": "small_cnn"},
        input_shape=shape,
        num_classes=10,
    )
    assert torch.equal(torch.rand(3), expected)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"amount": 1.0}, r"method.amount must be in \[0, 1\), got 1.0"),
        ({"amount": -0.1}, r"method.amount must be in \[0, 1\)"),
        ({"importance": "fisher"}, "importance 'fisher' unknown; choose one of: l1, l2, taylor"),
        ({"scope": "layer"}, "scope 'layer' unknown; choose one of: uniform, global"),
        ({"layers": {"fc": 1.5}}, r"method.layers\['fc'\] must be in \[0, 1\)"),
        ({"round_to": 0}, "round_to must be >= 1"),
        ({"taylor_batches": 0}, "taylor_batches must be >= 1"),
        ({"imprtance": "l1"}, "unknown option"),
    ],
)
def test_bad_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_method({"name": "prune_channels", **options})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"layers": {"conv*": 0.3}},
            r"method.layers\['conv\*'\]: pattern 'conv\*' matches no prunable layer; "
            r"prunable layers: features.0, features.2, classifier.0$",
        ),
        ({"ignore": ["fc"]}, r"method.ignore: pattern 'fc' matches no prunable layer; prunable"),
        (
            {"layers": {"classifier.2": 0.3}},
            r"matches classifier.2, which cannot be structurally pruned: "
            r"it produces the 10 class logits",
        ),
        ({"layers": {"classifier.*": 0.3}}, "classifier.2, which cannot be structurally pruned"),
    ],
)
def test_bad_layer_patterns_are_config_errors(options: dict, message: str) -> None:
    model, shape = build("lenet5")
    with pytest.raises(ConfigError, match=message) as error:
        stage_for(model, shape, **options)
    assert "\n" not in str(error.value)


def test_ignoring_the_classifier_is_harmless() -> None:
    _, stage = pruned("lenet5", ignore=["classifier.2"])
    assert stage.summary()["channels_removed"] == 0.5


def test_the_yaml_defaults_are_the_config_defaults(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, "method=prune_channels")
    assert parse_method(cfg["method"]) == ChannelPruning()


# --- end to end ---------------------------------------------------------------------------------


def test_pipeline_prunes_channels_end_to_end(tmp_path: Path) -> None:
    overrides = (*QUICK, "dataset=fake", "method=prune_channels", "tracking=none")
    result = run(compose_config(tmp_path, *overrides))
    m = result.metrics
    assert m["macs"] < m["baseline/macs"] / 2.5
    assert m["params"] < m["baseline/params"] / 2.5
    assert m["bytes"] < m["baseline/bytes"] / 2
    assert m["channels_removed"] == 0.5
    assert (result.run_dir / "layer_channels.csv").exists()
    loaded = load_artifact(result.artifact)
    assert count_params(loaded) == m["params"]


def test_pipeline_rejects_a_bad_pattern_before_training(tmp_path: Path) -> None:
    overrides = (*QUICK, "dataset=fake", "method=prune_channels", "tracking=none")
    with pytest.raises(ConfigError, match="classifier, which cannot be structurally pruned"):
        run(compose_config(tmp_path, *overrides, "+method.layers.classifier=0.5"))
    assert not (tmp_path / "run").exists()
