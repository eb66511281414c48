"""Static int8 side by side: torch.ao's legacy FX flow and torchao's PT2E flow, one baseline.

    uv run python benchmarks/int8_flows.py                    # LeNet-5 and ResNet-20 (~15 min)
    uv run python benchmarks/int8_flows.py --models lenet5

In one process, per model: `compress` trains the baseline and quantizes it through torchao
(method=quantize_static, the artifact loaded back as the run returns it); the same
baseline goes through the FX flow with the same calibration batches and the same
observers; then fp32 eager, fp32 compiled, FX int8 and torchao int8 are timed in turns
(1 thread, medians) at batch 1 and 256. Artifact bytes are the files each flow writes
(FX: compress's `/3` format of before). A QAT run on the same baseline follows.

Data: MNIST-10k (8k train / 2k test) from ../shared/data/mnist10k.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compress.artifact.encodings import encode_value
from compress.artifact.store import atomic_torch_save, load_artifact, one_storage
from compress.cli.config_dir import CONFIG_DIR
from compress.data import load_dataset
from compress.measure.config import MeasureConfig
from compress.measure.latency import paired_latency_ms
from compress.models import parse_model
from compress.run.pipeline import Plan, run
from compress.train.loop import accuracy

MNIST10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist10k"
MODELS = {
    "lenet5": ["model=lenet5", "schedule.train.epochs=10", "schedule.train.lr=0.01"],
    "resnet20": ["model=resnet20", "schedule.train.epochs=4", "schedule.train.lr=0.05"],
}
COMMON = [
    "dataset=mnist",
    "runtime.device=cpu",
    "runtime.progress=false",
    "tracking=none",
    "measure.threads=1",
    "measure.probes=[]",
]
TIMING = MeasureConfig(threads=1, batch_sizes=(1, 256), warmup=3, repeats=40, max_seconds=6)


def config(outputs: Path, data: Path, job: str, *overrides: str) -> dict[str, Any]:
    """The resolved config of one job (composed as `compress` would, outside a Hydra run)."""
    paths = [f"paths.outputs={outputs}", f"paths.data={outputs / 'data'}"]
    paths += [f"paths.run_dir={outputs / 'runs' / job}", f"dataset.root={data}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*paths, *COMMON, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def fx_int8(baseline: torch.nn.Module, plan: Plan, data: Any, path: Path) -> tuple[Any, int]:
    """The FX flow on `baseline`, calibrated on the batches the torchao run used; its
    artifact written in compress's `/3` format of before."""
    from compress.quant import fx_legacy

    method = plan.method
    recipe = fx_legacy.Recipe(
        "static",
        observer=method.observer,
        per_channel=method.per_channel,
        reduce_range=method.recipe().reduce_range,
    )
    example = torch.zeros((1, *data.input_shape))
    prepared = fx_legacy.prepare(baseline, recipe, example)
    batches = data.train.loader(plan.finetune.batch_size)
    calibration = ((b.x,) for b in itertools.islice(batches, method.calibration_batches))
    fx_legacy.calibrate(prepared, calibration, method.calibration_batches)
    converted = fx_legacy.convert(prepared)
    state = fx_legacy.portable_state(converted)
    payload = {
        "format": "compress.artifact/3",
        "model": {"config": plan.model, "input_shape": list(data.input_shape), "num_classes": 10},
        "structure": {},
        "float_shapes": {n: list(t.shape) for n, t in baseline.state_dict().items()},
        "conversion": recipe.as_dict(),
        "tensors": {name: encode_value(v) for name, v in state.items()},
        "versions": {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()},
    }
    atomic_torch_save(one_storage(payload), path)
    return converted, path.stat().st_size


def first_call_seconds(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        model(torch.zeros((256, *shape)))
    return time.perf_counter() - started


def study(name: str, outputs: Path, data_root: Path) -> None:
    cfg = config(outputs, data_root, f"{name}-static", *MODELS[name], "method=quantize_static")
    result = run(cfg)
    plan = Plan.from_config(cfg)
    data = load_dataset(plan.dataset, torch.device("cpu"), parse_model(plan.model).preprocessing())
    summary = json.loads((result.run_dir / "summary.json").read_text())
    baseline = load_artifact(Path(summary["baseline_artifact"])).eval()
    torchao = load_artifact(result.artifact)
    fx, fx_bytes = fx_int8(baseline, plan, data, outputs / f"{name}.fx.pt")
    compiled = torch.compile(copy.deepcopy(baseline))
    compile_s = {"fp32 compiled": first_call_seconds(compiled, data.input_shape)}
    flows = {
        "fp32 eager": baseline,
        "fp32 compiled": compiled,
        "FX int8": fx,
        "torchao int8": torchao,
    }
    acc = {label: accuracy(model, data.test) for label, model in flows.items()}
    ms = {
        batch: dict(
            zip(
                flows,
                paired_latency_ms(list(flows.values()), data.input_shape, batch, TIMING),
                strict=True,
            )
        )
        for batch in TIMING.batch_sizes
    }
    compile_s["torchao int8"] = torchao.compile_seconds
    size = {
        "fp32 eager": result.baseline.bytes,
        "FX int8": fx_bytes,
        "torchao int8": result.compressed.bytes,
    }
    print(f"\n{name} (MNIST-10k, 1 thread): static int8, legacy FX vs torchao PT2E, one baseline")
    head = (
        "flow",
        "acc",
        "bytes",
        "smaller",
        "b1 ms",
        "b256 ms",
        "vs eager",
        "vs compiled",
        "compile s",
    )
    print("  ".join(f"{h:>13}" for h in head))
    for label in flows:
        b256 = ms[256][label]
        cells = (
            label,
            f"{acc[label]:.2%}",
            f"{size[label]:,}" if label in size else "-",
            f"{size['fp32 eager'] / size[label]:.2f}x" if label in size else "-",
            f"{ms[1][label]:.3f}",
            f"{b256:.2f}",
            f"{ms[256]['fp32 eager'] / b256:.2f}x",
            f"{ms[256]['fp32 compiled'] / b256:.2f}x",
            f"{compile_s[label]:.1f}" if label in compile_s else "-",
        )
        print("  ".join(f"{c:>13}" for c in cells))
    ours, drop = "torchao int8", 100 * (acc["fp32 eager"] - acc["torchao int8"])
    targets = [
        ("artifact >= 3.9x smaller", size["fp32 eager"] / size[ours] >= 3.9),
        (f"accuracy within 0.5 pt ({drop:+.2f} pt)", drop <= 0.5),
        (">= 2x faster than eager fp32, b256", ms[256]["fp32 eager"] / ms[256][ours] >= 2),
        (
            ">= 1.5x faster than compiled fp32, b256",
            ms[256]["fp32 compiled"] / ms[256][ours] >= 1.5,
        ),
        ("accuracy >= FX's", acc[ours] >= acc["FX int8"]),
        ("bytes <= FX's", size[ours] <= size["FX int8"]),
        ("b256 latency <= FX's", ms[256][ours] <= ms[256]["FX int8"]),
        ("b1 latency <= FX's", ms[1][ours] <= ms[1]["FX int8"]),
    ]
    for label, ok in targets:
        print(f"  torchao {label}: {'met' if ok else 'MISSED'}")
    qat = [*MODELS[name], "method=qat", "schedule.finetune.epochs=3"]
    qat += ["schedule.finetune.lr=0.001", "measure.probes=[{name:compiled,when:always}]"]
    m = run(config(outputs, data_root, f"{name}-qat", *qat)).metrics
    qat_drop = 100 * (m["baseline/acc"] - m["acc"])
    print(
        f"  torchao QAT: {m['baseline/acc']:.2%} -> {m['acc']:.2%} ({-qat_drop:+.2f} pt, "
        f"target within 0.3 pt: {'met' if qat_drop <= 0.3 else 'MISSED'}); "
        f"{m['ratio/size']:.2f}x smaller; b256 {m['speedup/latency/b256']:.2f}x vs eager, "
        f"{m['speedup/latency_vs_compiled/b256']:.2f}x vs compiled fp32"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--data", type=Path, default=MNIST10K, help="folder holding MNIST/raw")
    args = parser.parse_args()
    if not (args.data / "MNIST" / "raw").is_dir():
        sys.exit(f"MNIST files not found under {args.data}/MNIST/raw")
    with tempfile.TemporaryDirectory(prefix="compress-int8-") as tmp:
        for name in args.models:
            study(name, Path(tmp), args.data)


if __name__ == "__main__":
    main()
