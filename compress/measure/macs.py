"""Multiply-accumulates (MACs) of one sample, module by module, on the model as it really is.

`dense` is every multiply of a matmul or a convolution the forward runs, as
`torch.utils.flop_counter.FlopCounterMode` sees them (flops / 2): conv and linear layers,
attention's projections (`nn.MultiheadAttention`'s packed `in_proj` too) and its two
products of activations (QK^T and AV), which module hooks on layers never saw. Elementwise
work (norms, softmax, activations, gate nonlinearities) is no MAC and is not counted.

Some layers do their work where FlopCounterMode cannot see it, or sees a stand-in: LSTM,
GRU and RNN (one fused aten op: 0 flops on the CPU), torch.ao's int8 modules (their own
quantized ops) and layers holding a torchao int8 weight (a tensor subclass whose int8
matmul it does not count). Those count by formula instead, output positions x weight
elements (steps x weight elements for a recurrent layer), and whatever FlopCounterMode saw
inside them is dropped, so nothing counts twice.

`nonzero` is `dense` less the products whose weight is exactly zero, in conv, linear and
recurrent layers and attention's projections: it subtracts only what sparse weights let a
kernel skip. Products of two activations (QK^T, AV) have no weight to be zero; they always
count.

Each module counts its own work: what its forward runs outside its child modules (an
attention module's matmuls, say); `""` is the model's own forward. A PT2E int8 graph has no
modules: each op counts for the module it was traced from (`nn_module_stack`), and its
dequantize -> float ops are what FlopCounterMode sees, so its rows match its float model's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from compress.measure.layer_tensors import (
    MAC_TYPES,
    dynamic_rnn_type,
    float_values,
    int8_graph,
    is_subclass_tensor,
    layer_weight,
    quantized_layer_types,
    rnn_weights,
)
from compress.models.eval_mode import eval_mode, model_device
from compress.quant.compiled import CompiledInference

#: The path the model's own forward counts under (as in `named_modules`).
ROOT = ""


@dataclass(frozen=True)
class Macs:
    """MACs of one sample: all that dense kernels run (`dense`), and what is left when
    products with a zero weight are skipped (`nonzero`)."""

    dense: int
    nonzero: int

    @classmethod
    def total(cls, layers: Mapping[str, Macs]) -> Macs:
        return cls(sum(m.dense for m in layers.values()), sum(m.nonzero for m in layers.values()))


@torch.inference_mode()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Macs]:
    """MACs of one sample (zeros of `input_shape`) by module path, for the modules that
    run any; on the eager model where `model` compiles it, in eval mode."""
    graph = int8_graph(model)
    if isinstance(model, CompiledInference):
        model = model.eager
    tally = _Tally()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # In eval mode nn.TransformerEncoderLayer / MultiheadAttention take a fused fast path:
    # one op FlopCounterMode has no formula for. The ordinary path computes the same.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), FlopCounterMode(display=False) as counter:
            x = torch.zeros((1, *input_shape), device=model_device(model))
            if graph is not None:
                _GraphCount(graph, counter, tally).run(x)
            else:
                _count_modules(model, counter, tally, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return tally.macs()


@dataclass
class _Tally:
    """What was counted, by module path: flops FlopCounterMode saw, MACs counted by
    formula, and products whose weight is zero."""

    flops: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    formula: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    zeros: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def enter(self, path: str) -> None:
        """Rows come in the order modules start (the model's own first), not finish."""
        self.flops[path] += 0

    def macs(self) -> dict[str, Macs]:
        found = {}
        for path in dict.fromkeys([*self.flops, *self.formula]):
            dense = self.flops[path] // 2 + self.formula[path]
            if dense > 0:
                found[path] = Macs(dense, dense - self.zeros[path])
        return found


# -- eager modules: a module's own flops are the counter's total at its exit less that at its
# entry, less what its child modules ran (each of those counted for itself)


def _count_modules(
    model: nn.Module, counter: FlopCounterMode, tally: _Tally, x: torch.Tensor
) -> None:
    paths: dict[nn.Module, str] = {}
    by_formula: list[str] = []
    for path, module in model.named_modules():
        if any(_inside(path, outer) for outer in by_formula):
            continue  # an opaque layer's parts: the layer counts for them
        paths[module] = path
        if _counted_by_formula(module):
            by_formula.append(path)
    opaque = set(by_formula)
    running: list[list[int]] = []  # per module running: [total flops at entry, children's]

    def enter(module: nn.Module, args: tuple[Any, ...]) -> None:
        tally.enter(paths[module])
        running.append([counter.get_total_flops(), 0])

    def leave(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        started, children = running.pop()
        inside = counter.get_total_flops() - started
        if running:
            running[-1][1] += inside
        path = paths[module]
        if path in opaque:  # what FlopCounterMode saw here (if anything) is dropped
            dense, zeros = _formula(module, args, out)
            tally.formula[path] += dense
        else:
            tally.flops[path] += inside - children
            zeros = _zero_weight_products(module, args, kwargs, out)
        tally.zeros[path] += zeros

    handles = []
    for module in paths:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, with_kwargs=True))
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()


def _inside(path: str, outer: str) -> bool:
    return path != outer and (outer == ROOT or path.startswith(outer + "."))


def _recurrent_types() -> tuple[type, ...]:
    return (nn.RNNBase, dynamic_rnn_type())


def _counted_by_formula(module: nn.Module) -> bool:
    """Layers whose work FlopCounterMode does not see as it runs (see the module docstring)."""
    if isinstance(module, _recurrent_types() + quantized_layer_types()):
        return True
    return isinstance(module, MAC_TYPES) and is_subclass_tensor(module.weight)


def _formula(module: nn.Module, args: tuple[Any, ...], out: Any) -> tuple[int, int]:
    """(dense MACs, products with a zero weight) of one call of an opaque layer."""
    if isinstance(module, _recurrent_types()):
        # Each step multiplies every gate's weights once (input and recurrent, every layer
        # and direction); the steps are the input's positions (time x batch).
        sequence = args[0].data if isinstance(args[0], PackedSequence) else args[0]
        steps = sequence.numel() // module.input_size
        weights = [
            float_values(w) for n, w in rnn_weights(module).items() if n.startswith("weight")
        ]
        return steps * sum(w.numel() for w in weights), steps * sum(_zeros(w) for w in weights)
    weight = float_values(layer_weight(module))
    positions = out.numel() // weight.shape[0]
    return positions * weight.numel(), positions * _zeros(weight)


def _zero_weight_products(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
) -> int:
    """Products of one call whose weight is zero: a float conv or linear layer's (each
    weight meets every output position of its channel), or attention's projections."""
    if isinstance(module, MAC_TYPES):
        return out.numel() // module.weight.shape[0] * _zeros(module.weight)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_zero_products(module, args, kwargs)
    return 0


def _attention_zero_products(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int:
    """nn.MultiheadAttention multiplies its own weights (its forward never calls
    `out_proj`): queries meet W_q and W_out, keys W_k, values W_v, whatever the layout."""
    query, key, value = (
        args[i] if len(args) > i else kwargs[name]
        for i, name in enumerate(("query", "key", "value"))
    )
    if module._qkv_same_embed_dim:
        w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    queries = query.numel() // module.embed_dim
    return (
        queries * (_zeros(w_q) + _zeros(module.out_proj.weight))
        + key.numel() // module.kdim * _zeros(w_k)
        + value.numel() // module.vdim * _zeros(w_v)
    )


def _zeros(weight: torch.Tensor) -> int:
    return int((weight == 0).sum())


# -- a PT2E int8 graph: each node's flops are the counter's total after it less that before


class _GraphCount(fx.Interpreter):
    """Runs an int8 graph node by node, counting each for the module it was traced from."""

    def __init__(self, graph: fx.GraphModule, counter: FlopCounterMode, tally: _Tally) -> None:
        from compress.quant.graph_stats import layers

        super().__init__(graph)
        self.counter, self.tally = counter, tally
        self.weights = {layer.node: layer.weight for layer in layers(graph)}

    def run_node(self, node: fx.Node) -> Any:
        before = self.counter.get_total_flops()
        out = super().run_node(node)
        stack = node.meta.get("nn_module_stack")
        path = next(reversed(stack.values()))[0] if stack else ROOT
        self.tally.flops[path] += self.counter.get_total_flops() - before
        weight = self.weights.get(node)  # int8 codes (symmetric: code 0 is weight 0) or float
        if weight is not None:
            self.tally.zeros[path] += out.numel() // weight.shape[0] * _zeros(weight)
        return out
