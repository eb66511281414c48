"""The ViT, compressed two ways and measured: figures printed beside the issue's targets.

    uv run python benchmarks/vit.py                  # MNIST-10k, 1 latency thread
    uv run python benchmarks/vit.py --train-epochs 10 --finetune-epochs 5
    uv run python benchmarks/vit.py --outputs outputs   # reuse the cached baseline there

Two `compress` runs (subprocesses, as a user runs them) on one outputs folder, so the
baseline ViT (model=vit defaults) is trained once and cached: `method=prune_heads` (half
the heads and half the MLP units removed, then fine-tuned) and `method=quantize_dynamic`
(torchao int8 of every Linear, compiled). The figures come from each run's summary, i.e.
from the saved artifact loaded back. Beside them, in this process, the MACs that compress
counts for `nn.TransformerEncoderLayer` and the ViT against `FlopCounterMode`'s.

Targets: baseline >= 97%; heads + MLP halved: >= 1.8x fewer MACs, >= 1.5x faster at batch
256 (1 thread), within 1 pt after fine-tuning; dynamic int8: >= 3.5x smaller artifact,
within 0.5 pt, faster than eager fp32 at batch 256; MACs within 1% of FlopCounterMode.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from run import COMPRESS, MNIST10K, latest_summary, print_verdicts, timed, verdict
from structured import rows as structured_rows

#: The training recipe of model=vit (experiments/vit_heads_mnist.yaml uses the same).
RECIPE = [
    "schedule.train.optimizer=adamw",
    "schedule.train.lr=0.003",
    "schedule.train.weight_decay=0.05",
    "schedule.train.warmup_epochs=3",
    "schedule.finetune.warmup_epochs=0",
    "augment=shift",
    "dataset.val_fraction=0",
]


PARTS = ("macs", "heads", "int8")


def command(args: argparse.Namespace, outputs: Path, method: list[str]) -> list[str]:
    return [
        COMPRESS,
        f"paths.outputs={outputs}",
        "model=vit",
        "dataset=mnist",
        f"dataset.root={args.data.resolve()}",
        *RECIPE,
        f"schedule.train.epochs={args.train_epochs}",
        f"schedule.finetune.epochs={args.finetune_epochs}",
        "schedule.finetune.lr=0.0005",
        *method,
        "runtime.device=cpu",
        "runtime.progress=false",
        f"measure.threads={args.threads}",
        "measure.batch_sizes=[1,256]",
        "measure.repeats=50",
        "measure.max_seconds=5",
        "measure.probes=[]",
        "tracking=none",
    ]


def flop_counter_rows() -> list[tuple[str, str, str, str]]:
    """compress's MACs vs FlopCounterMode's flops / 2, on a transformer layer and the ViT."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from compress.measure import count_macs
    from compress.models import build_model

    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    models = {
        "nn.TransformerEncoderLayer (64, 4 heads, 17 tokens)": (layer, (17, 64)),
        "model=vit defaults, 1x28x28": (build_model({"name": "vit"}, (1, 28, 28), 10), (1, 28, 28)),
    }
    rows = []
    for name, (model, shape) in models.items():
        counter = FlopCounterMode(display=False)
        torch.backends.mha.set_fastpath_enabled(False)  # the fused path is one opaque op
        with torch.no_grad(), counter:
            model.eval()(torch.zeros(1, *shape))
        torch.backends.mha.set_fastpath_enabled(True)
        reference = counter.get_total_flops() / 2
        ours = count_macs(model, shape).dense
        off = abs(ours - reference) / reference
        rows.append(
            (f"MACs {name}", f"{ours:,} vs {reference:,.0f}", "within 1%", verdict(off <= 0.01))
        )
    return rows


def heads_rows(m: dict, seconds: float) -> list[tuple[str, str, str, str]]:
    """The baseline's target, then structured.py's rows at the ViT's targets."""
    baseline = m["baseline/acc"]
    return [
        ("baseline ViT accuracy", f"{baseline:.2%}", ">= 97%", verdict(baseline >= 0.97)),
        *structured_rows(m, seconds, macs=1.8, speedup=1.5),
        ("heads removed", f"{m['heads_removed']:.0%}", "", ""),
    ]


def int8_rows(m: dict, seconds: float) -> list[tuple[str, str, str, str]]:
    drop = 100 * (m["baseline/acc"] - m["acc"])
    speed = m["speedup/latency/b256"]
    return [
        (
            "dynamic int8: smaller artifact",
            f"{m['ratio/size']:.2f}x",
            ">= 3.5x",
            verdict(m["ratio/size"] >= 3.5),
        ),
        (
            "dynamic int8: accuracy",
            f"{m['acc']:.2%} ({-drop:+.2f} pt)",
            "drop <= 0.5 pt",
            verdict(drop <= 0.5),
        ),
        ("dynamic int8: vs eager fp32, batch 256", f"{speed:.2f}x", "> 1x", verdict(speed > 1)),
        (
            "dynamic int8: latency b256 fp32 -> int8",
            f"{m['baseline/latency_ms/b256']:.1f} -> {m['latency_ms/b256']:.1f} ms",
            "",
            "",
        ),
        ("dynamic int8: vs eager fp32, batch 1", f"{m['speedup/latency/b1']:.2f}x", "", ""),
        ("wall time of the run (s)", f"{seconds:.0f}", "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    parser.add_argument("--train-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="measure.threads for latency")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default all)"
    )
    parser.add_argument(
        "--outputs",
        type=Path,
        help="paths.outputs (its baseline cache is reused; default: a temp dir)",
    )
    args = parser.parse_args()
    if not (args.data / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found: {args.data}/MNIST/raw (pass --data)")

    table = flop_counter_rows() if "macs" in args.only else []
    with tempfile.TemporaryDirectory(prefix="compress-vit-") as tmp:
        outputs = (args.outputs or Path(tmp)).resolve()
        for part, method, rows in (
            ("heads", ["method=prune_heads"], heads_rows),
            ("int8", ["method=quantize_dynamic"], int8_rows),
        ):
            if part not in args.only:
                continue
            seconds, _ = timed(command(args, outputs, method))
            table += rows(latest_summary(outputs)["metrics"], seconds)

    title = (
        f"model=vit defaults, train {args.train_epochs} + fine-tune {args.finetune_epochs} epochs "
        f"(AdamW), latency with {args.threads} thread(s)"
    )
    print_verdicts(title, table)


if __name__ == "__main__":
    main()
