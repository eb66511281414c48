"""A small vision transformer (Dosovitskiy 2021): patches -> pre-norm blocks -> pooled tokens.

Its attention is ours rather than `nn.MultiheadAttention`, for two reasons a compression lab
cares about. Its `qkv` is one Linear and it carries `num_heads` and `head_dim`, which is the
form Torch-Pruning can remove whole heads from (the packed `in_proj_weight` of
`nn.MultiheadAttention` it leaves alone); the artifact records both attributes of a shrunk
model. And it passes its attention probabilities through `attn.map` (an identity), so a
distillation tap on `blocks.N.attn.map` sees the (batch, heads, tokens, tokens) maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compress.errors import ConfigError
from compress.models.base import ModelConfig
from compress.models.options import image_shape, positive_int

POOLS = ("cls", "mean")


class AttentionMap(nn.Identity):
    """Where an attention module's softmax probabilities pass: a tap for attention transfer."""


class Attention(nn.Module):
    """Multi-head self-attention with one `qkv` projection (timm's layout: 3, heads, head_dim).

    `scale` is fixed when the module is built, so removing dims from heads does not change
    how the remaining ones are scaled.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.map = AttentionMap()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = self.map((q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbedding(nn.Module):
    """Non-overlapping patches, flattened, through one Linear (the ViT paper's "linear
    projection of flattened patches": what a strided conv computes, but a Linear is what
    dynamic int8 and N:M sparsity take), then the class token and positions."""

    def __init__(self, channels: int, patch: int, grid: int, dim: int, cls_token: bool) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, dim)
        tokens = grid + int(cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p = self.patch
        grid = x.reshape(batch, channels, height // p, p, width // p, p)
        patches = grid.permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)
        tokens = self.proj(patches)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embed


class VisionTransformer(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        pool: str,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.pool = pool
        grid = (height // patch) * (width // patch)
        self.embed = PatchEmbedding(channels, patch, grid, dim, cls_token=pool == "cls")
        hidden = round(dim * mlp_ratio)
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init)
        self.embed.proj.reset_parameters()  # torch's default, as a patch conv would start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.blocks(self.embed(x)))
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return self.head(pooled)


def _init(module: nn.Module) -> None:
    """Truncated-normal Linear weights and positions, zero biases, as ViTs are started."""
    if isinstance(module, PatchEmbedding):
        nn.init.trunc_normal_(module.pos_embed, std=0.02)
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


#: `patch: auto` cuts a square image into this many patches a side (16 tokens).
AUTO_GRID = 4


@dataclass(frozen=True)
class ViTConfig(ModelConfig):
    """`patch` must divide the image (`auto`: a 4x4 grid of patches, 7 on 28x28 MNIST,
    2 on the 8x8 digits); `dim` must split evenly into `heads`."""

    name: ClassVar[str] = "vit"

    patch: int | str = "auto"
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    pool: str = "mean"

    def __post_init__(self) -> None:
        if self.patch != "auto":
            positive_int("vit", "patch", self.patch)
        for option in ("dim", "depth", "heads"):
            positive_int("vit", option, getattr(self, option))
        if self.dim % self.heads:
            raise ConfigError(
                f"model 'vit': dim {self.dim} does not split into {self.heads} heads "
                f"(head dim {self.dim / self.heads:g}); choose a dim that is a multiple of heads"
            )
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, int | float):
            raise ConfigError(f"model 'vit': mlp_ratio must be a number, got {self.mlp_ratio!r}")
        if round(self.dim * self.mlp_ratio) < 1:
            raise ConfigError(f"model 'vit': mlp_ratio {self.mlp_ratio} leaves no MLP units")
        if self.pool not in POOLS:
            raise ConfigError(
                f"model 'vit': pool must be one of {', '.join(POOLS)}, got {self.pool!r}"
            )

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, height, width = image_shape("vit", input_shape)
        patch = self._patch(height, width)
        return VisionTransformer(
            (channels, height, width),
            num_classes,
            patch=patch,
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            mlp_ratio=float(self.mlp_ratio),
            pool=self.pool,
        )

    def _patch(self, height: int, width: int) -> int:
        """The patch side for these images, or a one-line error if it cannot tile them."""
        if self.patch == "auto":
            if height != width or height % AUTO_GRID:
                raise ConfigError(
                    f"model 'vit': patch auto needs square images with sides a multiple of "
                    f"{AUTO_GRID}, got {height}x{width}; give a patch that divides both sides"
                )
            return height // AUTO_GRID
        if height % self.patch or width % self.patch:
            raise ConfigError(
                f"model 'vit': patch {self.patch} does not tile the {height}x{width} images; "
                "choose a patch that divides both sides"
            )
        return self.patch
