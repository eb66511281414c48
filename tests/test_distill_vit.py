"""Distillation between transformers: hints on token sequences through a per-token Linear
adapter, attention-map transfer (KL between softmax maps), one-line errors for taps that
emit the wrong thing, and one ViT student distilled from a larger ViT end to end.

Tiny ViTs on 1x8x8 inputs (patch 4: four patch tokens and the class token) keep it fast.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.distill.config import DistillConfig
from compress.distill.losses import attention_map_kl
from compress.distill.objective import DistillObjective
from compress.distill.taps import recording
from compress.distill.teacher import Teacher
from compress.errors import ConfigError
from compress.models import build_model
from compress.models.vit import ViTConfig
from compress.run.pipeline import run
from tests.support import QUICK, assert_refused_before_training, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
STUDENT = {"dim": 16, "depth": 1, "heads": 2, "patch": 4, "pool": "cls"}
TEACHER = {"dim": 32, "depth": 2, "heads": 4, "patch": 4, "pool": "cls"}


def vit(**options: int) -> nn.Module:
    torch.manual_seed(0)
    return ViTConfig(**options).build(SHAPE, 10)


def objective(student: nn.Module, teacher: nn.Module, **config: object) -> DistillObjective:
    return DistillObjective(DistillConfig(**config), Teacher(teacher), student, SHAPE)  # type: ignore[arg-type]


def refused(student: nn.Module, teacher: nn.Module, **config: object) -> str:
    """The one-line message of the ConfigError that building the objective raises."""
    with pytest.raises(ConfigError) as error:
        objective(student, teacher, **config)
    message = str(error.value)
    assert "\n" not in message
    return message


def maps(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)


class MHAModel(nn.Module):
    """Rows of the image as tokens through `nn.MultiheadAttention`, which returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x.flatten(1, 2))
        out, _ = self.attn(tokens, tokens, tokens)
        return self.head(out.mean(dim=1))


# --- hints on token sequences ------------------------------------------------------------------


def test_token_hints_get_a_linear_adapter_over_the_dim() -> None:
    built = objective(vit(**STUDENT), vit(**TEACHER), hint_weight=1.0,
                      hints={"blocks.0": "blocks.1", "embed": "embed"})  # fmt: skip
    adapters = dict(built.adapters.items())
    assert set(adapters) == {"blocks_0->blocks_1", "embed->embed"}
    for adapter in adapters.values():  # (N, 5, 16) -> (N, 5, 32), token by token
        assert isinstance(adapter, nn.Linear)
        assert (adapter.in_features, adapter.out_features) == (16, 32)
    same = objective(vit(**STUDENT), vit(**{**TEACHER, "dim": 16, "heads": 2}), hint_weight=1.0,
                     hints={"blocks.0": "blocks.1"})  # fmt: skip
    assert isinstance(same.adapters["blocks_0->blocks_1"], nn.Identity)


def test_token_hint_loss_trains_down() -> None:
    student, teacher = vit(**STUDENT), vit(**TEACHER)
    built = objective(student, teacher, hint_weight=1.0, hints={"blocks.0": "blocks.1"}, alpha=1.0)
    adapter = built.adapters["blocks_0->blocks_1"]
    x = torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), recording(teacher, ["blocks.1"]) as target:
        teacher(x)

    def hint_loss() -> float:
        with torch.no_grad(), recording(student, ["blocks.0"]) as found:
            student(x)
        return nn.functional.mse_loss(adapter(found["blocks.0"]), target["blocks.1"]).item()

    before = hint_loss()
    optimizer = torch.optim.Adam([*student.parameters(), *built.parameters()], lr=1e-2)
    y, idx = torch.zeros(32, dtype=torch.long), torch.arange(32)
    for _ in range(30):
        optimizer.zero_grad()
        built(student, x, y, idx)[0].backward()
        optimizer.step()
    assert hint_loss() < 0.5 * before


# --- the attention-map loss --------------------------------------------------------------------


def test_attention_map_kl_zero_for_identical_positive_otherwise() -> None:
    teacher = maps(2, 4, 5, 5)
    assert attention_map_kl(teacher.clone(), teacher).item() == 0.0
    assert attention_map_kl(maps(2, 4, 5, 5, seed=1), teacher).item() > 0
    # Equal head counts pair head by head: the same heads in another order are not a match.
    assert attention_map_kl(teacher.flip(1), teacher).item() > 0


def test_attention_map_kl_hand_computed_value() -> None:
    # One query over two keys: teacher (1/2, 1/2), student (3/4, 1/4);
    # KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3). The second query agrees.
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.75, 0.25], [1.0, 0.0]]]])
    expected = 0.5 * math.log(4 / 3) / 2  # averaged over the two queries
    assert attention_map_kl(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_attention_map_kl_averages_heads_when_counts_differ() -> None:
    student, teacher = maps(3, 2, 5, 5, seed=2), maps(3, 4, 5, 5, seed=3)
    loss = attention_map_kl(student, teacher)
    mean_s, mean_t = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    assert loss.item() == pytest.approx(attention_map_kl(mean_s, mean_t).item(), rel=1e-6)
    assert attention_map_kl(mean_t.expand(3, 2, 5, 5), teacher).item() == pytest.approx(0, abs=1e-7)


def test_attention_map_kl_gradient_reaches_the_student_only() -> None:
    student = maps(2, 2, 5, 5, seed=4).requires_grad_()
    teacher = maps(2, 4, 5, 5, seed=5).requires_grad_()
    attention_map_kl(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    hard = torch.zeros(1, 1, 2, 2)
    hard[..., 0] = 1.0  # a student that gives a key no mass where the teacher gives some
    assert torch.isfinite(attention_map_kl(hard, maps(1, 1, 2, 2)))


def test_attention_maps_between_vits_with_different_heads() -> None:
    student, teacher = vit(**STUDENT), vit(**TEACHER)
    built = objective(student, teacher, alpha=0.0, attention_map_weight=1.0,
                      attention_maps={"blocks.0.attn": "blocks.1.attn.map"})  # fmt: skip
    assert built.pairs == [("attention_map", "blocks.0.attn.map", "blocks.1.attn.map")]
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(6))
    loss, _ = built(student, x, torch.zeros(8, dtype=torch.long), torch.arange(8))
    loss.backward()
    assert student.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # type: ignore[union-attr]
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("preset", ["vit_hints", "attention_maps"])
def test_presets_fit_a_depth_2_student_and_a_depth_4_teacher(tmp_path: Path, preset: str) -> None:
    section = dict(compose_config(tmp_path, f"distill={preset}")["distill"])
    config = DistillConfig.parse(section)
    assert config is not None and config.taps()
    student, teacher = vit(**{**STUDENT, "depth": 2}), vit(**{**TEACHER, "depth": 4})
    built = DistillObjective(config, Teacher(teacher), student, SHAPE)
    assert {s for _, s, _ in built.pairs} <= {p for p, _ in student.named_modules()}


# --- bad input: one line naming both shapes, or the module --------------------------------------


def test_token_hint_between_different_token_counts_is_refused() -> None:
    message = refused(vit(**STUDENT), vit(**{**TEACHER, "patch": 2}), hint_weight=1.0,
                      hints={"blocks.0": "blocks.1"})  # fmt: skip
    assert "student output (5, 16)" in message and "teacher's (17, 32)" in message
    assert "token counts differ (5 vs 17)" in message


def test_hint_between_tokens_and_a_feature_map_is_refused() -> None:
    cnn = build_model({"name": "small_cnn"}, SHAPE, 10)
    message = refused(vit(**STUDENT), cnn, hint_weight=1.0, hints={"blocks.0": "features.1"})
    assert "student output (5, 16)" in message and "teacher's (32, 8, 8)" in message
    assert "token sequence (T, D) onto a feature map (C, H, W)" in message
    message = refused(cnn, vit(**TEACHER), hint_weight=1.0, hints={"features.1": "blocks.1"})
    assert "student output (32, 8, 8)" in message and "teacher's (5, 32)" in message


def test_hint_on_a_module_that_emits_a_tuple_is_refused() -> None:
    message = refused(MHAModel(), vit(**TEACHER), hint_weight=1.0, hints={"attn": "blocks.1"})
    assert message.startswith("distill: student tap 'attn' (MultiheadAttention) emits a tuple")
    assert "(a tensor (8, 16), a tensor (8, 8)), not a tensor" in message


def test_attention_maps_on_modules_without_weights_are_refused() -> None:
    message = refused(vit(**STUDENT), vit(**TEACHER), attention_map_weight=1.0,
                      attention_maps={"blocks.0.attn.qkv": "blocks.1.attn"})  # fmt: skip
    assert message == (
        "distill.attention_maps: student tap 'blocks.0.attn.qkv' (Linear) exposes no attention "
        "weights: it emits a tensor (5, 48), not probabilities (heads, T, T); modules that do: "
        "blocks.0.attn"
    )
    message = refused(MHAModel(), vit(**TEACHER), attention_map_weight=1.0,
                      attention_maps={"attn": "blocks.1.attn"})  # fmt: skip
    assert "student tap 'attn' (MultiheadAttention) exposes no attention weights" in message
    assert "emits a tuple" in message and "this model has none" in message
    message = refused(vit(**STUDENT), vit(**TEACHER), attention_map_weight=1.0,
                      attention_maps={"blocks.0.attn": "blocks"})  # fmt: skip
    assert "teacher tap 'blocks' (Sequential)" in message
    assert message.endswith("modules that do: blocks.0.attn, blocks.1.attn")


def test_attention_maps_over_different_token_counts_are_refused() -> None:
    message = refused(vit(**STUDENT), vit(**{**TEACHER, "patch": 2}), attention_map_weight=1.0,
                      attention_maps={"blocks.0.attn": "blocks.1.attn"})  # fmt: skip
    assert "student maps (2, 5, 5) and teacher maps (4, 17, 17)" in message
    assert "differ in token count (5 vs 17)" in message


def test_attention_map_weight_needs_taps() -> None:
    with pytest.raises(ConfigError, match=r"distill\.attention_map_weight > 0 needs"):
        DistillConfig(attention_map_weight=1.0)


def test_bad_vit_hint_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = [
        "model=vit",
        "model.patch=4",
        "distill=vit_hints",
        "distill.teacher={name:vit,patch:2}",
    ]
    message = "token counts differ (4 vs 16)"
    assert_refused_before_training(tmp_path, monkeypatch, overrides, message)


# --- end to end ---------------------------------------------------------------------------------


def test_vit_student_from_a_larger_vit_teacher_end_to_end(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path, *QUICK, "tracking=none", "dataset=digits",
        "model=vit", "model.patch=4", "model.dim=16", "model.depth=2", "model.heads=2",
        "method=student_vit", "method.model.patch=4", "method.model.dim=16",
        "distill=vit_hints", "distill.teacher={name:vit,patch:4,dim:32,depth:4,heads:4}",
        "distill.attention_map_weight=1", "distill.attention_maps={blocks?1?attn:blocks?3?attn}",
        "schedule.train.optimizer=adam", "schedule.train.lr=0.003", "schedule.finetune.lr=0.003",
        run_dir=tmp_path / "run",
    )  # fmt: skip
    m = run(cfg).metrics
    assert 0 <= m["acc"] <= 1 and 0 <= m["teacher/acc"] <= 1
    assert m["acc"] > 0.2  # twice chance after two epochs
    assert m["teacher/params"] > m["params"] == m["baseline/params"]
