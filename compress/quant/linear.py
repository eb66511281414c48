"""Int8 Linear layers through torchao's `quantize_` (backend `torchao_linear`).

Two schemes, each a torchao config applied to the chosen `nn.Linear` layers:

- `dynamic`: `Int8DynamicActivationInt8WeightConfig`, int8 weights (one scale per output
  channel) and int8 activations (one scale per row, chosen at run time);
- `weight_only`: `Int8WeightOnlyConfig`, int8 weights; the matmul runs in float.

The quantized weights are torchao tensor subclasses on ordinary Linear modules. Run as
they are, dynamic int8 layers are ~2x slower than fp32 (each op of the quantize / int8
matmul / rescale sequence runs on its own); under Inductor they fuse around oneDNN's int8
matmul and beat fp32 (README, Quantization), so a dynamic model is returned inside
`CompiledInt8` (a `CompiledInference` that stays on the CPU). Weight-only int8 gains
nothing from compiling on the CPU (Inductor's int8 weight-only kernel takes bfloat16 inputs
only; with float32 it folds the weights back to float32), so it stays eager and keeps int8
weights in memory.

A model with LSTM/GRU layers too gets them from `compress.quant.eager_rnn` (torch.ao's
legacy path; torchao has none): this codec delegates those layers to it, so one recipe and
one artifact describe the whole model. A model with no Linear layer to quantize uses
`eager_rnn`'s own backend.

In the artifact each quantized weight is the plain tensors torchao keeps inside it (int8
codes, scales, zero points; the small ones joined per dtype with the biases and norms);
`rebuild` wraps them again in the tensor subclass that
torchao's own config makes for a stand-in layer on the meta device, so the loaded model
holds exactly the saved values and nothing is quantized twice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress.quant import eager_rnn, flat
from compress.quant.compiled import CompiledInference

BACKEND = "torchao_linear"
SCHEMES = ("dynamic", "weight_only")


def linear_layers(model: nn.Module, skip: Sequence[str] = ()) -> list[str]:
    """Paths of the `nn.Linear` layers of `model` outside `skip` that torchao can take
    (not attention's packed output projection, which its module reads directly)."""
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear)
        and not eager_rnn.skipped(path, skip)
    ]


def recipe(
    model: nn.Module, scheme: str, skip: Sequence[str] = (), *, recurrent: bool = False
) -> dict[str, Any]:
    """How `quantize` converts `model`: its Linear layers outside `skip` by `scheme`, and
    (with `recurrent`) its LSTM/GRU layers outside `skip` by the legacy eager path."""
    if scheme not in SCHEMES:
        raise ValueError(f"torchao Linear scheme must be one of {SCHEMES}, got {scheme!r}")
    rnns = eager_rnn.recurrent_layers(model, skip) if recurrent else []
    layers = linear_layers(model, skip)
    if not layers:
        return {"backend": eager_rnn.BACKEND, "skip": list(skip), "recurrent": rnns}
    from torchao.utils import should_reduce_range

    return {
        "backend": BACKEND,
        "scheme": scheme,
        "bits": 8,
        # Int8 activations on an x86 CPU without VNNI saturate 16-bit sums: 7 bits there.
        "reduce_range": scheme == "dynamic" and should_reduce_range(torch.device("cpu")),
        "skip": list(skip),
        "layers": layers,
        "recurrent": rnns,
    }


def torchao_config(recipe: Mapping[str, Any]) -> Any:
    """The torchao config that quantizes the recipe's Linear layers. torchao's own
    inductor settings (tuned for GPUs, set process-wide) are left alone."""
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    if recipe["bits"] != 8:
        raise ValueError(f"torchao Linear layers here are int8 only, got {recipe['bits']} bits")
    if recipe["scheme"] == "dynamic":
        return Int8DynamicActivationInt8WeightConfig(
            reduce_range=bool(recipe["reduce_range"]), set_inductor_config=False
        )
    return Int8WeightOnlyConfig(set_inductor_config=False)


def eager(model: nn.Module) -> nn.Module:
    """The module holding the layers: `model` itself, or what `CompiledInference` runs."""
    return model.eager if isinstance(model, CompiledInference) else model


class CompiledInt8(CompiledInference):
    """`CompiledInference` of a model holding torchao weights; it stays on the CPU, in
    float32. Once compiled, its weights cannot be moved: `nn.Module.to` swaps tensor-subclass
    parameters for their moved copies, which the compiled graph's guards (weak references
    to them) forbid. Its int8 kernels are CPU ones anyway, so `.cpu()` and a `.to()` that
    changes nothing are no-ops, and any other move is refused."""

    def to(self, *args: Any, **kwargs: Any) -> CompiledInt8:  # type: ignore[override]
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if (device is None or device.type == "cpu") and dtype in (None, torch.float32):
            return self
        raise ValueError(f"a torchao int8 model runs on the CPU in float32, not {device or dtype}")

    def cpu(self) -> CompiledInt8:
        return self


def _runnable(model: nn.Module, recipe: Mapping[str, Any]) -> nn.Module:
    """`model` as it runs fastest (see the module docstring)."""
    return CompiledInt8(model) if recipe["scheme"] == "dynamic" else model.eval()


def quantize(model: nn.Module, recipe: Mapping[str, Any]) -> nn.Module:
    """A copy of `model` (CPU, eval) converted as `recipe` says (made by `recipe()`)."""
    if recipe["backend"] == eager_rnn.BACKEND:
        return eager_rnn.quantize(model, recipe["skip"])
    from torchao.quantization import quantize_
    from torchao.utils import TorchAOBaseTensor

    model = copy.deepcopy(model).cpu().eval()
    eager_rnn.convert(model, recipe["recurrent"])
    layers = set(recipe["layers"])
    quantize_(model, torchao_config(recipe), filter_fn=lambda _, path: path in layers)
    left = [p for p in recipe["layers"] if not isinstance(_weight(model, p), TorchAOBaseTensor)]
    if left:
        raise ValueError(f"torchao left these Linear layers in float: {', '.join(left)}")
    return _runnable(model, recipe)


def _weight(model: nn.Module, path: str) -> torch.Tensor:
    return model.get_submodule(path).weight


# --- the codec (see compress.quant.codecs) -----------------------------------------------


#: Where the joined small tensors lie among the saved ones (no state name holds a "/").
JOINED = "joined/"


def portable_state(model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """The converted model's state as plain tensors: each torchao weight as the tensors
    it holds (`<layer>.weight.qdata`, `.scale`, ...), recurrent layers unpacked by
    `eager_rnn`. Each layer's int8 codes stay by name (stored, sparse or not, on their
    own); the other plain tensors (scales, zero points, biases, norms) are joined per
    dtype (`compress.quant.flat`). `extra` packs which parts make each torchao weight,
    the module state versions and where the joined tensors lie."""
    from torchao.utils import TorchAOBaseTensor

    model = eager(model)
    state = eager_rnn.unpack(model, model.state_dict())
    tensors: dict[str, Any] = {}
    small: dict[str, torch.Tensor] = {}
    parts: dict[str, list[str]] = {}
    for name, value in state.items():
        if isinstance(value, TorchAOBaseTensor):
            names, _ = value.__tensor_flatten__()
            parts[name] = list(names)
            for part in names:
                inner = getattr(value, part).detach()
                codes = inner.shape == value.shape
                (tensors if codes else small)[f"{name}.{part}"] = inner
        elif isinstance(value, torch.Tensor) and not value.is_quantized:
            small[name] = value
        else:
            tensors[name] = value
    joined, layout = flat.join(small, JOINED)
    described = {"quantized": parts, "versions": eager_rnn.versions(state), "layout": layout}
    return {**tensors, **joined}, {"packed": flat.pack(described)}


def _described(tensors: Mapping[str, Any], extra: Mapping[str, Any]) -> tuple[dict, dict]:
    """The saved tensors by state name, and what `portable_state` described of them (an
    artifact written before the small tensors were joined holds them all by name)."""
    if "packed" not in extra:
        return dict(tensors), dict(extra)
    described = flat.unpack(extra["packed"])
    named = {k: v for k, v in tensors.items() if not k.startswith(JOINED)}
    return named | flat.split(tensors, described["layout"], JOINED), described


def _restored(layer: nn.Linear, config: Any, inner: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The torchao weight of `layer` made of the saved tensors `inner`: the subclass and
    its settings come from `config` applied to a stand-in of the layer on the meta device."""
    from torchao.quantization import quantize_

    stand_in = nn.Linear(
        layer.in_features, layer.out_features, bias=False, device="meta", dtype=layer.weight.dtype
    )
    quantize_(stand_in, config)
    template = stand_in.weight
    names, context = template.__tensor_flatten__()
    if set(names) != set(inner):
        raise ValueError(
            f"saved parts {sorted(inner)} do not make a {type(template).__name__} "
            f"(which holds {sorted(names)})"
        )
    return type(template).__tensor_unflatten__(
        dict(inner), context, template.shape, template.stride()
    )


def rebuild(
    float_model: nn.Module,
    recipe: Mapping[str, Any],
    tensors: Mapping[str, Any],
    extra: Mapping[str, Any],
    input_shape: tuple[int, ...],
) -> nn.Module:
    """The converted model again, from a fresh float model of the recorded structure and
    the tensors `portable_state` gave."""
    model = copy.deepcopy(float_model).cpu().eval()
    eager_rnn.convert(model, recipe["recurrent"])
    config = torchao_config(recipe)
    rest, extra = _described(tensors, extra)
    for name, names in extra["quantized"].items():
        path, _, attribute = name.rpartition(".")
        layer = model.get_submodule(path)
        inner = {n: rest.pop(f"{name}.{n}") for n in names}
        setattr(
            layer, attribute, nn.Parameter(_restored(layer, config, inner), requires_grad=False)
        )
    rest = eager_rnn.repack(model, rest)
    state = eager_rnn.with_versions(rest, extra.get("versions", {}))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != set(extra["quantized"]):
        raise ValueError(
            f"artifact state does not fit the rebuilt model: missing "
            f"{sorted(set(missing) - set(extra['quantized']))}, unexpected {sorted(unexpected)}"
        )
    return _runnable(model, recipe)
