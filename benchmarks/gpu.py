"""The lab on a GPU: training speed, every method end to end, latency, 2:4 sparse kernels.

    uv run python benchmarks/gpu.py                        # all four sections, on cuda
    uv run python benchmarks/gpu.py --only train sparse24  # some of them
    uv run python benchmarks/gpu.py --smoke --device cpu   # tiny sizes: the code paths on a CPU
    uv run python benchmarks/gpu.py --only e2e --e2e prune kd

Data: ResNet-20 (model=resnet20) on CIFAR-shaped generated data (dataset=fake, 50,000
3x32x32 images in 10 classes, 10% held out for validation, 10,000 test), augment=flip_crop,
SGD momentum, batch 512. The GPU's name comes first.

1. train: images/s of `compress.train.loop.fit` with runtime.amp, channels_last and compile
   on, against a bare PyTorch loop doing the same work in this process (gpu_train.py).
   Target: the framework >= 0.9x the bare loop's images/s.
2. e2e: `compress.run.pipeline.run` (the config composed with Hydra's compose API, MLflow
   into a temp dir), 3 + 2 epochs each, for prune, prune_channels, qat, kd (a width-8
   ResNet-20 student distilled from the baseline: method=student distill=kd) and stack
   (prune then static int8): wall time and accuracy. All share one outputs folder, so the
   first run trains the baseline and the others reuse it. Int8 models are measured on the
   CPU, where their kernels run (batch 256 there). --smoke leaves qat and stack out.
3. latency: the prune_channels-shrunk ResNet-20 against the dense one at batch 1 and 1024
   (from the e2e run, or its own when e2e is not selected).
4. sparse24: an MLP of three 4096x4096 Linears pruned 2:4 by method=prune_nm's masks, timed
   dense and semi-structured (the sparse24 probe: torch.sparse.to_sparse_semi_structured,
   both in float16) at batch 4096. Target: >= 1.1x faster. Then the probe inside a
   pipeline run (method=prune_nm on an MLP, measure.probes=[sparse24]).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from gpu_train import train_rows
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from run import print_verdicts, verdict

from compress.cli.config_dir import CONFIG_DIR
from compress.data import load_dataset
from compress.measure import ProbeContext
from compress.measure.config import MeasureConfig
from compress.measure.probes.sparse24 import SemiStructured, sparse_capable
from compress.methods import MethodContext, parse_method
from compress.run.pipeline import Result, run

SECTIONS = ("train", "e2e", "latency", "sparse24")
Row = tuple[str, str, str, str]

#: Full sizes, and the --smoke ones that only walk the code paths.
SIZES = {
    False: {"train": 50_000, "test": 10_000, "side": 32, "batch": 512, "epochs": 4,
            "repeats": 3, "e2e": (3, 2), "latency": 1024, "width": 4096, "rows": 4096},
    True: {"train": 512, "test": 128, "side": 16, "batch": 128, "epochs": 2,
           "repeats": 1, "e2e": (1, 1), "latency": 32, "width": 256, "rows": 64},
}  # fmt: skip
#: The e2e jobs: name -> the method's overrides. --smoke leaves out the int8 two unless
#: --e2e names them (Inductor's int8 lowering alone takes a minute or two on a small CPU).
E2E = {
    "prune": ["method=prune"],
    "prune_channels": ["method=prune_channels"],
    "qat": ["method=qat"],
    "kd": [
        "method=student",
        "~method.model",
        "+method.model={name:resnet20,width:8}",
        "distill=kd",
    ],
    "stack": ["method=stack"],  # prune, then static int8
}
INT8 = ("qat", "stack")


def compose_config(outputs: Path, job: str, *overrides: str) -> dict[str, Any]:
    """The resolved config of one job, composed as `compress` would compose it."""
    paths = [f"paths.outputs={outputs}", f"paths.data={outputs / 'data'}"]
    paths.append(f"paths.run_dir={outputs / 'runs' / job}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*paths, *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def cifar(args: argparse.Namespace, size: dict) -> list[str]:
    """ResNet-20 on CIFAR-shaped fake data, the lab's recipe at batch `size['batch']`."""
    side = size["side"]
    return [
        "model=resnet20", "dataset=fake", f"dataset.num_train={size['train']}",
        f"dataset.num_test={size['test']}", f"dataset.shape=[3,{side},{side}]",
        "dataset.num_classes=10", "augment=flip_crop", f"schedule.train.batch_size={size['batch']}",
        "schedule.train.lr=0.1", f"runtime.device={args.device}", "runtime.progress=false",
    ]  # fmt: skip


def measuring(smoke: bool, batch: int) -> list[str]:
    quick = ["measure.repeats=3", "measure.warmup=1", "measure.max_seconds=0.2"] if smoke else []
    return [f"measure.batch_sizes=[1,{batch}]", "measure.probes=[]", *quick]


def train_section(args: argparse.Namespace, size: dict, work: Path) -> list[Row]:
    on_cuda = torch.device(args.device).type == "cuda"
    flags = ["runtime.amp=true", "runtime.channels_last=true", f"runtime.compile={on_cuda}"]
    cfg = compose_config(work, "train", *cifar(args, size), *flags)
    return train_rows(cfg, size["epochs"], size["repeats"])


def pipeline(args: argparse.Namespace, size: dict, work: Path, job: str) -> tuple[Result, float]:
    """One `pipeline.run` of the e2e job `job`: what it returned and its wall seconds."""
    train, finetune = size["e2e"]
    overrides = [*cifar(args, size), *E2E[job], f"schedule.train.epochs={train}"]
    # Int8 models are timed on the CPU (1 thread): batch 256 there, not 1024.
    batch = min(size["latency"], 256) if job in INT8 else size["latency"]
    overrides += [f"schedule.finetune.epochs={finetune}", *measuring(args.smoke, batch)]
    started = time.perf_counter()
    result = run(compose_config(work / "e2e", job, *overrides))
    return result, time.perf_counter() - started


def e2e_section(args: argparse.Namespace, size: dict, work: Path, found: dict) -> list[Row]:
    rows = []
    for job in args.e2e or [j for j in E2E if not (args.smoke and j in INT8)]:
        try:
            result, seconds = pipeline(args, size, work, job)
        except Exception as error:  # one method failing must not hide the others
            rows.append((f"e2e {job}", f"FAILED {failure(error)}", "runs", verdict(False)))
            continue
        found[job] = m = result.metrics
        cached = "cached" if result.baseline_cached else "trained"
        figure = f"{seconds:.0f} s, {m['baseline/acc']:.2%} -> {m['acc']:.2%} (baseline {cached})"
        rows.append((f"e2e {job}: wall, acc dense -> ours", figure, "runs", verdict(True)))
    return rows


def probe_tags(result: Result) -> dict[str, str]:
    """The run's sparse24.* tags, read back from its MLflow run."""
    from mlflow import MlflowClient

    if result.run_id is None or result.tracking_uri is None:
        return {}
    tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
    return {key: value for key, value in tags.items() if key.startswith("sparse24.")}


def failure(error: BaseException) -> str:
    """An exception in one line of at most 150 characters."""
    line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {line}"[:150]


def latency_section(args: argparse.Namespace, size: dict, work: Path, found: dict) -> list[Row]:
    metrics = found.get("prune_channels")
    if metrics is None:
        try:
            metrics = pipeline(args, size, work, "prune_channels")[0].metrics
        except Exception as error:
            return [("latency prune_channels", f"FAILED {failure(error)}", "", "")]
    rows = []
    for batch in (1, size["latency"]):
        dense, ours = metrics[f"baseline/latency_ms/b{batch}"], metrics[f"latency_ms/b{batch}"]
        rows.append((f"latency b{batch} dense -> channels pruned (ms)",
                     f"{dense:.3f} -> {ours:.3f} ({dense / ours:.2f}x)", "", ""))  # fmt: skip
    rows.append(("fewer MACs (ratio/macs)", f"{metrics['ratio/macs']:.2f}x", "", ""))
    return rows


def sparse24_section(args: argparse.Namespace, size: dict, work: Path) -> list[Row]:
    device = torch.device(args.device)
    rows = kernel_rows(device, size, work) if device.type == "cuda" else []
    if device.type != "cuda":
        rows.append(("sparse24 MLP, dense vs 2:4", "skipped: no CUDA", "", ""))
    width = 32 if args.smoke else 1024  # the pipeline check: an MLP on 1x32x32 fake data
    overrides = [
        "model=mlp", f"model.hidden=[{width},{width}]", "dataset=fake", "dataset.shape=[1,32,32]",
        f"dataset.num_train={size['train']}", "method=prune_nm", "schedule.train.epochs=1",
        "schedule.finetune.epochs=1", f"runtime.device={args.device}", "runtime.progress=false",
        *measuring(args.smoke, size["latency"]), "measure.probes=[sparse24]",
    ]  # fmt: skip
    try:
        result = run(compose_config(work / "nm", "prune_nm", *overrides))
    except Exception as error:
        return [
            *rows,
            ("sparse24 in pipeline.run, prune_nm MLP", f"FAILED {failure(error)}", "", ""),
        ]
    m, tags = result.metrics, probe_tags(result)
    if "sparse24.error" in tags:
        figure = f"refused: {tags['sparse24.error']}"
    elif "sparse24/layers" in m:
        figure = f"{m['sparse24/layers']:.0f} Linears packed, {m['speedup/sparse24']:.2f}x faster"
    else:
        figure = "probe off: no sparse-capable GPU"
    rows.append(("sparse24 in pipeline.run, prune_nm MLP", figure, "", ""))
    return rows


def kernel_rows(device: torch.device, size: dict, work: Path) -> list[Row]:
    """The MLP of 4096-wide Linears (3 of them), pruned 2:4, dense vs semi-structured."""
    name = torch.cuda.get_device_name(device)
    if not sparse_capable(device):
        major, minor = torch.cuda.get_device_capability(device)
        why = f"skipped: {name} is sm_{major}{minor}; sparse tensor cores need sm_80+"
        return [("sparse24 MLP, dense vs 2:4", why, "", "")]
    width, batch = size["width"], size["rows"]
    side = int(width**0.5)  # fake images of side x side pixels flatten to `width` inputs
    data = load_dataset({"name": "fake", "shape": [1, side, side], "num_train": 16,
                         "num_test": 256, "val_fraction": 0}, device)  # fmt: skip
    torch.manual_seed(0)
    layers = [m for _ in range(3) for m in (torch.nn.Linear(width, width), torch.nn.ReLU())]
    model = torch.nn.Sequential(torch.nn.Flatten(), *layers[:-1]).to(device)
    stage = parse_method({"name": "prune_nm"}).apply(model, MethodContext(data.input_shape))
    stage.update(1.0)
    model = stage.finalize(model)
    settings = MeasureConfig(batch_sizes=(batch,), warmup=10, repeats=100, probes=[])
    context = ProbeContext(model, model, data, settings, device, False, work)
    result = SemiStructured().measure(context)
    m, tags = result.metrics, result.tags
    if "sparse24.error" in tags or f"speedup/sparse24/b{batch}" not in m:
        return [("sparse24 MLP, dense vs 2:4", tags.get("sparse24.error", "no figures"),
                 ">= 1.1x", "MISSED")]  # fmt: skip
    speed = m[f"speedup/sparse24/b{batch}"]
    dense, sparse = m[f"sparse24/dense_latency_ms/b{batch}"], m[f"sparse24/latency_ms/b{batch}"]
    return [
        (f"sparse24 MLP 3x{width}, b{batch}: dense / 2:4", f"{speed:.2f}x", ">= 1.1x",
         verdict(speed >= 1.1)),
        ("  latency dense -> 2:4 (ms)", f"{dense:.3f} -> {sparse:.3f}", "", ""),
        ("  Linears packed, logits max diff", f"{m['sparse24/layers']:.0f}, "
         f"{m['sparse24/logits_diff']:.1e}", "", ""),
        ("  kernel", f"{tags['sparse24.backend']}, {tags['sparse24.dtype']}", "", ""),
    ]  # fmt: skip


def device_line(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        return f"GPU: {torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return f"GPU: none; running on {device.type} ({platform.processor() or platform.machine()})"


def show(title: str, table: list[Row], footer: str) -> None:
    """run.py's print_verdicts, with this benchmark's own footer in place of its MNIST one."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_verdicts(title, table)
    lines = printed.getvalue().rstrip("\n").splitlines()
    if lines and "MNIST" in lines[-1]:
        lines[-1] = footer
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: walk the code paths")
    parser.add_argument("--e2e", nargs="+", choices=E2E, help="e2e jobs (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; pass --device cpu (with --smoke) to walk the code")
    print(device_line(device), flush=True)
    size = SIZES[args.smoke]
    table: list[Row] = []
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="compress-gpu-") as tmp:
        work = Path(tmp)
        for section in SECTIONS:
            if section not in args.only:
                continue
            started = time.perf_counter()
            if section == "train":
                table += train_section(args, size, work)
            elif section == "e2e":
                table += e2e_section(args, size, work, found)
            elif section == "latency":
                table += latency_section(args, size, work, found)
            else:
                table += sparse24_section(args, size, work)
            print(f"[{section}: {time.perf_counter() - started:.0f} s]", file=sys.stderr)
    footer = (
        f"({device_line(device)}; torch {torch.__version__}, python {sys.version.split()[0]}; "
        f"fake CIFAR-shaped data, {size['train']:,} images{', smoke sizes' if args.smoke else ''})"
    )
    show(f"compress on {device}: {', '.join(args.only)}", table, footer)


if __name__ == "__main__":
    main()
