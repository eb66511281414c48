"""The reference: a bare PyTorch script doing what `compress` does for LeNet-300-100.

Same data (MNIST-10k via torchvision's loader, whole split as tensors), same recipe as
`schedule=oneshot` (SGD momentum 0.9, weight decay 5e-4, cosine per epoch, batch 64),
10 epochs, 92% global magnitude pruning, 10 epochs fine-tune with masks, test accuracy,
and the pruned weights saved. No tracking, no measurement beyond accuracy.

    uv run python benchmarks/bare_lenet300.py --root ../shared/data/mnist10k
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.datasets import MNIST


def tensors(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ds = MNIST(root, train=train, download=False)
    return ds.data.float().div_(255).unsqueeze(1), ds.targets.long()


def train(model, x, y, epochs, lr, masks=None, seed=0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for w, m in masks:
                        w.mul_(m)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--amount", type=float, default=0.92)
    parser.add_argument("--out", default="/tmp/bare_lenet300.pt")
    args = parser.parse_args()
    started = time.perf_counter()

    x, y = tensors(args.root, train=True)
    x_test, y_test = tensors(args.root, train=False)
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    train(model, x, y, args.epochs, lr=0.05)
    with torch.no_grad():
        dense_acc = (model(x_test).argmax(1) == y_test).float().mean().item()

    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    scores = torch.cat([w.detach().abs().flatten() for w in weights])
    keep = scores.numel() - round(args.amount * scores.numel())
    threshold = torch.topk(scores, keep).values.min()
    masks = [(w, (w.detach().abs() >= threshold).float()) for w in weights]
    with torch.no_grad():
        for w, m in masks:
            w.mul_(m)
    train(model, x, y, args.epochs, lr=0.01, masks=masks, seed=1)

    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    nonzero = sum(int(w.count_nonzero()) for w in weights)
    total = sum(w.numel() for w in weights)
    torch.save(model.state_dict(), args.out)
    print(
        json.dumps(
            {
                "dense_acc": dense_acc,
                "acc": acc,
                "weights": total,
                "nonzero_weights": nonzero,
                "ratio_weights": total / nonzero,
                "seconds_in_script": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
