"""Structured channel pruning, measured: figures printed beside the issue's targets.

    uv run python benchmarks/structured.py                      # LeNet-5, half the channels
    uv run python benchmarks/structured.py --amount 0.6 --threads 2

One `compress` run (a subprocess, as a user runs it): LeNet-5 on MNIST-10k trained for
`--train-epochs`, `method=prune_channels` removes `--amount` of every layer's output
channels (the classifier keeps its 10), then `--finetune-epochs` of fine-tuning. The
figures come from the run's summary, i.e. from the saved artifact loaded back.

Targets (amount 0.5): MACs >= 2x fewer, CPU latency at batch 256 >= 1.7x faster with
`measure.threads` threads, accuracy after fine-tuning within 1 point of the dense model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from run import COMPRESS, MNIST10K, latest_summary, print_verdicts, timed, verdict


def command(args: argparse.Namespace, outputs: Path) -> list[str]:
    return [
        COMPRESS,
        f"paths.outputs={outputs}",
        f"model={args.model}",
        "dataset=mnist",
        f"dataset.root={args.data.resolve()}",
        "method=prune_channels",
        f"method.amount={args.amount}",
        f"method.importance={args.importance}",
        f"schedule.train.epochs={args.train_epochs}",
        f"schedule.finetune.epochs={args.finetune_epochs}",
        "runtime.device=cpu",
        "runtime.progress=false",
        f"measure.threads={args.threads}",
        "measure.batch_sizes=[1,256]",
        "measure.repeats=50",
        "measure.max_seconds=5",
        "tracking=none",
    ]


def rows(
    m: dict, seconds: float, macs: float = 2.0, speedup: float = 1.7
) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) for the targets (`macs`x fewer MACs, `speedup`x
    faster at batch 256, within 1 pt) and the context."""
    drop_pts = 100 * (m["baseline/acc"] - m["acc"])

    return [
        (
            "fewer MACs (ratio/macs)",
            f"{m['ratio/macs']:.2f}x",
            f">= {macs:g}x",
            verdict(m["ratio/macs"] >= macs),
        ),
        (
            "CPU latency speedup, batch 256",
            f"{m['speedup/latency/b256']:.2f}x",
            f">= {speedup:g}x",
            verdict(m["speedup/latency/b256"] >= speedup),
        ),
        (
            "accuracy dense -> pruned + fine-tuned",
            f"{m['baseline/acc']:.2%} -> {m['acc']:.2%}",
            "drop <= 1 pt",
            verdict(drop_pts <= 1),
        ),
        ("accuracy drop (points)", f"{drop_pts:.2f}", "<= 1", ""),
        ("CPU latency speedup, batch 1", f"{m['speedup/latency/b1']:.2f}x", "", ""),
        (
            "latency b256 dense -> pruned (ms)",
            f"{m['baseline/latency_ms/b256']:.2f} -> {m['latency_ms/b256']:.2f}",
            "",
            "",
        ),
        ("MACs dense -> pruned", f"{m['baseline/macs']:,} -> {m['macs']:,}", "", ""),
        ("fewer parameters (ratio/params)", f"{m['ratio/params']:.2f}x", "", ""),
        ("smaller artifact (ratio/size)", f"{m['ratio/size']:.2f}x", "", ""),
        ("channels removed", f"{m['channels_removed']:.1%}", "", ""),
        ("wall time of the run (s)", f"{seconds:.0f}", "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="measure.threads for latency")
    args = parser.parse_args()
    if not (args.data / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found: {args.data}/MNIST/raw (pass --data)")

    with tempfile.TemporaryDirectory(prefix="compress-structured-") as tmp:
        start = time.perf_counter()
        timed(command(args, Path(tmp)))
        seconds = time.perf_counter() - start
        metrics = latest_summary(Path(tmp))["metrics"]

    title = (
        f"{args.model}, method=prune_channels amount={args.amount} importance={args.importance}, "
        f"train {args.train_epochs} + fine-tune {args.finetune_epochs} epochs, "
        f"latency with {args.threads} thread(s)"
    )
    print_verdicts(title, rows(metrics, seconds))


if __name__ == "__main__":
    main()
