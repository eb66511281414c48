"""The model artifact: exact tensor round trips, smallest encoding, real models, atomic writes."""

from __future__ import annotations

import copy
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.artifact.encodings import decode, encode, encoded_sizes
from compress.artifact.store import (
    FORMAT,
    atomic_torch_save,
    encodings,
    load_artifact,
    save_artifact,
)
from compress.methods import MethodContext, apply_method, parse_method
from compress.methods.masks import prunable_weights
from compress.models import build_model


def sparse_tensor(
    shape: tuple[int, ...], sparsity: float, dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.Tensor:
    """A tensor with exactly round(sparsity * n) zeros and no other zero."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    values = (torch.rand(n, generator=g) + 0.5) * 4 * sign  # |v| >= 2: nonzero in any dtype
    values[torch.randperm(n, generator=g)[: round(sparsity * n)]] = 0
    return values.reshape(shape).to(dtype)


def payload_bytes(entry: dict) -> int:
    """Bytes of the tensors an encoded entry holds (what `encoded_sizes` claims)."""
    return sum(v.numel() * v.element_size() for v in entry.values() if isinstance(v, torch.Tensor))


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert torch.equal(a, b)


# --- encode / decode ----------------------------------------------------------------------------

ROUND_TRIP = {
    "dense-2d": sparse_tensor((16, 32), 0.0),
    "1d-s0": sparse_tensor((100,), 0.0),
    "1d-s50": sparse_tensor((100,), 0.5),
    "1d-s99": sparse_tensor((1000,), 0.99),
    "1d-s100": torch.zeros(100),
    "2d-s50": sparse_tensor((64, 100), 0.5),
    "2d-s90": sparse_tensor((64, 100), 0.9),
    "2d-s99": sparse_tensor((64, 100), 0.99),
    "2d-s100": torch.zeros(64, 100),
    "conv-s0": sparse_tensor((8, 4, 3, 3), 0.0),
    "conv-s50": sparse_tensor((8, 4, 3, 3), 0.5),
    "conv-s90": sparse_tensor((8, 4, 3, 3), 0.9),
    "conv-s99": sparse_tensor((32, 16, 3, 3), 0.99),
    "conv-s100": torch.zeros(8, 4, 3, 3),
    "int64-scalar": torch.tensor(123, dtype=torch.int64),
    "int64-zero": torch.tensor(0, dtype=torch.int64),
    "int64-vector": torch.tensor([0, 0, 5, 0, -7], dtype=torch.int64),
    "f16-s50": sparse_tensor((20, 30), 0.5, torch.float16),
    "f16-s99": sparse_tensor((50, 40), 0.99, torch.float16),
    "f16-1d": sparse_tensor((33,), 0.7, torch.float16),
    "bf16-s90": sparse_tensor((20, 30), 0.9, torch.bfloat16),
    "f64-s90": sparse_tensor((20, 30), 0.9, torch.float64),
    "scalar-zero": torch.tensor(0.0),
    "scalar-nonzero": torch.tensor(-2.5),
    "empty-1d": torch.empty(0),
    "empty-2d": torch.empty(0, 3),
    "empty-2d-cols": torch.empty(3, 0),
    "odd-length-bitmask": sparse_tensor((13,), 0.8),
    # CSR with uint16 row pointers and column indices (nnz >= 256, > 256 columns).
    "csr-uint16": sparse_tensor((300, 1000), 0.99),
    # CSR with uint32 column indices (more than 65536 columns).
    "csr-uint32-cols": sparse_tensor((2, 70_000), 0.999),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_encode_decode_round_trip_exact(name: str) -> None:
    tensor = ROUND_TRIP[name]
    assert_same(decode(encode(tensor)), tensor)


@pytest.mark.parametrize("name", ["2d-s99", "csr-uint16", "csr-uint32-cols", "conv-s90", "f16-s99"])
def test_encoded_entries_survive_weights_only_load(name: str, tmp_path: Path) -> None:
    tensor = ROUND_TRIP[name]
    path = tmp_path / "entry.pt"
    atomic_torch_save({"entry": encode(tensor)}, path)
    entry = torch.load(path, map_location="cpu", weights_only=True)["entry"]
    assert_same(decode(entry), tensor)


def test_round_trip_of_non_contiguous_tensor() -> None:
    tensor = sparse_tensor((40, 30), 0.95).t()
    assert not tensor.is_contiguous()
    assert_same(decode(encode(tensor)), tensor)


def test_encode_uses_the_expected_index_dtypes() -> None:
    assert encode(ROUND_TRIP["2d-s99"])["row_ptr"].dtype == torch.uint8
    assert encode(ROUND_TRIP["2d-s99"])["cols"].dtype == torch.uint8
    big = encode(ROUND_TRIP["csr-uint16"])
    assert big["encoding"] == "csr"
    assert (big["row_ptr"].dtype, big["cols"].dtype) == (torch.uint16, torch.uint16)
    wide = encode(ROUND_TRIP["csr-uint32-cols"])
    assert wide["encoding"] == "csr"
    assert (wide["row_ptr"].dtype, wide["cols"].dtype) == (torch.uint8, torch.uint32)


def test_decode_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="unknown tensor encoding 'rle'"):
        decode({"encoding": "rle", "values": torch.zeros(1), "shape": [1]})


# --- which encoding wins, and how big it is -----------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "sparsity", "expected"),
    [
        ((100, 100), 0.0, "dense"),
        ((100, 100), 0.01, "dense"),  # bitmask 1250 + 4 * 9900 > 40000
        ((100, 100), 0.85, "bitmask"),
        ((100, 100), 0.99, "csr"),
        ((100, 100), 1.0, "csr"),
        ((64, 1000), 0.9, "bitmask"),  # 16-bit column indices make CSR lose here
        ((64, 1000), 0.99, "csr"),
        ((1000,), 0.0, "dense"),
        ((1000,), 0.99, "bitmask"),  # no CSR for 1-D tensors
        ((32, 16, 3, 3), 0.0, "dense"),
        ((32, 16, 3, 3), 0.85, "bitmask"),
        ((32, 16, 3, 3), 0.99, "csr"),
    ],
)
def test_encode_picks_the_smallest_encoding(
    shape: tuple[int, ...], sparsity: float, expected: str
) -> None:
    tensor = sparse_tensor(shape, sparsity)
    sizes = encoded_sizes(tensor)
    entry = encode(tensor)
    assert entry["encoding"] == expected
    assert sizes[expected] == min(sizes.values())
    assert payload_bytes(entry) == sizes[expected]


def test_integer_codes_are_stored_sparsely_when_smaller() -> None:
    tensor = torch.zeros(50, 50, dtype=torch.int8)
    tensor[3, 7] = -5
    entry = encode(tensor)
    assert entry["encoding"] == "csr"
    assert_same(decode(entry), tensor)
    assert encode(torch.ones(50, 50, dtype=torch.int8))["encoding"] == "dense"


def test_empty_tensor_only_has_dense_encoding() -> None:
    assert encoded_sizes(torch.empty(0, 3)) == {"dense": 0}


@pytest.mark.parametrize(
    ("shape", "dtype", "nnz", "expected"),
    [
        # ptr uint8, idx uint16 (299 > 255): csr = 11 * 1 + 30 * (2 + 4)
        ((10, 300), torch.float32, 30, {"dense": 12000, "bitmask": 375 + 120, "csr": 191}),
        # nnz 1500 needs uint16 pointers: csr = 101 * 2 + 1500 * (1 + 4)
        ((100, 100), torch.float32, 1500, {"dense": 40000, "bitmask": 7250, "csr": 7702}),
        # float16 conv viewed as (8, 36): csr = 9 * 1 + 29 * (1 + 2)
        ((8, 4, 3, 3), torch.float16, 29, {"dense": 576, "bitmask": 36 + 58, "csr": 96}),
        ((7,), torch.float32, 3, {"dense": 28, "bitmask": 1 + 12}),
        # int64 codes: bitmask = 2 + 4 * 8, csr = 4 * 1 + 4 * (1 + 8)
        ((3, 3), torch.int64, 4, {"dense": 72, "bitmask": 34, "csr": 40}),
    ],
)
def test_encoded_sizes_match_the_formulas(
    shape: tuple[int, ...], dtype: torch.dtype, nnz: int, expected: dict[str, int]
) -> None:
    n = math.prod(shape)
    tensor = sparse_tensor(shape, 1 - nnz / n).to(dtype)
    assert int(tensor.count_nonzero()) == nnz
    assert encoded_sizes(tensor) == expected


@pytest.mark.parametrize(
    ("shape", "nnz"), [((3, 5), 1), ((40, 70), 5), ((300, 1000), 3000), ((2, 70_000), 70)]
)
def test_csr_size_formula_general(shape: tuple[int, int], nnz: int) -> None:
    rows, cols = shape
    tensor = sparse_tensor(shape, 1 - nnz / (rows * cols))
    ptr_bytes = 1 if nnz < 2**8 else 2 if nnz < 2**16 else 4
    idx_bytes = 1 if cols - 1 < 2**8 else 2 if cols - 1 < 2**16 else 4
    sizes = encoded_sizes(tensor)
    assert sizes["dense"] == rows * cols * 4
    assert sizes["bitmask"] == math.ceil(rows * cols / 8) + nnz * 4
    assert sizes["csr"] == (rows + 1) * ptr_bytes + nnz * (idx_bytes + 4)


def test_bitmask_payload_size_matches_formula() -> None:
    tensor = sparse_tensor((1003,), 0.6)
    entry = encode(tensor)
    assert entry["encoding"] == "bitmask"
    assert entry["bits"].numel() == math.ceil(1003 / 8)
    assert payload_bytes(entry) == math.ceil(1003 / 8) + int(tensor.count_nonzero()) * 4


# --- whole models -------------------------------------------------------------------------------


MODELS = [
    ({"name": "small_cnn"}, (1, 8, 8)),
    ({"name": "small_cnn", "channels": [4, 8]}, (1, 8, 8)),
    ({"name": "lenet300"}, (1, 28, 28)),
]


def _trained_bn_stats(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Move BN running statistics (and num_batches_tracked) away from their defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape))


def _pruned_model(cfg: dict, shape: tuple[int, ...], amount: float) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg, shape, 10)
    _trained_bn_stats(model, shape)
    if amount > 0:
        stage = apply_method(
            model, parse_method({"name": "prune", "amount": amount}), MethodContext((1, 8, 8))
        )
        stage.update(1.0)
        stage.finalize(model)
    return model.eval()


@pytest.mark.parametrize(("cfg", "shape"), MODELS, ids=lambda v: str(v))
def test_save_load_round_trip_of_pruned_model(
    cfg: dict, shape: tuple[int, ...], tmp_path: Path
) -> None:
    model = _pruned_model(cfg, shape, 0.9)
    original = copy.deepcopy(model.state_dict())
    path = tmp_path / "model.pt"
    size = save_artifact(model, path, model_config=cfg, input_shape=shape, num_classes=10)
    assert size == path.stat().st_size > 0

    loaded = load_artifact(path)
    assert not loaded.training
    state = loaded.state_dict()
    assert list(state) == list(original)
    for name, tensor in original.items():
        assert_same(state[name], tensor)
    x = torch.randn(16, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["model"] == {"config": cfg, "input_shape": list(shape), "num_classes": 10}


def test_pruned_weights_are_stored_sparsely(tmp_path: Path) -> None:
    model = _pruned_model({"name": "small_cnn"}, (1, 8, 8), 0.9)
    path = tmp_path / "model.pt"
    save_artifact(
        model, path, model_config={"name": "small_cnn"}, input_shape=(1, 8, 8), num_classes=10
    )
    kinds = encodings(path)
    assert set(kinds) == set(model.state_dict())
    weights = [f"{path}.weight" for path in prunable_weights(model)]
    assert len(weights) == 4
    assert all(kinds[name] in ("bitmask", "csr") for name in weights)
    assert kinds["features.0.1.num_batches_tracked"] == "dense"
    assert kinds["features.0.1.running_var"] == "dense"


@pytest.mark.parametrize(("cfg", "shape"), [MODELS[0], MODELS[2]], ids=lambda v: str(v))
def test_pruned_artifact_is_much_smaller_than_dense(
    cfg: dict, shape: tuple[int, ...], tmp_path: Path
) -> None:
    dense = _pruned_model(cfg, shape, 0.0)
    pruned = _pruned_model(cfg, shape, 0.9)
    kwargs = {"model_config": cfg, "input_shape": shape, "num_classes": 10}
    dense_size = save_artifact(dense, tmp_path / "dense.pt", **kwargs)
    pruned_size = save_artifact(pruned, tmp_path / "pruned.pt", **kwargs)
    n_params = sum(p.numel() for p in dense.parameters())
    assert dense_size >= 4 * n_params  # float32 weights, stored densely
    assert pruned_size < 0.3 * dense_size


def test_load_rejects_a_file_with_another_format(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "something/else", "tensors": {}}, path)
    with pytest.raises(ValueError, match=r"not a compress artifact \(one of compress\.artifact/1"):
        load_artifact(path)


def test_load_rejects_a_plain_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(build_model({"name": "lenet300"}, (1, 8, 8), 10).state_dict(), path)
    with pytest.raises(ValueError, match="is not a"):
        load_artifact(path)


def test_load_rejects_a_file_that_is_not_a_torch_archive(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"definitely not a zip archive" * 10)
    with pytest.raises(Exception):  # noqa: B017  (torch's own unpickling error)
        load_artifact(path)


# --- atomic writes ------------------------------------------------------------------------------


def test_atomic_save_leaves_only_the_target(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "obj.pt"
    atomic_torch_save({"x": torch.arange(5)}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["obj.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(5))


def test_atomic_save_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    with pytest.raises(Exception):  # noqa: B017  (pickling a lambda fails)
        atomic_torch_save({"x": torch.zeros(3), "f": lambda: 0}, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_save_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    atomic_torch_save({"x": torch.ones(3)}, path)
    with pytest.raises(Exception):  # noqa: B017
        atomic_torch_save({"x": torch.zeros(3), "f": lambda: 0}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_save_respects_umask_like_torch_save(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.pt", tmp_path / "atomic.pt"
    torch.save({"x": torch.ones(1)}, plain)
    if stat.S_IMODE(plain.stat().st_mode) == 0o600:
        pytest.skip("the umask already gives 0600, so the difference cannot show")
    atomic_torch_save({"x": torch.ones(1)}, atomic)
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
