"""Every non-structured method on the ViT, for real.

Unstructured and 2:4 pruning, dynamic and weight-only int8 of every Linear layer (qkv,
proj, fc1, fc2, head), static int8 and QAT through PT2E (the exported graph keeps its batch
size free; attention's matmuls and softmax stay float), N-bit weights and weight sharing:
each touches the layers it claims, and its artifact gives back exactly the model it saved.
Dynamic int8 compiles to oneDNN's int8 linear even in a process that never ran PT2E.
Bad input on a ViT fails in one line before training.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchao.utils import TorchAOBaseTensor

from compress.artifact.store import encodings, load_artifact, read_payload, save_artifact
from compress.data import DataBundle, load_dataset
from compress.measure import count_params
from compress.methods import MethodContext, Stage, apply_method, parse_method
from compress.methods.masks import prunable_weights
from compress.models import build_model
from compress.quant.linear import eager
from compress.run.pipeline import run
from compress.train.loop import accuracy
from tests.support import QUICK, assert_refused_before_training, compose_config

VIT = {"name": "vit", "patch": 4, "dim": 16, "depth": 1, "heads": 2}
DIGITS = [
    "model=vit",
    *(f"model.{k}={v}" for k, v in VIT.items() if k != "name"),
    "dataset=digits",
    "tracking=none",
]
LINEARS = {
    "blocks.0.attn.qkv",
    "blocks.0.attn.proj",
    "blocks.0.mlp.fc1",
    "blocks.0.mlp.fc2",
    "head",
}
LAYERS = {"embed.proj", *LINEARS}  # the patch Linear: 16 inputs per output on 8x8 digits
#: A tiny ViT learns digits in a few seconds with AdamW (plain SGD barely moves it).
RECIPE = [
    "schedule.train.optimizer=adamw",
    "schedule.train.lr=0.003",
    "schedule.train.weight_decay=0",
    "schedule.train.epochs=8",
    "schedule.finetune.lr=0.001",
]
#: method -> options used here (static int8 calibrates on two batches: enough for a test).
METHODS: dict[str, dict[str, Any]] = {
    "prune": {},
    "prune_nm": {},
    "quantize_dynamic": {},
    "quantize_static": {"calibration_batches": 2},
    "qat": {},
    "quantize_weights": {"bits": 4},
    "quantize_weight_only": {},
    "weight_sharing": {"bits": 4},
}
#: Methods whose model is compiled by Inductor: each new batch size compiles (seconds).
COMPILED = ("quantize_dynamic", "quantize_static", "qat")

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset({"name": "digits"})


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One outputs folder for this module's pipeline runs: they share one cached baseline."""
    return tmp_path_factory.mktemp("outputs")


def compress_now(method: str, data: DataBundle) -> tuple[nn.Module, Stage]:
    """A fresh tiny ViT compressed by `method` at its full target, without fine-tuning."""
    torch.manual_seed(0)
    model = build_model(VIT, data.input_shape, data.num_classes)
    config = parse_method({"name": method, **METHODS[method]})
    stage = apply_method(model, config, MethodContext(data.input_shape, data, 64))
    stage.update(1.0)
    if method == "qat":  # fake quantizers learn their ranges in training forwards
        prepared = stage.training_module(model)
        prepared.train()
        with torch.no_grad():
            prepared(data.train.x[:256])
    return stage.finalize(model).eval(), stage


def save(model: nn.Module, path: Path, data: DataBundle, stage: Stage) -> int:
    return save_artifact(
        model,
        path,
        model_config=VIT,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        encodings=stage.encodings(),
        conversion=stage.conversion(),
    )


def touched(method: str, model: nn.Module, path: Path) -> set[str]:
    """The layers `method` compressed, read from the model it returned or its artifact."""
    inner = eager(model)
    if method in ("prune", "prune_nm"):
        return {p for p, w in prunable_weights(model).items() if bool((w == 0).any())}
    if method in ("quantize_static", "qat"):  # an int8 graph: int8 weights by layer
        buffers = inner.named_buffers()
        return {n.removesuffix(".weight") for n, t in buffers if t.dtype == torch.int8}
    if method in ("quantize_weights", "weight_sharing"):  # N-bit codes in the file
        kind = {"quantize_weights": "packed", "weight_sharing": "codebook"}[method]
        return {n.removesuffix(".weight") for n, e in encodings(path).items() if e == kind}
    weights = {p: getattr(m, "weight", None) for p, m in inner.named_modules()}
    return {p for p, w in weights.items() if isinstance(w, TorchAOBaseTensor)}


#: What each method compresses on the ViT: every Linear layer, the patch embedding's too;
#: attention's matmuls have no weights and stay float.
EXPECTED = dict.fromkeys(METHODS, LAYERS)


@pytest.mark.parametrize("method", METHODS)
def test_method_compresses_the_vit_and_its_artifact_gives_it_back(
    tmp_path: Path, digits: DataBundle, method: str
) -> None:
    model, stage = compress_now(method, digits)
    path = tmp_path / "model.pt"
    save(model, path, digits, stage)
    loaded = load_artifact(path)
    assert type(loaded) is type(model)
    assert touched(method, model, path) == touched(method, loaded, path) == EXPECTED[method]
    x = digits.test.x[:64]
    with torch.no_grad():  # compiled models compared as they were saved (compiling takes s)
        assert torch.equal(eager(loaded)(x), eager(model)(x))


@pytest.mark.parametrize(
    ("exclude", "pruned"),
    [([], LAYERS), (["embed?proj", "head"], LINEARS - {"head"})],
    ids=["default", "ends dense"],
)
def test_2_of_4_on_the_vit_keeps_two_of_every_four_inputs(
    exclude: list[str], pruned: set[str]
) -> None:
    """By default every layer whose inputs come in fours (the patch Linear's 16 pixels, the
    head's dim) is 2:4; excluding the ends leaves 2:4 in the blocks' Linear layers."""
    torch.manual_seed(0)
    model = build_model(VIT, (1, 8, 8), 10)
    config = parse_method({"name": "prune_nm", "exclude": exclude})
    apply_method(model, config, MethodContext((1, 8, 8))).update(1.0)
    weights = prunable_weights(model)
    for path, weight in weights.items():
        groups = (weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1)
        assert bool((groups == 2).all()) == (path in pruned), path
        assert bool((groups == 4).all()) == (path not in pruned), path


def test_dynamic_int8_vit_file_is_its_codes_and_floats_and_little_else(
    tmp_path: Path, digits: DataBundle
) -> None:
    """Each Linear's int8 codes by name; scales, zero points, biases, norms and positions
    joined per dtype: a few hundred bytes of bookkeeping, not one entry per tensor."""
    model, stage = compress_now("quantize_dynamic", digits)
    path = tmp_path / "model.pt"
    size = save(model, path, digits, stage)
    tensors = read_payload(path)["tensors"]
    assert set(tensors) == {f"{p}.weight.qdata" for p in LAYERS} | {
        "joined/float32",
        "joined/int8",
    }
    layers = [stage.float_model.get_submodule(p) for p in LAYERS]
    codes = sum(layer.weight.numel() for layer in layers)
    floats = count_params(stage.float_model) - codes + sum(layer.out_features for layer in layers)
    assert size <= codes + 4 * floats + 4096  # 1 byte a code, 4 a float (a scale per channel)


def test_dynamic_int8_artifact_written_before_the_join_still_loads() -> None:
    """A dynamic int8 file from before the small tensors were joined (an MLP's, written by
    that release's code) gives its logits."""
    expected = torch.load(DATA / "legacy_torchao_linear_mlp.expected.pt", weights_only=True)
    loaded = load_artifact(DATA / "legacy_torchao_linear_mlp.pt")
    with torch.no_grad():
        assert torch.equal(eager(loaded)(expected["x"]), expected["logits"])


# --- end to end: the pipeline on digits, the file it saved is the model it measured -------


def pipeline(outputs: Path, run_dir: Path, *overrides: str) -> Any:
    cfg = compose_config(outputs, *QUICK, *DIGITS, *RECIPE, *overrides, run_dir=run_dir)
    return run(cfg)


#: The compiled models compile once per batch size the pipeline sees (eval and latency
#: batches): tens of seconds on two cores, so they run with the slow tests.
END_TO_END = [pytest.param(m, marks=pytest.mark.slow) if m in COMPILED else m for m in METHODS]


@pytest.mark.parametrize("method", END_TO_END)
def test_each_method_runs_on_the_vit_end_to_end(
    outputs: Path, tmp_path: Path, digits: DataBundle, method: str
) -> None:
    options = [f"method.{k}={v}" for k, v in METHODS[method].items()]
    result = pipeline(outputs, tmp_path / "run", f"method={method}", *options)
    m = result.metrics
    assert m["baseline/acc"] > 0.6, m  # the tiny ViT learned digits (chance: 0.1)
    assert m["acc_drop"] <= 0.1, m
    assert 0 < m["bytes"] < m["baseline/bytes"]
    loaded = load_artifact(result.artifact)
    assert accuracy(loaded, digits.test) == m["acc"]  # what was logged is the file's


# --- dynamic int8 compiles to oneDNN's int8 linear on its own -----------------------------

KERNELS = textwrap.dedent(
    """
    import sys, torch
    from torch._inductor.utils import run_and_get_code
    from compress.models import build_model
    from compress.quant import linear

    torch.manual_seed(0)
    model = build_model({vit!r}, (1, 8, 8), 10).eval()
    int8 = linear.quantize(model, linear.recipe(model, "dynamic"))
    registering = "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"
    assert registering not in sys.modules, "imported before the compile: this test proves nothing"
    _, code = run_and_get_code(int8, torch.randn(4, 1, 8, 8))
    print("\\n".join(code))
    """
)


@pytest.mark.slow  # a fresh process and one compile: ~30 s on two quiet cores
def test_dynamic_int8_compiles_to_onednn_int8_linear_in_a_fresh_process(tmp_path: Path) -> None:
    """In a process that never ran PT2E, where torchao's Inductor patterns were not yet
    registered: every Linear becomes oneDNN's int8 linear, none a bare `_int_mm`."""
    script = tmp_path / "kernels.py"
    script.write_text(KERNELS.format(vit=VIT))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    calls = re.findall(r"= torch\.ops\.onednn\.qlinear_pointwise\.\w+\(", done.stdout)
    assert len(calls) == len(LAYERS), done.stdout[-2000:]
    assert "_int_mm" not in done.stdout


# --- bad input on a ViT: one line, before training ----------------------------------------


def vit_with(**options: Any) -> list[str]:
    """The tiny ViT's overrides with `options` changed."""
    return ["model=vit", *(f"model.{k}={v}" for k, v in {**VIT, **options}.items() if k != "name")]


REFUSED = {
    "2:4 of a patch embedding with 1 input": (
        [*vit_with(patch=1), "method=prune_nm", "method.strict=true"],
        "method 'prune_nm': inputs per output of embed.proj are not a multiple of m=4",
    ),
    "every Linear skipped": (
        [*vit_with(), "method=quantize_dynamic", "method.skip=[embed*,blocks*,head]"],
        "method 'quantize_dynamic': the model has no quantizable layer (Linear, LSTM, GRU)",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_on_the_vit_in_one_line_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides, message = REFUSED[case]
    assert_refused_before_training(tmp_path, monkeypatch, overrides, message)
