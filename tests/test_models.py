"""Model registry: shapes, parameter counts, option and shape errors, determinism."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from compress.errors import ConfigError
from compress.models import ModelConfig, build_model, model_names

DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_model_names() -> None:
    assert model_names() == (
        "custom", "lenet300", "lenet5", "mlp", "resnet20", "resnet56", "rnn", "small_cnn",
        "vit", "torchvision",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        ({"name": "mlp"}, DIGITS),
        ({"name": "mlp", "hidden": [32], "dropout": 0.5, "batch_norm": True}, DIGITS),
        ({"name": "lenet300"}, DIGITS),
        ({"name": "lenet300"}, MNIST),
        ({"name": "lenet5"}, MNIST),
        ({"name": "small_cnn"}, DIGITS),
        ({"name": "small_cnn"}, CIFAR),
        ({"name": "resnet20"}, CIFAR),
        ({"name": "resnet56"}, CIFAR),
        ({"name": "torchvision", "arch": "resnet18"}, CIFAR),
        ({"name": "torchvision", "arch": "mobilenet_v2"}, CIFAR),
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v.get("arch", v["name"]),
)
def test_builds_and_forwards(cfg: dict, shape: tuple[int, ...]) -> None:
    model = build_model(cfg, shape, 7)
    assert all(module.training for module in model.modules())
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "shape", "low", "high"),
    [
        ("lenet300", MNIST, 266_610, 266_610),  # Han et al. 2015
        ("lenet5", MNIST, 431_080, 431_080),  # Han et al. 2015, Caffe LeNet-5
        ("resnet20", CIFAR, 270_000, 275_000),  # He et al. 2016: 0.27M + projections
        ("resnet56", CIFAR, 850_000, 860_000),  # He et al. 2016: 0.85M + projections
        ("small_cnn", DIGITS, 15_000, 30_000),
    ],
)
def test_parameter_counts(name: str, shape: tuple[int, ...], low: int, high: int) -> None:
    assert low <= n_params(build_model({"name": name}, shape, 10)) <= high


def test_lenet5_fc1_follows_input_shape() -> None:
    model = build_model({"name": "lenet5"}, MNIST, 10)
    assert linears(model)[0].in_features == 800
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1  # Caffe LeNet: ReLU only after fc1
    bigger = build_model({"name": "lenet5"}, (3, 32, 32), 10)
    assert linears(bigger)[0].in_features == 50 * 5 * 5


def test_options_take_effect() -> None:
    mlp = build_model({"name": "mlp", "hidden": [20, 10], "batch_norm": True}, DIGITS, 4)
    widths = [m.out_features for m in linears(mlp)]
    assert widths == [20, 10, 4]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mlp.modules()) == 2
    dropout = build_model({"name": "mlp", "dropout": 0.3}, DIGITS, 4)
    assert [m.p for m in dropout.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    cnn = build_model({"name": "small_cnn", "channels": [4, 8]}, DIGITS, 4)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [4, 8]
    narrow = build_model({"name": "resnet20", "width": 8}, CIFAR, 10)
    wide = build_model({"name": "resnet20"}, CIFAR, 10)
    assert n_params(narrow) < n_params(wide) / 3


def test_resnet_uses_projection_shortcuts() -> None:
    model = build_model({"name": "resnet20"}, CIFAR, 10)
    shortcuts = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in shortcuts] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]


def test_dry_run_leaves_batchnorm_stats_and_train_mode() -> None:
    model = build_model({"name": "resnet20"}, CIFAR, 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for bn in bns:
        assert bn.training
        assert int(bn.num_batches_tracked) == 0
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test_import_does_not_load_torchvision() -> None:
    code = "import sys, compress.models; assert 'torchvision' not in sys.modules, 'loaded'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_deterministic_under_seed() -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model({"name": "small_cnn"}, DIGITS, 10).state_dict()

    first, again, other = build(0), build(0), build(1)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_does_not_reseed() -> None:
    torch.manual_seed(0)
    a = build_model({"name": "mlp"}, DIGITS, 10).state_dict()
    b = build_model({"name": "mlp"}, DIGITS, 10).state_dict()
    assert not torch.equal(a["1.weight"], b["1.weight"])


def one_line_error(cfg: dict, shape: tuple[int, ...], num_classes: int = 10) -> str:
    with pytest.raises(ConfigError) as info:
        build_model(cfg, shape, num_classes)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_name() -> None:
    message = one_line_error({"name": "foo"}, DIGITS)
    assert message.startswith("unknown model 'foo'; choose one of: custom, lenet300, lenet5, mlp")
    assert "no 'name'" in one_line_error({}, DIGITS)


def test_unknown_option() -> None:
    message = one_line_error({"name": "mlp", "hiden": [8]}, DIGITS)
    assert "'hiden'" in message
    assert "hidden, dropout, batch_norm" in message


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "mlp", "hidden": "64"},
        {"name": "mlp", "hidden": [64, 0]},
        {"name": "mlp", "dropout": 1.0},
        {"name": "mlp", "batch_norm": "yes"},
        {"name": "small_cnn", "channels": []},
        {"name": "resnet20", "width": 0},
    ],
)
def test_bad_option_values(cfg: dict) -> None:
    option = next(k for k in cfg if k != "name")
    assert option in one_line_error(cfg, DIGITS if cfg["name"] != "resnet20" else CIFAR)


def test_lenet5_too_small_input() -> None:
    message = one_line_error({"name": "lenet5"}, DIGITS)
    assert message.startswith("model 'lenet5' does not fit input shape (1, 8, 8): ")
    assert "Kernel size" in message  # torch's own reason follows the prefix


def test_conv_model_on_flat_input() -> None:
    assert "(channels, height, width)" in one_line_error({"name": "small_cnn"}, (64,))


def test_torchvision_errors() -> None:
    message = one_line_error({"name": "torchvision", "arch": "resnet81"}, CIFAR)
    assert "unknown torchvision arch 'resnet81'" in message
    assert "resnet18" in message
    assert "list_models" in message
    weights = one_line_error({"name": "torchvision", "weights": "IMAGENET9K"}, CIFAR)
    assert (
        "neither a file nor a weight of resnet18 (its weights: DEFAULT, IMAGENET1K_V1)" in weights
    )
    gray = one_line_error({"name": "torchvision", "arch": "resnet18"}, MNIST)
    assert gray.startswith("model 'torchvision' does not fit input shape (1, 28, 28): ")


def test_bad_num_classes_and_shape() -> None:
    assert "num_classes" in one_line_error({"name": "mlp"}, DIGITS, 0)
    assert "input shape" in one_line_error({"name": "mlp"}, (1, 0, 8))


@dataclass(frozen=True)
class TwoLayerNet(ModelConfig):
    """A model config outside compress.models, without a name: found through _target_ only."""

    width: int = 4

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), self.width),
            nn.ReLU(),
            nn.Linear(self.width, num_classes),
        )


def test_target_builds_a_model_config_defined_elsewhere() -> None:
    target = f"{__name__}.TwoLayerNet"
    model = build_model({"_target_": target, "width": 5}, DIGITS, 3)
    assert [m.out_features for m in linears(model)] == [5, 3]
    assert all(module.training for module in model.modules())
    assert "TwoLayerNet" not in model_names()
    assert "'widht'" in one_line_error({"_target_": target, "widht": 5}, DIGITS)
    assert "model.width" in one_line_error({"_target_": target, "width": "5"}, DIGITS)
    assert "not a torch nn.Module" in one_line_error({"_target_": "fractions.Fraction"}, DIGITS)
    assert "cannot import" in one_line_error({"_target_": f"{__name__}.Missing"}, DIGITS)


def test_name_order_does_not_depend_on_what_was_imported_first() -> None:
    code = (
        "import compress.models.zoo, compress.models.rnn; from compress.models import model_names;"
        "print(','.join(model_names()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert tuple(result.stdout.strip().split(",")) == model_names()


def test_a_hydra_section_builds_like_a_plain_mapping() -> None:
    from omegaconf import OmegaConf

    section = OmegaConf.create({"name": "small_cnn", "channels": [4, 8]})
    cnn = build_model(section, DIGITS, 4)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [4, 8]


def test_vit_patch_auto_cuts_square_images_into_a_4x4_grid() -> None:
    assert build_model({"name": "vit"}, (1, 28, 28), 10).embed.patch == 7
    assert build_model({"name": "vit"}, (1, 8, 8), 10).embed.patch == 2
    with pytest.raises(ConfigError, match="patch auto needs square images") as error:
        build_model({"name": "vit"}, (3, 32, 30), 10)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="patch 5 does not tile the 28x28 images"):
        build_model({"name": "vit", "patch": 5}, (1, 28, 28), 10)
