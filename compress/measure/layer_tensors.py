"""Reading a layer's weights whatever form it is in: float, torch.ao int8 (packed, behind a
method call), torchao int8 (a tensor subclass), or a PT2E int8 graph with no modules at all.

Counting parameters and counting MACs both need this; it lives apart so that neither of
them imports the other.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.quant.compiled import CompiledInference

#: Float layers whose products have a weight operand (what sparse weights can skip).
MAC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantized_layer_types() -> tuple[type, ...]:
    """Int8 conv and linear modules of torch.ao (fused ones subclass these)."""
    from torch.ao.nn import quantized as nnq
    from torch.ao.nn.quantized import dynamic as nnqd

    return (nnq.Linear, nnq.Conv1d, nnq.Conv2d, nnq.Conv3d, nnqd.Linear)


def dynamic_rnn_type() -> type:
    """The base class of torch.ao's dynamic int8 LSTM and GRU."""
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase

    return RNNBase


def is_subclass_tensor(tensor: torch.Tensor) -> bool:
    """A tensor subclass (torchao's int8 weights): its ops are its own, not aten's."""
    return type(tensor) not in (torch.Tensor, nn.Parameter)


def float_values(tensor: torch.Tensor) -> torch.Tensor:
    """Float values of a float or int8 tensor: torch.ao's quantized tensors, and torchao's
    int8 weights (tensor subclasses whose ops do not include counting)."""
    return tensor.dequantize() if tensor.is_quantized or is_subclass_tensor(tensor) else tensor


def layer_weight(module: nn.Module) -> torch.Tensor:
    """A conv/linear layer's weight, float or int8 (int8 modules keep it packed)."""
    weight = module.weight
    return weight() if callable(weight) else weight


def rnn_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and biases of a float or dynamic-int8 LSTM/GRU, by name (weight_ih_l0...)."""
    if isinstance(module, dynamic_rnn_type()):
        parts = module._weight_bias()
        return {**parts["weight"], **parts["bias"]}
    return dict(module.named_parameters())


def int8_graph(model: nn.Module) -> torch.fx.GraphModule | None:
    """The int8 graph of a PT2E model (lowered or not), else None."""
    inner = model.eager if isinstance(model, CompiledInference) else model
    return inner if isinstance(inner, torch.fx.GraphModule) else None
