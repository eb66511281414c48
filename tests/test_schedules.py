"""Schedules drive the pruning methods: every combination runs, reaches its target, and
rejects settings that cannot work before any training."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.artifact.store import load_artifact
from compress.data import load_dataset
from compress.errors import ConfigError
from compress.methods import MethodContext, apply_method, parse_method
from compress.methods.masks import prunable_weights
from compress.models import build_model
from compress.run.pipeline import run
from compress.schedules import ScheduleContext, parse_schedule
from compress.schedules.agp import GradualPruning
from compress.schedules.lottery import LotteryTicket
from compress.train.loop import fit
from compress.train.recipe import RuntimeConfig, TrainRecipe
from tests.support import QUICK, compose_config

FAKE = ["dataset=fake", "model=mlp", "tracking=none"]
SCHEDULE_SETTINGS = {
    "oneshot": [],
    "iterative": ["schedule.rounds=2", "schedule.finetune.epochs=2"],
    "agp": ["schedule.begin=0", "schedule.end=2", "schedule.frequency=2"],
    "lottery": ["schedule.rounds=2", "schedule.finetune.epochs=1"],
}
METHODS = {
    "prune": (["method.amount=0.75"], 0.75),
    "prune_random": (["method.amount=0.6"], 0.6),
    "prune_nm": ([], 0.5),
}


def prunable_sparsity(model: nn.Module) -> float:
    weights = prunable_weights(model).values()
    return sum(w.numel() - int(w.count_nonzero()) for w in weights) / sum(
        w.numel() for w in weights
    )


@pytest.mark.parametrize("schedule", SCHEDULE_SETTINGS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_every_schedule(tmp_path: Path, method: str, schedule: str) -> None:
    overrides, target = METHODS[method]
    cfg = compose_config(
        tmp_path, *QUICK, *FAKE, f"method={method}", f"schedule={schedule}",
        *SCHEDULE_SETTINGS[schedule], *overrides,
    )  # fmt: skip
    result = run(cfg)
    model = load_artifact(result.artifact)
    # The masks held through every round of fine-tuning: the artifact is exactly as sparse.
    assert prunable_sparsity(model) == pytest.approx(target, abs=2e-3)
    assert result.metrics["sparsity"] == pytest.approx(target, abs=2e-3)
    assert result.metrics["acc"] > 0.2  # twice chance: a working model after short training
    table = list(csv.DictReader((result.run_dir / "layer_sparsity.csv").open()))
    assert [row["layer"] for row in table] == list(prunable_weights(model))


@pytest.mark.parametrize("schedule", ["oneshot", "iterative", "agp"])
def test_structured_pruning_shrinks_on_every_schedule(tmp_path: Path, schedule: str) -> None:
    cfg = compose_config(
        tmp_path, *QUICK, "dataset=fake", "model=small_cnn", "tracking=none",
        "method=prune_channels", f"schedule={schedule}", *SCHEDULE_SETTINGS[schedule],
    )  # fmt: skip
    m = run(cfg).metrics
    assert m["macs"] < 0.5 * m["baseline/macs"]  # channels really removed, not masked
    assert m["params"] < 0.5 * m["baseline/params"]
    assert m["channels_removed"] == pytest.approx(0.5, abs=0.05)


def test_agp_follows_the_cubic_ramp() -> None:
    agp = GradualPruning(begin=1, end=3, frequency=5, initial=0.2)
    steps = 10  # per epoch: the ramp runs from step 10 to step 30
    assert agp.progress(9, steps) is None
    assert agp.progress(10, steps) == pytest.approx(0.2)
    assert agp.progress(12, steps) is None  # not an update step
    assert agp.progress(20, steps) == pytest.approx(1 - 0.8 * 0.5**3)
    assert agp.progress(30, steps) == pytest.approx(1.0)
    assert agp.progress(31, steps) is None
    odd = GradualPruning(begin=0, end=1, frequency=4)
    assert odd.progress(10, 10) == pytest.approx(1.0)  # the ramp's last step always lands


def test_iterative_and_agp_sparsity_histories_rise_to_the_target(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    for schedule in ("iterative", "agp"):
        outputs = tmp_path / schedule
        cfg = compose_config(
            outputs, *QUICK, "dataset=fake", "model=mlp", f"schedule={schedule}",
            *SCHEDULE_SETTINGS[schedule], "method.amount=0.8",
        )  # fmt: skip
        result = run(cfg)
        client = MlflowClient(tracking_uri=f"sqlite:///{outputs}/mlflow.db")
        run_id = result.tracking.split()[2]
        history = client.get_metric_history(run_id, "finetune/sparsity")
        values = [h.value for h in sorted(history, key=lambda h: (h.step, h.timestamp))]
        assert len(values) >= 2, schedule
        assert values == sorted(values), schedule
        assert values[0] < 0.8 and values[-1] == pytest.approx(0.8, abs=1e-3), schedule


def test_masks_stay_nested_as_the_amount_grows() -> None:
    for criterion in ("magnitude", "random"):
        torch.manual_seed(0)
        model = build_model({"name": "mlp"}, (1, 8, 8), 10)
        config = parse_method({"name": "prune", "amount": 0.9, "criterion": criterion})
        stage = apply_method(model, config, MethodContext((1, 8, 8)))
        pruned_before: dict[str, torch.Tensor] = {}
        for progress in (0.3, 0.6, 1.0):
            stage.update(progress)
            weights = prunable_weights(model)
            for path, w in weights.items():
                if path in pruned_before:
                    assert bool((w[pruned_before[path]] == 0).all()), (criterion, path)
            pruned_before = {p: w == 0 for p, w in weights.items()}
        assert prunable_sparsity(model) == pytest.approx(0.9, abs=1e-3)


def test_random_masks_differ_from_magnitude_and_follow_the_seed() -> None:
    def zeros(**options) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model({"name": "mlp"}, (1, 8, 8), 10)
        stage = apply_method(
            model, parse_method({"name": "prune", **options}), MethodContext((1, 8, 8))
        )
        stage.update(1.0)
        return torch.cat([(w == 0).flatten() for w in prunable_weights(model).values()])

    magnitude, random0 = zeros(amount=0.5), zeros(amount=0.5, criterion="random")
    assert not torch.equal(magnitude, random0)
    assert torch.equal(random0, zeros(amount=0.5, criterion="random"))
    assert not torch.equal(random0, zeros(amount=0.5, criterion="random", seed=1))


def test_layer_overrides_and_exclusions() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "lenet300"}, (1, 28, 28), 10)
    config = parse_method(
        {
            "name": "prune",
            "amount": 0.9,
            "scope": "layer",
            "layers": {"[3]": 0.5},
            "exclude": ["5"],
        }
    )
    stage = apply_method(model, config, MethodContext((1, 28, 28)))
    stage.update(1.0)
    sparsity = {
        path: 1 - int(w.count_nonzero()) / w.numel() for path, w in prunable_weights(model).items()
    }
    paths = list(sparsity)
    assert paths == ["1", "3", "5"]
    assert sparsity[paths[0]] == pytest.approx(0.9, abs=1e-3)
    assert sparsity[paths[1]] == pytest.approx(0.5, abs=1e-3)  # matched '[3]'
    assert sparsity[paths[2]] == 0  # excluded


def test_n_of_m_keeps_n_in_every_group() -> None:
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn"}, (1, 8, 8), 10)
    stage = apply_method(model, parse_method({"name": "prune_nm"}), MethodContext((1, 8, 8)))
    stage.update(1.0)
    for path, w in prunable_weights(model).items():
        if w[0].numel() % 4:
            assert int(w.count_nonzero()) == w.numel(), f"{path} should stay dense"
        else:
            groups = w.reshape(w.shape[0], -1, 4)
            assert bool(((groups != 0).sum(-1) <= 2).all()), path
    with pytest.raises(ConfigError, match="not a multiple of m=4"):
        apply_method(
            model, parse_method({"name": "prune_nm", "strict": True}), MethodContext((1, 8, 8))
        )


def test_lottery_rewinds_the_survivors_to_the_saved_weights() -> None:
    data = load_dataset({"name": "fake"})
    torch.manual_seed(0)
    model = build_model({"name": "mlp"}, data.input_shape, data.num_classes)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, TrainRecipe(epochs=2), RuntimeConfig(progress=False), seed=0, label="t")
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    config = parse_method({"name": "prune", "amount": 0.5})
    stage = apply_method(model, config, MethodContext(data.input_shape))
    context = ScheduleContext(
        data, TrainRecipe(epochs=0), RuntimeConfig(progress=False), seed=0, initial_state=saved,
        new_model=lambda: build_model({"name": "mlp"}, data.input_shape, data.num_classes),
    )  # fmt: skip
    LotteryTicket(rounds=1).run(stage, model, context)
    weights = prunable_weights(model)
    for name, value in model.state_dict().items():
        path = name.removesuffix(".weight")
        if path in weights:
            kept = value != 0
            # The mask was chosen on the trained weights; the survivors hold the saved ones.
            assert torch.equal(value[kept], saved[name][kept])
            assert not torch.equal(value, trained[name])
        else:
            assert torch.equal(value, saved[name])


def test_late_rewinding_reproduces_the_baselines_epoch_k() -> None:
    data = load_dataset({"name": "fake"})
    recipe = TrainRecipe(epochs=3)
    runtime = RuntimeConfig(progress=False)
    histories = []
    for stop_after in (None, 2):
        torch.manual_seed(0)
        model = build_model({"name": "mlp"}, data.input_shape, data.num_classes)
        histories.append(
            fit(model, data, recipe, runtime, seed=0, label="t", stop_after=stop_after)
        )
    full, first_two = histories
    assert [h.loss for h in first_two] == [h.loss for h in full[:2]]
    assert [h.lr for h in first_two] == [h.lr for h in full[:2]]


BAD_SCHEDULES = {
    "rounds exceed epochs": (
        ["schedule=iterative", "schedule.rounds=5", "schedule.finetune.epochs=3"],
        "schedule.rounds=5 do not fit schedule.finetune.epochs=3",
    ),
    "agp ends after the fine-tune": (
        ["schedule=agp", "schedule.end=20"],
        "end <= schedule.finetune.epochs",
    ),
    "agp frequency longer than the ramp": (
        ["schedule=agp", "schedule.end=1", "schedule.frequency=100000"],
        "exceeds the ramp",
    ),
    "unknown schedule option": (["schedule=agp", "+schedule.rate=3"], "unknown option(s) rate"),
    "lottery with structured pruning": (
        ["schedule=lottery", "method=prune_channels"],
        "method 'prune_channels' makes no masks",
    ),
    "pattern matching no layer": (
        ["model=mlp", "+method.exclude=[nothere]"],
        "pattern 'nothere' matches no prunable layer; prunable layers: ",
    ),
    "override amount out of range": (
        ["model=mlp", "+method.layers={net.0: 1.5}"],
        "must be in [0, 1)",
    ),
}


@pytest.mark.parametrize("case", BAD_SCHEDULES, ids=list(BAD_SCHEDULES))
def test_bad_schedules_fail_before_training(tmp_path: Path, case: str) -> None:
    overrides, message = BAD_SCHEDULES[case]
    cfg = compose_config(tmp_path, *QUICK, "dataset=fake", *overrides)
    with pytest.raises(ConfigError) as caught:
        run(cfg)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "mlflow.db").exists() or not _finished_runs(tmp_path)


def _finished_runs(outputs: Path) -> list:
    from tests.support import mlflow_runs

    return [r for r in mlflow_runs(outputs) if r.info.status == "FINISHED"]


def test_schedule_sections_parse_their_own_options() -> None:
    assert parse_schedule({"name": "agp", "end": 4, "train": {}, "finetune": {}}) == GradualPruning(
        end=4
    )
    with pytest.raises(ConfigError, match="unknown schedule 'cyclic'"):
        parse_schedule({"name": "cyclic"})


def test_step_milestones_divide_the_rate_at_those_epochs() -> None:
    from compress.train.loop import lr_factor

    recipe = TrainRecipe(epochs=160, lr_schedule="step", gamma=0.1, milestones=[80, 120])
    factors = [lr_factor(recipe, epoch) for epoch in (0, 79, 80, 119, 120, 159)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert "milestones" not in TrainRecipe(epochs=3).key()  # earlier cache keys unchanged
    with pytest.raises(ConfigError, match="milestones must be increasing epochs >= 1"):
        TrainRecipe(epochs=3, milestones=[120, 80])


def test_warmup_ramps_up_then_the_cosine_runs_on_the_rest() -> None:
    from compress.train.loop import lr_factor

    recipe = TrainRecipe(epochs=6, lr_schedule="cosine", warmup_epochs=2)
    factors = [lr_factor(recipe, epoch) for epoch in range(6)]
    assert factors == pytest.approx([1 / 3, 2 / 3, 1, 0.853553, 0.5, 0.146447], abs=1e-6)
    assert "warmup_epochs" not in TrainRecipe(epochs=3).key()  # earlier cache keys unchanged
    assert recipe.key()["warmup_epochs"] == 2
    short = TrainRecipe(epochs=2, warmup_epochs=3)  # a smoke run of a recipe: only the ramp
    assert [lr_factor(short, epoch) for epoch in range(2)] == pytest.approx([0.25, 0.5])
    with pytest.raises(ConfigError, match="warmup_epochs must be an integer >= 0, got -1"):
        TrainRecipe(epochs=3, warmup_epochs=-1)
