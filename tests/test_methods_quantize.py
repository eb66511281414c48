"""Quantization: int8 (dynamic, static, QAT), N-bit weight grids, weight sharing and stacks.

Every method runs end to end and its artifact gives back exactly the model it saved;
converted models hold int8 weights; packed sizes are bits x weights + scales; weight
sharing keeps k values per layer; stacked methods multiply their savings and keep
pruned zeros; bad input fails in one line before any training.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torchao.utils import TorchAOBaseTensor

from compress.artifact.encodings import decode, payload_bytes
from compress.artifact.store import encodings, load_artifact, save_artifact
from compress.data import DataBundle
from compress.errors import ConfigError
from compress.measure import count_macs, count_params
from compress.methods import MethodContext, Stage, apply_method, parse_method
from compress.methods.masks import prunable_weights
from compress.models import build_model
from compress.quant.compiled import CompiledInference
from compress.quant.linear import eager
from compress.run.pipeline import Result, run
from compress.schedules import ScheduleContext
from compress.schedules.oneshot import OneShot
from compress.train.loop import accuracy
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, assert_refused_before_training, compose_config, mlflow_runs

COMPRESS = str(Path(sys.executable).with_name("compress"))
FAKE = ["dataset=fake", "tracking=none"]
#: method -> (model it runs on, the `quant/bits` it reports). Dynamic int8 only touches
#: Linear layers, so it runs on the MLP (small_cnn's one Linear is too small to matter).
METHODS = {
    "quantize_dynamic": ("mlp", 8.0),
    "quantize_static": ("small_cnn", 8.0),
    "qat": ("small_cnn", 8.0),
    "quantize_weights": ("small_cnn", 4.0),
    "weight_sharing": ("small_cnn", 5.0),
    "deep_compression": ("small_cnn", 5.0),
}
#: Methods whose model is converted to int8 kernels; the PT2E ones (static, QAT) have
#: their own tests in test_methods_quantize_int8.py.
CONVERTED = ("quantize_dynamic", "quantize_static", "qat")
SMALL_CNN_LAYERS = {"features.0.0", "features.1.0", "features.3.0", "classifier"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One outputs folder for this module's pipeline runs, so they share cached baselines."""
    return tmp_path_factory.mktemp("outputs")


def pipeline(outputs: Path, run_dir: Path, *overrides: str) -> Result:
    return run(compose_config(outputs, *QUICK, *FAKE, *overrides, run_dir=run_dir))


def compress_now(
    model_config: dict[str, Any], method: dict[str, Any], data: DataBundle
) -> tuple[nn.Module, Stage]:
    """A fresh model compressed by `method` at its full target, without fine-tuning."""
    torch.manual_seed(0)
    model = build_model(model_config, data.input_shape, data.num_classes)
    stage = apply_method(model, parse_method(method), MethodContext(data.input_shape, data, 64))
    stage.update(1.0)
    return stage.finalize(model).eval(), stage


def save(
    model: nn.Module, path: Path, model_config: dict[str, Any], data: DataBundle, stage: Stage
) -> int:
    return save_artifact(
        model,
        path,
        model_config=model_config,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        encodings=stage.encodings(),
        conversion=stage.conversion(),
    )


def int8_layers(model: nn.Module) -> dict[str, Any]:
    """Quantized conv and linear modules (fused conv+relu included), Linear modules holding
    torchao int8 weights (dynamic int8; its compiled wrapper looked through), or the int8
    weights of an int8 graph (PT2E), by layer."""
    inner = eager(model)
    if isinstance(model, CompiledInference) and isinstance(inner, torch.fx.GraphModule):
        buffers = inner.named_buffers()
        return {n[: -len(".weight")]: t for n, t in buffers if t.dtype == torch.int8}
    return {
        p: m
        for p, m in inner.named_modules()
        if isinstance(m, nnq.Conv2d | nnq.Linear)
        or isinstance(getattr(m, "weight", None), TorchAOBaseTensor)
    }


def float_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {p: m for p, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}


# --- 1. every method, end to end and through its artifact --------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_end_to_end(
    outputs: Path, tmp_path: Path, data: DataBundle, method: str
) -> None:
    model, bits = METHODS[method]
    result = pipeline(outputs, tmp_path / "run", f"model={model}", f"method={method}")
    m = result.metrics
    assert 0 <= m["baseline/acc"] <= 1 and 0 <= m["acc"] <= 1
    assert m["acc"] > 0.2  # twice chance
    if method != "deep_compression":  # 92% pruned after a 2-epoch fine-tune may lose more
        assert m["acc_drop"] <= 0.05, m  # 8 or 4 bits barely move a model this size
    assert 0 < m["bytes"] < m["baseline/bytes"]
    assert m["bytes"] == result.artifact.stat().st_size
    assert m["quant/bits"] == bits
    # The accuracy logged is that of the file on disk.
    loaded = load_artifact(result.artifact)
    assert accuracy(loaded, data.test) == m["acc"]
    assert bool(int8_layers(loaded)) == (method in CONVERTED)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("quantize_static", "qat")])
def test_artifact_gives_back_the_compressed_model(
    tmp_path: Path, data: DataBundle, method: str
) -> None:
    model_name, _ = METHODS[method]
    cfg = compose_config(tmp_path, *FAKE, f"model={model_name}", f"method={method}")
    model, stage = compress_now(cfg["model"], cfg["method"], data)
    path = tmp_path / "model.pt"
    assert save(model, path, cfg["model"], data, stage) == path.stat().st_size
    loaded = load_artifact(path)
    x = data.test.x[:128]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --- 2. int8 models hold integer weights (static, QAT: test_methods_quantize_int8.py) ---------


SKIPS = {"quantize_dynamic": ("mlp", "5")}


@pytest.mark.parametrize("method", SKIPS)
def test_skip_leaves_the_named_layer_in_float(
    tmp_path: Path, data: DataBundle, method: str
) -> None:
    model_name, skipped = SKIPS[method]
    model, stage = compress_now({"name": model_name}, {"name": method, "skip": [skipped]}, data)
    layers = int8_layers(model)
    assert skipped not in layers and layers  # the others are still int8
    inside = list(eager(model).get_submodule(skipped).modules())
    assert not any(isinstance(m, nnq.Conv2d | nnq.Linear) for m in inside)
    assert any(
        type(m) in (nn.Conv2d, nn.Linear) and m.weight.dtype == torch.float32 for m in inside
    )
    path = tmp_path / "model.pt"
    save(model, path, {"name": model_name}, data, stage)
    loaded = load_artifact(path)
    assert set(int8_layers(loaded)) == set(layers)
    x = data.test.x[:64]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# --- 3. packed N-bit weights: bits x weights + scales -------------------------------------------


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "affine"])
@pytest.mark.parametrize("granularity", ["channel", "group"])
@pytest.mark.parametrize("bits", range(2, 9))
def test_packed_size_is_bits_times_weights_plus_scales(
    bits: int, granularity: str, symmetric: bool
) -> None:
    torch.manual_seed(bits)
    model = nn.Sequential(nn.Linear(64, 16))
    weight = model[0].weight
    with torch.no_grad():
        weight.uniform_(-1, 1)
    n = weight.numel()
    assert int(weight.count_nonzero()) == n
    config = parse_method(
        {
            "name": "quantize_weights",
            "bits": bits,
            "granularity": granularity,
            "group_size": 16,
            "symmetric": symmetric,
        }
    )
    stage = apply_method(model, config, MethodContext((64,)))
    stage.update(1.0)
    stage.finalize(model)
    entry = stage.encodings()["0.weight"]
    assert entry["encoding"] == "packed" and entry["bits"] == bits
    assert torch.equal(decode(entry), weight.detach())  # the model's weights are the codes'
    groups = 16 if granularity == "channel" else n // 16
    assert entry["scale"].dtype == torch.float16 and entry["scale"].numel() == groups
    if symmetric:
        assert entry["zero"] is None
    else:
        assert entry["zero"].dtype == torch.uint8 and entry["zero"].numel() == groups
    fixed = math.ceil(bits * n / 8) + 2 * groups + (0 if symmetric else groups)
    if not symmetric or bits >= 4:
        # Affine codes spread evenly over all 2**bits levels: no entropy coding beats them.
        # Symmetric grids use 2**bits - 1 levels, which Huffman exploits at 2 and 3 bits.
        assert entry["codes"]["kind"] == "fixed"
    if entry["codes"]["kind"] == "fixed" and entry["positions"] is None:
        assert payload_bytes(entry) == fixed
    else:
        assert payload_bytes(entry) < fixed  # chosen because smaller


def test_four_bit_artifact_is_an_eighth_of_fp32_plus_scales(tmp_path: Path) -> None:
    spec, shape = {"name": "lenet300"}, (1, 28, 28)
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    kwargs = {"model_config": spec, "input_shape": shape, "num_classes": 10}
    fp32 = save_artifact(model, tmp_path / "fp32.pt", **kwargs)
    stage = apply_method(model, parse_method({"name": "quantize_weights"}), MethodContext(shape))
    stage.update(1.0)
    model = stage.finalize(model).eval()
    path = tmp_path / "int4.pt"
    int4 = save_artifact(model, path, encodings=stage.encodings(), **kwargs)
    channels = sum(w.shape[0] for w in prunable_weights(model).values())
    assert int4 == pytest.approx(fp32 / 8 + 2 * channels, rel=0.03)
    stored = encodings(path)
    assert all(stored[f"{p}.weight"] == "packed" for p in prunable_weights(model))
    x = torch.randn(16, *shape)
    with torch.no_grad():
        assert torch.equal(load_artifact(path)(x), model(x))


# --- 4. weight sharing --------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_weight_sharing_codes_take_log2_k_bits(bits: int) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "mlp"}, (1, 8, 8), 10)
    config = parse_method({"name": "weight_sharing", "bits": bits})
    stage = apply_method(model, config, MethodContext((1, 8, 8)))
    stage.update(1.0)
    model = stage.finalize(model)
    books = stage.encodings()
    weights = prunable_weights(model)
    assert set(books) == {f"{p}.weight" for p in weights}
    k = 2**bits
    for path, w in weights.items():
        entry = books[f"{path}.weight"]
        assert entry["encoding"] == "codebook" and entry["bits"] == bits
        assert entry["centroids"].numel() == k
        assert payload_bytes(entry) <= math.ceil(w.numel() * bits / 8) + 4 * k, path
        assert len(torch.unique(w)) <= k, path
        assert torch.equal(decode(entry), w.detach()), path
    assert stage.summary()["quant/bits"] == bits


def test_weight_sharing_keeps_pruned_zeros_and_stores_survivors_only() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "mlp"}, (1, 8, 8), 10)
    context = MethodContext((1, 8, 8))
    prune = apply_method(model, parse_method({"name": "prune", "amount": 0.8}), context)
    prune.update(1.0)
    model = prune.finalize(model)
    zeros = {p: w == 0 for p, w in prunable_weights(model).items()}
    share = apply_method(model, parse_method({"name": "weight_sharing", "bits": 3}), context)
    share.update(1.0)
    model = share.finalize(model)
    for path, w in prunable_weights(model).items():
        assert torch.equal(w == 0, zeros[path]), path  # pruned stay zero, survivors nonzero
        assert len(torch.unique(w[w != 0])) <= 8, path
        entry = share.encodings()[f"{path}.weight"]
        assert entry["positions"] is not None
        nnz, n = int(w.count_nonzero()), w.numel()
        # codes of the survivors only, 3 bits each; positions cost at most a bitmask
        assert payload_bytes(entry) <= math.ceil(nnz * 3 / 8) + 4 * 8 + math.ceil(n / 8), path


def test_centroid_finetune_moves_centroids_not_codes(data: DataBundle) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "mlp"}, data.input_shape, data.num_classes)
    stage = apply_method(
        model, parse_method({"name": "weight_sharing", "bits": 3}), MethodContext(data.input_shape)
    )
    stage.update(1.0)
    paths = list(prunable_weights(model))
    parts = {p: model.get_submodule(p).parametrizations.weight for p in paths}
    centroids = {p: parts[p].original.detach().clone() for p in paths}
    codes = {p: parts[p][0].codes.clone() for p in paths}
    distinct = {p: len(torch.unique(model.get_submodule(p).weight)) for p in paths}
    OneShot().run(
        stage, model,
        ScheduleContext(data, TrainRecipe(epochs=1, lr=0.001), RuntimeConfig(progress=False), 0),
    )  # fmt: skip
    for p in paths:
        assert not torch.equal(parts[p].original.detach(), centroids[p]), p  # trained
        assert torch.equal(parts[p][0].codes, codes[p]), p  # assignments fixed
    model = stage.finalize(model)
    for p, w in prunable_weights(model).items():
        assert len(torch.unique(w)) == distinct[p] <= 8, p


def test_centroid_finetune_does_not_lose_accuracy(outputs: Path, tmp_path: Path) -> None:
    shared = ["model=small_cnn", "method=weight_sharing"]
    untuned = pipeline(outputs, tmp_path / "a", *shared, "schedule.finetune.epochs=0")
    tuned = pipeline(outputs, tmp_path / "b", *shared)
    assert untuned.metrics["acc"] > 0.9
    assert tuned.metrics["acc"] >= untuned.metrics["acc"] - 0.05


# --- 5. stacks ----------------------------------------------------------------------------------


def test_deep_compression_is_smaller_than_either_stage(outputs: Path, tmp_path: Path) -> None:
    deep = pipeline(outputs, tmp_path / "deep", "model=small_cnn", "method=deep_compression")
    prune = pipeline(
        outputs, tmp_path / "prune", "model=small_cnn", "method=prune", "method.amount=0.92"
    )
    share = pipeline(
        outputs, tmp_path / "share", "model=small_cnn", "method=weight_sharing", "method.bits=5"
    )
    for name in ("baseline/bytes", "baseline/acc"):  # one baseline for all three
        assert deep.metrics[name] == prune.metrics[name] == share.metrics[name]
    assert deep.metrics["bytes"] < min(prune.metrics["bytes"], share.metrics["bytes"])
    # The pruned zeros survived weight sharing and its fine-tune; survivors share 32 values.
    model = load_artifact(deep.artifact)
    weights = prunable_weights(model)
    zeros = sum(w.numel() - int(w.count_nonzero()) for w in weights.values())
    sparsity = zeros / sum(w.numel() for w in weights.values())
    assert sparsity == pytest.approx(deep.metrics["sparsity"], abs=1e-9)
    assert sparsity == pytest.approx(0.92, abs=1e-3)
    for path, w in weights.items():
        assert len(torch.unique(w[w != 0])) <= 32, path
    stored = encodings(deep.artifact)
    assert all(stored[f"{p}.weight"] == "codebook" for p in weights)


# --- 7. bad input: one line, before training ----------------------------------------------------

BAD_INPUTS = {
    "bits 9": (["method=quantize_weights", "method.bits=9"], "method.bits must be an integer "
               "in 2..8, got 9"),
    "bits 1": (["method=quantize_weights", "method.bits=1"], "method.bits must be an integer "
               "in 2..8, got 1"),
    "no calibration": (["method=quantize_static", "method.calibration_batches=0"],
                       "method.calibration_batches must be >= 1"),
    "qat without fine-tune": (["method=qat", "schedule.finetune.epochs=0"],
                              "schedule.finetune.epochs must be >= 1, got 0"),
    "weight qat without fine-tune": (
        ["method=quantize_weights", "method.qat=true", "schedule.finetune.epochs=0"],
        "schedule.finetune.epochs must be >= 1, got 0"),
    "qat iterative": (["method=qat", "schedule=iterative"],
                      "method 'qat' is applied once: use schedule=oneshot"),
    "dynamic, every linear skipped": (["method=quantize_dynamic", "method.skip=[classifier]"],
                                      "no quantizable layer (Linear, LSTM, GRU)"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides, message = BAD_INPUTS[case]
    assert_refused_before_training(tmp_path, monkeypatch, list(overrides), message)


def test_int8_stage_must_be_the_last_of_a_stack() -> None:
    with pytest.raises(ConfigError, match="'qat' converts to int8 and must be the last stage"):
        parse_method({"name": "stack", "stages": {"qat": {}, "prune": {"amount": 0.5}}})


def test_no_quantizable_layer_names_the_layer_types() -> None:
    convs = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(ConfigError) as error:
        apply_method(convs, parse_method({"name": "quantize_dynamic"}), MethodContext((1, 8, 8)))
    message = str(error.value)
    assert "method 'quantize_dynamic'" in message and "(Linear, LSTM, GRU)" in message
    assert message.endswith("its layer types: Conv2d, Flatten, ReLU")


def test_bad_bits_on_the_command_line_is_one_line_and_no_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [COMPRESS, f"paths.outputs={tmp_path}", f"paths.data={tmp_path / 'data'}",
         "method=quantize_weights", "method.bits=9"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == ["compress: error: method.bits must be an integer in 2..8, got 9"]
    assert "baseline" not in done.stdout
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
    assert not (tmp_path / "cache").exists()


# --- recurrent layers ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dynamic_int8_recurrent_layers_round_trip(tmp_path: Path, cell: str) -> None:
    cfg = {"name": "rnn", "cell": cell, "hidden": 32, "layers": 2}
    shape = (1, 8, 8)
    model = build_model(cfg, shape, 10).eval()
    stage = apply_method(model, parse_method({"name": "quantize_dynamic"}), MethodContext(shape))
    stage.update(1.0)
    quantized = stage.finalize(model)
    rnn = eager(quantized).rnn
    assert type(rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")
    weights = rnn._weight_bias()["weight"]
    assert len(weights) == 4 and all(w.dtype == torch.qint8 for w in weights.values())
    path = tmp_path / "rnn.pt"
    size = save_artifact(
        quantized,
        path,
        model_config=cfg,
        input_shape=shape,
        num_classes=10,
        conversion=stage.conversion(),
    )
    dense = save_artifact(
        model, tmp_path / "dense.pt", model_config=cfg, input_shape=shape, num_classes=10
    )
    assert size < dense / 2.5  # int8 weights; float biases and headers take the rest
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_artifact(path)(x), quantized(x))
    # The recurrent weights count as parameters and as multiply-accumulates.
    assert count_params(quantized) == count_params(model)
    assert count_macs(quantized, shape).dense == count_macs(model, shape).dense > 0
