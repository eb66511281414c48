"""Train MyNet on an image folder with plain PyTorch and save its state dict.

    uv run python experiments/bring_your_own/train_plain.py outputs/digits_folder outputs/mynet.pt

Nothing of compress here: torchvision's ImageFolder, a DataLoader, 10 epochs of Adam,
`torch.save(model.state_dict(), PATH)`. It prints the test accuracy it measures; compress
run on the same folder with the same normalisation (`dataset.normalize`) and
`schedule.train.epochs=0` reports that figure as its baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from mynet import MyNet
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

#: MNIST's usual statistics; compress gets the same: dataset.normalize={mean:[0.1307],std:[0.3081]}.
MEAN, STD = (0.1307,), (0.3081,)


def image_folder(root: Path, split: str) -> datasets.ImageFolder:
    """root/<split>/<class>/* as grayscale tensors, normalised."""
    transform = transforms.Compose(
        [transforms.Grayscale(1), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    return datasets.ImageFolder(str(root / split), transform=transform)


def train(
    model: nn.Module, data: datasets.ImageFolder, epochs: int, lr: float, batch_size: int = 64
) -> None:
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, data: datasets.ImageFolder) -> float:
    """Top-1 accuracy on `data`, in eval mode."""
    model.eval()
    correct = 0
    for x, y in DataLoader(data, batch_size=256):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the image folder (train/ and test/)")
    parser.add_argument("out", type=Path, help="where the state dict goes (.pt)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    train_data, test_data = image_folder(args.root, "train"), image_folder(args.root, "test")
    model = MyNet(num_classes=len(train_data.classes), width=args.width)
    train(model, train_data, args.epochs, args.lr, args.batch_size)
    print(f"test accuracy: {evaluate(model, test_data):.4f} ({len(test_data)} images)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"state dict saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
