"""Int8 in ONNX: PT2E int8 models in their Inductor wrapper exported as QDQ graphs."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data import DataBundle, load_dataset
from compress.data.bundle import Split
from compress.measure.onnx_runtime import export_onnx, onnx_predict
from compress.models import build_model
from compress.quant.compiled import CompiledInference

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
#: Learnable generated data, noisy enough that accuracy is not 100%.
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
