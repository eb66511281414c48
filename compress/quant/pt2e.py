"""Static int8 and QAT through torchao's PT2E flow: export, prepare, calibrate or train,
convert, then lowered by Inductor (`compress.quant.compiled`).

The x86 quantizer (`X86InductorQuantizer`) annotates the exported graph: convs and linears
get int8 symmetric weights (per output channel by default) and uint8 affine activations
(after a ReLU they are all >= 0, a symmetric range would waste half the codes); BN is
folded into the conv before it. Converting leaves a graph of aten ops between
quantize/dequantize pairs with int8 weights; Inductor with freezing matches those pairs
and runs oneDNN's int8 convolutions and matmuls.

`reduce_range` (7-bit activations) is what x86 CPUs without VNNI need: their int8 dot
product instruction (vpmaddubsw) sums pairs into int16 and saturates with 8-bit
activations times 8-bit weights, which wrecks accuracy. With VNNI (vpdpbusd, 32-bit sums)
full 8 bits are exact and `auto` keeps them.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compress.errors import ConfigError
from compress.quant.export import export

OBSERVERS = ("minmax", "moving_average", "histogram")
#: Layers the x86 quantizer turns into int8 kernels.
QUANTIZED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class Pt2eRecipe:
    """How a float model becomes an int8 one through PT2E; stored in the artifact."""

    kind: str
    observer: str = "histogram"
    per_channel: bool = True
    reduce_range: bool = False
    skip: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backend": "pt2e", "skip": list(self.skip)}


def cpu_needs_reduce_range() -> bool:
    """True on x86 CPUs without VNNI (see the module docstring)."""
    is_vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(is_vnni is not None and not is_vnni())


def check_cpu(recipe: Pt2eRecipe) -> None:
    """Refuse, in one line, a recipe this CPU cannot run fast and right."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("DEFAULT", "NO AVX"):
        raise ConfigError(
            f"int8 through the x86 quantizer needs a CPU with AVX2 or AVX-512; this one "
            f"reports '{capability}': use method=quantize_weights (simulated on any CPU)"
        )
    if not recipe.reduce_range and cpu_needs_reduce_range():
        raise ConfigError(
            "method.reduce_range=false: this CPU has no VNNI, its int8 dot products "
            "saturate with 8-bit activations; set method.reduce_range=auto or true"
        )


def quantizable(model: nn.Module, skip: Sequence[str] = ()) -> list[str]:
    """Paths of the conv and linear modules the quantizer makes int8 (those not skipped)."""
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, QUANTIZED_TYPES)
        and not any(fnmatch.fnmatchcase(path, pattern) for pattern in skip)
    ]


def _skipped(model: nn.Module, skip: Sequence[str]) -> list[str]:
    return [
        path
        for path, _ in model.named_modules()
        if path and any(fnmatch.fnmatchcase(path, pattern) for pattern in skip)
    ]


def quantizer(recipe: Pt2eRecipe, model: nn.Module) -> Any:
    """The x86 quantizer configured as `recipe` says, with `skip` left in float."""
    from torchao.quantization.pt2e import observer as obs
    from torchao.quantization.pt2e.fake_quantize import FakeQuantize
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    qat = recipe.kind == "qat"
    act_observer = {
        "minmax": obs.MinMaxObserver,
        "moving_average": obs.MovingAverageMinMaxObserver,
        "histogram": obs.HistogramObserver,
    }[recipe.observer]
    weight_observer = {
        (True, False): obs.PerChannelMinMaxObserver,
        (True, True): obs.MovingAveragePerChannelMinMaxObserver,
        (False, False): obs.MinMaxObserver,
        (False, True): obs.MovingAverageMinMaxObserver,
    }[(recipe.per_channel, recipe.observer == "moving_average" or qat)]
    eps = {"eps": 2**-12}  # the x86 default: no scale below this (all-zero channels)

    def ctr(observer: Any) -> Any:
        return (
            FakeQuantize.with_args(observer=observer, **eps) if qat else observer.with_args(**eps)
        )

    activation = x86.QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=127 if recipe.reduce_range else 255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ctr(act_observer),
    )
    weight = x86.QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric if recipe.per_channel else torch.per_tensor_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=ctr(weight_observer),
    )
    config = x86.QuantizationConfig(activation, activation, weight, None, qat)
    result = x86.X86InductorQuantizer().set_global(config)
    for path in _skipped(model, recipe.skip):
        result.set_module_name_qconfig(path, None)
    return result


def prepare(model: nn.Module, recipe: Pt2eRecipe, example: torch.Tensor, method: str) -> Any:
    """A copy of `model`, exported, with observers (static) or fake quantization (QAT)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    model = copy.deepcopy(model)
    if recipe.kind == "qat":
        graph = export(model.train(), example, method)
        try:
            prepared = prepare_qat_pt2e(graph, quantizer(recipe, model))
        except IndexError as error:  # torchao fuses conv+BN for QAT even when not annotated
            if not recipe.skip:
                raise
            raise ConfigError(
                f"method '{method}': torchao's QAT cannot keep a conv that batch norm follows "
                f"in float (method.skip={list(recipe.skip)}); skip layers without BN, or use "
                f"method=quantize_static"
            ) from error
        # The fine-tune switches modes with .train()/.eval(); this maps them onto the
        # exported graph's batch-norm and dropout ops.
        return allow_exported_model_train_eval(prepared)
    graph = export(model.eval(), example, method)
    return prepare_pt2e(graph, quantizer(recipe, model))


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor], count: int) -> int:
    """Run up to `count` batches through a prepared model so its observers see data;
    returns how many it saw (zero is refused: no activation range would be known)."""
    seen = 0
    for _, x in zip(range(count), batches, strict=False):
        prepared(x)
        seen += 1
    if seen == 0:
        raise ConfigError(
            "static int8 calibration saw zero batches (the train split is empty or smaller "
            "than one batch): activation ranges would be unknown"
        )
    return seen


def convert(prepared: nn.Module, unobserved_ok: bool = False) -> torch.fx.GraphModule:
    """The int8 graph (CPU, inference) from a prepared and calibrated or trained one,
    with the float weights it no longer uses dropped. `unobserved_ok` silences torchao's
    warning that an observer saw no data (the dry run converts a QAT graph before any
    training, by design)."""
    from torchao.quantization.pt2e import (
        allow_exported_model_train_eval,
        move_exported_model_to_eval,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = copy.deepcopy(prepared).cpu()
    move_exported_model_to_eval(prepared)
    with warnings.catch_warnings():
        if unobserved_ok:
            warnings.filterwarnings("ignore", message="must run observer before calling")
        converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    # .eval() (which every measurement calls) is refused on a converted graph otherwise.
    allow_exported_model_train_eval(converted)
    return name_by_module(prune_unused(converted))


def name_by_module(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Name each int8 weight, its scales and zero points after the layer it came from
    (`features.0.weight`, `features.0.weight_scale`, ...) instead of `_frozen_param3`."""
    from compress.quant.graph_stats import layers

    for layer in layers(graph_module):
        stack = layer.node.meta.get("nn_module_stack") or {}
        dequantize = layer.node.args[1]
        if not stack or "dequantize" not in str(getattr(dequantize, "target", "")):
            continue
        path = list(stack.values())[-1][0]
        for arg, suffix in zip(
            dequantize.args[:3], ("weight", "weight_scale", "weight_zero_point"), strict=True
        ):
            if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
                _move_attribute(graph_module, arg, f"{path}.{suffix}")
    graph_module.recompile()
    return graph_module


def _move_attribute(graph_module: torch.fx.GraphModule, node: torch.fx.Node, name: str) -> None:
    old_owner, _, old_leaf = str(node.target).rpartition(".")
    source = graph_module.get_submodule(old_owner) if old_owner else graph_module
    *parents, leaf = name.split(".")
    owner: nn.Module = graph_module
    for part in parents:
        if not hasattr(owner, part):
            owner.add_module(part, nn.Module())
        owner = getattr(owner, part)
    if hasattr(owner, leaf):  # still in use under that name: keep the generated one
        return
    value = getattr(source, old_leaf)
    delattr(source, old_leaf)
    owner.register_buffer(leaf, value)
    node.target = name


def prune_unused(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drop guard checks, dead nodes, and parameters/buffers no node reads."""
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and not node.users:
            graph.erase_node(node)
    graph.eliminate_dead_code()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    used = {node.target for node in graph.nodes if node.op == "get_attr"}
    for name in [n for n, _ in graph_module.named_parameters()] + [
        n for n, _ in graph_module.named_buffers()
    ]:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            module = graph_module.get_submodule(owner) if owner else graph_module
            delattr(module, leaf)
    return graph_module
