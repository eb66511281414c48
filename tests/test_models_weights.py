"""The user's own model (`model=custom model._target_=...`) and weights made elsewhere
(`model.weights=PATH`, torchvision weight names): end to end, and bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from compress.artifact.store import load_artifact
from compress.data import load_dataset
from compress.errors import ConfigError
from compress.models import build_model, parse_model
from compress.run.pipeline import run
from compress.train.loop import accuracy
from tests.support import QUICK, compose_config, mlflow_runs, run_cli

TARGET = f"{__name__}.TinyNet"
CUSTOM = ["model=custom", f"model._target_={TARGET}", "+model.width=8"]


class TinyNet(nn.Module):
    """A user's model class: conv, batch norm, pooled linear head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


class Refuses(TinyNet):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        raise ValueError("width must be even")


class WithGRU(nn.Module):
    """Conv features read by a GRU: channel pruning cannot follow the GRU."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(torch.relu(self.conv(x)).mean(-1).transpose(1, 2))
        return self.fc(out[:, -1])


class NotAModule:
    pass


@pytest.mark.parametrize(
    "method",
    [
        ["method=prune", "method.amount=0.5"],
        ["method=quantize_static"],
        ["method=quantize_dynamic"],
        ["method=none", "distill=kd", "distill.teacher={name:mlp,hidden:[32]}"],
    ],
    ids=["prune", "static_int8", "dynamic_int8", "distill"],
)
def test_own_class_is_compressed_and_reloads(tmp_path: Path, method: list[str]) -> None:
    cfg = compose_config(tmp_path, *QUICK, *CUSTOM, "schedule.train.epochs=1", *method)
    result = run(cfg)
    assert cfg["model"]["_target_"] == TARGET
    data = load_dataset(cfg["dataset"])
    first, second = load_artifact(result.artifact), load_artifact(result.artifact)
    assert torch.equal(first(data.test.x), second(data.test.x))
    assert accuracy(first, data.test) == result.metrics["acc"]
    assert torch.load(result.artifact, weights_only=True)["model"]["config"]["_target_"] == TARGET


def test_own_class_exports_to_onnx(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, *QUICK, *CUSTOM, "method=none", "measure.probes=[onnx]")
    metrics = run(cfg).metrics
    assert metrics["onnx/acc"] == pytest.approx(metrics["acc"], abs=0.01)


def test_own_model_yaml_through_config_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compress.cli.main import main

    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mynet.yaml").write_text(f"_target_: {TARGET}\nwidth: 6\n")
    argv = ["--config-dir", str(tmp_path / "conf"), "model=mynet", "method=none", *QUICK]
    code, _, err = run_cli(main, [*argv, f"paths.outputs={tmp_path}"], capsys)
    assert code == 0, err
    (finished,) = mlflow_runs(tmp_path)
    assert finished.data.params["model.width"] == "6"


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """The file as the maintained library writes it."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def trained_elsewhere(tmp_path: Path) -> tuple[TinyNet, dict[str, Path]]:
    """A TinyNet with weights unlike a fresh one, saved as plain torch does, as a
    Lightning-style checkpoint, and as safetensors."""
    torch.manual_seed(123)
    model = TinyNet((1, 8, 8), 10, width=8)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.fc.weight.mul_(5)
    state = model.state_dict()
    names = {"pt": "net.pt", "ckpt": "net.ckpt", "st": "net.safetensors"}
    files = {kind: tmp_path / name for kind, name in names.items()}
    torch.save(state, files["pt"])
    lightning = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}
    torch.save(lightning, files["ckpt"])
    save_safetensors(state, files["st"])
    return model.eval(), files


@pytest.mark.parametrize("kind", ["pt", "ckpt", "st"])
def test_zero_epochs_baseline_is_the_loaded_model(tmp_path: Path, kind: str) -> None:
    model, files = trained_elsewhere(tmp_path)
    prefix = ["+model.weights_prefix=model."] if kind == "ckpt" else []
    cfg = compose_config(
        tmp_path, *QUICK, *CUSTOM, f"+model.weights={files[kind]}", *prefix,
        "schedule.train.epochs=0", "method=none",
    )  # fmt: skip
    result = run(cfg)
    data = load_dataset(cfg["dataset"])  # the pipeline's own tensors and normalisation
    with torch.no_grad():
        correct = model(data.test.x).argmax(1).eq(data.test.y).sum().item()
    expected = correct / len(data.test.y)
    assert result.metrics["baseline/acc"] == expected
    assert 0.0 < expected < 0.5  # really these weights: neither trained nor a fluke


def test_weights_hash_keys_the_baseline_cache(tmp_path: Path) -> None:
    _, files = trained_elsewhere(tmp_path)
    common = [*QUICK, *CUSTOM, f"+model.weights={files['pt']}", "schedule.train.epochs=1"]
    first = run(compose_config(tmp_path, *common, "method=none", run_dir=tmp_path / "a"))
    again = run(compose_config(tmp_path, *common, "method=none", run_dir=tmp_path / "b"))
    assert again.baseline_cached and again.metrics["baseline/acc"] == first.metrics["baseline/acc"]
    other = TinyNet((1, 8, 8), 10, width=8)
    torch.save(other.state_dict(), files["pt"])  # same path, other bytes: another baseline
    third = run(compose_config(tmp_path, *common, "method=prune", run_dir=tmp_path / "c"))
    assert not third.baseline_cached


def bad_weights(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Weight files that must be refused, each with a phrase of its one-line error."""
    torch.save({"a": 1, "b": [2]}, tmp_path / "dict.pt")
    torch.save(TinyNet((1, 8, 8), 10, width=8), tmp_path / "whole.pt")
    torch.save(TinyNet((1, 8, 8), 10, width=4).state_dict(), tmp_path / "narrow.pt")
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "linear.pt")
    torch.save(TinyNet((1, 8, 8), 5, width=8).state_dict(), tmp_path / "five.pt")
    (tmp_path / "text.safetensors").write_text("not tensors")
    return {
        "missing": (str(tmp_path / "nope.pt"), "no file"),
        "not a state dict": (str(tmp_path / "dict.pt"), "is not a state dict"),
        "needs code": (str(tmp_path / "whole.pt"), f"needs code to load (it needs {TARGET})"),
        "shapes": (str(tmp_path / "narrow.pt"), "shape mismatch conv.weight (4, 1, 3, 3) vs"),
        "keys": (str(tmp_path / "linear.pt"), "missing conv.weight, conv.bias, bn.weight"),
        "classes": (str(tmp_path / "five.pt"), "model.reset_head=true"),
        "safetensors": (str(tmp_path / "text.safetensors"), "is not a safetensors file"),
    }


BAD_MODELS = {
    "not importable": ([f"model._target_={__name__}.Missing"], "cannot import"),
    "no module": (["model._target_=no_such_pkg.Net"], "cannot import 'no_such_pkg.Net'"),
    "not a module": ([f"model._target_={__name__}.NotAModule"], "is not a torch nn.Module"),
    "arguments": ([f"model._target_={TARGET}", "+model.depth=3"], "does not take these arguments"),
    "constructor": ([f"model._target_={__name__}.Refuses"], "ValueError: width must be even"),
    "no target": ([], "model 'custom' needs its class"),
}


def assert_refused(tmp_path: Path, overrides: list[str], phrase: str) -> None:
    cfg = compose_config(tmp_path, *QUICK, *overrides)
    with pytest.raises(ConfigError) as info:
        run(cfg)
    message = str(info.value)
    assert phrase in message and "\n" not in message, message
    assert not [r for r in mlflow_runs(tmp_path) if r.info.status == "FINISHED"]
    assert not (tmp_path / "cache" / "baselines").exists()  # refused before any training


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_class_is_one_line(tmp_path: Path, case: str) -> None:
    overrides, phrase = BAD_MODELS[case]
    assert_refused(tmp_path, ["model=custom", *overrides], phrase)


@pytest.mark.parametrize(
    "case",
    ["missing", "not a state dict", "needs code", "shapes", "keys", "classes", "safetensors"],
)
def test_bad_weights_are_one_line(tmp_path: Path, case: str) -> None:
    path, phrase = bad_weights(tmp_path)[case]
    assert_refused(tmp_path, [*CUSTOM, f"+model.weights={path}"], phrase)


def test_channel_pruning_names_the_layer_it_cannot_follow(tmp_path: Path) -> None:
    model = ["model=custom", f"model._target_={__name__}.WithGRU", "method=prune_channels"]
    assert_refused(tmp_path, model, "the first layer it cannot follow: 'gru' (GRU)")


def test_bad_weights_exit_2_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compress.cli.main import main

    argv = [*QUICK, *CUSTOM, f"+model.weights={tmp_path / 'nope.pt'}", f"paths.outputs={tmp_path}"]
    code, _, err = run_cli(main, argv, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "no file" in err


def test_reset_head_replaces_only_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = TinyNet((1, 8, 8), 5, width=8)
    torch.save(other.state_dict(), tmp_path / "five.pt")
    cfg = {"_target_": TARGET, "width": 8, "weights": str(tmp_path / "five.pt"), "reset_head": True}
    model = build_model(cfg, (1, 8, 8), 10, load_weights=True)
    assert torch.equal(model.conv.weight, other.conv.weight)
    assert model.fc.out_features == 10


def test_weights_are_not_loaded_when_an_artifact_rebuilds(tmp_path: Path) -> None:
    cfg = {"_target_": TARGET, "weights": str(tmp_path / "gone.pt")}
    assert isinstance(build_model(cfg, (1, 8, 8), 10), TinyNet)  # the artifact's own state follows


def test_torchvision_weights_offline_name_the_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = {"name": "torchvision", "arch": "resnet18", "weights": "DEFAULT"}
    with pytest.raises(ConfigError) as info:
        build_model(cfg, (3, 32, 32), 10, load_weights=True)
    message = str(info.value)
    assert "\n" not in message
    assert "put resnet18-f37072fd.pth (from https://" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    preprocessing = parse_model(cfg).preprocessing()
    assert preprocessing is not None and preprocessing.crop == (224,)
    assert preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
