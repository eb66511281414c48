"""Unstructured pruning targets on real MNIST digits, printed beside the papers' claims.

    uv run python benchmarks/pruning.py                    # all studies (~10 min on 2 cores)
    uv run python benchmarks/pruning.py --only agp --data DIR

- han_lenet300: Han et al. 2015, LeNet-300-100, per-layer keep 8% / 9% / 26%, iterative
  pruning (paper: 1.64% -> 1.59% error at 12x). Target: >= 12x fewer weights, test
  accuracy >= dense - 0.1 pt.
- han_lenet5: LeNet-5 (Caffe), keep 66% / 12% / 7.5% / 19% (paper: 0.80% -> 0.77% at
  12x). Target: >= 12x, accuracy >= dense - 0.1 pt.
  Han studies run seeds 0, 1, 2 (`--seeds`); the target is judged on the mean drop,
  since one accuracy on 2,000 test images has a standard error of ~0.44 pt.
- agp: at 95% sparsity, Zhu & Gupta's gradual pruning against one-shot pruning with the
  same fine-tune budget. Target: AGP at least as accurate.

Data: MNIST-10k (8k train / 2k test), not the official 60k/10k split, so the dense
accuracies are lower than the papers'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from run import COMPRESS, MNIST10K, latest_summary, timed

COMMON = ["dataset=mnist", "runtime.progress=false", "tracking=none"]

#: Han et al.'s recipe: prune layer by layer in 4 rounds of retraining.
HAN_SCHEDULE = [
    "schedule=iterative",
    "schedule.rounds=4",
    "schedule.train.epochs=20",
    "schedule.finetune.epochs=40",
    "schedule.finetune.label_smoothing=0.1",
    "method.scope=layer",
]
STUDIES: dict[str, list[str]] = {
    "han_lenet300": [
        "model=lenet300",
        *HAN_SCHEDULE,
        "method.layers={1:0.92,3:0.91,5:0.74}",
    ],
    "han_lenet5": [
        "model=lenet5",
        *HAN_SCHEDULE,
        "schedule.train.lr=0.01",  # Caffe's LeNet-5 (no ReLU after the convs) diverges at 0.05
        "schedule.finetune.lr=0.005",
        "method.layers={features?0:0.34,features?2:0.88,classifier?0:0.925,classifier?2:0.81}",
    ],
}
AGP_BUDGET = [
    "model=lenet300",
    "method.amount=0.95",
    "schedule.train.epochs=20",
    "schedule.finetune.epochs=20",
]


def study(name: str, overrides: list[str], work: Path, data: Path, seed: int = 0) -> dict:
    outputs = work / f"{name}-{seed}"
    command = [COMPRESS, f"paths.outputs={outputs}", f"dataset.root={data}", f"seed={seed}"]
    timed([*command, *COMMON, *overrides])
    return latest_summary(outputs)["metrics"]


def over_seeds(runs: list[dict]) -> dict:
    """Mean of each metric over seeds, with the drop's standard deviation beside it."""
    mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0] if k != "sparsity"}
    mean["acc_drop_std"] = statistics.stdev(r["acc_drop"] for r in runs) if len(runs) > 1 else 0
    return mean


def row(name: str, m: dict, target: str, ok: bool) -> tuple[str, ...]:
    return (
        name,
        f"{m['baseline/acc']:.2%}",
        f"{m['acc']:.2%}",
        f"{100 * m['acc_drop']:+.2f}"
        + (f"±{100 * m['acc_drop_std']:.2f}" if m.get("acc_drop_std") else ""),
        f"{m['ratio/params']:.2f}x",
        f"{m['ratio/size']:.2f}x",
        target,
        "met" if ok else "MISSED",
    )


WIDTHS = (14, 10, 10, 12, 12, 10, 26, 6)


def show(cells: tuple[str, ...]) -> None:
    print("  ".join(str(c).rjust(w) for c, w in zip(cells, WIDTHS, strict=True)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=(*STUDIES, "agp"))
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if not (args.data / "MNIST" / "raw").is_dir():
        sys.exit(f"MNIST files not found under {args.data}/MNIST/raw")
    show(
        ("study", "dense acc", "pruned acc", "drop pt", "ratio/params", "ratio/size", "target", "")
    )
    with tempfile.TemporaryDirectory(prefix="compress-prune-") as tmp:
        work = Path(tmp)
        for name, overrides in STUDIES.items():
            if args.only in (None, name):
                runs = [study(name, overrides, work, args.data, seed) for seed in args.seeds]
                for seed, m in zip(args.seeds, runs, strict=True):
                    show((*row(f"  seed {seed}", m, "", True)[:-1], ""))
                m = over_seeds(runs)
                ok = m["ratio/params"] >= 12 and m["acc_drop"] <= 0.001
                show(row(name, m, "mean: >=12x, drop <= 0.1", ok))
        if args.only in (None, "agp"):
            oneshot = study("oneshot95", AGP_BUDGET, work, args.data)
            show(row("oneshot_95", oneshot, "", True))
            agp = study(
                "agp95",
                [*AGP_BUDGET, "schedule=agp", "schedule.end=10", "schedule.frequency=50"],
                work,
                args.data,
            )
            show(row("agp_95", agp, ">= oneshot acc", agp["acc"] >= oneshot["acc"]))
    print(f"(MNIST-10k, 8k/2k; Han studies: mean over seeds {args.seeds}; AGP: seed 0)")


if __name__ == "__main__":
    main()
