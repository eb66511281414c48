"""2:4 sparse Linears on sparse tensor cores: what `method=prune_nm` buys on a GPU.

prune_nm leaves two of every four inputs of a weight at zero, but a dense kernel still
multiplies the zeros. On a CUDA GPU with sparse tensor cores (compute capability >= 8.0)
this probe swaps every Linear weight that is exactly 2:4 sparse, and whose shape the
kernel takes, for a `torch.sparse.to_sparse_semi_structured` tensor in a copy of the
compressed model; `F.linear` then dispatches to cuSPARSELt (or CUTLASS). The copy's logits
are checked against the dense model's, then both are timed in turns.

cuSPARSELt, torch's default backend, has no float32 kernel (float16, bfloat16, int8, fp8),
so the dense reference and the sparse copy both run in `dtype` (float16 by default): the
ratio compares like with like, and the tag `sparse24.dtype` says so. Whatever the kernel
refuses (a shape, a GPU, an op it lacks) becomes the one-line tag `sparse24.error`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch.sparse import (
    SparseSemiStructuredTensor,
    SparseSemiStructuredTensorCUSPARSELT,
    SparseSemiStructuredTensorCUTLASS,
    to_sparse_semi_structured,
)

from compress.config import require
from compress.measure.latency import paired_latency_ms
from compress.measure.probes.base import ProbeConfig, ProbeContext, ProbeResult
from compress.train.loop import accuracy

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
BACKENDS = ("auto", "cusparselt", "cutlass")
KERNELS: dict[str, type[SparseSemiStructuredTensor]] = {
    "cusparselt": SparseSemiStructuredTensorCUSPARSELT,
    "cutlass": SparseSemiStructuredTensorCUTLASS,
}
#: Sparse tensor cores arrived with Ampere (sm_80).
MIN_CAPABILITY = (8, 0)
#: Test rows whose logits are compared, dense against sparse.
CHECK_ROWS = 256


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of each output holds at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, 4)
    return bool(groups.ne(0).sum(-1).le(2).all())


def resolve_backend(backend: str) -> str:
    """`auto`: cuSPARSELt where torch was built with it (torch's own default), else CUTLASS."""
    if backend != "auto":
        return backend
    return "cusparselt" if torch.backends.cusparselt.is_available() else "cutlass"


def fits_kernel(shape: tuple[int, ...], dtype: torch.dtype, backend: str) -> bool:
    """Whether the kernel takes a weight of `shape` (out, in) in `dtype`: both sides at
    least, and a multiple of, the backend's minimum tile (16 x 16 for cuSPARSELt in half)."""
    limits = KERNELS[resolve_backend(backend)]._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if limits is None or len(shape) != 2:
        return False
    rows, cols = shape
    return (
        rows >= limits.sparse_min_rows
        and rows % limits.sparse_min_rows == 0
        and cols >= limits.sparse_min_cols
        and cols % limits.sparse_min_cols == 0
    )


def convertible_linears(model: nn.Module, dtype: torch.dtype, backend: str) -> list[str]:
    """Paths of the Linears whose plain float weight is 2:4 sparse and fits the kernel.

    Left out: attention's packed output projection (MultiheadAttention reads its weight
    itself, not through `F.linear`) and weights that are already tensor subclasses
    (torchao's quantized ones)."""
    found = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module, NonDynamicallyQuantizableLinear):
            continue
        weight = module.weight
        if type(weight) not in (torch.Tensor, nn.Parameter) or not weight.is_floating_point():
            continue
        if fits_kernel(tuple(weight.shape), dtype, backend) and is_two_four(weight):
            found.append(path)
    return found


@contextlib.contextmanager
def _backend(backend: str) -> Iterator[None]:
    """`to_sparse_semi_structured` packs for CUTLASS only while `_FORCE_CUTLASS` is set."""
    before = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = resolve_backend(backend) == "cutlass"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*SparseSemiStructuredTensor.*prototype")
            yield
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = before


def sparsify(model: nn.Module, paths: list[str], backend: str = "auto") -> nn.Module:
    """`model` with the weights of the Linears at `paths` packed semi-structured, in place
    (the weights must already be on a CUDA device, in a dtype the backend takes)."""
    with _backend(backend):
        for path in paths:
            module = model.get_submodule(path)
            packed = to_sparse_semi_structured(module.weight.detach().contiguous())
            module.weight = nn.Parameter(packed, requires_grad=False)
    return model


class Cast(nn.Module):
    """`model` fed its inputs in `dtype`: float32 batches become half ones, on both sides."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype) if x.is_floating_point() else x)


def sparse_capable(device: torch.device) -> bool:
    """Whether `device` is a CUDA GPU with sparse tensor cores (cheap: no kernel runs)."""
    return (
        device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability(device) >= MIN_CAPABILITY
    )


@dataclass(frozen=True)
class SemiStructured(ProbeConfig):
    """Dense against 2:4 semi-structured Linears, both in `dtype`, on a sparse-capable GPU.

    `backend`: auto (cuSPARSELt where built, else CUTLASS), cusparselt or cutlass.
    `tolerance`: the largest |sparse - dense| logit allowed, relative to the largest
    |dense| logit, on the first test rows; beyond it the copy is not timed."""

    name = "sparse24"
    dtype: str = "float16"
    backend: str = "auto"
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        require(
            self.dtype in DTYPES,
            f"measure.probes: sparse24.dtype must be one of {', '.join(DTYPES)}, "
            f"got {self.dtype!r}",
        )
        require(
            self.backend in BACKENDS,
            f"measure.probes: sparse24.backend must be one of {', '.join(BACKENDS)}, "
            f"got {self.backend!r}",
        )
        require(
            self.tolerance > 0,
            f"measure.probes: sparse24.tolerance must be > 0, got {self.tolerance}",
        )

    def applies(self, context: ProbeContext) -> bool:
        if not sparse_capable(context.device):
            return False
        return bool(convertible_linears(context.compressed, DTYPES[self.dtype], self.backend))

    def measure(self, context: ProbeContext) -> ProbeResult:
        backend = resolve_backend(self.backend)
        result = ProbeResult(
            tags={
                "sparse24.gpu": torch.cuda.get_device_name(context.device),
                "sparse24.backend": backend,
                "sparse24.dtype": f"{self.dtype}, dense and sparse alike"
                + (" (cuSPARSELt has no float32 kernel)" if backend == "cusparselt" else ""),
            }
        )
        try:
            result.metrics = self._figures(context, backend)
        except Exception as error:  # the kernel refusing a shape, dtype, op or GPU
            log.warning("sparse24: %s: %s", type(error).__name__, error)
            line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            result.tags["sparse24.error"] = f"{type(error).__name__}: {line}"[:500]
            return result
        diff = result.metrics["sparse24/logits_diff"]
        if not diff <= self.tolerance:
            result.tags["sparse24.error"] = (
                f"logits differ from the dense model's by {diff:.3g} of the largest "
                f"(tolerance {self.tolerance:g}); not timed"
            )
        return result

    def _figures(self, context: ProbeContext, backend: str) -> dict[str, float]:
        dtype, device, settings = DTYPES[self.dtype], context.device, context.settings
        base = copy.deepcopy(context.compressed).to(device=device, dtype=dtype).eval()
        paths = convertible_linears(base, dtype, backend)
        sparse = Cast(sparsify(copy.deepcopy(base), paths, backend), dtype)
        dense = Cast(base, dtype)
        log.info("sparse24: %d Linear(s) packed 2:4 (%s): %s", len(paths), backend, paths)
        x = next(iter(context.data.test.loader(CHECK_ROWS))).x.to(device)
        with torch.inference_mode():
            expected, got = dense(x).float(), sparse(x).float()
        scale = expected.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
        metrics = {
            "sparse24/layers": float(len(paths)),
            "sparse24/logits_diff": ((got - expected).abs().max() / scale).item(),
        }
        if not metrics["sparse24/logits_diff"] <= self.tolerance:
            return metrics
        for batch in settings.batch_sizes:
            dense_ms, sparse_ms = paired_latency_ms(
                [dense, sparse], context.data.input_shape, batch, settings, device
            )
            metrics[f"sparse24/dense_latency_ms/b{batch}"] = dense_ms
            metrics[f"sparse24/latency_ms/b{batch}"] = sparse_ms
            metrics[f"speedup/sparse24/b{batch}"] = dense_ms / sparse_ms
        metrics["speedup/sparse24"] = metrics[f"speedup/sparse24/b{max(settings.batch_sizes)}"]
        metrics["sparse24/acc"] = accuracy(sparse, context.data.test, settings.eval_batch_size)
        return metrics
