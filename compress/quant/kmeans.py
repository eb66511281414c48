"""Weight sharing (Deep Compression): 1-D k-means over a layer's weights.

`cluster` finds k centroids for the nonzero weights of a layer and each weight's code;
`shared_weights` is the single definition of the tensor a codebook stands for (zeros
where the mask is off), used by the model during fine-tuning and by the artifact's
decoder alike, so both hold bit-identical weights.
"""

from __future__ import annotations

import torch

INITS = ("linear", "density", "random")


def cluster(
    values: torch.Tensor, k: int, *, init: str = "linear", iterations: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids (k, float32, ascending) and codes (int64, one per value) of 1-D k-means.

    Inits as compared by Han et al.: `linear` spaces centroids evenly between the
    smallest and largest weight (their best: it keeps the rare large weights), `density`
    at evenly spaced quantiles, `random` at randomly drawn weights.
    """
    values = values.detach().flatten().float()
    if values.numel() == 0:
        return torch.zeros(k), torch.zeros(0, dtype=torch.long)
    if init == "linear":
        centroids = torch.linspace(float(values.min()), float(values.max()), k)
    elif init == "density":
        centroids = torch.quantile(values.cpu(), torch.linspace(0, 1, k))
    elif init == "random":
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(values.numel(), (k,), generator=g)
        centroids = values.cpu()[pick].sort().values
    else:
        raise ValueError(f"unknown k-means init '{init}'; choose one of: {', '.join(INITS)}")
    centroids = centroids.to(values.device)
    codes = assign(values, centroids)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).scatter_add_(0, codes, values)
        counts = torch.bincount(codes, minlength=k).to(values.dtype)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        updated = updated.sort().values
        new_codes = assign(values, updated)
        converged = torch.equal(new_codes, codes)
        centroids, codes = updated, new_codes
        if converged:
            break
    return centroids, codes


def assign(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the ascending `centroids` for each value."""
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(values, boundaries)


def shared_weights(
    centroids: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The tensor of `mask`'s shape holding `centroids[codes]` where `mask`, zero elsewhere."""
    flat = torch.zeros(mask.numel(), dtype=centroids.dtype, device=centroids.device)
    flat = flat.index_put((mask.flatten().nonzero().squeeze(1),), centroids[codes])
    return flat.view(mask.shape)
