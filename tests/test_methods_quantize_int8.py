"""Static int8 and QAT through torchao's PT2E flow, and their artifacts.

The returned model is an int8 graph (int8 weights behind dequantize ops) lowered by
Inductor; its artifact stores that graph as plain values and loads without torchao or
torch's legacy quantization API; artifacts of the FX flow from before still load; bad
input fails in one line before any training.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from compress.artifact.store import from_one_storage, load_artifact, save_artifact
from compress.data import DataBundle
from compress.errors import ConfigError
from compress.measure import count_macs, count_params
from compress.methods import MethodContext, Stage, apply_method, parse_method
from compress.models import build_model
from compress.quant.compiled import CompiledInference
from compress.quant.pt2e import calibrate, cpu_needs_reduce_range
from compress.run.pipeline import run
from compress.schedules import ScheduleContext
from compress.schedules.oneshot import OneShot
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, assert_refused_before_training, compose_config

FAKE = ["dataset=fake", "tracking=none"]
SMALL_CNN_LAYERS = {"features.0.0", "features.1.0", "features.3.0", "classifier"}
DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


def compress_now(method: dict[str, Any], data: DataBundle) -> tuple[nn.Module, nn.Module, Stage]:
    """small_cnn (fresh, seeded) and its int8 model at the method's full target."""
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"}, data.input_shape, data.num_classes).eval()
    stage = apply_method(model, parse_method(method), MethodContext(data.input_shape, data, 64))
    stage.update(1.0)
    if method["name"] == "qat":  # fake quantizers observe ranges in training forwards
        prepared = stage.training_module(model)
        prepared.train()
        with torch.no_grad():
            prepared(data.train.x[:256])
    return model, stage.finalize(model), stage


def save(model: nn.Module, path: Path, data: DataBundle, stage: Stage) -> int:
    return save_artifact(
        model,
        path,
        model_config={"name": "small_cnn"},
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        conversion=stage.conversion(),
    )


def int8_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weight codes of an int8 graph, by the layer they came from."""
    assert isinstance(model, CompiledInference)
    return {
        name.removesuffix(".weight"): tensor
        for name, tensor in model.eager.named_buffers()
        if name.endswith(".weight") and tensor.dtype == torch.int8
    }


QAT_SLOW = pytest.param("qat", marks=pytest.mark.slow)  # torchao folds conv+BN in ~30 s


@pytest.mark.parametrize("method", ["quantize_static", QAT_SLOW])
def test_int8_graph_artifact_round_trip(tmp_path: Path, data: DataBundle, method: str) -> None:
    model, converted, stage = compress_now({"name": method}, data)
    assert set(int8_weights(converted)) == SMALL_CNN_LAYERS
    assert stage.summary()["quant/layers"] == len(SMALL_CNN_LAYERS)
    path = tmp_path / "model.pt"
    size = save(converted, path, data, stage)
    payload = from_one_storage(torch.load(path, weights_only=True))
    assert payload["format"] == "compress.artifact/4"
    assert payload["conversion"]["backend"] == "pt2e"
    assert payload["conversion"]["kind"] == ("qat" if method == "qat" else "static")
    assert set(payload["writer"]) == {"compress", "torch", "torchao"}
    weights = sum(t.numel() for t in int8_weights(converted).values())
    assert weights < size < 1.25 * weights  # a byte a weight, plus scales, biases, graph
    loaded = load_artifact(path)
    x = data.test.x[:128]
    with torch.no_grad():
        assert torch.equal(loaded.eager(x), converted.eager(x))  # the same program
        lowered, simulated = loaded(x), converted.eager(x)
    # Inductor's int8 kernels requantize in their own order: the same classes, near logits.
    assert (lowered.argmax(1) == simulated.argmax(1)).float().mean() >= 0.97
    assert loaded.compile_seconds > 0
    # Counted on the int8 graph: each layer's weight and its bias (BN folded into it).
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert count_params(loaded) == sum(m.weight.numel() + m.weight.shape[0] for m in layers)
    assert count_macs(loaded, data.input_shape).dense == count_macs(model, data.input_shape).dense


@pytest.mark.parametrize(
    ("method", "skipped"),
    [
        ("quantize_static", "features.0.0"),
        pytest.param("qat", "classifier", marks=pytest.mark.slow),
    ],
)
def test_skip_leaves_the_named_layer_in_float(
    tmp_path: Path, data: DataBundle, method: str, skipped: str
) -> None:
    _, converted, stage = compress_now({"name": method, "skip": [skipped]}, data)
    assert set(int8_weights(converted)) == SMALL_CNN_LAYERS - {skipped}
    floats = dict(converted.eager.named_parameters()) | dict(converted.eager.named_buffers())
    assert floats[f"{skipped}.weight"].dtype == torch.float32
    save(converted, tmp_path / "model.pt", data, stage)
    assert set(int8_weights(load_artifact(tmp_path / "model.pt"))) == set(int8_weights(converted))


def test_qat_trains_the_fake_quantized_graph_and_converts(data: DataBundle) -> None:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    # An MLP: QAT of conv+BN is the end-to-end test's (torchao folds BN in ~30 s).
    torch.manual_seed(0)
    model = build_model({"name": "mlp"}, data.input_shape, data.num_classes)
    layers = {p for p, m in model.named_modules() if isinstance(m, nn.Linear)}
    stage = apply_method(
        model, parse_method({"name": "qat"}), MethodContext(data.input_shape, data, 64)
    )
    assert stage.update(1.0)  # a new module to train: the optimizer must take its parameters
    prepared = stage.training_module(model)
    fakes = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]
    assert len(fakes) > len(layers)  # weights and activations
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    recipe = TrainRecipe(epochs=1)
    OneShot().run(stage, model, ScheduleContext(data, recipe, RuntimeConfig(progress=False), 0))
    changed = [n for n, p in prepared.named_parameters() if not torch.equal(p, before[n])]
    assert {n.rsplit(".", 1)[0] for n in changed if n.endswith("weight")} >= layers
    converted = stage.finalize(model)
    # The float model handed on (to the ONNX probe, the artifact's shapes) is the trained one.
    last = f"{max(layers)}.weight"
    assert torch.equal(model.get_parameter(last), prepared.get_parameter(last))
    x, y = data.test.x, data.test.y
    prepared.eval()
    with torch.no_grad():
        fake_pred, int8_pred = prepared(x).argmax(1), converted(x).argmax(1)
    assert (fake_pred == int8_pred).float().mean() > 0.9  # the int8 model is the trained one
    assert (int8_pred == y).float().mean() > 0.2


@pytest.mark.slow  # QAT with conv+BN: torchao's conversion takes ~30 s
def test_pruned_zeros_survive_qat(tmp_path: Path) -> None:
    stack = [
        "method=deep_compression",
        "~method.stages.weight_sharing",
        "+method.stages.qat={}",
        "method.stages.prune.amount=0.8",
    ]
    result = run(compose_config(tmp_path, *QUICK, *FAKE, "model=small_cnn", *stack))
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    codes = int8_weights(load_artifact(result.artifact))
    assert set(codes) == SMALL_CNN_LAYERS
    total = sum(c.numel() for c in codes.values())
    zeros = sum(int((c == 0).sum()) for c in codes.values())  # symmetric: code 0 is 0.0
    assert zeros >= round(0.8 * total), zeros / total


def test_reduce_range_follows_the_cpu_unless_set(data: DataBundle) -> None:
    assert cpu_needs_reduce_range() == (not torch.cpu._is_vnni_supported())
    assert (
        parse_method({"name": "quantize_static"}).recipe().reduce_range == cpu_needs_reduce_range()
    )
    for forced in (True, False) if not cpu_needs_reduce_range() else (True,):
        _, converted, _ = compress_now(
            {"name": "quantize_static", "reduce_range": forced, "calibration_batches": 2}, data
        )
        quant_max = {
            n.args[4]
            for n in converted.eager.graph.nodes
            if "quantize_per_tensor" in str(n.target) and n.args[5] == torch.uint8
        }
        assert quant_max == ({127} if forced else {255})


def test_calibration_with_zero_batches_is_refused() -> None:
    with pytest.raises(ConfigError, match="calibration saw zero batches"):
        calibrate(nn.Identity(), iter([]), 16)


class Gated(nn.Module):
    """A model whose forward branches on its data: torch.export cannot trace it."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 16)
        )
        self.gate = Gate()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gate(self.body(x)))


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return x.relu()
        return -x


CUSTOM = ["model=custom", f"+model._target_={__name__}.Gated"]
BAD_INPUTS = {
    "untraceable model": (
        [*CUSTOM, "method=quantize_static"],
        "torch.export cannot trace module 'gate' (Gate)",
    ),
    "untraceable model, qat": ([*CUSTOM, "method=qat"], "use method=quantize_dynamic or"),
    "affine weights": (
        ["method=quantize_static", "method.symmetric=false"],
        "the x86 int8 kernels (oneDNN) take symmetric weights only",
    ),
    "per-tensor qat": (
        ["method=qat", "method.per_channel=false"],
        "the x86 quantizer's QAT has per-channel weights only",
    ),
    "qat skips a conv with BN": (
        ["model=small_cnn", "method=qat", "method.skip=[features.0.0]"],
        "torchao's QAT cannot keep a conv that batch norm follows in float",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides, message = BAD_INPUTS[case]
    assert_refused_before_training(tmp_path, monkeypatch, list(overrides), message)


def test_legacy_fx_artifact_still_loads() -> None:
    """A /3 file written by compress's FX flow (before torchao) gives the logits it did."""
    expected = torch.load(DATA / "legacy_fx_int8_small_cnn.expected.pt", weights_only=True)
    loaded = load_artifact(DATA / "legacy_fx_int8_small_cnn.pt")
    with torch.no_grad():
        assert torch.equal(loaded(expected["x"]), expected["logits"])


BLOCKED = textwrap.dedent(
    """
    import importlib.abc, sys
    import torch  # torch imports parts of torch.ao.quantization itself; drop and block them

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch.ao.quantization" or name.startswith("torch.ao.quantization."):
                raise ImportError(f"{name} is blocked")

    for name in [m for m in sys.modules if m.startswith("torch.ao.quantization")]:
        del sys.modules[name]
    sys.meta_path.insert(0, Blocked())
    try:
        import torch.ao.quantization.quantize_fx  # noqa: F401
        raise SystemExit("torch.ao.quantization still importable")
    except ImportError:
        pass
    from compress.artifact.store import load_artifact
    from compress.quant import decomposed_ops

    model = load_artifact(sys.argv[1])
    assert decomposed_ops.ensure() == "compress", "torch's op library was used"
    with torch.no_grad():
        torch.save(model.eager(torch.load(sys.argv[2])), sys.argv[3])
    assert not [m for m in sys.modules if m.startswith(("torch.ao.quantization", "torchao"))]
    """
)


def test_int8_artifact_loads_without_the_legacy_api(tmp_path: Path, data: DataBundle) -> None:
    _, converted, stage = compress_now({"name": "quantize_static"}, data)
    save(converted, tmp_path / "model.pt", data, stage)
    x = data.test.x[:64].clone()
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load_blocked.py"
    script.write_text(BLOCKED)
    paths = [str(tmp_path / name) for name in ("model.pt", "x.pt", "out.pt")]
    done = subprocess.run(
        [sys.executable, str(script), *paths], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "out.pt"), converted.eager(x))
