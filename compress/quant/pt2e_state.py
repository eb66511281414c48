"""Int8 PT2E models in an artifact: the converted graph as plain values, its tensors apart.

The graph's tensors are stored as one flat tensor per dtype (int8 codes, float32 scales
and biases, int64 zero points; `compress.quant.flat`), so that a model of many small
layers does not pay the store's per-tensor bookkeeping dozens of times; the graph and
where each tensor lies in those flat ones travel as one deflated JSON blob.

Loading needs neither torchao nor torch's legacy quantization API: the graph is decoded
into an FX graph module of aten and `quantized_decomposed` ops (`decomposed_ops.ensure`
makes sure those exist) and wrapped for Inductor (`CompiledInference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn

from compress.quant import decomposed_ops, flat, graph_codec
from compress.quant.compiled import CompiledInference


def graph_of(model: nn.Module) -> fx.GraphModule:
    """The int8 graph inside `model` (a lowered model or the graph itself)."""
    graph = model.eager if isinstance(model, CompiledInference) else model
    if not isinstance(graph, fx.GraphModule):
        raise TypeError(f"a PT2E int8 model is a graph module, got {type(graph).__name__}")
    return graph


def portable_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One flat tensor per dtype, and the graph with the layout as deflated JSON."""
    tensors, graph = graph_codec.encode(graph_of(model))
    joined, layout = flat.join(tensors)
    return joined, {"graph": flat.pack({"graph": graph, "layout": layout})}


def rebuild(
    float_model: nn.Module | None,
    recipe: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    extra: Mapping[str, Any],
    input_shape: tuple[int, ...],
) -> nn.Module:
    decomposed_ops.ensure()
    described = flat.unpack(extra["graph"])
    named = flat.split(tensors, described["layout"])
    return CompiledInference(graph_codec.decode(described["graph"], named).eval())
