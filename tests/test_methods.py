"""Compression methods: config parsing, magnitude masks, masks through SGD, the registry."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from compress.config import require
from compress.errors import ConfigError
from compress.methods import (
    MethodConfig,
    MethodContext,
    apply_method,
    method_names,
    parse_method,
)
from compress.methods.masks import MaskSet, keep_top, prunable_weights, unstructured_masks
from compress.methods.none import NoCompression
from compress.methods.prune import UnstructuredPruning
from compress.train.recipe import TrainRecipe


def magnitude_masks(
    weights: dict[str, nn.Parameter], amount: float, scope: str
) -> dict[str, torch.Tensor]:
    """Magnitude masks with every layer in the shared pool (no overrides, no exclusions)."""
    scores = {p: w.detach().abs() for p, w in weights.items()}
    return unstructured_masks(scores, {}, list(weights), amount, scope)


def _applied(model: nn.Module, values: dict):
    """A method's stage on `model`, with its full target applied (as one-shot does)."""
    stage = apply_method(model, parse_method(values), MethodContext((3, 6, 6)))
    stage.update(1.0)
    return stage


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3),  # 135 weights
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 30),  # 2400 weights
        nn.ReLU(),
        nn.Linear(30, 7),  # 210 weights
    )


def _one_line_config_error(values: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_method(values)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- parse_method -------------------------------------------------------------------------------


def test_builtin_method_names() -> None:
    assert {"none", "prune"} <= set(method_names())


def test_parse_none() -> None:
    config = parse_method({"name": "none"})
    assert isinstance(config, NoCompression)
    assert config.finetunes is False


def test_parse_prune_defaults() -> None:
    config = parse_method({"name": "prune"})
    assert config == UnstructuredPruning(amount=0.8, scope="global")
    assert config.finetunes is True


@pytest.mark.parametrize(("amount", "scope"), [(0.5, "layer"), (0.0, "global"), (0, "layer")])
def test_parse_prune_options(amount: float, scope: str) -> None:
    config = parse_method({"name": "prune", "amount": amount, "scope": scope})
    assert isinstance(config, UnstructuredPruning)
    assert (config.amount, config.scope) == (amount, scope)


def test_parse_does_not_mutate_input() -> None:
    values = {"name": "prune", "amount": 0.3}
    parse_method(values)
    assert values == {"name": "prune", "amount": 0.3}


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"name": "quantize"}, ["unknown method 'quantize'", "none", "prune"]),
        ({}, ["unknown method"]),
        ({"name": "prune", "amount": 1.0}, ["method.amount", "[0, 1)", "1.0"]),
        ({"name": "prune", "amount": -0.1}, ["method.amount", "-0.1"]),
        ({"name": "prune", "amount": "abc"}, ["method.amount", "abc"]),
        ({"name": "prune", "amount": float("nan")}, ["method.amount"]),
        ({"name": "prune", "scope": "channel"}, ["method.scope 'channel'", "global", "layer"]),
        ({"name": "prune", "amout": 0.5}, ["method", "unknown", "amout", "valid: amount", "scope"]),
        ({"name": "none", "amount": 0.5}, ["method", "unknown", "amount"]),
    ],
    ids=[
        "unknown-method",
        "no-name",
        "amount-1",
        "amount-negative",
        "amount-str",
        "amount-nan",
        "unknown-scope",
        "unknown-key",
        "none-with-key",
    ],
)
def test_parse_errors(values: dict, fragments: list[str]) -> None:
    message = _one_line_config_error(values)
    for fragment in fragments:
        assert fragment in message


# --- magnitude masks ----------------------------------------------------------------------------


def test_prunable_weights_are_conv_and_linear_weights() -> None:
    model = _model()
    weights = prunable_weights(model)
    assert list(weights) == ["0", "4", "6"]
    assert weights["0"] is model[0].weight
    assert weights["6"] is model[6].weight


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.77, 0.9, 0.99])
def test_global_masks_remove_the_smallest_overall(amount: float) -> None:
    weights = prunable_weights(_model())
    before = {k: w.detach().clone() for k, w in weights.items()}
    masks = magnitude_masks(weights, amount, "global")
    total = sum(w.numel() for w in weights.values())
    assert total == 135 + 2400 + 210
    assert list(masks) == list(weights)
    for path, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == weights[path].shape
    removed = sum(int((~m).sum()) for m in masks.values())
    assert removed == round(amount * total)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    keep = torch.cat([m.flatten() for m in masks.values()])
    if 0 < removed < total:
        assert magnitudes[keep].min() >= magnitudes[~keep].max()
    for path, w in weights.items():  # computing masks does not touch the weights
        assert torch.equal(w, before[path])


def test_global_scope_spares_a_layer_of_large_weights() -> None:
    weights = prunable_weights(_model())
    with torch.no_grad():
        weights["6"].copy_(10 + weights["6"].abs())  # the last layer's weights dwarf the rest
    global_masks = magnitude_masks(weights, 0.5, "global")
    assert bool(global_masks["6"].all())
    layer_masks = magnitude_masks(weights, 0.5, "layer")
    assert int((~layer_masks["6"]).sum()) == 105


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_layer_masks_prune_each_layer_alike(amount: float) -> None:
    weights = prunable_weights(_model())
    masks = magnitude_masks(weights, amount, "layer")
    for path, mask in masks.items():
        w = weights[path].detach().abs()
        assert int((~mask).sum()) == round(amount * w.numel())
        assert w[mask].min() >= w[~mask].max()


def test_keep_top_counts_and_ties() -> None:
    assert int(keep_top(torch.arange(10.0), 0.3).sum()) == 7
    assert keep_top(torch.arange(10.0), 0.3)[:3].sum() == 0
    assert int(keep_top(torch.ones(3, 4), 0.5).sum()) == 6  # ties still keep exactly half
    assert not keep_top(torch.ones(5), 0.999).any()  # round(4.995) = 5 removed


def test_mask_set_sparsity() -> None:
    weights = prunable_weights(_model())
    masks = magnitude_masks(weights, 0.6, "layer")
    mask_set = MaskSet(weights)
    mask_set.set(masks)
    total = 135 + 2400 + 210
    removed = round(0.6 * 135) + round(0.6 * 2400) + round(0.6 * 210)
    assert mask_set.sparsity() == pytest.approx(removed / total)
    for path, mask in masks.items():  # constructing the set zeroes what is pruned
        assert bool((weights[path][~mask] == 0).all())
        assert bool((weights[path][mask] != 0).all())


# --- apply_method -------------------------------------------------------------------------------


def test_apply_prune_zeroes_weights_and_keeps_biases() -> None:
    model = _model()
    biases = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("weight")}
    stage = _applied(model, {"name": "prune", "amount": 0.7})
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == round(0.7 * (135 + 2400 + 210))
    assert stage.summary() == {"sparsity": pytest.approx(zeros / (135 + 2400 + 210))}
    for name, value in model.state_dict().items():
        if name in biases:
            assert torch.equal(value, biases[name])
    assert not bool((model[1].weight == 0).any())  # BN weights are not pruned


def test_apply_prune_to_model_without_prunable_layers() -> None:
    with pytest.raises(ConfigError, match="no conv or linear layer"):
        _applied(nn.Sequential(nn.ReLU()), {"name": "prune"})


def _sgd_fine_tune(model: nn.Module, after_step, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 3, 6, 6, generator=g)
        y = torch.randint(0, 7, (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step()


def test_masks_hold_zeros_through_sgd_with_momentum_and_decay() -> None:
    model = _model()
    stage = _applied(model, {"name": "prune", "amount": 0.5})
    weights = prunable_weights(model)
    pruned = {k: (w == 0).clone() for k, w in weights.items()}
    start = {k: w.detach().clone() for k, w in weights.items()}
    _sgd_fine_tune(model, stage.after_step, steps=5)
    for path, w in weights.items():
        assert bool((w[pruned[path]] == 0).all()), path
        kept = ~pruned[path]
        assert bool((w[kept] != start[path][kept]).all()), path
        assert bool((w[kept] != 0).all()), path
    final = stage.finalize(model)
    assert final is model
    assert sum(int((w == 0).sum()) for w in weights.values()) == sum(
        int(p.sum()) for p in pruned.values()
    )


def test_without_after_step_pruned_weights_drift() -> None:
    """Control for the test above: the SGD loop really does move pruned weights."""
    model = _model()
    _applied(model, {"name": "prune", "amount": 0.5})
    weights = prunable_weights(model)
    pruned = {k: (w == 0).clone() for k, w in weights.items()}
    _sgd_fine_tune(model, lambda: None, steps=2)
    assert any(bool((w[pruned[k]] != 0).any()) for k, w in weights.items())


def test_apply_none_changes_nothing() -> None:
    model = _model()
    state = copy.deepcopy(model.state_dict())
    stage = _applied(model, {"name": "none"})
    stage.after_step()
    assert stage.finalize(model) is model
    assert stage.summary() == {}
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])


# --- registering a new method -------------------------------------------------------------------


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register into a copy of the registry so the test method disappears afterwards."""
    registry = MethodConfig.registry
    registry.names()  # the built-in methods are in before the copy is taken
    monkeypatch.setattr(registry, "_classes", dict(registry._classes))


class _ScaleStage:
    def __init__(self, model: nn.Module, factor: float) -> None:
        self.model = model
        self.factor = factor
        self.steps = 0

    def update(self, progress: float) -> bool:
        with torch.no_grad():
            for w in prunable_weights(self.model).values():
                w.mul_(self.factor)
        return False

    def after_step(self) -> None:
        self.steps += 1

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def summary(self) -> dict[str, float]:
        return {"factor": self.factor, "steps": self.steps}

    def artifacts(self, folder):
        return []


def test_register_new_method(isolated_registry: None) -> None:
    # A new method is one config class with a name and an `apply`; defining it registers it.
    @dataclass(frozen=True)
    class _ScaleWeights(MethodConfig):
        name = "test_methods_scale_weights"
        finetunes = False
        factor: float = 2.0

        def __post_init__(self) -> None:
            require(self.factor > 0, f"method.factor must be > 0, got {self.factor}")

        def apply(self, model: nn.Module, context: MethodContext) -> _ScaleStage:
            return _ScaleStage(model, self.factor)

    assert "test_methods_scale_weights" in method_names()
    config = parse_method({"name": "test_methods_scale_weights", "factor": 3.0})
    assert config == _ScaleWeights(factor=3.0)
    model = _model()
    before = model[4].weight.detach().clone()
    stage = apply_method(model, config, MethodContext((3, 6, 6)))
    assert torch.equal(model[4].weight, before)  # nothing applied before the schedule's update
    stage.update(1.0)
    assert torch.allclose(model[4].weight, 3.0 * before)
    stage.after_step()
    assert stage.summary() == {"factor": 3.0, "steps": 1}
    # The generic checks apply to the new method too.
    assert "bogus" in _one_line_config_error({"name": "test_methods_scale_weights", "bogus": 1})
    assert "method.factor" in _one_line_config_error(
        {"name": "test_methods_scale_weights", "factor": -1}
    )
    # Built-in methods still dispatch to their own handlers.
    assert isinstance(parse_method({"name": "prune"}), UnstructuredPruning)


def test_registry_is_restored_after_registration_test() -> None:
    assert "test_methods_scale_weights" not in method_names()


# --- TrainRecipe.parse --------------------------------------------------------------------------


def _recipe_error(values: dict | None, where: str = "schedule.finetune") -> str:
    with pytest.raises(ConfigError) as info:
        TrainRecipe.parse(values, where)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_recipe_parse_valid() -> None:
    recipe = TrainRecipe.parse({"epochs": 3, "lr": 0.01}, "schedule.finetune")
    assert (recipe.epochs, recipe.lr, recipe.batch_size) == (3, 0.01, 64)
    assert recipe.where == "schedule.finetune"
    assert "where" not in recipe.key()
    assert recipe.key()["epochs"] == 3


def test_recipe_zero_epochs_is_allowed() -> None:
    assert TrainRecipe.parse({"epochs": 0}, "schedule.finetune").epochs == 0


def test_recipe_negative_epochs() -> None:
    assert "schedule.finetune.epochs" in _recipe_error({"epochs": -1})


def test_recipe_non_integer_epochs() -> None:
    assert "epochs" in _recipe_error({"epochs": 2.5})


def test_recipe_zero_lr() -> None:
    message = _recipe_error({"epochs": 1, "lr": 0})
    assert "schedule.finetune.lr" in message


def test_recipe_unknown_key() -> None:
    message = _recipe_error({"epochs": 1, "learning_rate": 0.1})
    assert "learning_rate" in message and "schedule.finetune" in message


@pytest.mark.parametrize("values", [None, {}, {"lr": 0.1}])
def test_recipe_missing_epochs(values: dict | None) -> None:
    assert _recipe_error(values, "schedule.train") == "schedule.train.epochs is required"


@pytest.mark.parametrize(
    "values",
    [{"epochs": 1, "lr": "abc"}, {"epochs": 1, "lr": None}, {"epochs": 1, "batch_size": "64"}],
    ids=["lr-str", "lr-null", "batch-size-str"],
)
def test_recipe_wrong_type_is_a_config_error(values: dict) -> None:
    _recipe_error(values)
