"""What a model is made of, counted on the model as it really is (float, pruned or int8).

- params / nonzeros: parameter elements, and those that are not zero.
- MACs: multiply-accumulates of one sample (`compress.measure.macs`): `dense`, every
  multiply of a matmul or convolution (attention's included), what a dense kernel
  executes; `nonzero`, those left when products with a zero weight are skipped (what a
  sparse kernel would execute; products of two activations always count). Per module
  too, for `layer_macs.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compress.measure.layer_tensors import (
    dynamic_rnn_type,
    float_values,
    int8_graph,
    layer_weight,
    quantized_layer_types,
    rnn_weights,
)
from compress.measure.macs import Macs, layer_macs


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The learned tensors of `model`: its parameters, the packed weights and biases of
    int8 layers (which are not parameters), or the layer tensors of an int8 graph."""
    graph = int8_graph(model)
    if graph is not None:
        from compress.quant.graph_stats import layers

        found = [(layer.weight, layer.bias) for layer in layers(graph)]
        return [t for pair in found for t in pair if t is not None]
    tensors = list(model.parameters())
    quantized = quantized_layer_types()
    for module in model.modules():
        if isinstance(module, quantized):
            bias = module.bias()
            tensors += [layer_weight(module)] + ([bias] if bias is not None else [])
        elif isinstance(module, dynamic_rnn_type()):
            tensors += list(rnn_weights(module).values())
    return tensors


def count_params(model: nn.Module) -> int:
    return sum(t.numel() for t in model_tensors(model))


def count_nonzero(model: nn.Module) -> int:
    return sum(int(float_values(t).count_nonzero()) for t in model_tensors(model))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> Macs:
    """MACs of one sample through `model`: the sum of its modules' (`layer_macs`)."""
    return Macs.total(layer_macs(model, input_shape))


@dataclass(frozen=True)
class Footprint:
    """The static figures of a model: parameters, nonzeros and MACs (in all and by module)."""

    params: int
    nonzeros: int
    macs: Macs
    layer_macs: dict[str, Macs]

    @classmethod
    def of(cls, model: nn.Module, input_shape: tuple[int, ...]) -> Footprint:
        layers = layer_macs(model, input_shape)
        return cls(count_params(model), count_nonzero(model), Macs.total(layers), layers)
