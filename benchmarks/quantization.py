"""Quantization targets on real MNIST digits, measured figures beside the issue's targets.

    uv run python benchmarks/quantization.py                 # all studies (~40 min, 2 cores)
    uv run python benchmarks/quantization.py --only flows_lenet5 dynamic_lenet300

- flows_lenet5, flows_resnet20: static int8 through torch.ao's legacy FX flow and
  torchao's PT2E flow side by side, in this process, on one baseline, in one table
  (`benchmarks/int8_flows.py`): accuracy, artifact bytes, latency at batch 1 and 256
  against eager and compiled fp32 (all timed in turns), compile time; then QAT.
  Targets (torchao): >= 3.9x smaller, within 0.5 pt, >= 2x faster than eager fp32 and
  >= 1.5x than compiled fp32 at batch 256, at least as good as FX; QAT within 0.3 pt.

Every other study is one `compress` run (a subprocess, as a user runs it); the figures
come from its summary, i.e. from the saved artifact loaded back. Latency: 1 thread, median.

- static_lenet5: LeNet-5, static int8 (torchao PT2E, calibrated). Targets: artifact
  >= 3.9x smaller, accuracy drop <= 0.5 pt, >= 2x faster than eager fp32 at batch 256.
  Also printed: the speedup against compiled fp32 and in ONNX Runtime (ours and ONNX
  Runtime's own int8).
- qat_lenet5: the same through QAT (int8 fake quantization in a 3-epoch fine-tune).
- dynamic_lenet300: LeNet-300-100, dynamic int8 (torchao, compiled). Target: >= 2x
  faster than eager fp32 at batch 256.
- ptq_4bit / qat_4bit: LeNet-5 weights on a 4-bit per-channel grid, rounded after
  training vs trained with fake quantization. Target: QAT at least as accurate.
  ptq_2bit / qat_2bit: the same at 2 bits, where rounding alone loses accuracy.
- bit_sweep: LeNet-5 weights at 8..2 bits without fine-tuning (analysis=bits); the PNG
  and CSV are copied to outputs/benchmarks/.
- deep_compression: LeNet-300-100, Han's per-layer pruning (keep 8/9/26%, 4 iterative
  rounds, 40 epochs), then 4-bit weight sharing (16 centroids a layer, 10 epochs of
  centroid training), Huffman-coded codes and gaps. Target (paper: 40x at 1.58% error):
  artifact >= 40x smaller than the dense fp32 one, accuracy >= dense - 0.5 pt.

Data: MNIST-10k (8k train / 2k test), not the official 60k/10k split.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import int8_flows
from run import COMPRESS, MNIST10K, latest_summary, timed, verdict

HERE = Path(__file__).resolve().parent
COMMON = [
    "dataset=mnist",
    "runtime.device=cpu",
    "runtime.progress=false",
    "tracking=none",
    "measure.threads=1",
    "measure.batch_sizes=[1,256]",
    "measure.repeats=50",
    "measure.max_seconds=5",
]
LENET5 = [
    "model=lenet5",
    "schedule.train.epochs=10",
    "schedule.train.lr=0.01",  # Caffe's LeNet-5 (no ReLU after the convs) diverges at 0.05
]
LENET300 = ["model=lenet300", "schedule.train.epochs=20"]
#: fp32 under torch.compile timed beside int8 models too, and the ONNX view.
COMPILED_TOO = "measure.probes=[{name:compiled,when:always},onnx]"

#: The side-by-side studies (in this process), by the model they run.
FLOWS = {"flows_lenet5": "lenet5", "flows_resnet20": "resnet20"}
STUDIES: dict[str, list[str]] = {
    "static_lenet5": [*LENET5, "method=quantize_static", COMPILED_TOO],
    "qat_lenet5": [
        *LENET5,
        "method=qat",
        "schedule.finetune.epochs=3",
        "schedule.finetune.lr=0.001",
        COMPILED_TOO,
    ],
    "dynamic_lenet300": [*LENET300, "method=quantize_dynamic", COMPILED_TOO],
    "ptq_4bit": [*LENET5, "method=quantize_weights", "method.bits=4"],
    "qat_4bit": [
        *LENET5,
        "method=quantize_weights",
        "method.bits=4",
        "method.qat=true",
        "schedule.finetune.epochs=3",
        "schedule.finetune.lr=0.001",
    ],
    "ptq_2bit": [*LENET5, "method=quantize_weights", "method.bits=2"],
    "qat_2bit": [
        *LENET5,
        "method=quantize_weights",
        "method.bits=2",
        "method.qat=true",
        "schedule.finetune.epochs=3",
        "schedule.finetune.lr=0.001",
    ],
    "bit_sweep": [*LENET5, "method=none", "analysis=bits", "measure.probes=[compiled]"],
    "deep_compression": [
        *LENET300,
        "method=deep_compression",
        "schedule=iterative",
        "schedule.rounds=4",
        "schedule.finetune.label_smoothing=0.1",
        "method.stages.prune.scope=layer",
        "method.stages.prune.layers={1:0.92,3:0.91,5:0.74}",
        "method.stages.prune.epochs=40",
        "method.stages.weight_sharing.bits=4",
        "method.stages.weight_sharing.epochs=10",
    ],
}


def drop_pts(m: dict) -> float:
    return 100 * (m["baseline/acc"] - m["acc"])


def accs(m: dict) -> str:
    return f"{m['baseline/acc']:.2%} -> {m['acc']:.2%} ({-drop_pts(m):+.2f} pt)"


def int8_rows(name: str, m: dict) -> list[tuple[str, str, str, str]]:
    allowed = 0.3 if name.startswith("qat") else 0.5  # QAT should recover what PTQ loses
    rows = [
        (f"{name}: accuracy", accs(m), f"drop <= {allowed} pt", verdict(drop_pts(m) <= allowed)),
        (
            f"{name}: artifact smaller",
            f"{m['ratio/size']:.2f}x ({m['baseline/bytes']:,.0f} -> {m['bytes']:,.0f} B)",
            ">= 3.9x",
            verdict(m["ratio/size"] >= 3.9),
        ),
        (
            f"{name}: vs eager fp32, batch 256",
            f"{m['speedup/latency/b256']:.2f}x "
            f"({m['baseline/latency_ms/b256']:.2f} -> {m['latency_ms/b256']:.2f} ms)",
            ">= 2x",
            verdict(m["speedup/latency/b256"] >= 2),
        ),
        (f"{name}: vs eager fp32, batch 1", f"{m['speedup/latency/b1']:.2f}x", "", ""),
    ]
    return rows + context_rows(name, m)


def context_rows(name: str, m: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    if "speedup/latency_vs_compiled/b256" in m:
        rows.append(
            (
                f"{name}: vs compiled fp32, batch 256",
                f"{m['speedup/latency_vs_compiled/b256']:.2f}x "
                f"(fp32 compiled {m['baseline/latency_ms_compiled/b256']:.2f} ms)",
                "",
                "",
            )
        )
    if "speedup/onnx/b256" in m:
        rows.append(
            (
                f"{name}: ONNX Runtime, batch 256",
                f"{m['baseline/onnx/latency_ms/b256']:.2f} -> {m['onnx/latency_ms/b256']:.2f} ms "
                f"({m['speedup/onnx/b256']:.2f}x), acc {m['onnx/acc']:.2%}",
                "",
                "",
            )
        )
    return rows


def dynamic_rows(name: str, m: dict) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"{name}: vs eager fp32, batch 256",
            f"{m['speedup/latency/b256']:.2f}x "
            f"({m['baseline/latency_ms/b256']:.2f} -> {m['latency_ms/b256']:.2f} ms)",
            ">= 2x",
            verdict(m["speedup/latency/b256"] >= 2),
        ),
        (f"{name}: accuracy", accs(m), "", ""),
        (f"{name}: artifact smaller", f"{m['ratio/size']:.2f}x", "", ""),
        *context_rows(name, m),
    ]


def four_bit_rows(name: str, m: dict) -> list[tuple[str, str, str, str]]:
    return [
        (f"{name}: accuracy", accs(m), "", ""),
        (f"{name}: artifact smaller", f"{m['ratio/size']:.2f}x", "", ""),
    ]


def deep_compression_rows(name: str, m: dict) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"{name}: artifact smaller",
            f"{m['ratio/size']:.2f}x ({m['baseline/bytes']:,.0f} -> {m['bytes']:,.0f} B)",
            ">= 40x",
            verdict(m["ratio/size"] >= 40),
        ),
        (f"{name}: accuracy", accs(m), "drop <= 0.5 pt", verdict(drop_pts(m) <= 0.5)),
        (f"{name}: weights kept", f"{1 / m['ratio/params']:.2%} (sparsity)", "", ""),
    ]


ROWS: dict[str, Callable[[str, dict], list[tuple[str, str, str, str]]]] = {
    "static_lenet5": int8_rows,
    "qat_lenet5": int8_rows,
    "dynamic_lenet300": dynamic_rows,
    "ptq_4bit": four_bit_rows,
    "qat_4bit": four_bit_rows,
    "ptq_2bit": four_bit_rows,
    "qat_2bit": four_bit_rows,
    "deep_compression": deep_compression_rows,
}


def show(cells: tuple[str, ...]) -> None:
    widths = (34, 58, 16, 6)
    print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[*FLOWS, *STUDIES])
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    args = parser.parse_args()
    if not (args.data / "MNIST" / "raw").is_dir():
        sys.exit(f"MNIST files not found under {args.data}/MNIST/raw")
    show(("figure", "measured", "target", ""))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as tmp:
        outputs = Path(tmp)  # one folder: studies of the same model share the baseline
        for name, model in FLOWS.items():
            if not args.only or name in args.only:
                int8_flows.study(model, outputs, args.data)
        for name, overrides in STUDIES.items():
            if args.only and name not in args.only:
                continue
            seconds, _ = timed(
                [
                    COMPRESS,
                    f"paths.outputs={outputs}",
                    f"dataset.root={args.data}",
                    *COMMON,
                    *overrides,
                ]
            )
            summary = latest_summary(outputs)
            results[name] = m = summary["metrics"]
            if name == "bit_sweep":
                folder = Path(summary["artifact"]).parent
                kept = HERE.parent / "outputs" / "benchmarks"
                kept.mkdir(parents=True, exist_ok=True)
                for file in ("bit_sweep.png", "bit_sweep.csv"):
                    shutil.copy(folder / file, kept / file)
                print((kept / "bit_sweep.csv").read_text().strip(), flush=True)
                show(("bit_sweep: plot", str(kept / "bit_sweep.png"), "", ""))
                continue
            for row in ROWS[name](name, m):
                show(row)
            show((f"{name}: run time", f"{seconds:.0f} s (whole process)", "", ""))
        if "ptq_4bit" in results and "qat_4bit" in results:
            ptq, qat = results["ptq_4bit"]["acc"], results["qat_4bit"]["acc"]
            show(
                (
                    "4-bit: QAT vs PTQ accuracy",
                    f"{qat:.2%} vs {ptq:.2%}",
                    "QAT >= PTQ",
                    verdict(qat >= ptq),
                )
            )
    print("(MNIST-10k, 8k/2k; 1 thread; seed 0)")


if __name__ == "__main__":
    main()
