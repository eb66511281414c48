"""What a model is made of, counted on the model as it really is (float, pruned or int8).

- params / nonzeros: parameter elements, and those that are not zero.
- MACs: multiply-accumulates of conv, linear and recurrent (LSTM/GRU) layers for one
  sample. `dense` is what a dense kernel executes for this architecture; `nonzero`
  counts only products with a nonzero weight (what a sparse kernel would execute).
  Other ops (norms, pooling, activations, gate nonlinearities) are not counted; they
  are a small share in these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.models.eval_mode import eval_mode, model_device
from compress.quant.compiled import CompiledInference

MAC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _quantized_layer_types() -> tuple[type, ...]:
    """Int8 conv and linear modules of torch.ao (fused ones subclass these)."""
    from torch.ao.nn import quantized as nnq
    from torch.ao.nn.quantized import dynamic as nnqd

    return (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnqd.Linear)


def _float(tensor: torch.Tensor) -> torch.Tensor:
    """Float values of a float or int8 tensor: torch.ao's quantized tensors, and torchao's
    int8 weights (tensor subclasses whose ops do not include counting)."""
    subclass = type(tensor) not in (torch.Tensor, nn.Parameter)
    return tensor.dequantize() if tensor.is_quantized or subclass else tensor


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


def _int8_graph(model: nn.Module) -> torch.fx.GraphModule | None:
    """The int8 graph of a PT2E model (lowered or not), else None."""
    inner = model.eager if isinstance(model, CompiledInference) else model
    return inner if isinstance(inner, torch.fx.GraphModule) else None


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The learned tensors of `model`: its parameters, the packed weights and biases of
    int8 layers (which are not parameters), or the layer tensors of an int8 graph."""
    graph = _int8_graph(model)
    if graph is not None:
        from compress.quant.graph_stats import layers

        found = [(layer.weight, layer.bias) for layer in layers(graph)]
        return [t for pair in found for t in pair if t is not None]
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
    """MACs of one sample through `model`, from the output shapes seen in a real forward
    (of the eager model, where `model` compiles it: hooks are for eager modules)."""
    graph = _int8_graph(model)
    if graph is not None:  # no modules to hook: counted on the graph's own ops
        from compress.quant.graph_stats import macs

        return Macs(*macs(graph, input_shape))
    if isinstance(model, CompiledInference):
        model = model.eager
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


@dataclass(frozen=True)
class Footprint:
    """The static figures of a model: parameters, nonzeros and MACs."""

    params: int
    nonzeros: int
    macs: Macs

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, ...]) -> Footprint:
        return cls(count_params(model), count_nonzero(model), count_macs(model, input_shape))
