"""MACs that count everything: attention's matmuls as FlopCounterMode sees them, layers it
cannot see by formula (never twice), zero weights skipped only where a weight multiplies."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compress.measure import Macs, count_macs, layer_macs, write_layer_macs
from compress.models import build_model
from compress.models.vit import ViTConfig
from compress.quant.compiled import CompiledInference

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS, DIM, HEADS, HIDDEN = 5, 16, 4, 32


@contextmanager
def no_fastpath() -> Iterator[None]:
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """The reference: FlopCounterMode's own total for one sample, halved."""
    with no_fastpath(), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, *input_shape))
    return counter.get_total_flops() / 2


class SequenceFirst(nn.Module):
    """A sample of (tokens, dim) through a batch_first=False encoder layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(DIM, HEADS, HIDDEN, dropout=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.transpose(0, 1)).transpose(0, 1)


def encoder(batch_first: bool) -> tuple[nn.Module, str]:
    """An encoder layer (batch first or not) and the path of its attention module."""
    torch.manual_seed(0)
    if batch_first:
        layer = nn.TransformerEncoderLayer(DIM, HEADS, HIDDEN, dropout=0.0, batch_first=True)
        return layer, "self_attn"
    return SequenceFirst(), "layer.self_attn"


#: By hand: q, k, v and output projections; QK^T and AV (products of two activations); FFN.
PROJECTIONS = 4 * TOKENS * DIM * DIM
ATTENTION = 2 * TOKENS * TOKENS * DIM
FEED_FORWARD = 2 * TOKENS * DIM * HIDDEN


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_layer_agrees_with_flop_counter(batch_first: bool) -> None:
    model, attention = encoder(batch_first)
    macs = count_macs(model, (TOKENS, DIM))
    assert macs.dense == PROJECTIONS + ATTENTION + FEED_FORWARD
    assert macs.dense == pytest.approx(flop_counter_macs(model, (TOKENS, DIM)), rel=0.01)
    assert macs.nonzero == macs.dense  # no weight is zero
    # The packed in_proj, out_proj (never called as a module) and the attention matmuls
    # are the attention module's own work.
    assert layer_macs(model, (TOKENS, DIM))[attention].dense == PROJECTIONS + ATTENTION


@pytest.mark.parametrize("batch_first", [True, False])
def test_zero_weights_leave_attention_matmuls_counted(batch_first: bool) -> None:
    model, attention = encoder(batch_first)
    linear1 = model.linear1 if batch_first else model.layer.linear1
    mha = model.self_attn if batch_first else model.layer.self_attn
    with torch.no_grad():
        linear1.weight[:10] = 0  # 10 rows of 16: 160 weights, each used once a token
        mha.out_proj.weight[:, :4] = 0  # 64 weights of the output projection
    macs = count_macs(model, (TOKENS, DIM))
    assert macs.dense == PROJECTIONS + ATTENTION + FEED_FORWARD
    assert macs.nonzero == macs.dense - TOKENS * (160 + 64)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "weight" in name and weight.dim() == 2:
                weight.zero_()  # every projection and linear weight, in_proj's too
    per_layer = layer_macs(model, (TOKENS, DIM))
    # What sparse weights cannot skip: the products of two activations.
    assert Macs.total(per_layer).nonzero == per_layer[attention].nonzero == ATTENTION


def test_vit_agrees_with_flop_counter_and_its_table_sums_to_it() -> None:
    torch.manual_seed(0)
    model = ViTConfig(patch=4, dim=32, depth=2, heads=4, pool="cls").build((1, 28, 28), 10)
    per_layer = layer_macs(model, (1, 28, 28))
    total = count_macs(model, (1, 28, 28))
    assert Macs.total(per_layer) == total
    assert total.dense == pytest.approx(flop_counter_macs(model, (1, 28, 28)), rel=0.01)
    tokens = (28 // 4) ** 2 + 1  # 4x4 patches and the class token
    for block in ("blocks.0", "blocks.1"):  # QK^T and AV, which no layer hook saw
        assert per_layer[f"{block}.attn"].dense == 2 * tokens * tokens * 32
    assert list(per_layer)[:2] == ["embed.proj", "blocks.0.attn"]  # the order modules start


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_layers_count_steps_times_weights_once(cell: str) -> None:
    """FlopCounterMode sees nothing of an LSTM on the CPU, and a GRU's matmuls: both count
    by formula, the GRU's not twice."""
    torch.manual_seed(0)
    model = build_model({"name": "rnn", "cell": cell, "hidden": 16}, (1, 28, 28), 10)
    with torch.no_grad():
        model.rnn.weight_hh_l0[:3] = 0  # 3 rows of 16 recurrent weights, used each step
    weights = sum(w.numel() for n, w in model.rnn.named_parameters() if n.startswith("weight"))
    per_layer = layer_macs(model, (1, 28, 28))
    assert per_layer == {
        "rnn": Macs(28 * weights, 28 * (weights - 48)),  # 28 rows = 28 steps
        "head": Macs(160, 160),
    }


def test_int8_layers_count_like_their_float_model() -> None:
    """torch.ao's dynamic int8 LSTM and Linear, and torchao's int8 Linear (which
    FlopCounterMode does not see), count the MACs their float layers do."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    torch.manual_seed(0)
    model = build_model({"name": "rnn", "hidden": 16}, (1, 28, 28), 10).eval()
    dense = count_macs(model, (1, 28, 28)).dense
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation
        legacy = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear})
    assert count_macs(legacy, (1, 28, 28)).dense == dense
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    float_macs = layer_macs(mlp, (8, 8))
    quantize_(mlp, Int8DynamicActivationInt8WeightConfig())
    assert {p: m.dense for p, m in layer_macs(mlp, (8, 8)).items()} == {
        p: m.dense for p, m in float_macs.items()
    }


def test_pt2e_int8_graph_counts_its_float_ops_per_layer() -> None:
    from compress.quant.pt2e import Pt2eRecipe, calibrate, convert, prepare

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    model.eval()
    with torch.no_grad():
        model[3].weight[:2] = 0  # 288 weights that int8 keeps at zero
    batch = torch.randn(8, 1, 8, 8)
    recipe = Pt2eRecipe("static", observer="minmax", reduce_range=True)
    prepared = prepare(model, recipe, batch, "quantize_static")
    calibrate(prepared, [batch], 1)
    graph = convert(prepared)
    float_macs, int8_macs = layer_macs(model, (1, 8, 8)), layer_macs(graph, (1, 8, 8))
    assert set(int8_macs) == set(float_macs) == {"0", "3"}  # rows by the traced module
    for path, macs in float_macs.items():
        assert int8_macs[path].dense == macs.dense
        # int8 rounds the smallest weights to zero too: never fewer zeros than in float
        assert int8_macs[path].nonzero <= macs.nonzero
    assert int8_macs["3"].nonzero <= 1440 - 288
    assert layer_macs(CompiledInference(graph), (1, 8, 8)) == int8_macs  # its eager graph


def test_counting_leaves_no_hook_and_the_fast_path_as_it_was() -> None:
    model, _ = encoder(batch_first=True)
    torch.backends.mha.set_fastpath_enabled(True)
    count_macs(model, (TOKENS, DIM))
    assert torch.backends.mha.get_fastpath_enabled()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_layer_table_has_both_models_and_blanks_for_a_missing_layer(tmp_path: Path) -> None:
    baseline = {"": Macs(10, 10), "fc": Macs(200, 150)}
    compressed = {"fc": Macs(100, 100), "extra": Macs(5, 4)}
    path = write_layer_macs(tmp_path / "layer_macs.csv", baseline, compressed)
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        ["module", "baseline_dense", "baseline_nonzero", "compressed_dense", "compressed_nonzero"],
        ["(model)", "10", "10", "", ""],
        ["fc", "200", "150", "100", "100"],
        ["extra", "", "", "5", "4"],
    ]
