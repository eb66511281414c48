"""The sparse24 probe: 2:4 detection on weights prune_nm really pruned, the kernel's shape
rules, staying off without a sparse-capable GPU, its config, and (on a GPU) the real kernel."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.data import DataBundle, load_dataset
from compress.errors import ConfigError
from compress.measure import ProbeContext, run_probes
from compress.measure.config import MeasureConfig
from compress.measure.probes.sparse24 import (
    SemiStructured,
    convertible_linears,
    fits_kernel,
    is_two_four,
    sparse_capable,
    sparsify,
)
from compress.methods import MethodContext, parse_method
from compress.run.pipeline import Plan
from tests.support import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

HALF = torch.float16


def _mlp(inputs: int = 64, hidden: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def _prune_nm(model: nn.Module, exclude: tuple[str, ...] = ()) -> nn.Module:
    """`model` pruned as `method=prune_nm` does: masks switched on, then folded in."""
    method = parse_method({"name": "prune_nm", "exclude": list(exclude)})
    stage = method.apply(model, MethodContext((1, 8, 8)))
    stage.update(1.0)
    return stage.finalize(model)


def test_a_prune_nm_linear_is_two_four_and_a_dense_one_is_not() -> None:
    model = _prune_nm(_mlp(), exclude=("3",))  # the middle Linear stays dense
    assert is_two_four(model[1].weight) and is_two_four(model[5].weight)
    assert not is_two_four(model[3].weight)
    assert model[1].weight.eq(0).float().mean().item() == 0.5


def test_one_extra_nonzero_in_a_group_of_four_breaks_two_four() -> None:
    model = _prune_nm(_mlp())
    weight = model[1].weight
    with torch.no_grad():
        row, group = 3, 5
        zeros = torch.nonzero(weight[row, 4 * group : 4 * group + 4] == 0).flatten()
        weight[row, 4 * group + int(zeros[0])] = 0.1  # now 3 nonzeros of 4
    assert not is_two_four(weight)
    assert convertible_linears(model, HALF, "cusparselt") == ["3"]


def test_inputs_not_a_multiple_of_four_are_never_two_four() -> None:
    assert not is_two_four(torch.zeros(16, 6))


def test_only_two_four_linears_of_a_shape_the_kernel_takes_are_converted() -> None:
    """Layers 1 and 3 (64->32, 32->32) fit cuSPARSELt's 16x16 tiles; the classifier
    (32->10) is 2:4 too but has 10 rows."""
    model = _prune_nm(_mlp())
    assert is_two_four(model[5].weight)
    assert convertible_linears(model, HALF, "cusparselt") == ["1", "3"]
    assert convertible_linears(_mlp(), HALF, "cusparselt") == []  # dense: none
    # CUTLASS wants 64 inputs for half: only the first layer.
    assert convertible_linears(model, HALF, "cutlass") == ["1"]


@pytest.mark.parametrize(
    ("shape", "dtype", "backend", "fits"),
    [
        ((16, 16), HALF, "cusparselt", True),
        ((4096, 4096), torch.bfloat16, "cusparselt", True),
        ((10, 64), HALF, "cusparselt", False),
        ((32, 24), HALF, "cusparselt", False),
        ((32, 32), torch.float32, "cusparselt", False),  # no float32 kernel
        ((32, 32), torch.float32, "cutlass", True),
        ((32, 32), HALF, "cutlass", False),  # CUTLASS half needs 64 inputs
        ((32, 64), HALF, "cutlass", True),
    ],
)
def test_the_kernels_shape_and_dtype_rules(shape, dtype, backend: str, fits: bool) -> None:
    assert fits_kernel(shape, dtype, backend) is fits


def _context(data: DataBundle, model: nn.Module, device: str, folder: Path) -> ProbeContext:
    settings = MeasureConfig(batch_sizes=(1, 64), warmup=1, repeats=5, max_seconds=1, probes=[])
    return ProbeContext(model, model, data, settings, torch.device(device), False, folder)


def test_the_probe_stays_off_on_the_cpu(data: DataBundle, tmp_path: Path) -> None:
    model = _prune_nm(_mlp())
    probe = SemiStructured()
    assert not sparse_capable(torch.device("cpu"))
    assert not probe.applies(_context(data, model, "cpu", tmp_path))
    result = run_probes([probe], _context(data, model, "cpu", tmp_path))
    assert (result.metrics, result.tags, result.files) == ({}, {}, [])


def test_measure_probes_sparse24_parses_from_the_command_line(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, "measure.probes=[compiled,sparse24]")
    probes = Plan.from_config(cfg).measure.probes
    assert [p.name for p in probes] == ["compiled", "sparse24"]
    assert (probes[1].dtype, probes[1].backend) == ("float16", "auto")
    options = MeasureConfig(probes=[{"name": "sparse24", "dtype": "bfloat16"}]).probes[0]
    assert options.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "sparse24", "dtype": "float32"}, ["sparse24.dtype", "float16, bfloat16"]),
        ({"name": "sparse24", "backend": "x"}, ["sparse24.backend", "auto, cusparselt"]),
        ({"name": "sparse24", "tolerance": 0}, ["sparse24.tolerance must be > 0"]),
    ],
)
def test_bad_sparse24_options_fail_in_one_line(entry: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        MeasureConfig(probes=[entry])
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


needs_sparse_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or not sparse_capable(torch.device("cuda")),
    reason="needs a CUDA GPU with sparse tensor cores (compute capability >= 8.0)",
)


@needs_sparse_gpu
def test_on_a_gpu_the_packed_copy_matches_the_dense_one_and_is_timed(tmp_path: Path) -> None:
    """A 256-wide MLP pruned 2:4 on real fake data on the GPU: two Linears packed, the
    kernel really used, logits within tolerance, every figure logged and finite."""
    data = load_dataset({"name": "fake", "shape": [1, 16, 16], "num_test": 256}, "cuda")
    model = _prune_nm(_mlp(256, 256)).cuda()
    sparse = sparsify(_prune_nm(_mlp(256, 256)).cuda().half(), ["1", "3"])
    assert isinstance(sparse[1].weight, torch.sparse.SparseSemiStructuredTensor)
    x = data.test.x[:64].half()
    dense = _prune_nm(_mlp(256, 256)).cuda().half()
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x), dense(x), rtol=1e-2, atol=1e-2)

    context = _context(data, model, "cuda", tmp_path)
    probe = SemiStructured()
    assert probe.applies(context)
    result = run_probes([probe], context)
    assert "sparse24.error" not in result.tags, result.tags
    assert result.tags["sparse24.gpu"] == torch.cuda.get_device_name()
    assert result.tags["sparse24.dtype"].startswith("float16")
    m = result.metrics
    assert m["sparse24/layers"] == 2
    assert m["sparse24/logits_diff"] <= probe.tolerance
    for batch in (1, 64):
        for key in ("sparse24/latency_ms", "sparse24/dense_latency_ms", "speedup/sparse24"):
            assert math.isfinite(m[f"{key}/b{batch}"]) and m[f"{key}/b{batch}"] > 0
    assert 0 <= m["sparse24/acc"] <= 1
