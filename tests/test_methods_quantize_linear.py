"""Int8 Linear layers through torchao (`quantize_dynamic`, `quantize_weight_only`), and
LSTM/GRU layers through torch.ao's legacy eager path beside them.

Both methods run end to end; the artifact (format /4) is ~4x smaller than fp32 and gives
back exactly the model it saved; the chosen layers hold torchao int8 weights and skipped
ones stay float; a recurrent model gets both backends; footprints count int8 layers as
the float ones; compiling is what makes dynamic int8 fast; bad input fails in one line
before any training.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchao.quantization import Int8Tensor

from compress.artifact.store import load_artifact, read_payload, save_artifact
from compress.cli import main as compress_cli
from compress.data import DataBundle
from compress.measure import count_macs, count_nonzero, count_params
from compress.measure.config import MeasureConfig
from compress.measure.latency import paired_latency_ms
from compress.methods import MethodContext, Stage, apply_method, parse_method
from compress.models import build_model
from compress.quant.compiled import CompiledInference
from compress.quant.linear import eager
from compress.run.pipeline import run
from compress.train.loop import accuracy
from tests.support import QUICK, assert_refused_before_training, compose_config, run_cli

FAKE = ["dataset=fake", "tracking=none"]
MNIST_SHAPE = (1, 28, 28)
SCHEMES = {"quantize_dynamic": "dynamic", "quantize_weight_only": "weight_only"}

pytestmark = pytest.mark.usefixtures("one_thread")


def converted(
    model_config: dict[str, Any], method: dict[str, Any], shape: tuple[int, ...]
) -> tuple[nn.Module, nn.Module, Stage]:
    """A fresh float model of `model_config` and its conversion by `method`."""
    torch.manual_seed(0)
    model = build_model(model_config, shape, 10).eval()
    stage = apply_method(model, parse_method(method), MethodContext(shape))
    stage.update(1.0)
    return model, stage.finalize(model), stage


def save(
    model: nn.Module, path: Path, spec: dict[str, Any], shape: tuple[int, ...], stage: Any
) -> int:
    return save_artifact(
        model,
        path,
        model_config=spec,
        input_shape=shape,
        num_classes=10,
        conversion=stage.conversion() if stage else None,
    )


def int8_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {
        p: m
        for p, m in eager(model).named_modules()
        if isinstance(m, nn.Linear) and isinstance(m.weight, Int8Tensor)
    }


def inputs(shape: tuple[int, ...], batch: int = 32) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


# --- 1. end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SCHEMES)
def test_runs_end_to_end_and_measures_the_saved_model(
    tmp_path_factory: pytest.TempPathFactory, data: DataBundle, method: str
) -> None:
    outputs = tmp_path_factory.getbasetemp() / "linear-outputs"  # one cached baseline
    cfg = compose_config(
        outputs, *QUICK, *FAKE, "model=lenet300", f"method={method}", run_dir=outputs / method
    )
    result = run(cfg)
    m = result.metrics
    assert m["acc"] > 0.2 and m["acc_drop"] <= 0.05, m
    assert m["quant/bits"] == 8.0 and m["quant/layers"] == 3.0
    assert m["ratio/size"] > 3.3  # int8 weights; float biases and per-channel scales
    assert m["params"] == m["baseline/params"] and m["macs"] == m["baseline/macs"]
    loaded = load_artifact(result.artifact)
    assert accuracy(loaded, data.test) == m["acc"]  # the accuracy logged is the file's
    assert isinstance(loaded, CompiledInference) == (method == "quantize_dynamic")
    assert set(int8_linears(loaded)) == {"1", "3", "5"}


# --- 2. the artifact: format /4, exact, ~4x smaller ----------------------------------------------

ROUND_TRIPS = {
    "dynamic lenet300": ({"name": "lenet300"}, {"name": "quantize_dynamic"}),
    "weight-only lenet300": ({"name": "lenet300"}, {"name": "quantize_weight_only"}),
    "dynamic lstm": ({"name": "rnn", "hidden": 32}, {"name": "quantize_dynamic"}),
    "dynamic gru, head skipped": (
        {"name": "rnn", "cell": "gru", "hidden": 32},
        {"name": "quantize_dynamic", "skip": ["head"]},
    ),
    "weight-only mlp, last skipped": (
        {"name": "mlp"}, {"name": "quantize_weight_only", "skip": ["5"]}),
}  # fmt: skip


@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_artifact_gives_back_exactly_the_saved_model(tmp_path: Path, case: str) -> None:
    spec, method = ROUND_TRIPS[case]
    _, model, stage = converted(spec, method, MNIST_SHAPE)
    path = tmp_path / "model.pt"
    assert save(model, path, spec, MNIST_SHAPE, stage) == path.stat().st_size
    payload = read_payload(path)
    assert payload["format"] == "compress.artifact/4"
    assert set(payload["writer"]) == {"compress", "torch", "torchao"}
    loaded = load_artifact(path)
    assert type(loaded) is type(model)
    assert set(int8_linears(loaded)) == set(int8_linears(model))
    x = inputs(MNIST_SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("method", SCHEMES)
def test_int8_artifact_is_a_quarter_of_fp32(tmp_path: Path, method: str) -> None:
    spec = {"name": "lenet300"}
    float_model, model, stage = converted(spec, {"name": method}, MNIST_SHAPE)
    fp32 = save(float_model, tmp_path / "fp32.pt", spec, MNIST_SHAPE, None)
    int8 = save(model, tmp_path / "int8.pt", spec, MNIST_SHAPE, stage)
    layers = int8_linears(model).values()
    weights = sum(m.weight.numel() for m in layers)
    channels = sum(m.out_features for m in layers)
    # 1 byte per weight; a float32 scale and bias per output channel; zero points (all 0)
    # as a bitmask; the rest is headers.
    assert int8 == pytest.approx(weights + 8 * channels, rel=0.02)
    assert fp32 / int8 > 3.9
    tensors = read_payload(tmp_path / "int8.pt")["tensors"]
    assert tensors["1.weight.qdata"]["data"].dtype == torch.int8


# --- 3. which layers: torchao Linear, legacy LSTM/GRU, skip --------------------------------------


@pytest.mark.parametrize("method", SCHEMES)
def test_linear_layers_hold_torchao_int8_weights_unless_skipped(method: str) -> None:
    _, model, stage = converted({"name": "mlp"}, {"name": method, "skip": ["5"]}, MNIST_SHAPE)
    layers = int8_linears(model)
    assert set(layers) == {"1", "3"} and stage.summary()["quant/layers"] == 2
    for layer in layers.values():
        assert layer.weight.qdata.dtype == torch.int8
        assert layer.weight.scale.shape == (layer.out_features, 1)  # per output channel
        dynamic = layer.weight.act_quant_kwargs is not None
        assert dynamic == (method == "quantize_dynamic")
    last = eager(model).get_submodule("5")
    assert type(last.weight) is nn.Parameter and last.weight.dtype == torch.float32
    recipe = stage.conversion().recipe
    assert recipe["backend"] == "torchao_linear" and recipe["scheme"] == SCHEMES[method]
    assert recipe["reduce_range"] == (
        method == "quantize_dynamic" and not torch.cpu._is_vnni_supported()
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_model_gets_torchao_linear_and_legacy_recurrent_layers(cell: str) -> None:
    spec = {"name": "rnn", "cell": cell, "hidden": 32}
    float_model, model, stage = converted(spec, {"name": "quantize_dynamic"}, MNIST_SHAPE)
    assert isinstance(model, CompiledInference)
    assert set(int8_linears(model)) == {"head"}
    rnn = eager(model).rnn
    assert type(rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert all(w.dtype == torch.qint8 for w in rnn._weight_bias()["weight"].values())
    recipe = stage.conversion().recipe
    assert recipe["backend"] == "torchao_linear" and recipe["recurrent"] == ["rnn"]
    # Only recurrent layers left: the legacy backend alone, run eagerly.
    _, alone, stage = converted(spec, {"name": "quantize_dynamic", "skip": ["head"]}, MNIST_SHAPE)
    assert stage.conversion().recipe["backend"] == "eager_dynamic"
    assert not isinstance(alone, CompiledInference) and not int8_linears(alone)
    # Weight-only int8 leaves recurrent layers in float.
    _, weight_only, _ = converted(spec, {"name": "quantize_weight_only"}, MNIST_SHAPE)
    assert set(int8_linears(weight_only)) == {"head"} and type(weight_only.rnn) is type(
        float_model.rnn
    )


# --- 4. footprint and speed ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", [{"name": "lenet300"}, {"name": "rnn", "hidden": 32}])
def test_footprint_counts_torchao_layers_as_their_float_ones(spec: dict[str, Any]) -> None:
    float_model, model, _ = converted(spec, {"name": "quantize_dynamic"}, MNIST_SHAPE)
    assert count_params(model) == count_params(float_model)
    macs = count_macs(model, MNIST_SHAPE)
    assert macs.dense == count_macs(float_model, MNIST_SHAPE).dense
    # Nonzeros are those of the dequantized weights (a weight rounded to code 0 is zero).
    dequantized = copy.deepcopy(eager(model))
    for layer in int8_linears(dequantized).values():
        layer.weight = nn.Parameter(layer.weight.dequantize())
    assert not int8_linears(dequantized)
    assert 0 < count_nonzero(model) == count_nonzero(dequantized) <= count_nonzero(float_model)
    assert macs.nonzero == count_macs(dequantized, MNIST_SHAPE).nonzero < macs.dense


def test_compiled_model_stays_on_the_cpu_once_it_ran() -> None:
    """Tracking calls `.cpu()` on the model it logs; compiled torchao weights cannot be
    swapped for moved copies, so that is a no-op, and a real move is refused."""
    _, model, _ = converted({"name": "mlp"}, {"name": "quantize_dynamic"}, MNIST_SHAPE)
    x = inputs(MNIST_SHAPE)
    with torch.no_grad():
        before = model(x)
        assert model.cpu() is model and model.to("cpu", torch.float32) is model
        assert torch.equal(model(x), before)
    with pytest.raises(ValueError, match="runs on the CPU in float32"):
        model.to(torch.float64)


def test_compiling_is_what_makes_dynamic_int8_fast() -> None:
    """Eager, torchao's int8 layers run quantize, int8 matmul and rescale as separate ops;
    compiled, they fuse around oneDNN's int8 matmul (the margin is wide: ~3x here)."""
    _, model, _ = converted({"name": "lenet300"}, {"name": "quantize_dynamic"}, MNIST_SHAPE)
    settings = MeasureConfig(warmup=1, repeats=20, max_seconds=1.0, probes=())
    compiled_ms, eager_ms = paired_latency_ms([model, model.eager], MNIST_SHAPE, 256, settings)
    assert eager_ms / compiled_ms > 1.5, (eager_ms, compiled_ms)
    assert model.compile_seconds > 0


# --- 5. bad input: one line, before training -----------------------------------------------------

BAD_INPUTS = {
    "bits 9": (["method=quantize_weight_only", "method.bits=9"],
               "method.bits must be 8 or 4, got 9"),
    "bits 4": (["method=quantize_weight_only", "method.bits=4"],
               "method.bits=4 cannot run here: torchao has no x86 CPU int4 kernel"),
    "group size": (["method=quantize_weight_only", "method.group_size=100"],
                   "method.group_size must be one of 32, 64, 128"),
    "weight-only, every linear skipped": (
        ["model=small_cnn", "method=quantize_weight_only", "method.skip=[classifier]"],
        "method 'quantize_weight_only': the model has no quantizable layer (Linear) outside "
        "method.skip"),
    "dynamic, every layer skipped": (
        ["model=rnn", "method=quantize_dynamic", "method.skip=[rnn,head]"],
        "no quantizable layer (Linear, LSTM, GRU) outside method.skip; its layer types: "
        "LSTM, Linear"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides, message = BAD_INPUTS[case]
    assert_refused_before_training(tmp_path, monkeypatch, list(overrides), message)


def test_bad_bits_on_the_command_line_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [f"paths.outputs={tmp_path}", "method=quantize_weight_only", "method.bits=4"]
    code, out, err = run_cli(compress_cli.main, argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("compress: error: method.bits=4 cannot")
    assert "baseline" not in out and not (tmp_path / "cache").exists()
