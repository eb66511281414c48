"""Int8 PT2E models in an artifact: the converted graph as plain values, its tensors apart.

Loading needs neither torchao nor torch's legacy quantization API: the graph is decoded
into an FX graph module of aten and `quantized_decomposed` ops (`decomposed_ops.ensure`
makes sure those exist) and wrapped for Inductor (`CompiledInference`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn

from compress.quant import decomposed_ops, graph_codec
from compress.quant.compiled import CompiledInference


def graph_of(model: nn.Module) -> fx.GraphModule:
    """The int8 graph inside `model` (a lowered model or the graph itself)."""
    graph = model.eager if isinstance(model, CompiledInference) else model
    if not isinstance(graph, fx.GraphModule):
        raise TypeError(f"a PT2E int8 model is a graph module, got {type(graph).__name__}")
    return graph


def portable_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The graph's tensors, and the graph itself as deflated JSON (a third of its pickle)."""
    tensors, graph = graph_codec.encode(graph_of(model))
    packed = zlib.compress(json.dumps(graph, separators=(",", ":")).encode(), 9)
    return tensors, {"graph": torch.frombuffer(bytearray(packed), dtype=torch.uint8)}


def rebuild(
    float_model: nn.Module | None,
    recipe: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    extra: Mapping[str, Any],
    input_shape: tuple[int, ...],
) -> nn.Module:
    decomposed_ops.ensure()
    graph = json.loads(zlib.decompress(extra["graph"].numpy().tobytes()))
    return CompiledInference(graph_codec.decode(graph, tensors).eval())
