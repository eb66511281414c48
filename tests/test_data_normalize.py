"""`dataset.normalize`: auto (as before), none, explicit values; bad values in one line."""

from __future__ import annotations

import pytest
import torch

from compress.data import load_dataset
from compress.errors import ConfigError

DIGITS = {"name": "digits"}


def _pixels(cfg: dict) -> torch.Tensor:
    """Digits' train images scaled to [0, 1], without normalisation."""
    return load_dataset({**cfg, "normalize": "none"}).train.x


def test_auto_is_the_default_and_standardises_with_train_statistics() -> None:
    auto = load_dataset({**DIGITS, "normalize": "auto"})
    default = load_dataset(DIGITS)
    assert auto.fingerprint == default.fingerprint
    assert torch.equal(auto.train.x, default.train.x) and torch.equal(auto.test.x, default.test.x)
    pixels = _pixels(DIGITS)
    mean, std = pixels.mean().item(), pixels.std(correction=0).item()
    assert auto.normalization.mode == "auto"
    assert auto.normalization.mean == pytest.approx((mean,)) and len(auto.normalization.std) == 1
    assert auto.normalization.std == pytest.approx((std,))
    torch.testing.assert_close(auto.train.x, (pixels - mean) / std)


def test_none_leaves_pixels_in_unit_range() -> None:
    bundle = load_dataset({**DIGITS, "normalize": "none"})
    assert bundle.normalization.mode == "none"
    assert (bundle.normalization.mean, bundle.normalization.std) == ((0.0,), (1.0,))
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.min().item() == 0.0 and split.x.max().item() == 1.0
        # digits are 0..16 integers: every pixel is a multiple of 1/16
        assert torch.equal(torch.round(split.x * 16), split.x * 16)
    # other inputs, other baseline: the fingerprint tells them apart
    assert bundle.fingerprint != load_dataset(DIGITS).fingerprint


def test_explicit_values_are_applied_per_channel() -> None:
    cfg = {"name": "fake", "shape": [3, 4, 4], "num_classes": 3}
    pixels = load_dataset({**cfg, "normalize": "none"}).train.x
    normalize = {"mean": [0.5, 0.0, -1.0], "std": [0.25, 1.0, 2.0]}
    bundle = load_dataset({**cfg, "normalize": normalize})
    mean = torch.tensor(normalize["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(normalize["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(bundle.train.x, (pixels - mean) / std)
    assert bundle.normalization.mode == "explicit"
    assert bundle.normalization.mean == (0.5, 0.0, -1.0)
    assert bundle.normalization.std == (0.25, 1.0, 2.0)
    other = load_dataset({**cfg, "normalize": {"mean": [0.5, 0.0, -1.0], "std": [0.5, 1, 2]}})
    assert len({bundle.fingerprint, other.fingerprint, load_dataset(cfg).fingerprint}) == 3


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        ("imagenet", r"dataset\.normalize must be auto, none or \{mean"),
        ({"mean": [0.5]}, "needs exactly the keys mean and std"),
        ({"mean": [0.5], "std": [0.5], "scale": 2}, "needs exactly the keys mean and std"),
        ({"mean": [], "std": []}, r"dataset\.normalize\.mean must be a non-empty list"),
        ({"mean": [0.5, 0.5], "std": [0.5]}, "mean has 2 values but std has 1"),
        ({"mean": [0.5], "std": [0.0]}, r"dataset\.normalize\.std must all be > 0"),
        ({"mean": [0.5], "std": [-1]}, r"dataset\.normalize\.std must all be > 0"),
        ({"mean": ["a"], "std": [1]}, r"dataset\.normalize\.mean must be a non-empty list"),
        ({"mean": 0.5, "std": 0.5}, r"dataset\.normalize\.mean must be a non-empty list"),
        (3, r"dataset\.normalize must be a string or a mapping"),
        ({"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1]}, r"3 mean/std values but the images have 1"),
    ],
)
def test_bad_normalize_is_one_line(normalize: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_dataset({**DIGITS, "normalize": normalize})
    assert "\n" not in str(caught.value)
