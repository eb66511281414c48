"""Behaviour of compress.data: real digits, generated data, torchvision files, config errors."""

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data import DataBundle, DatasetConfig, RawData, Split, dataset_names, load_dataset
from compress.data.digits import digits_csv_path, read_digits
from compress.data.vision import LAYOUTS
from compress.errors import ConfigError, DatasetMissingError
from tests.support import MNIST10K, needs_mnist10k


def _denormalised_digits(bundle: DataBundle) -> list[tuple[int, ...]]:
    """Recover the 0..16 pixel values: normalisation is one affine map, and train holds 0 and 16."""
    low, high = bundle.train.x.min(), bundle.train.x.max()
    rows = []
    for split in (bundle.train, bundle.val, bundle.test):
        pixels = torch.round((split.x - low) / (high - low) * 16).to(torch.int64)
        flat = torch.cat([pixels.flatten(1), split.y[:, None]], dim=1)
        rows.extend(tuple(r) for r in flat.tolist())
    return sorted(rows)


# --- digits -------------------------------------------------------------------------------------


def test_digits_shapes_sizes_and_normalisation() -> None:
    bundle = load_dataset({"name": "digits", "val_fraction": 0.1, "test_fraction": 0.2})
    assert bundle.name == "digits"
    assert bundle.input_shape == (1, 8, 8)
    assert bundle.num_classes == 10
    assert len(bundle.test) == round(0.2 * 1797) == 359
    assert len(bundle.val) == round(0.1 * (1797 - 359)) == 144
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.shape[0] == split.y.shape[0]
    assert set(bundle.train.y.tolist()) == set(range(10))
    assert abs(bundle.train.x.mean().item()) < 1e-4
    assert abs(bundle.train.x.std(correction=0).item() - 1.0) < 1e-4
    # Val and test use train statistics, so they are close to, but not exactly, standardised.
    assert abs(bundle.test.x.mean().item()) < 0.1


def test_digits_equal_sklearn_load_digits() -> None:
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    assert digits_csv_path() is not None, "expected to read the CSV shipped inside scikit-learn"
    images, labels = read_digits()
    np.testing.assert_array_equal(images.reshape(len(images), -1), data)
    np.testing.assert_array_equal(labels, target)
    # The bundle's three splits together are exactly sklearn's samples (as a multiset).
    expected = sorted((*map(int, row), int(t)) for row, t in zip(data, target, strict=True))
    assert _denormalised_digits(load_dataset({"name": "digits"})) == expected


def test_digits_deterministic_and_fingerprint_tracks_the_data() -> None:
    first = load_dataset({"name": "digits"})
    again = load_dataset({"name": "digits", "split_seed": 0, "val_fraction": 0.1})
    assert first.fingerprint == again.fingerprint
    assert len(first.fingerprint) == 16 and int(first.fingerprint, 16) >= 0
    pairs = zip(
        (first.train, first.val, first.test), (again.train, again.val, again.test), strict=True
    )
    for a, b in pairs:
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)

    other_seed = load_dataset({"name": "digits", "split_seed": 1})
    assert other_seed.fingerprint != first.fingerprint
    assert not torch.equal(other_seed.test.y, first.test.y)

    subset = load_dataset({"name": "digits", "train_subset": 100})
    assert len(subset.train) == 100
    assert subset.fingerprint != first.fingerprint
    # Val is carved before the subset, so a quick run validates on the same samples.
    assert torch.equal(subset.val.y, first.val.y)


def test_zero_val_fraction_gives_empty_val() -> None:
    bundle = load_dataset({"name": "digits", "val_fraction": 0.0})
    assert len(bundle.val) == 0 and bundle.val.x.shape == (0, 1, 8, 8)
    assert len(bundle.train) == 1797 - 359


# --- fake ---------------------------------------------------------------------------------------


def test_fake_has_requested_shapes_and_is_learnable() -> None:
    cfg = {
        "name": "fake",
        "num_train": 600,
        "num_test": 300,
        "shape": [3, 4, 5],
        "num_classes": 7,
        "noise": 0.5,
        "val_fraction": 0.2,
    }
    bundle = load_dataset(cfg)
    assert bundle.input_shape == (3, 4, 5)
    assert bundle.num_classes == 7
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (480, 120, 300)
    assert set(bundle.test.y.tolist()) == set(range(7))

    # Nearest class mean, fitted on train, scored on test: chance is 1/7.
    means = torch.stack([bundle.train.x[bundle.train.y == c].mean(0) for c in range(7)])
    distances = torch.cdist(bundle.test.x.flatten(1), means.flatten(1))
    accuracy = (distances.argmin(1) == bundle.test.y).float().mean().item()
    assert accuracy > 0.9

    assert load_dataset(cfg).fingerprint == bundle.fingerprint
    assert load_dataset({**cfg, "split_seed": 3}).fingerprint != bundle.fingerprint


def test_tensors_land_on_the_requested_device() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_dataset({"name": "fake", "num_train": 20, "num_test": 10}, device=device)
    for split in (bundle.train, bundle.val, bundle.test):
        assert isinstance(split, Split)
        assert split.x.device.type == device and split.y.device.type == device


# --- torchvision datasets -----------------------------------------------------------------------


@needs_mnist10k
def test_mnist_from_real_files() -> None:
    bundle = load_dataset({"name": "mnist", "root": str(MNIST10K), "val_fraction": 0.1})
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.num_classes == 10
    assert len(bundle.train) + len(bundle.val) == 8000
    assert (len(bundle.val), len(bundle.test)) == (800, 2000)
    assert bundle.train.x.dtype == torch.float32 and bundle.test.y.dtype == torch.int64
    assert abs(bundle.train.x.mean().item()) < 1e-3
    assert set(bundle.test.y.tolist()) == set(range(10))


def test_layouts_match_torchvision() -> None:
    from torchvision import datasets

    for name, layout in LAYOUTS.items():
        cls = getattr(datasets, layout.class_name)
        if hasattr(cls, "resources"):  # MNIST family: <root>/<Class>/raw/<file without .gz>
            expected = tuple(f.removesuffix(".gz") for f, _ in cls.resources)
            assert layout.folder == f"{cls.__name__}/raw", name
            assert len(cls.classes) == layout.num_classes, name
        else:  # CIFAR family: <root>/<base_folder>/<batches and meta>
            expected = tuple(f for f, _ in cls.train_list + cls.test_list)
            expected += (cls.meta["filename"],)
            assert layout.folder == cls.base_folder, name
        assert layout.files == expected, name


@pytest.mark.parametrize(
    ("name", "folder", "a_file"),
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py", "test_batch"),
    ],
)
def test_missing_files_name_folder_and_files(
    tmp_path: Path, name: str, folder: str, a_file: str
) -> None:
    with pytest.raises(DatasetMissingError) as caught:
        load_dataset({"name": name, "root": str(tmp_path)})
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / folder) in message
    assert a_file in message
    assert "dataset.download=true" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_failed_download_is_a_missing_dataset_error(tmp_path: Path, name: str) -> None:
    """Offline, download=True must still end in one clear line; guarded so it cannot hang."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            load_dataset({"name": name, "root": str(tmp_path), "download": True})
            outcome.append(None)
        except BaseException as exc:  # reported to the main thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        pytest.skip("download attempt did not fail within 10 s (network stalls instead of failing)")
    if outcome[0] is None:
        pytest.skip("network is reachable: the download succeeded")
    assert isinstance(outcome[0], DatasetMissingError), repr(outcome[0])
    message = str(outcome[0])
    assert "\n" not in message
    assert str(tmp_path / LAYOUTS[name].folder) in message
    assert "download failed" in message


def test_vision_dataset_without_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.root"):
        load_dataset({"name": "cifar100", "root": None})


# --- config errors ------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        load_dataset({"name": "imagenet"})
    assert all(name in str(caught.value) for name in dataset_names())


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="val_fracton"):
        load_dataset({"name": "digits", "val_fracton": 0.1})


@pytest.mark.parametrize(
    "override",
    [
        {"val_fraction": 1.5},
        {"val_fraction": -0.1},
        {"test_fraction": 0.0},
        {"train_subset": 0},
        {"train_subset": 5000},
        {"split_seed": "zero"},
        {"download": "yes"},
    ],
)
def test_bad_values_are_config_errors(override: dict) -> None:
    key = next(iter(override))
    with pytest.raises(ConfigError, match=key):
        load_dataset({"name": "digits", **override})


@pytest.mark.parametrize(
    "override", [{"num_train": 0}, {"shape": [8, 8]}, {"num_classes": 1}, {"noise": -1.0}]
)
def test_bad_fake_values_are_config_errors(override: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(override))):
        load_dataset({"name": "fake", **override})


def test_key_for_another_dataset_is_rejected() -> None:
    with pytest.raises(ConfigError, match="num_train"):
        load_dataset({"name": "digits", "num_train": 10})


def test_key_of_another_dataset_names_its_owner_and_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_dataset({"name": "mnist", "root": "/tmp", "test_fraction": 0.3})
    assert "test_fraction do not apply to dataset 'mnist' (they belong to digits)" in str(
        caught.value
    )
    with pytest.raises(ConfigError) as caught:
        load_dataset({"name": "fake", "num_trian": 10})
    assert "num_trian" in str(caught.value) and "num_train" in str(caught.value)


@dataclass(frozen=True)
class Stripes(DatasetConfig):
    """A dataset config outside compress.data, without a name: found through _target_ only."""

    count: int = 40

    def load_raw(self, generator: torch.Generator) -> RawData:
        labels = torch.arange(self.count) % 2
        x = labels.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).to(torch.uint8) * 255
        return RawData(x, labels, x[:10], labels[:10], num_classes=2, scale=1 / 255)


def test_target_loads_a_dataset_config_defined_elsewhere() -> None:
    cfg = {"_target_": f"{__name__}.Stripes", "count": 50, "val_fraction": 0.2}
    bundle = load_dataset(cfg)
    assert bundle.name == "Stripes"
    assert bundle.input_shape == (1, 4, 4) and bundle.num_classes == 2
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 10)
    assert load_dataset(cfg).fingerprint == bundle.fingerprint
    assert load_dataset({**cfg, "split_seed": 1}).fingerprint != bundle.fingerprint
    assert "Stripes" not in dataset_names()
    with pytest.raises(ConfigError, match=r"dataset\.count must be an integer"):
        load_dataset({**cfg, "count": "many"})
    with pytest.raises(ConfigError, match="not a dataset config"):
        load_dataset({"_target_": "torch.nn.Linear"})
