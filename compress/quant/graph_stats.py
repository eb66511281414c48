"""What an int8 graph is made of: its conv and linear layers and their weights.

A PT2E int8 model has no conv or linear modules to look into; its layers are `aten.conv*`
and `aten.linear` calls whose weight is an int8 tensor behind a dequantize (or a float one,
for a layer left in float). Counting params and zero weights (`compress.measure`) reads
those tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

_LAYER_OPS = ("conv1d", "conv2d", "conv3d", "convolution", "linear")


@dataclass(frozen=True)
class GraphLayer:
    """One conv or linear call: its weight (int8 codes or float), bias, and output node."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    node: fx.Node


def _tensor_behind(graph_module: fx.GraphModule, node: object) -> torch.Tensor | None:
    """The stored tensor an argument reads, through a dequantize if there is one."""
    while isinstance(node, fx.Node) and node.op == "call_function":
        if "dequantize" not in str(node.target):
            return None
        node = node.args[0]
    if isinstance(node, fx.Node) and node.op == "get_attr":
        owner, _, leaf = str(node.target).rpartition(".")
        return getattr(graph_module.get_submodule(owner) if owner else graph_module, leaf)
    return None


def layers(graph_module: fx.GraphModule) -> list[GraphLayer]:
    found = []
    for node in graph_module.graph.nodes:
        name = str(node.target)
        if node.op != "call_function" or not name.startswith("aten."):
            continue
        if name.split(".")[1] not in _LAYER_OPS:
            continue
        weight = _tensor_behind(graph_module, node.args[1])
        if weight is None:
            continue
        bias = _tensor_behind(graph_module, node.args[2]) if len(node.args) > 2 else None
        found.append(GraphLayer(weight, bias, node))
    return found
