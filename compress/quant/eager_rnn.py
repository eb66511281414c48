"""LSTM/GRU: torch.ao's eager dynamic quantization, deprecated upstream, kept until torchao
covers recurrent layers (its `quantize_` only touches `nn.Linear`).

Backend `eager_dynamic`: int8 weights, activations quantized per step at run time by
fbgemm/oneDNN kernels in eager PyTorch. A dynamic int8 LSTM/GRU keeps its weights in
packed C++ objects; the artifact holds them unpacked instead, as the int8 weights and
float biases they are made of (`<layer>.weight_bias.<name>`), and loading packs them again.
`compress.quant.linear` uses the same functions for the recurrent layers of a model whose
Linear layers it quantizes with torchao.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

BACKEND = "eager_dynamic"
RECURRENT_TYPES = (nn.LSTM, nn.GRU)
#: What the artifact stores under a layer's path instead of its packed weights.
UNPACKED = "weight_bias"


def skipped(path: str, skip: Sequence[str]) -> bool:
    """Whether module path `path` matches one of the `skip` globs."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in skip)


def recurrent_layers(model: nn.Module, skip: Sequence[str] = ()) -> list[str]:
    """Paths of the float LSTM/GRU layers of `model` outside `skip`."""
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, RECURRENT_TYPES) and not skipped(path, skip)
    ]


def convert(model: nn.Module, layers: Sequence[str]) -> nn.Module:
    """`model` (CPU, eval) with the LSTM/GRU layers at `layers` swapped in place for
    dynamic int8 ones; no data needed (weight ranges come from the weights)."""
    from torch.ao.quantization import quantize_dynamic

    if not layers:
        return model
    with warnings.catch_warnings():  # torch.ao's deprecation notice
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, set(layers), dtype=torch.qint8, inplace=True)


def quantize(model: nn.Module, skip: Sequence[str] = ()) -> nn.Module:
    """A copy of `model` (CPU, eval) with its LSTM/GRU layers outside `skip` in int8."""
    model = copy.deepcopy(model).cpu().eval()
    return convert(model, recurrent_layers(model, skip))


def _dynamic_rnns(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase

    return {p: m for p, m in model.named_modules() if isinstance(m, RNNBase)}


def unpack(model: nn.Module, state: OrderedDict[str, Any]) -> OrderedDict[str, Any]:
    """`state` (of `model`) with each dynamic RNN's packed weights replaced by the int8
    weights and float biases they hold."""
    known = getattr(state, "_metadata", OrderedDict())
    state = OrderedDict(state)
    state._metadata = known  # type: ignore[attr-defined]
    for path, rnn in _dynamic_rnns(model).items():
        packed = f"{path}._all_weight_values."
        for key in [k for k in state if k.startswith(packed)]:
            del state[key]
        parts = rnn._weight_bias()
        for name, tensor in {**parts["weight"], **parts["bias"]}.items():
            state[f"{path}.{UNPACKED}.{name}"] = tensor
    return state


def repack(model: nn.Module, state: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dynamic RNN of `model` from its unpacked entries in `state`; the rest of
    `state`, with the packed entries that `model.load_state_dict` expects in their place."""
    rest = dict(state)
    for path, rnn in _dynamic_rnns(model).items():
        prefix = f"{path}.{UNPACKED}."
        rnn.set_weight_bias(
            {k.removeprefix(prefix): rest.pop(k) for k in list(rest) if k.startswith(prefix)}
        )
        packed = rnn.state_dict(prefix=f"{path}.")  # the packed weights just set
        rest.update((k, v) for k, v in packed.items() if "._all_weight_values." in k)
    return rest


def versions(state: Any) -> dict[str, dict[str, Any]]:
    """The per-module state versions of a state dict, as plain values: quantized modules
    read their state by its version."""
    return {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}


def with_versions(state: Mapping[str, Any], known: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """`state` as a state dict carrying the module versions `known`."""
    ordered = OrderedDict(state)
    ordered._metadata = OrderedDict((k, dict(v)) for k, v in known.items())  # type: ignore[attr-defined]
    return ordered


# --- the codec (see compress.quant.codecs) -----------------------------------------------


def portable_state(model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """The converted model's tensors (packed RNN weights unpacked) and its state versions."""
    state = unpack(model, model.state_dict())
    return dict(state), {"versions": versions(state)}


def rebuild(
    float_model: nn.Module,
    recipe: Mapping[str, Any],
    tensors: Mapping[str, Any],
    extra: Mapping[str, Any],
    input_shape: tuple[int, ...],
) -> nn.Module:
    """The dynamic int8 model again: `float_model`'s recurrent layers converted as the
    recipe says, then the saved int8 weights packed into them."""
    model = quantize(float_model, recipe.get("skip", ()))
    state = repack(model, tensors)
    model.load_state_dict(with_versions(state, extra.get("versions", {})))
    return model.eval()
