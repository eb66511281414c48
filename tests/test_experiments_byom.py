"""The worked example of README.md's "Bring your own model" (experiments/bring_your_own/) on a
few generated digits: MNIST-format files made into an image folder, MyNet trained by the
plain PyTorch script, then compress, which must report as its baseline the accuracy the plain
script's own evaluation measures."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from compress.cli.main import main
from tests.support import QUICK, REPO_ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = REPO_ROOT / "experiments" / "bring_your_own"
CLASSES, TRAIN, TEST, SIZE = 3, 16, 6, 16


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """The example's scripts, imported as run from their folder (mynet importable too)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import make_folder
    import train_plain

    return make_folder, train_plain


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: zero, zero, 8 (unsigned bytes), the rank, sizes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path) -> Path:
    """MNIST/raw under `root` with learnable digits: class k is a bright band at rows 5k."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", TRAIN), ("t10k", TEST)):
        labels = np.repeat(np.arange(CLASSES), per_class)
        images = rng.integers(0, 80, (len(labels), SIZE, SIZE))
        for image, label in zip(images, labels, strict=True):
            image[5 * label : 5 * label + 4] += 170
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def test_make_folder_writes_one_png_per_digit(example, tmp_path: Path) -> None:
    make_folder, _ = example
    dest = tmp_path / "folder"
    assert make_folder.main([str(write_mnist(tmp_path / "src")), str(dest)]) == 0
    for split, count in (("train", TRAIN), ("test", TEST)):
        assert sorted(p.name for p in (dest / split).iterdir()) == ["0", "1", "2"]
        assert len(list((dest / split / "1").glob("*.png"))) == count


def test_compress_baseline_is_the_plain_scripts_accuracy(
    example, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_folder, train_plain = example
    folder, weights = tmp_path / "folder", tmp_path / "mynet.pt"
    make_folder.make_folder(write_mnist(tmp_path / "src"), folder)
    args = [str(folder), str(weights), "--epochs", "1", "--batch-size", "8", "--lr", "0.01"]
    assert train_plain.main(args) == 0
    model = train_plain.MyNet(num_classes=CLASSES)
    model.load_state_dict(torch.load(weights, weights_only=True))
    plain = train_plain.evaluate(model, train_plain.image_folder(folder, "test"))
    assert f"test accuracy: {plain:.4f}" in capsys.readouterr().out
    assert plain > 1 / CLASSES  # learned something: a figure worth comparing

    code, out, err = run_cli(
        main,
        [
            f"paths.outputs={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "tracking=none",  # the figures are in summary.json; an MLflow store costs ~9 s
            *QUICK,
            "model=custom",
            "model._target_=mynet.MyNet",
            f"model.weights={weights}",
            "dataset=image_folder",
            f"dataset.root={folder}",
            "dataset.channels=1",
            "dataset.normalize={mean:[0.1307],std:[0.3081]}",
            "schedule.train.epochs=0",
            "schedule.finetune.epochs=1",
            "method=prune",
            "method.amount=0.8",
        ],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]
    assert metrics["baseline/acc"] == pytest.approx(plain, abs=0.5 / (CLASSES * TEST))
    assert f"{plain:.2%}" in out
