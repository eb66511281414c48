"""`method=weight_sharing`: k = 2**bits centroids per layer from k-means (Han et al.).

The centroids come from k-means over each layer's nonzero weights (linear init); the
fine-tune trains the centroids while codes stay fixed. Han et al. give each centroid the
sum of its weights' gradients; here it is divided by the cluster's size (the mean), or a
cluster of hundreds of weights takes steps hundreds of times larger than one weight would,
and at a usual fine-tune rate the centroids cross each other and scramble the layer. The
artifact stores a codebook and `bits`-bit codes; zeros (pruned before) stay zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.artifact.encodings import Entry, codebook_entry
from compress.config import require
from compress.methods.base import MethodConfig, MethodContext, Stage
from compress.methods.weights import BitsStage, check_bits, check_layer_bits, layer_bits
from compress.quant.grid import MAX_BITS
from compress.quant.kmeans import INITS, cluster, shared_weights


@dataclass(frozen=True)
class WeightSharing(MethodConfig):
    name = "weight_sharing"
    gradual = False
    bits: int = 5
    init: str = "linear"
    iterations: int = 30
    layers: dict[str | int, int] | None = None
    exclude: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        check_bits(self.bits, "method.bits", 1, MAX_BITS)
        require(
            self.init in INITS,
            f"method.init '{self.init}' unknown; choose one of: {', '.join(INITS)}",
        )
        require(self.iterations >= 0, f"method.iterations must be >= 0, got {self.iterations}")
        check_layer_bits(self, 1)

    def apply(self, model: nn.Module, context: MethodContext) -> Stage:
        return share_weights(model, self, context)


class _Shared(nn.Module):
    """Parametrization: the weight is `centroids[codes]` on the mask; the trained
    parameter is the centroid table (right_inverse hands it over at registration)."""

    def __init__(self, centroids: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.initial = centroids
        self.register_buffer("codes", codes)
        self.register_buffer("mask", mask)

    def forward(self, centroids: torch.Tensor) -> torch.Tensor:
        return shared_weights(centroids, self.codes, self.mask)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.initial.to(weight.device, weight.dtype)


class SharingStage(BitsStage):
    def __init__(self, model: nn.Module, config: WeightSharing) -> None:
        self.config = config
        self.modules = dict(model.named_modules())
        self.bits = layer_bits(
            model, config.bits, config.layers or {}, tuple(config.exclude), config.name
        )
        self.books: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.applied = False

    def update(self, progress: float) -> bool:
        if progress < 1 or self.applied:
            return False
        self.applied = True
        for path, bits in self.bits.items():
            module = self.modules[path]
            weight = module.weight.detach()
            mask = weight != 0
            centroids, codes = cluster(
                weight[mask],
                2**bits,
                init=self.config.init,
                iterations=self.config.iterations,
                seed=self.config.seed,
            )
            parametrize.register_parametrization(
                module, "weight", _Shared(centroids, codes, mask), unsafe=True
            )
            sizes = torch.bincount(codes, minlength=centroids.numel()).clamp(min=1)
            original = module.parametrizations.weight.original
            original.register_hook(functools.partial(torch.div, other=sizes.to(original)))
        return True

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self.applied:
            self.update(1.0)
        for path in self.bits:
            module = self.modules[path]
            shared = module.parametrizations.weight[0]
            centroids = module.parametrizations.weight.original.detach().clone()
            self.books[path] = (centroids.cpu(), shared.codes.cpu(), shared.mask.cpu())
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            with torch.no_grad():  # exactly what the artifact decodes to
                module.weight.copy_(shared_weights(centroids, shared.codes, shared.mask))
        return model

    def encodings(self) -> dict[str, Entry]:
        return {f"{p}.weight": codebook_entry(*book) for p, book in self.books.items()}


def share_weights(model: nn.Module, config: WeightSharing, context: MethodContext) -> SharingStage:
    return SharingStage(model, config)
