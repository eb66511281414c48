"""benchmarks/gpu.py's train section: `fit` against a bare PyTorch loop doing the same work.

Both train ResNet-20 on the same device-resident DataBundle (CIFAR-shaped fake data) with
the plan's recipe (SGD momentum, cosine lr per epoch, flip+crop), bf16 autocast, channels
last and torch.compile as the plan's runtime says, and both validate on the val split after
every epoch, as `fit` does (eager model, fp32, batches of 1024). The bare loop shuffles on
the device, augments with its own batched tensor ops and reads the loss back once an epoch.
After one untimed warm-up epoch, runs alternate (framework, bare, then bare, framework,
...); each run's first epoch (its compile) is left out; figures are medians of the other
epochs' images per second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from run import verdict

from compress.data import DataBundle, load_dataset
from compress.models import build_model
from compress.run.pipeline import Plan
from compress.train.loop import fit

#: Framework images/s against the bare loop's: what the target asks.
TARGET = 0.9


def _model(plan: Plan, data: DataBundle, device: torch.device, seed: int) -> torch.nn.Module:
    """The model both sides train, built and placed as the pipeline does."""
    torch.manual_seed(seed)
    model = build_model(plan.model, data.input_shape, data.num_classes).to(device)
    if plan.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def framework_run(plan: Plan, data: DataBundle, device: torch.device, seed: int) -> dict:
    """`fit` as the pipeline calls it: seconds per epoch (its EpochStats) and the last val acc."""
    model = _model(plan, data, device, seed)
    history = fit(model, data, plan.train, plan.runtime, seed=seed, label="framework")
    return {"seconds": [s.seconds for s in history], "val_acc": history[-1].val_acc}


def flip_crop(
    x: torch.Tensor, pad: int, flip: bool, black: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """Pad with black, crop back at a random offset per image, mirror half of them: batched.
    The gather leaves the batch channels-last in memory, where the convs want it."""
    n, c, h, w = x.shape
    fill = black if black is not None else x.new_zeros(1, c, 1, 1)
    padded = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    top, left = torch.randint(0, 2 * pad + 1, (2, n, 1), device=x.device, generator=generator)
    rows = top + torch.arange(h, device=x.device)  # (n, h)
    cols = left + torch.arange(w, device=x.device)  # (n, w)
    images = torch.arange(n, device=x.device)[:, None, None]
    out = padded[images, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if not flip:
        return out
    mirror = torch.randint(0, 2, (n, 1, 1, 1), device=x.device, generator=generator).bool()
    return torch.where(mirror, out.flip(3), out)


@torch.inference_mode()
def _val_acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch):
        correct += model(x[i : i + batch]).argmax(1).eq(y[i : i + batch]).sum()
    model.train()
    return correct.item() / max(len(x), 1)


def bare_run(plan: Plan, data: DataBundle, device: torch.device, seed: int) -> dict:
    """The same work written out in plain PyTorch: seconds per epoch and the last val acc."""
    recipe, runtime = plan.train, plan.runtime
    if recipe.lr_schedule != "cosine" or recipe.warmup_epochs or recipe.bn_l1:
        raise SystemExit("the bare loop does cosine lr without warm-up or bn_l1 only")
    augment = recipe.augment if recipe.augment.enabled else None
    if augment is not None and augment.name != "flip_crop":
        raise SystemExit(f"the bare loop does augment=flip_crop only, not {augment.name}")
    model = _model(plan, data, device, seed)
    step = torch.compile(model) if runtime.compile else model
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay,
    )  # fmt: skip
    x_all, y_all, black = data.train.x, data.train.y, data.train.black
    generator = torch.Generator(device=device).manual_seed(seed)
    amp = runtime.amp and device.type == "cuda"
    n, size = len(y_all), recipe.batch_size
    seconds, train_acc, val_acc = [], float("nan"), float("nan")
    model.train()
    for epoch in range(recipe.epochs):
        started = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
        order = torch.randperm(n, device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)  # fit's train accuracy
        for start in range(0, n, size):
            idx = order[start : start + size]
            x, y = x_all[idx], y_all[idx]
            if augment is not None:
                x = flip_crop(x, augment.padding, augment.flip, black, generator)
            if runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", torch.bfloat16) if amp else contextlib.nullcontext():
                logits = step(x)
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += logits.detach().argmax(1).eq(y).sum()
        if not math.isfinite(loss_sum.item()):
            raise SystemExit(f"bare loop: the loss diverged in epoch {epoch + 1}")
        train_acc = correct.item() / n
        val_acc = _val_acc(model, data.val.x, data.val.y)
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds, "train_acc": train_acc, "val_acc": val_acc}


def train_rows(cfg: dict[str, Any], epochs: int, repeats: int) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict): framework and bare images/s, their ratio."""
    plan = Plan.from_config(cfg)
    plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, epochs=epochs))
    device = plan.device()
    data = load_dataset(plan.dataset, device)
    if not hasattr(data.train, "x"):
        raise SystemExit("train: the data did not fit in memory (raise memory_limit_gb)")
    runs = {"framework": framework_run, "bare": bare_run}
    kept: dict[str, list[float]] = {name: [] for name in runs}
    first: dict[str, list[float]] = {name: [] for name in runs}
    accs: dict[str, float] = {}
    # One untimed epoch first: kernels picked, code compiled, caches warm for both sides.
    bare_run(dataclasses.replace(plan, train=dataclasses.replace(plan.train, epochs=1)),
             data, device, plan.seed)  # fmt: skip
    for repeat in range(repeats):
        names = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for name in names:
            done = runs[name](plan, data, device, plan.seed)
            first[name].append(done["seconds"][0])
            kept[name] += done["seconds"][1:]
            accs[name] = done["val_acc"]
    n = len(data.train)
    speed = {name: n / statistics.median(seconds) for name, seconds in kept.items()}
    ratio = speed["framework"] / speed["bare"]
    runtime = plan.runtime
    flags = f"amp={runtime.amp} channels_last={runtime.channels_last} compile={runtime.compile}"
    fit_s, bare_s = statistics.median(kept["framework"]), statistics.median(kept["bare"])
    compile_s = f"{_mean(first['framework']):.1f} / {_mean(first['bare']):.1f} s"
    setup = f"{n:,} images, batch {plan.train.batch_size}, {epochs} epochs x {repeats} runs"
    return [
        ("train: framework fit, images/s", f"{speed['framework']:,.0f}", "", ""),
        ("train: bare PyTorch loop, images/s", f"{speed['bare']:,.0f}", "", ""),
        (
            "train: framework / bare, images/s",
            f"{ratio:.2f}x",
            f">= {TARGET}x",
            verdict(ratio >= TARGET),
        ),
        ("train: epoch s, fit EpochStats.seconds / bare", f"{fit_s:.2f} / {bare_s:.2f}", "", ""),
        ("train: first (compile) epoch s, fit / bare", compile_s, "", ""),
        (
            "train: last val acc, fit / bare",
            f"{accs['framework']:.2%} / {accs['bare']:.2%}",
            "",
            "",
        ),
        ("train: setup", f"{setup}, {flags}", "", ""),
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
