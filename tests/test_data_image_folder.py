"""`dataset=image_folder`: PNG files written here, read with torchvision's ImageFolder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.cli.main import main
from compress.data import load_dataset
from compress.errors import ConfigError, DatasetMissingError
from compress.run.pipeline import run
from tests.support import QUICK, compose_config, mlflow_runs, run_cli

CLASSES = ("cat", "dog", "eel")


def write_folder(root: Path, per_class: dict[str, int], size: tuple[int, int] = (10, 12)) -> Path:
    """Learnable RGB PNGs: each class its own brightness band, noise on top."""
    rng = np.random.default_rng(len(per_class))
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = rng.integers(0, 60, (*size, 3)) + 90 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images"), {"train": 12, "test": 4})


def _cfg(root: Path, **options: object) -> dict[str, object]:
    return {"name": "image_folder", "root": str(root), **options}


def test_loads_classes_shapes_and_pixels_as_pil_reads_them(folder: Path) -> None:
    bundle = load_dataset(_cfg(folder, normalize="none", val_fraction=0.25))
    assert bundle.name == "image_folder" and bundle.class_names == CLASSES
    assert bundle.num_classes == 3 and bundle.input_shape == (3, 10, 12)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (27, 9, 12)
    # test keeps ImageFolder's order: class by class, files sorted
    assert bundle.test.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    first = np.array(Image.open(folder / "test" / "cat" / "00.png").convert("RGB"))
    expected = torch.from_numpy(first).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(bundle.test.x[0], expected)
    assert load_dataset(_cfg(folder, normalize="none", val_fraction=0.25)).fingerprint == (
        bundle.fingerprint
    )


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"channels": 1}, (1, 10, 12)),
        ({"channels": 3, "image_size": 8}, (3, 8, 8)),
        ({"channels": 1, "image_size": [6, 4]}, (1, 6, 4)),
    ],
)
def test_channels_and_image_size(folder: Path, options: dict, shape: tuple[int, ...]) -> None:
    bundle = load_dataset(_cfg(folder, **options))
    assert bundle.input_shape == shape
    assert bundle.train.x.shape[1:] == bundle.test.x.shape[1:] == shape
    assert len(bundle.normalization.mean) == shape[0]


def test_a_val_folder_is_the_val_split(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"train": 6, "test": 2, "val": 3})
    bundle = load_dataset(_cfg(root, val_fraction=0.5))  # not used: val/ is there
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (18, 9, 6)
    assert bundle.val.y.tolist() == [0] * 3 + [1] * 3 + [2] * 3


def test_the_pipeline_compresses_an_image_folder(folder: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path, *QUICK, "dataset=image_folder", f"dataset.root={folder}", "dataset.image_size=8"
    )
    result = run(cfg)
    assert result.metrics["baseline/acc"] > 0.9 and 0 <= result.metrics["acc"] <= 1
    assert result.metrics["sparsity"] > 0.5
    (mlrun,) = mlflow_runs(tmp_path)
    assert mlrun.info.status == "FINISHED"
    tags = mlrun.data.tags
    assert tags["data.class_names"] == '["cat", "dog", "eel"]'
    assert tags["data.normalize"] == "auto" and len(json.loads(tags["data.normalize.mean"])) == 3
    assert mlrun.data.params["dataset.root"] == str(folder)


def _broken(tmp_path: Path, case: str) -> tuple[Path, type[Exception], str]:
    root = write_folder(tmp_path / "data", {"train": 2, "test": 1})
    if case == "root missing":
        return tmp_path / "nowhere", DatasetMissingError, f"root {tmp_path / 'nowhere'} is not"
    if case in ("no train", "no test"):
        split = case.split()[1]
        (root / split).rename(root / f"old_{split}")
        return root, DatasetMissingError, f"no {split}/ folder in {root}"
    if case == "empty class":
        (root / "train" / "fox").mkdir()
        return root, DatasetMissingError, f"class folder {root / 'train' / 'fox'} is empty"
    if case == "not an image":
        (root / "train" / "dog" / "notes.txt").write_text("not a picture")
        return root, ConfigError, f"file {root / 'train' / 'dog' / 'notes.txt'} could not be read"
    if case == "broken png":
        (root / "test" / "eel" / "00.png").write_bytes(b"\x89PNG garbage")
        return root, ConfigError, f"file {root / 'test' / 'eel' / '00.png'} could not be read"
    if case == "different classes":
        (root / "test" / "eel").rename(root / "test" / "emu")
        return root, ConfigError, "missing in test/: eel; only in test/: emu"
    if case == "different sizes":
        Image.new("RGB", (5, 5)).save(root / "train" / "cat" / "99.png")
        return root, ConfigError, "all images need one size (dataset.image_size resizes"
    raise AssertionError(case)


BROKEN = (
    "root missing",
    "no train",
    "no test",
    "empty class",
    "not an image",
    "broken png",
    "different classes",
    "different sizes",
)


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_folder_is_one_line(tmp_path: Path, case: str) -> None:
    root, error, message = _broken(tmp_path, case)
    with pytest.raises(error) as caught:
        load_dataset(_cfg(root))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_folders_from_the_command_line_leave_no_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    root, _, message = _broken(tmp_path, "not an image")
    for overrides, expected in [
        ([f"dataset.root={root}"], message),
        (["dataset.root=/nonexistent"], "root /nonexistent is not a folder"),
        ([], "dataset 'image_folder' needs dataset.root"),
        ([f"dataset.root={root}", "dataset.channels=2"], "dataset.channels must be 1 or 3"),
    ]:
        code, out, err = run_cli(
            main, [f"paths.outputs={tmp_path}", "dataset=image_folder", *overrides], capsys
        )
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("compress: error: ")
        assert expected in err and "baseline" not in out + err
    assert not any(r.info.status == "FINISHED" for r in mlflow_runs(tmp_path))
