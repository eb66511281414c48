"""Distillation end to end: every `distill` option drives the fine-tune of any method.

Each option runs with pruning and puts its loss terms in every fine-tune step; the teacher
(the baseline, a separate model trained and cached like a baseline, or a saved artifact)
is reported with its own figures; `method=student` saves the student's architecture; the
teacher's outputs are computed once and looked up, never recomputed per step; hint
adapters are learned where shapes differ; KD stacks with iterative and gradual pruning,
QAT and distill-then-quantize; bad input fails in one line before any training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchao.utils import TorchAOBaseTensor

import compress.distill.objective as objective_module
from compress.artifact.store import load_artifact, read_payload, save_artifact
from compress.data import DataBundle
from compress.distill.config import DistillConfig
from compress.distill.objective import DistillObjective
from compress.distill.taps import recording
from compress.distill.teacher import Teacher
from compress.errors import ConfigError
from compress.measure import count_params
from compress.models import build_model
from compress.quant.linear import eager
from compress.run.pipeline import Result, run
from compress.train.loop import accuracy, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, assert_refused_before_training, compose_config, mlflow_runs

FAKE = ["dataset=fake", "tracking=none"]
OPTIONS = ["none", "kd", "fitnets", "attention", "relational"]
TEACHER = ("teacher/acc", "teacher/params", "teacher/bytes")
LOSSES = ("response_kd", "hint_mse", "attention_transfer", "rkd_distance", "rkd_angle")
#: Loss terms each option adds to a training step (attention has two taps by default).
TERMS = {
    "none": {},
    "kd": {"response_kd": 1},
    "fitnets": {"response_kd": 1, "hint_mse": 1},
    "attention": {"response_kd": 1, "attention_transfer": 2},
    "relational": {"response_kd": 1, "rkd_distance": 1, "rkd_angle": 1},
}
STUDENT = {"name": "mlp", "hidden": [128]}  # conf/method/student.yaml
SMALL_STUDENT = ["~method.model", "+method.model={name:small_cnn,channels:[8,16,32]}"]
DISTILL_THEN_QUANTIZE = [
    "method=stack",
    "~method.stages",
    "+method.stages={student:{model:{name:mlp,hidden:[32]}},quantize_dynamic:{}}",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def steps(data: DataBundle) -> int:
    """Optimizer steps of a QUICK fine-tune: 2 epochs of batches of 64."""
    return 2 * math.ceil(len(data.train) / 64)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One outputs folder for this module's pipeline runs, so they share cached baselines."""
    return tmp_path_factory.mktemp("outputs")


def pipeline(outputs: Path, run_dir: Path, *overrides: str) -> Result:
    return run(compose_config(outputs, *QUICK, *FAKE, *overrides, run_dir=run_dir))


#: Feature losses also run once in each probe of the taps (before training, and when the
#: fine-tune's objective is built), on a small batch that checks shapes.
PROBES = 2


def spy_losses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Calls of each distillation loss (and of the teacher's forward) from now on."""
    calls: Counter[str] = Counter()

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    for name in LOSSES:
        monkeypatch.setattr(objective_module, name, counted(name, getattr(objective_module, name)))
    monkeypatch.setattr(Teacher, "run", counted("teacher.run", Teacher.run))
    return calls


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    return spy_losses(monkeypatch)


@pytest.fixture(scope="module")
def control(outputs: Path) -> Result:
    """`method=prune` fine-tuned with cross-entropy alone."""
    return pipeline(outputs, outputs / "control", "distill=none")


def state(path: Path) -> dict[str, torch.Tensor]:
    return load_artifact(path).state_dict()


def same_weights(a: Path, b: Path) -> bool:
    first, second = state(a), state(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def losses_only(calls: Counter[str]) -> dict[str, int]:
    return {name: n for name, n in calls.items() if name in LOSSES}


def teacher_figures(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name.startswith("teacher/")}


def assert_teacher_is_the_baseline(metrics: dict[str, float]) -> None:
    assert set(teacher_figures(metrics)) == set(TEACHER)
    for name in TEACHER:
        assert metrics[name] == metrics[name.replace("teacher/", "baseline/")], name


# --- 1. every option, end to end with pruning ---------------------------------------------------


@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_runs_end_to_end(
    outputs: Path,
    tmp_path: Path,
    control: Result,
    monkeypatch: pytest.MonkeyPatch,
    steps: int,
    option: str,
) -> None:
    if option == "none":
        result, calls = control, Counter[str]()  # none builds no objective: nothing to count
    else:
        calls = spy_losses(monkeypatch)
        result = pipeline(outputs, tmp_path / "run", f"distill={option}")
    m = result.metrics
    assert 0 <= m["baseline/acc"] <= 1 and 0 <= m["acc"] <= 1
    assert m["acc"] > 0.5, m  # the baseline is near 1.0; an 80%-pruned fine-tune keeps most
    assert m["sparsity"] == pytest.approx(0.8, abs=1e-3)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert teacher_figures(summary["metrics"]) == teacher_figures(m)
    if option == "none":
        assert teacher_figures(m) == {}
        return
    assert_teacher_is_the_baseline(m)  # the teacher is the baseline: its figures
    # Every fine-tune step used every loss term of the option (feature terms also run once
    # in each probe of the taps: the check before training and the fine-tune's own) ...
    assert losses_only(calls) == {
        name: n * (steps + (PROBES if name != "response_kd" else 0))
        for name, n in TERMS[option].items()
    }
    # ... so the fine-tuned weights differ from those of cross-entropy alone.
    assert not same_weights(result.artifact, control.artifact)


# --- 2. method=student --------------------------------------------------------------------------


def test_student_saves_the_student_architecture(
    outputs: Path,
    tmp_path: Path,
    data: DataBundle,
    monkeypatch: pytest.MonkeyPatch,
    steps: int,
) -> None:
    student_params = count_params(build_model(STUDENT, data.input_shape, data.num_classes))
    results, counts = {}, {}
    for option in ("none", "kd"):
        with monkeypatch.context() as patch:
            counts[option] = spy_losses(patch)
            results[option] = pipeline(
                outputs, tmp_path / option, "method=student", f"distill={option}"
            )
    for option, result in results.items():
        m = result.metrics
        assert 0 <= m["acc"] <= 1 and m["acc"] > 0.2, (option, m)  # twice chance
        assert read_payload(result.artifact)["model"]["config"] == STUDENT
        model = load_artifact(result.artifact)
        assert isinstance(model, nn.Sequential)  # an mlp, not the baseline's small_cnn
        assert count_params(model) == student_params == m["params"]
        assert student_params != m["baseline/params"]
        assert m["ratio/params"] == pytest.approx(m["baseline/params"] / m["nonzeros"])
        assert m["ratio/params"] == pytest.approx(m["baseline/params"] / student_params, rel=1e-3)
        assert accuracy(model, data.test) == m["acc"]  # the figure is that of the file
    assert teacher_figures(results["none"].metrics) == {}
    assert_teacher_is_the_baseline(results["kd"].metrics)
    assert losses_only(counts["none"]) == {}
    assert losses_only(counts["kd"]) == {"response_kd": steps}
    # Same initial student (method.seed), different loss: different weights.
    assert not same_weights(results["none"].artifact, results["kd"].artifact)


# --- 3. where the teacher comes from ------------------------------------------------------------


def test_separate_teacher_is_trained_once_and_cached(
    outputs: Path,
    tmp_path: Path,
    data: DataBundle,
    control: Result,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="compress.run.baseline")
    teacher = ["distill=kd", "distill.teacher={name:mlp,hidden:[64,64]}"]
    baselines = outputs / "cache" / "baselines"
    artifacts = outputs / "cache" / "baseline_artifacts"
    before = set(baselines.glob("*.pt"))  # the control trained the small_cnn baseline
    results: list[Result] = []
    events: list[tuple[int, int]] = []
    files: list[dict[str, int]] = []
    for index in range(2):
        caplog.clear()
        results.append(pipeline(outputs, tmp_path / f"run{index}", *teacher))
        messages = [r.getMessage() for r in caplog.records]
        events.append(
            (sum("trained in" in m for m in messages), sum("reusing" in m for m in messages))
        )
        files.append({p.name: p.stat().st_mtime_ns for p in baselines.glob("*.pt")})
    # First run: the baseline reused, the teacher trained; second run: both reused.
    assert events == [(1, 1), (0, 2)]
    added = set(files[0]) - {p.name for p in before}
    assert len(added) == 1  # the teacher's weights, cached like a baseline
    assert files[1] == files[0]  # nothing written again
    teacher_file = artifacts / added.pop()
    first, second = (teacher_figures(r.metrics) for r in results)
    assert first == second  # the same teacher, the same figures
    teacher_params = count_params(build_model({"name": "mlp", "hidden": [64, 64]}, (1, 8, 8), 10))
    assert first["teacher/params"] == teacher_params != results[0].metrics["baseline/params"]
    saved = load_artifact(teacher_file)
    assert count_params(saved) == teacher_params
    assert first["teacher/bytes"] == teacher_file.stat().st_size
    assert first["teacher/acc"] == accuracy(saved, data.test)
    # Training the teacher or loading it from the cache gives the same student (on the
    # CPU: CUDA kernels are not bit-reproducible, not even between two plain runs).
    if not torch.cuda.is_available():
        assert same_weights(results[0].artifact, results[1].artifact)
        assert results[0].metrics["acc"] == results[1].metrics["acc"]
    # And it is another teacher than the baseline: another fine-tune than KD from it.
    assert not same_weights(results[0].artifact, control.artifact)


def test_teacher_from_a_saved_artifact(
    outputs: Path,
    tmp_path: Path,
    data: DataBundle,
    control: Result,
) -> None:
    earlier = control.artifact  # the model.pt of an earlier run (80% pruned)
    result = pipeline(
        outputs, tmp_path / "run", "distill=kd", f"distill.teacher_artifact={earlier}"
    )
    saved, m = load_artifact(earlier), result.metrics
    assert m["teacher/bytes"] == earlier.stat().st_size == control.metrics["bytes"]
    assert m["teacher/params"] == count_params(saved)
    assert m["teacher/acc"] == accuracy(saved, data.test) == control.metrics["acc"]
    assert m["teacher/bytes"] != result.metrics["baseline/bytes"]
    assert 0.5 < result.metrics["acc"] <= 1


# --- 4. the teacher's outputs are computed once -------------------------------------------------


def _pieces(data: DataBundle, hints: bool) -> tuple[Teacher, nn.Module, DistillObjective]:
    torch.manual_seed(0)
    teacher = Teacher(build_model({"name": "small_cnn"}, data.input_shape, 10), batch_size=128)
    student = build_model({"name": "small_cnn", "channels": [8, 16, 32]}, data.input_shape, 10)
    config = DistillConfig(hint_weight=1.0, hints={"features.1": "features.1"} if hints else None)
    return teacher, student, DistillObjective(config, teacher, student, data.input_shape)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "uncached"])
def test_teacher_runs_once_per_row_when_cached(data: DataBundle, steps: int, cached: bool) -> None:
    teacher, student, objective = _pieces(data, hints=True)
    assert teacher.forward_batches == 1  # the probe that sized the hint adapter
    if cached:
        teacher.cache_train(data.train)
        # The train split in batches of 128 (the first one also sizes the cache).
        assert teacher.forward_batches == 1 + math.ceil(len(data.train) / 128)
    seen: list[int] = []
    fit(
        student, data, TrainRecipe(epochs=2, lr=0.01), RuntimeConfig(progress=False),
        seed=0, label="distill", after_step=lambda: seen.append(teacher.forward_batches),
        objective=objective,
    )  # fmt: skip
    assert len(seen) == steps
    start = 1 + math.ceil(len(data.train) / 128) if cached else 1
    per_step = 0 if cached else 1
    assert seen == [start + per_step * (i + 1) for i in range(steps)]


def test_cached_outputs_equal_a_direct_forward(data: DataBundle) -> None:
    teacher, _, _ = _pieces(data, hints=True)
    teacher.cache_train(data.train)
    assert teacher.cache is not None
    cached_logits, cached_features = teacher.cache
    model = teacher.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad(), recording(model, ["features.1"]) as features:
        logits = model(data.train.x)
    torch.testing.assert_close(cached_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached_features["features.1"], features["features.1"])
    # A batch is looked up by its rows of the train split, not recomputed.
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:64]
    before = teacher.forward_batches
    looked_up, by_tap = teacher.outputs(data.train.x[idx], idx)
    assert teacher.forward_batches == before
    torch.testing.assert_close(looked_up, logits[idx], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(by_tap["features.1"], features["features.1"][idx])
    # Other taps drop the cache (it holds the old taps' features only).
    teacher.use_taps(["features.3"])
    assert teacher.cache is None


# --- 5. hint adapters ---------------------------------------------------------------------------


def test_hint_between_different_shapes_learns_an_adapter(data: DataBundle) -> None:
    torch.manual_seed(0)
    teacher = Teacher(build_model({"name": "small_cnn"}, data.input_shape, 10))
    student = build_model({"name": "small_cnn", "channels": [8, 16, 32]}, data.input_shape, 10)
    hints = {"features.1": "features.1", "features.3": "features.3", "classifier": "classifier"}
    config = DistillConfig(hint_weight=1.0, hints=hints)
    objective = DistillObjective(config, teacher, student, data.input_shape)
    adapters = dict(objective.adapters.items())
    assert set(adapters) == {"features_1->features_1", "features_3->features_3",
                             "classifier->classifier"}  # fmt: skip
    conv1, conv3 = adapters["features_1->features_1"], adapters["features_3->features_3"]
    assert isinstance(conv1, nn.Conv2d) and (conv1.in_channels, conv1.out_channels) == (16, 32)
    assert conv1.kernel_size == (1, 1)
    assert isinstance(conv3, nn.Conv2d) and (conv3.in_channels, conv3.out_channels) == (32, 64)
    assert isinstance(adapters["classifier->classifier"], nn.Identity)  # (N, 10) both
    params = objective.parameters()
    assert {id(p) for p in params} == {id(p) for p in [*conv1.parameters(), *conv3.parameters()]}
    before = [p.detach().clone() for p in params]
    frozen = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    fit(
        student, data, TrainRecipe(epochs=1, lr=0.01), RuntimeConfig(progress=False),
        seed=0, label="distill", objective=objective,
    )  # fmt: skip
    for old, new in zip(before, params, strict=True):
        assert not torch.equal(old, new.detach())  # trained with the student
    now = teacher.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in frozen.items())  # the teacher is not


def test_hint_between_vectors_gets_a_linear_adapter(data: DataBundle) -> None:
    torch.manual_seed(0)
    teacher = Teacher(build_model({"name": "mlp", "hidden": [64]}, data.input_shape, 10))
    student = build_model({"name": "mlp", "hidden": [32]}, data.input_shape, 10)
    config = DistillConfig(hint_weight=1.0, hints={"2": "2"})  # each ReLU's output
    objective = DistillObjective(config, teacher, student, data.input_shape)
    (adapter,) = objective.adapters.values()
    assert isinstance(adapter, nn.Linear)
    assert (adapter.in_features, adapter.out_features) == (32, 64)
    assert [id(p) for p in objective.parameters()] == [id(p) for p in adapter.parameters()]
    with pytest.raises(ConfigError, match=r"distill.hints 2 -> 2: student output \(32,\)"):
        DistillObjective(
            DistillConfig(hint_weight=1.0, hints={"2": "2"}, adapter="none"),
            teacher,
            student,
            data.input_shape,
        )


def test_same_shapes_need_no_adapter(data: DataBundle) -> None:
    torch.manual_seed(0)
    teacher = Teacher(build_model({"name": "small_cnn"}, data.input_shape, 10))
    student = build_model({"name": "small_cnn"}, data.input_shape, 10)
    hints = {"features.*": "features.1"}  # a glob must name exactly one module
    with pytest.raises(ConfigError, match=r"student tap 'features\.\*' matches \d+ modules"):
        DistillObjective(DistillConfig(hint_weight=1.0, hints=hints), teacher, student, (1, 8, 8))
    hints = {"features.1": "features.1", "logits": "logits"}
    objective = DistillObjective(DistillConfig(hint_weight=1.0, hints=hints), teacher, student,
                                 data.input_shape)  # fmt: skip
    assert all(isinstance(a, nn.Identity) for a in objective.adapters.values())
    assert len(objective.adapters) == 2 and objective.parameters() == []


def test_student_with_hints_through_an_adapter_end_to_end(
    outputs: Path, tmp_path: Path, calls: Counter[str], steps: int
) -> None:
    result = pipeline(outputs, tmp_path / "run", "method=student", *SMALL_STUDENT,
                      "distill=fitnets")  # fmt: skip
    assert losses_only(calls) == {"response_kd": steps, "hint_mse": steps + PROBES}
    model = load_artifact(result.artifact)
    assert model.get_submodule("features.1.0").out_channels == 16  # the student, no adapter
    assert count_params(model) == result.metrics["params"] < result.metrics["baseline/params"]
    assert 0 <= result.metrics["acc"] <= 1


# --- 6. stacking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        ["schedule=iterative", "schedule.rounds=2"],
        ["schedule=agp", "schedule.end=2", "schedule.frequency=4"],
    ],
    ids=["iterative", "agp"],
)
def test_kd_fine_tunes_gradual_pruning(
    outputs: Path,
    tmp_path: Path,
    control: Result,
    calls: Counter[str],
    steps: int,
    schedule: list[str],
) -> None:
    result = pipeline(outputs, tmp_path / "run", "distill=kd", *schedule)
    assert losses_only(calls) == {"response_kd": steps}
    assert calls["teacher.run"] == 1  # filling the cache (one batch here), once for all rounds
    assert result.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.3 < result.metrics["acc"] <= 1
    assert not same_weights(result.artifact, control.artifact)


@pytest.mark.slow  # QAT with conv+BN: torchao's conversion takes ~30 s
def test_kd_fine_tunes_qat(
    outputs: Path, tmp_path: Path, data: DataBundle, calls: Counter[str], steps: int
) -> None:
    result = pipeline(outputs, tmp_path / "run", "distill=kd", "method=qat")
    assert losses_only(calls) == {"response_kd": steps}
    model = load_artifact(result.artifact)
    codes = [t for n, t in model.eager.named_buffers() if n.endswith(".weight")]
    assert len(codes) == 4 and all(t.dtype == torch.int8 for t in codes)  # an int8 graph
    assert accuracy(model, data.test) == result.metrics["acc"] > 0.5


def test_distill_then_quantize(
    outputs: Path, tmp_path: Path, data: DataBundle, calls: Counter[str], steps: int
) -> None:
    result = pipeline(outputs, tmp_path / "run", "distill=kd", *DISTILL_THEN_QUANTIZE)
    assert losses_only(calls) == {"response_kd": steps}  # the student's fine-tune only
    student = {"name": "mlp", "hidden": [32]}
    assert read_payload(result.artifact)["model"]["config"] == student
    model = load_artifact(result.artifact)
    # torchao int8 weights in the student's Linear layers (dynamic int8)
    layers = {
        p: m.weight
        for p, m in eager(model).named_modules()
        if isinstance(getattr(m, "weight", None), TorchAOBaseTensor)
    }
    assert {p: tuple(w.shape) for p, w in layers.items()} == {"1": (32, 64), "3": (10, 32)}
    fresh = build_model(student, data.input_shape, data.num_classes)
    assert count_params(model) == count_params(fresh) == result.metrics["params"]
    again = load_artifact(result.artifact)
    with torch.no_grad():
        assert torch.equal(model(data.test.x), again(data.test.x))
    assert accuracy(model, data.test) == result.metrics["acc"]
    assert 0 <= result.metrics["acc"] <= 1


# --- 7. bad input: one line, before training ----------------------------------------------------

MODULE_PATHS = (
    "module paths: features, features.0, features.0.0, features.0.1, features.0.2, "
    "features.1, features.1.0, features.1.1, features.1.2, features.2, features.3, "
    "features.3.0, features.3.1, features.3.2, pool, flatten, classifier, logits"
)
BAD_INPUTS = {
    "temperature 0": (["distill=kd", "distill.temperature=0"],
                      "distill.temperature must be > 0, got 0"),
    "temperature negative": (["distill=kd", "distill.temperature=-2.5"],
                             "distill.temperature must be > 0, got -2.5"),
    "alpha 1.5": (["distill=kd", "distill.alpha=1.5"], "distill.alpha must be in [0, 1], got 1.5"),
    "alpha negative": (["distill=kd", "distill.alpha=-0.1"],
                       "distill.alpha must be in [0, 1], got -0.1"),
    "no such tap": (["distill=fitnets", "~distill.hints", "+distill.hints={nothere:features?1}"],
                    f"distill: student tap 'nothere' matches no module; {MODULE_PATHS}"),
    "no such teacher tap": (["distill=fitnets", "~distill.hints",
                             "+distill.hints={features?1:nothere}"],
                            f"distill: teacher tap 'nothere' matches no module; {MODULE_PATHS}"),
    "teacher of 5 classes": (["distill=kd", "distill.teacher_artifact=<five>"],
                             "distill: the teacher predicts 5 classes, the student 10"),
    "teacher of other inputs": (["distill=kd", "distill.teacher_artifact=<wide>"],
                                "distill: the teacher takes inputs (1, 16, 16), the dataset "
                                "'fake' gives (1, 8, 8)"),
    "no teacher file": (["distill=kd", "distill.teacher_artifact=<missing>"],
                        "distill.teacher_artifact: no file at <missing>"),
    "hint weight, no hints": (["distill=kd", "distill.hint_weight=1"],
                              "distill.hint_weight > 0 needs distill.hints"),
    "hints with channel pruning": (["distill=fitnets", "method=prune_channels"],
                                   "distill.hints with method 'prune_channels'"),
    "teacher file not an artifact": (["distill=kd", "distill.teacher_artifact=<junk>"],
                                     "distill.teacher_artifact <junk> cannot be read as a "
                                     "compress artifact"),
    "torch file not an artifact": (["distill=kd", "distill.teacher_artifact=<notours>"],
                                   "<notours> is not a compress artifact"),
    "attention on a vector": (["distill=attention", "~distill.attention",
                               "+distill.attention={classifier:classifier}",
                               "tracking=none"],  # while it trains: MLflow's start is slow
                              "classifier"),
}  # fmt: skip


#: Bad input that is not refused as it should be (bugs; see the reasons).
@pytest.fixture
def teacher_files(tmp_path: Path) -> dict[str, Path]:
    """Teacher artifacts that cannot teach the fake data, outside the outputs folder."""
    folder = tmp_path / "teachers"
    folder.mkdir()
    files = {"missing": folder / "nothere" / "model.pt", "junk": folder / "junk.pt"}
    files["junk"].write_bytes(b"not a model at all")
    files["notours"] = folder / "notours.pt"
    torch.save({"a": 1}, files["notours"])
    for name, shape, classes in (("five", (1, 8, 8), 5), ("wide", (1, 16, 16), 10)):
        files[name] = folder / f"{name}.pt"
        save_artifact(
            build_model({"name": "small_cnn"}, shape, classes),
            files[name],
            model_config={"name": "small_cnn"},
            input_shape=shape,
            num_classes=classes,
        )
    return files


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    teacher_files: dict[str, Path],
    case: str,
) -> None:
    overrides, message = BAD_INPUTS[case]
    for name, path in teacher_files.items():  # <name>: the path of that teacher file
        overrides = [o.replace(f"<{name}>", str(path)) for o in overrides]
        message = message.replace(f"<{name}>", str(path))
    assert_refused_before_training(tmp_path, monkeypatch, list(overrides), message)


@pytest.mark.slow  # QAT with conv+BN: torchao's conversion takes ~30 s
@pytest.mark.parametrize("option", ["fitnets", "attention"])
def test_feature_taps_with_qat_work_or_fail_before_training(
    outputs: Path, tmp_path: Path, option: str
) -> None:
    try:
        result = pipeline(outputs, tmp_path / "run", f"distill={option}", "method=qat")
    except ConfigError as error:
        assert "\n" not in str(error) and "features.1" in str(error)
        assert not (tmp_path / "run").exists()
    else:
        assert 0 <= result.metrics["acc"] <= 1


def test_bad_temperature_on_the_command_line_is_one_line_and_no_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "compress", f"paths.outputs={tmp_path}",
         f"paths.data={tmp_path / 'data'}", "dataset=fake", "distill=kd",
         "distill.temperature=0"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    assert done.returncode == 2  # bad input (compress.cli.exits)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == ["compress: error: distill.temperature must be > 0, got 0"]
    assert "baseline" not in done.stdout
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
    assert not (tmp_path / "cache").exists()
