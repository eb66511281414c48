"""Int8 in ONNX: PT2E int8 models in their Inductor wrapper exported as QDQ graphs, and ONNX
Runtime's own static int8 of the fp32 model, timed by the onnx probe beside ours."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data import DataBundle, load_dataset
from compress.data.bundle import Split
from compress.measure import MeasureConfig, ProbeContext, run_probes
from compress.measure.onnx_quant import BatchReader
from compress.measure.onnx_runtime import export_onnx, onnx_predict
from compress.models import build_model
from compress.quant.compiled import CompiledInference

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
#: Learnable generated data, noisy enough that accuracy is not 100%, with more than the
#: 16 batches of 64 ORT falls back to.
DATA = {"name": "fake", "num_train": 1400, "num_test": 400, "noise": 1.0, "shape": list(SHAPE)}


@pytest.fixture(scope="module")
def learnable() -> DataBundle:
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def trained(learnable: DataBundle) -> nn.Module:
    """A small CNN trained for a few seconds, in eval mode."""
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"}, SHAPE, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(6):
        for x, y, _ in learnable.train.loader(64, seed=epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


class BatchBranch(nn.Module):
    """Python control flow on the batch size: neither exporter gives a correct graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x.flatten(1) if x.shape[0] == 2 else x.flatten(1)


def _pt2e_int8(model: nn.Module, batches: Iterable[torch.Tensor]) -> CompiledInference:
    """`model` quantized by torchao's PT2E flow for x86, wrapped as int8 runs return it."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.randn(2, *SHAPE),)
    batch = {0: torch.export.Dim("batch")}
    program = torch.export.export(copy.deepcopy(model).eval(), example, dynamic_shapes=(batch,))
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(program.module(), quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return CompiledInference(convert_pt2e(prepared))


def _batches(split: Split, count: int) -> list[torch.Tensor]:
    return [batch.x for batch in itertools.islice(split.loader(64), count)]


def _accuracy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        hits = sum(int(model(x).argmax(1).eq(y).sum()) for x, y, _ in split.loader(256))
    return hits / len(split)


def _context(
    folder: Path,
    data: DataBundle,
    compressed: nn.Module,
    float_model: nn.Module,
    calibration: Callable[[], Iterable[torch.Tensor]] | None,
    baseline: nn.Module | None = None,
) -> ProbeContext:
    """An int8 run's context; the baseline is the float model unless given."""
    settings = MeasureConfig(batch_sizes=(1, 64), warmup=1, repeats=3, probes=["onnx"])
    return ProbeContext(
        baseline if baseline is not None else float_model,
        compressed,
        data,
        settings,
        torch.device("cpu"),
        True,
        folder,
        float_model=float_model,
        calibration=calibration,
    )


def _input_qparams(path: Path) -> tuple[float, int]:
    """Scale and zero point of the QuantizeLinear that quantizes the graph's input."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    (node,) = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
    return float(values[node.input[1]]), int(values[node.input[2]])


def _uint8_qparams(batches: Iterable[torch.Tensor]) -> tuple[float, int]:
    """Asymmetric uint8 parameters for the min-max range of `batches` (zero included)."""
    stacked = torch.cat([x.flatten() for x in batches])
    low, high = min(float(stacked.min()), 0.0), max(float(stacked.max()), 0.0)
    scale = (high - low) / 255
    return scale, round(-low / scale)


# --- PT2E int8 models, as the torchao flow returns them ----------------------------------------


def test_pt2e_int8_model_in_its_compiled_wrapper_exports_as_a_qdq_graph(
    tmp_path: Path, trained: nn.Module, learnable: DataBundle
) -> None:
    import onnx

    wrapped = _pt2e_int8(trained, _batches(learnable.train, 4))

    path = export_onnx(wrapped, SHAPE, tmp_path / "int8.onnx")

    assert wrapped.compile_seconds == 0.0, "the eager graph is exported, nothing compiled"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    for batch in (1, 7):
        x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = wrapped.eager(x)
        got = onnx_predict(path, x)
        # ORT's int8 kernels may round an intermediate one step away from the simulation.
        scale = float(expected.abs().max())
        torch.testing.assert_close(got, expected, atol=0.05 * scale, rtol=0)


# --- ONNX Runtime's own int8 ---------------------------------------------------------------


def test_batch_reader_feeds_each_batch_once_in_order_as_float32() -> None:
    from onnxruntime.quantization import CalibrationDataReader

    batches = [torch.arange(6.0, dtype=torch.float64).view(2, 3), torch.ones(4, 3)]
    reader = BatchReader(batches)

    fed = list(iter(reader.get_next, None))

    assert isinstance(reader, CalibrationDataReader)
    assert [list(feed) for feed in fed] == [["input"], ["input"]]
    for feed, batch in zip(fed, batches, strict=True):
        assert feed["input"].dtype.name == "float32"
        assert torch.equal(torch.from_numpy(feed["input"]), batch.float())
    assert (reader.batches, reader.samples) == (2, 6)
    assert reader.get_next() is None


def test_int8_run_times_ort_int8_calibrated_on_the_runs_own_batches(
    tmp_path: Path, trained: nn.Module, learnable: DataBundle
) -> None:
    calibration = _batches(learnable.train, 4)
    calibration[-1] = 1.5 * calibration[-1]  # the last batch widens the input range
    taken: list[torch.Tensor] = []

    def batches() -> Iterator[torch.Tensor]:
        for x in calibration:
            taken.append(x)
            yield x

    compressed = _pt2e_int8(trained, calibration)
    context = _context(tmp_path, learnable, compressed, copy.deepcopy(trained), batches)

    result = run_probes(context.settings.probes, context)

    ort = tmp_path / "model.ort_int8.onnx"
    assert result.files == [(tmp_path / "model.onnx", "model"), (ort, "model")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ort_int8.onnx"]
    assert result.tags == {"onnx_int8.calibration": "the run's 4 calibration batches"}
    # ORT calibrated on exactly the batches given: all four, the last one included.
    assert len(taken) == 4
    scale, zero = _input_qparams(ort)
    expected_scale, expected_zero = _uint8_qparams(calibration)
    assert scale == pytest.approx(expected_scale, rel=1e-5) and zero == expected_zero
    assert expected_scale != pytest.approx(_uint8_qparams(calibration[:3])[0], rel=1e-3)

    fp32 = _accuracy(trained, learnable.test)
    assert fp32 > 0.6, "the model learned something, so accuracy can drop"
    metrics = result.metrics
    assert metrics["onnx_int8/acc"] == pytest.approx(fp32, abs=0.03)
    assert metrics["onnx/acc"] == pytest.approx(fp32, abs=0.03)
    float_bytes = 4 * sum(p.numel() for p in trained.parameters())
    assert metrics["onnx_int8/bytes"] == ort.stat().st_size < 0.5 * float_bytes
    for batch in (1, 64):
        base = metrics[f"baseline/onnx/latency_ms/b{batch}"]
        for prefix in ("onnx", "onnx_int8"):
            ms = metrics[f"{prefix}/latency_ms/b{batch}"]
            assert ms > 0 and metrics[f"speedup/{prefix}/b{batch}"] == base / ms


def test_ort_calibrates_on_16_train_batches_where_the_run_did_not_even_if_ours_fails(
    tmp_path: Path, trained: nn.Module
) -> None:
    """QAT and dynamic int8 give no calibration batches; an int8 model that cannot be
    exported still leaves ORT's int8 and its figures."""
    data = load_dataset(DATA)
    assert len(data.train) > 16 * 64
    data.train.x[-1] = 10.0  # type: ignore[attr-defined]  # past the 16th batch: not fed
    context = _context(tmp_path, data, BatchBranch(), trained, None)

    result = run_probes(context.settings.probes, context)

    assert result.tags.keys() == {"onnx.error", "onnx_int8.calibration"}
    assert result.tags["onnx.error"].startswith("compressed: ONNX export of BatchBranch failed")
    assert result.tags["onnx_int8.calibration"] == (
        "16 batches of 64 from the train split (the run did not calibrate)"
    )
    scale, zero = _input_qparams(tmp_path / "model.ort_int8.onnx")
    expected_scale, expected_zero = _uint8_qparams(_batches(data.train, 16))
    assert scale == pytest.approx(expected_scale, rel=1e-5) and zero == expected_zero
    assert result.files == [(tmp_path / "model.ort_int8.onnx", "model")]
    assert [p.name for p in tmp_path.iterdir()] == ["model.ort_int8.onnx"]
    assert {"onnx_int8/acc", "speedup/onnx_int8/b64", "baseline/onnx/latency_ms/b64"} <= set(
        result.metrics
    )
    assert not any(name.startswith("onnx/") for name in result.metrics)


@pytest.mark.parametrize(
    ("unexportable", "calibration", "words"),
    [
        (False, lambda: [], "ONNX Runtime quantization failed (ValueError: No data is collected"),
        (True, None, "the float model: ONNX export of BatchBranch failed"),
    ],
    ids=["no-calibration-batch", "unexportable-float-model"],
)
def test_failed_ort_quantization_tags_why_and_keeps_the_other_figures(
    tmp_path: Path,
    learnable: DataBundle,
    unexportable: bool,
    calibration: Callable[[], Iterable[torch.Tensor]] | None,
    words: str,
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    float_model = BatchBranch() if unexportable else model
    context = _context(tmp_path, learnable, model, float_model, calibration, baseline=model)

    result = run_probes(context.settings.probes, context)

    assert list(result.tags) == ["onnx_int8.error"]
    reason = result.tags["onnx_int8.error"]
    assert words in reason and "\n" not in reason
    assert not any(name.startswith(("onnx_int8/", "speedup/onnx_int8")) for name in result.metrics)
    assert {"onnx/acc", "onnx/latency_ms/b1", "speedup/onnx/b64"} <= set(result.metrics)
    assert result.files == [(tmp_path / "model.onnx", "model")]
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"], "no scratch files left"
