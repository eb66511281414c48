"""The legacy int8 flow of torch.ao (FX graph mode), kept for two readers only.

`torch.ao.quantization` is deprecated upstream (it says it will be removed; the int8
methods now run on torchao, `compress.quant.pt2e`). This module stays while torch ships
the API, for: loading int8 artifacts written before (format `/3`, rebuilt through
`prepare_fx`/`convert_fx` and filled with their saved state) and the side-by-side
benchmark (`benchmarks/quantization.py`). Importing it fails once the API is gone, and
the artifact reader then refuses `/3` files in one line.

A `Recipe` (plain values) says how a model was quantized; `rebuild` applies it to a
fresh float model without calibration, giving a converted model of the same structure
whose state a saved artifact then fills in.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from compress.models.eval_mode import model_device

STATIC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU)


@dataclass(frozen=True)
class Recipe:
    """How a float model becomes an int8 one; stored in the artifact as a dict."""

    kind: str
    observer: str = "histogram"
    per_channel: bool = True
    symmetric: bool = True
    reduce_range: bool = False
    skip: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skip": list(self.skip)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        return cls(**{**values, "skip": tuple(values.get("skip", ()))})


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """One named warning off: torch's own int8 modules create quint8 tensors through
    functions torch now marks deprecated, once per layer. The deprecation of the API as a
    whole (a DeprecationWarning) stays visible."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other",
            category=UserWarning,
        )
        yield


def quantizable(model: nn.Module, kind: str, skip: Sequence[str] = ()) -> list[str]:
    """Paths of the modules a recipe of `kind` turns into int8 (those not skipped)."""
    types = DYNAMIC_TYPES if kind == "dynamic" else STATIC_TYPES
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, types) and not any(fnmatch.fnmatchcase(path, p) for p in skip)
    ]


def _qconfig(recipe: Recipe) -> Any:
    from torch.ao.quantization import QConfig, observer
    from torch.ao.quantization.fake_quantize import FakeQuantize

    # Activations are affine (after a ReLU they are all >= 0: a symmetric range would
    # waste half the codes); `symmetric` is about the weights, as in fbgemm's defaults.
    act_scheme = torch.per_tensor_affine
    if recipe.per_channel:
        weight_scheme = (
            torch.per_channel_symmetric if recipe.symmetric else torch.per_channel_affine
        )
        weight_observer = (
            observer.MovingAveragePerChannelMinMaxObserver
            if recipe.observer == "moving_average"
            else observer.PerChannelMinMaxObserver
        )
    else:
        weight_scheme = torch.per_tensor_symmetric if recipe.symmetric else torch.per_tensor_affine
        weight_observer = (
            observer.MovingAverageMinMaxObserver
            if recipe.observer == "moving_average"
            else observer.MinMaxObserver
        )
    act_observer = {
        "minmax": observer.MinMaxObserver,
        "moving_average": observer.MovingAverageMinMaxObserver,
        "histogram": observer.HistogramObserver,
    }[recipe.observer]
    # The range as quant_min/quant_max (the observers warn on reduce_range, deprecated).
    act = {
        "dtype": torch.quint8,
        "qscheme": act_scheme,
        "quant_min": 0,
        "quant_max": 127 if recipe.reduce_range else 255,
    }
    weight = {"dtype": torch.qint8, "qscheme": weight_scheme}
    if recipe.kind == "qat":
        return QConfig(
            activation=FakeQuantize.with_args(observer=act_observer, **act),
            weight=FakeQuantize.with_args(
                observer=weight_observer, quant_min=-128, quant_max=127, **weight
            ),
        )
    return QConfig(
        activation=act_observer.with_args(**act), weight=weight_observer.with_args(**weight)
    )


def _mapping(recipe: Recipe) -> Any:
    from torch.ao.quantization import QConfigMapping

    mapping = QConfigMapping().set_global(_qconfig(recipe))
    for pattern in recipe.skip:
        mapping = mapping.set_module_name_regex(fnmatch.translate(pattern), None)
    return mapping


def prepare(model: nn.Module, recipe: Recipe, example: torch.Tensor) -> nn.Module:
    """A copy of `model` with observers (static) or fake quantization (QAT) inserted."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    model = copy.deepcopy(model)
    with quiet():
        if recipe.kind == "qat":
            return prepare_qat_fx(model.train(), _mapping(recipe), (example,))
        return prepare_fx(model.eval(), _mapping(recipe), (example,))


def convert(prepared: nn.Module) -> nn.Module:
    """The int8 model (on CPU, eval mode) from a prepared, calibrated or trained one."""
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = copy.deepcopy(prepared).cpu().eval()
    with quiet():
        return convert_fx(prepared).eval()


def quantize_dynamic(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Linear and recurrent layers with int8 weights; activations quantized on the fly."""
    from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

    model = copy.deepcopy(model).cpu().eval()
    keep = set(quantizable(model, "dynamic", recipe.skip))
    with quiet():
        return ao_quantize_dynamic(model, keep, dtype=torch.qint8)


def rebuild(model: nn.Module, recipe: Mapping[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    """A converted model shaped as `recipe` makes it from `model`, with placeholder values
    (no calibration): what a saved int8 state is loaded into."""
    parsed = Recipe.from_dict(recipe)
    if parsed.kind == "dynamic":
        return quantize_dynamic(model, parsed)
    example = torch.zeros((1, *input_shape))
    return convert(prepare(model.cpu(), parsed, example))


@torch.no_grad()
def calibrate(prepared: nn.Module, loader: Iterable[Any], batches: int) -> None:
    """Run the first `batches` batches of `loader` (each `(x, ...)`) through a prepared model
    so its observers see data."""
    prepared.eval()
    device = model_device(prepared)
    for _, batch in zip(range(batches), loader, strict=False):
        prepared(batch[0].to(device))


def portable_state(model: nn.Module) -> OrderedDict[str, Any]:
    """The converted model's state with only tensors (and plain values) in it: dynamic
    LSTM/GRU weights unpacked as `eager_rnn` stores them (the `/3` layout too)."""
    from compress.quant.eager_rnn import unpack

    return unpack(model, model.state_dict())


def load_portable_state(model: nn.Module, state: OrderedDict[str, Any]) -> None:
    """Load what `portable_state` gave into a model rebuilt from the same recipe."""
    from compress.quant.eager_rnn import repack

    versions = getattr(state, "_metadata", OrderedDict())
    state = OrderedDict(repack(model, state))
    state._metadata = versions  # type: ignore[attr-defined]
    model.load_state_dict(state)
