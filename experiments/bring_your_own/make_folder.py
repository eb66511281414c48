"""Write MNIST digits as an image folder: DEST/train/<digit>/*.png and DEST/test/<digit>/*.png.

    uv run python experiments/bring_your_own/make_folder.py SOURCE DEST
    (the README: SOURCE ../shared/data/mnist10k, DEST outputs/digits_folder)

SOURCE holds MNIST's IDX files under SOURCE/MNIST/raw (as torchvision lays them out, plain
or .gz): the train-* files become train/, the t10k-* files test/. The worked example of
README.md's "Bring your own model" starts here, so that compress reads ordinary PNGs.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: Split folder -> the prefix of its IDX files.
SPLITS = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: a magic number giving the rank, big-endian sizes,
    then unsigned bytes) as an array; `path` or `path.gz`."""
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    rank = data[3]
    shape = np.frombuffer(data, dtype=">u4", count=rank, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def save_split(images: np.ndarray, labels: np.ndarray, folder: Path) -> int:
    """One grayscale PNG per image (2-D uint8) under folder/<label>/; how many were written."""
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:05d}.png")
    return len(images)


def make_folder(source: Path, dest: Path) -> dict[str, int]:
    """Every split of the MNIST files under `source` written under `dest`; counts by split."""
    raw = source / "MNIST" / "raw"
    counts = {}
    for split, prefix in SPLITS.items():
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte")
        counts[split] = save_split(images, labels, dest / split)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder holding MNIST/raw/*-ubyte")
    parser.add_argument("dest", type=Path, help="the image folder to write")
    args = parser.parse_args(argv)
    counts = make_folder(args.source, args.dest)
    print(", ".join(f"{n} {split} images" for split, n in counts.items()), f"in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
