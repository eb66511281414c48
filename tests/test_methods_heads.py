"""Structured pruning of transformers: whole attention heads, head dims and MLP units."""

from __future__ import annotations

import copy
import csv
import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.artifact.store import RESHAPED_FORMAT, load_artifact, save_artifact
from compress.errors import ConfigError
from compress.measure import count_macs
from compress.methods import MethodContext, apply_method, parse_method
from compress.methods.channels import ChannelPruning, ChannelStage
from compress.models import build_model
from compress.models.vit import Attention
from compress.run.pipeline import run
from tests.support import QUICK, assert_refused_before_training, compose_config

SHAPE = (1, 8, 8)
VIT = {"name": "vit", "patch": 4, "dim": 32, "depth": 2, "heads": 4, "mlp_ratio": 2.0}
HEADS = {"heads": 0.5, "amount": 0.5, "ignore": ["embed.proj"]}


def vit(**options) -> nn.Module:
    torch.manual_seed(0)
    return build_model({**VIT, **options}, SHAPE, 10).eval()


def stage_for(model: nn.Module, **options) -> ChannelStage:
    config = parse_method({"name": "prune_channels", **options})
    stage = apply_method(model, config, MethodContext(SHAPE, None, batch_size=8))
    assert isinstance(stage, ChannelStage)
    return stage


def masked_heads(attn: Attention, tokens: torch.Tensor, keep: tuple[int, ...]) -> torch.Tensor:
    """The dense attention's output with every head but `keep` silenced."""
    batch, count, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(batch, count, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = (q * attn.scale @ k.transpose(-2, -1)).softmax(-1) @ v
    mask = torch.zeros(attn.num_heads)
    mask[list(keep)] = 1
    out = out * mask[None, :, None, None]
    return attn.proj(out.transpose(1, 2).reshape(batch, count, -1))


def test_whole_heads_go_and_the_rest_compute_exactly_as_before() -> None:
    model = vit()
    dense = copy.deepcopy(model)
    stage = stage_for(model, **HEADS)
    assert stage.update(1.0) is True

    tokens = torch.randn(3, 5, 32)
    for path, (heads, head_dim) in stage.heads.kept().items():
        assert (heads, head_dim) == (2, 8)
        attn, before = model.get_submodule(path), dense.get_submodule(path)
        assert attn.qkv.out_features == 3 * 2 * 8 and attn.proj.in_features == 16
        # The pruned module is the dense one with two of its heads silenced, exactly.
        with torch.no_grad():
            errors = [
                (masked_heads(before, tokens, keep) - attn(tokens)).abs().max()
                for keep in itertools.combinations(range(4), 2)
            ]
        assert min(errors) < 1e-5 and sorted(errors)[1] > 1e-4
    for block in model.blocks:
        assert block.mlp.fc1.out_features == 32  # half of dim * mlp_ratio
        assert block.norm1.normalized_shape == (32,)  # the residual width stays
    assert stage.summary()["heads_removed"] == 0.5


def test_head_dims_go_from_every_head_alike() -> None:
    model = vit()
    stage = stage_for(model, head_dims=0.5, amount=0.0, ignore=["embed.proj"])
    stage.update(1.0)
    assert set(stage.heads.kept().values()) == {(4, 4)}
    assert model(torch.randn(2, *SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("steps", [[0.5, 1.0], [0.25, 0.5, 0.75, 1.0]])
def test_heads_go_in_proportion_to_progress(steps: list[float]) -> None:
    model = vit(heads=8, dim=64)
    stage = stage_for(model, heads=0.5, amount=0.0, ignore=["embed.proj"])
    seen = []
    for progress in steps:
        stage.update(progress)
        seen.append(next(iter(stage.heads.kept().values()))[0])
    assert seen[-1] == 4  # half of 8 in the end, never more
    assert seen == [8 - round(4 * p) for p in steps]


def test_without_head_options_attention_keeps_its_heads() -> None:
    model = vit()
    stage = stage_for(model, amount=0.5, ignore=["embed.proj"])
    stage.update(1.0)
    assert set(stage.heads.kept().values()) == {(4, 8)}
    assert model.blocks[0].attn.qkv.out_features == 96
    assert model.blocks[0].mlp.fc1.out_features == 32


def test_the_shrunk_model_reloads_with_its_heads(tmp_path: Path) -> None:
    model = vit()
    kwargs = {"model_config": VIT, "input_shape": SHAPE, "num_classes": 10}
    dense_macs = count_macs(model, SHAPE).dense
    stage_for(model, **HEADS).update(1.0)
    save_artifact(model, tmp_path / "shrunk.pt", **kwargs)
    assert count_macs(model, SHAPE).dense < dense_macs / 1.8

    payload = torch.load(tmp_path / "shrunk.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == RESHAPED_FORMAT
    assert payload["structure"]["blocks.1.attn"] == {"num_heads": 2, "head_dim": 8}
    loaded = load_artifact(tmp_path / "shrunk.pt")
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.blocks[1].attn.num_heads == 2


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (
            {},
            {"heads": 0.3},
            "method.heads 0.3 removes 1.2 of the 4 heads of blocks.0.attn, "
            "which leaves a non-integer head count; choose a multiple of 1/4",
        ),
        ({"heads": 1, "dim": 16}, {"heads": 0.5}, "removes 0.5 of the 1 heads of blocks.0.attn"),
        (
            {},
            {"head_dims": 0.3},
            "method.head_dims 0.3 removes 2.4 of the 8 dims of "
            "blocks.0.attn, which leaves a non-integer head dim",
        ),
        ({}, {"heads": 0.5, "scope": "global"}, "use scope uniform"),
    ],
)
def test_bad_head_shares_are_one_line_errors(model: dict, options: dict, message: str) -> None:
    built = vit(**model)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        stage_for(built, **options)
    assert "\n" not in str(error.value)


def test_heads_pruned_to_zero_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"method.heads must be in \[0, 1\), got 1.0"):
        ChannelPruning(heads=1.0)
    with pytest.raises(ConfigError, match=r"removes all 2 heads of blocks.0.attn; at least one"):
        stage_for(vit(heads=2, dim=16), heads=0.9999999)


def test_heads_and_head_dims_together() -> None:
    model = vit(heads=2, dim=16)
    stage_for(model, heads=0.5, head_dims=0.5, amount=0.0, ignore=["embed.proj"]).update(1.0)
    attn = model.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, attn.qkv.out_features) == (1, 4, 12)


class PackedAttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2))
        return self.head(self.attn(tokens, tokens, tokens, need_weights=False)[0].mean(1))


def test_packed_multihead_attention_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"'attn' is an nn.MultiheadAttention, whose packed"):
        stage_for(PackedAttentionNet(), heads=0.5)
    with pytest.raises(ConfigError, match="the model has no attention module"):
        stage_for(build_model({"name": "mlp"}, SHAPE, 10), heads=0.5)


def test_a_bad_share_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    assert_refused_before_training(
        tmp_path,
        monkeypatch,
        ["model=vit", "model.patch=4", "model.dim=32", "method=prune_heads", "method.heads=0.3"],
        "method.heads 0.3 removes 1.2 of the 4 heads of blocks.0.attn",
    )


# --- end to end ---------------------------------------------------------------------------------


def test_pipeline_prunes_heads_end_to_end(tmp_path: Path) -> None:
    overrides = (
        *QUICK,
        "model=vit",
        "model.patch=4",
        "model.dim=32",
        "model.depth=2",
        "method=prune_heads",
    )
    result = run(compose_config(tmp_path, *overrides, "tracking=none"))
    m = result.metrics
    assert m["heads_removed"] == 0.5
    assert m["macs"] < m["baseline/macs"] / 1.8
    with (result.run_dir / "attention_heads.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["module"] for r in rows] == ["blocks.0.attn", "blocks.1.attn"]
    assert rows[0] == {
        "module": "blocks.0.attn",
        "heads": "4",
        "heads_kept": "2",
        "head_dim": "8",
        "head_dim_kept": "8",
    }
    loaded = load_artifact(result.artifact)
    assert [b.attn.num_heads for b in loaded.blocks] == [2, 2]
