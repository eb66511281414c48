"""An FX graph of operator calls as plain values (lists, strings, numbers), and back.

What an int8 PT2E artifact stores instead of pickled code: `{"ops": [...], "nodes": [...]}`,
each node `[kind, target, args, kwargs]` with `target` an index into `ops` (qualified
operator names: `aten.conv2d.default`, `quantized_decomposed.dequantize_per_channel.default`,
`operator.getitem`) for calls, the attribute name for `get_attr`, the argument name for a
placeholder. Node references are `{"n": index}`, dtypes and devices small tagged dicts;
the tensors the graph reads (`get_attr`) are kept apart, by name. About a kilobyte for a
small CNN, and no dependency on how torch or torchao produced the graph.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx

Encoded = dict[str, list[Any]]

_TAGGED = {
    torch.dtype: "dtype",
    torch.device: "device",
    torch.memory_format: "memory_format",
    torch.layout: "layout",
}


def encode(graph_module: fx.GraphModule) -> tuple[dict[str, torch.Tensor], Encoded]:
    """The tensors `graph_module` reads, by attribute name, and its nodes as plain values."""
    tensors: dict[str, torch.Tensor] = {}
    ops: list[str] = []
    nodes: list[Any] = []
    index = {node: i for i, node in enumerate(graph_module.graph.nodes)}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            raise ValueError(f"graph node {node.name} calls a module; only operators are stored")
        target: Any = None
        if node.op == "get_attr":
            value = _attribute(graph_module, node.target)
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"graph attribute {node.target} is not a tensor")
            tensors[node.target] = value.detach().cpu().contiguous()
            target = node.target
        elif node.op == "call_function":
            name = _target_name(node.target)
            if name not in ops:
                ops.append(name)
            target = ops.index(name)
        elif node.op == "placeholder":
            target = node.target
        args = node.args
        if node.op == "output":
            # An exported module returns its one tensor through a pytree spec; stored,
            # the graph returns the tensor itself.
            result = args[0]
            args = (result[0],) if isinstance(result, tuple | list) and len(result) == 1 else args
        kwargs = {k: _value(v, index) for k, v in node.kwargs.items()}
        nodes.append([node.op, target, _value(list(args), index), kwargs])
    return tensors, {"ops": ops, "nodes": nodes}


def decode(encoded: Encoded, tensors: Mapping[str, torch.Tensor]) -> fx.GraphModule:
    """The graph module `encode` described, its attributes set from `tensors`."""
    graph = fx.Graph()
    ops = [_resolve(name) for name in encoded["ops"]]
    made: list[fx.Node] = []
    for kind, target, args, kwargs in encoded["nodes"]:
        args = tuple(_unvalue(args, made))
        kwargs = {k: _unvalue(v, made) for k, v in kwargs.items()}
        if kind == "placeholder":
            node = graph.placeholder(target)
        elif kind == "get_attr":
            if target not in tensors:
                raise ValueError(f"the stored graph reads a tensor the artifact lacks: {target}")
            node = graph.get_attr(target)
        elif kind == "call_function":
            node = graph.call_function(ops[target], args, kwargs)
        elif kind == "output":
            node = graph.output(args[0])
        else:
            raise ValueError(f"a stored graph node of kind '{kind}' is not one this release reads")
        made.append(node)
    graph.lint()
    return fx.GraphModule(_holder(tensors), graph)


def _attribute(module: torch.nn.Module, target: str) -> Any:
    owner, _, leaf = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, leaf)


def _holder(tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A module with each tensor as a buffer at its dotted path."""
    root = torch.nn.Module()
    for path, tensor in tensors.items():
        owner = root
        *parents, leaf = path.split(".")
        for part in parents:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_buffer(leaf, tensor)
    return root


def _target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target)  # e.g. aten.conv2d.default
    if getattr(operator, getattr(target, "__name__", ""), None) is target:
        return f"operator.{target.__name__}"
    raise ValueError(f"graph calls {target!r}, which is not an operator this format stores")


def _resolve(name: str) -> Any:
    namespace, _, rest = name.partition(".")
    if namespace == "operator":
        return getattr(operator, rest)
    target: Any = getattr(torch.ops, namespace)
    try:
        for part in rest.split("."):
            target = getattr(target, part)
    except (AttributeError, RuntimeError) as error:
        raise ValueError(
            f"the stored graph calls {name}, which this torch does not provide"
        ) from error
    return target


def _value(value: Any, index: Mapping[fx.Node, int]) -> Any:
    if isinstance(value, fx.Node):
        return {"n": index[value]}
    for kind, tag in _TAGGED.items():
        if isinstance(value, kind):
            return {tag: str(value).removeprefix("torch.")}
    if isinstance(value, tuple):
        return {"tuple": [_value(v, index) for v in value]}
    if isinstance(value, list):
        return [_value(v, index) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"graph argument {value!r} ({type(value).__name__}) cannot be stored")


def _unvalue(value: Any, made: Sequence[fx.Node]) -> Any:
    if isinstance(value, list):
        return [_unvalue(v, made) for v in value]
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    if tag == "n":
        return made[inner]
    if tag == "tuple":
        return tuple(_unvalue(v, made) for v in inner)
    if tag == "device":
        return torch.device(inner)
    return getattr(torch, inner)  # dtype, memory_format, layout: torch.int8, ...
