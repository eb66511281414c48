"""Benchmarks of the spine, printed as figures beside their targets.

    uv run python benchmarks/run.py                 # everything, 3 repeats
    uv run python benchmarks/run.py --repeats 5 --only overhead

1. main job: the whole `compress` process on the embedded default (digits), cold
   (fresh outputs: trains the baseline, creates the MLflow store) and warm (cached
   baseline). Target: < 60 s on 2 cores.
2. overhead: the framework against `bare_lenet300.py`, a bare PyTorch script doing the
   same work (LeNet-300-100 on MNIST-10k, 10 epochs, 92% global magnitude pruning,
   10 epochs fine-tune, batch 64, SGD momentum). Both train from scratch each repeat
   (the framework's baseline cache is cleared; its MLflow store already exists, as it
   does for a user after the first run). Runs alternate; medians are compared.
   Target: wall ratio <= 1.10, same accuracy within noise, ~12x fewer weights.

The GPU's figures (training speed, every method end to end, 2:4 sparse kernels) are
`benchmarks/gpu.py`'s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMPRESS = str(Path(sys.executable).with_name("compress"))
MNIST10K = HERE.parent.parent / "shared" / "data" / "mnist10k"

LENET300 = [
    "model=lenet300",
    "dataset=mnist",
    "dataset.val_fraction=0",  # the bare script trains on all 8,000 images too
    "method=prune",
    "method.amount=0.92",
    "schedule.train.epochs=10",
    "schedule.finetune.epochs=10",
    "schedule.train.batch_size=64",
    "runtime.progress=false",
    "measure.probes=[compiled]",  # the bare script exports nothing either: same work on both sides
]


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of `command` as a whole process, and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def verdict(ok: bool) -> str:
    """How a benchmark's figure reads against its target."""
    return "met" if ok else "MISSED"


def print_verdicts(title: str, table: list[tuple[str, str, str, str]]) -> None:
    """A benchmark's (figure, measured, target, verdict) rows under `title`, aligned."""
    width = max(len(r[0]) for r in table)
    measured = max(len("measured"), *(len(r[1]) for r in table))
    target = max(len("target"), *(len(r[2]) for r in table))
    print(title)
    print(f"{'figure':<{width}}  {'measured':>{measured}}  {'target':<{target}} verdict")
    for name, value, goal, ok in table:
        print(f"{name:<{width}}  {value:>{measured}}  {goal:<{target}} {ok}")
    print(f"({sys.platform}, python {sys.version.split()[0]}; MNIST-10k, 8k train / 2k test)")


def latest_summary(outputs: Path) -> dict:
    path = max((outputs / "runs").glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text())


def main_job(repeats: int, work: Path) -> list[tuple[str, str, str]]:
    cold, warm = [], []
    for i in range(repeats):
        outputs = work / f"main{i}"
        cold.append(timed([COMPRESS, f"paths.outputs={outputs}"])[0])
        warm.append(timed([COMPRESS, f"paths.outputs={outputs}"])[0])
    summary = latest_summary(work / f"main{repeats - 1}")["metrics"]
    return [
        ("main job, cold, median / best (s)", _pair(cold), "< 60"),
        ("main job, cached baseline, median / best (s)", _pair(warm), "< 60"),
        ("main job accuracy baseline -> pruned", _accs(summary), ""),
    ]


def overhead(repeats: int, work: Path, mnist: Path) -> list[tuple[str, str, str]]:
    if not (mnist / "MNIST" / "raw").is_dir():
        return [("framework vs bare", f"skipped: {mnist}/MNIST/raw not found", "")]
    outputs = work / "lenet300"
    framework = [COMPRESS, f"paths.outputs={outputs}", f"dataset.root={mnist}", *LENET300]
    bare = [sys.executable, str(HERE / "bare_lenet300.py"), "--root", str(mnist)]
    bare += ["--out", str(work / "bare.pt")]
    timed(framework)  # creates the MLflow store once, as a user's first run does
    ours, theirs, bare_result = [], [], {}
    for _ in range(repeats):
        shutil.rmtree(outputs / "cache", ignore_errors=True)
        ours.append(timed(framework)[0])
        seconds, stdout = timed(bare)
        theirs.append(seconds)
        bare_result = json.loads(stdout.strip().splitlines()[-1])
    m = latest_summary(outputs)["metrics"]
    ratio = statistics.median(ours) / statistics.median(theirs)
    best = min(ours) / min(theirs)  # noise on a shared machine only ever adds time
    return [
        ("LeNet-300-100 framework wall, median / best (s)", f"{_pair(ours)}", ""),
        ("LeNet-300-100 bare PyTorch wall, median / best (s)", f"{_pair(theirs)}", ""),
        ("wall ratio framework / bare, medians", f"{ratio:.2f}", "<= 1.10"),
        ("wall ratio framework / bare, best runs", f"{best:.2f}", "<= 1.10"),
        ("framework accuracy dense -> pruned", _accs(m), "same as bare"),
        (
            "bare accuracy dense -> pruned",
            f"{bare_result['dense_acc']:.2%} -> {bare_result['acc']:.2%}",
            "",
        ),
        ("framework fewer weights (ratio/params)", f"{m['ratio/params']:.2f}x", "~12x"),
        ("bare fewer conv/linear weights", f"{bare_result['ratio_weights']:.2f}x", "~12x"),
        ("framework artifact smaller (ratio/size)", f"{m['ratio/size']:.2f}x", ""),
        ("framework speedup/latency, batch 256", f"{m['speedup/latency']:.2f}x", "(none expected)"),
    ]


def _pair(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.1f} / {min(seconds):.1f}"


def _accs(metrics: dict) -> str:
    return f"{metrics['baseline/acc']:.2%} -> {metrics['acc']:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("main", "overhead"))
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        if args.only in (None, "main"):
            rows += main_job(args.repeats, Path(tmp))
        if args.only in (None, "overhead"):
            rows += overhead(args.repeats, Path(tmp), args.data.resolve())
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")
    print(f"(medians of {args.repeats} runs; {sys.platform}, python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
