"""Every figure we report, measured on the model as it really is.

- params / nonzeros: parameter elements, and those that are not zero.
- MACs: multiply-accumulates of conv, linear and recurrent (LSTM/GRU) layers for one
  sample. `dense` is what a dense kernel executes for this architecture; `nonzero`
  counts only products with a nonzero weight (what a sparse kernel would execute).
  Other ops (norms, pooling, activations, gate nonlinearities) are not counted; they
  are a small share in these models.
- latency: median wall time of a forward pass after warm-up, with a fixed thread count.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.data import DataBundle
from compress.measure.config import MeasureConfig
from compress.models.eval_mode import eval_mode, model_device
from compress.train.loop import accuracy

MAC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _quantized_layer_types() -> tuple[type, ...]:
    """Int8 conv and linear modules of torch.ao (fused ones subclass these)."""
    from torch.ao.nn import quantized as nnq
    from torch.ao.nn.quantized import dynamic as nnqd

    return (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnqd.Linear)


def _float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.dequantize() if tensor.is_quantized else tensor


def layer_weight(module: nn.Module) -> torch.Tensor:
    """A conv/linear layer's weight, float or int8 (int8 modules keep it packed)."""
    weight = module.weight
    return weight() if callable(weight) else weight


def _dynamic_rnn_type() -> type:
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase

    return RNNBase


def rnn_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and biases of a float or dynamic-int8 LSTM/GRU, by name (weight_ih_l0...)."""
    if isinstance(module, _dynamic_rnn_type()):
        parts = module._weight_bias()
        return {**parts["weight"], **parts["bias"]}
    return dict(module.named_parameters())


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The learned tensors of `model`: its parameters, and the packed weights and biases
    of int8 layers (which are not parameters)."""
    tensors = list(model.parameters())
    quantized = _quantized_layer_types()
    for module in model.modules():
        if isinstance(module, quantized):
            bias = module.bias()
            tensors += [layer_weight(module)] + ([bias] if bias is not None else [])
        elif isinstance(module, _dynamic_rnn_type()):
            tensors += list(rnn_weights(module).values())
    return tensors


def count_params(model: nn.Module) -> int:
    return sum(t.numel() for t in model_tensors(model))


def count_nonzero(model: nn.Module) -> int:
    return sum(int(_float(t).count_nonzero()) for t in model_tensors(model))


@dataclass(frozen=True)
class Macs:
    dense: int
    nonzero: int


@torch.inference_mode()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> Macs:
    """MACs of one sample through `model`, from the output shapes seen in a real forward."""
    dense = nonzero = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal dense, nonzero
        weight = _float(layer_weight(module))
        out_channels = weight.shape[0]
        # Output positions per output channel (spatial size for convs, leading dims for linear).
        positions = output[0].numel() // out_channels
        per_channel_nonzero = (weight.reshape(out_channels, -1) != 0).sum(1)
        dense += positions * weight.numel()
        nonzero += positions * int(per_channel_nonzero.sum())

    def rnn_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        # Each step multiplies every gate's weights once (input and recurrent): the MACs of
        # one sample are steps x weight elements; the steps are the input's time axis.
        nonlocal dense, nonzero
        steps = inputs[0].shape[1 if module.batch_first else 0]
        weights = [_float(w) for n, w in rnn_weights(module).items() if n.startswith("weight")]
        dense += steps * sum(w.numel() for w in weights)
        nonzero += steps * sum(int(w.count_nonzero()) for w in weights)

    types = MAC_TYPES + _quantized_layer_types()
    rnns = (nn.LSTM, nn.GRU, _dynamic_rnn_type())
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    handles += [m.register_forward_hook(rnn_hook) for m in model.modules() if isinstance(m, rnns)]
    try:
        with eval_mode(model):
            model(torch.zeros((1, *input_shape), device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return Macs(dense=dense, nonzero=nonzero)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with exactly `threads` intra-op threads, then restore the old count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def paired_latency_ms(
    models: Sequence[nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Median milliseconds of one forward pass of a `batch_size` batch, for each model.

    The models take turns within every repeat, so a change in machine load between
    them lands on all alike and their ratio stays fair. Repeats stop at
    `settings.repeats` or once `settings.max_seconds` per model have been spent (at
    least three repeats), so large models still finish in bounded time.
    """
    device = torch.device(device)
    x = torch.randn((batch_size, *input_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    times: list[list[float]] = [[] for _ in models]
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(eval_mode(model))
        stack.enter_context(torch_threads(settings.threads))
        for model in models:
            for _ in range(settings.warmup):
                model(x)
        _sync(device)
        budget_end = time.perf_counter() + settings.max_seconds * len(models)
        for repeat in range(1, settings.repeats + 1):
            for model, samples in zip(models, times, strict=True):
                start = time.perf_counter()
                model(x)
                _sync(device)
                samples.append(time.perf_counter() - start)
            if repeat >= 3 and time.perf_counter() > budget_end:
                break
    return [1000 * statistics.median(samples) for samples in times]


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> float:
    """Median milliseconds of one forward pass of `model` (see `paired_latency_ms`)."""
    return paired_latency_ms([model], input_shape, batch_size, settings, device)[0]


@dataclass(frozen=True)
class Footprint:
    """The static figures of a model: parameters, nonzeros and MACs."""

    params: int
    nonzeros: int
    macs: Macs

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, ...]) -> Footprint:
        return cls(count_params(model), count_nonzero(model), count_macs(model, input_shape))


@dataclass(frozen=True)
class Measurement:
    """Everything measured on one model: accuracy, size, work and time."""

    acc: float
    params: int
    nonzeros: int
    macs: int
    macs_nonzero: int
    bytes: int
    latency_ms: dict[int, float]


def measure_models(
    models: Sequence[tuple[nn.Module, int]],
    data: DataBundle,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> list[Measurement]:
    """Measure each `(model, bytes of its saved artifact)`; latencies are timed in turns."""
    latencies = {
        batch: paired_latency_ms([m for m, _ in models], data.input_shape, batch, settings, device)
        for batch in settings.batch_sizes
    }
    measurements = []
    for index, (model, artifact_bytes) in enumerate(models):
        footprint = Footprint.of(model, data.input_shape)
        measurements.append(
            Measurement(
                acc=accuracy(model, data.test, settings.eval_batch_size),
                params=footprint.params,
                nonzeros=footprint.nonzeros,
                macs=footprint.macs.dense,
                macs_nonzero=footprint.macs.nonzero,
                bytes=artifact_bytes,
                latency_ms={batch: ms[index] for batch, ms in latencies.items()},
            )
        )
    return measurements


def measure_model(
    model: nn.Module,
    data: DataBundle,
    artifact_bytes: int,
    settings: MeasureConfig,
    device: torch.device | str = "cpu",
) -> Measurement:
    """Measure one model (already on `device`) whose saved artifact takes `artifact_bytes`."""
    return measure_models([(model, artifact_bytes)], data, settings, device)[0]


def compare(base: Measurement, ours: Measurement) -> dict[str, float]:
    """The metrics we log, ratios named by their axis (dense figure / compressed figure).

    `speedup/latency` is taken at the largest measured batch size; each batch size also
    has its own `speedup/latency/b<N>`.
    """
    metrics: dict[str, float] = {
        "baseline/acc": base.acc,
        "acc": ours.acc,
        "acc_drop": base.acc - ours.acc,
        "baseline/params": base.params,
        "params": ours.params,
        "nonzeros": ours.nonzeros,
        "baseline/macs": base.macs,
        "macs": ours.macs,
        "macs/nonzero": ours.macs_nonzero,
        "baseline/bytes": base.bytes,
        "bytes": ours.bytes,
        "ratio/params": base.params / max(ours.nonzeros, 1),
        "ratio/size": base.bytes / ours.bytes,
        "ratio/macs": base.macs / max(ours.macs_nonzero, 1),
    }
    for batch, ms in ours.latency_ms.items():
        metrics[f"baseline/latency_ms/b{batch}"] = base.latency_ms[batch]
        metrics[f"latency_ms/b{batch}"] = ms
        metrics[f"speedup/latency/b{batch}"] = base.latency_ms[batch] / ms
    largest = max(ours.latency_ms)
    metrics["speedup/latency"] = metrics[f"speedup/latency/b{largest}"]
    return metrics
