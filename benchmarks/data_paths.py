"""The data paths timed: LeNet-5 on MNIST-10k (8k/2k), in memory and streamed, against a
bare PyTorch loop, printed as figures beside their targets.

    uv run python benchmarks/data_paths.py [--root ../shared/data/mnist10k] [--epochs 6]
        [--threads 1] [--workers 2]

1. streamed / in memory: an epoch of `fit` on `dataset=mnist in_memory=true` against the same
   images as PNGs (written once to outputs/bench/mnist10k_folder, ImageFolder layout) read by
   `dataset=image_folder channels=1 in_memory=false workers=W`. Reported, no target.
2. shift / none: an in-memory epoch with `augment=shift` against one without. Target <= 1.15.
   Shift's batches come out channels-last strided (a 1-channel permute that `.contiguous()`
   keeps), on which LeNet-5's convs and pools run faster on CPU; so the figure is given again
   with the unaugmented images stored channels-last strided too: augmentation's own cost.
3. framework / bare, streamed: `fit` on the streamed bundle against a plain ImageFolder +
   DataLoader loop doing the same work (uint8 -> float / 255, the same mean/std, forward,
   cross-entropy, backward, SGD step with the same recipe and model). Target <= 1.15.

Every run trains all 8,000 train images (val_fraction=0, so no per-epoch validation), batch
64, SGD momentum 0.9, weight decay 5e-4, lr 0.01 cosine (Caffe's LeNet-5 diverges at 0.05).
The five runs are interleaved epoch by epoch (one trains at a time, each in its own thread,
the order rotated every round), so a noisy machine slows both sides of a ratio alike. Figures
are medians over epochs, the first epoch of each run skipped as warm-up (the DataLoader
workers start there); "paired" is the median of the per-round ratios. The whole run (first
epoch, loader and optimizer set-up included, turns spent waiting excluded) is timed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from compress.data import DataBundle, load_dataset
from compress.data.augment import parse_augment
from compress.models import build_model
from compress.train.callbacks import EpochStats, observing
from compress.train.loop import accuracy, fit
from compress.train.recipe import RuntimeConfig, TrainRecipe

HERE = Path(__file__).resolve().parent
MNIST10K = HERE.parent.parent / "shared" / "data" / "mnist10k"
FOLDER = HERE.parent / "outputs" / "bench" / "mnist10k_folder"
MODEL = {"name": "lenet5"}


def write_folder(root: Path, out: Path) -> float:
    """MNIST-10k as PNGs under `out` (train|test/<digit>/NNNNN.png), once per `root`;
    seconds spent."""
    marker = f"MNIST from {root} as PNGs, written by benchmarks/data_paths.py\n"
    if (out / ".complete").is_file() and (out / ".complete").read_text() == marker:
        return 0.0
    from PIL import Image
    from torchvision.datasets import MNIST

    start = time.perf_counter()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split, train in (("train", True), ("test", False)):
        ds = MNIST(str(root), train=train, download=False)
        for i, (image, label) in enumerate(zip(ds.data.numpy(), ds.targets.tolist(), strict=True)):
            folder = partial / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")
    (partial / ".complete").write_text(marker)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return time.perf_counter() - start


class Turns:
    """One epoch at a time, in the order `order` names the runs; each run's waits summed."""

    def __init__(self, order: list[str]) -> None:
        self.order, self.position, self.stopped = order, 0, False
        self.lock = threading.Condition()
        self.waited: dict[str, float] = dict.fromkeys(order, 0.0)

    def take(self, name: str) -> None:
        start = time.perf_counter()
        with self.lock:
            self.lock.wait_for(lambda: self.stopped or self.order[self.position] == name)
        if self.stopped:
            raise RuntimeError("another run failed")
        self.waited[name] += time.perf_counter() - start

    def give(self) -> None:
        with self.lock:
            self.position += 1
            self.lock.notify_all()

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()


class Gate:
    """A `fit` callback: after each epoch, hand the turn on and wait for the next one."""

    def __init__(self, turns: Turns, name: str, epochs: int) -> None:
        self.turns, self.name, self.epochs = turns, name, epochs

    def fit_started(self, phase: str, label: str, epochs: int, steps_per_epoch: int) -> None: ...

    def step_done(self, step: int, running_loss: float) -> None: ...

    def epoch_done(self, stats: EpochStats) -> None:
        self.turns.give()
        if stats.epoch + 1 < self.epochs:
            self.turns.take(self.name)

    def fit_done(self) -> None: ...


#: A run: (turns, its name, seed) -> (epoch seconds, the trained model).
Run = Callable[[Turns, str, int], tuple[list[float], torch.nn.Module]]


def framework(data: DataBundle, recipe: TrainRecipe) -> Run:
    """`fit` as the lab runs it; its own per-epoch seconds."""

    def run(turns: Turns, name: str, seed: int) -> tuple[list[float], torch.nn.Module]:
        torch.manual_seed(seed)
        model = build_model(MODEL, data.input_shape, data.num_classes)
        with observing(Gate(turns, name, recipe.epochs)):
            history = fit(model, data, recipe, RuntimeConfig(progress=False), seed=seed, label=name)
        return [s.seconds for s in history], model

    return run


def bare(folder: Path, data: DataBundle, recipe: TrainRecipe, workers: int) -> Run:
    """A plain ImageFolder + DataLoader loop doing `fit`'s work on the same images."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    images = ImageFolder(
        str(folder / "train"), transform=v2.Compose([v2.Grayscale(1), v2.PILToTensor()])
    )
    mean = torch.tensor(data.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.normalization.std).view(1, -1, 1, 1)

    def run(turns: Turns, name: str, seed: int) -> tuple[list[float], torch.nn.Module]:
        torch.manual_seed(seed)
        model = build_model(MODEL, data.input_shape, data.num_classes)  # as `fit`'s is built
        loader = DataLoader(
            images,
            batch_size=recipe.batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=False,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        opt = torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )  # fmt: skip
        model.train()
        seconds = []
        for epoch in range(recipe.epochs):
            if epoch:
                turns.take(name)
            started = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
            for x, y in loader:
                x = (x.float() / 255 - mean) / std
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            seconds.append(time.perf_counter() - started)
            turns.give()
        return seconds, model

    return run


def interleaved(runs: dict[str, Run], epochs: int, seed: int = 0) -> dict[str, tuple]:
    """Each run in its own thread, one epoch at a time, the order rotated every round:
    {name: (epoch seconds, whole seconds without the turns it waited, model)}."""
    names = list(runs)
    turns = Turns(
        [n for r in range(epochs) for n in names[r % len(names) :] + names[: r % len(names)]]
    )
    results: dict[str, tuple] = {}
    errors: list[BaseException] = []

    def thread(name: str) -> None:
        try:
            turns.take(name)
            start, before = time.perf_counter(), turns.waited[name]
            seconds, model = runs[name](turns, name, seed)
            whole = time.perf_counter() - start - (turns.waited[name] - before)
            results[name] = (seconds, whole, model)
        except BaseException as error:
            errors.append(error)
            turns.stop()

    threads = [threading.Thread(target=thread, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def ratio_row(name: str, ours: list[float], theirs: list[float], target: float | None) -> tuple:
    """(figure, medians a / b = r, paired, best, target, verdict) of two runs' epochs."""
    med = statistics.median(ours) / statistics.median(theirs)
    paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    verdict = "" if target is None else "met" if med <= target else "missed"
    return (
        name,
        f"{statistics.median(ours):.2f} / {statistics.median(theirs):.2f} s = {med:.2f}",
        f"{paired:.2f}",
        f"{min(ours) / min(theirs):.2f}",  # noise on a shared machine only ever adds time
        "" if target is None else f"<= {target:.2f}",
        verdict,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=6, help="per run; the first is warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is skipped as warm-up)")
    if not (args.root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"{args.root}/MNIST/raw not found (see --root)")
    torch.set_num_threads(args.threads)
    written = write_folder(args.root.resolve(), FOLDER)

    loads = {}
    common = {"val_fraction": 0}  # all 8,000 train images, no per-epoch validation pass
    for name, cfg in {
        "in memory": {"name": "mnist", "root": args.root, "in_memory": True},
        "streamed": {"name": "image_folder", "root": FOLDER, "channels": 1, "in_memory": False,
                     "workers": args.workers},
    }.items():  # fmt: skip
        start = time.perf_counter()
        loads[name] = (load_dataset({**cfg, **common}), time.perf_counter() - start)
    memory, streamed = loads["in memory"][0], loads["streamed"][0]
    x = memory.train.x
    strided = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)  # C=1: strides only
    memory_cl = dataclasses.replace(memory, train=dataclasses.replace(memory.train, x=strided))
    plain = TrainRecipe(epochs=args.epochs, lr=0.01, weight_decay=5e-4)
    shift = TrainRecipe(epochs=args.epochs, lr=0.01, weight_decay=5e-4,
                        augment=parse_augment({"name": "shift"}))  # fmt: skip
    results = interleaved(
        {
            "memory": framework(memory, plain),
            "memory_cl": framework(memory_cl, plain),
            "shift": framework(memory, shift),
            "streamed": framework(streamed, plain),
            "bare": bare(FOLDER, streamed, plain, args.workers),
        },
        args.epochs,
    )
    epochs = {name: seconds[1:] for name, (seconds, _, _) in results.items()}
    rows = [
        ratio_row("epoch, streamed PNGs / in memory", epochs["streamed"], epochs["memory"], None),
        ratio_row("epoch, in memory: shift / none", epochs["shift"], epochs["memory"], 1.15),
        ratio_row("  same, none channels-last strided", epochs["shift"], epochs["memory_cl"], 1.15),
        ratio_row("epoch, streamed: fit / bare PyTorch", epochs["streamed"], epochs["bare"], 1.15),
        ratio_row(
            "whole run, streamed: fit / bare", [results["streamed"][1]], [results["bare"][1]], None
        ),
    ]
    header = ("figure", "measured (medians)", "paired", "best", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip())
    accs = ", ".join(
        f"{name} {accuracy(m, memory.test):.2%}" for name, (_, _, m) in results.items()
    )
    print(f"test accuracy after {args.epochs} epochs: {accs}")
    print(
        "load_dataset: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, (_, seconds) in loads.items())
        + " (streamed: file headers + a normalize=auto pass)"
        + (f"; PNGs written in {written:.1f} s" if written else "; PNGs cached")
    )
    print(
        f"(medians of {args.epochs - 1} epochs per run, the first skipped as warm-up: workers "
        f"start; runs interleaved epoch by epoch; threads {args.threads}, workers "
        f"{args.workers}, {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__})"
    )


if __name__ == "__main__":
    main()
