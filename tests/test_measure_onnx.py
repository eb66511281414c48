"""ONNX export and ONNX Runtime timing: real models, pruned and int8 ones, and clean failures."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.data import load_dataset
from compress.measure import MeasureConfig, ProbeContext, run_probes
from compress.measure.onnx_runtime import (
    ExportUnsupported,
    export_onnx,
    onnx_latency_ms,
    onnx_predict,
)
from compress.models import build_model

MODELS = {
    "mlp": ({"name": "mlp"}, (1, 8, 8)),
    "lenet5": ({"name": "lenet5"}, (1, 28, 28)),
    "small_cnn": ({"name": "small_cnn"}, (1, 8, 8)),
}


@torch.library.custom_op("compress_tests::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:
    """An op no ONNX exporter has a translation for."""
    return x * 2


@opaque.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Opaque(nn.Module):
    """Linear layer, then an op unknown to both exporters."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return opaque(self.fc(x))


class BatchBranch(nn.Module):
    """Python control flow on the batch size: torch.export will not give up the dynamic
    batch for it, and a trace keeps only the branch it saw, wrong at other batch sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x if x.shape[0] == 2 else x


def _model(cfg: dict, shape: tuple[int, ...]) -> nn.Module:
    """The model with BN statistics that are not the identity, left in train mode."""
    torch.manual_seed(0)
    model = build_model(cfg, shape, 10)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape))
    return model


def _pruned(model: nn.Module, amount: float = 0.9) -> nn.Module:
    """Zero the smallest `amount` of each conv and linear weight, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                weight = module.weight
                cut = weight.abs().flatten().kthvalue(int(amount * weight.numel())).values
                weight[weight.abs() <= cut] = 0
    return model


def _assert_single_file(path: Path) -> None:
    """The export is one .onnx file holding its weights: no external data, no leftovers."""
    import onnx

    assert [p.name for p in path.parent.iterdir()] == [path.name]
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.graph.initializer, "weights should be stored as initializers"
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)


def _assert_matches(path: Path, model: nn.Module, shape: tuple[int, ...], atol: float) -> None:
    for batch in (1, 7):
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model.eval()(x)
        torch.testing.assert_close(onnx_predict(path, x), expected, atol=atol, rtol=0)


@pytest.mark.parametrize(
    ("name", "pruned"),
    [("mlp", False), ("lenet5", False), ("small_cnn", False), ("lenet5", True)],
    ids=["mlp", "lenet5", "small_cnn", "lenet5-pruned"],
)
def test_export_matches_pytorch_at_any_batch(tmp_path: Path, name: str, pruned: bool) -> None:
    cfg, shape = MODELS[name]
    model = _model(cfg, shape)
    if pruned:
        _pruned(model)
        assert sum(int((p == 0).sum()) for p in model.parameters()) > 0
    before = copy.deepcopy(model.state_dict())

    path = export_onnx(model, shape, tmp_path / "out" / f"{name}.onnx")

    assert path == tmp_path / "out" / f"{name}.onnx"
    _assert_single_file(path)
    assert model.training, "the model's own mode is restored"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed by the export"
    _assert_matches(path, model, shape, atol=1e-4)


def test_latency_is_positive_for_each_batch_size(tmp_path: Path) -> None:
    cfg, shape = MODELS["small_cnn"]
    path = export_onnx(_model(cfg, shape), shape, tmp_path / "small_cnn.onnx")
    latencies = onnx_latency_ms(
        path, shape, [1, 7, 32], threads=1, warmup=1, repeats=5, max_seconds=0.05
    )
    assert list(latencies) == [1, 7, 32]
    assert all(isinstance(ms, float) and ms > 0 for ms in latencies.values())


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_fx_int8_model_exports_and_matches_its_pytorch_outputs(tmp_path: Path) -> None:
    """torch.export cannot take FX int8 modules; the TorchScript exporter writes a QDQ graph."""
    import onnx
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    cfg, shape = MODELS["lenet5"]
    model = _model(cfg, shape).eval()
    example = (torch.randn(2, *shape),)
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        prepared(torch.randn(64, *shape, generator=torch.Generator().manual_seed(0)))
    int8 = convert_fx(prepared)
    output_step = [m.scale for m in int8.modules() if hasattr(m, "scale")][-1]

    path = export_onnx(int8, shape, tmp_path / "int8.onnx")

    _assert_single_file(path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "an int8 (QDQ) graph, not a float one"
    # ONNX Runtime may round an output one quantization step away from PyTorch's kernels.
    _assert_matches(path, int8, shape, atol=2 * output_step)
    assert onnx_latency_ms(path, shape, [4], threads=1, warmup=1, repeats=3, max_seconds=0.05)[4]


@pytest.mark.parametrize(
    ("model", "shape", "words"),
    [
        (Opaque(), (4,), ["compress_tests", "opaque"]),
        (BatchBranch(), (6,), ["fails at batch 3", "disagrees with PyTorch at batch 3"]),
    ],
    ids=["unknown-op", "batch-branch"],
)
def test_unexportable_model_raises_one_line_and_writes_nothing(
    tmp_path: Path, model: nn.Module, shape: tuple[int, ...], words: list[str]
) -> None:
    with pytest.raises(ExportUnsupported) as caught:
        export_onnx(model, shape, tmp_path / "model.onnx")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"ONNX export of {type(model).__name__} failed")
    assert "torch.export:" in message
    assert "TorchScript:" in message
    for word in words:
        assert word in message
    assert list(tmp_path.iterdir()) == []


# --- the onnx probe --------------------------------------------------------------------------


def _probe_context(tmp_path: Path, baseline: nn.Module, compressed: nn.Module) -> ProbeContext:
    data = load_dataset({"name": "fake", "num_train": 16, "num_test": 20, "shape": [1, 2, 2]})
    settings = MeasureConfig(batch_sizes=(1, 3), warmup=0, repeats=3, probes=["onnx"])
    cpu = torch.device("cpu")
    return ProbeContext(baseline, compressed, data, settings, cpu, False, tmp_path)


def test_onnx_probe_times_both_keeps_the_compressed_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    baseline = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    compressed = _pruned(copy.deepcopy(baseline), 0.5)
    context = _probe_context(tmp_path, baseline, compressed)

    result = run_probes(context.settings.probes, context)

    assert result.files == [(tmp_path / "model.onnx", "model")]
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # the baseline's is gone
    data = context.data
    with torch.no_grad():
        expected = compressed(data.test.x).argmax(1).eq(data.test.y).float().mean().item()
    assert result.metrics["onnx/acc"] == pytest.approx(expected)
    for batch in (1, 3):
        ours, base = (
            result.metrics[f"onnx/latency_ms/b{batch}"],
            result.metrics[f"baseline/onnx/latency_ms/b{batch}"],
        )
        assert ours > 0 and base > 0
        assert result.metrics[f"speedup/onnx/b{batch}"] == base / ours
    assert result.tags == {}


def test_onnx_probe_on_an_unexportable_model_tags_why_and_keeps_nothing(tmp_path: Path) -> None:
    baseline = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    context = _probe_context(tmp_path, baseline, nn.Sequential(nn.Flatten(), Opaque()))

    result = run_probes(context.settings.probes, context)

    assert result.metrics == {} and result.files == []
    assert list(result.tags) == ["onnx.error"]
    assert result.tags["onnx.error"].startswith("compressed: ONNX export of Sequential failed")
    assert "\n" not in result.tags["onnx.error"]
    assert list(tmp_path.iterdir()) == []  # the baseline's export, written first, is removed
