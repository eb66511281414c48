"""Measurements: parameter and MAC counts by hand, latency settings, thread count, ratios,
and the probes of `measure.probes` (parsed from config, and on in one end-to-end run)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.data import load_dataset
from compress.errors import ConfigError
from compress.measure import (
    Measurement,
    ProbeContext,
    compare,
    count_macs,
    count_nonzero,
    count_params,
    latency_ms,
    measure_model,
    paired_latency_ms,
    run_probes,
    torch_threads,
)
from compress.measure.config import MeasureConfig
from compress.models import build_model
from compress.run.pipeline import run
from compress.train.loop import accuracy
from tests.support import QUICK, compose_config, mlflow_runs


@pytest.fixture(autouse=True)
def _keep_thread_count():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# --- parameters ---------------------------------------------------------------------------------


def _mlp() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    return model


def test_count_params_and_nonzero_by_hand() -> None:
    model = _mlp()
    assert count_params(model) == (4 * 3 + 3) + (3 * 2 + 2) == 23
    assert count_nonzero(model) == 23
    with torch.no_grad():
        model[0].weight[0, :] = 0  # 4 weights
        model[0].weight[2, 1] = 0  # 1 weight
        model[2].bias[1] = 0  # 1 bias
    assert count_params(model) == 23
    assert count_nonzero(model) == 23 - 6


def test_count_params_includes_bn_but_not_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4))
    assert count_params(model) == 4 * 2 * 9 + 4 + 4


# --- MACs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "input_shape", "expected"),
    [
        (nn.Linear(10, 20), (10,), 200),
        (nn.Linear(10, 20, bias=False), (10,), 200),
        (nn.Conv2d(3, 8, 3, padding=1), (3, 5, 5), 5 * 5 * 8 * 3 * 3 * 3),
        (nn.Conv2d(3, 8, 3), (3, 5, 5), 3 * 3 * 8 * 3 * 3 * 3),
        (nn.Conv2d(3, 8, 3, stride=2), (3, 7, 7), 3 * 3 * 8 * 3 * 3 * 3),
        # depthwise: every output channel sees one input channel
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 6, 6), 6 * 6 * 4 * 1 * 3 * 3),
        # two groups: each output channel sees 4 / 2 input channels
        (nn.Conv2d(4, 8, 3, groups=2), (4, 6, 6), 4 * 4 * 8 * 2 * 3 * 3),
        (nn.Conv1d(2, 4, 3), (2, 10), 8 * 4 * 2 * 3),
        # a linear layer applied at each of 5 sequence positions
        (nn.Linear(10, 20), (5, 10), 5 * 10 * 20),
    ],
    ids=[
        "linear",
        "linear-nobias",
        "conv-pad",
        "conv-valid",
        "conv-stride",
        "depthwise",
        "grouped",
        "conv1d",
        "linear-seq",
    ],
)
def test_count_macs_single_layer(layer: nn.Module, input_shape: tuple[int, ...], expected: int):
    macs = count_macs(layer, input_shape)
    assert macs.dense == expected
    assert macs.nonzero == expected  # default init has no exact zero


def test_count_macs_sums_layers_and_ignores_other_ops() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8*8 * 4*1*9 = 2304
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),  # 640
    )
    macs = count_macs(model, (1, 8, 8))
    assert macs.dense == 2304 + 640


def test_count_macs_nonzero_after_zeroing_known_weights() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 5 * 5, 10))
    with torch.no_grad():
        model[0].weight[0] = 0  # a whole output channel: 27 weights at 25 positions
        model[0].weight[5, 1, 2, 0] = 0  # one more conv weight
        model[2].weight[:, :7] = 0  # 70 linear weights at one position
        model[0].bias.zero_()  # biases are not multiplications
    macs = count_macs(model, (3, 5, 5))
    conv, linear = 5 * 5 * 8 * 27, 200 * 10
    assert macs.dense == conv + linear
    assert macs.nonzero == conv - 25 * 28 + linear - 70


def test_count_macs_nonzero_for_sequence_linear() -> None:
    layer = nn.Linear(10, 20)
    with torch.no_grad():
        layer.weight[:3] = 0  # 30 weights, used at each of 5 positions
    assert count_macs(layer, (5, 10)).nonzero == 5 * (200 - 30)


@pytest.mark.parametrize("training", [True, False])
def test_count_macs_keeps_mode_and_state(training: bool) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (1, 6, 6))
    assert all(m.training == training for m in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name  # BN statistics untouched
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def _mixed_mode_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))
    model.train()
    model[1].eval()  # a frozen BN inside a model that is training
    return model


def test_count_macs_keeps_each_submodule_mode() -> None:
    model = _mixed_mode_model()
    count_macs(model, (1, 6, 6))
    assert model.training and not model[1].training


def test_latency_keeps_each_submodule_mode() -> None:
    model = _mixed_mode_model()
    latency_ms(model, (1, 6, 6), 1, MeasureConfig(warmup=0, repeats=1))
    assert model.training and not model[1].training


# --- latency and threads ------------------------------------------------------------------------


class _Recorder(nn.Module):
    """A linear layer that records every call: batch size and thread count."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 2)
        self.calls: list[tuple[int, int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.get_num_threads(), self.training))
        return self.linear(x)


def test_latency_is_positive_float() -> None:
    result = latency_ms(nn.Linear(8, 2), (8,), 4, MeasureConfig(warmup=1, repeats=3))
    assert isinstance(result, float)
    assert result > 0


@pytest.mark.parametrize(("warmup", "repeats"), [(0, 1), (2, 5), (3, 7)])
def test_latency_runs_warmup_plus_repeats(warmup: int, repeats: int) -> None:
    model = _Recorder()
    settings = MeasureConfig(warmup=warmup, repeats=repeats, max_seconds=60.0)
    latency_ms(model, (8,), 4, settings)
    assert len(model.calls) == warmup + repeats


def test_latency_stops_at_the_time_budget_after_three_repeats() -> None:
    model = _Recorder()
    settings = MeasureConfig(warmup=1, repeats=1000, max_seconds=1e-9)
    latency_ms(model, (8,), 2, settings)
    assert len(model.calls) == 1 + 3


def test_latency_uses_batch_size_threads_and_eval_mode_then_restores() -> None:
    torch.set_num_threads(3)
    model = _Recorder().train()
    latency_ms(model, (8,), 5, MeasureConfig(threads=2, warmup=1, repeats=2))
    assert model.calls == [(5, 2, False)] * 3
    assert model.training
    assert torch.get_num_threads() == 3


def test_torch_threads_sets_and_restores() -> None:
    torch.set_num_threads(3)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3


def test_torch_threads_restores_after_exception() -> None:
    torch.set_num_threads(3)
    with pytest.raises(RuntimeError, match="boom"), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 3


# --- compare ------------------------------------------------------------------------------------


BASE = Measurement(
    acc=0.9,
    params=1000,
    nonzeros=990,
    macs=5000,
    macs_nonzero=4900,
    bytes=4000,
    latency_ms={256: 40.0, 1: 2.0},
)
OURS = Measurement(
    acc=0.85,
    params=1000,
    nonzeros=100,
    macs=5000,
    macs_nonzero=800,
    bytes=1000,
    latency_ms={256: 10.0, 1: 4.0},
)


def test_compare_ratios_by_hand() -> None:
    m = compare(BASE, OURS)
    assert set(m) == {
        "baseline/acc", "acc", "acc_drop",
        "baseline/params", "params", "nonzeros",
        "baseline/macs", "macs", "macs/nonzero",
        "baseline/bytes", "bytes",
        "ratio/params", "ratio/size", "ratio/macs",
        "baseline/latency_ms/b1", "latency_ms/b1", "speedup/latency/b1",
        "baseline/latency_ms/b256", "latency_ms/b256", "speedup/latency/b256",
        "speedup/latency",
    }  # fmt: skip
    assert m["ratio/params"] == 1000 / 100 == 10.0  # baseline params / our nonzeros
    assert m["ratio/size"] == 4000 / 1000 == 4.0
    assert m["ratio/macs"] == 5000 / 800 == 6.25  # baseline dense / our nonzero MACs
    assert m["speedup/latency/b1"] == 2.0 / 4.0 == 0.5
    assert m["speedup/latency/b256"] == 40.0 / 10.0 == 4.0
    assert m["speedup/latency"] == 4.0  # the largest batch, not the last or first listed
    assert m["acc_drop"] == pytest.approx(0.05)
    assert m["acc"] == 0.85 and m["baseline/acc"] == 0.9
    assert m["nonzeros"] == 100 and m["macs/nonzero"] == 800
    assert m["baseline/latency_ms/b1"] == 2.0 and m["latency_ms/b256"] == 10.0


def test_compare_largest_batch_when_listed_last() -> None:
    ours = Measurement(0.5, 10, 10, 10, 10, 10, {1: 1.0, 8: 20.0})
    base = Measurement(0.5, 10, 10, 10, 10, 10, {1: 3.0, 8: 10.0})
    m = compare(base, ours)
    assert m["speedup/latency"] == 0.5
    assert m["acc_drop"] == 0.0
    assert m["ratio/params"] == m["ratio/size"] == m["ratio/macs"] == 1.0


def test_compare_guards_zero_nonzeros() -> None:
    ours = Measurement(0.1, 10, 0, 10, 0, 5, {1: 1.0})
    m = compare(BASE, ours)
    assert m["ratio/params"] == 1000
    assert m["ratio/macs"] == 5000
    assert m["acc_drop"] == pytest.approx(0.8)


# --- measure_model ------------------------------------------------------------------------------

SETTINGS = MeasureConfig(batch_sizes=(1, 4), warmup=0, repeats=2, max_seconds=0.5)


@pytest.fixture(scope="module")
def fake_data():
    return load_dataset({"name": "fake", "num_train": 64, "num_test": 50, "shape": [1, 8, 8]})


def test_measure_model_on_small_cnn(fake_data) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn", "channels": [4, 8]}, fake_data.input_shape, 10)
    m = measure_model(model, fake_data, 1234, SETTINGS)
    assert 0.0 <= m.acc <= 1.0
    assert m.acc == accuracy(model, fake_data.test)
    assert m.params == count_params(model)
    assert m.nonzeros == count_nonzero(model) == m.params - 12  # BN biases start at zero
    macs = count_macs(model, fake_data.input_shape)
    assert (m.macs, m.macs_nonzero) == (macs.dense, macs.nonzero)
    assert m.bytes == 1234
    assert set(m.latency_ms) == {1, 4}
    assert all(v > 0 for v in m.latency_ms.values())


def test_measure_model_accuracy_of_a_constant_classifier(fake_data) -> None:
    """A model that always answers class 3 is right exactly on the samples labelled 3."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[3] = 1.0
    m = measure_model(model, fake_data, 1, SETTINGS)
    expected = (fake_data.test.y == 3).float().mean().item()
    assert 0 < expected < 1
    assert m.acc == pytest.approx(expected)
    assert m.params == 650 and m.nonzeros == 1
    assert m.macs == 640 and m.macs_nonzero == 0


def test_paired_latency_times_each_model_in_turn() -> None:
    fast = nn.Linear(256, 256)
    slow = nn.Sequential(*[nn.Linear(256, 256) for _ in range(20)])
    calls = {"fast": 0, "slow": 0}
    fast.register_forward_hook(lambda *_: calls.__setitem__("fast", calls["fast"] + 1))
    slow.register_forward_hook(lambda *_: calls.__setitem__("slow", calls["slow"] + 1))
    settings = MeasureConfig(warmup=2, repeats=5, max_seconds=60)
    fast_ms, slow_ms = paired_latency_ms([fast, slow], (256,), 64, settings)
    assert calls == {"fast": 7, "slow": 7}
    assert slow_ms > 3 * fast_ms


# --- probes -------------------------------------------------------------------------------------


def test_probes_default_to_compiled_for_int8_models_and_onnx() -> None:
    probes = MeasureConfig().probes
    assert [p.name for p in probes] == ["compiled", "onnx"]
    assert probes[0].when == "converted"


def test_probes_take_names_and_mappings_with_options() -> None:
    probes = MeasureConfig(probes=[{"name": "compiled", "when": "always"}, "onnx"]).probes
    assert [(p.name, getattr(p, "when", None)) for p in probes] == [
        ("compiled", "always"),
        ("onnx", None),
    ]
    assert MeasureConfig(probes=[]).probes == ()


@pytest.mark.parametrize(
    ("probes", "words"),
    [
        ("onnx", ["measure.probes must be a list", "compiled, onnx"]),
        (["onnx", "nope"], ["measure.probes[1]", "unknown probe 'nope'", "compiled, onnx"]),
        ([{"when": "always"}], ["measure.probes[0]", "unknown probe 'None'"]),
        ([{"name": "compiled", "wen": "always"}], ["measure.probes[0]", "wen", "valid: when"]),
        ([{"name": "compiled", "when": "never"}], ["when", "converted, always", "'never'"]),
        ([3], ["measure.probes[0]", "probe name or a mapping"]),
        (["onnx", "compiled", "onnx"], ["lists onnx more than once"]),
    ],
    ids=["not-a-list", "unknown", "no-name", "unknown-option", "bad-when", "number", "twice"],
)
def test_bad_probes_fail_in_one_line(probes, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        MeasureConfig(probes=probes)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def _context(data, converted: bool, folder: Path) -> ProbeContext:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return ProbeContext(model, model, data, SETTINGS, torch.device("cpu"), converted, folder)


def test_compiled_probe_waits_for_an_int8_model_unless_always(fake_data, tmp_path: Path) -> None:
    """`when: converted` skips float models (no compile is paid); the other probes still run."""
    probes = MeasureConfig(probes=["compiled"]).probes
    result = run_probes(probes, _context(fake_data, converted=False, folder=tmp_path))
    assert (result.metrics, result.tags, result.files) == ({}, {}, [])
    assert list(tmp_path.iterdir()) == []


#: The compiled and ONNX figures of one run, each batch size and the headline ones.
PROBED = [
    "baseline/latency_ms_compiled/b1",
    "baseline/latency_ms_compiled/b16",
    "speedup/latency_vs_compiled/b1",
    "speedup/latency_vs_compiled/b16",
    "speedup/latency_vs_compiled",
    "onnx/latency_ms/b1",
    "onnx/latency_ms/b16",
    "baseline/onnx/latency_ms/b1",
    "baseline/onnx/latency_ms/b16",
    "speedup/onnx/b1",
    "speedup/onnx/b16",
    "onnx/acc",
]


def test_pipeline_with_compiled_and_onnx_probes_logs_their_figures(tmp_path: Path) -> None:
    """The default probes, compiled forced on, through `pipeline.run` on digits: every
    figure logged and finite, the ONNX file kept, loadable, and as accurate as the artifact."""
    import onnxruntime

    outputs = tmp_path / "outputs"
    cfg = compose_config(
        outputs,
        *QUICK,
        "model=mlp",
        "model.hidden=[16]",
        "schedule.train.epochs=1",
        "schedule.finetune.epochs=1",
        "measure.batch_sizes=[1,16]",
        "measure.probes=[{name:compiled,when:always},onnx]",
    )
    result = run(cfg)

    for key in PROBED:
        assert math.isfinite(result.metrics[key]) and result.metrics[key] > 0, key
    assert (
        result.metrics["speedup/latency_vs_compiled"]
        == (result.metrics["speedup/latency_vs_compiled/b16"])
    )
    # Same weights, same data: the exported file classifies as the artifact does.
    assert result.metrics["onnx/acc"] == pytest.approx(result.metrics["acc"], abs=0.01)
    onnx_file = result.run_dir / "model.onnx"
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: torch.zeros(2, 1, 8, 8).numpy()})
    assert output.shape == (2, 10)
    assert not (result.run_dir / "baseline.onnx").exists()

    (mlrun,) = mlflow_runs(outputs)
    for key in PROBED:
        assert mlrun.data.metrics[key] == result.metrics[key], key
    assert "onnx.error" not in mlrun.data.tags
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")
    logged = {f.path for f in client.list_artifacts(mlrun.info.run_id, "model")}
    assert "model/model.onnx" in logged
