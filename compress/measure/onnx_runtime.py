"""A deployment view: export a model to ONNX and time it with ONNX Runtime on the CPU.

`export_onnx` writes one self-contained ``.onnx`` file with a dynamic batch dimension, trying
the torch.export-based exporter first and the TorchScript one second, and checks the file
against the PyTorch model before keeping it. `onnx_latency_ms` times the file the way
`compress.measure.latency.paired_latency_ms` times a module (same input, warm-up, median, budget),
so the two figures compare. onnx and onnxruntime are imported only when used.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compress.models.eval_mode import eval_mode
from compress.quant.compiled import CompiledInference

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "ExportUnsupported",
    "export_onnx",
    "one_line_reason",
    "onnx_accuracy",
    "onnx_latency_ms",
    "onnx_predict",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# The example batch the graph is traced with, and a different one it is checked at: both
# above 1, which torch.export would specialize, and unequal, so a batch baked in shows.
_EXPORT_BATCH = 2
_CHECK_BATCH = 3
# Loose enough for an int8 graph (ONNX Runtime may round a quantized value one step away
# from PyTorch's kernels), tight enough to catch a wrong graph (a value traced as constant).
_CHECK_ATOL = 1e-3
_CHECK_RTOL = 0.05

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REASON_CHARS = 160


class ExportUnsupported(Exception):
    """The model cannot be exported to ONNX; the message says why, in one line."""


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Export `model` (eval mode, CPU) for inputs `(batch, *input_shape)` to `path`.

    The batch dimension is dynamic and the weights live inside the one file. The model
    keeps its own mode and device. The file is written atomically and kept only if
    ONNX Runtime reproduces the model's outputs at a batch other than the traced one.
    Raises ExportUnsupported when neither exporter gives such a file. A `CompiledInference`
    is exported as its eager module: the compiled wrapper is a runtime, not a graph.
    """
    if isinstance(model, CompiledInference):
        model = model.eager
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with _cpu_eval(model) as cpu_model:
        example = _seeded_input(input_shape, _EXPORT_BATCH)
        reasons = []
        for label, exporter in (("torch.export", _export_dynamo), ("TorchScript", _export_legacy)):
            try:
                try:
                    with _quiet():
                        exporter(cpu_model, example, tmp)
                    _check_outputs(cpu_model, input_shape, tmp)
                except Exception as exc:
                    reasons.append(f"{label}: {one_line_reason(exc)}")
                    continue
                os.replace(tmp, path)
                return path
            finally:
                tmp.unlink(missing_ok=True)
    raise ExportUnsupported(
        f"ONNX export of {type(model).__name__} failed with both exporters ({'; '.join(reasons)})"
    )


def onnx_latency_ms(
    path: Path,
    input_shape: tuple[int, ...],
    batch_sizes: Sequence[int],
    *,
    threads: int,
    warmup: int,
    repeats: int,
    max_seconds: float,
) -> dict[int, float]:
    """Median milliseconds of one ONNX Runtime run of each batch size, on the CPU.

    Mirrors `paired_latency_ms`: the same seeded input, `warmup` runs, then up to `repeats`
    timed runs, stopping once `max_seconds` are spent (at least three timed runs).
    """
    session = _session(path, threads=threads)
    name = session.get_inputs()[0].name
    latencies = {}
    for batch in batch_sizes:
        feed = {name: _seeded_input(input_shape, batch).numpy()}
        for _ in range(warmup):
            session.run(None, feed)
        samples = []
        budget_end = time.perf_counter() + max_seconds
        for repeat in range(1, repeats + 1):
            start = time.perf_counter()
            session.run(None, feed)
            samples.append(time.perf_counter() - start)
            if repeat >= 3 and time.perf_counter() > budget_end:
                break
        latencies[batch] = 1000 * statistics.median(samples)
    return latencies


def onnx_predict(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The exported model's output (logits) for the batch `x`, as a CPU float tensor."""
    return _run(_session(path), x)


def onnx_accuracy(path: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Any]]) -> float:
    """Top-1 accuracy of the exported model over `batches` of (x, y, ...), one session."""
    session = _session(path)
    correct = total = 0
    for x, y, *_ in batches:
        correct += int(_run(session, x).argmax(1).eq(y.cpu()).sum())
        total += len(y)
    return correct / total if total else float("nan")


# -- exporting ------------------------------------------------------------------------------


@contextlib.contextmanager
def _cpu_eval(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode on the CPU: itself when already there, else a CPU copy."""
    tensors = [*model.parameters(), *model.buffers()]
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    cpu_model = model if on_cpu else copy.deepcopy(model).cpu()
    with contextlib.ExitStack() as stack:
        # A torch.export graph (a PT2E int8 model) refuses train()/eval() before it changes
        # anything: its ops were fixed in the mode it was captured in.
        with contextlib.suppress(NotImplementedError):
            stack.enter_context(eval_mode(cpu_model))
        yield cpu_model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings (progress lines are off by `verbose=False`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _fds_to_devnull() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null for the block, for what C++ code prints."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _export_dynamo(model: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        verbose=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("the exporter returned no ONNX program")
    program.save(tmp, external_data=False)


def _export_legacy(model: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    with _fds_to_devnull():  # its C++ side prints a graph dump when an op is missing
        torch.onnx.export(
            model,
            (example,),
            tmp,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def _check_outputs(model: nn.Module, input_shape: tuple[int, ...], onnx_path: Path) -> None:
    """Raise if ONNX Runtime's output for a fresh batch size differs from the model's."""
    x = _seeded_input(input_shape, _CHECK_BATCH, seed=1)
    with torch.no_grad():
        expected = model(x)
    try:
        got = _run(_session(onnx_path), x)
    except Exception as exc:  # e.g. a batch size the trace baked in
        raise RuntimeError(
            f"exported graph fails at batch {_CHECK_BATCH}: {one_line_reason(exc)}"
        ) from None
    if got.shape != expected.shape:
        raise RuntimeError(
            f"exported graph gives shape {tuple(got.shape)} at batch {_CHECK_BATCH}, "
            f"PyTorch {tuple(expected.shape)}"
        )
    diff = float((got - expected).abs().max())
    limit = _CHECK_ATOL + _CHECK_RTOL * float(expected.abs().max())
    if not diff <= limit:
        raise RuntimeError(
            f"exported graph disagrees with PyTorch at batch {_CHECK_BATCH} "
            f"(max |diff| {diff:.3g} > {limit:.3g})"
        )


def one_line_reason(exc: BaseException) -> str:
    """One line on why an export or a quantization failed: the innermost cause's first
    sentence, shortened."""
    lines = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = [s.strip() for s in _ANSI.sub("", str(current)).splitlines() if s.strip()]
        first = text[0].split(". ")[0].rstrip(".") if text else ""
        lines.append(f"{type(current).__name__}: {first}" if first else type(current).__name__)
        implicit = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or implicit
    line = lines[-1]
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."


# -- running --------------------------------------------------------------------------------


def _seeded_input(input_shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """The fixed float32 batch `paired_latency_ms` times with (for seed 0)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_shape), generator=generator)


def _session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """A CPU session, sequential, all graph optimizations; `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: onnxruntime.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    name = session.get_inputs()[0].name
    array = x.detach().to("cpu", torch.float32).contiguous().numpy()
    outputs: list[Any] = session.run(None, {name: array})
    return torch.from_numpy(outputs[0])
